"""Reading and checking any of the five dataset formats: the format guessed
from the path, COCO and VOC read here into Records, YOLO, LabelMe and CVAT by
their own modules; YOLO sets checked by their own checker, the others on
their Records. This module imports the readers and checkers; they import
detkit.data.records and .checks, never this."""
from __future__ import annotations

import os
from typing import Any, Optional

from .checks import CheckReport, check_records
from .records import FORMATS, Records, box_record
from .yolo_checks import check_yolo


def guess_format(path: str) -> str:
    """The format a path holds: a .json file is COCO (or one LabelMe file: give
    the folder), a .xml file CVAT, a .yaml/.yml file YOLO's data.yaml, a folder
    with VOC<year>/ or Annotations/ VOC, with data.yaml YOLO, with LabelMe
    .json files LabelMe."""
    path = os.fspath(path)
    lower = path.lower()
    if os.path.isfile(path):
        if lower.endswith(".json"):
            return "coco"
        if lower.endswith(".xml"):
            return "cvat"
        if lower.endswith((".yaml", ".yml")):
            return "yolo"
        raise ValueError(f"{path}: cannot tell the dataset format from the file; pass format= "
                         f"({', '.join(FORMATS)})")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset not found: {path}")
    entries = os.listdir(path)
    if any(e.startswith("VOC") for e in entries) or "Annotations" in entries:
        return "voc"
    if any(e in ("data.yaml", "data.yml") for e in entries):
        return "yolo"
    if any(e.lower().endswith(".json") for e in entries):
        return "labelme"
    raise ValueError(f"{path}: cannot tell the dataset format from the folder; pass format= ({', '.join(FORMATS)})")


def load_records(path: str | os.PathLike, format: Optional[str] = None, split: str = "train",
                 image_root: Optional[str] = None, skip_invalid: bool = False, **options: Any) -> Records:
    """The dataset at `path` as Records.

    format: one of FORMATS, default guessed from the path (guess_format).
    split: YOLO's split name in data.yaml ("train", "val", ...); VOC's image set
        ("trainval", "test", ...; "train" means VOC's "train").
    image_root: where COCO's and CVAT's file names are relative to (default:
        the annotation file's folder, then its "images" subfolder if present).
    options: passed to the format's reader (VOC: year, classes).
    """
    path = os.fspath(path)
    format = format or guess_format(path)
    if format == "coco":
        return read_coco(path, image_root or _default_image_root(path))
    if format == "voc":
        return read_voc(path, image_set=split, skip_invalid=skip_invalid, **options)
    if format == "yolo":
        from .yolo import read_yolo

        return read_yolo(path, split=split, skip_invalid=skip_invalid, **options)
    if format == "labelme":
        from .labelme import read_labelme

        return read_labelme(path, skip_invalid=skip_invalid, **options)
    if format == "cvat":
        from .cvat import read_cvat

        return read_cvat(path, image_root or _default_image_root(path), skip_invalid=skip_invalid, **options)
    raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")


def _default_image_root(annotation_file: str) -> str:
    """Where an annotation file's image names point: COCO's layout
    (annotations/instances_<split>.json -> images/<split>/), else an "images"
    folder beside the file, else the file's own folder."""
    folder = os.path.dirname(os.path.abspath(annotation_file))
    stem = os.path.splitext(os.path.basename(annotation_file))[0]
    if os.path.basename(folder) == "annotations" and stem.startswith("instances_"):
        split_images = os.path.join(os.path.dirname(folder), "images", stem[len("instances_"):])
        if os.path.isdir(split_images):
            return split_images
    images = os.path.join(folder, "images")
    return images if os.path.isdir(images) else folder


def read_coco(ann_file: str, image_root: str) -> Records:
    """A COCO annotation file as Records (the dict as it is; CocoDetection checks it)."""
    from ..io.jsonio import load_json
    from .problems import AnnotationError

    try:
        coco = load_json(ann_file, "annotation file")
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None
    return Records(coco, image_root, os.fspath(ann_file))


def read_voc(root: str, year: str = "2007", image_set: str = "trainval", classes: Optional[list[str]] = None,
             skip_invalid: bool = False) -> Records:
    """A VOC image set as Records: every object, difficult ones flagged
    ("difficult": True), boxes as VOCDetection reads them (0-based, clipped)."""
    from .voc import VOC_CLASSES, VOCDetection

    voc = VOCDetection(root, year, image_set, keep_difficult=True, classes=classes or VOC_CLASSES,
                       skip_invalid=skip_invalid)
    images, annotations = [], []
    for number, image_id in enumerate(voc.ids, start=1):
        target, file_name, size = voc.target(image_id)
        if size is None:  # no <size> in the XML: the header says
            from .images import image_size

            size = image_size(os.path.join(voc.root, "JPEGImages", file_name))[::-1]
        images.append({"id": number, "file_name": file_name, "width": size[1], "height": size[0],
                       "voc_id": image_id})
        for box, label, hard in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                    target["difficult"].tolist()):
            annotations.append(box_record(len(annotations) + 1, number, label, box, difficult=hard))
    categories = [{"id": n + 1, "name": name} for n, name in enumerate(voc.classes)]
    return Records({"images": images, "annotations": annotations, "categories": categories},
                   os.path.join(voc.root, "JPEGImages"), voc.root, voc.skipped)


def check_dataset(path: str | os.PathLike, format: Optional[str] = None, split: Optional[str] = None,
                  **options) -> CheckReport:
    """Checks the dataset at `path` (see detkit.data.records.load_records).
    YOLO sets get their own checker, which names label files and lines."""
    from .formats import guess_format, load_records

    path = os.fspath(path)
    format = format or guess_format(path)
    if format == "yolo":
        return check_yolo(path, split=split)
    records = load_records(path, format, split=split or "train", skip_invalid=True, **options)
    return check_records(records)
