"""Conversion between the five dataset formats: Records checked, named and
traced for a format, then written atomically by detkit.data.writers.

    convert("data/yolo/data.yaml", "data/coco", to="coco")   # -> {"train/images": 120, ...}
    write_records(load_records("instances_val.json"), "out/yolo", "yolo", split="val")

The splits of a source:
    coco:    one annotation file, the split named after it (instances_val.json -> "val"), or a folder
             whose annotations/ holds such files (as the COCO writer makes it);
    voc:     the image sets present among train, val, test; without train and val, trainval (and test);
    yolo:    the train, val and test paths its data.yaml names;
    labelme: one folder, "train";
    cvat:    one XML file, "train".

A dataset is written into a hidden sibling folder of the output and renamed
into place when complete: a killed or failed run never leaves a
half-written dataset there (after a SIGKILL only a `.<out>.partial-*`
folder, which no reader takes for a dataset).

Output image names are the source's base names (whitespace made `_`), made
unique by stem with `_<image id>`: they never carry a folder, so no name
from an annotation file reaches outside the output; a source name that
leads outside its image folder (`../`, absolute) is an AnnotationError
naming the record, even under skip_invalid. Boxes are clipped to their
image, as the datasets read them.

Masks: a single-polygon segmentation is written as it is; RLEs and
multi-part polygons are traced into one polygon (mask_polygon) that
pycocotools rasterises back to the same pixels, for YOLO, LabelMe and CVAT.
Crowd annotations (iscrowd=1) are skipped outside COCO, with a warning that
counts them: no other format marks a region to ignore.
"""
from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import re
import shutil
import tempfile
from typing import Any, Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np

from . import writers
from .formats import guess_format, load_records
from .images import path_problem
from .problems import AnnotationError
from .records import FORMATS, Records
from .writers import ImageOut, ObjectOut, SplitOut

VOC_SETS = ("train", "val", "test")
POLYGON_FORMATS = ("yolo", "labelme", "cvat")


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str, src_format: Optional[str] = None,
            splits: Optional[Sequence[str]] = None, overwrite: bool = False, copy_images: bool = True,
            skip_invalid: bool = False, **options: Any) -> dict[str, int]:
    """Converts every split of the dataset at `src` (or those named in
    `splits`) to format `to` at `dst`, atomically; returns the counts written
    ({"<split>/images": n, "<split>/annotations": m}).

    src_format: default guessed from the path. options: passed to the
    reader (VOC: year, classes; LabelMe: classes; COCO, CVAT: image_root);
    class lists default to a labels.txt beside the annotations (as the VOC
    and LabelMe writers leave it). `dst` must not exist unless overwrite, and
    may never hold the source.
    """
    if to not in FORMATS:
        raise ValueError(f"unknown dataset format {to!r}; known: {', '.join(FORMATS)}")
    src_format, found = source_splits(src, src_format, **options)
    if splits is not None:
        missing = [name for name in splits if name not in found]
        if missing:
            raise ValueError(f"{src}: no split {', '.join(map(repr, missing))}; it has {', '.join(found)}")
        found = {name: found[name] for name in splits}
    records = {name: load_records(skip_invalid=skip_invalid, **kwargs) for name, kwargs in found.items()}
    for split in records.values():  # replacing dst must not delete what is being converted
        for path in (os.fspath(src), split.image_root, split.source):
            _check_outside(path, dst)
    return write_dataset(records, dst, to, copy_images=copy_images, overwrite=overwrite, skip_invalid=skip_invalid)


def write_records(records: Records, out: str | os.PathLike, format: str, split: str = "train",
                  copy_images: bool = True, overwrite: bool = False, skip_invalid: bool = False) -> dict[str, int]:
    """Writes one split as a new dataset at `out` in `format` (layouts in
    detkit.data.writers), atomically; returns the counts written
    ({"<split>/images": n, "<split>/annotations": m}). Images are copied
    (never hard-linked: editing the output must not edit the source);
    copy_images=False writes the annotations only (place the images yourself). `out` must not
    exist unless overwrite. skip_invalid: leave out invalid records (counted
    in a warning) instead of raising an AnnotationError that names them."""
    return write_dataset({split: records}, out, format, copy_images, overwrite, skip_invalid)


def write_dataset(splits: Mapping[str, Records], out: str | os.PathLike, format: str, copy_images: bool = True,
                  overwrite: bool = False, skip_invalid: bool = False) -> dict[str, int]:
    """Writes several splits ({split name: Records}) as one dataset at `out`,
    atomically; returns the counts written per split."""
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
    if not splits:
        raise ValueError("no split to write")
    for name in splits:  # split names become folder and file names
        if not re.fullmatch(r"[\w.-]+", name) or name.strip(".") == "":
            raise ValueError(f"split name {name!r} must be a plain file name (letters, digits, _ . -)")
    counts: dict[str, int] = {}
    with atomic_folder(out, overwrite) as tmp:
        taken: dict[str, set[str]] = {}  # output image folder -> stems used there (VOC's is shared by all splits)
        prepared = []
        for name, records in splits.items():
            folder = "JPEGImages" if format == "voc" else name
            split = prepare_split(records, name, format, taken.setdefault(folder, set()), skip_invalid)
            images, annotations = writers.WRITERS[format](split, tmp, copy_images)
            counts[f"{name}/images"], counts[f"{name}/annotations"] = images, annotations
            writers.warn_lost(split, format)
            prepared.append(split)
        writers.finish(format, prepared, tmp)
    return counts


@contextlib.contextmanager
def atomic_folder(dst: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """A new empty hidden folder beside `dst` to build in; renamed to `dst`
    when the block ends without error, removed when it raises. An existing
    `dst` is refused unless overwrite, then replaced only once the new one is
    complete."""
    dst = os.path.abspath(os.fspath(dst))
    if os.path.lexists(dst):
        if not overwrite:
            raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
        if not os.path.isdir(dst) or os.path.islink(dst):
            raise FileExistsError(f"{dst} exists and is not a folder; refusing to replace it")
    parent, base = os.path.split(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode makedirs would
        yield tmp
        if not os.path.lexists(dst):
            os.rename(tmp, dst)
            return
        old = tmp + ".old"  # killed between the renames: no dst, the old one here, the new one in tmp
        os.rename(dst, old)
        try:
            os.rename(tmp, dst)
        except OSError:
            os.rename(old, dst)  # put the old dataset back
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def source_splits(src: str | os.PathLike, src_format: Optional[str] = None,
                  **options: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    """(format, {split: load_records keyword arguments}) of every split the
    dataset at `src` holds (see the module's list)."""
    src = os.fspath(src)
    if src_format in (None, "coco") and os.path.isdir(src) and _coco_files(src):
        return "coco", {_coco_split(f): _coco_kwargs(f, options) for f in _coco_files(src)}
    src_format = src_format or guess_format(src)
    if src_format == "coco":
        return "coco", {_coco_split(src): _coco_kwargs(src, options)}
    if src_format == "voc":
        return "voc", _voc_splits(src, options)
    if src_format == "yolo":
        return "yolo", {name: {"path": src, "format": "yolo", "split": name, **options} for name in _yolo_splits(src)}
    if src_format == "labelme":
        options.setdefault("classes", _labels_file(src))
        return "labelme", {"train": {"path": src, "format": "labelme", **options}}
    if src_format == "cvat":
        return "cvat", {"train": {"path": src, "format": "cvat", **options}}
    raise ValueError(f"unknown dataset format {src_format!r}; known: {', '.join(FORMATS)}")


def _coco_files(folder: str) -> list[str]:
    """The annotation files of a COCO dataset folder: annotations/instances_*.json
    (COCO's captions_* and person_keypoints_* files hold no detection set),
    else annotations/*.json."""
    found = sorted(glob.glob(os.path.join(glob.escape(folder), "annotations", "*.json")))
    instances = [f for f in found if os.path.basename(f).startswith("instances_")]
    return instances or found


def _coco_split(ann_file: str) -> str:
    """instances_val.json -> "val"; any other name -> its stem."""
    stem = os.path.splitext(os.path.basename(ann_file))[0]
    return stem[len("instances_"):] if stem.startswith("instances_") and stem != "instances_" else stem


def _coco_kwargs(ann_file: str, options: dict[str, Any]) -> dict[str, Any]:
    """load_records arguments of one COCO file; its images in <root>/images/<split>/
    (the COCO writer's layout) or <root>/<split>/ (COCO 2017's val2017/) when
    that folder exists beside annotations/, else load_records' default."""
    kwargs = {"path": ann_file, "format": "coco", **options}
    if "image_root" not in kwargs:
        root, split = os.path.dirname(os.path.dirname(os.path.abspath(ann_file))), _coco_split(ann_file)
        for folder in (os.path.join(root, "images", split), os.path.join(root, split)):
            if os.path.isdir(folder):
                kwargs["image_root"] = folder
                break
    return kwargs


def _voc_splits(src: str, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One entry per image set present; `src` the VOCdevkit folder or its VOC<year>/."""
    name = os.path.basename(os.path.normpath(src))
    if re.fullmatch(r"VOC\d+", name) and os.path.isdir(os.path.join(src, "Annotations")):
        src, options = os.path.dirname(os.path.normpath(src)), {"year": name[3:], **options}
    if "year" not in options:
        years = sorted(e[3:] for e in os.listdir(src) if re.fullmatch(r"VOC\d+", e))
        if len(years) != 1:
            raise ValueError(f"{src}: holds {len(years)} VOC<year> folders ({', '.join(years) or 'none'}); "
                             f"pass year=")
        options = {**options, "year": years[0]}
    main = os.path.join(src, f"VOC{options['year']}")
    options.setdefault("classes", _labels_file(main))
    present = [s for s in ("train", "val", "test", "trainval")
               if os.path.isfile(os.path.join(main, "ImageSets", "Main", f"{s}.txt"))]
    chosen = [s for s in VOC_SETS if s in present]
    if not {"train", "val"} & set(chosen):
        chosen = [s for s in ("trainval", "test") if s in present]
    if not chosen:
        raise FileNotFoundError(f"{main}: no image set among ImageSets/Main/{{train,val,test,trainval}}.txt")
    return {s: {"path": src, "format": "voc", "split": s, **options} for s in chosen}


def _yolo_splits(src: str) -> list[str]:
    """The splits data.yaml names (train, val, test), in that order."""
    import yaml

    path = src
    if os.path.isdir(src):
        path = next((os.path.join(src, n) for n in ("data.yaml", "data.yml") if os.path.isfile(os.path.join(src, n))),
                    os.path.join(src, "data.yaml"))
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"YOLO data.yaml not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with train, val and names")
    splits = [name for name in VOC_SETS if data.get(name)]
    if not splits:
        raise ValueError(f"{path}: names no split (train, val, test)")
    return splits


def _labels_file(folder: str) -> Optional[list[str]]:
    """Class names from `folder`/labels.txt, one a line (LabelMe's --labels
    file: its __ignore__ and _background_ lines skipped), or None."""
    path = os.path.join(folder, "labels.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f]
    return [n for n in names if n and n not in ("__ignore__", "_background_")] or None


def _check_outside(path: str, dst: str | os.PathLike) -> None:
    """`path` must not be `dst` or inside it: replacing dst would delete it."""
    path, dst = os.path.realpath(path), os.path.realpath(os.fspath(dst))
    if path == dst or path.startswith(dst.rstrip(os.sep) + os.sep):
        raise ValueError(f"the output folder {dst} holds the source {path}; choose another output folder")


# ---- preparing one split: checks, output names, boxes and polygons ----

def prepare_split(records: Records, split: str, format: str, taken: set[str], skip_invalid: bool) -> SplitOut:
    """The split's valid images and objects, checked as CocoDetection checks
    them (an AnnotationError names the record), with output names."""
    _check_file_names(records)
    dataset = records.dataset(with_masks=format in POLYGON_FORMATS + ("coco",), skip_invalid=skip_invalid)
    classes = list(dataset.classes)
    if format != "coco":
        _check_class_names(classes, records.source, format)
    result = SplitOut(split, records, classes, [])
    annotations = dataset._annotations  # the valid annotations by image id, in file order
    for image_id in dataset.ids:
        info = dataset.images[image_id]
        objects = []
        for ann in annotations.get(image_id, []):
            if ann.get("iscrowd", 0) and format != "coco":
                result.lost["crowd"] += 1
                continue
            objects.append(_object(ann, dataset.label_of[ann["category_id"]], info, format))
        name = _unique_name(info["file_name"], image_id, taken)
        result.images.append(ImageOut(info, name, os.path.join(records.image_root, info["file_name"]), objects))
    return result


def _check_file_names(records: Records) -> None:
    """A file name leading outside the image folder is always an error (not
    skipped under skip_invalid): it names a file elsewhere."""
    images = records.coco.get("images") if isinstance(records.coco, dict) else None
    for n, image in enumerate(images if isinstance(images, list) else []):
        name = image.get("file_name") if isinstance(image, dict) else None
        if isinstance(name, str) and (problem := path_problem(name)) is not None:
            raise AnnotationError(f"{records.source}: image {image.get('id')!r} (images[{n}]): {problem}")


def _check_class_names(classes: list[str], source: str, format: str) -> None:
    """Formats that store class names need distinct ones that survive their
    readers' stripping of whitespace."""
    seen = set()
    for name in classes:
        if not name.strip() or name != name.strip() or "\n" in name:
            raise ValueError(f"{source}: class name {name!r} cannot be written to {format} "
                             f"(empty, multi-line or surrounded by whitespace)")
        if name in seen:
            raise ValueError(f"{source}: two categories are named {name!r}; {format} stores names and could "
                             f"not tell them apart")
        seen.add(name)


def _object(ann: dict[str, Any], label: int, info: dict[str, Any], format: str) -> ObjectOut:
    """One annotation's box clipped to its image and, for the polygon
    formats, its one polygon."""
    width, height = info["width"], info["height"]
    x, y, w, h = (float(v) for v in ann["bbox"])
    box = (min(max(x, 0.0), width), min(max(y, 0.0), height),
           min(max(x + w, 0.0), width), min(max(y + h, 0.0), height))
    polygon = None
    if format in POLYGON_FORMATS:
        polygon = segmentation_polygon(ann.get("segmentation") or [], height, width)
    return ObjectOut(ann, label, box, polygon, bool(ann.get("difficult", False)))


def _unique_name(file_name: str, image_id: int, taken: set[str]) -> str:
    """The base name of `file_name`, whitespace made `_`, its stem made
    unique (case-insensitively: label and XML files are named by the stem)."""
    base = re.sub(r"\s", "_", posixpath.basename(file_name.replace("\\", "/")))
    stem, ext = os.path.splitext(base)
    candidate, n = stem, 0
    while not candidate or candidate.lower() in taken:
        n += 1
        candidate = f"{stem}_{image_id}" if n == 1 else f"{stem}_{image_id}_{n}"
    taken.add(candidate.lower())
    return candidate + ext


def segmentation_polygon(segmentation: Any, height: int, width: int) -> Optional[list[float]]:
    """One polygon [x1, y1, x2, y2, ...] (pixels, clipped to the image) for a
    checked COCO segmentation, or None for none: a single polygon as it is;
    several polygons (their union) or an RLE traced with mask_polygon."""
    if isinstance(segmentation, list) and not segmentation:
        return None
    if isinstance(segmentation, list) and len(segmentation) == 1 and len(segmentation[0]) >= 6:
        polygon = np.asarray(segmentation[0], dtype=np.float64).reshape(-1, 2)
    else:
        traced = mask_polygon(_decode(segmentation, height, width))
        if traced is None:
            return None
        polygon = np.asarray(traced, dtype=np.float64).reshape(-1, 2)
    polygon[:, 0] = polygon[:, 0].clip(0, width)
    polygon[:, 1] = polygon[:, 1].clip(0, height)
    return polygon.ravel().tolist()


def _decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A checked COCO segmentation (polygons or RLE) as a uint8 [H, W] mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def mask_polygon(mask: np.ndarray) -> Optional[list[float]]:
    """One polygon [x1, y1, x2, y2, ...] that pycocotools rasterises back to
    exactly `mask` (HxW, non-zero inside), or None for an empty mask.

    Vertices are pixel corners: the mask is traced at twice its resolution,
    where each pixel edge lies between two traced pixels, and a traced pixel
    u maps to corner ceil(u / 2). Every outline and hole is kept and joined
    into one polygon by bridges walked there and back (as Ultralytics joins
    segments), which even-odd filling cancels: holes stay holes.
    """
    rows, cols = np.flatnonzero(np.any(mask, 1)), np.flatnonzero(np.any(mask, 0))
    if not len(rows):
        return None
    top, left = rows[0], cols[0]
    crop = (mask[top:rows[-1] + 1, left:cols[-1] + 1] != 0).astype(np.uint8)
    big = np.pad(np.kron(crop, np.ones((2, 2), np.uint8)), 1)  # padded: outlines may touch the crop's edge
    contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    rings = []
    for contour in contours:
        ring = contour[:, 0, :].astype(np.int64) // 2  # padded u + 1 -> ceil(u / 2) = (u + 1) // 2
        ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]  # corners traced twice
        if len(ring) >= 3:
            rings.append(ring + (left, top))
    return _joined(rings).ravel().astype(np.float64).tolist()


def _joined(rings: list[np.ndarray]) -> np.ndarray:
    """Closed rings [Ni, 2] as one [M, 2] path: each ring, entered at its
    point nearest the previous entry, then the entries walked back."""
    entries, path = [], []
    for ring in rings:
        if entries:  # start at the point nearest the last entry: short bridges
            ring = np.roll(ring, -int(np.argmin(((ring - entries[-1]) ** 2).sum(1))), axis=0)
        path.extend([ring, ring[:1]])
        entries.append(ring[0])
    path.extend(entry[None] for entry in reversed(entries[:-1]))
    return np.concatenate(path)[:-1]  # the last point is the first: the polygon closes itself


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
