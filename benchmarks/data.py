"""Times detkit's data path against its peers in one process.

    python benchmarks/data.py [--images 200] [--threads 1]

1. SSD training augmentation (photometric distort, zoom out, min-IoU crop,
   flip, resize to 300x300, to float) on 480x640 Shapes images, one stream:
   detkit.data.transforms.ssd_train against the same pipeline in
   torchvision.transforms.v2 (RandomPhotometricDistort, RandomZoomOut,
   RandomIoUCrop, SanitizeBoundingBoxes, RandomHorizontalFlip, Resize,
   ToDtype). Images are decoded beforehand; only the augmentation is timed.
   Both are random, so the check is on invariants: every output is 3x300x300
   and keeps boxes inside the image with their labels.
2. Loading a 5,000-image COCO annotation JSON: detkit's CocoDetection against
   pycocotools' COCO().
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

import cv2
import torch

from detkit.data import CocoDetection, shapes
from detkit.data import transforms as T
from detkit.testing import synthetic_coco

MEAN_FILL = (124, 116, 104)


def torchvision_ssd_pipeline():
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=list(MEAN_FILL)),
        v2.RandomIoUCrop(),
        v2.SanitizeBoundingBoxes(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((300, 300)),
        v2.ToDtype(torch.float32, scale=True),
    ])


def as_torchvision_sample(image, target):
    from torchvision import tv_tensors

    h, w = image.shape[:2]
    return (tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
            {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(target["boxes"]), format="XYXY", canvas_size=(h, w)),
             "labels": torch.from_numpy(target["labels"])})


def check(image, boxes, labels) -> bool:
    """Output invariants; boxes may overshoot the border by float32 rounding (torchvision's do)."""
    return (tuple(image.shape) == (3, 300, 300) and image.dtype == torch.float32 and len(boxes) == len(labels)
            and bool((boxes >= -1e-3).all() and (boxes <= 300 + 1e-3).all()))


def images_per_second(run, samples, rounds: int = 3) -> tuple[float, bool]:
    ok, rates = True, []
    for _ in range(rounds):
        start = time.perf_counter()
        for sample in samples:
            image, target = run(sample)
            ok &= check(image, target["boxes"], target["labels"])
        rates.append(len(samples) / (time.perf_counter() - start))
    return statistics.median(rates), ok


def augmentation(num_images: int) -> list[str]:
    with tempfile.TemporaryDirectory() as root:
        paths = shapes.generate(root, num_train=num_images, num_val=0, image_size=(480, 640), seed=0)
        dataset = CocoDetection(paths.image_root, paths.coco_train)
        raw = [dataset[i] for i in range(len(dataset))]
    ours = T.ssd_train(300, fill=MEAN_FILL)
    theirs = torchvision_ssd_pipeline()
    tv_samples = [as_torchvision_sample(image, target) for image, target in raw]
    torch.manual_seed(0)
    ours_rate, ours_ok = images_per_second(lambda s: ours(*s), raw)
    theirs_rate, theirs_ok = images_per_second(lambda s: theirs(*s), tv_samples)
    return [f"| SSD augmentation, 480x640 -> 300x300 (images/s) | {ours_rate:.0f} | {theirs_rate:.0f} "
            f"| {ours_rate / theirs_rate:.1f}x | {'ok' if ours_ok and theirs_ok else 'FAILED'} |"]


def annotation_loading(num_images: int = 5000) -> list[str]:
    from pycocotools.coco import COCO

    gt, _ = synthetic_coco(num_images=num_images, num_categories=80, dets_per_image=0, seed=0)
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "instances.json")
        with open(path, "w") as f:
            json.dump(gt, f)
        ours, theirs = [], []
        for _ in range(3):
            start = time.perf_counter()
            dataset = CocoDetection(root, path)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(path)
            theirs.append(time.perf_counter() - start)
    same = len(dataset) == len(coco.imgs) and sum(len(v) for v in dataset._annotations.values()) == len(coco.anns)
    o, t = statistics.median(ours), statistics.median(theirs)
    return [f"| load a {num_images:,}-image COCO JSON (s) | {o:.3f} | {t:.3f} (pycocotools) | {t / o:.1f}x "
            f"| {'ok' if same else 'FAILED'} |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="Shapes images to augment")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (one stream: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rows = augmentation(args.images) + annotation_loading()
    print("| case | detkit | peer | ratio | outputs |")
    print("|---|---:|---:|---:|---|")
    print("\n".join(rows))
    return 0 if all("FAILED" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
