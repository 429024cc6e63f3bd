"""Loads the compiled kernels: detkit._C (C++) and detkit.ops._numba.

Either may be missing (no compiler at install time, numba not importable, or
DETKIT_DISABLE_EXT=1 to force the reference path); then each op falls back
to its pure-torch reference and one warning says so.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

_DISABLED = os.environ.get("DETKIT_DISABLE_EXT", "") not in ("", "0")


def _load(module: str, lost: str) -> Optional[ModuleType]:
    """Imports a kernel module, or warns once (naming what gets slower) and returns None."""
    if _DISABLED:
        return None
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        warnings.warn(f"detkit: {module} is not available ({exc}); {lost}", RuntimeWarning, stacklevel=3)
        return None


cpp = _load(
    "detkit._C",
    "nms, soft_nms, ssd_assign and box_iou use the slower torch reference. "
    "Reinstall with a C++17 compiler to build it.",
)
numba_kernels = _load("detkit.ops._numba", "anchors, box coding and matching use the slower torch reference.")

# op name -> "cpp" | "numba": the kernel each op uses on CPU tensors.
_KERNELS: dict[str, str] = {}


def register(op: str, kernel: str) -> None:
    """Records which compiled kernel `op` uses (called by each ops module)."""
    _KERNELS[op] = kernel


def backend() -> dict[str, str]:
    """Which kernel each op uses for CPU tensors: "cpp", "numba" or "torch".

    CUDA tensors always take the torch path; so do tensors that require grad,
    except in roi_align, whose compiled backward serves them.
    """
    available = {"cpp": cpp is not None, "numba": numba_kernels is not None}
    return {op: (kernel if available[kernel] else "torch") for op, kernel in sorted(_KERNELS.items())}


def compiled(kernel: str, *tensors: Tensor) -> bool:
    """True when `kernel` is loaded and every tensor can go to it (CPU, no grad)."""
    if (cpp if kernel == "cpp" else numba_kernels) is None or _tracing():
        return False
    return all(t.device.type == "cpu" and not t.requires_grad for t in tensors)


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)  # torch >= 2.3


def _tracing() -> bool:
    """Under torch.jit.trace, ONNX export or torch.compile the graph must hold
    torch ops, so the reference path runs (compiled kernels are opaque calls)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _is_compiling()


def num_threads() -> int:
    """Threads the C++ kernels may use: torch's setting, so users control both."""
    return torch.get_num_threads()
