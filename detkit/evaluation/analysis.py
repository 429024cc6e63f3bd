"""Evaluation you can act on: what kind of error costs AP, which classes are
confused, which score threshold each class should ship with, which images fail.

    analysis = analyze("instances_val.json", "results.json")   # or iou_type="segm"
    analysis.errors["AP50"]      # {"cls": 0.012, "loc": 0.031, ...}: AP gained by fixing each error type
    analysis.confusion.counts    # [K + 1, K + 1], background last
    write_report(analysis, "out/")                              # out/analysis.json, out/report.html

Everything starts from COCOEvaluator's matching (same kernels, same inputs),
so analysis.metrics equals COCOEvaluator.compute()'s, which equals
pycocotools'. On top of it:

Error types are TIDE's (Bolya et al., ECCV 2020). At a foreground IoU
threshold t (TIDE: 0.5) and a background threshold b (TIDE: 0.1), each false
positive of COCO's matching is, tested in this order,
  - background (bkg) if its image has no GT;
  - localisation (loc) if its best IoU with a GT of its class is in [b, t];
  - classification (cls) if its best IoU with a GT of another class is >= t;
  - duplicate (dupe) if its best IoU with a GT of its class that a
    higher-scoring detection matched is >= t;
  - background (bkg) if its best IoU with any GT is <= b;
  - both (cls and loc wrong) otherwise;
and each unmatched GT that no cls or loc error aims at is missed (miss).
ΔAP of a type is the AP after fixing all its errors minus the AP: a cls or
loc error becomes a true positive of the GT's class (only the
highest-scoring one per GT; the others are removed), dupe, bkg and both
errors are removed, missed GT are removed. FP (FN) is the AP with every false
positive removed (every unmatched GT removed) minus the AP. ΔAP is given at t
= fg_iou ("AP50") and averaged over COCO's thresholds .50:.95 with t = each
("AP"). Crowd GT are TIDE's ignore regions: detections COCO matches to them
are neither right nor wrong. Where TIDE differs from COCO (TIDE keeps 100
detections per image, COCO 100 per image and class; TIDE averages AP over
classes that have GT *or* detections, COCO over classes with GT), this
follows COCO, so the AP that the ΔAPs start from is COCO's.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Optional, Sequence

import numpy as np

from ..io.jsonio import load_json
from . import _analysis_kernels as ak
from ._matching import Matching, image_groups, match
from .coco import (AREA_LABELS, IOU_THRESHOLDS, RECALL_THRESHOLDS, COCOEvaluator, COCOMetrics, _mean_defined,
                   _to_rle)
from .worst import ERROR_TYPES, ImageErrors, ImageSource, draw_worst, worst_images


@dataclass
class ConfusionMatrix:
    """Detections against GT at one score and IoU threshold, supervision's
    layout and matching: counts[i, j] = GT of class i matched by a detection
    of class j; the last row (background) counts unmatched detections by
    class, the last column unmatched GT. Matching per image is greedy over
    pairs with IoU > iou_threshold among detections with score >=
    score_threshold, same-class pairs first, then by decreasing IoU.

    Differences from supervision's ConfusionMatrix (else equal):
      - crowd GT are no rows; a detection left unmatched whose crowd IoU
        (intersection over its own area, pycocotools' rule) with a crowd
        region of its class exceeds iou_threshold is not counted at all,
        as COCO ignores it, instead of as background;
      - IoU is computed in float64 from xywh boxes (supervision: from xyxy);
        ties in IoU are broken by GT order, then detection order, both in
        detkit's order (category, then input order), so only exact ties in
        IoU between different GT/detection pairs can be decided otherwise.
    """

    counts: np.ndarray  # [K + 1, K + 1] int64
    labels: list[str]  # K class names, then "background"
    score_threshold: float
    iou_threshold: float

    @property
    def normalized(self) -> np.ndarray:
        """counts with each row divided by its sum (rows without any stay 0)."""
        sums = self.counts.sum(1, keepdims=True)
        return np.divide(self.counts, sums, out=np.zeros(self.counts.shape), where=sums > 0)

    def most_confused(self, n: int = 5) -> list[tuple[str, str, int]]:
        """The n largest off-diagonal cells between two classes: (true, predicted, count)."""
        k = len(self.labels) - 1
        cells = self.counts[:k, :k].copy()
        np.fill_diagonal(cells, 0)
        flat = np.argsort(-cells, axis=None, kind="stable")[:n]
        return [(self.labels[i // k], self.labels[i % k], int(cells.flat[i])) for i in flat if cells.flat[i] > 0]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "score_threshold": self.score_threshold,
                "iou_threshold": self.iou_threshold, "counts": self.counts.tolist(),
                "normalized": self.normalized.round(6).tolist()}


@dataclass
class ClassSummary:
    """One category: AP (IoU .50:.95), AP50, AP75, AP by size (-1: no GT of
    that size), the score threshold that maximises F1 at the foreground IoU
    (None if the class has no true positive) with the precision, recall and
    F1 there, and its errors at that IoU by type (counts)."""

    name: str
    category_id: int
    num_gt: int
    num_detections: int
    ap: float
    ap50: float
    ap75: float
    ap_by_size: dict[str, float]
    threshold: Optional[float]
    precision: Optional[float]
    recall: Optional[float]
    f1: Optional[float]
    errors: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Analysis:
    """What analyze() returns; see the module docstring for the definitions.

    errors: {"AP50": {type: ΔAP}, "AP": {type: ΔAP}} (fractions, like the
        stats; "AP50" is the foreground threshold's key, e.g. "AP60");
    special: the same for "FP" and "FN" (TIDE's special errors);
    errors_by_iou: [T, 6] ΔAP per threshold (COCO's ten, then fg_iou if it is
        not one of them) and type; ap_by_iou: [T] the AP they start from
        (COCO's AP at each threshold, as COCOMetrics.precision gives it);
    counts: {"FP": {type: n, "total": n}, "FN": {"miss" | "cls" | "loc": n,
        "total": n}} at the foreground IoU;
    pr_curves: class -> (recall [101], precision [101]) at IoU 0.5.
    """

    metrics: COCOMetrics
    iou_type: str
    classes: list[str]
    fg_iou: float
    bg_iou: float
    errors: dict[str, dict[str, float]]
    special: dict[str, dict[str, float]]
    errors_by_iou: np.ndarray
    counts: dict[str, dict[str, int]]
    confusion: ConfusionMatrix
    per_class: list[ClassSummary]
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]]
    worst: list[ImageErrors]
    ap_by_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] the AP each ΔAP starts from
    num_images: int = 0

    @property
    def fg_key(self) -> str:
        """"AP50" for fg_iou 0.5: the key of errors at the foreground threshold."""
        return f"AP{round(self.fg_iou * 100)}"

    @property
    def ap_by_size(self) -> dict[str, float]:
        return {area: self.metrics.stats[f"AP{area[0]}"] for area in AREA_LABELS[1:]}

    def biggest_error(self, key: str = "AP") -> str:
        """The type whose fix gains the most AP (averaged over COCO's thresholds by default)."""
        return max(ERROR_TYPES, key=lambda name: self.errors[key][name])

    def summary(self) -> dict[str, Any]:
        """The error breakdown as a small JSON-ready dict (a metrics.jsonl field)."""
        return {key: {**{k: round(v, 6) for k, v in self.errors[key].items()},
                      **{k: round(v, 6) for k, v in self.special[key].items()}} for key in self.errors}

    def to_dict(self) -> dict[str, Any]:
        """Every number of the analysis, JSON-ready (NaN as None; no pixels)."""
        return _json_ready({
            "iou_type": self.iou_type, "num_images": self.num_images, "classes": list(self.classes),
            "fg_iou": self.fg_iou, "bg_iou": self.bg_iou, "stats": dict(self.metrics.stats),
            "ap_by_size": self.ap_by_size, "errors": self.errors, "special": self.special,
            "errors_by_iou": {"thresholds": _thresholds(self.errors_by_iou.shape[0], self.fg_iou),
                              "types": list(ERROR_TYPES), "delta_ap": self.errors_by_iou.tolist(),
                              "ap": self.ap_by_iou.tolist()},
            "counts": self.counts, "confusion": self.confusion.to_dict(),
            "per_class": [c.to_dict() for c in self.per_class],
            "pr_curves": {name: {"recall": r.tolist(), "precision": p.tolist()}
                          for name, (r, p) in self.pr_curves.items()},
            "worst": [w.to_dict() for w in self.worst],
        })


def analyze(gt, results, iou_type: str = "bbox", *, fg_iou: float = 0.5, bg_iou: float = 0.1,
            confusion_score: float = 0.3, confusion_iou: float = 0.5, worst: int = 8, images: ImageSource = None,
            image_ids: Optional[Collection] = None,
            label_to_category: Optional[Mapping[int, int]] = None) -> Analysis:
    """Analyses `results` against the COCO ground truth `gt`.

    gt: a COCO annotation JSON path, its dict or a pycocotools COCO.
    results: a COCO results JSON path, a list of result records, or
        predictions {image_id: {"boxes" xyxy, "scores", "labels"(, "masks")}}
        (see COCOEvaluator.update; label_to_category maps their labels).
    fg_iou, bg_iou: TIDE's foreground and background IoU thresholds.
    confusion_score, confusion_iou: the confusion matrix's thresholds
        (supervision's defaults).
    worst: how many of the worst images to keep and draw; images: the folder
        their file_names are relative to, or a function image_id -> RGB
        array; without one (or for a missing file) they are drawn on grey.
    image_ids: analyse these images of gt only (as COCOEvaluator).

    Raises ValueError naming the record for results of unknown images or
    categories, non-finite scores or bad boxes, and for empty results.
    """
    source = os.fspath(results) if isinstance(results, (str, os.PathLike)) else "results"
    evaluator = COCOEvaluator(gt, iou_type, label_to_category, image_ids)
    if isinstance(results, (str, os.PathLike)):
        results = load_json(results, "results file")
        if not isinstance(results, list):
            raise ValueError(f"{source}: results must be a JSON list of records")
    try:
        evaluator.update(results)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return analyze_evaluator(evaluator, fg_iou=fg_iou, bg_iou=bg_iou, confusion_score=confusion_score,
                             confusion_iou=confusion_iou, worst=worst, images=images, source=source)


def analyze_evaluator(evaluator: COCOEvaluator, *, fg_iou: float = 0.5, bg_iou: float = 0.1,
                      confusion_score: float = 0.3, confusion_iou: float = 0.5, worst: int = 8,
                      images: ImageSource = None, source: str = "results") -> Analysis:
    """analyze() for a COCOEvaluator already fed with update(); its metrics
    are the ones evaluator.compute() would return."""
    _check_thresholds(fg_iou, bg_iou, confusion_score, confusion_iou)
    if evaluator._dets.count == 0:
        raise ValueError(f"{source}: no detections to analyse (the results are empty)")
    m = match(evaluator, fg_iou)
    tf = _fg_index(m.thresholds, fg_iou)
    order = np.argsort(-m.scores[m.sel], kind="stable")  # COCO's ranking within each class
    sel_pair = m.sel_pair
    det_cls = sel_pair // m.n_img
    groups = image_groups(m, np.arange(len(m.sel)), sel_pair % m.n_img, m.sel)
    gt_cls = m.gt_pair // m.n_img
    err, target = ak.classify(groups.block, groups.block_off, groups.det_by_img, groups.det_img_off, det_cls,
                              m.status, groups.gt_rows, groups.gt_img_off, gt_cls, m.gt_used, m.thresholds, bg_iou)
    best, deltas = _deltas(m, order, det_cls, err, target, gt_cls)
    f1 = ak.f1_points(order, det_cls, m.status[tf], m.scores[m.sel], m.n_pos, m.n_cat)
    classes = evaluator.category_names
    found = worst_images(m, tf, err[tf], best[tf], f1[:, 0], classes, worst)
    draw_worst(found, images)
    return Analysis(
        metrics=m.metrics, iou_type=evaluator.iou_type, classes=classes, fg_iou=fg_iou, bg_iou=bg_iou,
        errors=_scoped(deltas[:, 1:7], tf, fg_iou, ERROR_TYPES), special=_scoped(deltas[:, 7:], tf, fg_iou, ("FP", "FN")),
        errors_by_iou=deltas[:, 1:7], counts=_counts(m, tf, err[tf], best[tf]),
        confusion=confusion_matrix(m, classes, confusion_score, confusion_iou),
        per_class=_per_class(m, tf, err[tf], best[tf], f1, classes),
        pr_curves=m.metrics.curves, worst=found, ap_by_iou=deltas[:, 0], num_images=m.n_img,
    )


def _check_thresholds(fg_iou: float, bg_iou: float, confusion_score: float, confusion_iou: float) -> None:
    if not 0 < fg_iou < 1 or not 0 <= bg_iou < fg_iou:
        raise ValueError(f"need 0 <= bg_iou < fg_iou < 1, got bg_iou={bg_iou!r}, fg_iou={fg_iou!r}")
    if not 0 <= confusion_iou < 1 or not math.isfinite(confusion_score):
        raise ValueError(f"need 0 <= confusion_iou < 1 and a finite confusion_score, got {confusion_iou!r}, "
                         f"{confusion_score!r}")


def _fg_index(thresholds: np.ndarray, fg_iou: float) -> int:
    return int(np.argmin(np.abs(thresholds - fg_iou)))


def _deltas(m: Matching, order, det_cls, err, target, gt_cls) -> tuple[np.ndarray, np.ndarray]:
    """(best [T, G]: the error that claims each GT; ΔAP [T, 9] in
    ak.MODES order, column 0 the AP itself). Clipped at 0 as TIDE clips
    its main types: a fix cannot lower AP, only rounding could."""
    best = np.empty((len(m.thresholds), len(gt_cls)), dtype=np.int64)
    out = np.zeros((len(m.thresholds), len(ak.MODES)))
    for t in range(len(m.thresholds)):
        best[t] = ak.fixed_gt(order, err[t], target[t], m.gt_used[t])
        aps = ak.fixed_aps(order, det_cls, m.status[t], err[t], target[t], best[t], gt_cls, m.gt_counted,
                           m.gt_used[t], m.n_pos, m.n_cat, RECALL_THRESHOLDS)
        out[t, 0] = aps[0]
        out[t, 1:] = np.maximum(aps[1:] - aps[0], 0.0) if aps[0] >= 0 else 0.0
    return best, out


def _scoped(deltas: np.ndarray, tf: int, fg_iou: float, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """{"AP50": at the foreground threshold, "AP": mean over COCO's ten}."""
    coco = deltas[:len(IOU_THRESHOLDS)].mean(0)
    return {f"AP{round(fg_iou * 100)}": {n: float(v) for n, v in zip(names, deltas[tf])},
            "AP": {n: float(v) for n, v in zip(names, coco)}}


def _fn_types(m: Matching, tf: int, err_t: np.ndarray, best_t: np.ndarray) -> np.ndarray:
    """[G] why each positive GT is unmatched at the foreground IoU: "" (it
    is matched or not a positive), "miss", or the type of the error that
    claims it ("cls" or "loc")."""
    kinds = np.full(len(best_t), "", dtype=object)
    unmatched = m.gt_counted & ~m.gt_used[tf]
    kinds[unmatched & (best_t < 0)] = "miss"
    claimed = np.flatnonzero(unmatched & (best_t >= 0))
    kinds[claimed] = [ERROR_TYPES[err_t[best_t[g]] - 1] for g in claimed]
    return kinds


def _counts(m: Matching, tf: int, err_t: np.ndarray, best_t: np.ndarray) -> dict[str, dict[str, int]]:
    fp = np.bincount(err_t[m.status[tf] == ak.FP], minlength=ak.MISS)
    fp_counts = {name: int(fp[code]) for code, name in enumerate(ERROR_TYPES[:5], start=1)}
    kinds = _fn_types(m, tf, err_t, best_t)
    fn_counts = {name: int((kinds == name).sum()) for name in ("miss", "cls", "loc")}
    return {"FP": {**fp_counts, "total": int(fp.sum())}, "FN": {**fn_counts, "total": sum(fn_counts.values())}}


def _per_class(m: Matching, tf: int, err_t, best_t, f1: np.ndarray, classes: list[str]) -> list[ClassSummary]:
    precision = m.metrics.precision  # [T, R, K, A, M]
    det_cls = m.sel_pair // m.n_img
    num_dets = np.bincount(det_cls, minlength=m.n_cat)
    fp = m.status[tf] == ak.FP
    fp_types = np.bincount(det_cls[fp] * ak.MISS + err_t[fp], minlength=m.n_cat * ak.MISS).reshape(m.n_cat, ak.MISS)
    missed = np.bincount((m.gt_pair // m.n_img)[_fn_types(m, tf, err_t, best_t) == "miss"], minlength=m.n_cat)
    out = []
    for k, name in enumerate(classes):
        errors = {t: int(fp_types[k, code]) for code, t in enumerate(ERROR_TYPES[:5], start=1)}
        threshold, p, r, f = (None if math.isnan(v) else float(v) for v in f1[k])
        out.append(ClassSummary(
            name=name, category_id=m.metrics.category_ids[k], num_gt=int(m.n_pos[k]), num_detections=int(num_dets[k]),
            ap=_mean_defined(precision[:, :, k, 0, -1]), ap50=_mean_defined(precision[0, :, k, 0, -1]),
            ap75=_mean_defined(precision[5, :, k, 0, -1]),
            ap_by_size={area: _mean_defined(precision[:, :, k, a, -1]) for a, area in enumerate(AREA_LABELS) if a},
            threshold=threshold, precision=p, recall=r, f1=f, errors={**errors, "miss": int(missed[k])}))
    return out


def confusion_matrix(m: Matching, classes: list[str], score_threshold: float, iou_threshold: float) -> ConfusionMatrix:
    """The confusion matrix of all detections (not only the 100 per image
    and class that COCO scores) with score >= score_threshold."""
    keep = np.flatnonzero(m.scores >= score_threshold)
    groups = image_groups(m, keep, m.det_pair[keep] % m.n_img)
    gt_cls = m.gt_pair // m.n_img
    listed_cls = m.det_pair[groups.det_by_img] // m.n_img
    counts, unmatched = ak.confusion(groups.block, groups.block_off, groups.det_img_off, listed_cls, groups.gt_rows,
                                     groups.gt_img_off, gt_cls, m.n_cat, iou_threshold)
    left = groups.det_by_img[unmatched]
    left = left[~_in_crowd(m, left, iou_threshold)]
    np.add.at(counts[m.n_cat], m.det_pair[left] // m.n_img, 1)
    return ConfusionMatrix(counts, list(classes) + ["background"], float(score_threshold), float(iou_threshold))


def _in_crowd(m: Matching, dets: np.ndarray, iou_threshold: float) -> np.ndarray:
    """[D] whether each detection's crowd IoU with a crowd GT of its pair exceeds iou_threshold."""
    gt = m.evaluator.gt
    out = np.zeros(len(dets), dtype=bool)
    crowd_pairs = np.unique(m.gt_pair[gt.crowd == 1])
    for n in np.flatnonzero(np.isin(m.det_pair[dets], crowd_pairs)):
        p = m.det_pair[dets[n]]
        rows = [g for g in range(gt.offsets[p], gt.offsets[p + 1]) if gt.crowd[g]]
        out[n] = max(_crowd_ious(m, dets[n], rows)) > iou_threshold
    return out


def _crowd_ious(m: Matching, det: int, rows: list[int]) -> list[float]:
    """pycocotools' IoU of one detection with crowd GT: intersection over the detection's area."""
    from pycocotools import mask as mask_utils

    gt = m.evaluator.gt
    if m.evaluator.iou_type == "bbox":
        return list(mask_utils.iou(m.boxes[det:det + 1].tolist(), gt.boxes[rows].tolist(), [1] * len(rows))[0])
    image = gt.images[int(gt.img_ids[m.det_pair[det] % m.n_img])]
    rle = _to_rle(m.evaluator._dets.segmentations[m.rows[det]], image)
    return list(np.asarray(mask_utils.iou([rle], [gt.rles[g] for g in rows], [1] * len(rows))).reshape(-1))


def _thresholds(count: int, fg_iou: float) -> list[float]:
    values = [round(float(t), 2) for t in IOU_THRESHOLDS]
    return values + [fg_iou] if count > len(values) else values


def _json_ready(value):
    """NaN and inf as None; numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
