"""The cost of detkit's error analysis against its plain COCO evaluation and
tidecv, on the set benchmarks/test_coco_eval.py times (5,000 640x480 images,
80 categories, 1-14 GT per image with 1% crowd, 100 detections per image),
written to JSON files that every side reads.

    python benchmarks/analysis.py [--images 5000] [--rounds 3] [--tide-rounds 1] [--skip-tide]

Sides, each timed from the files to its numbers (JSON loading included):
  - detkit evaluation: evaluate_coco (COCOEvaluator: the 12 stats);
  - detkit analysis: detkit.evaluation.analyze with its defaults: the same
    metrics, TIDE's six error types as ΔAP at each of COCO's ten IoU
    thresholds plus FP/FN, the confusion matrix, per-class F1 thresholds and
    the 8 worst images drawn (on grey: the set has no pixels);
  - tidecv 1.0.1: its COCO-style run at IoU 0.5 only (TIDE.evaluate, the main
    and special errors), as its README runs it; its loader wants polygons
    the set lacks, so the boxes are fed to tidecv.Data directly.
Medians over rounds, after one untimed detkit call (numba compiles or loads
its cache). The issue asks for the analysis in at most 3x the evaluation.
Prints a markdown table; the fp32 GEMM GFLOP/s measured just before each
side stands beside its wall time (a busy machine shows as a lower number).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detkit.runtimes.machine import gemm_gflops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each detkit side")
    parser.add_argument("--tide-rounds", type=int, default=1, help="timed rounds of tidecv (slow)")
    parser.add_argument("--skip-tide", action="store_true")
    return parser.parse_args(argv)


def write_set(folder: str, images: int) -> tuple[str, str]:
    from detkit.data.synthetic import synthetic_coco

    gt, results = synthetic_coco(num_images=images, num_categories=80, max_gt=14, dets_per_image=100,
                                 crowd_fraction=0.01, seed=0)
    paths = os.path.join(folder, "gt.json"), os.path.join(folder, "results.json")
    for path, payload in zip(paths, (gt, results)):
        with open(path, "w") as f:
            json.dump(payload, f)
    return paths


def run_evaluation(gt_path: str, results_path: str) -> float:
    from detkit.evaluation import evaluate_coco

    return evaluate_coco(gt_path, results_path).stats["AP50"]


def run_analysis(gt_path: str, results_path: str) -> float:
    from detkit.evaluation import analyze

    return analyze(gt_path, results_path).metrics.stats["AP50"]


def run_tidecv(gt_path: str, results_path: str) -> float:
    from tidecv import TIDE, Data

    with open(gt_path) as f:
        gt = json.load(f)
    with open(results_path) as f:
        results = json.load(f)
    truth, predictions = Data("gt"), Data("results")
    for image in gt["images"]:
        truth.add_image(image["id"], image["file_name"])
    for category in gt["categories"]:
        truth.add_class(category["id"], category["name"])
    for a in gt["annotations"]:
        if a["iscrowd"]:
            truth.add_ignore_region(a["image_id"], a["category_id"], a["bbox"], None)
        else:
            truth.add_ground_truth(a["image_id"], a["category_id"], a["bbox"], None)
    for r in results:
        predictions.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"], None)
    tide = TIDE()
    run = tide.evaluate(truth, predictions, mode=TIDE.BOX)
    tide.get_main_errors()
    tide.get_special_errors()
    return run.ap / 100


def timed(run: Callable[[str, str], float], paths: tuple[str, str], rounds: int) -> tuple[float, float, float]:
    """(median seconds, GEMM GFLOP/s just before, the AP50 it computed)."""
    gflops = gemm_gflops()
    seconds, ap50 = [], 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        ap50 = run(*paths)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), gflops, ap50


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as folder:
        paths = write_set(folder, args.images)
        run_analysis(*paths)  # numba: compile or load the cache, untimed
        sides = [("detkit evaluation", "12 COCO stats", run_evaluation, args.rounds),
                 ("detkit analysis", "stats + 6 types x 10 IoUs + FP/FN, confusion, F1, 8 worst drawn",
                  run_analysis, args.rounds)]
        if not args.skip_tide:
            sides.append(("tidecv 1.0.1", "6 types + FP/FN at IoU 0.5", run_tidecv, args.tide_rounds))
        rows = [(name, what, rounds, *timed(run, paths, rounds)) for name, what, run, rounds in sides]
    load = os.getloadavg()[0]
    print(f"\n{args.images:,} images, 80 categories; {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end\n")
    print("| side | computes | rounds | median wall s | fp32 GEMM GFLOP/s | x evaluation | AP50 |")
    print("|---|---|---|---|---|---|---|")
    base = rows[0][3]
    for name, what, rounds, seconds, gflops, ap50 in rows:
        print(f"| {name} | {what} | {rounds} | {seconds:.2f} | {gflops:.0f} | {seconds / base:.2f} | {ap50:.4f} |")
    ratio = rows[1][3] / base
    print(f"\nanalysis / evaluation = {ratio:.2f} ({'within' if ratio <= 3 else 'OVER'} the 3x budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
