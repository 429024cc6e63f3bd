"""YOLO datasets in the layout Ultralytics documents.

    data.yaml                  path: .   train: images/train   val: images/val   names: {0: cat, 1: dog}
    images/train/a.jpg         labels/train/a.txt:   0 0.5 0.5 0.25 0.5          (class cx cy w h)
                                                     1 0.1 0.1 0.4 0.1 0.25 0.4  (class x1 y1 x2 y2 x3 y3 ...)

Coordinates are fractions of the image's width and height. A split entry of
data.yaml is a folder of images (searched recursively), a .txt file listing
images (one a line, relative to the list's folder), or a list of these, all
relative to `path`; `path` is relative to data.yaml's folder (or absent: that
folder). An image's label file is its path with the last images/ folder
replaced by labels/ and the extension by .txt (`yolo_label_path`). An image
without a label file, or with an empty one, is an image without objects.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Optional

from ..io.jsonio import short_repr
from .coco import CocoDetection
from .images import IMAGE_EXTENSIONS, image_size, path_problem
from .problems import AnnotationError, AnnotationProblems
from .records import Records, box_record

# A decimal number as label files hold them; no nan, inf, hex or '1_0' that float() would take.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# data.yaml keys that are not splits (for the message listing the splits a file has).
_NOT_SPLITS = ("path", "names", "nc", "download", "yaml_file")


class _LineProblems(AnnotationProblems):
    """AnnotationProblems of many label files: each message starts with its
    own "file:line" instead of one source (which only the summary warning names)."""

    def report(self, message: str) -> None:
        if not self.skip_invalid:
            raise AnnotationError(message)
        self.skipped.append(message)


def read_yolo(path: str | os.PathLike, split: str = "train", skip_invalid: bool = False) -> Records:
    """A split of a YOLO dataset as Records.

    path: the data.yaml file, or the folder holding data.yaml (or data.yml).
    Category ids 1..K name the classes in data.yaml's order (YOLO class c is
    category c + 1); file names are relative to image_root (the dataset's
    `path`, or the folder holding it and every split folder); image sizes come
    from the files' headers. Boxes are clipped to the image; polygon lines
    give their bounding box and one polygon (pixels) as segmentation.

    A bad data.yaml or label file, or a bad line with skip_invalid=False, is
    an AnnotationError naming the file (and line: "labels/train/a.txt:3: ...");
    with skip_invalid=True a bad line is skipped and counted in one warning.
    """
    problems = _LineProblems(os.fspath(path), skip_invalid)
    records = _read(os.fspath(path), split, problems)
    problems.warn()
    return records


def yolo_splits(path: str | os.PathLike) -> list[str]:
    """The split names data.yaml sets ("train", "val", ...), given it or its folder."""
    yaml_file = _yaml_file(os.fspath(path))
    return _splits(_load_yaml(yaml_file))


def _splits(config: dict) -> list[str]:
    return [k for k, v in config.items() if isinstance(k, str) and k not in _NOT_SPLITS and v
            and isinstance(v, (str, list))]


def yolo_label_path(image_path: str | os.PathLike) -> str:
    """The label file Ultralytics pairs with an image (its img2label_paths):
    the last images/ folder of the path becomes labels/, the extension .txt;
    a path without an images/ folder has its label file beside it."""
    image_path = os.fspath(image_path)
    padded = image_path if image_path.startswith(os.sep) else os.sep + image_path  # "images/a.jpg" counts too
    head, marker, tail = padded.rpartition(f"{os.sep}images{os.sep}")
    if marker:
        padded = f"{head}{os.sep}labels{os.sep}{tail}"
    label = os.path.splitext(padded)[0] + ".txt"
    return label if image_path.startswith(os.sep) else label[1:]


class YOLODetection(CocoDetection):
    """A split of a YOLO dataset as a CocoDetection (same items and targets):
    labels 1..K in data.yaml's order, masks from polygon lines with
    with_masks (a box line's mask is empty). `records` holds what was read."""

    def __init__(self, path: str | os.PathLike, split: str = "train", transforms: Optional[Callable] = None,
                 with_masks: bool = False, skip_invalid: bool = False):
        self.records = read_yolo(path, split, skip_invalid)
        super().__init__(self.records.image_root, self.records.source, transforms=transforms,
                         with_masks=with_masks, skip_invalid=skip_invalid, dataset=self.records.coco)
        self.skipped = self.records.skipped + self.skipped


def _read(path: str, split: str, problems: _LineProblems) -> Records:
    """The split's images (numbered 1..N in path order) and the objects of their label files."""
    yaml_file = _yaml_file(path)
    config = _load_yaml(yaml_file)
    names = _names(config, yaml_file)
    root = _root(config, yaml_file)
    images = _split_images(config, split, root, yaml_file)
    image_root = os.path.commonpath([root] + [os.path.dirname(p) for p in images])
    categories = [{"id": n + 1, "name": name} for n, name in enumerate(names)]
    coco: dict[str, list[dict[str, Any]]] = {"images": [], "annotations": [], "categories": categories}
    for number, image_path in enumerate(images, start=1):
        width, height = image_size(image_path)
        coco["images"].append({"id": number, "file_name": os.path.relpath(image_path, image_root).replace(os.sep, "/"),
                               "width": width, "height": height})
        for category, box, polygon in _objects(yolo_label_path(image_path), len(names), width, height, problems):
            coco["annotations"].append(box_record(len(coco["annotations"]) + 1, number, category, box,
                                                  [polygon] if polygon else None))
    return Records(coco, image_root, yaml_file, problems.skipped)


def _yaml_file(path: str) -> str:
    """data.yaml itself, given it or its folder."""
    if os.path.isdir(path):
        for name in ("data.yaml", "data.yml"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"{path}: no data.yaml in the folder (a YOLO dataset needs one)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"YOLO data.yaml not found: {path}")
    return path


def _load_yaml(yaml_file: str) -> dict:
    """data.yaml's mapping; malformed YAML is an error naming the file (and its line)."""
    import yaml

    with open(yaml_file, "rb") as f:
        text = f.read()
    try:
        config = yaml.safe_load(text)  # bytes: YAML detects UTF-8/16 itself and reports bad bytes as a YAMLError
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        reason = " ".join(str(exc).split())[:200]  # YAML's message spans lines
        raise AnnotationError(f"{yaml_file}{where}: malformed YAML ({reason})") from None
    except RecursionError:  # [[[[...]]]] nested beyond the parser's stack
        raise AnnotationError(f"{yaml_file}: malformed YAML (nested too deeply)") from None
    if not isinstance(config, dict):
        raise AnnotationError(f"{yaml_file}: expected a YAML mapping with names and split paths, "
                              f"got {short_repr(config)}")
    return config


def _names(config: dict, yaml_file: str) -> list[str]:
    """The class names in class-id order: `names` a list, or a map of ids 0..K-1 to names."""
    names = config.get("names")
    if isinstance(names, dict):
        ids = [_class_key(key) for key in names]
        if sorted(ids) != list(range(len(ids))):
            raise AnnotationError(f"{yaml_file}: 'names' maps class ids, which must be 0..{len(ids) - 1}, "
                                  f"got {short_repr(list(names))}")
        names = [value for _, value in sorted(zip(ids, names.values()))]
    if not isinstance(names, list) or not names:
        raise AnnotationError(f"{yaml_file}: 'names' must be a non-empty list of class names or a map of class "
                              f"ids to names, got {short_repr(names)}")
    bad = [n for n, name in enumerate(names) if type(name) not in (str, int, float) or name == ""]
    if bad:  # YAML reads `no`, `yes`, `null` and dates as other types: ask for quotes
        raise AnnotationError(f"{yaml_file}: names: class {bad[0]} must be a name (quote it in YAML), "
                              f"got {short_repr(names[bad[0]])}")
    names = [str(name) for name in names]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise AnnotationError(f"{yaml_file}: names: {short_repr(twice)} appears twice")
    if "nc" in config and config["nc"] != len(names):
        raise AnnotationError(f"{yaml_file}: nc is {short_repr(config['nc'])} but names has {len(names)} classes")
    return names


def _class_key(key: Any) -> int:
    """A names-map key as a class id (-1 when it is none: an int or a digit string)."""
    if type(key) is int:
        return key
    return int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else -1


def _root(config: dict, yaml_file: str) -> str:
    """The dataset folder: `path`, relative to data.yaml's folder, or that folder."""
    folder = os.path.dirname(os.path.abspath(yaml_file))
    path = config.get("path")
    if path in (None, ""):
        return folder
    if not isinstance(path, str) or "\0" in path:
        raise AnnotationError(f"{yaml_file}: 'path' must be a folder, got {short_repr(path)}")
    root = os.path.normpath(os.path.join(folder, path))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{yaml_file}: dataset folder 'path' not found: {root}")
    return root


def _split_images(config: dict, split: str, root: str, yaml_file: str) -> list[str]:
    """The split's image files (absolute, each once, in order)."""
    entries = config.get(split)
    if entries in (None, "", []):
        raise AnnotationError(f"{yaml_file}: no {split!r} split; the file has {', '.join(_splits(config)) or 'none'}")
    entries = entries if isinstance(entries, list) else [entries]
    images: list[str] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry or "\0" in entry:
            raise AnnotationError(f"{yaml_file}: {split}: expected a folder or a .txt list of images, "
                                  f"got {short_repr(entry)}")
        images.extend(_entry_images(_resolve(root, entry), split, yaml_file))
    if not images:
        raise AnnotationError(f"{yaml_file}: the {split!r} split holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return list(dict.fromkeys(images))


def _resolve(root: str, entry: str) -> str:
    """A split entry under `root`; Ultralytics also reads '../x' as 'x' when
    only that exists (annotation services' exports write '../train/images')."""
    path = os.path.normpath(os.path.join(root, entry))
    if not os.path.exists(path) and entry.startswith("../"):
        stripped = os.path.normpath(os.path.join(root, entry[3:]))
        return stripped if os.path.exists(stripped) else path
    return path


def _entry_images(path: str, split: str, yaml_file: str) -> list[str]:
    if os.path.isdir(path):
        found = []
        for folder, subfolders, files in os.walk(path):
            subfolders.sort()
            found.extend(os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
        return found
    if os.path.isfile(path) and path.lower().endswith(".txt"):
        return _listed_images(path)
    if os.path.exists(path):
        raise AnnotationError(f"{yaml_file}: {split}: {path} is neither a folder of images nor a .txt list")
    raise FileNotFoundError(f"{yaml_file}: {split}: not found: {path}")


def _listed_images(list_file: str) -> list[str]:
    """The images a .txt list names, relative to its folder ('./' or not);
    a name leading outside that folder is an error naming the line."""
    folder = os.path.dirname(list_file)
    images = []
    for number, line in enumerate(_text_lines(list_file), start=1):
        name = line.strip()
        name = name[2:] if name.startswith("./") else name
        if not name:
            continue
        if (problem := path_problem(name)) is not None:
            raise AnnotationError(f"{list_file}:{number}: {problem}")
        images.append(os.path.join(folder, name))
    return images


def _text_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark allowed); other
    bytes are an error naming the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def _objects(label_file: str, num_classes: int, width: int, height: int, problems: _LineProblems):
    """(category id, clipped xyxy box in pixels, flat polygon in pixels or
    None) of each valid line of a label file; none when there is no file."""
    try:
        lines = _text_lines(label_file)
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise AnnotationError(f"{label_file}: a folder where the image's label file belongs") from None
    objects = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parsed = _parse_line(line.split(), num_classes)
        if isinstance(parsed, str):
            problems.report(f"{label_file}:{number}: {parsed}")
            continue
        category, values = parsed
        if len(values) == 4:
            cx, cy, w, h = values
            box = [max(cx - w / 2, 0) * width, max(cy - h / 2, 0) * height,
                   min(cx + w / 2, 1) * width, min(cy + h / 2, 1) * height]
            objects.append((category, box, None))
        else:
            polygon = [v * (width if n % 2 == 0 else height) for n, v in enumerate(values)]
            box = [min(polygon[0::2]), min(polygon[1::2]), max(polygon[0::2]), max(polygon[1::2])]
            objects.append((category, box, polygon))
    return objects


def _parse_line(tokens: list[str], num_classes: int):
    """(category id, [cx, cy, w, h] or polygon values) of one line, or why it is invalid."""
    if not (len(tokens) == 5 or (len(tokens) >= 7 and len(tokens) % 2 == 1)):
        return (f"expected 5 values (class cx cy w h) or a class and 3 or more x y pairs, got {len(tokens)} "
                f"value(s)")
    bad = next((t for t in tokens if not _NUMBER.fullmatch(t)), None)
    if bad is not None:
        return f"{short_repr(bad)} is not a number"
    numbers = [float(t) for t in tokens]
    if not all(math.isfinite(v) for v in numbers):
        return "a value is too large to be a number"
    cls = numbers[0]
    if not (cls.is_integer() and 0 <= cls < num_classes):
        return f"class id {tokens[0]} is outside names (0..{num_classes - 1})"
    values = numbers[1:]
    outside = next((v for v in values if not 0 <= v <= 1), None)
    if outside is not None:
        return f"coordinates must be normalised to [0, 1], got {outside:g} (pixels?)"
    return int(cls) + 1, values
