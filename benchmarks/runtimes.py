"""Times detkit's inference runtimes (detkit.runtimes.optimize: eager, fused,
onnxruntime, int8) against torchvision's eager model with the same random
weights, one image at a time, in one process.

    python benchmarks/runtimes.py [--threads 2] [--repeats 7] [--calibration 8]
    python benchmarks/runtimes.py --smoke --repeats 1   # small models, no torchvision: checks the script runs

Models: ssd300_vgg16 (channels_last=True, as benchmarks/models.py times it)
and fasterrcnn_resnet50_fpn (NCHW), at their default input sizes (SSD
resizes to 300x300, Faster R-CNN to 800 on the short side), on one 480x640
image. "int8" is calibrated on --calibration other random images of the same
size (random weights: the timing is what this measures, not accuracy).

Before timing, each runtime's detections are matched to detkit eager's
(greedy one-to-one, same label, best eager score first, over eager's top
--compare detections and the runtime's down to a small score margin
below them): fused and onnxruntime must match >= 98% at IoU >= 0.95 (int8's share at IoU >= 0.8 is
printed, not checked: random weights), and detkit eager must give torchvision's detections
(labels equal, boxes within 1e-2 px, scores within 1e-4); the script exits
1 otherwise. Timings: the median of --repeats runs of each runtime and of
torchvision, alternating in one loop after a warm-up; ratio = runtime time /
torchvision eager time (lower is faster). ONNX Runtime's intra-op threads
are set to torch.get_num_threads() (--threads). The fp32 GEMM peak
(detkit.machine.gemm_gflops(), same threads) is printed for scale.
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

from detkit import machine, models, runtimes

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.models import _torchvision_rcnn, same_detections  # noqa: E402  the peer and the check of models.py

RUNTIMES = runtimes.RUNTIMES
# runtime -> (IoU, share of detections matched) that it must reach against detkit eager; int8 is reported,
# not checked: on random weights near-equal scores reorder under int8 rounding, which says nothing of accuracy
AGREEMENT = {"eager": (0.95, 1.0), "fused": (0.95, 0.98), "onnxruntime": (0.95, 0.98), "int8": (0.8, 0.0)}


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
    return ours.eval(), theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calibration", type=int, default=8, help="random calibration images for int8")
    parser.add_argument("--compare", type=int, default=50, help="eager's top detections matched per runtime")
    parser.add_argument("--runtimes", nargs="*", default=list(RUNTIMES), help=f"subset of {list(RUNTIMES)}")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--smoke", action="store_true",
                        help=f"small models ({', '.join(SMOKE)}) without torchvision: checks that the script runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = SMOKE if args.smoke else MODELS
    names = args.models or list(table)
    height, width = (128, 160) if args.smoke else (480, 640)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, height, width, generator=generator)]
    calibration = [torch.rand(3, height, width, generator=generator) for _ in range(args.calibration)]
    peak = machine.gemm_gflops()
    print(f"detkit runtimes vs torchvision {torchvision.__version__} eager, CPU, {args.threads} threads, one "
          f"{height}x{width} image, median of {args.repeats}; fp32 GEMM peak ({machine.GEMM_SIZE}x"
          f"{machine.GEMM_SIZE} torch.mm) {peak:.1f} GFLOP/s\n")
    print("| model | runtime | ms | ratio to torchvision eager | matched to detkit eager | outputs |")
    print("|---|---|---:|---:|---:|---|")
    ok = True
    for name in names:
        torchvision_builder, options = table[name]
        ours, theirs = build(name, torchvision_builder, options)
        optimized = {runtime: runtimes.optimize(ours, runtime, calibration=calibration if runtime == "int8" else None)
                     for runtime in args.runtimes}
        with torch.no_grad():
            reference = ours(images)
            checks = {}
            if theirs is not None:
                checks["torchvision"] = same_detections(reference, theirs(images))
            fractions = {runtime: matched_fraction(reference[0], model(images)[0], args.compare,
                                                   AGREEMENT[runtime][0]) for runtime, model in optimized.items()}
            fns = {runtime: (lambda m=model: m(images)) for runtime, model in optimized.items()}
            if theirs is not None:
                fns["torchvision"] = lambda: theirs(images)
            times = alternate(fns, args.repeats)
        base = times.get("torchvision")
        rows = ([("torchvision eager", times["torchvision"], "", checks["torchvision"])] if base else []) + [
            (runtime, times[runtime], f"{fractions[runtime]:.0%}", fractions[runtime] >= AGREEMENT[runtime][1])
            for runtime in optimized]
        for label, seconds, fraction, good in rows:
            ok &= good
            ratio = f"{seconds / base:.2f}x" if base else "-"
            print(f"| {name} | {label} | {seconds * 1e3:.1f} | {ratio} | {fraction} | {'agree' if good else 'DIFFER'} |")
    print("\nratio = runtime time / torchvision eager time (lower is faster); matched: eager's top detections "
          "found by the runtime with the same label (IoU >= 0.95 fused/onnxruntime, >= 0.8 int8)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
