"""Times detkit's inference runtimes (detkit.runtimes.optimize: eager, fused,
bf16, onnxruntime, openvino, openvino_bf16, int8 with each engine) against the
peers a user would pick instead, with the same random weights, one image at a
time, in one process:

- torchvision's eager model, in NCHW and in channels-last (its user's one
  call); the faster is the peer the ratio is taken to;
- OpenVINO: torchvision's model with its dense part converted by OpenVINO's
  own `openvino.convert_model` and compiled for the CPU (f32, and bf16 where
  the CPU has it), torchvision's pre- and post-processing around it: what a
  user who converts the model by hand runs.

    python benchmarks/runtimes.py [--threads 2] [--repeats 7] [--calibration 8]
    python benchmarks/runtimes.py --smoke --repeats 1   # small models, no torchvision: checks the script runs

Models: ssdlite320_mobilenet_v3_large and ssd300_vgg16 (detkit channels-last)
and fasterrcnn_resnet50_fpn (NCHW), at their default input sizes (SSDlite
resizes to 320x320, SSD to 300x300, Faster R-CNN to 800 on the short side),
on one 480x640 image. "int8" is calibrated on --calibration other random images of the same
size (random weights: the timing is what this measures, not accuracy).

Before timing, detkit eager must give torchvision's detections (labels
equal, boxes within 1e-2 px, scores within 1e-4), and each runtime's dense
part (detkit.runtimes.parts.dense_parts: SSD's backbone and head, Faster
R-CNN's backbone and RPN head) must return what eager's does within the
runtime's tolerance, DENSE_TOLERANCE: the largest absolute difference over
the largest absolute value, per output tensor, worst tensor shown ("dense
error"); the script exits 1 otherwise (int8's is shown, not checked). With
random weights detections are no test of a runtime: scores are near-equal,
so rounding reorders them and NMS keeps other boxes. Their share matched
(eager's top --compare detections greedily matched one-to-one, same label,
IoU >= 0.95, 0.8 for int8) is shown for information; the tests and
benchmarks/heldout.py compare runtimes on trained checkpoints.
--compile adds "fused + torch.compile": the fused model with each dense
part compiled by torch.compile (inductor, static shapes), compiled on the
warm-up call (its compile time is printed, not timed). Timings: the median of --repeats runs of each runtime and of
torchvision, alternating in one loop after a warm-up; ratio = torchvision
eager time / runtime time (the speed-up; higher is faster). ONNX Runtime's intra-op threads
are set to torch.get_num_threads() (--threads). The fp32 GEMM peak
(detkit.runtimes.machine.gemm_gflops(), same threads) is printed for scale, and the
bfloat16 one with bf16. Roofline columns: GFLOP/s = the model's inference
FLOPs (benchmarks/models.py's count, the same for every runtime) / the
median time, and its share of the GEMM peak of the runtime's precision.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time

import numpy as np
import torch
import torchvision
from torch.utils import _pytree as pytree
from torchvision.ops import box_iou

from detkit import models, runtimes
from detkit.runtimes import machine
from detkit.runtimes.openvino import openvino_core
from detkit.runtimes.parts import capture_inputs, dense_parts

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.models import ChannelsLast, _torchvision_rcnn, inference_flops, same_detections  # noqa: E402  models.py's peer, check, FLOPs

RUNTIMES = runtimes.RUNTIMES
# runtime -> the largest dense error it may have against detkit eager (None: shown, not checked). float32
# runtimes round differently; bfloat16 keeps 8 significant bits; int8 is judged by AP (benchmarks/heldout.py)
DENSE_TOLERANCE = {"eager": 0.0, "fused": 1e-4, "fused + torch.compile": 1e-4, "onnxruntime": 1e-4, "bf16": 5e-2,
                   "openvino": 1e-3, "openvino_bf16": 5e-2, "int8 (torch)": None, "int8 (onnxruntime)": None}
# the GEMM peak a runtime's convolutions are held to (int8: none measured, shown as "-")
PRECISION = {"bf16": "bf16", "openvino_bf16": "bf16", "int8 (torch)": "int8", "int8 (onnxruntime)": "int8"}
MATCH_IOU = {"int8 (torch)": 0.8, "int8 (onnxruntime)": 0.8}  # IoU for a match (0.95 else); information only
INT8_ENGINES = ("torch", "onnxruntime")
# SSDlite's random N(0, 0.03) weights give every anchor the same scores, so which boxes NMS keeps among
# the ties is arbitrary: its twin check compares the dense part's outputs (1e-5) instead of detections.
TIED_SCORES = ("ssdlite320_mobilenet_v3_large",)


# name -> (torchvision builder or None, detkit build options)
MODELS = {
    "ssdlite320_mobilenet_v3_large": (lambda: torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None), {"channels_last": True}),
    "ssd300_vgg16": (lambda: torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None),
                     {"channels_last": True}),
    "fasterrcnn_resnet50_fpn": (lambda: _torchvision_rcnn("box"), {}),
}
SMOKE = {
    "ssd300_resnet18": (None, {"num_classes": 4, "width": 0.25, "size": 128, "channels_last": True}),
    "fasterrcnn_resnet18_fpn_small": (None, {"num_classes": 4, "min_size": 128, "max_size": 128}),
}


def matched_fraction(reference: dict, other: dict, top: int, iou: float, margin: float = 0.02) -> float:
    """Reference's `top` best detections greedily matched one-to-one to the other's scoring at least
    the last of them minus `margin`, with the same label and IoU >= iou: matches / compared."""
    count = min(top, len(reference["scores"]))
    if count == 0:
        return 1.0 if len(other["scores"]) == 0 else 0.0
    order = reference["scores"].argsort(descending=True)[:count]
    floor = float(reference["scores"][order[-1]]) - margin
    candidates = other["scores"] >= floor
    ref_boxes, other_boxes = reference["boxes"][order], other["boxes"][candidates]
    overlaps = box_iou(ref_boxes, other_boxes).nan_to_num(0.0)
    identical = (ref_boxes[:, None, :] == other_boxes[None, :, :]).all(-1)
    overlaps[identical] = 1.0  # zero-area boxes (clipped at an edge) have IoU NaN: max() would be NaN
    overlaps[reference["labels"][order][:, None] != other["labels"][candidates][None, :]] = -1
    matched = 0
    for row in overlaps:
        if row.numel() and float(row.max()) >= iou:
            matched += 1
            overlaps[:, int(row.argmax())] = -1
    return matched / count


@torch.no_grad()
def dense_outputs(model: torch.nn.Module, paths: list[str], images) -> list[torch.Tensor]:
    """The float tensors the submodules at `paths` return while `model` runs on `images`, in call order."""
    outputs: list[torch.Tensor] = []

    def keep(module, args, result):
        leaves = torch.utils._pytree.tree_leaves(result)
        outputs.extend(t.float() for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point())
    handles = [model.get_submodule(path).register_forward_hook(keep) for path in paths]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def dense_error(reference: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """max over tensors of max |reference - other| / max |reference|."""
    if len(reference) != len(other):
        return float("inf")
    return max(float((a - b.reshape(a.shape)).abs().max() / a.abs().max().clamp_min(1e-12))
               for a, b in zip(reference, other))


def compiled(model: torch.nn.Module, paths: list[str]) -> torch.nn.Module:
    """A copy of `model` with each submodule at `paths` wrapped in torch.compile (inductor, static shapes)."""
    import copy

    twin = copy.deepcopy(model)
    for path in paths:
        twin.set_submodule(path, torch.compile(twin.get_submodule(path), dynamic=False))
    return twin


def build(name: str, torchvision_builder, options: dict):
    """(detkit model, torchvision model or None), the same random weights, eval mode, NCHW."""
    torch.manual_seed(0)
    ours = models.build(name, **options)
    theirs = None
    if torchvision_builder is not None:
        theirs = torchvision_builder().eval()
        ours.load_state_dict(theirs.state_dict())
    return ours.eval(), theirs


class _Flat(torch.nn.Module):
    """A part called on the flat list of its input tensors, returning a flat tuple (what converters take)."""

    def __init__(self, part, in_spec):
        super().__init__()
        self.part, self.in_spec = part, in_spec

    def forward(self, *leaves):
        return tuple(pytree.tree_leaves(self.part(*pytree.tree_unflatten(list(leaves), self.in_spec))))


class OpenVINOPart(torch.nn.Module):
    """A torchvision part converted by openvino.convert_model for inputs like `args` and compiled for the
    CPU at `precision` ("f32" or "bf16"), latency hint, torch's threads; returns the part's own structure."""

    def __init__(self, part: torch.nn.Module, args: tuple, precision: str):
        super().__init__()
        import openvino as ov

        leaves, in_spec = pytree.tree_flatten(tuple(args))
        with torch.no_grad():
            _, self.out_spec = pytree.tree_flatten(part(*args))
            converted = ov.convert_model(_Flat(part, in_spec).eval(), example_input=tuple(leaves))
        self.compiled = openvino_core().compile_model(converted, "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        self.request = self.compiled.create_infer_request()

    def forward(self, *args):
        self.request.infer([t.detach().contiguous().numpy() for t in pytree.tree_leaves(args)])
        outputs = [torch.from_numpy(np.array(self.request.get_output_tensor(i).data))
                   for i in range(len(self.compiled.outputs))]
        return pytree.tree_unflatten(outputs, self.out_spec)


def openvino_peer(theirs: torch.nn.Module, paths: list[str], images, precision: str) -> torch.nn.Module:
    """A copy of torchvision's model with its dense part (the parts at `paths`) run by OpenVINO."""
    twin = copy.deepcopy(theirs).eval()
    inputs = capture_inputs(twin, paths, images)
    for path in paths:
        twin.set_submodule(path, OpenVINOPart(twin.get_submodule(path), inputs[path][0], precision))
    return twin


def peers(theirs, paths: list[str], images, precisions: list[str]) -> dict:
    """The models a user would run instead of detkit: torchvision eager in both layouts, and its
    OpenVINO-converted twin at each precision (when openvino is installed)."""
    found = {"torchvision eager (NCHW)": theirs,
             "torchvision eager (channels-last)": ChannelsLast(copy.deepcopy(theirs))}
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("openvino is not installed: its rows are left out (pip install openvino)")
        return found
    for precision in precisions:
        found[f"OpenVINO {precision} dense + torchvision"] = openvino_peer(theirs, paths, images, precision)
    return found


def detkit_runtimes(ours, chosen: list[str], calibration) -> dict:
    """detkit.runtimes.optimize(ours, runtime) for each chosen runtime; int8 once per engine."""
    from detkit.runtimes.int8_torch import torch_int8_available

    built = {}
    for runtime in chosen:
        if runtime != "int8":
            built[runtime] = runtimes.optimize(ours, runtime)
            continue
        for engine in INT8_ENGINES:
            if engine == "torch" and not torch_int8_available():
                print("int8 (torch): this torch build has no x86 quantized backend: left out")
                continue
            built[f"int8 ({engine})"] = runtimes.optimize(ours, "int8", calibration=calibration, int8_engine=engine)
    return built


class DenseTimer:
    """Seconds spent inside the submodules at `paths` during each call of a model (forward hooks)."""

    def __init__(self, model, paths: list[str]):
        self.spent, self.start = 0.0, 0.0
        self.handles = []
        for path in paths:
            module = model.get_submodule(path)
            self.handles.append(module.register_forward_pre_hook(self._enter))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, *_):
        self.start = time.perf_counter()

    def _leave(self, *_):
        self.spent += time.perf_counter() - self.start

    def timed(self, fn):
        """fn wrapped so that each call appends its dense seconds to self.per_call."""
        self.per_call = []

        def run():
            self.spent = 0.0
            fn()
            self.per_call.append(self.spent)
        return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calibration", type=int, default=8, help="random calibration images for int8")
    parser.add_argument("--compare", type=int, default=50, help="eager's top detections matched per runtime")
    parser.add_argument("--runtimes", nargs="*", default=None,
                        help=f"subset of {list(RUNTIMES)} (default: all; the bf16 ones only on a CPU with bfloat16 "
                             "hardware)")
    parser.add_argument("--compile", action="store_true", help="also time the fused model under torch.compile")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--smoke", action="store_true",
                        help=f"small models ({', '.join(SMOKE)}) without peers: checks that the script runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = SMOKE if args.smoke else MODELS
    bf16_hardware = runtimes.has_bfloat16_hardware()
    has_openvino = importlib.util.find_spec("openvino") is not None
    chosen = args.runtimes if args.runtimes is not None else \
        [r for r in RUNTIMES if ("bf16" not in r or bf16_hardware) and (has_openvino or "openvino" not in r)]
    names = args.models or list(table)
    height, width = (128, 160) if args.smoke else (480, 640)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, height, width, generator=generator)]
    calibration = [torch.rand(3, height, width, generator=generator) for _ in range(args.calibration)]
    peaks = {"fp32": machine.gemm_gflops()}
    if bf16_hardware:
        peaks["bf16"] = machine.gemm_gflops(dtype=torch.bfloat16)
    print(f"detkit runtimes vs torchvision {torchvision.__version__} eager and OpenVINO, CPU, {args.threads} threads, "
          f"one {height}x{width} image, median of {args.repeats}; GEMM peak ({machine.GEMM_SIZE}x{machine.GEMM_SIZE} "
          f"torch.mm): " + ", ".join(f"{kind} {peak:.1f} GFLOP/s" for kind, peak in peaks.items()) + "\n")
    print("| model | runtime | ms | dense part ms | rest ms | ratio to torchvision eager | ratio to OpenVINO | "
          "GFLOP/s | share of its GEMM peak | dense error | detections matched | outputs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for name in names:
        torchvision_builder, options = table[name]
        ours, theirs = build(name, torchvision_builder, options)
        paths = dense_parts(ours)
        flops = inference_flops(ours, images)
        ours.channels_last = False  # the twin check in one layout on both sides
        with torch.no_grad():
            if theirs is None:
                checks = {}
            elif name in TIED_SCORES:  # their detections are an arbitrary pick among ties: compare the network
                checks = {"torchvision": dense_error(dense_outputs(theirs, paths, images),
                                                     dense_outputs(ours, paths, images)) <= 1e-5}
            else:
                checks = {"torchvision": same_detections(ours(images), theirs(images))}
        ours.channels_last = options.get("channels_last", False)
        others = peers(theirs, paths, images, ["f32", "bf16"] if bf16_hardware else ["f32"]) if theirs else {}
        optimized = detkit_runtimes(ours, chosen, calibration)
        if args.compile:
            optimized["fused + torch.compile"] = compiled(runtimes.optimize(ours, "fused"), paths)
            start = time.perf_counter()
            with torch.no_grad():
                optimized["fused + torch.compile"](images)
            print(f"{name}: torch.compile took {time.perf_counter() - start:.1f} s on the first call")
        with torch.no_grad():
            reference = ours(images)
            reference_dense = dense_outputs(ours, paths, images)
            errors = {runtime: dense_error(reference_dense, dense_outputs(model, paths, images))
                      for runtime, model in optimized.items()}
            fractions = {runtime: matched_fraction(reference[0], model(images)[0], args.compare,
                                                   MATCH_IOU.get(runtime, 0.95))
                         for runtime, model in optimized.items()}
            every = {**others, **optimized}
            timers = {label: DenseTimer(model.model if isinstance(model, ChannelsLast) else model, paths)
                      for label, model in every.items()}
            fns = {label: timers[label].timed(lambda m=model: m(images)) for label, model in every.items()}
            times = machine.alternated_medians(fns, args.repeats)
        dense = {label: statistics.median(timer.per_call[1:]) for label, timer in timers.items()}
        torchvision_best = min((times[k] for k in others if k.startswith("torchvision")), default=None)
        openvino_best = min((times[k] for k in others if k.startswith("OpenVINO")), default=None)

        def row(label: str, outputs: str, error: str = "", matched: str = "", precision: str = "fp32") -> str:
            seconds = times[label]
            achieved = flops / seconds / 1e9
            peak = peaks.get(precision)
            ratio = lambda base: f"{base / seconds:.2f}x" if base else "-"  # noqa: E731
            return (f"| {name} | {label} | {seconds * 1e3:.1f} | {dense[label] * 1e3:.1f} | "
                    f"{(seconds - dense[label]) * 1e3:.1f} | {ratio(torchvision_best)} | {ratio(openvino_best)} | "
                    f"{achieved:.0f} | {f'{achieved / peak:.0%}' if peak else '-'} | {error} | {matched} | {outputs} |")
        if checks:
            ok &= checks["torchvision"]
        for label in others:
            verdict = "the peer" if label.startswith("OpenVINO") else ("agree" if checks["torchvision"] else "DIFFER")
            print(row(label, verdict, precision="bf16" if "bf16" in label else "fp32"))
        for runtime in optimized:
            tolerance = DENSE_TOLERANCE[runtime]
            good = tolerance is None or errors[runtime] <= tolerance
            ok &= good
            verdict = "not checked" if tolerance is None else f"{'within' if good else 'OUTSIDE'} {tolerance:g}"
            print(row(runtime, verdict, f"{errors[runtime]:.1e}", f"{fractions[runtime]:.0%}",
                      PRECISION.get(runtime, "fp32")))
    print("\nratios = the peer's time / the row's time (higher is faster), to the faster torchvision layout and the "
          "faster OpenVINO precision; dense part ms: time inside the dense part (detkit.runtimes.parts), rest: "
          "transform, anchors, decoding, NMS, RoI heads; dense error: max |runtime - eager| / max |eager| over the "
          "dense part's outputs; detections matched: information only (random weights)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
