"""The "int8" runtime of detkit.runtimes: the dense parts (see
detkit.runtimes.parts) quantised after training by one of two engines, each
calibrated on the same images:

- "onnxruntime": ONNX Runtime's static quantisation (below);
- "torch": PyTorch's FX quantisation for its x86 backend, run by PyTorch's
  own int8 kernels (see detkit.runtimes.int8_torch).

engine="auto" (the default) builds both where both are available, times
the copies in turn on the first calibration image and keeps the faster:
which wins depends on the model and the CPU (pin one with engine= for
results that do not depend on a timing). An engine that fails on the model
is skipped with a warning. The copy's `int8_engine` names the one kept
and `int8_timings` holds the measured milliseconds.

The ONNX Runtime engine:
Each dense part is exported to float ONNX as for "onnxruntime", then
`onnxruntime.quantization.quantize_static` inserts QuantizeLinear /
DequantizeLinear pairs (QDQ format) with int8 weights, one scale per output
channel, and uint8 activations whose ranges (min-max) come from running the
part on the calibration images. ONNX Runtime's graph optimiser fuses the QDQ
patterns into integer kernels (QLinearConv and friends).

The calibration inputs are what each part takes at inference: the model (a
float copy, BatchNorms folded) runs on every calibration image alone, its
own transform normalising, resizing and batching it, and a hook records the
part's inputs (the SSD head's and the RPN head's are the float backbone's
feature maps). On x86 CPUs without VNNI instructions the weights use 7 bits
(reduce_range), which avoids the int16 saturation of the u8 x s8 kernels there.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .machine import alternated_medians, has_vnni
from .ort import ExportedPart, OrtModule, export_onnx, import_onnxruntime
from .parts import dense_parts, replace_dense_parts

__all__ = ["optimize_int8", "calibration_images", "quantize_part", "INT8_ENGINES"]

INT8_ENGINES = ("auto", "onnxruntime", "torch")
TIMING_RUNS = 5

CALIBRATION_HELP = "runtime 'int8' needs calibration images (a list of paths, HxWx3 uint8 arrays or [3,H,W] tensors)"


def optimize_int8(model: nn.Module, calibration: Optional[Iterable], engine: str = "auto") -> nn.Module:
    """A copy of `model` whose dense parts run in int8, calibrated on
    `calibration`, by `engine` (one of INT8_ENGINES; see the module docstring)."""
    if engine not in INT8_ENGINES:
        raise ValueError(f"int8_engine must be one of {INT8_ENGINES}, got {engine!r}")
    if calibration is None or isinstance(calibration, (str, os.PathLike, Tensor, np.ndarray)):
        raise ValueError(CALIBRATION_HELP)
    calibration = list(calibration)
    if not calibration:
        raise ValueError(CALIBRATION_HELP)
    from .int8_torch import quantize_part_torch, torch_int8_available

    engines = [engine] if engine != "auto" else \
        [name for name, ready in (("torch", torch_int8_available()), ("onnxruntime", _ort_ready())) if ready]
    if engine == "torch" and not torch_int8_available():
        raise RuntimeError("int8 engine 'torch' needs torch's x86 quantized backend, which this build lacks "
                           f"(it has {', '.join(torch.backends.quantized.supported_engines)}): use 'onnxruntime'")
    if engine == "onnxruntime" or not engines:
        _ort_ready(raise_error=True)
    images = calibration_images(calibration)
    dense_parts(model, "int8")  # an unknown model type fails before any engine is tried
    quantizers = {"onnxruntime": lambda part, inputs: OrtModule(quantize_part(part, inputs)),
                  "torch": quantize_part_torch}
    built = {}
    for name in engines:
        try:
            built[name] = replace_dense_parts(model, "int8", quantizers[name], images=images)
        except Exception as exc:  # auto: one engine that cannot take this model leaves the other
            if engine != "auto" or (name == engines[-1] and not built):
                raise
            warnings.warn(f"int8: the {name} engine failed on this model ({type(exc).__name__}: {exc}); "
                          "the other is used")
        else:
            built[name].int8_engine = name
    timings = _milliseconds(built, images[0]) if len(built) > 1 else {}
    fastest = built[min(timings, key=timings.get) if timings else next(iter(built))]
    fastest.int8_timings = timings
    return fastest


def _ort_ready(raise_error: bool = False) -> bool:
    """Whether onnxruntime and onnx import; with raise_error, an ImportError naming the missing one."""
    try:
        import_onnxruntime("int8")
        try:
            import onnx  # noqa: F401 - onnxruntime.quantization edits ONNX models with it
        except ImportError:
            raise ImportError("runtime 'int8' needs onnx: pip install onnx") from None
    except ImportError:
        if raise_error:
            raise
        return False
    return True


@torch.no_grad()
def _milliseconds(models: dict[str, nn.Module], image: Tensor) -> dict[str, float]:
    """Median ms of each model on one image, the models called in turn (machine.alternated_medians)."""
    fns = {name: (lambda model=model: model([image])) for name, model in models.items()}
    return {name: seconds * 1e3 for name, seconds in alternated_medians(fns, TIMING_RUNS).items()}


def calibration_images(items: Sequence) -> list[Tensor]:
    """Paths (read with detkit.data.read_image), HxWx3 uint8 RGB arrays or
    float Tensor[3, H, W] in [0, 1] -> float Tensor[3, H, W] in [0, 1]."""
    return [_calibration_image(i, item) for i, item in enumerate(items)]


def _calibration_image(i: int, item) -> Tensor:
    if isinstance(item, (str, os.PathLike)):
        from ..data import read_image

        try:
            item = read_image(item)
        except (OSError, ValueError) as exc:
            raise ValueError(f"calibration[{i}]: {exc}") from None
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(f"calibration[{i}] is a {item.dtype} array of shape {item.shape}; "
                             "arrays must be HxWx3 uint8 RGB")
        return torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1).float().div_(255)
    if isinstance(item, Tensor):
        if item.dim() != 3 or item.shape[0] != 3 or not item.is_floating_point():
            raise ValueError(f"calibration[{i}] is a {item.dtype} Tensor of shape {list(item.shape)}; "
                             "tensors must be float [3, H, W] in [0, 1]")
        if not bool(torch.isfinite(item).all()):
            raise ValueError(f"calibration[{i}] contains NaN or inf")
        return item.detach().cpu().float()
    raise ValueError(f"calibration[{i}] is a {type(item).__name__}; expected an image path, an HxWx3 uint8 RGB array "
                     "or a float Tensor[3, H, W] in [0, 1]")


def quantize_part(part: nn.Module, inputs: list[tuple]) -> ExportedPart:
    """`part` exported to ONNX and statically quantised (QDQ, per-channel int8
    weights, uint8 activations) with min-max ranges over `inputs`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from torch.utils import _pytree as pytree

    exported = export_onnx(part, inputs[0])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{name: t.numpy() for name, t in zip(exported.input_names, pytree.tree_leaves(args))}
                               for args in inputs])

        def get_next(self):
            return next(self.feeds, None)

    import onnx

    float_model = inline_identity_initializers(onnx.load_from_string(exported.onnx_bytes))
    with tempfile.TemporaryDirectory(prefix="detkit-int8-") as folder, _quiet_root_logger():
        output = os.path.join(folder, "int8.onnx")
        quantize_static(float_model, output, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=not has_vnni(), activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        with open(output, "rb") as f:
            return exported.replace(f.read())


def inline_identity_initializers(model):
    """`model` with every Identity of an initializer replaced by a copy of the
    initializer under the Identity's output name. The exporter keeps one of
    several equal parameters (e.g. all-zero conv biases) and feeds the others
    through Identity; the quantiser wants each conv's bias as an initializer
    (else it leaves the bias in float and the conv unfused)."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers]:
        if node.output[0] in outputs:
            continue
        tensor = graph.initializer.add()
        tensor.CopyFrom(initializers[node.input[0]])
        tensor.name = node.output[0]
        graph.node.remove(node)
    return model


@contextlib.contextmanager
def _quiet_root_logger():
    """Drops onnxruntime.quantization's advice to pre-process (logged on the root logger for every model)."""
    def advice(record):
        return "pre-processing" not in record.getMessage()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
