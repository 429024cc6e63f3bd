"""BoxCoder: the (dx, dy, dw, dh) box parametrisation of R-CNN and SSD,
as torchvision.models.detection._utils.BoxCoder, with fused numba kernels.

float16/bfloat16 boxes and codes are computed in float32 and returned in the
dtype torchvision's arithmetic gives them."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

from . import _ext
from ._checks import as_numpy, check_boxes, check_finite, check_float_tensor, upcast

_ext.register("BoxCoder", "numba")

Boxes = Union[Tensor, Sequence[Tensor]]


def _encode_reference(reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float]) -> Tensor:
    wx, wy, ww, wh = torch.as_tensor(weights, dtype=reference_boxes.dtype, device=reference_boxes.device)
    ex_w = proposals[:, 2] - proposals[:, 0]
    ex_h = proposals[:, 3] - proposals[:, 1]
    ex_cx = proposals[:, 0] + 0.5 * ex_w
    ex_cy = proposals[:, 1] + 0.5 * ex_h
    gt_w = reference_boxes[:, 2] - reference_boxes[:, 0]
    gt_h = reference_boxes[:, 3] - reference_boxes[:, 1]
    gt_cx = reference_boxes[:, 0] + 0.5 * gt_w
    gt_cy = reference_boxes[:, 1] + 0.5 * gt_h
    dx = wx * (gt_cx - ex_cx) / ex_w
    dy = wy * (gt_cy - ex_cy) / ex_h
    dw = ww * torch.log(gt_w / ex_w)
    dh = wh * torch.log(gt_h / ex_h)
    return torch.stack((dx, dy, dw, dh), dim=1)


def _decode_reference(rel_codes: Tensor, boxes: Tensor, weights: Sequence[float], clip: float) -> Tensor:
    boxes = boxes.to(rel_codes.dtype)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    wx, wy, ww, wh = weights
    dx = rel_codes[:, 0::4] / wx
    dy = rel_codes[:, 1::4] / wy
    dw = torch.clamp(rel_codes[:, 2::4] / ww, max=clip)
    dh = torch.clamp(rel_codes[:, 3::4] / wh, max=clip)
    pcx = dx * w[:, None] + cx[:, None]
    pcy = dy * h[:, None] + cy[:, None]
    half_w = 0.5 * (torch.exp(dw) * w[:, None])
    half_h = 0.5 * (torch.exp(dh) * h[:, None])
    return torch.stack((pcx - half_w, pcy - half_h, pcx + half_w, pcy + half_h), dim=2).flatten(1)


class BoxCoder:
    """Encodes boxes as offsets (dx, dy, dw, dh) from reference boxes, and back.

    dx = wx * (gx - px) / pw, dw = ww * log(gw / pw) (and y, h alike), for a
    target box g and a proposal / anchor p in centre-size form.

    Args:
        weights: (wx, wy, ww, wh), e.g. (1, 1, 1, 1) for the RPN,
            (10, 10, 5, 5) for R-CNN heads and SSD.
        bbox_xform_clip: upper bound on dw, dh before exp() when decoding.
    """

    def __init__(self, weights: Sequence[float], bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4 or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"weights must be 4 positive finite numbers, got {tuple(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)
        self._weights_np = {}  # dtype -> weights as a numpy array, for the kernels

    def _kernel_weights(self, dtype: torch.dtype):
        if dtype not in self._weights_np:
            self._weights_np[dtype] = torch.tensor(self.weights, dtype=dtype).numpy()
        return self._weights_np[dtype]

    def encode(self, reference_boxes: Boxes, proposals: Boxes) -> Union[Tensor, tuple[Tensor, ...]]:
        """Offsets of reference_boxes (the targets) from proposals.

        Accepts Tensor[N, 4] pairs (returns Tensor[N, 4]) or per-image lists
        of them, as torchvision's encode (returns a tuple, one per image).
        """
        if isinstance(reference_boxes, Tensor):
            return self.encode_single(reference_boxes, proposals)
        counts = [len(b) for b in reference_boxes]
        return self.encode_single(torch.cat(list(reference_boxes)), torch.cat(list(proposals))).split(counts, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """reference_boxes, proposals: Tensor[N, 4] (x1, y1, x2, y2) -> Tensor[N, 4]
        of their promoted dtype, as torchvision's arithmetic gives.

        A reference box of zero width (height) gets dw (dh) = -inf, as in
        torchvision: its RPN and RoIHeads encode all-zero boxes for an image
        without objects, and use only the rows of positive matches.
        """
        checked_reference = check_boxes(reference_boxes, "reference_boxes", half=True)
        # Proposals are divided by: zero sizes would give inf or nan offsets.
        checked_proposals = check_boxes(proposals, "proposals", positive=True, half=True)
        if reference_boxes.shape != proposals.shape:
            raise ValueError(
                f"reference_boxes {tuple(reference_boxes.shape)} and proposals {tuple(proposals.shape)} differ in shape"
            )
        out_dtype = torch.promote_types(reference_boxes.dtype, proposals.dtype)
        dtype = torch.promote_types(checked_reference.dtype, checked_proposals.dtype)
        reference_boxes, proposals = checked_reference.to(dtype), checked_proposals.to(dtype)
        if not _ext.compiled("numba", reference_boxes, proposals):
            return _encode_reference(reference_boxes, proposals, self.weights).to(out_dtype)
        kernels = _ext.numba_kernels
        ref = as_numpy(reference_boxes)
        weights = self._kernel_weights(dtype)
        codes, ratios = kernels.encode_prepare(ref, as_numpy(proposals), weights, ref.dtype.type(0.5))
        log_ratios = torch.from_numpy(ratios).log_().numpy()
        return torch.from_numpy(kernels.encode_finish(codes, log_ratios, weights)).to(out_dtype)

    def decode(self, rel_codes: Tensor, boxes: Boxes) -> Tensor:
        """Boxes from offsets, as torchvision's decode.

        Args:
            rel_codes: Tensor[N, 4 * K] (or anything reshapeable to it).
            boxes: Tensor[N, 4] reference boxes, or a per-image list of them.

        Returns:
            Tensor[N, K, 4] (x1, y1, x2, y2).
        """
        concat = boxes if isinstance(boxes, Tensor) else torch.cat(list(boxes))
        n = concat.shape[0]
        rel_codes = rel_codes.reshape(n, -1) if n > 0 else rel_codes.reshape(0, rel_codes.shape[-1])
        decoded = self.decode_single(rel_codes, concat)
        return decoded.reshape(n, decoded.shape[1] // 4, 4)  # [N, K, 4], also for N = 0

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """rel_codes: Tensor[N, 4 * K], boxes: Tensor[N, 4] -> Tensor[N, 4 * K]
        of rel_codes' dtype (boxes are converted to it, as in torchvision)."""
        check_float_tensor(rel_codes, "rel_codes", ndim=2, half=True)
        out_dtype = rel_codes.dtype
        boxes = check_boxes(boxes, "boxes", half=True)
        if rel_codes.shape[0] != boxes.shape[0] or rel_codes.shape[1] % 4 != 0:
            raise ValueError(
                f"rel_codes must have shape [{boxes.shape[0]}, 4 * K] for {boxes.shape[0]} boxes, "
                f"got {tuple(rel_codes.shape)}"
            )
        rel_codes = upcast(rel_codes)
        check_finite(rel_codes, "rel_codes")
        boxes = boxes.to(rel_codes.dtype)
        if not _ext.compiled("numba", rel_codes, boxes):
            return _decode_reference(rel_codes, boxes, self.weights, self.bbox_xform_clip).to(out_dtype)
        kernels = _ext.numba_kernels
        codes = as_numpy(rel_codes)
        scalar = codes.dtype.type
        weights = self._kernel_weights(rel_codes.dtype)
        exp_dwh = torch.from_numpy(kernels.decode_prepare(codes, weights, scalar(self.bbox_xform_clip))).exp_()
        out = kernels.decode_finish(codes, as_numpy(boxes), exp_dwh.numpy(), weights, scalar(0.5))
        return torch.from_numpy(out).to(out_dtype)
