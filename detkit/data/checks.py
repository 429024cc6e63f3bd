"""What would silently ruin a training run, found without training.

    report = check_dataset("data.yaml")            # detkit.data.formats: any format load_records reads
    print(report.text()); sys.exit(1 if report.errors else 0)

Each defect names its file and line (YOLO's label files) or its record (the
image and annotation of the other formats). Errors are values a run would
train on wrongly or crash on; warnings are things a person should look at
(images without labels, duplicates). Image files are checked from their
headers and tails, never decoded, so a COCO-train-sized set takes seconds.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .images import path_problem

ERROR, WARNING = "error", "warning"
# A fingerprint reads this much of each end of a file; equal fingerprints are confirmed by a full hash.
_FINGERPRINT_BYTES = 1 << 16
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


@dataclass
class Defect:
    """One thing wrong: its kind (see KINDS), where (file:line or the record) and what."""

    kind: str
    where: str
    message: str
    severity: str = ERROR

    def line(self) -> str:
        return f"{self.severity}: {self.where}: {self.message} [{self.kind}]"


KINDS = {
    "coordinates": "YOLO coordinates outside [0, 1] (pixels where normalised values belong)",
    "class_id": "a class id outside the names list, or an unknown category",
    "bad_record": "a record that cannot be read (wrong number of fields, not a number, a broken reference)",
    "box_outside": "a box wholly outside its image (an error), or reaching past it (a warning: clipped)",
    "box_empty": "a box of zero or negative width or height",
    "box_nan": "a box with a NaN or infinite coordinate",
    "duplicate_box": "the same box and class twice in one image",
    "missing_image": "an annotation or label file whose image file does not exist",
    "missing_labels": "an image without a label file (an empty label file marks an image without objects)",
    "unreadable_image": "an image whose header cannot be read",
    "truncated_image": "a JPEG or PNG without its end marker",
    "duplicate_image": "the same image content under two names",
    "unsafe_path": "a file name that leads outside the dataset",
}


@dataclass
class CheckReport:
    """The defects of one dataset split and what was looked at."""

    source: str
    images: int = 0
    boxes: int = 0
    empty_images: int = 0  # images that legitimately hold no object
    defects: list[Defect] = field(default_factory=list)

    @property
    def errors(self) -> list[Defect]:
        return [d for d in self.defects if d.severity == ERROR]

    @property
    def warnings(self) -> list[Defect]:
        return [d for d in self.defects if d.severity == WARNING]

    def counts(self) -> dict[str, int]:
        """Defects per kind."""
        counts: dict[str, int] = defaultdict(int)
        for defect in self.defects:
            counts[defect.kind] += 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in self.counts().items()) or "no defects"
        return (f"{self.source}: {self.images} images, {self.boxes} boxes, {self.empty_images} images without "
                f"objects; {len(self.errors)} errors, {len(self.warnings)} warnings ({kinds})")

    def text(self) -> str:
        return "\n".join([d.line() for d in self.defects] + [self.summary()])


def check_records(records, report: Optional[CheckReport] = None) -> CheckReport:
    """Checks a Records (any format read into COCO's form): references,
    boxes (NaN, empty, outside the image), duplicates, and the image files."""
    report = report or CheckReport(records.source)
    report.defects.extend(Defect("bad_record", records.source, message) for message in records.skipped)
    coco = records.coco
    images = {image["id"]: image for image in coco["images"]}
    categories = {category["id"] for category in coco["categories"]}
    report.images += len(images)
    anns = [a for a in coco["annotations"] if _references_ok(a, images, categories, report)]
    report.boxes += len(anns)
    _check_boxes(anns, images, report)
    with_objects = {a["image_id"] for a in anns}
    report.empty_images += sum(1 for image_id in images if image_id not in with_objects)
    paths = {}
    for image in images.values():
        problem = path_problem(image["file_name"])
        if problem is not None:
            report.defects.append(Defect("unsafe_path", _image_name(image), problem))
        else:
            paths[os.path.join(records.image_root, image["file_name"])] = _image_name(image)
    check_image_files(paths, report)
    return report


def _image_name(image: dict) -> str:
    return f"image {image.get('id')} ({image.get('file_name')})"


def _annotation_name(ann: dict, images: dict) -> str:
    where = ann.get("source")  # readers that know the file and line put them here
    if where:
        return str(where)
    image = images.get(ann.get("image_id"))
    return f"annotation {ann.get('id')}" + (f" of {_image_name(image)}" if image else "")


def _references_ok(ann: dict, images: dict, categories: set, report: CheckReport) -> bool:
    if ann.get("image_id") not in images:
        report.defects.append(Defect("bad_record", _annotation_name(ann, images),
                                     f"image_id {ann.get('image_id')!r} is not an image of the dataset"))
        return False
    if ann.get("category_id") not in categories:
        report.defects.append(Defect("class_id", _annotation_name(ann, images),
                                     f"unknown category_id {ann.get('category_id')!r}"))
        return False
    bbox = ann.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        report.defects.append(Defect("bad_record", _annotation_name(ann, images),
                                     f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}"))
        return False
    return True


def _check_boxes(anns: list[dict], images: dict, report: CheckReport) -> None:
    """NaN, empty and outside boxes with numpy over all boxes at once; the few
    bad ones are then named one by one."""
    if not anns:
        return
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64)
    sizes = np.array([(images[a["image_id"]]["width"], images[a["image_id"]]["height"]) for a in anns], np.float64)
    with np.errstate(invalid="ignore"):
        nan = ~np.isfinite(xywh).all(1)
        empty = ~nan & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0))
        x2, y2 = xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3]
        valid = ~nan & ~empty
        wholly = valid & ((xywh[:, 0] >= sizes[:, 0]) | (xywh[:, 1] >= sizes[:, 1]) | (x2 <= 0) | (y2 <= 0))
        # half a pixel of slack: annotation tools round corners to the pixel grid
        partly = valid & ~wholly & ((xywh[:, 0] < -0.5) | (xywh[:, 1] < -0.5) | (x2 > sizes[:, 0] + 0.5)
                                    | (y2 > sizes[:, 1] + 0.5))
    for kind, flags, text, severity in (
            ("box_nan", nan, "has a NaN or infinite coordinate", ERROR),
            ("box_empty", empty, "has zero or negative width or height", ERROR),
            ("box_outside", wholly, "lies wholly outside its {w}x{h} image", ERROR),
            ("box_outside", partly, "reaches past its {w}x{h} image (training clips it)", WARNING)):
        for n in np.flatnonzero(flags).tolist():
            w, h = int(sizes[n, 0]), int(sizes[n, 1])
            report.defects.append(Defect(kind, _annotation_name(anns[n], images),
                                         f"bbox {anns[n]['bbox']} {text.format(w=w, h=h)}", severity))
    seen: dict[tuple, int] = {}
    for n, ann in enumerate(anns):
        key = (ann["image_id"], ann["category_id"], *xywh[n].tolist())
        if key in seen:
            report.defects.append(Defect("duplicate_box", _annotation_name(ann, images),
                                         f"the same box and class as {_annotation_name(anns[seen[key]], images)}",
                                         WARNING))
        else:
            seen[key] = n


def check_image_files(paths: dict[str, str], report: CheckReport) -> None:
    """Missing, unreadable (header) and truncated (tail) image files, and
    files with the same content; `paths` maps each file to how messages name it."""
    by_fingerprint: dict[tuple, list[str]] = defaultdict(list)
    for path, name in paths.items():
        problem, fingerprint = _inspect_image(path)
        if problem is not None:
            report.defects.append(Defect(problem[0], name, problem[1]))
        else:
            by_fingerprint[fingerprint].append(path)
    for group in by_fingerprint.values():
        if len(group) > 1:
            _report_same_content(group, paths, report)


def _inspect_image(path: str) -> tuple[Optional[tuple[str, str]], Optional[tuple]]:
    """((kind, message) of what is wrong, or None; the content fingerprint):
    the header's size, the end marker and the fingerprint from one open file.
    The fingerprint, (size, hash of the first and last 64 KiB), is equal for
    equal contents; equal fingerprints are confirmed by a full hash."""
    import imagesize

    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return ("missing_image", f"image file not found: {path}"), None
    except OSError as exc:
        return ("unreadable_image", f"{path}: {exc.strerror}"), None
    with f:
        width, height = imagesize.get(f, exif_rotation=False)
        if width <= 0 or height <= 0:
            return ("unreadable_image", f"{path}: cannot read the image size from its header"), None
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        if size <= 2 * _FINGERPRINT_BYTES:  # small: the whole file is both ends
            head = tail = f.read()
        else:
            head = f.read(_FINGERPRINT_BYTES)
            f.seek(size - _FINGERPRINT_BYTES)
            tail = f.read()
    if _is_truncated(head, tail):
        return ("truncated_image", f"{path}: truncated (no end marker); OpenCV would decode a partly grey image"), None
    return None, (size, hashlib.blake2b(head + (tail if tail is not head else b""), digest_size=16).digest())


def _is_truncated(head: bytes, tail: bytes) -> bool:
    if head[:3] == b"\xff\xd8\xff":
        return _JPEG_END not in tail[-1024:]  # trailing padding after EOI is allowed
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _PNG_END not in tail[-64:]
    return False


def _full_hash(path: str) -> bytes:
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _report_same_content(group: Iterable[str], names: dict[str, str], report: CheckReport) -> None:
    by_hash: dict[bytes, list[str]] = defaultdict(list)
    for path in group:
        by_hash[_full_hash(path)].append(path)
    for same in by_hash.values():
        for path in same[1:]:
            report.defects.append(Defect("duplicate_image", names[path],
                                         f"the same image content as {names[same[0]]}", WARNING))
