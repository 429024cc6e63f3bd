"""Times COCO bbox evaluation: pycocotools, faster-coco-eval and detkit in one
process, on the same synthetic set (5,000 640x480 images, 80 categories, 1-14
GT per image with 1% crowd, 100 detections per image: ~80% of them jittered
GT, the rest random boxes).

    python benchmarks/coco_eval.py [--images 5000] [--repeats 3] [--skip-pycocotools]

Each timing covers loading the results, evaluate, accumulate and summarize
(building the ground-truth index included). The 12 statistics must agree:
detkit's with pycocotools' to 1e-9 (the script exits 1 otherwise). Numba's
compile time is measured on a tiny set first and reported apart.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import time

import numpy as np

from detkit.evaluation import COCOEvaluator
from detkit.evaluation.coco import STAT_NAMES
from detkit.testing import synthetic_coco


def run_pycocotools(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        E = COCOeval(coco, coco.loadRes(results), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return np.array(E.stats)


def run_faster_coco_eval(gt, results):
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731
    coco = COCO(gt, print_function=quiet)
    E = COCOeval_faster(coco, coco.loadRes(results), "bbox", print_function=quiet)
    E.evaluate()
    E.accumulate()
    E.summarize()
    return np.array(E.stats)


def run_detkit(gt, results):
    evaluator = COCOEvaluator(gt, "bbox")
    evaluator.update(results)
    metrics = evaluator.compute()
    return np.array([metrics.stats[name] for name in STAT_NAMES])


def timed(fn, gt, results, repeats):
    """Median seconds over `repeats` runs; inputs are copied outside the clock
    (loadRes adds fields to the records it is given)."""
    times, stats = [], None
    for _ in range(repeats):
        gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)
        start = time.perf_counter()
        stats = fn(gt_copy, results_copy)
        times.append(time.perf_counter() - start)
    return statistics.median(times), stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-pycocotools", action="store_true", help="it takes about a minute per run")
    args = parser.parse_args()

    start = time.perf_counter()
    tiny_gt, tiny_results = synthetic_coco(num_images=3, num_categories=4, seed=1)
    run_detkit(tiny_gt, tiny_results)
    compile_seconds = time.perf_counter() - start

    gt, results = synthetic_coco(num_images=args.images, num_categories=80, max_gt=14, dets_per_image=100,
                                 crowd_fraction=0.01, seed=0)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} GT, {len(results)} detections, 80 categories\n")
    rows = [("detkit", run_detkit), ("faster-coco-eval", run_faster_coco_eval)]
    if not args.skip_pycocotools:
        rows.append(("pycocotools", run_pycocotools))
    measured = {name: timed(fn, gt, results, 1 if name == "pycocotools" else args.repeats) for name, fn in rows}

    ours_time, ours_stats = measured["detkit"]
    print("| evaluator | seconds | detkit is faster by | max abs stat diff vs detkit |")
    print("|---|---:|---:|---:|")
    for name, (seconds, stats) in measured.items():
        diff = float(np.abs(stats - ours_stats).max())
        print(f"| {name} | {seconds:.2f} | {seconds / ours_time:.1f}x | {diff:.1e} |")
    print(f"\nnumba compile / cache load, first call on a tiny set: {compile_seconds:.2f} s (not in the table)")
    print("stats (detkit): " + ", ".join(f"{n}={v:.4f}" for n, v in zip(STAT_NAMES, ours_stats)))
    if "pycocotools" in measured and np.abs(measured["pycocotools"][1] - ours_stats).max() > 1e-9:
        print("STATS DIFFER from pycocotools", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
