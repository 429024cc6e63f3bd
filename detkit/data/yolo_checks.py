"""The data checker for YOLO sets, where most custom-data mistakes live:
pixels written where normalised coordinates belong, class ids past the
names, label files without images and images without label files. Every
defect names its label file and line; see detkit.data.checks for the kinds.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from .checks import ERROR, WARNING, CheckReport, Defect, check_image_files
from .images import IMAGE_EXTENSIONS
from .problems import AnnotationError
from .yolo import _load_yaml, _names, _root, _split_images, _splits, _text_lines, _yaml_file, yolo_label_path

EDGE_SLACK = 1e-3  # a box edge this far past the image (rounding in the exporter) is not "outside"


def check_yolo(path: str | os.PathLike, split: Optional[str] = None) -> CheckReport:
    """Checks every split of data.yaml (or `split` alone): label lines, the
    pairing of label files with images, and the image files."""
    yaml_file = _yaml_file(os.fspath(path))
    config = _load_yaml(yaml_file)
    names = _names(config, yaml_file)
    root = _root(config, yaml_file)
    report = CheckReport(yaml_file)
    images: dict[str, str] = {}
    for name in [split] if split else _splits(config):
        for image in _split_images(config, name, root, yaml_file):
            images.setdefault(image, os.path.relpath(image, root))
    labels = {image: yolo_label_path(image) for image in images}
    present = []
    for image, label in labels.items():
        if os.path.isfile(label):
            present.append((label, _short(label, root)))
        else:
            report.defects.append(Defect("missing_labels", images[image], f"no label file {_short(label, root)}; "
                                         "trained as an image without objects", WARNING))
    counts = _check_label_files(present, len(names), report)
    report.boxes += sum(counts)
    report.empty_images += sum(1 for n in counts if n == 0)
    report.images = len(images)
    _orphan_labels(set(labels.values()), root, report)
    check_image_files({image: shown for image, shown in images.items()}, report)
    return report


def _short(path: str, root: str) -> str:
    return os.path.relpath(path, root)


def _check_label_files(files: list[tuple[str, str]], num_classes: int, report: CheckReport) -> list[int]:
    """Checks every line of the label files ((path, shown name) each);
    returns each file's object count. Box lines (5 values) of all files are
    checked at once with numpy, so a COCO-sized set takes seconds; polygon
    and malformed lines one by one."""
    counts, rows, places = [], [], []
    for path, shown in files:
        try:
            lines = _text_lines(path)
        except AnnotationError as exc:  # not UTF-8
            report.defects.append(Defect("bad_record", shown, str(exc).split(": ", 1)[-1]))
            counts.append(0)
            continue
        objects, polygons = 0, {}
        for number, line in enumerate(lines, start=1):
            tokens = line.split()
            if not tokens:
                continue
            objects += 1
            if len(tokens) == 5:
                rows.append(tokens)
                places.append(f"{shown}:{number}")
                continue
            # a polygon, or a line of the wrong length
            defect = _line_defect(tokens, num_classes, f"{shown}:{number}")
            if defect is not None:
                report.defects.append(defect)
            elif (key := tuple(map(float, tokens))) in polygons:
                report.defects.append(Defect("duplicate_box", f"{shown}:{number}",
                                             f"the same object as line {polygons[key]}", WARNING))
            else:
                polygons[key] = number
        counts.append(objects)
    _check_box_rows(rows, places, num_classes, report)
    return counts


def _check_box_rows(rows: list[list[str]], places: list[str], num_classes: int, report: CheckReport) -> None:
    """The 5-value lines of all files: [N, 5] floats, each defect found by one
    numpy mask, in the order a line is judged (see _line_defect)."""
    if not rows:
        return
    try:
        values = np.array(rows).astype(np.float64)
    except ValueError:  # a token that is not a number: judge the lines one by one
        for tokens, where in zip(rows, places):
            if (defect := _line_defect(tokens, num_classes, where)) is not None:
                report.defects.append(defect)
        return
    flagged = ~np.isfinite(values).all(1)
    classes, coords = values[:, 0], values[:, 1:]
    with np.errstate(invalid="ignore"):
        bad_class = ~flagged & ((classes != np.floor(classes)) | (classes < 0) | (classes >= num_classes))
        flagged |= bad_class
        outside = ~flagged & ((coords < 0) | (coords > 1)).any(1)
        flagged |= outside
        edges = np.concatenate([coords[:, :2] - coords[:, 2:] / 2, coords[:, :2] + coords[:, 2:] / 2], 1)
        empty = ~flagged & ((coords[:, 2] <= 0) | (coords[:, 3] <= 0))
        past = ~flagged & ~empty & ((edges < -EDGE_SLACK) | (edges > 1 + EDGE_SLACK)).any(1)
    for n in np.flatnonzero(flagged | empty | past).tolist():
        report.defects.append(_line_defect(rows[n], num_classes, places[n]))
    _duplicates(values, places, report)


def _duplicates(values: np.ndarray, places: list[str], report: CheckReport) -> None:
    """The same line twice in one file (rows are grouped by file in order)."""
    files = np.array([place.rsplit(":", 1)[0] for place in places])
    _, file_ids = np.unique(files, return_inverse=True)
    keyed = np.column_stack([file_ids.astype(np.float64), values])
    _, first, inverse = np.unique(keyed, axis=0, return_index=True, return_inverse=True)
    for n in np.flatnonzero(first[inverse.reshape(-1)] != np.arange(len(values))).tolist():
        earlier = places[first[inverse.reshape(-1)[n]]].rsplit(":", 1)[1]
        report.defects.append(Defect("duplicate_box", places[n], f"the same object as line {earlier}", WARNING))


def _line_defect(tokens: list[str], num_classes: int, where: str) -> Optional[Defect]:
    """What is wrong with one label line, or None."""
    if not (len(tokens) == 5 or (len(tokens) >= 7 and len(tokens) % 2 == 1)):
        return Defect("bad_record", where, f"expected 5 values (class cx cy w h) or a class and 3 or more x y "
                                           f"pairs, got {len(tokens)}")
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        return Defect("bad_record", where, f"{bad!r} is not a number")
    if not all(math.isfinite(v) for v in values):
        return Defect("box_nan", where, "a value is NaN or infinite")
    if not (values[0].is_integer() and 0 <= values[0] < num_classes):
        return Defect("class_id", where, f"class id {tokens[0]} is outside names (0..{num_classes - 1})")
    coords = values[1:]
    outside = [v for v in coords if not 0 <= v <= 1]
    if outside:
        pixels = " (pixels?)" if max(abs(v) for v in outside) > 1.5 else ""
        return Defect("coordinates", where, f"coordinates must be normalised to [0, 1], got {outside[0]:g}{pixels}")
    return _box_defect(coords, where)


def _box_defect(coords: list[float], where: str) -> Optional[Defect]:
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            return Defect("box_empty", where, f"width {w:g} and height {h:g} must be positive")
        edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if min(edges) < -EDGE_SLACK or max(edges) > 1 + EDGE_SLACK:  # the centre is inside: never wholly out
            return Defect("box_outside", where, f"the box reaches past the image (training clips it): x "
                                                f"{edges[0]:.3f}..{edges[2]:.3f}, y {edges[1]:.3f}..{edges[3]:.3f}",
                          WARNING)
        return None
    xs, ys = coords[0::2], coords[1::2]
    if max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
        return Defect("box_empty", where, "the polygon has no area")
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _orphan_labels(expected: set[str], root: str, report: CheckReport) -> None:
    """Label files, in the folders the images' label files belong in, that no image pairs with."""
    for folder in sorted({os.path.dirname(label) for label in expected}):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.endswith(".txt") and path not in expected and name != "classes.txt":
                report.defects.append(Defect("missing_image", _short(path, root),
                                             f"no image ({'/'.join(IMAGE_EXTENSIONS)}) pairs with this label file; "
                                             "its objects are never trained on", ERROR))
