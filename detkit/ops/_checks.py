"""Argument checks shared by every op, so that bad input gets one clear error
naming the argument (and the first bad row) on every backend."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _ext

FLOAT_DTYPES = (torch.float32, torch.float64)
# What autocast hands the ops (bfloat16 on the CPU, float16 on a GPU). Ops that
# take them compute in float32, as torchvision's autocast wrappers of nms and
# roi_align do: the conversion is exact, and the kernels are float32/float64 only.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 (exact); other dtypes unchanged (no copy)."""
    return t.float() if t.dtype in HALF_DTYPES else t


def check_float_tensor(
    t: Tensor, name: str, last_dim: Optional[int] = None, ndim: Optional[int] = None, half: bool = False
) -> None:
    """Raises TypeError unless `t` is a float32/float64 tensor (also float16/bfloat16
    with `half`) of the given shape."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES + (HALF_DTYPES if half else ()):
        kinds = "float16, bfloat16, float32 or float64" if half else "float32 or float64"
        raise TypeError(f"{name} must be a {kinds} tensor, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if last_dim is not None and (t.dim() == 0 or t.shape[-1] != last_dim):
        raise ValueError(f"{name} must have shape [..., {last_dim}], got {tuple(t.shape)}")


def check_boxes(
    boxes: Tensor, name: str, fmt: str = "xyxy", ndim: Optional[int] = 2, positive: bool = False,
    half: bool = False,
) -> Tensor:
    """Checks boxes: Tensor[N, 4] (or [..., 4] with ndim=None) in `fmt`, and
    returns them as the kernels take them: float16/bfloat16 (allowed with
    `half`) as float32, other dtypes unchanged.

    Raises TypeError for other dtypes and ValueError, naming `name` and the
    first bad row, for non-finite values or inverted boxes (x2 < x1 or y2 < y1
    in xyxy; negative width or height in xywh/cxcywh), and with `positive`
    (xyxy only) for boxes of zero width or height.
    """
    check_float_tensor(boxes, name, last_dim=4, ndim=ndim, half=half)
    boxes = upcast(boxes)
    if boxes.numel() == 0:
        return boxes
    flat = boxes.reshape(-1, 4)
    index, reason = _first_invalid_box(flat, corners=(fmt == "xyxy"), positive=positive)
    if index < 0:
        return boxes
    row = [float(v) for v in flat[index].tolist()]
    if reason == 1:
        raise ValueError(f"{name}[{index}] is not finite: {row}")
    if reason == 3:
        raise ValueError(f"{name}[{index}] has zero width or height: {row}")
    what = "x2 < x1 or y2 < y1" if fmt == "xyxy" else "a negative width or height"
    raise ValueError(f"{name}[{index}] has {what}: {row} ({fmt})")


def _first_invalid_box(flat: Tensor, corners: bool, positive: bool = False) -> tuple[int, int]:
    """(first bad row, reason) with reason 1 non-finite, 2 inverted, 3 empty; (-1, 0) if none."""
    if _ext.compiled("cpp", flat):
        return _ext.cpp.first_invalid_box(flat.detach().contiguous().numpy(), corners, positive)
    flat = flat.detach()
    finite = torch.isfinite(flat).all(dim=1)
    if corners:
        ordered = (flat[:, 2] >= flat[:, 0]) & (flat[:, 3] >= flat[:, 1])
        nonempty = (flat[:, 2] > flat[:, 0]) & (flat[:, 3] > flat[:, 1])
    else:
        ordered = (flat[:, 2] >= 0) & (flat[:, 3] >= 0)
        nonempty = ordered
    valid = finite & ordered & (nonempty if positive else ordered)
    if bool(valid.all()):
        return -1, 0
    index = int((~valid).nonzero()[0, 0])
    reason = 1 if not bool(finite[index]) else 2 if not bool(ordered[index]) else 3
    return index, reason


def check_finite(values: Tensor, name: str) -> None:
    """Raises ValueError naming `name` and the first index that is NaN or inf."""
    if values.numel() == 0:
        return
    flat = upcast(values.reshape(-1))  # the C++ check is float32/float64
    if _ext.compiled("cpp", flat):
        index = _ext.cpp.first_nonfinite(flat.detach().contiguous().numpy())
    else:
        bad = ~torch.isfinite(flat)
        index = int(bad.nonzero()[0, 0]) if bool(bad.any()) else -1
    if index >= 0:
        raise ValueError(f"{name}[{index}] is not finite: {float(flat[index])}")


def check_scores(scores: Tensor, n: int, name: str = "scores", half: bool = False) -> Tensor:
    """Scores: float Tensor[N], finite, one per box; returned as check_boxes returns boxes."""
    check_float_tensor(scores, name, ndim=1, half=half)
    if scores.shape[0] != n:
        raise ValueError(f"{name} has {scores.shape[0]} entries but boxes has {n}")
    scores = upcast(scores)
    check_finite(scores, name)
    return scores


def check_fraction(value: float, name: str) -> float:
    """A threshold in [0, 1], as a Python float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_count(n: int, name: str) -> None:
    """The C++ kernels index boxes with int32."""
    if n >= 2**31:
        raise ValueError(f"{name} has {n} boxes; at most 2**31 - 1 are supported")


def as_numpy(t: Tensor):
    """A contiguous CPU tensor's buffer, shared (no copy when already contiguous)."""
    return t.detach().contiguous().numpy()
