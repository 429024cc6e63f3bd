"""The "openvino" and "openvino_bf16" runtimes of detkit.runtimes: the dense
parts of detkit.runtimes.parts run by OpenVINO's CPU plugin, everything
around them (input transform, anchors, box decoding, NMS, RoI heads) stays
detkit's, as for "onnxruntime".

Each part is exported to ONNX exactly as for "onnxruntime" (dynamic batch,
height and width; BatchNorms folded) and compiled by OpenVINO for the CPU
with the latency hint, one stream and torch's thread count. "openvino"
computes in float32 (INFERENCE_PRECISION_HINT f32: OpenVINO's default on
a CPU with bfloat16 units is bfloat16); "openvino_bf16" in bfloat16, which
needs those units (AVX512-BF16 or AMX), as the "bf16" runtime does.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from . import bf16
from .ort import ExportedPart, OrtModule, export_onnx
from .parts import replace_dense_parts

__all__ = ["OpenVINOModule", "optimize_openvino", "import_openvino", "openvino_core"]

PRECISIONS = {"openvino": "f32", "openvino_bf16": "bf16"}


def import_openvino(runtime: str = "openvino"):
    """The openvino module, or an ImportError with a one-line install hint."""
    try:
        import openvino
    except ImportError:
        raise ImportError(f"runtime {runtime!r} needs OpenVINO: pip install openvino") from None
    return openvino


@functools.lru_cache(maxsize=None)
def openvino_core():
    """The process's one openvino.Core, kept to the end.

    OpenVINO's CPU plugin (2026.x) installs an alternate signal stack on the
    thread that creates it and puts the previous one back when it is
    destroyed. Two Cores destroyed out of order leave the thread on a freed
    stack: the next signal handled there (SIGCHLD from a DataLoader worker)
    is written into whatever now holds that memory, another thread's stack,
    and the process dies of a segfault later. One Core creates the plugin
    once."""
    return import_openvino().Core()


def optimize_openvino(model: nn.Module, runtime: str = "openvino") -> nn.Module:
    """A copy of `model` whose dense parts run in OpenVINO at the runtime's precision."""
    precision = PRECISIONS[runtime]
    import_openvino(runtime)
    if precision == "bf16" and not bf16.has_bfloat16_hardware():
        raise RuntimeError(f"runtime {runtime!r} needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX), "
                           "which this one lacks: use 'openvino' or 'int8'")
    return replace_dense_parts(model, runtime,
                               lambda part, inputs: OpenVINOModule(export_onnx(part, inputs[0]), precision))


class OpenVINOModule(OrtModule):
    """One exported part compiled by OpenVINO for the CPU, called like the
    part itself (see OrtModule). The compiled model is made on the first call
    (threads: torch.get_num_threads() then); copies and pickles recompile."""

    def __init__(self, exported: ExportedPart, precision: str = "f32"):
        super().__init__(exported)
        self.precision = precision

    def session(self):
        if self._session is None:
            core = openvino_core()
            compiled = core.compile_model(core.read_model(self.exported.onnx_bytes), "CPU", {
                "INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                "INFERENCE_NUM_THREADS": torch.get_num_threads()})
            self._session = compiled.create_infer_request()
        return self._session

    def run(self, feed: dict) -> list:
        request = self.session()
        request.infer(feed)
        # copies: the request reuses its output buffers on the next call
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.exported.output_names))]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, precision={self.precision}"
