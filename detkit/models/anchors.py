"""Anchors fitted to a dataset's boxes, for a zoo model at its input size.

    fit = fit_anchors(load_records("data.yaml"), "fasterrcnn_resnet18_fpn_small", min_size=128, max_size=128)
    print(fit.text())        # best possible recall before and after, and the --set line to train with

Best possible recall (BPR): the share of ground-truth boxes that some anchor
of the model, at its real positions on the feature maps of the resized
image, overlaps at the model's positive IoU threshold or more (the RPN's
fg_iou_thresh; SSD's iou_thresh). The model's own transform, backbone and
anchor generator make the anchors, so strides, rounding and clipping are
those of training.

Fitting: k-means on 1 - IoU of the boxes' shapes (centred (w, h) pairs, as
YOLO's autoanchor and mmdetection's anchor optimiser do), then one anchor
layout per model family: R-CNN takes one size per FPN map and aspect ratios
shared by all maps (the k-means centres' sizes and ratios), SSD its
default-box scales (one per map plus one) and, where the boxes are thinner
than its 3:1 default boxes reach, aspect ratios from the boxes' own (two
clusters of their log aspect, shared by all maps). The candidates are the sizes
scaled by a few factors; the one of highest BPR is then refined by
coordinate ascent, one value at a time (each size, scale and ratio nudged by
±10%, then ±5%, a nudge kept when it raises BPR). The defaults stay when
nothing beats them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..modeling.rcnn import FasterRCNN
from ..modeling.ssd import SSD
from .registry import build

MAX_IMAGES = 2000  # images whose boxes are scored (a sample of larger sets; fitting uses every box)
_REFINE_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4)
_LADDER_SCALES = (0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 2.0)  # the model's sizes times these
_NUDGES = ((0.9, 1.1), (0.95, 1.05))  # coordinate ascent's steps, coarse then fine


@dataclass
class AnchorFit:
    """What fit_anchors found: the options before and after, their best possible recall."""

    model: str
    boxes: int
    iou_threshold: float
    default: dict[str, Any]
    fitted: dict[str, Any]
    default_bpr: float
    fitted_bpr: float
    candidates: list[tuple[dict[str, Any], float]] = field(default_factory=list)

    def set_line(self) -> str:
        """The overrides to train with, as tools/train.py --set takes them."""
        return " ".join(f"model.options.{key}={_literal(value)}" for key, value in self.fitted.items())

    def text(self) -> str:
        return "\n".join([
            f"{self.model}: {self.boxes} boxes; best possible recall at IoU {self.iou_threshold:g}:",
            f"  default {_options_text(self.default)}: {self.default_bpr:.4f}",
            f"  fitted  {_options_text(self.fitted)}: {self.fitted_bpr:.4f}",
            f"train with: --set {self.set_line()}",
        ])


def _literal(value) -> str:
    """A list as --set takes it: no spaces, nested lists too."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_literal(value)}" for key, value in options.items())


def fit_anchors(records, model_name: str, iou_threshold: Optional[float] = None, seed: int = 0,
                **options: Any) -> AnchorFit:
    """Fits the anchors of zoo model `model_name` (built with `options`, e.g.
    min_size/max_size or size as training uses) to the boxes of `records`
    (a detkit.data.Records). iou_threshold: default the model's positive one."""
    model = build(model_name, num_classes=len(records.classes) + 1, **options).eval()
    family = _family(model, model_name)
    threshold = iou_threshold if iou_threshold is not None else family.threshold(model)
    images = _scaled_boxes(model, records)
    shapes = np.concatenate([wh for _, _, wh in images]) if images else np.zeros((0, 2))
    if len(shapes) == 0:
        raise ValueError(f"{records.source}: no boxes to fit anchors to")
    grids = {size: _grid(model, size) for size in {size for size, _, _ in images}}
    default = family.current(model)
    candidates = [default] + family.candidates(model, shapes, np.random.default_rng(seed))
    recall = lambda c: best_possible_recall(family.generator(model, c), grids, images, threshold)  # noqa: E731
    scored = [(c, recall(c)) for c in candidates]
    best = max(scored, key=lambda pair: pair[1])  # the first of equals: the default when nothing beats it
    if best[0] is not default:
        best = _coordinate_ascent(family, best, recall, scored)
    return AnchorFit(model_name, len(shapes), threshold, default, best[0], scored[0][1], best[1], scored)


def _coordinate_ascent(family, start: tuple[dict, float], recall, scored: list) -> tuple[dict, float]:
    """`start` improved one value at a time: each of the family's values
    scaled by a nudge, kept when BPR rises; coarse nudges until none helps,
    then fine ones. Every candidate tried is appended to `scored`."""
    best, best_recall = start
    for nudges in _NUDGES:
        improved = True
        while improved:
            improved = False
            for candidate in family.nudged(best, nudges):
                value = recall(candidate)
                scored.append((candidate, value))
                if value > best_recall:
                    best, best_recall, improved = candidate, value, True
    return best, best_recall


def best_possible_recall(generator: nn.Module, grids: dict, images: list, threshold: float) -> float:
    """The share of boxes whose best anchor of `generator` (on each image's
    feature-map grid, `grids[size]`) reaches IoU `threshold`."""
    from .. import ops

    anchors_of = {size: generator(image_list, maps)[0] for size, (image_list, maps) in grids.items()}
    hits = total = 0
    for size, boxes, _ in images:
        # numpy's max: torch's threaded reduction of a small [N, A] matrix costs far more than the IoU
        best = ops.box_iou(torch.from_numpy(boxes).float(), anchors_of[size]).numpy().max(1)
        hits += int((best >= threshold).sum())
        total += len(boxes)
    return hits / max(total, 1)


@torch.no_grad()
def _grid(model: nn.Module, size: tuple[int, int]):
    """(the model's ImageList for an input of `size` (h, w), empty stand-ins
    for its feature maps): what an anchor generator needs to place anchors."""
    image_list, _ = model.transform([torch.zeros(3, *size)])
    features = model.backbone(image_list.tensors)
    features = list(features.values()) if isinstance(features, dict) else [features]
    return image_list, [torch.empty(1, 1, *f.shape[-2:]) for f in features]


@torch.no_grad()
def _scaled_boxes(model: nn.Module, records) -> list[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """Per image (the first MAX_IMAGES with boxes): its size after the model's
    resize, its boxes in that image's pixels, and their (w, h)."""
    boxes_of: dict[int, list] = {}
    for ann in records.coco["annotations"]:
        if not ann.get("iscrowd", 0):
            boxes_of.setdefault(ann["image_id"], []).append(ann["bbox"])
    resized: dict[tuple[int, int], tuple[int, int]] = {}
    out = []
    for image in records.coco["images"]:
        if image["id"] not in boxes_of or len(out) >= MAX_IMAGES:
            continue
        original = (image["height"], image["width"])
        if original not in resized:
            resized[original] = _resized(model, *original)
        height, width = resized[original]
        xywh = np.asarray(boxes_of[image["id"]], dtype=np.float64)
        scale = np.array([width / image["width"], height / image["height"]] * 2)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * scale
        wh = xyxy[:, 2:] - xyxy[:, :2]
        keep = (wh > 0).all(1)
        out.append(((height, width), xyxy[keep], wh[keep]))
    return out


def _resized(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """(h, w) the model's transform resizes an image of this size to, without padding."""
    image_list, _ = model.transform([torch.zeros(3, height, width)])
    return tuple(image_list.image_sizes[0])


def kmeans_iou(shapes: np.ndarray, k: int, rng: np.random.Generator, restarts: int = 5,
               iterations: int = 60) -> np.ndarray:
    """k (w, h) centres of `shapes` [N, 2] under the distance 1 - IoU of
    centred boxes, sorted by area: k-means++ starts (each next centre drawn
    with probability growing with its distance to the chosen ones), centres
    the median shape of their cluster, the best of `restarts` runs by mean IoU."""
    k = min(k, len(np.unique(shapes, axis=0)))
    best, best_fit = None, -1.0
    for _ in range(restarts):
        centres = _kmeans_iou_once(shapes, _plus_plus_start(shapes, k, rng), iterations)
        fit = float(shape_iou(shapes, centres).max(1).mean())
        if fit > best_fit:
            best, best_fit = centres, fit
    return best[np.argsort(best.prod(1))]


def _plus_plus_start(shapes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [shapes[rng.integers(len(shapes))]]
    for _ in range(1, k):
        distance = 1 - shape_iou(shapes, np.array(centres)).max(1)
        weights = distance ** 2
        centres.append(shapes[rng.choice(len(shapes), p=weights / weights.sum())] if weights.sum() > 0
                       else shapes[rng.integers(len(shapes))])
    return np.array(centres)


def _kmeans_iou_once(shapes: np.ndarray, centres: np.ndarray, iterations: int) -> np.ndarray:
    for _ in range(iterations):
        nearest = shape_iou(shapes, centres).argmax(1)
        moved = np.array([np.median(shapes[nearest == j], 0) if (nearest == j).any() else centres[j]
                          for j in range(len(centres))])
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


def shape_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of centred boxes of shapes a [N, 2] and b [K, 2] (w, h): [N, K]."""
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None].prod(2) + b[None].prod(2) - inter)


class _RCNNAnchors:
    """Faster/Mask R-CNN: `anchor_sizes` (one per map) and `anchor_ratios` (shared)."""

    @staticmethod
    def threshold(model: FasterRCNN) -> float:
        return float(model.rpn.matcher.high_threshold)

    @staticmethod
    def current(model: FasterRCNN) -> dict[str, Any]:
        generator = model.rpn.anchor_generator
        return {"anchor_sizes": [int(s[0]) for s in generator.sizes],
                "anchor_ratios": [float(r) for r in generator.aspect_ratios[0]]}

    @staticmethod
    def generator(model: FasterRCNN, anchors: dict[str, Any]) -> nn.Module:
        from .. import ops

        sizes = anchors["anchor_sizes"]
        return ops.AnchorGenerator(tuple((s,) for s in sizes), (tuple(anchors["anchor_ratios"]),) * len(sizes))

    def candidates(self, model: FasterRCNN, shapes: np.ndarray, rng) -> list[dict[str, Any]]:
        current = self.current(model)
        levels, count = len(current["anchor_sizes"]), len(current["anchor_ratios"])
        # ratios, as many as the model has: the h / w of the boxes' shape clusters (k-means on 1 - IoU),
        # or clusters of their log(h / w) alone, which sizes do not pull apart
        by_iou = _rounded(sorted(h / w for w, h in kmeans_iou(shapes, count, rng)))
        by_ratio = _rounded(np.exp(_kmeans_1d(np.log(shapes[:, 1] / shapes[:, 0]), count, rng)).tolist())
        # sizes: the model's own ladder (one size per map, fitting its strides) scaled, or the boxes'
        # sizes (sqrt area) clustered in log space, one per map
        clustered = np.exp(_kmeans_1d(np.log(np.sqrt(shapes.prod(1))), levels, rng))
        ladders = [np.array(current["anchor_sizes"], dtype=np.float64) * f for f in _LADDER_SCALES]
        ladders += [clustered * f for f in _REFINE_SCALES]
        found = []
        for ladder in ladders:
            sizes = _increasing([max(2, int(round(s))) for s in np.sort(ladder)])
            for ratio_set in (by_iou, by_ratio, current["anchor_ratios"]):
                found.append({"anchor_sizes": sizes, "anchor_ratios": ratio_set})
        return found

    @staticmethod
    def nudged(anchors: dict[str, Any], nudges: tuple[float, ...]) -> list[dict[str, Any]]:
        """Each size (kept whole and increasing) and each ratio scaled by each nudge."""
        sizes, ratios = anchors["anchor_sizes"], anchors["anchor_ratios"]
        found = []
        for i, f in ((i, f) for i in range(len(sizes)) for f in nudges):
            moved = sizes[:i] + [max(2, int(round(sizes[i] * f)))] + sizes[i + 1:]
            if moved != sizes and moved == _increasing(moved):
                found.append({"anchor_sizes": moved, "anchor_ratios": ratios})
        for i, f in ((i, f) for i in range(len(ratios)) for f in nudges):
            found.append({"anchor_sizes": sizes, "anchor_ratios": _rounded(
                sorted(ratios[:i] + [ratios[i] * f] + ratios[i + 1:]))})
        return found


class _SSDAnchors:
    """SSD: the default-box `scales`, one per map plus one, fractions of the input side."""

    @staticmethod
    def threshold(model: SSD) -> float:
        return float(model.iou_thresh) if hasattr(model, "iou_thresh") else 0.5

    @staticmethod
    def current(model: SSD) -> dict[str, Any]:
        return {"scales": [round(float(s), 4) for s in model.anchor_generator.scales]}

    @staticmethod
    def generator(model: SSD, anchors: dict[str, Any]) -> nn.Module:
        from .. import ops

        current = model.anchor_generator
        ratios = anchors.get("aspect_ratios", current.aspect_ratios)
        return ops.DefaultBoxGenerator(ratios, scales=anchors["scales"], steps=current.steps, clip=current.clip)

    def candidates(self, model: SSD, shapes: np.ndarray, rng) -> list[dict[str, Any]]:
        levels = len(model.anchor_generator.aspect_ratios)
        side = float(max(model.transform.min_size[0], model.transform.max_size))
        relative = np.sqrt(shapes.prod(1)) / side
        centres = np.sort(np.exp(_kmeans_1d(np.log(relative), levels, rng)))
        # ratios: the default's, or 2 with the boxes' aspect clusters (max(w/h, h/w), clustered in log space)
        aspect = np.maximum(shapes[:, 0] / shapes[:, 1], shapes[:, 1] / shapes[:, 0])
        clusters = _rounded(np.exp(_kmeans_1d(np.log(aspect), 2, rng)).tolist())
        ratio_sets = [None] + ([[[2.0, clusters[0]]] * levels, [[2.0, *clusters]] * levels]
                               if clusters[-1] > 3.5 else [])  # thinner than the default 3:1 boxes
        found = []
        for factor in _REFINE_SCALES:
            scales = [round(float(s) * factor, 4) for s in centres]
            scales.append(round(min(1.05, scales[-1] * 1.25), 4))  # the last map's extra box
            for ratios in ratio_sets:
                found.append({"scales": scales} if ratios is None else {"scales": scales, "aspect_ratios": ratios})
        return found

    @staticmethod
    def nudged(anchors: dict[str, Any], nudges: tuple[float, ...]) -> list[dict[str, Any]]:
        """Each scale times each nudge, the scales kept increasing."""
        scales = anchors["scales"]
        found = []
        for i, f in ((i, f) for i in range(len(scales)) for f in nudges):
            moved = scales[:i] + [round(min(1.05, scales[i] * f), 4)] + scales[i + 1:]
            if all(a < b for a, b in zip(moved, moved[1:])):
                found.append({**anchors, "scales": moved})
        return found


def _family(model: nn.Module, name: str):
    if isinstance(model, FasterRCNN):
        return _RCNNAnchors()
    if isinstance(model, SSD):
        return _SSDAnchors()
    raise ValueError(f"{name}: fit_anchors knows Faster/Mask R-CNN and SSD models; {type(model).__name__} "
                     "has no anchors it can fit")


def _kmeans_1d(values: np.ndarray, k: int, rng, iterations: int = 60) -> np.ndarray:
    """k cluster means of 1-d `values`, started at their quantiles."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        nearest = np.abs(values[:, None] - centres[None]).argmin(1)
        moved = np.array([values[nearest == j].mean() if (nearest == j).any() else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return np.sort(centres)


def _increasing(sizes: list[int]) -> list[int]:
    """Strictly increasing sizes (one per map, finest first)."""
    out = []
    for size in sizes:
        out.append(max(size, out[-1] + 1) if out else size)
    return out


def _rounded(ratios: list[float]) -> list[float]:
    return [float(f"{r:.3g}") for r in ratios]

