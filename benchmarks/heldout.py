"""A trained Shapes checkpoint scored on a fresh Shapes set that nothing was
tuned on: the checkpoint's own preset and image size, another seed (7; no
config uses it), 500 images. Boxes always, masks too for a mask model.

    python benchmarks/heldout.py work_dirs/fasterrcnn_shapes/last.pth
    python benchmarks/heldout.py work_dirs/maskrcnn_shapes/last.pth --images 500 --seed 7

The validation split is what configs are tuned on; this number is the one
that says whether the recipe generalises. Each runtime is also timed on one
held-out image at the model's own input size (--threads threads, median of
--time-runs calls after 3 warm-up calls), beside the machine's GEMM figures:
an accuracy-against-latency table to choose a model and runtime from.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

HELD_OUT_SEED = 7


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint trained on Shapes")
    parser.add_argument("--images", type=int, default=500, help="images in the fresh set (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="the fresh set's seed (default: %(default)s)")
    parser.add_argument("--root", default=os.path.join(REPO, "datasets", "shapes_heldout"),
                        help="where the fresh set is generated once (default: %(default)s)")
    parser.add_argument("--runtimes", nargs="+", default=["eager"],
                        help="detkit.runtimes to score the checkpoint with (default: eager); int8:torch and "
                             "int8:onnxruntime choose int8's engine")
    parser.add_argument("--calibration", type=int, default=32,
                        help="training images that calibrate int8 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads, for the evaluation and the timing (default: %(default)s)")
    parser.add_argument("--time-runs", type=int, default=30, help="timed calls per runtime (default: %(default)s)")
    return parser.parse_args(argv)


def fresh_set(data, root: str, images: int, seed: int):
    """The config's Shapes spec with another seed and `images` validation images."""
    from detkit.engine.build import prepare_shapes

    if data.format != "shapes":
        raise ValueError(f"the checkpoint was trained on data.format={data.format!r}, not Shapes")
    if data.shapes.seed == seed:
        raise ValueError(f"the checkpoint's own Shapes seed is {seed}; pick another --seed")
    spec = dataclasses.replace(data.shapes, seed=seed, num_train=1, num_val=images)
    return prepare_shapes(dataclasses.replace(data, root=root, shapes=spec))


def calibration_images(config, count: int) -> list[str]:
    """The first `count` images of the checkpoint's own training split (int8's calibration set)."""
    from detkit.engine.build import prepare_shapes

    shapes = prepare_shapes(config.data)
    with open(shapes.coco_train) as f:
        names = sorted(image["file_name"] for image in json.load(f)["images"])
    return [os.path.join(shapes.image_root, name) for name in names[:count]]


def score(checkpoint: str, root: str, images: int, seed: int, runtime: str = "eager",
          calibration: int = 32, time_runs: int = 30) -> tuple[dict[str, dict[str, float]], tuple[float, float]]:
    """({"bbox": stats, "segm"?: stats}, (ms per image, of which in the dense part)) of the checkpoint, run by
    `runtime` (int8: calibrated on `calibration` training images), on the fresh set."""
    from detkit.api import load_model, optimized
    from detkit.engine.report import evaluate_model

    model = load_model(checkpoint, "cpu")
    name, _, engine = runtime.partition(":")  # int8:torch -> int8, its engine
    if name != "eager":
        model = optimized(model, name, calibration_images(model.config, calibration) if name == "int8" else None,
                          int8_engine=engine or "auto")
    paths = fresh_set(model.config.data, root, images, seed)
    iou_types = ["bbox", "segm"] if model.config.eval.iou_type == "segm" else ["bbox"]
    results = {}
    for iou_type in iou_types:
        with tempfile.TemporaryDirectory() as out:
            report = evaluate_model(model, out, data="coco", images=paths.image_root, ann=paths.coco_val,
                                    iou_type=iou_type)
            print(report)
            with open(os.path.join(out, "metrics.json")) as f:
                results[iou_type] = json.load(f)["stats"]
    first = os.path.join(paths.image_root, sorted(os.listdir(paths.image_root))[0])
    return results, milliseconds(model, first, time_runs)


@torch.no_grad()
def milliseconds(model, path: str, runs: int) -> tuple[float, float]:
    """(median wall time of model([image]) on the image at `path`, after 3 warm-up calls; the median
    time inside its dense part, detkit.runtimes.parts, NaN for a model type without one), in ms."""
    from benchmarks.runtimes import DenseTimer
    from detkit.api import to_tensor
    from detkit.runtimes.machine import alternated_medians
    from detkit.runtimes.parts import dense_parts

    image = to_tensor(path)
    try:
        timer = DenseTimer(model, dense_parts(model))
    except ValueError:  # no dense part known (TinySSD)
        return alternated_medians({"whole": lambda: model([image])}, runs, warmup=3)["whole"] * 1e3, float("nan")
    run = timer.timed(lambda: model([image]))
    whole = alternated_medians({"whole": run}, runs, warmup=3)["whole"] * 1e3
    return whole, statistics.median(timer.per_call[3:]) * 1e3


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.runtimes import has_bfloat16_hardware, machine

    torch.set_num_threads(args.threads)
    results = {runtime: score(args.checkpoint, args.root, args.images, args.seed, runtime, args.calibration,
                              args.time_runs) for runtime in args.runtimes}
    gemm = f"fp32 {machine.gemm_gflops():.0f}" + \
        (f", bf16 {machine.gemm_gflops(dtype=torch.bfloat16):.0f}" if has_bfloat16_hardware() else "")
    print(f"\nheld-out Shapes set (seed {args.seed}, {args.images} images): {args.checkpoint}; ms: one image, "
          f"{args.threads} threads, median of {args.time_runs}; GEMM peak {gemm} GFLOP/s")
    print("| runtime | iou type | AP50 | AP | AP75 | AP change vs the first runtime | AP50 change | ms / image | "
          "of which dense part |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    first = results[args.runtimes[0]][0]
    for runtime, (by_type, (ms, dense_ms)) in results.items():
        for iou_type, stats in by_type.items():
            change, change50 = (100 * (stats[key] - first[iou_type][key]) for key in ("AP", "AP50"))
            print(f"| {runtime} | {iou_type} | {stats['AP50']:.3f} | {stats['AP']:.3f} | {stats['AP75']:.3f} | "
                  f"{change:+.3f} points | {change50:+.3f} points | {ms:.1f} | {dense_ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
