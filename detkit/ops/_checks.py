"""Argument checks shared by every op, so that bad input gets one clear error
naming the argument (and the first bad row) on every backend."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _ext

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_float_tensor(t: Tensor, name: str, last_dim: Optional[int] = None, ndim: Optional[int] = None) -> None:
    """Raises TypeError unless `t` is a float32/float64 tensor of the given shape."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 tensor, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if last_dim is not None and (t.dim() == 0 or t.shape[-1] != last_dim):
        raise ValueError(f"{name} must have shape [..., {last_dim}], got {tuple(t.shape)}")


def check_boxes(
    boxes: Tensor, name: str, fmt: str = "xyxy", ndim: Optional[int] = 2, positive: bool = False
) -> None:
    """Checks boxes: Tensor[N, 4] (or [..., 4] with ndim=None) in `fmt`.

    Raises TypeError for non-float dtypes and ValueError, naming `name` and the
    first bad row, for non-finite values or inverted boxes (x2 < x1 or y2 < y1
    in xyxy; negative width or height in xywh/cxcywh), and with `positive`
    (xyxy only) for boxes of zero width or height.
    """
    check_float_tensor(boxes, name, last_dim=4, ndim=ndim)
    if boxes.numel() == 0:
        return
    flat = boxes.reshape(-1, 4)
    index, reason = _first_invalid_box(flat, corners=(fmt == "xyxy"), positive=positive)
    if index < 0:
        return
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
    flat = values.reshape(-1)
    if _ext.compiled("cpp", flat):
        index = _ext.cpp.first_nonfinite(flat.detach().contiguous().numpy())
    else:
        bad = ~torch.isfinite(flat)
        index = int(bad.nonzero()[0, 0]) if bool(bad.any()) else -1
    if index >= 0:
        raise ValueError(f"{name}[{index}] is not finite: {float(flat[index])}")


def check_scores(scores: Tensor, n: int, name: str = "scores") -> None:
    """Scores: float Tensor[N], finite, one per box."""
    check_float_tensor(scores, name, ndim=1)
    if scores.shape[0] != n:
        raise ValueError(f"{name} has {scores.shape[0]} entries but boxes has {n}")
    check_finite(scores, name)


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
