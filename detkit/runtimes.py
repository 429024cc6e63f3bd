"""Inference runtimes: a trained detector run another way, under the same
contract (a list of Tensor[3, H, W] in, one {"boxes", "scores", "labels"...}
per image out).

    fast = detkit.runtimes.optimize(model, runtime="fused")
    detections = fast(images)

"eager": the model itself, in eval mode.
"fused": a copy in eval mode with every BatchNorm (nn.BatchNorm2d,
    nn.SyncBatchNorm, torchvision's FrozenBatchNorm2d) that directly follows
    a Conv2d folded into that convolution's weight and bias and replaced by
    nn.Identity, and, on models with the option, channels-last convolutions.
    Folding is exact algebra (done in float64); outputs change by float
    rounding only. The caller's model is not touched.
"bf16": as "fused", with the dense part (that of "onnxruntime" below, plus
    the hidden layers of the R-CNN box and mask heads) holding bfloat16
    weights and computing in bfloat16 (oneDNN: AMX or AVX512-BF16 matrix
    units, float32 accumulation). Float inputs are cast to bfloat16 on the
    way in and outputs back to float32 on the way out, so anchors, box
    decoding, NMS, RoI pooling and the R-CNN classifiers stay float32.
    Reduced precision, not rounding: benchmarks/heldout.py --runtimes bf16
    measures the AP it costs. On the CPU it needs bfloat16 instructions; on
    a CPU without, it is an error (emulated bfloat16 is slower than float32).
"onnxruntime": a copy whose dense part (SSD: backbone and head; Faster/Mask
    R-CNN: backbone and RPN head; Fast R-CNN: backbone; R-CNN: the per-crop
    CNN) is exported to ONNX with dynamic batch, height and width and run by
    ONNX Runtime's CPU provider with all graph optimisations; the transform,
    anchors, decoding, NMS and RoI heads stay detkit's. Any image size works
    without re-export. See detkit.runtime_ort. Needs onnxruntime.
"int8": as "onnxruntime", with the dense part quantised after training
    (QDQ, per-channel int8 weights, uint8 activations) on `calibration`
    images passed through the model's own transform. See detkit.runtime_int8.
    Needs onnxruntime and onnx.

A norm is folded only where the conv's output feeds nothing but the norm:
adjacent in an nn.Sequential, or (any other module) as torch.fx traces the
parent's forward with its children as leaves, e.g. ResNet's
`self.bn1(self.conv1(x))`. A norm that cannot be shown to sit so stays, with
a warning.
"""
from __future__ import annotations

import copy
import functools
import warnings
from typing import Iterable, Optional

import torch
import torch.fx
from torch import Tensor, nn
from torch.utils import _pytree as pytree
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["RUNTIMES", "check_runtime", "optimize", "fold_batchnorms", "BFloat16Part", "has_bfloat16_hardware"]

RUNTIMES = ("eager", "fused", "bf16", "onnxruntime", "int8")
# R-CNN head layers that run in bfloat16 beside the dense part (their predictors stay float32)
BF16_HEADS = ("roi_heads.box_head", "roi_heads.mask_head")
NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


def check_runtime(runtime: str) -> None:
    """Raises a ValueError that lists RUNTIMES unless `runtime` is one of them."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")


def optimize(model: nn.Module, runtime: str = "eager", calibration: Optional[Iterable] = None) -> nn.Module:
    """`model` for inference with `runtime` (one of RUNTIMES; see the module
    docstring). calibration: images for runtimes that calibrate ('int8': a list
    of image paths, HxWx3 uint8 RGB arrays or float Tensor[3, H, W] in [0, 1]);
    the others do not use it."""
    check_runtime(runtime)
    if runtime == "eager":
        return model.eval()
    if runtime == "fused":
        return _fused(model)
    if runtime == "bf16":
        return _bfloat16(model)
    if runtime == "onnxruntime":
        from .runtime_ort import optimize_onnxruntime

        return optimize_onnxruntime(model)
    from .runtime_int8 import optimize_int8

    return optimize_int8(model, calibration)


def _fused(model: nn.Module) -> nn.Module:
    fused = copy.deepcopy(model).eval()
    fold_batchnorms(fused)
    left = [name for name, m in fused.named_modules() if isinstance(m, NORMS)]
    if left:
        warnings.warn(f"runtime 'fused': {len(left)} norm layer(s) not directly after a Conv2d stay unfolded: "
                      f"{', '.join(left[:5])}{', ...' if len(left) > 5 else ''}", stacklevel=3)
    if hasattr(fused, "channels_last"):
        fused.channels_last = True
        if hasattr(fused, "convert_weights_layout"):
            fused.convert_weights_layout()
    return fused


def has_bfloat16_hardware() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(check is not None for check in checks):
        return any(check() for check in checks)
    from .machine import cpu_flags  # older torch: the kernel's CPU flags

    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _bfloat16(model: nn.Module) -> nn.Module:
    from .runtime_ort import dense_parts

    paths = dense_parts(model, "bf16")  # before the copy: an unknown model type fails fast
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if on_cpu and not has_bfloat16_hardware():
        raise RuntimeError("runtime 'bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX), "
                           "which this one lacks: use 'fused' or 'int8'")
    fused = _fused(model)
    paths += [path for path in BF16_HEADS if _has_submodule(fused, path)]
    for path in paths:
        fused.set_submodule(path, BFloat16Part(fused.get_submodule(path)))
    return fused


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


def fold_batchnorms(model: nn.Module) -> list[str]:
    """Folds, in place, every eval-mode (or frozen) norm that directly follows a Conv2d
    into it and replaces the norm by nn.Identity; returns the folded norms' names."""
    pairs = [(name, module, conv, norm) for name, module in model.named_modules()
             for conv, norm in _conv_norm_pairs(module)]  # all found before any is replaced
    for _, parent, conv, norm in pairs:
        fold_into_conv(getattr(parent, conv), getattr(parent, norm))
        setattr(parent, norm, nn.Identity())
    return [f"{name}.{norm}" if name else norm for name, _, _, norm in pairs]


@torch.no_grad()
def fold_into_conv(conv: nn.Conv2d, norm: nn.Module) -> None:
    """conv's weight and bias become those of norm(conv(x)):
    w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    # empty_like keeps the weight's memory format (channels-last stays channels-last)
    conv.weight = nn.Parameter(torch.empty_like(conv.weight).copy_(weight), conv.weight.requires_grad)
    requires_grad = conv.bias.requires_grad if conv.bias is not None else conv.weight.requires_grad
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(conv.weight.dtype), requires_grad)


def _conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, norm) names of `module`'s children where the norm takes the
    conv's output and nothing else does."""
    children = dict(module.named_children())
    if not any(isinstance(m, NORMS) for m in children.values()):
        return []
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:]) if _foldable(children[a], children[b])]
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception:  # noqa: BLE001 - a forward fx cannot trace: leave its norms
        return []
    calls = [node for node in graph.nodes if node.op == "call_module"]
    counts = {target: sum(n.target == target for n in calls) for target in {n.target for n in calls}}
    pairs = []
    for node in calls:
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        conv, norm = source.target, node.target
        if counts[conv] == counts[norm] == 1 and conv in children and norm in children \
                and _foldable(children[conv], children[norm]):
            pairs.append((conv, norm))
    return pairs


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """A Conv2d then a norm that uses running statistics, over as many channels."""
    frozen = isinstance(norm, FrozenBatchNorm2d) or not norm.training
    return (isinstance(conv, nn.Conv2d) and isinstance(norm, NORMS) and frozen
            and getattr(norm, "running_mean", None) is not None and norm.running_mean.numel() == conv.out_channels)


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own forward: every submodule call stays one node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True
