"""The float type of a training step's autocast region (solver.amp).

On the CPU, bfloat16 autocast pays where the CPU computes bfloat16 in
hardware (AMX or AVX512-BF16): convolutions and linear layers then run in
bfloat16, everything else (losses, box coding, matching, the optimizer step)
in float32. Elsewhere bfloat16 is emulated and slower than float32, so the
step runs in float32 and one line says why. float16 autocast is CUDA's, with
a gradient scaler; the CPU has no fast float16 path here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtimes.bf16 import has_bfloat16_hardware
from ..runtimes.machine import cpu_flags


@dataclass(frozen=True)
class Precision:
    dtype: Optional[torch.dtype]  # the autocast dtype; None: float32, no autocast
    reason: str  # one line: what runs and why

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def scaled(self) -> bool:
        """float16 needs a gradient scaler (its range underflows small gradients); bfloat16 does not."""
        return self.dtype == torch.float16


def training_precision(amp: Union[bool, str], device: torch.device) -> Precision:
    """What solver.amp (False, True = "fp16", "auto", "bf16", "fp16") means on `device`."""
    asked = "fp16" if amp is True else amp
    if not asked:
        return Precision(None, "solver.amp=False: training in float32")
    if device.type == "cuda":
        return _cuda_precision(asked)
    if asked == "fp16":
        return Precision(None, f"solver.amp={amp!r}: float16 autocast is for CUDA GPUs; training in float32 "
                               "on the CPU")
    hardware = _bf16_instructions()
    if hardware:
        return Precision(torch.bfloat16, f"solver.amp={amp!r}: bfloat16 autocast (this CPU has {hardware})")
    return Precision(None, f"solver.amp={amp!r}: training in float32 (this CPU has neither AMX nor AVX512-BF16, "
                           "so bfloat16 would be emulated and slower)")


def _cuda_precision(asked: str) -> Precision:
    bf16 = torch.cuda.is_bf16_supported()
    if asked == "fp16" or (asked == "auto" and not bf16):
        return Precision(torch.float16, f"solver.amp={asked!r}: float16 autocast with a gradient scaler (CUDA)")
    if bf16:
        return Precision(torch.bfloat16, f"solver.amp={asked!r}: bfloat16 autocast (CUDA)")
    return Precision(None, f"solver.amp={asked!r}: this GPU has no bfloat16; training in float32")


def single_pixel_convolutions_at_stride_one(model: nn.Module) -> int:
    """Makes each strided, "same"-padded Conv2d of `model` (padding =
    dilation * (kernel - 1) / 2, zeros) run at stride 1 on 1 x 1 inputs;
    returns how many it changed.

    On a 1 x 1 input such a convolution has one output, the same at every
    stride: only the kernel's centre tap meets the pixel. This sidesteps a
    bug of PyTorch's CPU bfloat16 convolution (seen in 2.14 on AVX512-BF16):
    the weight gradient of a 3 x 3, stride-2, padding-1 convolution on a 1 x 1
    input holds uninitialised memory, NaN in 10-45% of calls, which ended
    ssd_shapes' bfloat16 runs (their last extra layers see 1 x 1 maps). At
    stride 1 the same convolution is exact every time."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and max(module.stride) > 1 and _same_padded(module):
            module.forward = functools.partial(_single_pixel_at_stride_one, module)
            changed += 1
    return changed


def _same_padded(conv: nn.Conv2d) -> bool:
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and all(
        2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))


def _single_pixel_at_stride_one(conv: nn.Conv2d, x: Tensor) -> Tensor:
    if x.shape[-2:] != (1, 1):
        return nn.Conv2d.forward(conv, x)
    return F.conv2d(x, conv.weight, conv.bias, 1, conv.padding, conv.dilation, conv.groups)


def _bf16_instructions() -> str:
    """'AMX', 'AVX512-BF16' (as the CPU reports them), or '' without either."""
    if not has_bfloat16_hardware():
        return ""
    flags = cpu_flags()
    found = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16")) if flag in flags]
    return " and ".join(found) or "bfloat16 instructions"
