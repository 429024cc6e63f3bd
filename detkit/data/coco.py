"""COCO-format detection datasets (COCO, LVIS-style JSON, the Shapes set)."""
from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Callable, Optional

import numpy as np

from ..io.jsonio import load_json, short_repr
from ..io.rle import segmentation_problem
from .targets import NumpyTarget
from .images import MAX_IMAGE_PIXELS, path_problem, read_image
from .problems import AnnotationError, AnnotationProblems
from .proposal_lookup import ProposalLookup


class CocoDetection:
    """A COCO annotation file and its images.

    Items are (image, target): image an HxWx3 uint8 RGB array, target the
    torchvision-style dict {"boxes": float32 [N, 4] (x1, y1, x2, y2),
    "labels": int64 [N] in 1..K, "iscrowd": bool [N], "image_id": int, and
    with with_masks "masks": uint8 [N, H, W]}, passed through `transforms`.
    Given `proposals` ({image_id: (boxes, scores)}, as detkit.data.proposals
    reads and computes them), targets also hold "proposals": float32 [P, 4],
    for Fast R-CNN; every image needs an entry.

    Category ids map to contiguous labels 1..K in id order (0 = background);
    `classes[l - 1]` and `cat_ids[l - 1]` name label l. Crowd annotations stay
    in the target, flagged, so training can ignore them. Boxes partly outside
    the image are clipped; boxes with no area are dropped and counted
    (`dropped_empty`).

    The file is checked as it is indexed, so that a bad one fails here with
    an AnnotationError (a ValueError) naming the file and the record, not
    with a KeyError in a DataLoader worker hours later:
    - a broken file always raises: not a JSON object; "images",
      "annotations" or "categories" not a list, or holding a non-object; a
      category without a unique integer id; two images with one id;
    - an invalid record raises, or with skip_invalid=True is skipped, counted
      (`skipped`) and warned about once: an image without an integer id, a
      file_name, or integer width and height (at most 2^30 pixels); an
      annotation with an unknown image or category, a bbox that is not 4
      finite numbers, has a negative size or lies wholly outside its image,
      an iscrowd other than 0 or 1, and with with_masks a segmentation that
      is not polygons (coordinates within one image size of the image) or an
      RLE of the image's size. An RLE whose compressed counts do not add up
      to its size raises when its target is read.
    """

    def __init__(self, image_root: str | os.PathLike, ann_file: str | os.PathLike,
                 transforms: Optional[Callable] = None, with_masks: bool = False, skip_invalid: bool = False,
                 proposals: Optional[Mapping] = None, dataset: Optional[dict] = None):
        self.image_root = os.fspath(image_root)
        self.ann_file = os.fspath(ann_file)  # with `dataset` given: what it was read from, for messages
        self.transforms = transforms
        self.with_masks = with_masks
        problems = AnnotationProblems(self.ann_file, skip_invalid)
        dataset = _load_json(self.ann_file, problems) if dataset is None else _checked(dataset, problems)
        self.cat_ids, self.classes = _categories(dataset["categories"], problems)
        self.label_of = {cat: n + 1 for n, cat in enumerate(self.cat_ids)}
        self.images = _images(dataset["images"], problems)
        self.ids = sorted(self.images)
        self.dropped_empty = 0
        self._annotations = self._index(dataset["annotations"], problems)
        problems.warn()
        self.skipped = problems.skipped
        self.proposals = None if proposals is None else ProposalLookup(proposals, self.ids, self.ann_file)

    def _index(self, annotations: list, problems: AnnotationProblems) -> dict[int, list]:
        """Valid annotations grouped by image, in file order. Each record's
        references are checked as it is walked; the boxes all at once with
        numpy; only problems are looked at one by one."""
        known, positions, sizes = [], [], []
        images, label_of, with_masks = self.images, self.label_of, self.with_masks
        for n, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                problems.fail(f"annotations[{n}] must be an object, got {short_repr(ann)}")
            try:
                image = images.get(ann.get("image_id"))
            except TypeError:  # an unhashable id (a list, an object) names no image
                image = None
            try:
                known_category = ann.get("category_id") in label_of
            except TypeError:
                known_category = False
            if image is None:
                problems.report(f"{_name(ann, n)}: image_id {short_repr(ann.get('image_id'))} is not in 'images'")
            elif not known_category:
                problems.report(f"{_name(ann, n)}: unknown category_id {short_repr(ann.get('category_id'))}")
            elif ann.get("iscrowd", 0) not in (0, 1):
                problems.report(f"{_name(ann, n)}: iscrowd must be 0 or 1, got {short_repr(ann.get('iscrowd'))}")
            elif with_masks and (problem := segmentation_problem(ann.get("segmentation"), image["height"],
                                                                 image["width"])):
                problems.report(f"{_name(ann, n)}: {problem}")
            else:
                known.append(ann)
                positions.append(n)
                sizes.append((image["width"], image["height"]))
        boxes = _bbox_array(known)
        sizes = np.array(sizes, dtype=np.float64).reshape(-1, 2)
        with np.errstate(invalid="ignore", over="ignore"):
            bad_value = ~np.isfinite(boxes).all(1)
            negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
            empty = (boxes[:, 2] == 0) | (boxes[:, 3] == 0)
            outside = ((boxes[:, 0] >= sizes[:, 0]) | (boxes[:, 1] >= sizes[:, 1]) |
                       (boxes[:, 0] + boxes[:, 2] <= 0) | (boxes[:, 1] + boxes[:, 3] <= 0))
        # 0 valid, 1 a problem to report, 2 empty (dropped and counted); problems win over emptiness.
        status = np.where(bad_value | negative | (outside & ~empty), 1, np.where(empty, 2, 0)).tolist()
        by_image: dict[int, list] = defaultdict(list)
        for ann, n, state in zip(known, positions, status):
            if state == 0:
                by_image[ann["image_id"]].append(ann)
            elif state == 2:
                self.dropped_empty += 1
            else:
                problems.report(f"{_name(ann, n)}: {_bbox_problem(ann, images[ann['image_id']])}")
        return by_image

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, NumpyTarget]:
        image_id = self.ids[index]
        info = self.images[image_id]
        image = self._read_image(info)
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"{self._image_name(info)}: image is {image.shape[1]}x{image.shape[0]} but {self.ann_file} says "
                             f"{info['width']}x{info['height']}")
        target = self.target(image_id)
        if self.proposals is not None:
            target["proposals"] = self.proposals(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _read_image(self, info: dict) -> np.ndarray:
        """The image of one image record (subclasses read images held elsewhere)."""
        return read_image(self._image_name(info))

    def _image_name(self, info: dict) -> str:
        """How messages name the image of a record: its path."""
        return os.path.join(self.image_root, info["file_name"])

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


def _load_json(path: str, problems: AnnotationProblems) -> dict:
    """The file's object, with its three sections checked to be lists."""
    try:
        dataset = load_json(path, "annotation file")
    except ValueError as exc:  # "<path>: not valid JSON (...)"
        raise AnnotationError(str(exc)) from None
    return _checked(dataset, problems)


def _checked(dataset, problems: AnnotationProblems) -> dict:
    """`dataset` once it is an object whose three sections are lists, with images."""
    if not isinstance(dataset, dict):
        problems.fail(f"expected a JSON object with images, annotations and categories, got {short_repr(dataset)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            problems.fail(f"{key!r} must be a list, got {short_repr(dataset.get(key))}")
    if not dataset["images"]:
        problems.fail("the image list is empty")
    return dataset


def _categories(records: list, problems: AnnotationProblems) -> tuple[list[int], list[str]]:
    """(category ids in ascending order, their names). Labels are numbered
    from these, so any fault here raises, skip_invalid or not."""
    names: dict[int, str] = {}
    for n, category in enumerate(records):
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            problems.fail(f"categories[{n}] must be an object with an integer 'id', got {short_repr(category)}")
        name = category.get("name", category["id"])
        if not isinstance(name, (str, int)):
            problems.fail(f"category {category['id']}: 'name' must be a string, got {short_repr(name)}")
        if category["id"] in names:
            problems.fail(f"category id {category['id']} appears twice")
        names[category["id"]] = str(name)
    ids = sorted(names)
    return ids, [names[i] for i in ids]


def _images(records: list, problems: AnnotationProblems) -> dict[int, dict]:
    """{image id: record} of the valid image records."""
    images: dict[int, dict] = {}
    for n, image in enumerate(records):
        if not isinstance(image, dict):
            problems.fail(f"images[{n}] must be an object, got {short_repr(image)}")
        problem = _image_problem(image)
        if problem is not None:
            problems.report(f"image {short_repr(image.get('id'))} (images[{n}]): {problem}")
        elif image["id"] in images:
            problems.fail(f"image id {image['id']} appears twice")
        else:
            images[image["id"]] = image
    if not images:
        problems.fail("no valid image record")
    return images


def _image_problem(image: dict) -> Optional[str]:
    missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
    if missing:
        return f"needs id, file_name, width and height; {', '.join(missing)} missing"
    if not _is_id(image["id"]):
        return f"'id' must be an integer, got {short_repr(image['id'])}"
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        return f"'file_name' must be a non-empty string, got {short_repr(image['file_name'])}"
    if (problem := path_problem(image["file_name"])) is not None:
        return problem
    width, height = image["width"], image["height"]
    if not (type(width) is int and type(height) is int and width > 0 and height > 0
            and width * height <= MAX_IMAGE_PIXELS):
        return (f"width and height must be positive integers, at most {MAX_IMAGE_PIXELS} pixels together, "
                f"got {short_repr(width)} x {short_repr(height)}")
    return None


def _is_id(value) -> bool:
    """An integer that fits int64, as the evaluators' id arrays hold them (not a bool)."""
    return type(value) is int and -(2**63) <= value < 2**63


def _name(ann: dict, n: Optional[int] = None) -> str:
    """How messages name an annotation: by its id, or when it has none by its
    place n in the file's list."""
    if "id" in ann or n is None:
        return f"annotation {short_repr(ann.get('id'))}"
    return f"annotations[{n}] (no id)"


def _bbox_array(anns: list) -> np.ndarray:
    """[N, 4] float64 of the annotations' bboxes; a malformed one becomes NaNs
    (reported as not finite). One numpy call for a well-formed file; only a
    file with strings, ragged lists or 400-digit integers among its boxes
    takes the record-by-record path."""
    bboxes = [a.get("bbox") for a in anns]
    try:
        array = np.array(bboxes)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is None or array.dtype.kind not in "iuf" or array.shape != (len(bboxes), 4):
        array = np.array([_one_bbox(b) for b in bboxes], dtype=np.float64).reshape(-1, 4)
    return array.astype(np.float64, copy=False)


def _one_bbox(bbox) -> list[float]:
    """bbox as 4 floats, or 4 NaNs when it is anything else."""
    if isinstance(bbox, list) and len(bbox) == 4 and all(type(v) in (int, float) for v in bbox):
        try:
            return [float(v) for v in bbox]
        except OverflowError:  # an integer beyond float range
            pass
    return [math.nan] * 4


def _bbox_problem(ann: dict, image: dict) -> str:
    bbox = ann.get("bbox")
    values = _one_bbox(bbox)
    if not all(math.isfinite(v) for v in values):
        return f"bbox must be 4 finite numbers [x, y, w, h], got {short_repr(bbox)}"
    if values[2] < 0 or values[3] < 0:
        return f"bbox {short_repr(bbox)} has a negative width or height"
    return f"bbox {short_repr(bbox)} lies outside its {image['width']}x{image['height']} image {image['id']}"


def _masks(anns: list, height: int, width: int, source: str) -> np.ndarray:
    """Polygons and RLEs decoded with pycocotools: uint8 [N, H, W]."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(anns), height, width), dtype=np.uint8)
    for n, ann in enumerate(anns):
        segm = ann["segmentation"]  # checked by _segmentation_problem
        if isinstance(segm, list) and not segm:
            continue  # no polygon: an empty mask
        try:
            if isinstance(segm, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
            else:
                rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
            masks[n] = mask_utils.decode(rle)
        except Exception as exc:  # pycocotools raises bare Exceptions, e.g. for RLE runs past the mask's end
            raise AnnotationError(f"{source}: {_name(ann)}: pycocotools cannot decode its segmentation "
                                  f"({type(exc).__name__}: {short_repr(str(exc), 100)})") from None
    return masks
