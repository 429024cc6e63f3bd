"""Pascal VOC datasets in the VOCdevkit layout.

    root/VOC2007/Annotations/<id>.xml
    root/VOC2007/JPEGImages/<id>.jpg
    root/VOC2007/ImageSets/Main/<image_set>.txt
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import numpy as np
from defusedxml import DefusedXmlException, ElementTree

from .images import read_image
from .problems import AnnotationProblems

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class VOCDetection:
    """A VOC image set. Items are (image, target): image an HxWx3 uint8 RGB
    array, target {"boxes": float32 [N, 4], "labels": int64 [N] in 1..K,
    "difficult": bool [N], "image_id": str}.

    VOC's corners are 1-based and inclusive: (xmin, xmax) = (a, b) covers
    pixels a..b, i.e. detkit's continuous box (a - 1, b). Difficult objects
    are dropped unless keep_difficult (keep them for evaluation: the VOC
    evaluator reads the flag). `classes` defaults to the 20 VOC classes.
    Malformed XML, unknown class names and inverted or out-of-image boxes
    raise ValueError naming the file and object (or are skipped and counted
    with skip_invalid=True).
    """

    def __init__(self, root: str | os.PathLike, year: str = "2007", image_set: str = "trainval",
                 keep_difficult: bool = False, transforms: Optional[Callable] = None,
                 classes: Sequence[str] = VOC_CLASSES, skip_invalid: bool = False):
        self.root = os.path.join(os.fspath(root), f"VOC{year}")
        self.keep_difficult = keep_difficult
        self.transforms = transforms
        self.classes = list(classes)
        self.label_of = {name: n + 1 for n, name in enumerate(self.classes)}
        self.skip_invalid = skip_invalid
        self.skipped: list[str] = []
        list_file = os.path.join(self.root, "ImageSets", "Main", f"{image_set}.txt")
        try:
            with open(list_file) as f:
                self.ids = [line.split()[0] for line in f if line.strip()]
        except FileNotFoundError:
            raise FileNotFoundError(f"VOC image set not found: {list_file}") from None
        if not self.ids:
            raise ValueError(f"{list_file}: the image list is empty")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        image_id = self.ids[index]
        target, file_name, size = self.target(image_id)
        path = os.path.join(self.root, "JPEGImages", file_name)
        image = read_image(path)
        if size is not None and image.shape[:2] != size:
            raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but its XML says "
                             f"{size[1]}x{size[0]}")
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, image_id: str) -> tuple[dict[str, Any], str, Optional[tuple[int, int]]]:
        """(target, image file name, (height, width) from the XML) of one image."""
        xml_path = os.path.join(self.root, "Annotations", f"{image_id}.xml")
        problems = AnnotationProblems(xml_path, self.skip_invalid)
        root = _parse(xml_path)
        file_name = root.findtext("filename") or f"{image_id}.jpg"
        size = _size(root, xml_path)
        boxes, labels, difficult = [], [], []
        for n, obj in enumerate(root.iter("object")):
            parsed = self._object(obj, n, size, problems)
            if parsed is None:
                continue
            box, label, hard = parsed
            if hard and not self.keep_difficult:
                continue
            boxes.append(box)
            labels.append(label)
            difficult.append(hard)
        problems.warn()
        self.skipped.extend(problems.skipped)
        target = {
            "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.array(labels, dtype=np.int64),
            "difficult": np.array(difficult, dtype=bool),
            "image_id": image_id,
        }
        return target, file_name, size

    def _object(self, obj, n: int, size, problems: AnnotationProblems):
        name = (obj.findtext("name") or "").strip()
        if name not in self.label_of:
            problems.report(f"object {n}: unknown class {name!r}")
            return None
        box = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            problems.report(f"object {n} ({name}): bndbox needs numeric xmin, ymin, xmax, ymax")
            return None
        if xmax < xmin or ymax < ymin:
            problems.report(f"object {n} ({name}): inverted box {[xmin, ymin, xmax, ymax]}")
            return None
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
        if size is not None:
            height, width = size
            if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
                problems.report(f"object {n} ({name}): box {[xmin, ymin, xmax, ymax]} is outside the "
                                f"{width}x{height} image")
                return None
            x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
            y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
        hard = (obj.findtext("difficult") or "0").strip() == "1"
        return [x1, y1, x2, y2], self.label_of[name], hard


def _parse(xml_path: str):
    try:
        return ElementTree.parse(xml_path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC annotation not found: {xml_path}") from None
    except ElementTree.ParseError as exc:
        raise ValueError(f"{xml_path}: malformed XML ({exc})") from None
    except DefusedXmlException as exc:  # entity expansion, external references
        raise ValueError(f"{xml_path}: refused unsafe XML ({exc!r})") from None


def _size(root, xml_path: str) -> Optional[tuple[int, int]]:
    size = root.find("size")
    if size is None:
        return None
    try:
        return int(size.findtext("height")), int(size.findtext("width"))
    except (TypeError, ValueError):
        raise ValueError(f"{xml_path}: <size> needs integer width and height") from None
