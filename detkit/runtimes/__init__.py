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
    without re-export. See detkit.runtimes.ort. Needs onnxruntime.
"openvino", "openvino_bf16": as "onnxruntime", with the dense part compiled
    and run by OpenVINO's CPU plugin in float32, or in bfloat16 (needs the
    CPU's bfloat16 units). See detkit.runtimes.openvino. Needs openvino.
"int8": the dense part quantised after training (per-channel int8 weights,
    uint8 activations) on `calibration` images passed through the model's own
    transform, by ONNX Runtime (QDQ) or by PyTorch's x86 backend (FX), the
    faster of the two as measured on this machine unless `int8_engine` says
    which. See detkit.runtimes.int8.

Each runtime has its own module: fold (BatchNorm folding, "fused"), parts
(the dense part of each model type), bf16, ort ("onnxruntime"), openvino, int8, and
export (ONNX/TorchScript files); machine probes the CPU. None of them imports
this dispatcher.
"""
from __future__ import annotations

from typing import Iterable, Optional

from torch import nn

from .bf16 import BFloat16Part, has_bfloat16_hardware, optimize_bf16
from .fold import fold_batchnorms, fused

__all__ = ["RUNTIMES", "check_runtime", "optimize", "fold_batchnorms", "BFloat16Part", "has_bfloat16_hardware"]

RUNTIMES = ("eager", "fused", "bf16", "onnxruntime", "openvino", "openvino_bf16", "int8")


def check_runtime(runtime: str) -> None:
    """Raises a ValueError that lists RUNTIMES unless `runtime` is one of them."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")


def optimize(model: nn.Module, runtime: str = "eager", calibration: Optional[Iterable] = None,
             int8_engine: str = "auto") -> nn.Module:
    """`model` for inference with `runtime` (one of RUNTIMES; see the module
    docstring). calibration: images for runtimes that calibrate ('int8': a list
    of image paths, HxWx3 uint8 RGB arrays or float Tensor[3, H, W] in [0, 1]);
    the others do not use it. int8_engine: 'auto' (the faster, measured),
    'onnxruntime' or 'torch' (see detkit.runtimes.int8)."""
    check_runtime(runtime)
    if runtime == "eager":
        return model.eval()
    if runtime == "fused":
        return fused(model)
    if runtime == "bf16":
        return optimize_bf16(model)
    if runtime == "onnxruntime":  # onnxruntime and onnx load only when asked for
        from .ort import optimize_onnxruntime

        return optimize_onnxruntime(model)
    if runtime.startswith("openvino"):
        from .openvino import optimize_openvino

        return optimize_openvino(model, runtime)
    from .int8 import optimize_int8

    return optimize_int8(model, calibration, int8_engine)
