"""The Shapes set: a synthetic detection dataset that detkit makes itself, so
that training, evaluation and the tests run with no download.

    paths = shapes.generate("data/shapes", num_train=1000, num_val=200)
    train = CocoDetection(paths.image_root, paths.coco_train)          # or
    train = VOCDetection(paths.voc_root, image_set="train", classes=paths.classes)

Coloured shapes of random size and overlap on textured backgrounds, with
instance masks. Later shapes occlude earlier ones: boxes and masks describe
the visible part; objects mostly hidden are marked difficult (VOC) and
dropped when almost nothing is left. Both layouts share the same JPEG files
and describe the same boxes. Deterministic for a seed.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import cv2
import numpy as np

from ..io.rle import encode_masks

BASIC_CLASSES = ("circle", "square", "triangle", "hexagon", "star")
HARD_CLASSES = BASIC_CLASSES + ("ellipse", "cross", "ring")


@dataclass(frozen=True)
class Preset:
    classes: tuple[str, ...]
    objects: tuple[int, int]  # min, max objects per image
    size: tuple[float, float]  # object size as a fraction of the image side


PRESETS = {
    "basic": Preset(BASIC_CLASSES, objects=(1, 4), size=(0.15, 0.45)),
    "hard": Preset(HARD_CLASSES, objects=(3, 12), size=(0.04, 0.3)),  # small objects, occlusion
    # The shapes "basic" lacks, framed like "basic": new classes to fine-tune a basic model on.
    "novel": Preset(HARD_CLASSES[len(BASIC_CLASSES):], objects=(1, 4), size=(0.15, 0.45)),
    # Objects the default anchors fit badly: wires and poles, bars 1:5 thin, at least 15 px across at 128 px
    # (detkit.models.fit_anchors; benchmarks/anchors.py).
    "thin": Preset(("wire", "pole"), objects=(1, 3), size=(0.6, 0.95)),
}


@dataclass(frozen=True)
class ShapesPaths:
    root: str
    classes: tuple[str, ...]

    @property
    def voc_root(self) -> str:
        """Pass to VOCDetection(root, year="2007", image_set="train" | "val")."""
        return os.path.join(self.root, "VOCdevkit")

    @property
    def image_root(self) -> str:
        return os.path.join(self.voc_root, "VOC2007", "JPEGImages")

    @property
    def coco_train(self) -> str:
        return os.path.join(self.root, "annotations", "instances_train.json")

    @property
    def coco_val(self) -> str:
        return os.path.join(self.root, "annotations", "instances_val.json")


def generate(root: str | os.PathLike, num_train: int, num_val: int, image_size: int | tuple[int, int] = 256,
             seed: int = 0, preset: str = "basic") -> ShapesPaths:
    """Writes the set under `root` (COCO JSON + VOC XML over one set of JPEGs);
    image_size is a side or (height, width)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if num_train < 1 or num_val < 0:
        raise ValueError(f"need num_train >= 1 and num_val >= 0, got {num_train}, {num_val}")
    config = PRESETS[preset]
    paths = ShapesPaths(os.fspath(root), config.classes)
    voc = os.path.join(paths.voc_root, "VOC2007")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    os.makedirs(os.path.dirname(paths.coco_train), exist_ok=True)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    rng = np.random.default_rng(seed)
    categories = [{"id": n + 1, "name": name, "supercategory": "shape"} for n, name in enumerate(config.classes)]
    index = 0
    for split, count in (("train", num_train), ("val", num_val)):
        images, annotations, names = [], [], []
        for _ in range(count):
            index += 1
            name = f"{index:06d}"
            image, objects = _draw_image(rng, height, width, config)
            cv2.imwrite(os.path.join(voc, "JPEGImages", f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            _write_voc_xml(os.path.join(voc, "Annotations", f"{name}.xml"), name, height, width, objects, config)
            images.append({"id": index, "file_name": f"{name}.jpg", "width": width, "height": height})
            annotations.extend(_coco_annotations(index, objects, len(annotations)))
            names.append(name)
        _write_text(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), names)
        with open(paths.coco_train if split == "train" else paths.coco_val, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    _write_text(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), [f"{i:06d}" for i in range(1, index + 1)])
    return paths


@dataclass
class _Object:
    label: int  # 1..K
    mask: np.ndarray  # visible pixels, uint8 HxW
    full_area: int
    difficult: bool = False


def _draw_image(rng: np.random.Generator, height: int, width: int, config: Preset) -> tuple[np.ndarray, list[_Object]]:
    image = _background(rng, height, width)
    objects: list[_Object] = []
    for _ in range(int(rng.integers(config.objects[0], config.objects[1] + 1))):
        label = int(rng.integers(1, len(config.classes) + 1))
        mask = np.zeros((height, width), np.uint8)
        side = rng.uniform(*config.size) * min(height, width)
        centre = rng.uniform(side / 2, np.array([width, height]) - side / 2)
        _draw_shape(mask, config.classes[label - 1], centre, side, rng)
        full_area = int(mask.sum())
        if full_area < 12:
            continue
        colour = rng.integers(30, 256, 3)
        image[mask > 0] = colour
        for other in objects:  # occlusion: earlier objects lose what this one covers
            other.mask[mask > 0] = 0
        objects.append(_Object(label, mask, full_area))
    kept = []
    for obj in objects:
        visible = int(obj.mask.sum())
        if visible < max(12, 0.1 * obj.full_area):
            continue  # almost entirely hidden
        obj.difficult = visible < 0.4 * obj.full_area
        kept.append(obj)
    return image, kept


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour gradient with noise and a few faint lines: texture, not objects."""
    base = rng.integers(0, 200, 3).astype(np.float32)
    tilt = rng.uniform(-60, 60, 3).astype(np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)
    image = rng.standard_normal((height, width, 3), dtype=np.float32)  # float32 noise: 4x cheaper than normal()
    image *= 12
    image += base + ramp[:, None, None] * tilt
    image = np.clip(image, 0, 255, out=image).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        p, q = rng.integers(0, (width, height)), rng.integers(0, (width, height))
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), tuple(int(v) for v in rng.integers(0, 256, 3)), 1)
    return image


def _polygon(centre, radius, corners, rotation, inner=None) -> np.ndarray:
    angles = rotation + np.arange(corners * (2 if inner else 1)) * np.pi / (corners if inner else corners / 2)
    radii = np.where(np.arange(len(angles)) % 2 == 1, inner * radius, radius) if inner else np.full(len(angles), radius)
    points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
    return np.round(points).astype(np.int32)


def _draw_shape(mask: np.ndarray, kind: str, centre: np.ndarray, side: float, rng: np.random.Generator) -> None:
    cx, cy, r = float(centre[0]), float(centre[1]), side / 2
    rotation = float(rng.uniform(0, 2 * np.pi))
    centre_px = (int(round(cx)), int(round(cy)))
    if kind == "circle":
        cv2.circle(mask, centre_px, int(round(r)), 1, -1)
    elif kind == "square":
        cv2.fillPoly(mask, [_polygon(centre, r * np.sqrt(2), 4, rotation)], 1)
    elif kind == "triangle":
        cv2.fillPoly(mask, [_polygon(centre, r, 3, rotation)], 1)
    elif kind == "hexagon":
        cv2.fillPoly(mask, [_polygon(centre, r, 6, rotation)], 1)
    elif kind == "star":
        cv2.fillPoly(mask, [_polygon(centre, r, 5, rotation, inner=0.45)], 1)
    elif kind == "ellipse":
        cv2.ellipse(mask, centre_px, (int(round(r)), int(round(r * 0.5))), np.degrees(rotation), 0, 360, 1, -1)
    elif kind == "cross":
        arm = max(1, int(round(r * 0.35)))
        cv2.rectangle(mask, (int(cx - r), int(cy - arm)), (int(cx + r), int(cy + arm)), 1, -1)
        cv2.rectangle(mask, (int(cx - arm), int(cy - r)), (int(cx + arm), int(cy + r)), 1, -1)
    elif kind in ("wire", "pole"):  # axis-aligned bars, 1:5
        half_long, half_short = r, max(1.0, r / 5)
        hx, hy = (half_long, half_short) if kind == "wire" else (half_short, half_long)
        cv2.rectangle(mask, (int(round(cx - hx)), int(round(cy - hy))), (int(round(cx + hx)), int(round(cy + hy))),
                      1, -1)
    elif kind == "ring":
        cv2.circle(mask, centre_px, int(round(r)), 1, -1)
        cv2.circle(mask, centre_px, int(round(r * 0.55)), 0, -1)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _pixel_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(first col, first row, last col, last row) of a non-empty mask."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _coco_annotations(image_id: int, objects: list[_Object], first_id: int) -> list[dict]:
    out = []
    for n, obj in enumerate(objects):
        c0, r0, c1, r1 = _pixel_box(obj.mask)
        rle = encode_masks(obj.mask[None])[0]
        out.append({
            "id": first_id + n + 1, "image_id": image_id, "category_id": obj.label,
            "bbox": [c0, r0, c1 - c0 + 1, r1 - r0 + 1],  # pixel-aligned: covers pixels c0..c1
            "area": int(obj.mask.sum()), "iscrowd": 0,
            "segmentation": rle,
        })
    return out


def _write_voc_xml(path: str, name: str, height: int, width: int, objects: list[_Object], config: Preset) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    dims = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(dims, key).text = str(value)
    for obj in objects:
        c0, r0, c1, r1 = _pixel_box(obj.mask)
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = config.classes[obj.label - 1]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "1" if obj.difficult else "0"
        box = ET.SubElement(node, "bndbox")
        # VOC corners are 1-based and inclusive.
        for key, value in (("xmin", c0 + 1), ("ymin", r0 + 1), ("xmax", c1 + 1), ("ymax", r1 + 1)):
            ET.SubElement(box, key).text = str(value)
    ET.ElementTree(root).write(path)


def _write_text(path: str, lines: list[str]) -> None:
    with open(path, "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
