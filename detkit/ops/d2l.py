"""Anchor boxes, anchor labelling and prediction as defined in "Dive into
Deep Learning" (Zhang, Lipton, Li and Smola; d2l.ai, sections 14.4 "Anchor
Boxes" and 14.7 "Single Shot Multibox Detection"): the book's definitions,
under the book's names, so that its readers can move their code to detkit.

Coordinates are the book's: normalised (x1, y1, x2, y2) in [0, 1] of the
image, not detkit's absolute pixels. Each function reproduces the book's
implementation result for result (same anchor order, same greedy assignment,
same output row order), except where the book's code crashes or is wrong,
which each docstring names:

- no ground truth: the book's code fails on an empty IoU matrix; here every
  anchor is background;
- a pair of zero-area boxes has IoU 0 (detkit.ops.box_iou), not the book's
  0/0 = NaN;
- the greedy assignment divides the flat argmax index as an integer (the
  book divides in float32, which picks the wrong anchor past 2**24 entries);
- NMS ties keep the lower anchor first (detkit.ops.nms; the book's argsort
  leaves them in no particular order);
- label rows of class -1 (the book's padding) take no part in multibox_target;
  the book's code lets them claim anchors in the greedy step.

The greedy assignment has a numba kernel (detkit.ops._d2l_numba) for CPU
tensors; the `_*_reference` functions are the spec and serve CUDA, autograd
and tracing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import _ext
from ._checks import as_numpy, check_boxes, check_finite, check_float_tensor, check_fraction
from .boxes import box_iou
from .nms import nms

_ext.register("assign_anchor_to_bbox", "numba")
_kernels = _ext._load("detkit.ops._d2l_numba", "the d2l anchor assignment uses the slower torch reference.")


# --- anchors (book section 14.4.1) ---------------------------------------------------------------


def _check_positive(values: Sequence[float], name: str) -> list[float]:
    values = [float(v) for v in values]
    if not values or not all(0.0 < v < float("inf") for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values}")
    return values


def multibox_prior(data: Tensor, sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """The book's anchor boxes: n + m - 1 per pixel of a feature map.

    For sizes s_1..s_n and ratios r_1..r_m each pixel gets the anchors
    (s_i, r_1) for every i, then (s_1, r_j) for j >= 2, with width
    s * sqrt(r) * H / W and height s / sqrt(r) (a square anchor stays square
    in pixels of a non-square map), centred at ((x + 0.5) / W, (y + 0.5) / H).

    Args:
        data: Tensor[..., H, W]; only its size and device are used.
        sizes: n anchor scales, fractions of the map's height.
        ratios: m width/height ratios.

    Returns:
        Tensor[1, H*W*(n+m-1), 4] (x1, y1, x2, y2), normalised; the anchors of
        pixel (y, x) are rows (y*W + x)*(n+m-1) onwards, as in the book.
        float64 for float64 data, else float32 (the book's default dtype).
    """
    if not isinstance(data, Tensor) or data.dim() < 2:
        raise ValueError(f"data must be a Tensor[..., H, W], got {getattr(data, 'shape', type(data).__name__)}")
    sizes, ratios = _check_positive(sizes, "sizes"), _check_positive(ratios, "ratios")
    in_height, in_width = data.shape[-2:]
    dtype = torch.float64 if data.dtype == torch.float64 else torch.float32
    size_t = torch.tensor(sizes, dtype=dtype, device=data.device)
    ratio_t = torch.tensor(ratios, dtype=dtype, device=data.device)
    # The book's expressions, in its order, so the rounding is the book's.
    center_h = (torch.arange(in_height, device=data.device, dtype=dtype) + 0.5) * (1.0 / in_height)
    center_w = (torch.arange(in_width, device=data.device, dtype=dtype) + 0.5) * (1.0 / in_width)
    shift_y, shift_x = torch.meshgrid(center_h, center_w, indexing="ij")
    shift_y, shift_x = shift_y.reshape(-1), shift_x.reshape(-1)
    w = torch.cat((size_t * torch.sqrt(ratio_t[0]), sizes[0] * torch.sqrt(ratio_t[1:]))) * in_height / in_width
    h = torch.cat((size_t / torch.sqrt(ratio_t[0]), sizes[0] / torch.sqrt(ratio_t[1:])))
    half = torch.stack((-w, -h, w, h), dim=1) / 2
    grid = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    # Broadcasting instead of the book's repeat/repeat_interleave: the same sums, without two copies.
    return (grid[:, None, :] + half[None, :, :]).reshape(1, -1, 4)


# --- box offsets (book section 14.4.3) -----------------------------------------------------------


def _corner_to_center(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def _center_to_corner(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def offset_boxes(anchors: Tensor, assigned_bb: Tensor, eps: float = 1e-6) -> Tensor:
    """The book's offsets of assigned boxes from their anchors.

    Args:
        anchors: Tensor[..., 4] (x1, y1, x2, y2), positive width and height.
        assigned_bb: Tensor[..., 4] (x1, y1, x2, y2), broadcastable to anchors.
        eps: keeps log() finite for an all-zero (unassigned) box.

    Returns:
        Tensor[..., 4]: (10 * dx / w_a, 10 * dy / h_a, 5 * log(eps + w / w_a),
        5 * log(eps + h / h_a)), dx, dy the centre offsets.
    """
    c_anc, c_bb = _corner_to_center(anchors), _corner_to_center(assigned_bb)
    offset_xy = 10 * (c_bb[..., :2] - c_anc[..., :2]) / c_anc[..., 2:]
    offset_wh = 5 * torch.log(eps + c_bb[..., 2:] / c_anc[..., 2:])
    return torch.cat((offset_xy, offset_wh), dim=-1)


def offset_inverse(anchors: Tensor, offset_preds: Tensor) -> Tensor:
    """The boxes that the book's offsets (without eps) describe: the inverse of offset_boxes.

    Args:
        anchors: Tensor[..., 4] (x1, y1, x2, y2).
        offset_preds: Tensor[..., 4], broadcastable to anchors.

    Returns:
        Tensor[..., 4] (x1, y1, x2, y2).
    """
    anc = _corner_to_center(anchors)
    pred_xy = (offset_preds[..., :2] * anc[..., 2:] / 10) + anc[..., :2]
    pred_wh = torch.exp(offset_preds[..., 2:] / 5) * anc[..., 2:]
    return _center_to_corner(torch.cat((pred_xy, pred_wh), dim=-1))


# --- labelling anchors (book section 14.4.3) ------------------------------------------------------


def _assign_reference(jaccard: Tensor, iou_threshold: float) -> Tensor:
    """The spec, the book's code on an IoU matrix [A, G] (G >= 1): each anchor
    takes its best ground truth (first on ties) if IoU >= threshold; then G
    times the largest entry left (first in row-major order) assigns its
    anchor to its ground truth, overriding, and its row and column become -1.
    Once every row is gone the argmax of the all -1 matrix is entry 0, so
    anchor 0 takes ground truth 0: a quirk of the book's loop, kept."""
    num_anchors, num_gt = jaccard.shape
    jaccard = jaccard.clone()
    anchors_bbox_map = torch.full((num_anchors,), -1, dtype=torch.long, device=jaccard.device)
    max_ious, indices = torch.max(jaccard, dim=1)
    above = max_ious >= iou_threshold
    anchors_bbox_map[above] = indices[above]
    for _ in range(num_gt):
        max_idx = torch.argmax(jaccard)
        box_idx = max_idx % num_gt
        anc_idx = torch.div(max_idx, num_gt, rounding_mode="floor")
        anchors_bbox_map[anc_idx] = box_idx
        jaccard[:, box_idx] = -1
        jaccard[anc_idx, :] = -1
    return anchors_bbox_map


def _assign(jaccard: Tensor, iou_threshold: float) -> Tensor:
    if jaccard.numel() == 0:
        return torch.full((jaccard.shape[0],), -1, dtype=torch.long, device=jaccard.device)
    if _kernels is None or not _ext.compiled("numba", jaccard):
        return _assign_reference(jaccard, iou_threshold)
    iou = as_numpy(jaccard)
    # The threshold in the matrix's dtype: torch compares a float32 tensor with a float32 scalar.
    return torch.from_numpy(_kernels.greedy_assign(iou, iou.dtype.type(iou_threshold)))


def assign_anchor_to_bbox(ground_truth: Tensor, anchors: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """The book's greedy assignment of ground-truth boxes to anchors.

    First every anchor whose best IoU is >= iou_threshold takes that ground
    truth; then, G times, the largest IoU left in the [A, G] matrix assigns
    its anchor to its ground truth (overriding the first step) and removes
    both, so each ground truth gets at least one anchor while anchors last.

    Args:
        ground_truth: Tensor[G, 4] (x1, y1, x2, y2).
        anchors: Tensor[A, 4] (x1, y1, x2, y2).
        iou_threshold: in [0, 1].

    Returns:
        int64 Tensor[A]: the ground truth of each anchor, -1 for none (every
        anchor when G == 0, where the book's code fails).
    """
    iou_threshold = check_fraction(iou_threshold, "iou_threshold")
    check_boxes(ground_truth, "ground_truth")
    check_boxes(anchors, "anchors")
    return _assign(box_iou(anchors.detach(), ground_truth.detach()), iou_threshold)


def _check_anchors(anchors: Tensor) -> Tensor:
    """[1, A, 4] or [A, 4] -> [A, 4] with positive widths and heights (offsets divide by them)."""
    check_float_tensor(anchors, "anchors", last_dim=4)
    if anchors.dim() == 3 and anchors.shape[0] == 1:
        anchors = anchors[0]
    check_boxes(anchors, "anchors", positive=True)
    return anchors


def _check_labels(labels: Tensor) -> None:
    check_float_tensor(labels, "labels", last_dim=5, ndim=3)
    real = labels[..., 0] >= 0
    check_finite(labels[..., 0], "labels[..., 0]")
    if bool((labels[..., 0][real] != labels[..., 0][real].floor()).any()):
        raise ValueError("labels[..., 0] must hold whole class numbers (0, 1, ...) or -1 for padding")
    check_boxes(labels[..., 1:][real], "labels[..., 1:] (non-padding rows)")


def multibox_target(anchors: Tensor, labels: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """The book's training targets for anchors.

    Each image's ground truth is assigned with assign_anchor_to_bbox; an
    assigned anchor gets class + 1 (0 is background) and the offset_boxes of
    its ground truth. Rows whose class is negative are padding (the book pads
    with -1 so images with fewer objects stack) and take no part; the book's
    code would let them claim an anchor in the greedy step.

    Args:
        anchors: Tensor[1, A, 4] (or [A, 4]) (x1, y1, x2, y2), positive width and height.
        labels: Tensor[B, G, 5] (class, x1, y1, x2, y2); class 0, 1, ... or -1 for padding.
        iou_threshold: as in assign_anchor_to_bbox (the book uses 0.5).

    Returns:
        offsets: Tensor[B, 4A], zero for unassigned anchors.
        mask: Tensor[B, 4A], 1.0 on the four offsets of each assigned anchor, else 0.0.
        class_labels: int64 Tensor[B, A].
    """
    anchors = _check_anchors(anchors).detach()
    _check_labels(labels)
    iou_threshold = check_fraction(iou_threshold, "iou_threshold")
    labels = labels.detach().to(device=anchors.device)
    maps = [_assign_rows(anchors, label, iou_threshold) for label in labels]
    maps = torch.stack(maps) if maps else torch.zeros((0, anchors.shape[0]), dtype=torch.long, device=anchors.device)
    return _targets_from_maps(anchors, labels, maps)


def _assign_rows(anchors: Tensor, label: Tensor, iou_threshold: float) -> Tensor:
    """Each anchor's row of one image's labels [G, 5], -1 for none; padding rows skipped."""
    rows = torch.where(label[:, 0] >= 0)[0]  # padding may sit anywhere, not only at the end
    if rows.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    gt = _assign(box_iou(anchors, label[rows, 1:].to(anchors.dtype)), iou_threshold)
    return torch.where(gt >= 0, rows[gt.clamp(min=0)], -1)


def _targets_from_maps(anchors: Tensor, labels: Tensor, maps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Offsets, mask and classes from each anchor's row of labels (maps: [B, A], -1 for none)."""
    batch, num_anchors = labels.shape[0], anchors.shape[0]
    assigned = maps >= 0
    rows = torch.gather(labels.to(anchors.dtype), 1, maps.clamp(min=0)[..., None].expand(batch, num_anchors, 5)) \
        if labels.shape[1] else anchors.new_zeros((batch, num_anchors, 5))
    class_labels = torch.where(assigned, rows[..., 0].long() + 1, 0)
    assigned_bb = torch.where(assigned[..., None], rows[..., 1:], 0)  # the book's zeros for unassigned anchors
    mask = assigned[..., None].to(anchors.dtype).expand(batch, num_anchors, 4)
    offsets = offset_boxes(anchors, assigned_bb) * mask
    return offsets.reshape(batch, 4 * num_anchors), mask.reshape(batch, 4 * num_anchors), class_labels


# --- prediction (book section 14.4.4) ------------------------------------------------------------


def multibox_detection(cls_probs: Tensor, offset_preds: Tensor, anchors: Tensor, nms_threshold: float = 0.5,
                       pos_threshold: float = 0.009999999) -> Tensor:
    """The book's predictions: one row per anchor, kept ones first.

    Each anchor predicts its most probable non-background class (the lowest
    on ties) and the box offset_inverse(anchor, offsets); class-agnostic NMS
    (detkit.ops.nms, IoU > nms_threshold suppresses) keeps some. Rows are the
    kept anchors by decreasing score, then the others by anchor index with
    class -1. A row whose score is below pos_threshold also gets class -1,
    and score 1 - score (the book's background confidence).

    Args:
        cls_probs: Tensor[B, C+1, A], class probabilities, background first.
        offset_preds: Tensor[B, 4A], offsets as offset_boxes makes them.
        anchors: Tensor[1, A, 4] (or [A, 4]) (x1, y1, x2, y2).
        nms_threshold: in [0, 1].
        pos_threshold: the book's 0.009999999 keeps every score >= 0.01.

    Returns:
        Tensor[B, A, 6]: (class or -1, score, x1, y1, x2, y2) per row, classes
        counted from 0 without the background.
    """
    anchors = _check_detection_inputs(cls_probs, offset_preds, anchors)
    nms_threshold = check_fraction(nms_threshold, "nms_threshold")
    pos_threshold = float(pos_threshold)
    dtype = torch.promote_types(cls_probs.dtype, torch.promote_types(offset_preds.dtype, anchors.dtype))
    out = [_detect_one(probs, offsets.reshape(-1, 4), anchors, nms_threshold, pos_threshold).to(dtype)
           for probs, offsets in zip(cls_probs.detach(), offset_preds.detach())]
    return torch.stack(out) if out else torch.zeros((0, anchors.shape[0], 6), dtype=dtype, device=anchors.device)


def _check_detection_inputs(cls_probs: Tensor, offset_preds: Tensor, anchors: Tensor) -> Tensor:
    check_float_tensor(cls_probs, "cls_probs", ndim=3)
    check_float_tensor(offset_preds, "offset_preds", ndim=2)
    check_float_tensor(anchors, "anchors", last_dim=4)
    anchors = anchors[0] if anchors.dim() == 3 and anchors.shape[0] == 1 else anchors
    check_boxes(anchors, "anchors")
    batch, classes, num_anchors = cls_probs.shape
    if classes < 2:
        raise ValueError(f"cls_probs must have shape [B, C+1, A] with C >= 1, got {tuple(cls_probs.shape)}")
    if num_anchors != anchors.shape[0] or tuple(offset_preds.shape) != (batch, 4 * num_anchors):
        raise ValueError(f"for {anchors.shape[0]} anchors, cls_probs must be [B, C+1, {anchors.shape[0]}] and "
                         f"offset_preds [B, {4 * anchors.shape[0]}]; got {tuple(cls_probs.shape)} and "
                         f"{tuple(offset_preds.shape)}")
    check_finite(cls_probs, "cls_probs")
    check_finite(offset_preds, "offset_preds")
    return anchors.detach()


def _detect_one(cls_prob: Tensor, offset_pred: Tensor, anchors: Tensor, nms_threshold: float,
                pos_threshold: float) -> Tensor:
    """One image: cls_prob [C+1, A], offset_pred [A, 4] -> [A, 6]."""
    conf, class_id = torch.max(cls_prob[1:], 0)
    predicted_bb = offset_inverse(anchors, offset_pred.to(anchors.dtype))
    keep = nms(predicted_bb, conf.to(predicted_bb.dtype), nms_threshold)
    kept = torch.zeros(conf.shape[0], dtype=torch.bool, device=conf.device)
    kept[keep] = True
    non_keep = torch.where(~kept)[0]  # ascending, as the book's torch.unique leaves them
    order = torch.cat((keep, non_keep))
    class_id = torch.where(kept, class_id, -1)[order]
    conf, predicted_bb = conf[order], predicted_bb[order]
    below = conf < pos_threshold
    class_id = torch.where(below, -1, class_id)
    conf = torch.where(below, 1 - conf, conf)
    dtype = torch.promote_types(conf.dtype, predicted_bb.dtype)
    return torch.cat((class_id[:, None].to(dtype), conf[:, None].to(dtype), predicted_bb.to(dtype)), dim=1)
