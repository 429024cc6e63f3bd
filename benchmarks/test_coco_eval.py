"""COCO bbox evaluation: detkit against pycocotools and, if installed,
faster-coco-eval, on the same synthetic set (5,000 640x480 images, 80
categories, 1-14 GT per image with 1% crowd, 100 detections per image: ~80%
of them jittered GT, the rest random boxes).

    pytest benchmarks/test_coco_eval.py --benchmark-only [-k "not pycocotools"]

Each timed call covers loading the results, evaluate, accumulate and summarize
(building the ground-truth index included), on fresh copies of the inputs
made outside the clock (loadRes adds fields to the records it is given). The
12 statistics must agree with the peer's to 1e-9 before either is timed;
detkit's own test checks it against pycocotools, which takes about a minute
(3 rounds for detkit and faster-coco-eval, 1 for pycocotools). detkit's first
call (numba compile or cache load included) is reported apart.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io

import numpy as np
import pytest

from benchmarks.peers import Case
from detkit.evaluation import COCOEvaluator
from detkit.evaluation.coco import STAT_NAMES
from detkit.data.synthetic import synthetic_coco

SIDES = ["detkit", "pycocotools", "faster-coco-eval"]


def run_pycocotools(gt, results) -> np.ndarray:
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


def run_faster_coco_eval(gt, results) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731
    coco = COCO(gt, print_function=quiet)
    E = COCOeval_faster(coco, coco.loadRes(results), "bbox", print_function=quiet)
    E.evaluate()
    E.accumulate()
    E.summarize()
    return np.array(E.stats)


def run_detkit(gt, results) -> np.ndarray:
    evaluator = COCOEvaluator(gt, "bbox")
    evaluator.update(results)
    metrics = evaluator.compute()
    return np.array([metrics.stats[name] for name in STAT_NAMES])


def same_stats(ours: np.ndarray, theirs: np.ndarray) -> bool:
    return ours.shape == theirs.shape and bool(np.abs(ours - theirs).max() <= 1e-9)


@pytest.fixture(scope="module")
def coco_bbox() -> Case:
    gt, results = synthetic_coco(num_images=5000, num_categories=80, max_gt=14, dets_per_image=100,
                                 crowd_fraction=0.01, seed=0)
    peers = {"pycocotools": run_pycocotools}
    if importlib.util.find_spec("faster_coco_eval"):
        peers["faster-coco-eval"] = run_faster_coco_eval
    name = (f"COCO bbox eval, {len(gt['images']):,} images, {len(gt['annotations']):,} GT, "
            f"{len(results):,} detections")
    return Case(name, run_detkit, peers, same_stats,
                fresh_inputs=lambda: (copy.deepcopy(gt), copy.deepcopy(results)),
                rounds={"detkit": 3, "faster-coco-eval": 3, "pycocotools": 1})


@pytest.mark.parametrize("side", SIDES)
def test_coco_eval(peer_benchmark, coco_bbox: Case, side: str):
    if side not in coco_bbox.sides:
        pytest.skip(f"{side} is not installed")
    peer_benchmark(coco_bbox, side)
