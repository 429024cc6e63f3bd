"""The "onnxruntime" runtime of detkit.runtimes: a detector whose dense part
runs in ONNX Runtime (CPU execution provider, all graph optimisations) while
everything else (input transform, anchors, box decoding, NMS, RoI heads)
stays detkit's.

The dense parts of each model type are listed in detkit.runtimes.parts.
Each part is exported on its own (torch.onnx's TorchScript exporter, opset
17) from a deep copy of the model in eval mode, with its BatchNorms folded
and its weights in NCHW, with the batch, height and width of every input
dynamic, so any image size runs without re-export. On the copy the part is
replaced by an `OrtModule` that feeds its inputs to the ONNX Runtime session
as NCHW-contiguous float32 numpy arrays and rebuilds the part's own output
structure (an OrderedDict of feature maps, the head's dict, the RPN head's
pair of lists) from the session's outputs.
"""
from __future__ import annotations

import io
import warnings
from collections import Counter

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .parts import replace_dense_parts

__all__ = ["OrtModule", "optimize_onnxruntime", "import_onnxruntime", "export_onnx"]

OPSET = 17


def import_onnxruntime(runtime: str = "onnxruntime"):
    """The onnxruntime module, or an ImportError with a one-line install hint."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"runtime {runtime!r} needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def optimize_onnxruntime(model: nn.Module) -> nn.Module:
    """A copy of `model` whose dense parts run in ONNX Runtime in float32."""
    import_onnxruntime()
    return replace_dense_parts(model, "onnxruntime", lambda part, inputs: OrtModule(export_onnx(part, inputs[0])))


class ExportedPart:
    """An ONNX model of one part and the pytree specs of its inputs and outputs."""

    def __init__(self, onnx_bytes: bytes, in_spec, out_spec, input_names: list[str], output_names: list[str]):
        self.onnx_bytes, self.in_spec, self.out_spec = onnx_bytes, in_spec, out_spec
        self.input_names, self.output_names = input_names, output_names

    def replace(self, onnx_bytes: bytes) -> "ExportedPart":
        return ExportedPart(onnx_bytes, self.in_spec, self.out_spec, self.input_names, self.output_names)


class _Flat(nn.Module):
    """A part called on flat tensors, returning a flat tuple (what the exporter takes)."""

    def __init__(self, part: nn.Module, in_spec, out_spec=None):
        super().__init__()
        self.part, self.in_spec, self.out_spec = part, in_spec, out_spec

    def forward(self, *leaves: Tensor) -> tuple[Tensor, ...]:
        outputs, self.out_spec = pytree.tree_flatten(self.part(*pytree.tree_unflatten(list(leaves), self.in_spec)))
        return tuple(outputs)


@torch.no_grad()
def export_onnx(part: nn.Module, args: tuple) -> ExportedPart:
    """`part` (eval mode) as ONNX for inputs like `args`: every dimension of
    every input dynamic but the channels (dim 1), every output dimension dynamic."""
    leaves, in_spec = pytree.tree_flatten(tuple(args))
    if not leaves or not all(isinstance(t, Tensor) and t.is_floating_point() for t in leaves):
        raise TypeError(f"{type(part).__name__}: only float tensor inputs can be exported")
    leaves = [t.float().contiguous() for t in leaves]
    flat = _Flat(part.eval(), in_spec)
    outputs = flat(*leaves)
    input_names = [f"input{i}" for i in range(len(leaves))]
    output_names = [f"output{i}" for i in range(len(outputs))]
    dynamic = {name: [d for d in range(t.dim()) if d != 1] for name, t in zip(input_names, leaves)}
    dynamic.update({name: list(range(t.dim())) for name, t in zip(output_names, outputs)})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(flat, tuple(leaves), buffer, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic)
    return ExportedPart(buffer.getvalue(), in_spec, flat.out_spec, input_names, output_names)


def session_options(ort):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: its optimiser's notes on unused exporter constants are not ours
    # Its threads would otherwise spin after each run, holding the cores torch needs for what follows
    # (measured: a 128 px Faster R-CNN took 36 ms in all, 7 in ONNX Runtime; eager takes 11).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtModule(nn.Module):
    """One exported part run by an ONNX Runtime CPU session, called with the
    part's own arguments and returning the part's own output structure
    (torch tensors on the inputs' device). The session is made on the first
    call (intra-op threads: torch.get_num_threads() then); copies and pickles
    carry the ONNX model and make their own session."""

    def __init__(self, exported: ExportedPart):
        super().__init__()
        self.exported = exported
        self._session = None

    @property
    def onnx_bytes(self) -> bytes:
        return self.exported.onnx_bytes

    def session(self):
        if self._session is None:
            ort = import_onnxruntime()
            self._session = ort.InferenceSession(self.exported.onnx_bytes, session_options(ort),
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, *args):
        leaves, spec = pytree.tree_flatten(args)
        if spec != self.exported.in_spec:
            raise ValueError(f"OrtModule was exported for inputs structured as {self.exported.in_spec}, got {spec}")
        device = leaves[0].device
        feed = {name: t.detach().to("cpu", torch.float32).contiguous().numpy()
                for name, t in zip(self.exported.input_names, leaves)}
        outputs = self.run(feed)
        return pytree.tree_unflatten([torch.from_numpy(o).to(device) for o in outputs], self.exported.out_spec)

    def run(self, feed: dict) -> list:
        """The session's outputs (numpy arrays, in output_names' order) for `feed` (input name -> array)."""
        return self.session().run(self.exported.output_names, feed)

    def op_counts(self) -> Counter:
        """How many nodes of each ONNX op type the exported model holds (needs the onnx package)."""
        import onnx

        return Counter(node.op_type for node in onnx.load_from_string(self.exported.onnx_bytes).graph.node)

    def __getstate__(self):
        state = super().__getstate__()
        state["_session"] = None
        return state

    def extra_repr(self) -> str:
        return f"onnx={len(self.exported.onnx_bytes) / 1e6:.1f} MB, inputs={len(self.exported.input_names)}, " \
               f"outputs={len(self.exported.output_names)}"
