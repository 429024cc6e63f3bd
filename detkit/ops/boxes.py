"""Box utilities: format conversion, area, clipping, filtering, IoU and GIoU.

Boxes are float `Tensor[N, 4]`; xyxy means (x1, y1, x2, y2) in absolute
pixels with x2 >= x1 and y2 >= y1. Each op has a torch reference
(`_*_reference`, the spec; used for CUDA and autograd) and one compiled CPU
kernel, both float32/float64: float16/bfloat16 boxes (what autocast gives) are
computed in float32. Results match torchvision.ops, except that a pair of
zero-area boxes has IoU 0 here where torchvision returns 0/0 = NaN.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _ext
from ._checks import as_numpy, check_boxes, check_float_tensor

_FORMATS = ("xyxy", "xywh", "cxcywh")

for _op, _kernel in [
    ("box_convert", "numba"),
    ("box_area", "numba"),
    ("clip_boxes_to_image", "numba"),
    ("remove_small_boxes", "numba"),
    ("box_iou", "cpp"),
    ("generalized_box_iou", "cpp"),
]:
    _ext.register(_op, _kernel)


def _check_format(fmt: str, name: str) -> None:
    if fmt not in _FORMATS:
        raise ValueError(f"{name} must be one of {_FORMATS}, got {fmt!r}")


# --- box_convert ---------------------------------------------------------------------------------


def _to_xyxy_reference(boxes: Tensor, fmt: str) -> Tensor:
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((a, b, a + c, b + d), dim=-1)
    if fmt == "cxcywh":
        return torch.stack((a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d), dim=-1)
    return boxes


def _from_xyxy_reference(boxes: Tensor, fmt: str) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    if fmt == "cxcywh":
        return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)
    return boxes


def _box_convert_reference(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy_reference(_to_xyxy_reference(boxes, in_fmt), out_fmt)


def _convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """box_convert of checked float32/float64 boxes, in_fmt != out_fmt."""
    if not _ext.compiled("numba", boxes):
        return _box_convert_reference(boxes, in_fmt, out_fmt)
    flat = as_numpy(boxes.reshape(-1, 4))
    codes = {fmt: i for i, fmt in enumerate(_FORMATS)}
    out = _ext.numba_kernels.box_convert(flat, codes[in_fmt], codes[out_fmt], flat.dtype.type(0.5))
    return torch.from_numpy(out).reshape(boxes.shape)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Converts boxes: Tensor[..., 4] between "xyxy", "xywh" and "cxcywh".

    Returns a new Tensor[..., 4] of boxes' dtype (a copy when the formats are
    equal); float16/bfloat16 boxes are converted in float32.
    """
    _check_format(in_fmt, "in_fmt")
    _check_format(out_fmt, "out_fmt")
    checked = check_boxes(boxes, "boxes", fmt=in_fmt, ndim=None, half=True)
    if in_fmt == out_fmt:
        return boxes.clone()
    return _convert(checked, in_fmt, out_fmt).to(boxes.dtype)


# --- box_area, clip_boxes_to_image, remove_small_boxes ------------------------------------------


def _box_area_reference(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Areas of boxes: Tensor[..., 4] in `fmt` -> Tensor[...].

    float16/bfloat16 boxes give float32 areas, as torchvision's (a 256 x 256
    box's area is past float16's largest value).
    """
    _check_format(fmt, "fmt")
    boxes = check_boxes(boxes, "boxes", fmt=fmt, ndim=None, half=True)
    if not _ext.compiled("numba", boxes):
        return _box_area_reference(boxes, fmt)
    flat = as_numpy(boxes.reshape(-1, 4))
    return torch.from_numpy(_ext.numba_kernels.box_area(flat, fmt == "xyxy")).reshape(boxes.shape[:-1])


def _image_size(size: tuple[int, int]) -> tuple[float, float]:
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = (float(v) for v in size)
    if not (height >= 0 and width >= 0):
        raise ValueError(f"size must be non-negative (height, width), got {size!r}")
    return height, width


def _clip_boxes_to_image_reference(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clips xyxy boxes: Tensor[..., 4] to an image of size (height, width);
    returns boxes' dtype."""
    height, width = _image_size(size)
    checked = check_boxes(boxes, "boxes", ndim=None, half=True)
    if not _ext.compiled("numba", checked):
        return _clip_boxes_to_image_reference(checked, (height, width)).to(boxes.dtype)
    flat = as_numpy(checked.reshape(-1, 4))
    dtype = flat.dtype.type
    out = _ext.numba_kernels.clip_boxes(flat, dtype(height), dtype(width), dtype(0))
    return torch.from_numpy(out).reshape(boxes.shape).to(boxes.dtype)


def _remove_small_boxes_reference(boxes: Tensor, min_size: float) -> Tensor:
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64 Tensor[K]) of the xyxy boxes: Tensor[N, 4] whose width
    and height are both >= min_size (widths of float16/bfloat16 boxes are
    taken in float32, exactly)."""
    boxes = check_boxes(boxes, "boxes", half=True)
    if not _ext.compiled("numba", boxes):
        return _remove_small_boxes_reference(boxes, min_size)
    flat = as_numpy(boxes)
    return torch.from_numpy(_ext.numba_kernels.remove_small_boxes(flat, flat.dtype.type(min_size)))


# --- IoU -----------------------------------------------------------------------------------------


def _inter_union_reference(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area1[:, None] + area2[None, :] - inter


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with den == 0 (where num is also 0) giving 0, not NaN."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def _box_iou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    inter, union = _inter_union_reference(boxes1, boxes2)
    return _safe_div(inter, union)


def _generalized_box_iou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    inter, union = _inter_union_reference(boxes1, boxes2)
    iou = _safe_div(inter, union)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(enclosing - union, enclosing)


def _pairwise_boxes(boxes: Tensor, name: str, fmt: str) -> Tensor:
    """Checked boxes: Tensor[..., N, 4] in `fmt` -> xyxy, float32 for float16/bfloat16."""
    check_float_tensor(boxes, name, last_dim=4, half=True)
    if boxes.dim() < 2:
        raise ValueError(f"{name} must have shape [..., N, 4], got {tuple(boxes.shape)}")
    boxes = check_boxes(boxes, name, fmt=fmt, ndim=None, half=True)
    return boxes if fmt == "xyxy" else _convert(boxes, fmt, "xyxy")


def _pairwise_one(boxes1: Tensor, boxes2: Tensor, kernel: str, reference) -> Tensor:
    """[N, 4] x [M, 4] -> [N, M] on the C++ kernel, or the reference."""
    if not _ext.compiled("cpp", boxes1, boxes2):
        return reference(boxes1, boxes2)
    fn = getattr(_ext.cpp, kernel)
    return torch.from_numpy(fn(as_numpy(boxes1), as_numpy(boxes2), _ext.num_threads()))


def _pairwise(boxes1: Tensor, boxes2: Tensor, kernel: str, reference, fmt: str = "xyxy") -> Tensor:
    """[..., N, 4] x [..., M, 4] -> [..., N, M], leading dims broadcast as torchvision's."""
    _check_format(fmt, "fmt")
    boxes1, boxes2 = _pairwise_boxes(boxes1, "boxes1", fmt), _pairwise_boxes(boxes2, "boxes2", fmt)
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    if boxes1.dim() == 2 and boxes2.dim() == 2:
        return _pairwise_one(boxes1, boxes2, kernel, reference)
    try:
        batch = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading dimensions of boxes1 {tuple(boxes1.shape)} and boxes2 "
                         f"{tuple(boxes2.shape)} do not broadcast") from None
    n, m, count = boxes1.shape[-2], boxes2.shape[-2], math.prod(batch)
    flat1 = boxes1.expand(*batch, n, 4).reshape(count, n, 4)
    flat2 = boxes2.expand(*batch, m, 4).reshape(count, m, 4)
    out = [_pairwise_one(a, b, kernel, reference) for a, b in zip(flat1, flat2)]
    return (torch.stack(out) if out else boxes1.new_empty((0, n, m))).reshape(*batch, n, m)


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise IoU of boxes1: Tensor[..., N, 4] and boxes2: Tensor[..., M, 4]
    in `fmt` ("xyxy", "xywh" or "cxcywh") -> Tensor[..., N, M].

    Leading dimensions broadcast, as in torchvision >= 0.24. Pairs with no
    intersection (zero-area boxes included) have IoU 0. float16/bfloat16
    boxes give float32, as torchvision's. Other formats are converted to xyxy
    first, so they match torchvision's within a float rounding, not bit for bit.
    """
    return _pairwise(boxes1, boxes2, "box_iou", _box_iou_reference, fmt)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al., 2019) of xyxy boxes1:
    Tensor[..., N, 4] and boxes2: Tensor[..., M, 4] -> Tensor[..., N, M], in
    [-1, 1]; leading dimensions and dtypes as in box_iou."""
    return _pairwise(boxes1, boxes2, "generalized_box_iou", _generalized_box_iou_reference)
