"""Pascal VOC detection mAP with the devkit's rules.

Per class, detections are taken in decreasing score order (stable on ties);
each is a true positive when its best-overlapping GT of the same image has
IoU > iou_threshold and was not matched before, a false positive otherwise.
Difficult GT count neither as positives nor, when matched, as false
positives. AP is the 11-point (VOC2007) or the area (VOC2010+) definition.

Boxes are detkit's (x1, y1, x2, y2) with no "+1": the VOC loader maps the
1-based inclusive XML corners (a, b) to (a - 1, b), so the plain IoU here is
the devkit's "+1" IoU on the original corners.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from numba import njit
from torch import Tensor

from ..io.jsonio import write_json_atomic

STAT_NAMES = ("mAP",)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision from a recall/precision curve (recall ascending).

    use_07_metric: the mean of the best precision at recall >= 0, 0.1, ..., 1
    (VOC2007); otherwise the area under the precision envelope (VOC2010+).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = recall >= t
            total += (precision[reached].max() if reached.any() else 0.0) / 11.0
        return float(total)
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@njit(cache=True, nogil=True, error_model="numpy")
def _match_class(det_img, det_boxes, gt_off, gt_boxes, gt_difficult, iou_threshold):
    """tp, fp flags of one class's detections (already in score order)."""
    n = det_img.shape[0]
    tp = np.zeros(n, dtype=np.int64)
    fp = np.zeros(n, dtype=np.int64)
    taken = np.zeros(gt_boxes.shape[0], dtype=np.uint8)
    for d in range(n):
        lo, hi = gt_off[det_img[d]], gt_off[det_img[d] + 1]
        x1, y1, x2, y2 = det_boxes[d, 0], det_boxes[d, 1], det_boxes[d, 2], det_boxes[d, 3]
        best, best_g = -np.inf, -1
        for g in range(lo, hi):
            w = min(x2, gt_boxes[g, 2]) - max(x1, gt_boxes[g, 0])
            h = min(y2, gt_boxes[g, 3]) - max(y1, gt_boxes[g, 1])
            inter = max(w, 0.0) * max(h, 0.0)
            union = (x2 - x1) * (y2 - y1) + (gt_boxes[g, 2] - gt_boxes[g, 0]) * (gt_boxes[g, 3] - gt_boxes[g, 1]) - inter
            iou = inter / union if union > 0 else 0.0
            if iou > best:
                best, best_g = iou, g
        if best > iou_threshold:
            if gt_difficult[best_g]:
                continue
            if taken[best_g]:
                fp[d] = 1
            else:
                tp[d] = 1
                taken[best_g] = 1
        else:
            fp[d] = 1
    return tp, fp


@dataclass
class VOCMetrics:
    """per_class: class name -> AP; mAP over classes with GT; curves: class
    name -> (recall, precision) arrays, for plotting."""

    per_class: dict[str, float]
    mAP: float
    curves: dict[str, tuple[np.ndarray, np.ndarray]]

    per_class_metric = "AP50"  # what per_class holds, for table headers

    @property
    def stats(self) -> dict[str, float]:
        """The headline numbers by name, as COCOMetrics.stats."""
        return {"mAP": self.mAP}

    def headline(self) -> str:
        return f"VOC mAP@0.5: {self.mAP:.4f}"

    def to_dict(self) -> dict:
        return {"mAP": self.mAP, "per_class": dict(self.per_class)}


class VOCEvaluator:
    """Accumulates detections and ground truth, then computes VOC mAP.

    Args:
        classes: the K class names; label l (1..K) is classes[l - 1], 0 is background.
        iou_threshold: a detection matches when IoU > iou_threshold (0.5).
        use_07_metric: 11-point AP (VOC2007) or area AP (VOC2010+).
    """

    def __init__(self, classes: Sequence[str], iou_threshold: float = 0.5, use_07_metric: bool = True):
        if not 0.0 <= float(iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        self.classes = list(classes)
        self.iou_threshold = float(iou_threshold)
        self.use_07_metric = use_07_metric
        self._images: dict = {}  # image id -> (gt boxes, gt labels, difficult, det boxes, scores, labels)

    def update(self, predictions: Mapping, targets: Optional[Mapping] = None) -> None:
        """predictions: {image_id: {"boxes": Tensor[N, 4], "scores", "labels"}};
        targets: {image_id: {"boxes": Tensor[G, 4], "labels", "difficult"?}}.
        Every predicted image needs its target, in this call or an earlier one."""
        for image_id, target in (targets or {}).items():
            boxes, labels = _numpy(target["boxes"]).reshape(-1, 4), _numpy(target["labels"]).astype(np.int64)
            difficult = _numpy(target.get("difficult", np.zeros(len(labels), bool))).astype(bool)
            self._check_labels(labels, f"target for image {image_id}")
            self._images.setdefault(image_id, [None, None])[0] = (boxes.astype(np.float64), labels, difficult)
        for image_id, pred in predictions.items():
            if image_id not in self._images or self._images[image_id][0] is None:
                raise ValueError(f"prediction for image {image_id} has no target; pass targets for every image")
            labels = _numpy(pred["labels"]).astype(np.int64)
            scores = _numpy(pred["scores"]).astype(np.float64)
            if not np.isfinite(scores).all():
                raise ValueError(f"prediction for image {image_id}: a score is not finite")
            self._check_labels(labels, f"prediction for image {image_id}")
            self._images[image_id][1] = (_numpy(pred["boxes"]).reshape(-1, 4).astype(np.float64), scores, labels)

    def _check_labels(self, labels: np.ndarray, where: str) -> None:
        bad = (labels < 1) | (labels > len(self.classes))
        if bad.any():
            raise ValueError(f"{where}: label {int(labels[bad][0])} is outside 1..{len(self.classes)}")

    def compute(self) -> VOCMetrics:
        ids = list(self._images)
        per_class, curves = {}, {}
        for label, name in enumerate(self.classes, start=1):
            recall, precision = self._curve(ids, label)
            if recall is None:
                continue  # no GT of this class: AP undefined, left out of the mean
            per_class[name] = voc_ap(recall, precision, self.use_07_metric)
            curves[name] = (recall, precision)
        mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
        return VOCMetrics(per_class, mean, curves)

    def results(self) -> list[dict[str, Any]]:
        """The accumulated detections as COCO-style result records, "bbox" as
        (x, y, w, h); VOC has no category ids, so "category_id" is the label
        (1..K, class classes[label - 1])."""
        records = []
        for image_id, (_, pred) in self._images.items():
            if pred is None:
                continue
            boxes, scores, labels = pred
            for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                records.append({"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": score})
        return records

    def write_results(self, path: Union[str, os.PathLike]) -> None:
        """Writes results() as JSON atomically."""
        write_json_atomic(path, self.results())

    def _curve(self, ids, label):
        gt_boxes, gt_difficult, gt_off = [], [], [0]
        det_img, det_boxes, det_scores = [], [], []
        for n, image_id in enumerate(ids):
            target, pred = self._images[image_id]
            keep = target[1] == label
            gt_boxes.append(target[0][keep])
            gt_difficult.append(target[2][keep])
            gt_off.append(gt_off[-1] + int(keep.sum()))
            if pred is not None:
                mine = pred[2] == label
                det_img.append(np.full(int(mine.sum()), n))
                det_boxes.append(pred[0][mine])
                det_scores.append(pred[1][mine])
        difficult = np.concatenate(gt_difficult) if gt_difficult else np.zeros(0, bool)
        positives = int((~difficult).sum())
        if positives == 0:
            return None, None
        scores = np.concatenate(det_scores) if det_scores else np.zeros(0)
        order = np.argsort(-scores, kind="stable")
        tp, fp = _match_class(
            np.concatenate(det_img).astype(np.int64)[order] if det_img else np.zeros(0, np.int64),
            np.concatenate(det_boxes)[order] if det_boxes else np.zeros((0, 4)),
            np.array(gt_off, dtype=np.int64), np.concatenate(gt_boxes), difficult.astype(np.uint8),
            self.iou_threshold,
        )
        tp, fp = np.cumsum(tp).astype(np.float64), np.cumsum(fp).astype(np.float64)
        recall = tp / positives
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return recall, precision


def _numpy(value) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
