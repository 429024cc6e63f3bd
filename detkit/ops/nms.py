"""Non-maximum suppression: nms, batched_nms (per category) and soft_nms.

Kept indices are int64 and sorted by decreasing score; equal scores keep the
lower index first, on every backend (torchvision's order for ties depends on
an unstable sort). Otherwise the kept indices are torchvision.ops'.
float16/bfloat16 boxes and scores are compared in float32, as torchvision's
autocast wrapper of nms does (its CPU kernel itself refuses them).
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from . import _ext
from ._checks import as_numpy, check_boxes, check_count, check_fraction, check_scores
from .boxes import _box_iou_reference

for _op in ("nms", "batched_nms", "soft_nms"):
    _ext.register(_op, "cpp")

# torchvision's nms and batched_nms, taken now: a user may put detkit's in their
# place (torchvision.ops.nms = detkit.ops.nms), and detkit's fallbacks looking
# them up at call time would then call themselves.
_torchvision_nms = torchvision.ops.boxes.nms
_torchvision_batched_nms = torchvision.ops.boxes.batched_nms


def _descending(scores: Tensor) -> Tensor:
    """Indices by decreasing score, lower index first on ties."""
    return torch.sort(scores, descending=True, stable=True).indices


def _check_nms_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor, float]:
    """Validates the shared arguments and returns (boxes, scores, iou_threshold),
    float16/bfloat16 as float32; NMS has no gradient, so callers detach."""
    checked_boxes = check_boxes(boxes, "boxes", half=True)
    check_count(boxes.shape[0], "boxes")
    checked_scores = check_scores(scores, boxes.shape[0], half=True)
    if checked_scores.dtype != checked_boxes.dtype:  # torchvision's kernels (and autocast) refuse these too
        raise TypeError(f"scores ({scores.dtype}) must have the dtype of boxes ({boxes.dtype}); "
                        "float16 and bfloat16 count as float32")
    return checked_boxes, checked_scores, check_fraction(iou_threshold, "iou_threshold")


def _nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """The spec: greedy NMS in score order, comparing IoU > iou_threshold in
    float64 as torchvision's kernel does."""
    order = _descending(scores)
    sorted_boxes = boxes[order]
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        iou = _box_iou_reference(sorted_boxes[i : i + 1], sorted_boxes[i + 1 :])[0]
        alive[i + 1 :] &= ~(iou.double() > iou_threshold)
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def _nms_torchvision(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's kernel (CPU or CUDA) on strictly decreasing rank scores,
    so that ties resolve as in detkit's kernel."""
    order = _descending(scores)
    ranks = torch.arange(len(order), 0, -1, dtype=boxes.dtype, device=boxes.device)
    return order[_torchvision_nms(boxes[order], ranks, iou_threshold)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        scores: Tensor[N], same dtype as boxes (float16/bfloat16 count as float32).
        iou_threshold: boxes with IoU > iou_threshold with a kept, higher-scoring
            box are discarded; in [0, 1].

    Returns:
        int64 Tensor[K]: indices of the kept boxes, by decreasing score.
    """
    boxes, scores, iou_threshold = _check_nms_inputs(boxes, scores, iou_threshold)
    # Traced before the empty case: a Python branch on the box count would freeze the example's answer
    # into the graph. ONNX NonMaxSuppression takes zero boxes; ties may order differently.
    if _ext._tracing():
        return _torchvision_nms(boxes.detach(), scores.detach(), iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes, scores = boxes.detach(), scores.detach()
    if not _ext.compiled("cpp", boxes, scores):
        return _nms_torchvision(boxes, scores, iou_threshold)
    return torch.from_numpy(_ext.cpp.nms(as_numpy(boxes), as_numpy(scores), iou_threshold))


def _check_idxs(idxs: Tensor, n: int) -> None:
    if not isinstance(idxs, Tensor) or idxs.dtype.is_floating_point or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer tensor, got {getattr(idxs, 'dtype', type(idxs).__name__)}")
    if idxs.shape != (n,):
        raise ValueError(f"idxs must have shape ({n},) like boxes, got {tuple(idxs.shape)}")


def _batched_nms_reference(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    kept = [torch.empty(0, dtype=torch.int64, device=boxes.device)]
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        kept.append(members[_nms_reference(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(kept).sort().values
    return keep[_descending(scores[keep])]


def _batched_nms_torchvision(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    order = _descending(scores)
    ranks = torch.arange(len(order), 0, -1, dtype=boxes.dtype, device=boxes.device)
    return order[_torchvision_batched_nms(boxes[order], ranks, idxs[order], iou_threshold)]


def _batched_nms_traced(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """The coordinate trick under tracing: each category's boxes shifted
    apart by more than all boxes span, then one NMS. Branch-free, so the
    graph holds no If on the box count: OpenVINO's If returned a stale box
    for zero boxes. A 0 joins the extremes, so that they exist (and bound
    the span from outside) when there are no boxes."""
    coordinates = torch.cat((boxes.flatten(), boxes.new_zeros(1)))
    span = coordinates.max() - coordinates.min() + 1
    return _torchvision_nms(boxes + (idxs.to(boxes) * span)[:, None], scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes of different `idxs` never suppress
    each other.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        scores: Tensor[N], same dtype as boxes (float16/bfloat16 count as float32).
        idxs: integer Tensor[N], the category of each box.
        iou_threshold: in [0, 1], as in `nms`.

    Returns:
        int64 Tensor[K]: indices of the kept boxes, by decreasing score.
    """
    boxes, scores, iou_threshold = _check_nms_inputs(boxes, scores, iou_threshold)
    _check_idxs(idxs, boxes.shape[0])
    if _ext._tracing():  # before the empty case, which would freeze the example's answer (see nms)
        return _batched_nms_traced(boxes.detach(), scores.detach(), idxs, iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes, scores = boxes.detach(), scores.detach()
    if not _ext.compiled("cpp", boxes, scores, idxs):
        return _batched_nms_torchvision(boxes, scores, idxs, iou_threshold)
    keep = _ext.cpp.batched_nms(as_numpy(boxes), as_numpy(scores), as_numpy(idxs.long()), iou_threshold)
    return torch.from_numpy(keep)


_SOFT_NMS_METHODS = ("gaussian", "linear")


def _soft_nms_reference(
    boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float, score_threshold: float, gaussian: bool
) -> tuple[Tensor, Tensor]:
    """The spec: select the highest current score (lowest index on ties),
    decay the others by their IoU with it, drop those below the threshold.
    Scores are decayed in float64."""
    index = torch.where(scores.double() >= score_threshold)[0]
    live_boxes, live_scores = boxes[index], scores[index].double()
    keep, kept_scores = [], []
    while index.numel() > 0:
        top = live_scores.max()
        best = int(torch.where(live_scores == top)[0][0])  # index ascending: first is lowest
        keep.append(index[best])
        kept_scores.append(live_scores[best])
        others = torch.arange(index.numel(), device=index.device) != best
        iou = _box_iou_reference(live_boxes[best : best + 1], live_boxes[others])[0].double()
        decayed = live_scores[others]
        if gaussian:
            decayed = decayed * torch.exp(-(iou * iou) / sigma)
        else:
            decayed = torch.where(iou > iou_threshold, decayed * (1.0 - iou), decayed)
        alive = decayed >= score_threshold
        index, live_boxes, live_scores = index[others][alive], live_boxes[others][alive], decayed[alive]
    if not keep:
        return torch.empty(0, dtype=torch.int64, device=boxes.device), scores.new_empty(0)
    return torch.stack(keep), torch.stack(kept_scores).to(scores.dtype)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., "Improving Object Detection With One Line of
    Code", ICCV 2017): overlapping boxes have their scores decayed instead of
    being discarded.

    Repeatedly selects the box with the highest current score, then multiplies
    every remaining score by exp(-iou^2 / sigma) ("gaussian") or, where
    iou > iou_threshold, by (1 - iou) ("linear"); boxes whose score falls
    below score_threshold are dropped. Boxes that start below it are ignored.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        scores: Tensor[N], same dtype as boxes (float16/bfloat16 count as float32).
        iou_threshold: in [0, 1]; used by the linear method.
        sigma: > 0; width of the gaussian decay.
        score_threshold: in [0, 1].
        method: "gaussian" or "linear".

    Returns:
        keep: int64 Tensor[K], selected indices in selection order.
        rescored: Tensor[K], their decayed scores (non-increasing), in scores' dtype.
    """
    boxes, checked_scores, iou_threshold = _check_nms_inputs(boxes, scores, iou_threshold)
    dtype, scores = scores.dtype, checked_scores  # rescored in the caller's dtype
    score_threshold = check_fraction(score_threshold, "score_threshold")
    if method not in _SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {_SOFT_NMS_METHODS}, got {method!r}")
    sigma = float(sigma)
    if not (0.0 < sigma < float("inf")):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")
    gaussian = method == "gaussian"
    boxes, scores = boxes.detach(), scores.detach()
    if not _ext.compiled("cpp", boxes, scores):
        keep, rescored = _soft_nms_reference(boxes, scores, iou_threshold, sigma, score_threshold, gaussian)
        return keep, rescored.to(dtype)
    keep, rescored = _ext.cpp.soft_nms(
        as_numpy(boxes), as_numpy(scores), iou_threshold, sigma, score_threshold, gaussian
    )
    return torch.from_numpy(keep), torch.from_numpy(rescored).to(dtype)
