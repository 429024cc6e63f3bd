"""Matching predictions (anchors, proposals) to ground truth: torchvision's
Matcher and SSDMatcher (numba), and `ssd_assign`, the whole SSD target
assignment (IoU, matching with each GT's best anchor forced, encoding) in one
C++ kernel: it is IoU-bound like box_iou, and GCC vectorises its loops."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor

from . import _ext
from ._checks import HALF_DTYPES, as_numpy, check_boxes, check_finite, check_float_tensor, check_fraction, upcast
from .boxes import _box_iou_reference
from .coder import _encode_reference

for _op in ("Matcher", "SSDMatcher"):
    _ext.register(_op, "numba")
_ext.register("ssd_assign", "cpp")


def _check_quality(match_quality_matrix: Tensor) -> None:
    check_float_tensor(match_quality_matrix, "match_quality_matrix", ndim=2, half=True)
    check_finite(match_quality_matrix, "match_quality_matrix")


class Matcher:
    """Assigns each prediction (column) its best ground truth (row).

    matches[j] is the row with the highest quality in column j (the first on
    ties), or BELOW_LOW_THRESHOLD (-1) when that quality is < low_threshold,
    or BETWEEN_THRESHOLDS (-2) when it is in [low_threshold, high_threshold).
    With allow_low_quality_matches, every column that is some row's best
    (ties included) keeps its best row even below the thresholds.

    Unlike torchvision, an empty ground truth is not an error: every column
    is BELOW_LOW_THRESHOLD (an image with no objects is all background).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        high_threshold = check_fraction(high_threshold, "high_threshold")
        low_threshold = check_fraction(low_threshold, "low_threshold")
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """match_quality_matrix: Tensor[G, A] (e.g. IoU of G GT x A anchors)
        -> int64 Tensor[A]."""
        _check_quality(match_quality_matrix)
        if match_quality_matrix.dtype in HALF_DTYPES:  # the kernels take float32
            return self._thresholds_in(match_quality_matrix.dtype)(upcast(match_quality_matrix))
        g, a = match_quality_matrix.shape
        if g == 0 or a == 0:
            return torch.full((a,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=match_quality_matrix.device)
        if not _ext.compiled("numba", match_quality_matrix):
            return self._reference(match_quality_matrix)
        return self._compiled(as_numpy(match_quality_matrix))

    def _thresholds_in(self, dtype: torch.dtype) -> "Matcher":
        """A copy with the thresholds rounded to `dtype`: torch compares a
        float16/bfloat16 tensor with a Python float rounded to its dtype, and so
        does torchvision's Matcher (0.4 is 0.39990234375 in float16)."""
        rounded = copy.copy(self)
        rounded.high_threshold = float(torch.tensor(self.high_threshold, dtype=dtype))
        rounded.low_threshold = float(torch.tensor(self.low_threshold, dtype=dtype))
        return rounded

    def _compiled(self, quality) -> Tensor:
        scalar = quality.dtype.type
        matches = _ext.numba_kernels.match(
            quality, scalar(self.high_threshold), scalar(self.low_threshold), self.allow_low_quality_matches
        )
        return torch.from_numpy(matches)

    def _reference(self, quality: Tensor) -> Tensor:
        values, matches = quality.max(dim=0)
        best = matches.clone()
        matches[values < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(values >= self.low_threshold) & (values < self.high_threshold)] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            top_per_row = quality.max(dim=1).values
            columns = torch.where(quality == top_per_row[:, None])[1]
            matches[columns] = best[columns]
        return matches


class SSDMatcher(Matcher):
    """Matcher(threshold, threshold), then each GT row's best column (the first
    on ties) is matched to that row, so every GT gets at least one anchor."""

    def __init__(self, threshold: float):
        super().__init__(threshold, threshold, allow_low_quality_matches=False)

    def _compiled(self, quality) -> Tensor:
        matches = super()._compiled(quality)
        _ext.numba_kernels.force_best_columns(quality, matches.numpy())
        return matches

    def _reference(self, quality: Tensor) -> Tensor:
        matches = super()._reference(quality)
        best_columns = quality.max(dim=1).indices
        matches[best_columns] = torch.arange(len(best_columns), device=matches.device)
        return matches


def _check_labels(gt_labels: Tensor, n: int) -> None:
    if not isinstance(gt_labels, Tensor) or gt_labels.dtype.is_floating_point or gt_labels.dtype == torch.bool:
        raise TypeError(f"gt_labels must be an integer tensor, got {getattr(gt_labels, 'dtype', type(gt_labels).__name__)}")
    if gt_labels.shape != (n,):
        raise ValueError(f"gt_labels must have shape ({n},) like gt_boxes, got {tuple(gt_labels.shape)}")
    if n and bool((gt_labels < 1).any()):
        index = int((gt_labels < 1).nonzero()[0, 0])
        raise ValueError(f"gt_labels[{index}] is {int(gt_labels[index])}; object labels start at 1 (0 is background)")


def _ssd_assign_reference(
    anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float, weights: Sequence[float]
) -> tuple[Tensor, Tensor]:
    targets = torch.zeros_like(anchors)
    labels = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
    if gt_boxes.shape[0] == 0:
        return targets, labels
    matches = SSDMatcher(iou_threshold)._reference(_box_iou_reference(gt_boxes, anchors))
    fg = matches >= 0
    labels[fg] = gt_labels[matches[fg]].long()
    targets[fg] = _encode_reference(gt_boxes[matches[fg]], anchors[fg], weights)
    return targets, labels


def ssd_assign(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_threshold: float = 0.5,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> tuple[Tensor, Tensor]:
    """SSD training targets for one image, fused: box_iou(gt_boxes, anchors),
    SSDMatcher(iou_threshold) and BoxCoder(weights).encode of the matches.

    Args:
        anchors: Tensor[A, 4] default boxes (x1, y1, x2, y2), positive size.
        gt_boxes: Tensor[G, 4] (x1, y1, x2, y2), positive size.
        gt_labels: integer Tensor[G], object labels >= 1.

    Returns:
        box_targets: Tensor[A, 4] of anchors' dtype, encoded offsets (computed
            in float32 for float16/bfloat16 anchors); 0 for background anchors.
        labels: int64 Tensor[A]; the matched GT's label, 0 = background.
    """
    boxes = check_boxes(anchors, "anchors", positive=True, half=True)
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", positive=True, half=True).to(boxes.dtype)
    _check_labels(gt_labels, gt_boxes.shape[0])
    iou_threshold = check_fraction(iou_threshold, "iou_threshold")
    if not _ext.compiled("cpp", boxes, gt_boxes, gt_labels):
        targets, labels = _ssd_assign_reference(boxes, gt_boxes, gt_labels, iou_threshold, weights)
        return targets.to(anchors.dtype), labels
    targets, labels = _ext.cpp.ssd_assign(
        as_numpy(boxes), as_numpy(gt_boxes), as_numpy(gt_labels.long()), iou_threshold, tuple(weights)
    )
    return torch.from_numpy(targets).to(anchors.dtype), torch.from_numpy(labels)
