"""Pascal VOC datasets in the VOCdevkit layout.

    root/VOC2007/Annotations/<id>.xml
    root/VOC2007/JPEGImages/<id>.jpg
    root/VOC2007/ImageSets/Main/<image_set>.txt
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Callable, Optional, Sequence

import numpy as np
from defusedxml import DefusedXmlException, ElementTree

from ..io.jsonio import short_repr
from .targets import NumpyTarget
from .images import MAX_IMAGE_PIXELS, path_problem, read_image
from .problems import AnnotationError, AnnotationProblems
from .proposal_lookup import ProposalLookup

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class VOCDetection:
    """A VOC image set. Items are (image, target): image an HxWx3 uint8 RGB
    array, target {"boxes": float32 [N, 4], "labels": int64 [N] in 1..K,
    "difficult": bool [N], "image_id": str}; with `proposals` ({image_id:
    (boxes, scores)}, one entry per image) also "proposals": float32 [P, 4].

    VOC's corners are 1-based and inclusive: (xmin, xmax) = (a, b) covers
    pixels a..b, i.e. detkit's continuous box (a - 1, b). Difficult objects
    are dropped unless keep_difficult (keep them for evaluation: the VOC
    evaluator reads the flag). `classes` defaults to the 20 VOC classes.

    Each XML file is checked as it is read; faults raise an AnnotationError
    (a ValueError) naming the file and the tag or object:
    - a broken file always raises: malformed or unsafe XML (entity
      expansion, external entities), a root other than <annotation>, a
      <size> without positive integer width and height (at most 2^30 pixels);
    - an invalid object raises, or with skip_invalid=True is skipped, counted
      (`skipped`) and warned about once: an unknown class name, a <bndbox>
      without 4 finite numbers, an inverted box, a box outside the image, a
      <difficult> other than 0 or 1.
    Boxes are checked against, and clipped to, the XML's <size>, or the
    image's own size when the XML has none.
    """

    def __init__(self, root: str | os.PathLike, year: str = "2007", image_set: str = "trainval",
                 keep_difficult: bool = False, transforms: Optional[Callable] = None,
                 classes: Sequence[str] = VOC_CLASSES, skip_invalid: bool = False,
                 proposals: Optional[Mapping] = None):
        self.root = os.path.join(os.fspath(root), f"VOC{year}")
        self.keep_difficult = keep_difficult
        self.transforms = transforms
        self.classes = list(classes)
        self.label_of = {name: n + 1 for n, name in enumerate(self.classes)}
        self.skip_invalid = skip_invalid
        self.skipped: list[str] = []
        list_file = os.path.join(self.root, "ImageSets", "Main", f"{image_set}.txt")
        try:
            with open(list_file, encoding="utf-8") as f:
                self.ids = [line.split()[0] for line in f if line.strip()]
        except FileNotFoundError:
            raise FileNotFoundError(f"VOC image set not found: {list_file}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{list_file}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
        if not self.ids:
            raise ValueError(f"{list_file}: the image list is empty")
        for n, image_id in enumerate(self.ids):  # ids become file names: none may lead outside the dataset
            if (problem := path_problem(image_id)) is not None:
                raise AnnotationError(f"{list_file}: image id {n + 1}: {problem}")
        self.proposals = None if proposals is None else ProposalLookup(proposals, self.ids, list_file)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, NumpyTarget]:
        image_id = self.ids[index]
        xml_path = self._xml_path(image_id)
        annotation = _parse(xml_path)
        path = os.path.join(self.root, "JPEGImages", _file_name(annotation, image_id, xml_path))
        image = read_image(path)
        size = _size(annotation, xml_path)
        if size is not None and image.shape[:2] != size:
            raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but its XML says "
                             f"{size[1]}x{size[0]}")
        target = self._target(annotation, image_id, xml_path, image.shape[:2])
        if self.proposals is not None:
            target["proposals"] = self.proposals(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, image_id: str) -> tuple[NumpyTarget, str, Optional[tuple[int, int]]]:
        """(target, image file name, (height, width) from the XML) of one
        image. Without a <size> in the XML, boxes are only clipped to
        non-negative coordinates (reading the item clips them to the image)."""
        xml_path = self._xml_path(image_id)
        annotation = _parse(xml_path)
        size = _size(annotation, xml_path)
        return self._target(annotation, image_id, xml_path, size), _file_name(annotation, image_id, xml_path), size

    def _xml_path(self, image_id: str) -> str:
        return os.path.join(self.root, "Annotations", f"{image_id}.xml")

    def _target(self, annotation, image_id: str, xml_path: str, size: Optional[tuple[int, int]]) -> NumpyTarget:
        problems = AnnotationProblems(xml_path, self.skip_invalid)
        boxes, labels, difficult = [], [], []
        for n, obj in enumerate(annotation.findall("object")):
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
        self.skipped.extend(f"{xml_path}: {message}" for message in problems.skipped)
        return {
            "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.array(labels, dtype=np.int64),
            "difficult": np.array(difficult, dtype=bool),
            "image_id": image_id,
        }

    def _object(self, obj, n: int, size: Optional[tuple[int, int]], problems: AnnotationProblems):
        """(box, label, difficult) of the n-th <object>, or None when reported."""
        name = (obj.findtext("name") or "").strip()
        if name not in self.label_of:
            problems.report(f"object {n}: unknown class {short_repr(name)}")
            return None
        corners = _corners(obj.find("bndbox"))
        if corners is None:
            problems.report(f"object {n} ({name}): <bndbox> needs finite numeric xmin, ymin, xmax, ymax")
            return None
        xmin, ymin, xmax, ymax = corners
        if xmax < xmin or ymax < ymin:
            problems.report(f"object {n} ({name}): inverted box {corners}")
            return None
        hard = (obj.findtext("difficult") or "0").strip()
        if hard not in ("0", "1"):
            problems.report(f"object {n} ({name}): <difficult> must be 0 or 1, got {short_repr(hard)}")
            return None
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
        height, width = size if size is not None else (MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS)
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            where = f"{width}x{height} image" if size is not None else "largest readable image"
            problems.report(f"object {n} ({name}): box {corners} is outside the {where}")
            return None
        x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
        y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
        return [x1, y1, x2, y2], self.label_of[name], hard == "1"


def _parse(xml_path: str):
    """The <annotation> element of one XML file."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC annotation not found: {xml_path}") from None
    except (ElementTree.ParseError, LookupError) as exc:  # LookupError: an encoding Python does not know
        raise AnnotationError(f"{xml_path}: malformed XML ({type(exc).__name__}: {exc})") from None
    except DefusedXmlException as exc:  # entity expansion, external references
        raise AnnotationError(f"{xml_path}: refused unsafe XML ({exc!r})") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{xml_path}: the root element must be <annotation>, got <{short_repr(root.tag)}>")
    return root


def _file_name(annotation, image_id: str, xml_path: str) -> str:
    """The image's file name in JPEGImages: <filename>, else the id's .jpg;
    a name that leads outside the folder is an error naming the XML."""
    name = (annotation.findtext("filename") or "").strip() or f"{image_id}.jpg"
    if (problem := path_problem(name)) is not None:
        raise AnnotationError(f"{xml_path}: <filename>: {problem}")
    return name


def _size(annotation, xml_path: str) -> Optional[tuple[int, int]]:
    """(height, width) from <size>, or None when the XML has no <size>."""
    size = annotation.find("size")
    if size is None:
        return None
    try:
        height, width = int(size.findtext("height")), int(size.findtext("width"))
    except (TypeError, ValueError):  # missing, or not an integer
        height = width = 0
    if not (height > 0 and width > 0 and height * width <= MAX_IMAGE_PIXELS):
        raise AnnotationError(f"{xml_path}: <size> needs positive integer <width> and <height>, at most "
                              f"{MAX_IMAGE_PIXELS} pixels together, got {short_repr(size.findtext('width'))} x "
                              f"{short_repr(size.findtext('height'))}")
    return height, width


def _corners(bndbox) -> Optional[list[float]]:
    """[xmin, ymin, xmax, ymax] of a <bndbox> as finite floats, or None."""
    if bndbox is None:
        return None
    try:
        corners = [float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (TypeError, ValueError):  # a missing tag, or text that is not a number
        return None
    return corners if all(math.isfinite(v) for v in corners) else None
