"""COCO's matching, kept for the analysis: the same kernels and inputs as
COCOEvaluator.compute(), with the arrays that compute() drops (which GT each
detection matched, per IoU threshold) and the grouping by image that TIDE's
error types need.

Shapes: N detections (grouped by pair, as compute() orders them), S selected
(the first 100 per pair by score, positions in `sel`), G ground truth rows,
T IoU thresholds (COCO's ten, plus the foreground threshold if it is not one
of them), K categories, I images.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from . import _analysis_kernels as ak
from . import _kernels
from .coco import (AREA_RANGES, IOU_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS, COCOEvaluator, COCOMetrics,
                   _mean_defined, _offsets, _to_rle, summarize)


@dataclass
class Matching:
    """Everything the analysis reads of one COCO evaluation."""

    evaluator: COCOEvaluator
    metrics: COCOMetrics
    thresholds: np.ndarray  # [T]: COCO's ten, then the foreground threshold if it is not one of them
    det_pair: np.ndarray  # [N] pair of each detection
    scores: np.ndarray  # [N]
    boxes: np.ndarray  # [N, 4] xywh
    rows: np.ndarray  # [N] index of each detection in the evaluator's input order
    sel: np.ndarray  # [S] detection index of each selected position
    sel_off: np.ndarray  # [K * I + 1]
    status: np.ndarray  # [T, S] int8: ak.TP, ak.FP or ak.IGNORED (area "all")
    det_gt: np.ndarray  # [T, S] the GT row matched, -1 if none
    gt_used: np.ndarray  # [T, G] bool: matched by a true positive
    gt_counted: np.ndarray  # [G] bool: a positive (not crowd, inside the area range)
    n_pos: np.ndarray  # [K] positives per category

    @property
    def n_img(self) -> int:
        return len(self.evaluator.gt.img_ids)

    @property
    def n_cat(self) -> int:
        return len(self.evaluator.gt.cat_ids)

    @cached_property
    def sel_pair(self) -> np.ndarray:
        """[S] pair of each selected position."""
        return np.repeat(np.arange(len(self.sel_off) - 1), np.diff(self.sel_off))

    @cached_property
    def gt_pair(self) -> np.ndarray:
        """[G] pair of each GT row."""
        offsets = self.evaluator.gt.offsets
        return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def match(evaluator: COCOEvaluator, fg_iou: float) -> Matching:
    """Runs compute()'s steps on the evaluator's detections and keeps their
    arrays; the metrics are the ones compute() returns."""
    gt = evaluator.gt
    n_img, n_cat = len(gt.img_ids), len(gt.cat_ids)
    image_ids, category_ids, scores, boxes = evaluator._dets.columns()
    pair = np.searchsorted(gt.cat_ids, category_ids) * n_img + np.searchsorted(gt.img_ids, image_ids)
    order = np.argsort(pair, kind="stable")
    dt_off = _offsets(pair[order], n_cat * n_img)
    scores, boxes = scores[order], boxes[order]
    sel, sel_off = _kernels.select_detections(dt_off, scores, MAX_DETS[-1])
    iou_off = _kernels.iou_offsets(sel_off, gt.offsets)
    ious, dt_area = _pair_ious(evaluator, order, boxes, image_ids, sel, sel_off, iou_off)
    args = (ious, iou_off, sel, sel_off, dt_area, order.astype(np.int64) + 1, gt.area, gt.crowd, gt.ids, gt.offsets)
    matched, ignored, n_pos = _kernels.evaluate_pairs(*args, np.array(AREA_RANGES, dtype=np.float64), IOU_THRESHOLDS)
    metrics = _metrics(evaluator, matched, ignored, n_pos, sel, sel_off, scores)
    thresholds = IOU_THRESHOLDS
    status = _status(matched[0], ignored[0])
    if not np.isclose(IOU_THRESHOLDS, fg_iou, rtol=0, atol=1e-12).any():  # match once more at fg_iou
        extra = _kernels.evaluate_pairs(*args, np.array(AREA_RANGES[:1], dtype=np.float64), np.array([fg_iou]))
        thresholds = np.append(IOU_THRESHOLDS, fg_iou)
        status = np.concatenate([status, _status(extra[0][0], extra[1][0])])
    lo, hi = AREA_RANGES[0]
    det_gt = ak.matched_gt(ious, iou_off, sel_off, gt.area, gt.crowd, gt.offsets, float(lo), float(hi), thresholds)
    gt_used = np.zeros((len(thresholds), len(gt.ids)), dtype=bool)
    for t in range(len(thresholds)):
        gt_used[t, det_gt[t][status[t] == ak.TP]] = True
    gt_counted = (gt.crowd == 0) & (gt.area >= lo) & (gt.area <= hi)
    return Matching(evaluator, metrics, thresholds, pair[order], scores, boxes, order, sel, sel_off, status, det_gt,
                    gt_used, gt_counted, n_pos[0].reshape(n_cat, n_img).sum(1))


def _pair_ious(evaluator: COCOEvaluator, order, boxes, image_ids, sel, sel_off, iou_off):
    """Same-category IoUs per pair and detection areas, as compute() gets them."""
    gt = evaluator.gt
    if evaluator.iou_type == "bbox":
        ious = _kernels.bbox_ious(boxes, sel, sel_off, gt.boxes, gt.crowd, gt.offsets, iou_off)
        return ious, boxes[:, 2] * boxes[:, 3]
    segms = [evaluator._dets.segmentations[i] for i in order]
    return evaluator._segm_ious(segms, boxes, image_ids[order], sel, sel_off, iou_off)


def _metrics(evaluator, matched, ignored, n_pos, sel, sel_off, scores) -> COCOMetrics:
    """accumulate and summarize, as compute() ends."""
    gt = evaluator.gt
    n_img, n_cat = len(gt.img_ids), len(gt.cat_ids)
    precision, recall, score_table = _kernels.accumulate(
        matched, ignored, n_pos, sel, sel_off, gt.offsets, scores, n_cat, n_img,
        np.array(MAX_DETS, dtype=np.int64), RECALL_THRESHOLDS,
    )
    per_category = {name: _mean_defined(precision[:, :, k, 0, -1]) for k, name in enumerate(evaluator.category_names)}
    return COCOMetrics(summarize(precision, recall), per_category, precision, recall, score_table,
                       [int(c) for c in gt.cat_ids])


def _status(matched: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """[T, S] outcomes from evaluate_pairs' flags of one area range."""
    status = np.full(matched.shape, ak.FP, dtype=np.int8)
    status[(matched == 1) & (ignored == 0)] = ak.TP
    status[ignored == 1] = ak.IGNORED
    return status


@dataclass
class ImageGroups:
    """Selected positions and non-crowd GT rows listed image by image, with
    each detection's IoU with every GT of its image (all categories)."""

    det_by_img: np.ndarray  # [D] detection ids (positions in `sel`, or detection indices), image by image
    det_img_off: np.ndarray  # [I + 1]
    gt_rows: np.ndarray  # [G'] non-crowd GT rows, image by image
    gt_img_off: np.ndarray  # [I + 1]
    block: np.ndarray  # IoU blocks [D_i, G_i] per image, row-major
    block_off: np.ndarray  # [I + 1]


def image_groups(m: Matching, det_index: np.ndarray, det_img: np.ndarray,
                 det_rows: Optional[np.ndarray] = None) -> ImageGroups:
    """Groups detections `det_index` (ids the caller chooses; `det_rows`:
    their detection indices, default the ids themselves) with the non-crowd
    GT of their images and computes the IoU blocks."""
    gt = m.evaluator.gt
    det_rows = det_index if det_rows is None else det_rows
    by_img = np.argsort(det_img, kind="stable")
    det_img_off = _offsets(det_img[by_img], m.n_img)
    gt_img = m.gt_pair % m.n_img
    plain = np.flatnonzero(gt.crowd == 0)
    gt_rows = plain[np.argsort(gt_img[plain], kind="stable")]
    gt_img_off = _offsets(gt_img[gt_rows], m.n_img)
    block_off = _kernels.iou_offsets(det_img_off, gt_img_off)  # each image's [D_i, G_i] block
    rows = det_rows[by_img]
    if m.evaluator.iou_type == "bbox":
        block = ak.image_box_ious(m.boxes, rows, det_img_off, gt.boxes, gt_rows, gt_img_off, block_off)
    else:
        block = _image_mask_ious(m, rows, det_img_off, gt_rows, gt_img_off, block_off)
    return ImageGroups(det_index[by_img], det_img_off, gt_rows, gt_img_off, block, block_off)


def _image_mask_ious(m: Matching, rows, det_img_off, gt_rows, gt_img_off, block_off) -> np.ndarray:
    """image_box_ious for masks, with pycocotools' RLE IoU (non-crowd)."""
    from pycocotools import mask as mask_utils

    gt, segms = m.evaluator.gt, m.evaluator._dets.segmentations
    out = np.zeros(block_off[-1])
    for i in np.flatnonzero((np.diff(det_img_off) > 0) & (np.diff(gt_img_off) > 0)):
        image = gt.images[int(gt.img_ids[i])]
        dets = [_to_rle(segms[m.rows[r]], image) for r in rows[det_img_off[i]:det_img_off[i + 1]]]
        truth = [gt.rles[g] for g in gt_rows[gt_img_off[i]:gt_img_off[i + 1]]]
        block = mask_utils.iou(dets, truth, [0] * len(truth))
        out[block_off[i]:block_off[i + 1]] = np.asarray(block, dtype=np.float64).reshape(-1)
    return out
