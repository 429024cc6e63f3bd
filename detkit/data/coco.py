"""COCO-format detection datasets (COCO, LVIS-style JSON, the Shapes set)."""
from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Callable, Optional

import numpy as np

from ..jsonio import load_json
from .images import read_image
from .problems import AnnotationProblems

from ..targets import NumpyTarget


class CocoDetection:
    """A COCO annotation file and its images.

    Items are (image, target): image an HxWx3 uint8 RGB array, target the
    torchvision-style dict {"boxes": float32 [N, 4] (x1, y1, x2, y2),
    "labels": int64 [N] in 1..K, "iscrowd": bool [N], "image_id": int, and
    with with_masks "masks": uint8 [N, H, W]}, passed through `transforms`.

    Category ids map to contiguous labels 1..K in id order (0 = background);
    `classes[l - 1]` and `cat_ids[l - 1]` name label l. Crowd annotations stay
    in the target, flagged, so training can ignore them. Boxes partly outside
    the image are clipped; boxes with no area are dropped and counted
    (`dropped_empty`). An annotation with a negative size, one wholly outside
    its image, or with an unknown category or image raises ValueError naming
    the file and the annotation id, or with skip_invalid=True is skipped,
    counted (`skipped`) and warned about once.
    """

    def __init__(self, image_root: str | os.PathLike, ann_file: str | os.PathLike,
                 transforms: Optional[Callable] = None, with_masks: bool = False, skip_invalid: bool = False):
        self.image_root = os.fspath(image_root)
        self.ann_file = os.fspath(ann_file)
        self.transforms = transforms
        self.with_masks = with_masks
        dataset = _load_json(self.ann_file)
        categories = sorted(dataset["categories"], key=lambda c: c["id"])
        self.cat_ids = [int(c["id"]) for c in categories]
        self.classes = [str(c.get("name", c["id"])) for c in categories]
        self.label_of = {cat: n + 1 for n, cat in enumerate(self.cat_ids)}
        self.images = {int(img["id"]): img for img in dataset["images"]}
        self.ids = sorted(self.images)
        problems = AnnotationProblems(self.ann_file, skip_invalid)
        self.dropped_empty = 0
        self._annotations = self._index(dataset["annotations"], problems)
        problems.warn()
        self.skipped = problems.skipped

    def _index(self, annotations: list, problems: AnnotationProblems) -> dict[int, list]:
        """Valid annotations grouped by image, in file order. Boxes are checked
        all at once with numpy; only problems are looked at one by one."""
        known, sizes = [], []
        images, label_of = self.images, self.label_of
        for ann in annotations:
            image = images.get(ann.get("image_id"))
            if image is None:
                problems.report(f"annotation {ann.get('id')}: image_id {ann.get('image_id')} is not in 'images'")
            elif ann.get("category_id") not in label_of:
                problems.report(f"annotation {ann.get('id')}: unknown category_id {ann.get('category_id')}")
            else:
                known.append(ann)
                sizes.append((image["width"], image["height"]))
        boxes = _bbox_array(known)
        sizes = np.array(sizes, dtype=np.float64).reshape(-1, 2)
        with np.errstate(invalid="ignore"):
            bad_value = ~np.isfinite(boxes).all(1)
            negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
            empty = (boxes[:, 2] == 0) | (boxes[:, 3] == 0)
            outside = ((boxes[:, 0] >= sizes[:, 0]) | (boxes[:, 1] >= sizes[:, 1]) |
                       (boxes[:, 0] + boxes[:, 2] <= 0) | (boxes[:, 1] + boxes[:, 3] <= 0))
        # 0 valid, 1 a problem to report, 2 empty (dropped and counted); problems win over emptiness.
        status = np.where(bad_value | negative | (outside & ~empty), 1, np.where(empty, 2, 0)).tolist()
        by_image: dict[int, list] = defaultdict(list)
        for ann, state in zip(known, status):
            if state == 0:
                by_image[ann["image_id"]].append(ann)
            elif state == 2:
                self.dropped_empty += 1
            else:
                problems.report(_bbox_problem(ann, images[ann["image_id"]]))
        return by_image

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, NumpyTarget]:
        image_id = self.ids[index]
        info = self.images[image_id]
        path = os.path.join(self.image_root, info["file_name"])
        image = read_image(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but {self.ann_file} says "
                             f"{info['width']}x{info['height']}")
        target = self.target(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, image_id: int) -> NumpyTarget:
        """The target of one image, before transforms."""
        info = self.images[image_id]
        anns = self._annotations.get(image_id, [])
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, info["height"])
        target = {
            "boxes": boxes.astype(np.float32),
            "labels": np.array([self.label_of[a["category_id"]] for a in anns], dtype=np.int64),
            "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            "image_id": image_id,
        }
        if self.with_masks:
            target["masks"] = _masks(anns, info["height"], info["width"], self.ann_file)
        return target


def _bbox_array(anns: list) -> np.ndarray:
    """[N, 4] float64 of the annotations' bboxes; a malformed one becomes NaNs
    (reported as not finite)."""
    try:
        return np.array([a.get("bbox") for a in anns], dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        return np.array([_one_bbox(a.get("bbox")) for a in anns], dtype=np.float64).reshape(-1, 4)


def _one_bbox(bbox) -> list:
    if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox):
        return bbox
    return [math.nan] * 4


def _bbox_problem(ann: dict, image: dict) -> str:
    bbox = ann.get("bbox")
    values = _one_bbox(bbox)
    if not all(math.isfinite(v) for v in values):
        return f"annotation {ann.get('id')}: bbox must be 4 finite numbers, got {bbox!r}"
    if values[2] < 0 or values[3] < 0:
        return f"annotation {ann.get('id')}: bbox {bbox} has a negative width or height"
    return (f"annotation {ann.get('id')}: bbox {bbox} lies outside its {image['width']}x{image['height']} "
            f"image {image['id']}")


def _load_json(path: str) -> dict:
    dataset = load_json(path, "annotation file")
    if not isinstance(dataset, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"{path}: {key!r} must be a list")
    if not dataset["images"]:
        raise ValueError(f"{path}: the image list is empty")
    for img in dataset["images"]:
        if not all(k in img for k in ("id", "file_name", "width", "height")):
            raise ValueError(f"{path}: image {img.get('id')} needs id, file_name, width and height")
    return dataset


def _masks(anns: list, height: int, width: int, source: str) -> np.ndarray:
    """Polygons and RLEs decoded with pycocotools: uint8 [N, H, W]."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(anns), height, width), dtype=np.uint8)
    for n, ann in enumerate(anns):
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            if not segm:
                continue  # no polygon: an empty mask
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm, dict) and "counts" in segm:
            rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        else:
            raise ValueError(f"{source}: annotation {ann.get('id')} has no polygon or RLE segmentation")
        masks[n] = mask_utils.decode(rle)
    return masks
