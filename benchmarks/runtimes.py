"""Times detkit's inference runtimes (detkit.runtimes.optimize: eager, fused,
bf16, onnxruntime, int8) against torchvision's eager model with the same random
weights, one image at a time, in one process.

    python benchmarks/runtimes.py [--threads 2] [--repeats 7] [--calibration 8]
    python benchmarks/runtimes.py --smoke --repeats 1   # small models, no torchvision: checks the script runs

Models: ssd300_vgg16 (channels-last on both sides, as benchmarks/models.py times it)
and fasterrcnn_resnet50_fpn (NCHW), at their default input sizes (SSD
resizes to 300x300, Faster R-CNN to 800 on the short side), on one 480x640
image. "int8" is calibrated on --calibration other random images of the same
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
import os
import statistics
import sys
import time

import torch
import torchvision
from torchvision.ops import box_iou

from detkit import models, runtimes
from detkit.runtimes import machine
from detkit.runtimes.parts import dense_parts

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.models import ChannelsLast, _torchvision_rcnn, inference_flops, same_detections  # noqa: E402  models.py's peer, check, FLOPs

RUNTIMES = runtimes.RUNTIMES
# runtime -> the largest dense error it may have against detkit eager (None: shown, not checked). float32
# runtimes round differently; bfloat16 keeps 8 significant bits; int8 is judged by AP (benchmarks/heldout.py)
DENSE_TOLERANCE = {"eager": 0.0, "fused": 1e-4, "fused + torch.compile": 1e-4, "onnxruntime": 1e-4, "bf16": 5e-2,
                   "int8": None}
# the GEMM peak a runtime's convolutions are held to (int8: none measured, shown as "-")
PRECISION = {"bf16": "bf16", "int8": "int8"}
MATCH_IOU = {"int8": 0.8}  # detections matched at IoU >= this (0.95 for the others); information only


# name -> (torchvision builder or None, detkit build options)
MODELS = {
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


def alternate(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn `repeats` times after one warm-up round."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def build(name: str, torchvision_builder, options: dict):
    """(detkit model, torchvision model or None), the same random weights, eval mode."""
    torch.manual_seed(0)
    ours = models.build(name, **options)
    theirs = None
    if torchvision_builder is not None:
        theirs = torchvision_builder().eval()
        ours.load_state_dict(theirs.state_dict())
        if options.get("channels_last"):  # the peer in the same, faster layout: one call for its user
            theirs = ChannelsLast(theirs).eval()
    return ours.eval(), theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calibration", type=int, default=8, help="random calibration images for int8")
    parser.add_argument("--compare", type=int, default=50, help="eager's top detections matched per runtime")
    parser.add_argument("--runtimes", nargs="*", default=None,
                        help=f"subset of {list(RUNTIMES)} (default: all; bf16 only on a CPU with bfloat16 hardware)")
    parser.add_argument("--compile", action="store_true", help="also time the fused model under torch.compile")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--smoke", action="store_true",
                        help=f"small models ({', '.join(SMOKE)}) without torchvision: checks that the script runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = SMOKE if args.smoke else MODELS
    chosen = args.runtimes if args.runtimes is not None else \
        [r for r in RUNTIMES if r != "bf16" or runtimes.has_bfloat16_hardware()]
    names = args.models or list(table)
    height, width = (128, 160) if args.smoke else (480, 640)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, height, width, generator=generator)]
    calibration = [torch.rand(3, height, width, generator=generator) for _ in range(args.calibration)]
    peaks = {"fp32": machine.gemm_gflops()}
    if "bf16" in chosen:
        peaks["bf16"] = machine.gemm_gflops(dtype=torch.bfloat16)
    print(f"detkit runtimes vs torchvision {torchvision.__version__} eager, CPU, {args.threads} threads, one "
          f"{height}x{width} image, median of {args.repeats}; GEMM peak ({machine.GEMM_SIZE}x{machine.GEMM_SIZE} "
          f"torch.mm): " + ", ".join(f"{kind} {peak:.1f} GFLOP/s" for kind, peak in peaks.items()) + "\n")
    print("| model | runtime | ms | ratio to torchvision eager | GFLOP/s | share of its GEMM peak | dense error | "
          "detections matched | outputs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for name in names:
        torchvision_builder, options = table[name]
        ours, theirs = build(name, torchvision_builder, options)
        paths = dense_parts(ours)
        flops = inference_flops(ours, images)
        optimized = {runtime: runtimes.optimize(ours, runtime, calibration=calibration if runtime == "int8" else None)
                     for runtime in chosen}
        if args.compile:
            optimized["fused + torch.compile"] = compiled(runtimes.optimize(ours, "fused"), paths)
            start = time.perf_counter()
            with torch.no_grad():
                optimized["fused + torch.compile"](images)
            print(f"{name}: torch.compile took {time.perf_counter() - start:.1f} s on the first call")
        with torch.no_grad():
            reference = ours(images)
            reference_dense = dense_outputs(ours, paths, images)
            checks = {"torchvision": same_detections(reference, theirs(images))} if theirs is not None else {}
            errors = {runtime: dense_error(reference_dense, dense_outputs(model, paths, images))
                      for runtime, model in optimized.items()}
            fractions = {runtime: matched_fraction(reference[0], model(images)[0], args.compare,
                                                   MATCH_IOU.get(runtime, 0.95)) for runtime, model in optimized.items()}
            fns = {runtime: (lambda m=model: m(images)) for runtime, model in optimized.items()}
            if theirs is not None:
                fns["torchvision"] = lambda: theirs(images)
            times = alternate(fns, args.repeats)
        base = times.get("torchvision")
        if base:
            ok &= checks["torchvision"]
            print(f"| {name} | torchvision eager | {base * 1e3:.1f} | 1.00x | {flops / base / 1e9:.0f} | "
                  f"{flops / base / 1e9 / peaks['fp32']:.0%} | | | {'agree' if checks['torchvision'] else 'DIFFER'} |")
        for runtime in optimized:
            tolerance = DENSE_TOLERANCE[runtime]
            good = tolerance is None or errors[runtime] <= tolerance
            ok &= good
            verdict = "not checked" if tolerance is None else f"{'within' if good else 'OUTSIDE'} {tolerance:g}"
            ratio = f"{base / times[runtime]:.2f}x" if base else "-"
            achieved = flops / times[runtime] / 1e9
            peak = peaks.get(PRECISION.get(runtime, "fp32"))
            print(f"| {name} | {runtime} | {times[runtime] * 1e3:.1f} | {ratio} | {achieved:.0f} | "
                  f"{f'{achieved / peak:.0%}' if peak else '-'} | {errors[runtime]:.1e} | {fractions[runtime]:.0%} | "
                  f"{verdict} |")
    print("\nratio = torchvision eager time / runtime time (higher is faster); dense error: max |runtime - eager| / "
          "max |eager| over the dense part's outputs; detections matched: information only (random weights)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
