"""Inference over files: images, folders and videos in, drawn copies and one
detections JSON out (tools/infer.py)."""
from __future__ import annotations

import os
from typing import Any, Sequence

import cv2
from torch import nn

from .api import detect
from .data import read_image
from .rle import encode_masks
from .jsonio import write_json_atomic
from .viz import draw_detections, write_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given and the images inside folders (sorted); a missing path
    or a file of unknown type is an error naming it."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f"{item}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif not os.path.exists(item):
            raise FileNotFoundError(f"input not found: {item}")
        elif not item.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS):
            raise ValueError(f"{item}: not an image or video file by its extension")
        else:
            files.append(item)
    return files


def run_inference(model: nn.Module, inputs: Sequence[str], out: str, score_threshold: float = 0.5) -> str:
    """Detects on every input; returns a one-line summary."""
    files = expand_inputs(inputs)
    os.makedirs(out, exist_ok=True)
    records: list[dict[str, Any]] = []
    names: set[str] = set()
    for path in files:
        stem = _unique_stem(path, names)
        if path.lower().endswith(VIDEO_EXTENSIONS):
            records.extend(_video(model, path, os.path.join(out, stem + ".mp4"), score_threshold))
        else:
            image = read_image(path)
            result = detect(image, model, score_threshold)[0]
            write_image(os.path.join(out, stem + ".jpg"), draw_detections(image, result, model.classes))
            records.append({"file": path, **detections_json(result)})
    write_json_atomic(os.path.join(out, "detections.json"), records)
    total = sum(len(r["detections"]) for r in records)
    return f"{total} detections in {len(records)} images/frames from {len(files)} inputs; written to {out}"


def _unique_stem(path: str, taken: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name)
    return name


def _video(model: nn.Module, path: str, out_path: str, score_threshold: float) -> list[dict]:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"{path}: cannot open the video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, records, index = None, [], 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            result = detect(rgb, model, score_threshold)[0]
            drawn = cv2.cvtColor(draw_detections(rgb, result, model.classes), cv2.COLOR_RGB2BGR)
            if writer is None:
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
            writer.write(drawn)
            records.append({"file": path, "frame": index, **detections_json(result)})
            index += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if index == 0:
        raise ValueError(f"{path}: the video has no readable frames")
    return records


def detections_json(result: dict[str, Any]) -> dict[str, Any]:
    """One image's detections as JSON-ready values (boxes x1, y1, x2, y2 in
    pixels; masks as COCO RLE)."""
    detections = []
    boxes, scores, labels = result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()
    rles = encode_masks(result["masks"]) if "masks" in result else [None] * len(scores)
    for box, score, label, name, rle in zip(boxes, scores, labels, result["class_names"], rles):
        item = {"box": [round(v, 2) for v in box], "score": round(score, 5), "label": label, "class_name": name}
        if rle is not None:
            item["mask"] = rle
        detections.append(item)
    return {"detections": detections}
