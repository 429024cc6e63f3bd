"""Do anchors fitted to the data help? Measured on the "thin" Shapes preset
(wires and poles, bars 1:5), whose boxes the default anchors fit badly.

    python benchmarks/anchors.py [--epochs 3] [--train 1500] [--work-dir work_dirs/anchors_bench]

1. Best possible recall (detkit.models.fit_anchors) of the default and the
   fitted anchors, for the default SSD (configs/ssd_shapes.py, 128 px) and
   the small Faster R-CNN (configs/fasterrcnn_shapes.py) at 128 and 256 px.
2. configs/ssd_shapes.py trained on the thin preset for the same short
   budget (--epochs over --train images, same seed) with its default
   default-box scales and with the fitted ones, through tools/train.py as
   users run it; each run's last checkpoint scored on a fresh thin set
   (seed 7) that nothing was fitted or tuned on.

Prints a markdown table; wall times beside the machine's fp32 GEMM GFLOP/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detkit.runtimes.machine import gemm_gflops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=1500, help="training images")
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--work-dir", default=os.path.join("work_dirs", "anchors_bench"))
    return parser.parse_args(argv)


def config_of(name: str, overrides: list[str]):
    from detkit.config import load_config

    return load_config(os.path.join(REPO, "configs", name), overrides)


def records_of(data_config):
    from detkit.data import load_records
    from detkit.engine.build import prepare_shapes

    paths = prepare_shapes(data_config)
    return load_records(paths.coco_train, image_root=paths.image_root), paths


def recall_rows(records, rows: list) -> dict:
    """Best possible recall of three models before and after fitting; the SSD fit is returned."""
    from detkit.models import fit_anchors

    ssd = config_of("ssd_shapes.py", [])
    rcnn = config_of("fasterrcnn_shapes.py", [])
    cases = [("ssd_shapes (128 px)", ssd.model.name, dict(ssd.model.options)),
             ("fasterrcnn_shapes (128 px)", rcnn.model.name, dict(rcnn.model.options)),
             ("fasterrcnn_shapes at 256 px", rcnn.model.name,
              {**rcnn.model.options, "min_size": 256, "max_size": 256,
               "anchor_sizes": [2 * s for s in rcnn.model.options["anchor_sizes"]]})]
    fits = {}
    for label, name, options in cases:
        start = time.perf_counter()
        fit = fit_anchors(records, name, **options)
        rows.append((label, fit.iou_threshold, fit.default_bpr, fit.fitted_bpr, fit.set_line(),
                     time.perf_counter() - start))
        fits[label] = fit
    return fits["ssd_shapes (128 px)"]


def train(work_dir: str, overrides: list[str]) -> float:
    if os.path.exists(os.path.join(work_dir, "last.pth")):
        raise SystemExit(f"{work_dir} holds an earlier run; remove it or pass another --work-dir")
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, "configs", "ssd_shapes.py"),
               "--work-dir", work_dir, "--no-progress", "--set", *overrides]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def held_out(checkpoint: str, images: str, ann: str, out: str) -> dict:
    from detkit import load_model
    from detkit.engine.report import evaluate_model

    evaluate_model(load_model(checkpoint, "cpu"), out, data="coco", images=images, ann=ann)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["stats"]


def main(argv=None) -> int:
    args = parse_args(argv)
    work = os.path.abspath(args.work_dir)
    gflops = gemm_gflops()
    print(f"fp32 GEMM 1024x1024: {gflops:.1f} GFLOP/s")
    data = [f"data.root={os.path.join(work, 'data')}", "data.shapes.preset=thin",
            f"data.shapes.num_train={args.train}", "data.shapes.num_val=100"]
    records, _ = records_of(config_of("ssd_shapes.py", data).data)
    rows: list = []
    ssd_fit = recall_rows(records, rows)
    print("\n| model | positive IoU | default BPR | fitted BPR | fitted options | fit time |")
    print("|---|---:|---:|---:|---|---:|")
    for label, iou, before, after, line, seconds in rows:
        print(f"| {label} | {iou:g} | {before:.3f} | {after:.3f} | `{line}` | {seconds:.1f} s |")
    held = config_of("ssd_shapes.py", [f"data.root={os.path.join(work, 'held_out')}", "data.shapes.preset=thin",
                                       "data.shapes.seed=7", "data.shapes.num_train=1",
                                       f"data.shapes.num_val={args.held_out}"]).data
    _, held_paths = records_of(held)
    budget = [*data, f"schedule.epochs={args.epochs}", f"eval.period={args.epochs}"]
    runs = {"default scales": budget, "fitted scales": [*budget, *ssd_fit.set_line().split()]}
    results = []
    for name, overrides in runs.items():
        folder = os.path.join(work, name.replace(" ", "_"))
        wall = train(folder, overrides)
        stats = held_out(os.path.join(folder, "last.pth"), held_paths.image_root, held_paths.coco_val,
                         os.path.join(folder, "held_out_eval"))
        results.append((name, stats, wall))
    print(f"\nssd_shapes on the thin preset, {args.epochs} epochs of {args.train} images, same seed; "
          f"held-out: {args.held_out} fresh thin images (seed 7)")
    print("\n| anchors | held-out AP50 | held-out AP | wall |")
    print("|---|---:|---:|---:|")
    for name, stats, wall in results:
        print(f"| {name} | {stats['AP50']:.3f} | {stats['AP']:.3f} | {wall / 60:.1f} min at {gflops:.0f} GFLOP/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
