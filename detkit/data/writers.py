"""Writers of the five dataset formats: one prepared split (SplitOut, made
by detkit.data.convert from Records) out as COCO JSON, Pascal VOC XML, YOLO
text, LabelMe JSON or CVAT for images 1.1 XML, with the images copied
into the format's layout under the output folder:

    coco:    annotations/instances_<split>.json, images/<split>/<name>
    voc:     VOC2007/{Annotations/<id>.xml, JPEGImages/<name>, ImageSets/Main/<split>.txt, labels.txt}
    yolo:    data.yaml, images/<split>/<name>, labels/<split>/<stem>.txt
    labelme: <split>/<name>, <split>/<stem>.json, <split>/labels.txt
    cvat:    <split>/annotations.xml, <split>/images/<name>

Coordinates are detkit's (pixels, (0, 0) the image's top-left corner),
except VOC's 1-based inclusive corners and YOLO's fractions of the image.
COCO keeps every annotation record whole; VOC writes boxes only; YOLO,
LabelMe and CVAT write an object's one polygon where it has one, else its
box. What a format cannot hold is counted in SplitOut.lost and warned about
(warn_lost): crowd regions (only COCO has them), VOC's difficult flag (YOLO
and CVAT have none; LabelMe gets a shape flag), boxes under one pixel (VOC).
Use detkit.data.convert's write_records / convert, which check the records
and write atomically.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .labelme import IMAGE_DATA
from .records import Records

VOC_YEAR = "2007"
LABELME_VERSION = "5.2.1"


@dataclass
class ObjectOut:
    ann: dict[str, Any]  # the record as read; COCO writes it whole
    label: int  # 1..K, in category id order
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels, clipped to the image
    polygon: Optional[list[float]]  # [x1, y1, x2, y2, ...] pixels (polygon formats only), or None
    difficult: bool


@dataclass
class ImageOut:
    info: dict[str, Any]  # the image record
    name: str  # file name in the output layout: flat and unique
    source: str  # the image file to copy
    objects: list[ObjectOut]


@dataclass
class SplitOut:
    name: str
    records: Records
    classes: list[str]
    images: list[ImageOut]
    lost: Counter = field(default_factory=Counter)  # what the format could not hold, by reason

    @property
    def stem(self) -> dict[int, str]:
        """{image id: output name without extension}."""
        return {image.info["id"]: os.path.splitext(image.name)[0] for image in self.images}


# ---- the five formats: each writes one split and returns (images, annotations) ----

def _write_coco(split: SplitOut, out: str, copy_images: bool) -> tuple[int, int]:
    images, annotations = [], []
    for image in split.images:
        _place(image, os.path.join(out, "images", split.name, image.name), split, copy_images)
        info = {key: value for key, value in image.info.items() if key != IMAGE_DATA}  # bytes: written as the file
        images.append({**info, "file_name": image.name})
        annotations.extend(obj.ann for obj in image.objects)
    ids = [ann.get("id") for ann in annotations]
    if len(set(map(repr, ids))) != len(ids) or not all(type(i) is int for i in ids):
        annotations = [{**ann, "id": n + 1} for n, ann in enumerate(annotations)]  # pycocotools needs unique ids
    coco = {key: value for key, value in split.records.coco.items() if key not in ("images", "annotations")}
    coco.update(images=images, annotations=annotations)
    _write_json(os.path.join(out, "annotations", f"instances_{split.name}.json"), coco)
    return len(images), len(annotations)


def _write_voc(split: SplitOut, out: str, copy_images: bool) -> tuple[int, int]:
    voc = os.path.join(out, f"VOC{VOC_YEAR}")
    written = 0
    for image in split.images:
        stem = os.path.splitext(image.name)[0]
        _place(image, os.path.join(voc, "JPEGImages", image.name), split, copy_images)
        root = _voc_xml(image, split)
        written += len(root.findall("object"))
        _write_xml(os.path.join(voc, "Annotations", f"{stem}.xml"), root)
    _write_lines(os.path.join(voc, "ImageSets", "Main", f"{split.name}.txt"), list(split.stem.values()))
    return len(split.images), written


def _voc_xml(image: ImageOut, split: SplitOut) -> ET.Element:
    """<annotation> of one image; corners 1-based and inclusive: detkit's box
    (x1, y1, x2, y2) covers pixels x1 + 1 .. x2 in VOC's numbering."""
    root = ET.Element("annotation")
    _text(root, "folder", f"VOC{VOC_YEAR}")
    _text(root, "filename", image.name)
    size = ET.SubElement(root, "size")
    for key, value in (("width", image.info["width"]), ("height", image.info["height"]), ("depth", 3)):
        _text(size, key, value)
    _text(root, "segmented", 0)
    for obj in image.objects:
        x1, y1, x2, y2 = obj.box
        if x2 - x1 < 1 or y2 - y1 < 1:  # VOC's inclusive corners cannot hold less than one pixel
            split.lost["thinner than one pixel"] += 1
            continue
        node = ET.SubElement(root, "object")
        _text(node, "name", split.classes[obj.label - 1])
        _text(node, "pose", "Unspecified")
        _text(node, "truncated", 0)
        _text(node, "difficult", int(obj.difficult))
        box = ET.SubElement(node, "bndbox")
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            _text(box, key, _number(value))
    return root


def _write_yolo(split: SplitOut, out: str, copy_images: bool) -> tuple[int, int]:
    written = 0
    for image in split.images:
        _place(image, os.path.join(out, "images", split.name, image.name), split, copy_images)
        lines = _yolo_lines(image)
        written += len(lines)
        stem = os.path.splitext(image.name)[0]
        _write_lines(os.path.join(out, "labels", split.name, f"{stem}.txt"), lines)  # empty: a background image
        split.lost["difficult flags (YOLO has none)"] += sum(obj.difficult for obj in image.objects)
    return len(split.images), written


def _yolo_lines(image: ImageOut) -> list[str]:
    """`class cx cy w h` per object, normalised; `class x1 y1 x2 y2 ...` for
    all of them when any has a polygon (Ultralytics reads a file with a
    polygon line as polygons only, so boxes become rectangles)."""
    width, height = image.info["width"], image.info["height"]
    polygons = any(obj.polygon is not None for obj in image.objects)
    lines = []
    for obj in image.objects:
        x1, y1, x2, y2 = obj.box
        if polygons:
            points = obj.polygon if obj.polygon is not None else [x1, y1, x2, y1, x2, y2, x1, y2]
            values = [v / (width if n % 2 == 0 else height) for n, v in enumerate(points)]
        else:
            values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        # 10 digits, not Ultralytics' usual 6: a pixel coordinate comes back within 1e-5 px, not 0.01 px
        lines.append(" ".join([str(obj.label - 1)] + [f"{v:.10g}" for v in values]))
    return lines


def _write_labelme(split: SplitOut, out: str, copy_images: bool) -> tuple[int, int]:
    folder = os.path.join(out, split.name)
    written = 0
    for image in split.images:
        _place(image, os.path.join(folder, image.name), split, copy_images)
        shapes = [_labelme_shape(obj, split.classes) for obj in image.objects]
        written += len(shapes)
        _write_json(os.path.join(folder, os.path.splitext(image.name)[0] + ".json"), {
            "version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image.name, "imageData": None,
            "imageHeight": image.info["height"], "imageWidth": image.info["width"]})
    _write_lines(os.path.join(folder, "labels.txt"), split.classes)  # labelme --labels: the class order
    return len(split.images), written


def _labelme_shape(obj: ObjectOut, classes: list[str]) -> dict[str, Any]:
    """A rectangle (two corners) or a polygon; VOC's difficult as a shape flag."""
    if obj.polygon is None:
        kind, points = "rectangle", [[obj.box[0], obj.box[1]], [obj.box[2], obj.box[3]]]
    else:
        kind, points = "polygon", np.asarray(obj.polygon).reshape(-1, 2).tolist()
    return {"label": classes[obj.label - 1], "points": points, "group_id": None, "description": "",
            "shape_type": kind, "flags": {"difficult": True} if obj.difficult else {}}


def _write_cvat(split: SplitOut, out: str, copy_images: bool) -> tuple[int, int]:
    folder = os.path.join(out, split.name)
    root = ET.Element("annotations")
    _text(root, "version", "1.1")
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    _text(task, "name", split.name)
    _text(task, "size", len(split.images))
    _text(task, "mode", "annotation")
    labels = ET.SubElement(task, "labels")
    for name in split.classes:  # the class order, for readers that take it from here
        label = ET.SubElement(labels, "label")
        _text(label, "name", name)
        ET.SubElement(label, "attributes")
    written = 0
    for index, image in enumerate(split.images):
        _place(image, os.path.join(folder, "images", image.name), split, copy_images)
        node = ET.SubElement(root, "image", id=str(index), name=image.name, width=str(image.info["width"]),
                             height=str(image.info["height"]))
        for obj in image.objects:
            _cvat_shape(node, obj, split.classes[obj.label - 1])
            written += 1
        split.lost["difficult flags (CVAT has none)"] += sum(obj.difficult for obj in image.objects)
    _write_xml(os.path.join(folder, "annotations.xml"), root)
    return len(split.images), written


def _cvat_shape(parent: ET.Element, obj: ObjectOut, label: str) -> None:
    """<box xtl ytl xbr ybr> or <polygon points="x,y;x,y;...">, in pixels."""
    common = {"label": label, "source": "manual", "occluded": str(int(bool(obj.ann.get("occluded")))), "z_order": "0"}
    if obj.polygon is None:
        corners = dict(zip(("xtl", "ytl", "xbr", "ybr"), map(_number, obj.box)))
        ET.SubElement(parent, "box", {**common, **corners})
    else:
        points = np.asarray(obj.polygon).reshape(-1, 2)
        text = ";".join(f"{_number(x)},{_number(y)}" for x, y in points)
        ET.SubElement(parent, "polygon", {**common, "points": text})


WRITERS = {"coco": _write_coco, "voc": _write_voc, "yolo": _write_yolo, "labelme": _write_labelme,
            "cvat": _write_cvat}


def finish(format: str, splits: list[SplitOut], out: str) -> None:
    """What the whole dataset needs once its splits are written: YOLO's
    data.yaml, VOC's class list and trainval set."""
    if format not in ("yolo", "voc"):
        return
    classes = splits[0].classes
    for split in splits[1:]:
        if split.classes != classes:
            raise ValueError(f"{format} keeps one class list, but {split.records.source} has {split.classes} "
                             f"and {splits[0].records.source} {classes}")
    if format == "yolo":
        import yaml

        data = {split.name: f"images/{split.name}" for split in splits}  # relative to data.yaml's folder
        data.update(nc=len(classes), names=dict(enumerate(classes)))
        with open(os.path.join(out, "data.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
        return
    voc = os.path.join(out, f"VOC{VOC_YEAR}")
    _write_lines(os.path.join(voc, "labels.txt"), classes)  # VOC stores names, not their order
    names = {split.name: list(split.stem.values()) for split in splits}
    if "trainval" not in names and {"train", "val"} & set(names):
        _write_lines(os.path.join(voc, "ImageSets", "Main", "trainval.txt"),
                     names.get("train", []) + names.get("val", []))


# ---- files ----

def _place(image: ImageOut, target: str, split: SplitOut, copy_images: bool) -> None:
    """The image file at `target`: a copy of the source (or the bytes a LabelMe
    file embeds when its image file is missing); nothing when not copy_images.
    A copy, not a hard link: a tool that rewrites an image of the output in
    place would otherwise change the source dataset too."""
    if not copy_images:
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if IMAGE_DATA in image.info:
        with open(target, "wb") as f:
            f.write(image.info[IMAGE_DATA])
        return
    if not os.path.isfile(image.source):
        raise FileNotFoundError(f"{split.records.source}: image {image.info['id']!r} "
                                f"({image.info['file_name']!r}): image file not found: {image.source}")
    shutil.copyfile(image.source, target)


def warn_lost(split: SplitOut, format: str) -> None:
    lost = {reason: n for reason, n in split.lost.items() if n}
    if lost:
        what = "; ".join(f"{n} {reason}" for reason, n in lost.items())
        warnings.warn(f"{split.records.source}: writing split {split.name!r} as {format} lost {what}"
                      + (" (crowd regions exist only in COCO)" if "crowd" in lost else ""),
                      RuntimeWarning, stacklevel=3)


def _number(value: float) -> str:
    """A coordinate as text: an integer as one, else up to 4 decimals."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.4f}".rstrip("0").rstrip(".")


def _text(parent: ET.Element, tag: str, value: Any) -> ET.Element:
    node = ET.SubElement(parent, tag)
    node.text = str(value)
    return node


def _write_xml(path: str, root: ET.Element) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _write_json(path: str, payload: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f)


def _write_lines(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


