"""LabelMe datasets: one JSON file per image, as LabelMe 5 saves them.

    {"version": "5.4.1", "flags": {}, "imagePath": "a.jpg", "imageData": null, "imageHeight": 48, "imageWidth": 64,
     "shapes": [{"label": "cat", "points": [[10, 5], [30, 25]], "group_id": null, "description": "",
                 "shape_type": "rectangle", "flags": {}}, ...]}

Rectangles (two opposite corners, in either order) and polygons (3 or more
points) are objects; shapes of one label that share a group_id are one object
(LabelMe's own labelme2coco does the same): its box encloses them all, its
mask is the union of its polygons. Points, lines and line strips mark no
region and are left out; other shape types (circle, mask, ...) are reported.
imagePath is relative to the JSON file's folder; when that file is missing,
the image embedded in imageData (base64) is used.
"""
from __future__ import annotations

import base64
import binascii
import math
import os
from typing import Any, Callable, Optional

import numpy as np

from ..io.jsonio import load_json, short_repr
from ..io.rle import segmentation_problem
from .coco import CocoDetection
from .images import MAX_IMAGE_PIXELS, decode_image, path_problem
from .problems import AnnotationError, AnnotationProblems
from .records import Records, box_record

REGION_SHAPES = ("rectangle", "polygon")
NO_REGION_SHAPES = ("point", "line", "linestrip")  # not objects: left out, not reported
# The image record's key for an embedded image (its file's bytes), set only when the file is missing.
IMAGE_DATA = "image_data"


def read_labelme(folder: str | os.PathLike, classes: Optional[list[str]] = None,
                 skip_invalid: bool = False) -> Records:
    """The LabelMe JSON files under `folder` (searched recursively) as Records.

    classes: the class names in label order (category ids 1..K); default the
    sorted set of labels found. File names are relative to `folder`. An image
    whose file is missing but whose JSON embeds it has its bytes in the image
    record under IMAGE_DATA ("image_data"); LabelMeDetection reads them.

    A file that is not a LabelMe JSON object always raises an AnnotationError
    naming it; a bad image record (imagePath, size, imageData) or shape
    raises one naming the file and the shape, or with skip_invalid=True is
    skipped and counted in one warning.
    """
    problems = AnnotationProblems(os.fspath(folder), skip_invalid)
    records = _read(os.fspath(folder), classes, problems)
    problems.warn()
    return records


class LabelMeDetection(CocoDetection):
    """A LabelMe folder as a CocoDetection (same items and targets).

    Images embedded in their JSON (imageData, used when the image file is
    missing) are kept in memory as their file's bytes and decoded per item:
    nothing is written next to the user's data, and a DataLoader worker
    needs no shared state. `records` holds what was read."""

    def __init__(self, folder: str | os.PathLike, classes: Optional[list[str]] = None,
                 transforms: Optional[Callable] = None, with_masks: bool = False, skip_invalid: bool = False):
        self.records = read_labelme(folder, classes, skip_invalid)
        super().__init__(self.records.image_root, self.records.source, transforms=transforms,
                         with_masks=with_masks, skip_invalid=skip_invalid, dataset=self.records.coco)
        self.skipped = self.records.skipped + self.skipped

    def _read_image(self, info: dict) -> np.ndarray:
        if IMAGE_DATA not in info:
            return super()._read_image(info)
        return decode_image(info[IMAGE_DATA], self._image_name(info))

    def _image_name(self, info: dict) -> str:
        return super()._image_name(info) + (" (imageData)" if IMAGE_DATA in info else "")


def region_problem(box: list[float], polygons: list[list[float]], width: int, height: int) -> Optional[str]:
    """Why an object's xyxy box and flat pixel polygons cannot be used on a
    width x height image (a box wholly outside it, polygon coordinates
    pycocotools cannot take), or None. Shared with cvat.py."""
    x1, y1, x2, y2 = box
    empty = x2 <= x1 or y2 <= y1  # CocoDetection drops and counts these wherever they are
    if not empty and (x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0):
        return f"box {[round(v, 2) for v in box]} lies outside the {width}x{height} image"
    return segmentation_problem(polygons, height, width) if polygons else None


def clipped(box: list[float], width: int, height: int) -> list[float]:
    """An xyxy box clipped to the image, as CocoDetection clips targets (so records and targets agree)."""
    x1, y1, x2, y2 = box
    return [min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height)]


def _read(folder: str, classes: Optional[list[str]], problems: AnnotationProblems) -> Records:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"LabelMe folder not found: {folder}")
    images, objects = [], []
    for json_file in _json_files(folder):
        read = _read_file(json_file, folder, problems)
        if read is not None:
            images.append({"id": len(images) + 1, **read[0]})
            objects.extend((len(images), *obj) for obj in read[1])
    if not images:
        raise AnnotationError(f"{folder}: no usable LabelMe .json file")
    names = list(classes) if classes is not None else sorted({obj[1] for obj in objects})
    category = {name: n + 1 for n, name in enumerate(names)}
    annotations = []
    for image_id, label, shape, box, polygons in objects:
        if label not in category:
            problems.report(f"{shape}: label {short_repr(label)} is not among the classes {short_repr(names)}")
            continue
        annotations.append(box_record(len(annotations) + 1, image_id, category[label], box, polygons))
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": n, "name": name} for name, n in category.items()]}
    return Records(coco, folder, folder, problems.skipped)


def _json_files(folder: str) -> list[str]:
    found = []
    for parent, subfolders, files in os.walk(folder):
        subfolders.sort()
        found.extend(os.path.join(parent, f) for f in sorted(files) if f.lower().endswith(".json"))
    return found


def _read_file(json_file: str, folder: str, problems: AnnotationProblems):
    """(image record without id, [(label, shape name, box, polygons)]) of one
    JSON file, or None when its image record is reported."""
    try:
        content = load_json(json_file, "LabelMe file")
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None
    if not isinstance(content, dict) or not isinstance(content.get("shapes"), list):
        raise AnnotationError(f"{json_file}: not a LabelMe file (a JSON object with a 'shapes' list), "
                              f"got {short_repr(content)}")
    image = _image_record(content, json_file, folder)
    if isinstance(image, str):
        problems.report(f"{json_file}: {image}")
        return None
    groups: dict[Any, list] = {}
    for n, shape in enumerate(content["shapes"]):
        region = _shape(shape, image["width"], image["height"])
        if isinstance(region, str):
            problems.report(f"{json_file}: shapes[{n}]: {region}")
        elif region is not None:
            group_id = shape.get("group_id")  # checked by _shape: None or an integer
            groups.setdefault((region[0], group_id) if group_id is not None else n, []).append((n, *region))
    objects = []
    for key, members in groups.items():
        n, label = members[0][0], members[0][1]
        boxes = np.array([m[2] for m in members], dtype=np.float64)
        box = [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]
        polygons = [m[3] for m in members if m[3] is not None]
        where = f"{json_file}: shapes[{n}]" + (f" (group_id {key[1]})" if isinstance(key, tuple) else "")
        if (problem := region_problem(box, polygons, image["width"], image["height"])) is not None:
            problems.report(f"{where}: {problem}")
            continue
        objects.append((label, where, clipped(box, image["width"], image["height"]), polygons))
    return image, objects


def _image_record(content: dict, json_file: str, folder: str):
    """{"file_name", "width", "height"(, IMAGE_DATA)} of a LabelMe file, or why it has none."""
    name = content.get("imagePath")
    if not isinstance(name, str) or not name:
        return f"imagePath must be a non-empty string, got {short_repr(name)}"
    name = name.replace("\\", "/")  # LabelMe on Windows writes os.path.relpath's backslashes
    if (problem := path_problem(name)) is not None:
        return f"imagePath: {problem}"
    width, height = content.get("imageWidth"), content.get("imageHeight")
    if not (type(width) is int and type(height) is int and width > 0 and height > 0
            and width * height <= MAX_IMAGE_PIXELS):
        return (f"imageWidth and imageHeight must be positive integers, at most {MAX_IMAGE_PIXELS} pixels "
                f"together, got {short_repr(width)} x {short_repr(height)}")
    subfolder = os.path.relpath(os.path.dirname(json_file), folder).replace(os.sep, "/")
    record = {"file_name": name if subfolder == "." else f"{subfolder}/{name}", "width": width, "height": height}
    if not os.path.exists(os.path.join(folder, record["file_name"])):
        data = content.get("imageData")
        if data is not None and not isinstance(data, str):
            return f"imageData must be base64 text or null, got {short_repr(data)}"
        if data:
            try:
                record[IMAGE_DATA] = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
                return "imageData is not valid base64"
    return record


def _shape(shape: Any, width: int, height: int):
    """(label, xyxy box, flat polygon or None) of a region shape, None for
    a shape that marks no region, or why it is invalid."""
    if not isinstance(shape, dict):
        return f"a shape must be an object, got {short_repr(shape)}"
    label, kind = shape.get("label"), shape.get("shape_type") or "polygon"  # LabelMe 3 wrote no shape_type
    if not isinstance(label, str) or not label:
        return f"label must be a non-empty string, got {short_repr(label)}"
    group_id = shape.get("group_id")
    if group_id is not None and type(group_id) is not int:
        return f"group_id must be an integer or null, got {short_repr(group_id)}"
    if kind in NO_REGION_SHAPES:
        return None
    if kind not in REGION_SHAPES:
        return f"shape_type {short_repr(kind)} is not supported ({', '.join(REGION_SHAPES + NO_REGION_SHAPES)})"
    points = _points(shape.get("points"))
    if points is None:
        return f"points must be a list of finite [x, y] pairs, got {short_repr(shape.get('points'))}"
    if (kind == "rectangle" and len(points) not in (2, 4)) or (kind == "polygon" and len(points) < 3):
        expected = "2 corners (or 4)" if kind == "rectangle" else "3 or more points"
        return f"a {kind} needs {expected}, got {len(points)}"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    polygon = [v for p in points for v in p] if kind == "polygon" else None
    return label, [min(xs), min(ys), max(xs), max(ys)], polygon


def _points(points: Any) -> Optional[list[list[float]]]:
    """points as [x, y] float pairs, or None when they are anything else."""
    if not isinstance(points, list):
        return None
    pairs = []
    for point in points:
        if not (isinstance(point, list) and len(point) == 2 and all(type(v) in (int, float) for v in point)):
            return None
        try:
            pair = [float(point[0]), float(point[1])]
        except OverflowError:  # an integer beyond float range
            return None
        if not all(math.isfinite(v) for v in pair):
            return None
        pairs.append(pair)
    return pairs
