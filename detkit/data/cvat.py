"""CVAT for images 1.1 XML, as CVAT exports a task, job or project.

    <annotations>
      <version>1.1</version>
      <meta><task>... <labels><label><name>cat</name>...</label></labels> ...</task></meta>
      <image id="0" name="a.jpg" width="64" height="48">
        <box label="cat" occluded="0" source="manual" xtl="10.00" ytl="5.00" xbr="30.00" ybr="25.00" z_order="0"/>
        <polygon label="dog" occluded="0" source="manual" points="1.00,2.00;30.00,2.00;15.00,20.00" z_order="0"/>
      </image>
    </annotations>

Boxes and polygons are objects (a polygon's box encloses its points); tags,
points and polylines mark no region and are left out; masks, ellipses,
cuboids, skeletons and rotated boxes are reported. Coordinates are pixels
with (0, 0) the image's top-left corner, as detkit's boxes.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional

from defusedxml import DefusedXmlException, ElementTree

from ..io.jsonio import short_repr
from .coco import CocoDetection
from .images import MAX_IMAGE_PIXELS, path_problem
from .labelme import clipped, region_problem
from .problems import AnnotationError, AnnotationProblems
from .records import Records, box_record

REGION_TAGS = ("box", "polygon")
UNSUPPORTED_TAGS = ("mask", "ellipse", "cuboid", "skeleton")  # objects detkit cannot read: reported


def read_cvat(xml_file: str | os.PathLike, image_root: str | os.PathLike, skip_invalid: bool = False) -> Records:
    """A CVAT for images 1.1 file as Records.

    Category ids 1..K follow the <labels> of <meta> (of the task, project or
    job), or, without them, the sorted set of labels used. Images are
    numbered 1..N in file order (CVAT's id kept as "cvat_id"); file names
    (the image's name, relative to image_root) must stay inside image_root.
    Objects keep CVAT's occluded flag ("occluded": bool).

    A broken file (malformed or unsafe XML, a root other than <annotations>,
    duplicate label names or image ids) always raises an AnnotationError
    naming it; a bad image record or shape raises one naming the image and
    the shape, or with skip_invalid=True is skipped and counted in one warning.
    """
    problems = AnnotationProblems(os.fspath(xml_file), skip_invalid)
    records = _read(os.fspath(xml_file), os.fspath(image_root), problems)
    problems.warn()
    return records


class CVATDetection(CocoDetection):
    """A CVAT for images 1.1 file as a CocoDetection (same items and
    targets); masks from polygons with with_masks (a box's mask is empty).
    `records` holds what was read."""

    def __init__(self, xml_file: str | os.PathLike, image_root: str | os.PathLike,
                 transforms: Optional[Callable] = None, with_masks: bool = False, skip_invalid: bool = False):
        self.records = read_cvat(xml_file, image_root, skip_invalid)
        super().__init__(self.records.image_root, self.records.source, transforms=transforms,
                         with_masks=with_masks, skip_invalid=skip_invalid, dataset=self.records.coco)
        self.skipped = self.records.skipped + self.skipped


def _read(xml_file: str, image_root: str, problems: AnnotationProblems) -> Records:
    root = _parse(xml_file)
    names = _meta_labels(root, xml_file)
    images, objects, cvat_ids = [], [], set()
    for n, element in enumerate(root.findall("image")):
        image = _image_record(element)
        if isinstance(image, str):
            problems.report(f"image {n} ({short_repr(element.get('name'))}): {image}")
            continue
        if image["cvat_id"] in cvat_ids:
            problems.fail(f"image id {image['cvat_id']} appears twice")
        cvat_ids.add(image["cvat_id"])
        images.append({"id": len(images) + 1, **image})
        where = f"image {image['file_name']!r}"
        for k, shape in enumerate(element):
            region = _shape(shape, image["width"], image["height"])
            if isinstance(region, str):
                problems.report(f"{where}: <{shape.tag[:40]}> {k}: {region}")
            elif region is not None:
                objects.append((len(images), f"{where}: <{shape.tag}> {k}", *region))
    if not images:
        problems.fail("no usable <image> record")
    names = names if names is not None else sorted({obj[2] for obj in objects})
    category = {name: n + 1 for n, name in enumerate(names)}
    annotations = []
    for image_id, where, label, box, polygons, occluded in objects:
        if label not in category:
            problems.report(f"{where}: label {short_repr(label)} is not among the <labels> of <meta>")
            continue
        annotations.append(box_record(len(annotations) + 1, image_id, category[label], box, polygons,
                                      occluded=occluded))
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": n, "name": name} for name, n in category.items()]}
    return Records(coco, image_root, xml_file, problems.skipped)


def _parse(xml_file: str):
    """The <annotations> element."""
    try:
        root = ElementTree.parse(xml_file).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"CVAT annotation file not found: {xml_file}") from None
    except (ElementTree.ParseError, LookupError) as exc:  # LookupError: an encoding Python does not know
        raise AnnotationError(f"{xml_file}: malformed XML ({type(exc).__name__}: {exc})") from None
    except DefusedXmlException as exc:  # entity expansion, external references
        raise AnnotationError(f"{xml_file}: refused unsafe XML ({exc!r})") from None
    if root.tag != "annotations":
        raise AnnotationError(f"{xml_file}: the root element must be <annotations> (CVAT for images 1.1), "
                              f"got <{short_repr(root.tag)}>")
    return root


def _meta_labels(root, xml_file: str) -> Optional[list[str]]:
    """The label names of <meta>, in order, or None when it lists none."""
    for owner in ("task", "project", "job"):
        labels = root.find(f"meta/{owner}/labels")
        if labels is not None:
            names = [label.findtext("name") or "" for label in labels.findall("label")]
            empty = next((n for n, name in enumerate(names) if not name.strip()), None)
            if empty is not None:
                raise AnnotationError(f"{xml_file}: <meta>: label {empty + 1} has no <name>")
            if len(set(names)) != len(names):
                twice = next(name for name in names if names.count(name) > 1)
                raise AnnotationError(f"{xml_file}: <meta>: label {short_repr(twice)} appears twice")
            return names or None
    return None


def _image_record(element):
    """{"file_name", "width", "height", "cvat_id"} of an <image>, or why it has none."""
    name = element.get("name") or ""
    if not name:
        return "needs a name"
    if (problem := path_problem(name)) is not None:
        return problem
    values = [_integer(element.get(key)) for key in ("id", "width", "height")]
    if values[0] is None:
        return f"id must be an integer, got {short_repr(element.get('id'))}"
    cvat_id, width, height = values
    if not (width is not None and height is not None and width > 0 and height > 0
            and width * height <= MAX_IMAGE_PIXELS):
        return (f"width and height must be positive integers, at most {MAX_IMAGE_PIXELS} pixels together, "
                f"got {short_repr(element.get('width'))} x {short_repr(element.get('height'))}")
    return {"file_name": name, "width": width, "height": height, "cvat_id": cvat_id}


def _integer(text: Optional[str]) -> Optional[int]:
    text = (text or "").strip()
    return int(text) if text.isascii() and text.lstrip("-").isdigit() and len(text) < 20 else None


def _shape(shape, width: int, height: int):
    """(label, clipped xyxy box, polygons, occluded) of a region shape, None
    for an element that marks no region, or why it is invalid."""
    if shape.tag in UNSUPPORTED_TAGS:
        return f"{shape.tag}s are not supported ({', '.join(REGION_TAGS)})"
    if shape.tag not in REGION_TAGS:
        return None
    label = shape.get("label") or ""
    if not label:
        return "needs a label"
    occluded = shape.get("occluded", "0")
    if occluded not in ("0", "1"):
        return f"occluded must be 0 or 1, got {short_repr(occluded)}"
    if shape.tag == "box":
        box = [_number(shape.get(key)) for key in ("xtl", "ytl", "xbr", "ybr")]
        if None in box:
            return "needs finite numbers xtl, ytl, xbr, ybr"
        if box[2] < box[0] or box[3] < box[1]:
            return f"inverted box {box}"
        if _number(shape.get("rotation", "0")) != 0:
            return f"rotated boxes are not supported (rotation {short_repr(shape.get('rotation'))})"
        polygons = []
    else:
        polygon = _polygon(shape.get("points") or "")
        if polygon is None:
            return f"points must be 3 or more finite 'x,y' pairs split by ';', got {short_repr(shape.get('points'))}"
        box = [min(polygon[0::2]), min(polygon[1::2]), max(polygon[0::2]), max(polygon[1::2])]
        polygons = [polygon]
    if (problem := region_problem(box, polygons, width, height)) is not None:
        return problem
    return label, clipped(box, width, height), polygons, occluded == "1"


def _number(text: Optional[str]) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _polygon(points: str) -> Optional[list[float]]:
    """"x1,y1;x2,y2;..." as a flat [x1, y1, x2, y2, ...] of 3 or more finite points, or None."""
    pairs = [pair.split(",") for pair in points.split(";")]
    if len(pairs) < 3 or any(len(pair) != 2 for pair in pairs):
        return None
    values = [_number(v) for pair in pairs for v in pair]
    return None if None in values else values
