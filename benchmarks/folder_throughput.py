"""Images per second on a folder: detkit's folder inference against the loop
a torchvision user writes, with the same weights.

    python benchmarks/folder_throughput.py [--folder DIR] [--images 200] [--model ssd300_resnet18]
        [--checkpoint PATH] [--runtimes eager,bf16] [--batch-sizes 1,8] [--workers 0,1,2] [--repeats 3]

detkit: detkit.inference.detect_files, the function tools/infer.py runs:
reader threads decode the files ahead of the model, which takes batches of
images; detections only (tools/infer.py also draws and writes them, in other
threads; that part is not timed here). One row per (runtime, batch size,
workers), the model made by detkit.runtimes.optimize as tools/infer.py
--runtime makes it. The loop: for each file, cv2.imread, BGR to RGB,
torchvision.transforms.functional.to_tensor, model([tensor]) under no_grad,
one image at a time, with the eager model (what a torchvision user runs).

Without --folder, a Shapes set of --images 300x300 images is generated in a
temporary folder. Without --checkpoint, the --model zoo model is built with
seeded random weights (5 classes; detections at --score-threshold). Before
timing, every configuration's detections are checked against the loop's: the
same labels, scores within 1e-4, boxes within 0.01 px (batched convolutions
round differently) for eager; for the other runtimes at least 98%
of the loop's detections (all kept, one direction) matched one-to-one in
detkit's with the same label at IoU >= 0.95 (int8: 80% at 0.8; the shares
and IoUs tests/runtimes/test_runtimes.py asks for), checked with --checkpoint only (random weights make
near-equal scores that any rounding reorders: shown, not checked). It exits
1 if a check fails. Timings: the median of
--repeats alternating runs over all the images; the machine's fp32 GEMM
GFLOP/s (detkit.runtimes.machine.gemm_gflops) is printed beside them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import cv2
import torch
from torchvision.transforms.functional import to_tensor

import detkit
from detkit import models
from detkit.runtimes import machine
from detkit.api import optimized
from detkit.data.shapes import generate
from detkit.inference import default_batch_size, detect_files, expand_inputs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.runtimes import matched_fraction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a folder of images (default: a generated Shapes set)")
    parser.add_argument("--images", type=int, default=200, help="images to generate / take from the folder")
    parser.add_argument("--image-size", type=int, default=300, help="side of the generated images")
    parser.add_argument("--model", default="ssd300_resnet18", help="zoo model with random weights")
    parser.add_argument("--checkpoint", help="a detkit checkpoint or zoo name with weights (instead of --model)")
    parser.add_argument("--runtimes", default="eager", help="comma-separated detkit.runtimes names for detkit's rows")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default: 1 and the model's default)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated reader-thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=16, help="images of the folder that calibrate int8")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    return parser.parse_args(argv)


# runtime -> (IoU, share of the loop's detections matched); eager is held to rounding instead
AGREEMENT = {"fused": (0.95, 0.98), "bf16": (0.95, 0.98), "onnxruntime": (0.95, 0.98), "int8": (0.8, 0.8)}
EXACT = ("eager",)


def build_model(args) -> torch.nn.Module:
    """The eager model: the checkpoint's, or --model's with seeded random weights."""
    if args.checkpoint:
        return detkit.load_model(args.checkpoint, "cpu")
    torch.manual_seed(0)
    model = models.build(args.model, num_classes=6)
    model.classes = ["circle", "square", "triangle", "hexagon", "star"]
    return model.eval()


def torchvision_loop(model, files, score_threshold):
    """The straightforward loop: one file read, converted and run at a time."""
    results = []
    with torch.no_grad():
        for path in files:
            image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            output = model([to_tensor(image)])[0]
            keep = output["scores"] >= score_threshold
            results.append({key: value[keep] for key, value in output.items()})
    return results


def detkit_folder(model, files, score_threshold, batch_size, workers):
    return [result for _, result in detect_files(model, files, score_threshold, batch_size, workers)]


def differences(ours, theirs) -> list[str]:
    """Where two runs' detections differ beyond rounding (empty: the same)."""
    problems = []
    for n, (a, b) in enumerate(zip(ours, theirs)):
        if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
            problems.append(f"image {n}: {len(a['labels'])} vs {len(b['labels'])} detections or other labels")
        elif len(a["boxes"]) and (float((a["boxes"] - b["boxes"]).abs().max()) > 0.01
                                  or float((a["scores"] - b["scores"]).abs().max()) > 1e-4):
            problems.append(f"image {n}: boxes or scores differ beyond rounding")
    if len(ours) != len(theirs):
        problems.append(f"{len(ours)} vs {len(theirs)} images")
    return problems


def matched_share(ours, theirs, iou: float) -> float:
    """Share of `theirs`' detections (all images) matched one-to-one in `ours`: same label, IoU >= iou."""
    counts = [len(t["scores"]) for t in theirs]
    matched = sum(matched_fraction(t, o, count, iou) * count for o, t, count in zip(ours, theirs, counts))
    return matched / max(1, sum(counts))


def images_per_second(run, count, repeats) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return count / statistics.median(seconds)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or generate(tmp, num_train=args.images, num_val=0, image_size=args.image_size,
                                         seed=0).image_root
        files = expand_inputs([folder])[: args.images]
        model = build_model(args)
        names = args.runtimes.split(",")
        calibration = files[: args.calibration]
        runs = {name: optimized(model, name, calibration if name == "int8" else None) for name in names}
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else \
            sorted({1, default_batch_size(model)})
        workers = [int(w) for w in args.workers.split(",")]
        configs = [(name, b, w) for name in names for b in batch_sizes for w in workers]

        reference = torchvision_loop(model, files, args.score_threshold)
        failed = False
        for name, batch_size, threads in configs:
            ours = detkit_folder(runs[name], files, args.score_threshold, batch_size, threads)
            label = f"{name}, batch {batch_size}, workers {threads}"
            if name in EXACT:
                problems = differences(ours, reference)
                if problems:
                    failed = True
                    print(f"{label}: detections differ: {'; '.join(problems[:5])}")
                continue
            iou, share = AGREEMENT[name]
            fraction = matched_share(ours, reference, iou)
            checked = bool(args.checkpoint)
            failed |= checked and fraction < share
            print(f"{label}: {fraction:.1%} of the loop's detections matched at IoU {iou} "
                  f"({'needs' if checked else 'not checked, random weights; would need'} {share:.0%})")
        print(f"{len(files)} images from {folder}; {sum(len(r['scores']) for r in reference)} detections; "
              f"model {args.checkpoint or args.model}, {torch.get_num_threads()} torch threads")
        if failed:
            return 1

        # alternate the runs so that drift of the machine's speed hits every row alike
        rates: dict = {"loop": []}
        for _ in range(args.repeats):
            rates["loop"].append(images_per_second(lambda: torchvision_loop(model, files, args.score_threshold),
                                                   len(files), 1))
            for name, batch_size, threads in configs:
                rates.setdefault((name, batch_size, threads), []).append(images_per_second(
                    lambda: detkit_folder(runs[name], files, args.score_threshold, batch_size, threads),
                    len(files), 1))
        loop = statistics.median(rates["loop"])
        print(f"GEMM peak: {machine.gemm_gflops():.1f} GFLOP/s (fp32, {torch.get_num_threads()} threads)")
        print("| pipeline | runtime | batch | reader threads | images/s | vs loop |\n|---|---|---:|---:|---:|---:|")
        print(f"| torchvision-style loop | eager | 1 | 0 | {loop:.1f} | 1.00x |")
        for name, batch_size, threads in configs:
            rate = statistics.median(rates[(name, batch_size, threads)])
            print(f"| detkit (tools/infer.py) | {name} | {batch_size} | {threads} | {rate:.1f} | {rate / loop:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
