"""Selective search: detkit's against OpenCV's (opencv-contrib's ximgproc),
recall of ground-truth boxes and speed, on generated Shapes images.

    python benchmarks/selective_search.py [--images 50] [--size 256] [--mode fast]
        [--opencv-python /tmp/ssvenv/bin/python]

opencv-contrib conflicts with the opencv-python that detkit installs, so
OpenCV's side runs in a subprocess of another environment's Python, e.g.

    python -m venv /tmp/ssvenv && /tmp/ssvenv/bin/pip install opencv-contrib-python-headless numpy

The images go to it, and its boxes and times come back, as .npz files.
Without --opencv-python (or if cv2.ximgproc does not import there) only
detkit's rows are printed.

Prints a markdown table: per preset ("basic": 1-4 large shapes, "hard": 3-12
small and occluded ones) and method, the median proposals per image, median
ms per image (one thread each: numba's kernels are serial, OpenCV is set to
1 thread), and the recall of all ground-truth boxes at IoU 0.5 and 0.7 among
the first 100, 500, 1000 and 2000 proposals (a method with fewer proposals
uses all it has). Then one natural photo (matplotlib's 600 x 512
grace_hopper.jpg) for speed at a VOC-like size, and the machine's fp32 GEMM
GFLOP/s. The modes' parameters differ between the two, as published: detkit
follows the paper (fast: k = 50, 100, min_size = k), OpenCV uses
k = 150, 300, 450 and min_size = 100, and ranks by tree depth, not merge order.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from detkit.data import read_image, shapes
from detkit.ops import box_iou
from detkit.ops.selective_search import selective_search

try:
    from detkit.runtimes.machine import gemm_gflops
except ImportError:  # older trees kept it in benchmarks/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.machine import gemm_gflops

COUNTS = (100, 500, 1000, 2000)
THRESHOLDS = (0.5, 0.7)

# Runs in the OpenCV environment: images.npz -> boxes.npz (x1, y1, x2, y2 per image, concatenated).
OPENCV_SCRIPT = r"""
import sys, time
import cv2, numpy as np
source, target, mode = sys.argv[1:4]
cv2.setNumThreads(1)
images = np.load(source, allow_pickle=False)["images"]
ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
switch = {"single": ss.switchToSingleStrategy, "fast": ss.switchToSelectiveSearchFast,
          "quality": ss.switchToSelectiveSearchQuality}[mode]
boxes, counts, seconds = [], [], []
for rgb in images:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    start = time.perf_counter()
    ss.setBaseImage(bgr)
    switch()
    rects = np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4)
    seconds.append(time.perf_counter() - start)
    boxes.append(np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1))
    counts.append(len(rects))
np.savez(target, boxes=np.concatenate(boxes), counts=np.array(counts), seconds=np.array(seconds),
         version=np.array(cv2.__version__))
"""


def load_set(root: str, preset: str, num: int, size: int) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """num generated images (RGB) and their ground-truth boxes, every object counted."""
    paths = shapes.generate(os.path.join(root, preset), num_train=num, num_val=0, image_size=size, seed=2024,
                            preset=preset)
    with open(paths.coco_train) as f:
        coco = json.load(f)
    images, truths = [], []
    for info in coco["images"]:
        images.append(read_image(os.path.join(paths.image_root, info["file_name"])))
        truths.append(torch.tensor([[x, y, x + w, y + h] for ann in coco["annotations"]
                                    if ann["image_id"] == info["id"] for x, y, w, h in [ann["bbox"]]],
                                   dtype=torch.float32).reshape(-1, 4))
    return images, truths


def recall(proposals: list[torch.Tensor], truths: list[torch.Tensor]) -> dict[tuple[float, int], float]:
    """(IoU threshold, proposal count) -> fraction of ground-truth boxes
    covered by one of the first `count` proposals of their image."""
    found = {(t, n): 0 for t in THRESHOLDS for n in COUNTS}
    for boxes, gt in zip(proposals, truths):
        for n in COUNTS:
            best = box_iou(gt, boxes[:n]).max(1).values if len(boxes) else torch.zeros(len(gt))
            for t in THRESHOLDS:
                found[(t, n)] += int((best >= t).sum())
    total = sum(len(gt) for gt in truths)
    return {key: value / total for key, value in found.items()}


def run_detkit(images: list[np.ndarray], mode: str) -> tuple[list[torch.Tensor], list[float]]:
    boxes, seconds = [], []
    for image in images:
        start = time.perf_counter()
        boxes.append(selective_search(image, mode=mode))
        seconds.append(time.perf_counter() - start)
        height, width = image.shape[:2]
        b = boxes[-1]
        if not ((b[:, :2] >= 0).all() and (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
                and (b[:, 2:] > b[:, :2]).all()):
            sys.exit("detkit returned a box outside the image or an empty box")
    return boxes, seconds


def run_opencv(python: str, images: list[np.ndarray], mode: str, work: str):
    """OpenCV's (boxes, seconds, version) through the other environment, or None with a message."""
    source, target = os.path.join(work, "images.npz"), os.path.join(work, "boxes.npz")
    np.savez(source, images=np.stack(images))
    try:
        done = subprocess.run([python, "-c", OPENCV_SCRIPT, source, target, mode], capture_output=True, text=True)
    except OSError as exc:
        print(f"OpenCV skipped: cannot run {python}: {exc}")
        return None
    if done.returncode != 0:
        print(f"OpenCV skipped: {python} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    with np.load(target, allow_pickle=False) as out:
        splits = np.cumsum(out["counts"])[:-1]
        boxes = [torch.from_numpy(b) for b in np.split(out["boxes"], splits)]
        return boxes, list(out["seconds"]), str(out["version"])


def row(name: str, method: str, boxes: list[torch.Tensor], seconds: list[float], rec: dict) -> str:
    cells = [name, method, f"{statistics.median(len(b) for b in boxes):.0f}", f"{statistics.median(seconds) * 1e3:.0f}"]
    cells += [f"{rec[(t, n)]:.3f}" for t in THRESHOLDS for n in COUNTS]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50, help="images per preset")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--mode", default="fast", choices=("single", "fast", "quality"))
    parser.add_argument("--presets", default="basic,hard")
    parser.add_argument("--opencv-python", help="a Python with opencv-contrib (cv2.ximgproc) to compare with")
    args = parser.parse_args()

    first = time.perf_counter()
    selective_search(np.zeros((8, 8, 3), np.uint8))
    print(f"detkit first call (numba compile, or load from its cache): {time.perf_counter() - first:.1f} s")
    header = ["set", "method", "boxes/img", "ms/img"] + [f"R@{t} {n}" for t in THRESHOLDS for n in COUNTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    verdicts = []
    with tempfile.TemporaryDirectory() as work:
        sets = {preset: load_set(work, preset, args.images, args.size) for preset in args.presets.split(",")}
        photo = cv2.cvtColor(cv2.imread(_sample_photo()), cv2.COLOR_BGR2RGB) if _sample_photo() else None
        for preset, (images, truths) in sets.items():
            name = f"{preset} {args.size}px x{len(images)} ({sum(map(len, truths))} objects)"
            ours, ours_s = run_detkit(images, args.mode)
            ours_rec = recall(ours, truths)
            lines.append(row(name, f"detkit {args.mode}", ours, ours_s, ours_rec))
            theirs = run_opencv(args.opencv_python, images, args.mode, work) if args.opencv_python else None
            if theirs is not None:
                cv_rec = recall(theirs[0], truths)
                lines.append(row(name, f"OpenCV {theirs[2]} {args.mode}", theirs[0], theirs[1], cv_rec))
                gap = max(cv_rec[key] - ours_rec[key] for key in ours_rec)
                speed = statistics.median(theirs[1]) / statistics.median(ours_s)
                verdicts.append(f"{preset}: detkit's recall is at most {gap * 100:.1f} points below OpenCV's at any "
                                f"count and IoU (target <= 2), {speed:.1f}x its speed (target > 1)")
        if photo is not None:
            ours, ours_s = run_detkit([photo] * 3, args.mode)
            cells = ["grace_hopper 600x512", f"detkit {args.mode}", f"{len(ours[0])}",
                     f"{statistics.median(ours_s) * 1e3:.0f}"] + ["-"] * 8
            lines.append("| " + " | ".join(cells) + " |")
            theirs = run_opencv(args.opencv_python, [photo] * 3, args.mode, work) if args.opencv_python else None
            if theirs is not None:
                cells[1:4] = [f"OpenCV {theirs[2]} {args.mode}", f"{len(theirs[0][0])}",
                              f"{statistics.median(theirs[1]) * 1e3:.0f}"]
                lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    for verdict in verdicts:
        print(verdict)
    print(f"machine: fp32 GEMM {gemm_gflops():.0f} GFLOP/s ({torch.get_num_threads()} torch threads), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, niceness {os.nice(0)}")


def _sample_photo():
    try:
        from matplotlib import cbook

        return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except (ImportError, OSError, ValueError):
        return None


if __name__ == "__main__":
    main()
