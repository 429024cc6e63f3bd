"""The "bf16" runtime: the fused model with its dense part (and the R-CNN
box and mask head layers) holding bfloat16 weights, float32 in and out."""
from __future__ import annotations

import functools

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .fold import fused
from .machine import cpu_flags
from .parts import dense_parts

# R-CNN head layers that run in bfloat16 beside the dense part (their predictors stay float32)
BF16_HEADS = ("roi_heads.box_head", "roi_heads.mask_head")


def has_bfloat16_hardware() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(check is not None for check in checks):
        return any(check() for check in checks)
    # older torch: the kernel's CPU flags
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def optimize_bf16(model: nn.Module) -> nn.Module:
    """A fused copy of `model` whose dense part computes in bfloat16."""
    paths = dense_parts(model, "bf16")  # before the copy: an unknown model type fails fast
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if on_cpu and not has_bfloat16_hardware():
        raise RuntimeError("runtime 'bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX), "
                           "which this one lacks: use 'fused' or 'int8'")
    model = fused(model)
    paths += [path for path in BF16_HEADS if _has_submodule(model, path)]
    for path in paths:
        model.set_submodule(path, BFloat16Part(model.get_submodule(path)))
    return model


def _has_submodule(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


def _cast(value, dtype: torch.dtype):
    return value.to(dtype) if isinstance(value, Tensor) and value.is_floating_point() else value


class BFloat16Part(nn.Module):
    """`part` (moved to bfloat16 in place) called with float32 arguments: every
    float tensor in them is cast to bfloat16 (memory format kept) and every
    float tensor in its outputs back to float32, structure unchanged."""

    def __init__(self, part: nn.Module):
        super().__init__()
        self.part = part.to(torch.bfloat16)
        if hasattr(part, "out_channels"):
            self.out_channels = part.out_channels

    def forward(self, *args):
        outputs = self.part(*pytree.tree_map(functools.partial(_cast, dtype=torch.bfloat16), args))
        return pytree.tree_map(functools.partial(_cast, dtype=torch.float32), outputs)


