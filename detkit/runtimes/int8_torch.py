"""The "int8" runtime's PyTorch engine: each dense part (detkit.runtimes.parts)
quantised after training with PyTorch's FX graph-mode quantisation for its
x86 backend, and run by PyTorch's own quantized kernels (oneDNN and FBGEMM:
VNNI, and AMX-INT8 on CPUs that have it).

The qconfig is torch's "x86" default (int8 weights with one scale per output
channel, uint8 activations: 8 bits on CPUs with VNNI, 7 without) with min-max
activation ranges over the calibration inputs, as the ONNX Runtime engine
takes them: the default's histogram search runs in Python, half a second per
activation at convert (2.5 minutes for SSDlite's 260).

A part that FX cannot trace whole (a head that loops over a list of feature
maps, as the SSD heads do) is quantised one traceable child at a time, and
keeps its own Python forward around them. The RPN head stays float
(FLOAT_PARTS). Each quantised unit takes and returns float tensors, so the
rest of the detector is unchanged. The copy deep-copies but does not
pickle: torch 2.14.1 cannot unpickle an FX GraphModule that holds quantized
Conv2d modules (use engine="onnxruntime" where a model must be pickled).
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..modeling.rpn import RPNHead
from .machine import has_vnni

__all__ = ["torch_int8_available", "quantize_part_torch"]

BACKEND = "x86"
# Parts that stay float: the RPN head ranks thousands of anchors by objectness before NMS, and 8-bit
# rounding reorders them. On a trained Faster R-CNN (tests/runtimes), 17-19 of 26 detections stayed at
# IoU 0.8 with it quantised, 20 with only its 3x3 conv quantised, at least 21 (the test's 80%) with it
# float. ONNX Runtime's engine, which quantises it, kept 24.
FLOAT_PARTS = (RPNHead,)


def torch_int8_available() -> bool:
    """Whether this torch build has the x86 quantized backend (x86 CPUs; ARM builds have qnnpack only)."""
    return BACKEND in torch.backends.quantized.supported_engines


def traceable_units(module: nn.Module, prefix: str) -> list[str]:
    """The dotted paths (from `prefix`, the path of `module` itself) of the
    largest submodules that torch.fx traces whole and that hold parameters."""
    if not any(True for _ in module.parameters()):
        return []
    if not isinstance(module, nn.ModuleList):
        try:
            torch.fx.symbolic_trace(module)
            return [prefix]
        except Exception:  # control flow on inputs, iteration over a list argument, ...: descend
            pass
    paths = []
    for name, child in module.named_children():
        paths += traceable_units(child, f"{prefix}.{name}")
    if not paths:
        raise ValueError(f"int8 (torch): no part of {type(module).__name__} {prefix!r} can be traced by torch.fx")
    return paths


def qconfig_mapping():
    """torch's x86 QConfigMapping with min-max observed activations for every op it observes by
    histogram by default, in 8 bits where the CPU has VNNI (the default's 7 bits avoid the int16
    saturation of the u8 x s8 kernels without it, and cost Faster R-CNN 5 of 26 matches at IoU 0.8)."""
    from torch.ao.quantization import MinMaxObserver, QConfig, get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping(BACKEND)
    default = mapping.global_qconfig
    activation = MinMaxObserver.with_args(**{**default.activation.p.keywords, "reduce_range": not has_vnni()})
    return mapping.set_global(QConfig(activation=activation, weight=default.weight))


@torch.no_grad()
def quantize_part_torch(part: nn.Module, inputs: list[tuple]) -> nn.Module:
    """A quantised copy of `part` (eval mode), calibrated by running it on
    every captured input tuple in `inputs`; a copy left float for FLOAT_PARTS."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    quantized = QuantizedPart(copy.deepcopy(part).eval())
    if isinstance(part, FLOAT_PARTS):
        return quantized
    units = traceable_units(quantized.part, "part")
    examples = _first_inputs(quantized, units, inputs[0])
    qconfig = qconfig_mapping()
    with warnings.catch_warnings(), _backend(BACKEND):
        warnings.simplefilter("ignore")  # torch.ao's notices (deprecation, observer dtype hints)
        for path in units:
            quantized.set_submodule(path, prepare_fx(quantized.get_submodule(path), qconfig, examples[path]))
        for args in inputs:
            quantized(*args)
        for path in units:
            quantized.set_submodule(path, convert_fx(quantized.get_submodule(path)))
    return quantized


class QuantizedPart(nn.Module):
    """A part whose units are quantised GraphModules, float in and out. Their
    weights were packed for the x86 backend at convert; the kernels follow
    the packed weights, not torch.backends.quantized.engine at call time (the
    same detections under qnnpack, onednn and fbgemm), so calls leave that
    process-wide setting alone."""

    def __init__(self, part: nn.Module):
        super().__init__()
        self.part = part

    def forward(self, *args):
        return self.part(*pytree.tree_map(_contiguous, args))


def _contiguous(t):
    return t.contiguous() if isinstance(t, torch.Tensor) else t


@contextlib.contextmanager
def _backend(name: str):
    """torch.backends.quantized.engine set to `name` inside (prepare and convert pack for it), restored after."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _first_inputs(module: nn.Module, units: list[str], args: tuple) -> dict[str, tuple]:
    """The positional inputs each unit takes on its first call while `module` runs on `args`."""
    examples: dict[str, tuple] = {}

    def hook(path):
        return lambda unit, inputs: examples.setdefault(path, inputs)
    handles = [module.get_submodule(path).register_forward_pre_hook(hook(path)) for path in units]
    try:
        module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return examples
