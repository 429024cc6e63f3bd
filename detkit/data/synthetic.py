"""Reproducible synthetic inputs for testing detection code, like torch.testing.

detkit's own tests and benchmarks use these, and so can a user testing a
detector, a post-processing step or an evaluation script of their own: valid
random boxes (x2 > x1, y2 > y1), detector-like clusters with distinct scores,
and a COCO ground truth with result records that hold the cases evaluators get
wrong (crowd regions, tied scores, more than 100 detections per image, images
without detections or without ground truth, a category without ground truth).
Every generator is deterministic for its seed.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..io.rle import encode_masks


def random_boxes(n: int, size: float = 1000.0, max_side: float = 200.0, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Tensor[n, 4] (x1, y1, x2, y2): uniform corners, sides in [0, max_side)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * max_side
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def clustered_boxes(n: int, centers: int = 250, size: float = 1000.0, seed: int = 0,
                    dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Detector-like output: n boxes jittered around `centers` objects.

    Returns boxes: Tensor[n, 4] (x1, y1, x2, y2) and scores: Tensor[n], a
    random permutation of distinct values in (0, 1] (no ties, so any two
    correct NMS implementations keep the same indices in the same order).
    """
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(centers, 2, generator=g, dtype=torch.float64) * size
    side = 16 + torch.rand(centers, 2, generator=g, dtype=torch.float64) * 200
    obj = torch.randint(0, centers, (n,), generator=g)
    ctr = centre[obj] + torch.randn(n, 2, generator=g, dtype=torch.float64) * side[obj] * 0.1
    wh = side[obj] * (1 + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(min=0.5)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1).to(dtype)
    scores = ((torch.randperm(n, generator=g) + 1).to(torch.float64) / n).to(dtype)
    return boxes, scores


def synthetic_coco(num_images: int = 50, num_categories: int = 8, max_gt: int = 14, dets_per_image: int = 100,
                   crowd_fraction: float = 0.01, seed: int = 0, width: int = 640, height: int = 480,
                   with_masks: bool = False) -> tuple[dict, list[dict]]:
    """Returns (ground-truth dataset dict, list of result records).

    GT: 1..max_gt boxes per image (small, medium and large), a crowd_fraction
    of them crowd; the last category never has GT. Detections: ~80% of the GT
    jittered, the rest random boxes, dets_per_image per image (some images get
    more than 100), scores rounded to 2 decimals (ties), a few images with no
    detections. With masks, GT get polygons and detections RLE masks.
    """
    rng = np.random.default_rng(seed)
    images = [{"id": int(i) * 3 + 1, "width": width, "height": height, "file_name": f"{i:06d}.jpg"}
              for i in range(num_images)]
    categories = [{"id": int(c) * 2 + 1, "name": f"class_{c}"} for c in range(num_categories)]
    annotations, results = [], []
    ann_id = 1
    for n, img in enumerate(images):
        gts = []
        for _ in range(rng.integers(1, max_gt + 1)):
            side = float(rng.choice([12.0, 50.0, 150.0])) * rng.uniform(0.6, 1.6)
            w, h = side * rng.uniform(0.5, 2.0), side * rng.uniform(0.5, 2.0)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            cat = categories[int(rng.integers(0, max(1, num_categories - 1)))]["id"]
            crowd = int(rng.random() < crowd_fraction)
            ann = {"id": ann_id, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                   "area": w * h * (0.7 if with_masks else 1.0), "iscrowd": crowd}
            if with_masks:
                ann["segmentation"] = [[x, y, x + w, y, x + w * 0.6, y + h, x, y + h * 0.8]]
            annotations.append(ann)
            gts.append(ann)
            ann_id += 1
        if n % 17 == 5:
            continue  # an image with GT and no detections
        count = dets_per_image + (30 if n % 11 == 3 else 0)  # beyond maxDets
        for k in range(count):
            if k < len(gts) * 4 and rng.random() < 0.8:
                x, y, w, h = gts[k % len(gts)]["bbox"]
                j = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
                box = [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]
                cat = gts[k % len(gts)]["category_id"] if rng.random() < 0.9 else \
                    categories[int(rng.integers(0, num_categories))]["id"]
            else:
                w, h = rng.uniform(5, 200, 2)
                box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
                cat = categories[int(rng.integers(0, num_categories))]["id"]
            record = {"image_id": img["id"], "category_id": int(cat), "bbox": [float(v) for v in box],
                      "score": round(float(rng.random()), 2)}
            if with_masks:
                record["segmentation"] = _box_rle(box, height, width)
            results.append(record)
    gt = {"images": images, "annotations": annotations, "categories": categories}
    # Detections on an image that has no GT at all.
    extra = {"id": 10**6, "width": width, "height": height, "file_name": "empty.jpg"}
    gt["images"].append(extra)
    record = {"image_id": extra["id"], "category_id": categories[0]["id"], "bbox": [10.0, 10.0, 50.0, 40.0],
              "score": 0.5}
    if with_masks:
        record["segmentation"] = _box_rle(record["bbox"], height, width)
    results.append(record)
    return gt, results


def _box_rle(box, height: int, width: int) -> dict:
    """A JSON-ready RLE of the mask filling the left 90% of `box` (xywh)."""
    x, y, w, h = box
    mask = np.zeros((1, height, width), dtype=np.uint8)
    x0, y0 = int(max(0, x)), int(max(0, y))
    mask[0, y0:int(min(height, y + h)), x0:int(min(width, x + w * 0.9))] = 1
    return encode_masks(mask)[0]
