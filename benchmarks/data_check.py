"""How long does `tools/data.py check` take on a COCO-train-sized YOLO set?

    python benchmarks/data_check.py [--images 118287] [--boxes 860001] [--root work_dirs/check_bench]

Writes (once; reused on later runs) a YOLO set of --images small JPEGs and
label files holding --boxes boxes in all, with a few planted defects, then
times detkit.data.check_dataset on it (what `tools/data.py check` runs),
cold and warm file cache, and checks that exactly the planted defects come
back. Sizes are read from the file headers and images are never decoded,
so the time is the file system's and the label parsing's. Prints a markdown
row with the machine's fp32 GEMM GFLOP/s beside the wall times.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detkit.runtimes.machine import gemm_gflops  # noqa: E402

NAMES = [f"class{n}" for n in range(80)]
PLANTED = {"coordinates": 3, "class_id": 3, "box_outside": 2, "duplicate_box": 2, "missing_labels": 2,
           "missing_image": 1, "duplicate_image": 1}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=118_287, help="COCO train2017's image count")
    parser.add_argument("--boxes", type=int, default=860_001, help="COCO train2017's box count")
    parser.add_argument("--root", default=os.path.join("work_dirs", "check_bench"))
    return parser.parse_args(argv)


def generate(root: str, images: int, boxes: int) -> None:
    """The set, with PLANTED defects; skipped when root/data.yaml exists."""
    if os.path.isfile(os.path.join(root, "data.yaml")):
        return
    rng = np.random.default_rng(0)
    image_dir, label_dir = os.path.join(root, "images", "train"), os.path.join(root, "labels", "train")
    os.makedirs(image_dir)
    os.makedirs(label_dir)
    per_image = rng.multinomial(boxes, np.full(images, 1 / images))
    # a few distinct small JPEGs, each image one of them with its number written in (distinct content)
    base = [cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes() for _ in range(8)]
    for n in range(images):
        name = f"{n:012d}"
        with open(os.path.join(image_dir, name + ".jpg"), "wb") as f:
            f.write(base[n % 8][:-2] + n.to_bytes(8, "little") + b"\xff\xd9")  # bytes before EOI: still a JPEG
        centres = rng.uniform(0.2, 0.8, (per_image[n], 2))
        sizes = rng.uniform(0.02, 0.3, (per_image[n], 2))
        classes = rng.integers(0, len(NAMES), per_image[n])
        lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, (x, y), (w, h) in zip(classes, centres, sizes)]
        with open(os.path.join(label_dir, name + ".txt"), "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
    _plant(image_dir, label_dir)
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("path: .\ntrain: images/train\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES)))


def _plant(image_dir: str, label_dir: str) -> None:
    def append(n: int, line: str) -> None:
        with open(os.path.join(label_dir, f"{n:012d}.txt"), "a") as f:
            f.write(line + "\n")

    for n in range(3):
        append(10 + n, "1 320 240 64 48")  # pixels
        append(20 + n, "80 0.5 0.5 0.1 0.1")  # class id past the names
    for n in range(2):
        append(30 + n, "2 0.98 0.5 0.2 0.1")  # past the right edge
        append(40 + n, "3 0.5 0.5 0.1 0.1")
        append(40 + n, "3 0.5 0.5 0.1 0.1")  # the same object twice
        os.remove(os.path.join(label_dir, f"{50 + n:012d}.txt"))
    with open(os.path.join(label_dir, "orphan.txt"), "w") as f:
        f.write("0 0.5 0.5 0.1 0.1\n")
    with open(os.path.join(image_dir, f"{60:012d}.jpg"), "rb") as f:
        data = f.read()
    with open(os.path.join(image_dir, f"{61:012d}.jpg"), "wb") as f:
        f.write(data)


def drop_file_cache() -> bool:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    from detkit.data import check_dataset

    args = parse_args(argv)
    root = os.path.abspath(args.root)
    start = time.perf_counter()
    generate(root, args.images, args.boxes)
    print(f"set: {root} ({args.images} images, {args.boxes} boxes; ready in {time.perf_counter() - start:.0f} s)")
    gflops = gemm_gflops()
    walls = {}
    for run in ("cold", "warm"):
        if run == "cold" and not drop_file_cache():
            print("(cannot drop the page cache: not root; the cold row is a warm one)")
        start = time.perf_counter()
        report = check_dataset(os.path.join(root, "data.yaml"))
        walls[run] = time.perf_counter() - start
    counts = report.counts()
    assert counts == PLANTED, f"expected exactly the planted defects {PLANTED}, got {counts}"
    print(report.summary())
    print("\n| set | images | boxes | check, cold cache | check, warm cache | fp32 GEMM |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| generated YOLO | {report.images} | {report.boxes} | {walls['cold']:.1f} s | {walls['warm']:.1f} s | "
          f"{gflops:.0f} GFLOP/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
