"""detkit.evaluation.analyze against its oracles: COCO's matching (the AP it
starts from is COCOEvaluator's and pycocotools'), tidecv 1.0.1 for the error
types, supervision for the confusion matrix, pycocotools' per-detection
matches for the F1-optimal thresholds, and hand-built scenes whose errors are
known by construction.

TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection
Errors", ECCV 2020), restated. At a foreground IoU threshold t_f and a
background threshold t_b, each false positive is, in this order of tests:
  - Cls:  IoU >= t_f with a GT of another class;
  - Loc:  t_b <= IoU < t_f with a GT of its own class (TIDE's code tests
          this one first, inclusive at t_f: a detection matching the right
          class but localised too loosely is a Loc error, not Cls);
  - Both: t_b <= IoU < t_f with a GT of another class;
  - Dupe: IoU >= t_f with a GT of its class that a higher-scoring detection
          already matched;
  - Bkg:  IoU < t_b with every GT;
and a GT that no detection matched and that no Cls or Loc error is aimed at is
Missed. An error's weight is the AP gained by fixing all errors of its type,
one type at a time, the others left as they are: a Cls (Loc) error becomes a
true positive of the GT's class (with its box) unless the GT is already
matched or a higher-scoring error claims it, then it is removed; Dupe, Bkg
and Both errors are removed; missed GT are removed. FP (FN): AP with every
false positive removed (every unmatched GT removed).

tidecv 1.0.1 runs with today's numpy (2.x) for boxes (installed by the dev
extras); its comparison is skipped where it is missing.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re

import numpy as np
import pytest

from detkit.data.synthetic import synthetic_coco
from detkit.evaluation import ERROR_TYPES, COCOEvaluator, analyze
from detkit.evaluation import _analysis_kernels as ak
from detkit.evaluation._matching import match
from detkit.evaluation.coco import IOU_THRESHOLDS, STAT_NAMES
from detkit.evaluation.worst import STYLE

# --- the AP it starts from ---------------------------------------------------------------------------


def pycocotools_eval(gt, results, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        E = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_coco(num_images=40, num_categories=5, max_gt=8, dets_per_image=40, crowd_fraction=0.05, seed=3)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_the_ap_it_starts_from_is_coco_evaluators_and_pycocotools(iou_type):
    gt, results = synthetic_coco(num_images=25, num_categories=5, max_gt=6, dets_per_image=20,
                                 crowd_fraction=0.05, seed=4, with_masks=iou_type == "segm")
    analysis = analyze(copy.deepcopy(gt), copy.deepcopy(results), iou_type, worst=0)
    evaluator = COCOEvaluator(copy.deepcopy(gt), iou_type)
    evaluator.update(copy.deepcopy(results))
    metrics = evaluator.compute()
    assert analysis.metrics.stats == metrics.stats
    assert np.array_equal(analysis.metrics.precision, metrics.precision)
    E = pycocotools_eval(gt, results, iou_type)
    assert np.abs(np.array([analysis.metrics.stats[n] for n in STAT_NAMES]) - E.stats).max() <= 1e-12
    # The AP at each threshold that the fixes start from, recomputed by the analysis' own kernel.
    precision = metrics.precision[:, :, :, 0, -1]
    for t in range(len(IOU_THRESHOLDS)):
        assert analysis.ap_by_iou[t] == pytest.approx(precision[t][precision[t] > -1].mean(), abs=1e-12)


def scene_with_ties():
    """scene() with a GT twice (a detection on it ties in IoU: pycocotools
    takes the later GT) and, instead of the hit on image 2's first object,
    a detection at IoU 0.5 exactly (COCO matches it at 0.5, supervision not)."""
    gt, results = scene(4)
    twin = dict(gt["annotations"][0], id=100)
    gt["annotations"].append(twin)
    results[2].update(bbox=[10.0, 10.0, 60.0, 30.0], score=0.5)  # half of the object
    return gt, results


@pytest.mark.parametrize("case", ["synthetic", "ties"])
def test_each_match_is_pycocotools_match(case, synthetic):
    """The GT the analysis thinks each detection matched is the one pycocotools stores."""
    gt, results = synthetic if case == "synthetic" else scene_with_ties()
    evaluator = COCOEvaluator(copy.deepcopy(gt))
    evaluator.update(copy.deepcopy(results))
    m = match(evaluator, 0.5)
    E = pycocotools_eval(gt, results, "bbox")
    theirs = {}
    for e in E.evalImgs:
        if e is not None and e["aRng"] == [0, 1e10] and e["maxDet"] == 100:
            for d, det_id in enumerate(e["dtIds"]):
                theirs[det_id] = (e["dtMatches"][:, d], e["dtIgnore"][:, d])
    gt_ids = evaluator.gt.ids
    checked = 0
    for s, row in enumerate(m.sel):
        matches, ignore = theirs[int(m.rows[row]) + 1]
        for t in range(len(IOU_THRESHOLDS)):
            expected = int(matches[t])
            assert (gt_ids[m.det_gt[t, s]] if m.det_gt[t, s] >= 0 else 0) == expected
            assert (m.status[t, s] == ak.IGNORED) == bool(ignore[t])
            checked += 1
    assert checked >= (1000 if case == "synthetic" else 80)


# --- error types: hand-built scenes ------------------------------------------------------------------

CLASSES = 3


def scene(n_images: int = 12):
    """Images of 200 x 200 with two far-apart objects of different classes,
    each found by a perfect detection; scores are distinct and decrease with
    the detection's position, so planted errors interleave with the hits."""
    images = [{"id": i + 1, "width": 200, "height": 200, "file_name": f"{i}.png"} for i in range(n_images)]
    categories = [{"id": c + 1, "name": f"c{c}"} for c in range(CLASSES)]
    annotations, results = [], []
    for i in range(n_images):
        for j, box in enumerate(([10.0, 10.0, 60.0, 60.0], [120.0, 120.0, 60.0, 60.0])):
            cat = (i + j) % CLASSES + 1
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat, "bbox": box,
                                "area": 3600.0, "iscrowd": 0})
            results.append({"image_id": i + 1, "category_id": cat, "bbox": list(box),
                            "score": 0.99 - 0.01 * len(results)})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def other_class(cat: int) -> int:
    return cat % CLASSES + 1


def shifted(box, fraction: float):
    """The box moved right by `fraction` of its width (0.54 -> IoU 0.3)."""
    return [box[0] + box[2] * fraction, box[1], box[2], box[3]]


def plant_cls(gt, results):
    for r in results[::3]:
        r["category_id"] = other_class(r["category_id"])
    return len(results[::3])


def plant_loc(gt, results):
    for r in results[::3]:
        r["bbox"] = shifted(r["bbox"], 0.54)
    return len(results[::3])


def plant_both(gt, results):
    planted = [{**r, "category_id": other_class(r["category_id"]), "bbox": shifted(r["bbox"], 0.54),
                "score": r["score"] - 0.005} for r in results[::3]]
    results.extend(planted)
    return len(planted)


def plant_dupe(gt, results):
    planted = [{**r, "score": r["score"] - 0.005} for r in results[::3]]
    results.extend(planted)
    return len(planted)


def plant_bkg(gt, results):
    planted = [{**r, "bbox": [130.0, 10.0, 50.0, 50.0], "score": r["score"] - 0.005} for r in results[::3]]
    results.extend(planted)
    return len(planted)


def plant_miss(gt, results):
    removed = results[::3]
    for r in removed:
        results.remove(r)
    return len(removed)


PLANTS = {"cls": plant_cls, "loc": plant_loc, "both": plant_both, "dupe": plant_dupe, "bkg": plant_bkg,
          "miss": plant_miss}


@pytest.mark.parametrize("kind", ERROR_TYPES)
def test_only_the_planted_error_type_costs_ap(kind):
    gt, results = scene()
    planted = PLANTS[kind](gt, results)
    analysis = analyze(gt, results, worst=0)
    assert analysis.metrics.stats["AP50"] < 1
    for key in ("AP50", "AP"):
        errors = analysis.errors[key]
        assert errors[kind] > 0.01, (key, errors)
        assert max(v for name, v in errors.items() if name != kind) <= 1e-12, (key, errors)
        # Fixing the planted type gives back the perfect AP the scene had.
        assert analysis.metrics.stats["AP50" if key == "AP50" else "AP"] + errors[kind] == pytest.approx(1.0)
    if kind == "miss":
        assert analysis.counts["FN"] == {"miss": planted, "cls": 0, "loc": 0, "total": planted}
    else:
        assert analysis.counts["FP"][kind] == analysis.counts["FP"]["total"] == planted
        assert analysis.counts["FN"]["miss"] == 0


def test_a_cls_error_and_a_loc_error_on_one_gt_fix_once():
    """Two errors aimed at one unmatched GT: the higher-scoring one claims it
    when its type is fixed; fixing the other type removes the other error."""
    gt, results = scene(4)
    target = results[0]
    results.remove(target)
    results.append({**target, "category_id": other_class(target["category_id"]), "score": 0.995})  # cls
    results.append({**target, "bbox": shifted(target["bbox"], 0.54), "score": 0.955})  # loc, among the hits
    analysis = analyze(gt, results, worst=0)
    assert analysis.counts["FP"]["cls"] == 1 and analysis.counts["FP"]["loc"] == 1
    assert analysis.counts["FN"] == {"miss": 0, "cls": 1, "loc": 0, "total": 1}
    assert analysis.errors["AP50"]["cls"] > analysis.errors["AP50"]["loc"] > 0


def test_a_fixed_threshold_between_cocos_uses_its_own_matching():
    gt, results = synthetic_coco(num_images=20, num_categories=4, max_gt=6, dets_per_image=20, seed=5)
    at_055 = analyze(copy.deepcopy(gt), copy.deepcopy(results), fg_iou=0.55, worst=0)
    assert at_055.errors["AP55"] == dict(zip(ERROR_TYPES, at_055.errors_by_iou[1]))
    at_052 = analyze(copy.deepcopy(gt), copy.deepcopy(results), fg_iou=0.52, worst=0)
    assert at_052.errors_by_iou.shape == (11, 6) and set(at_052.errors) == {"AP52", "AP"}
    assert at_052.errors["AP"] == at_055.errors["AP"]
    with pytest.raises(ValueError, match="bg_iou < fg_iou"):
        analyze(gt, results, fg_iou=0.1, bg_iou=0.1)


# --- error types: tidecv ------------------------------------------------------------------------------


def tide_inputs(gt, results):
    from tidecv import Data

    truth, predictions = Data("gt"), Data("results")
    for image in gt["images"]:
        truth.add_image(image["id"], image["file_name"])
    for category in gt["categories"]:
        truth.add_class(category["id"], category["name"])
    for a in gt["annotations"]:
        truth.add_ground_truth(a["image_id"], a["category_id"], a["bbox"], None)
    for r in results:
        predictions.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"], None)
    return truth, predictions


def tide_comparable(seed: int):
    """A set on which tidecv and pycocotools agree on AP: no crowd, at most 100
    detections per image, no detection of a class without GT (TIDE averages
    over classes with GT or detections, COCO over classes with GT), and no
    two equal scores: tidecv re-adds errors before true positives when it
    fixes, so among equal scores its fixed runs rank false positives first,
    which alone moves its ΔAPs by ~0.6 AP points on 2-decimal scores."""
    gt, results = synthetic_coco(num_images=60, num_categories=6, max_gt=6, dets_per_image=20, crowd_fraction=0.0,
                                 seed=seed)
    last = gt["categories"].pop()["id"]
    results = [r for r in results if r["category_id"] != last]
    rng = np.random.default_rng(seed)
    for r in results:
        r["score"] = float(r["score"] + rng.uniform(0, 0.0099))
    return gt, results


@pytest.mark.parametrize("seed", [1, 2])
def test_error_types_agree_with_tidecv(seed):
    """ΔAP of each type, FP and FN at each of COCO's thresholds (TIDE's
    positive threshold set to it) within 0.05 AP points of tidecv 1.0.1's
    (the issue asks 0.5; they agree to 0.03 at most), counts equal."""
    tidecv = pytest.importorskip("tidecv")
    from tidecv.errors.main_errors import (BackgroundError, BoxError, ClassError, DuplicateError, MissedError,
                                           OtherError)

    gt, results = tide_comparable(seed)
    analysis = analyze(copy.deepcopy(gt), copy.deepcopy(results), worst=0)
    truth, predictions = tide_inputs(gt, results)
    tide = tidecv.TIDE()
    order = [ClassError, BoxError, OtherError, DuplicateError, BackgroundError, MissedError]
    for t, threshold in enumerate(IOU_THRESHOLDS):
        run = tide.evaluate(truth, predictions, pos_threshold=float(threshold), mode=tidecv.TIDE.BOX, name=str(t))
        # They agree on AP but for pycocotools' recall grid: np.linspace puts some of its 101 points a hair
        # above k/100 (0.7000000000000001), TIDE reads precision at k/100 exactly; 0.027 points here at most.
        assert run.ap == pytest.approx(100 * analysis.ap_by_iou[t], abs=0.05)
        main = run.fix_main_errors()
        theirs = np.array([main[e] for e in order])
        assert np.abs(100 * analysis.errors_by_iou[t] - theirs).max() < 0.05, (threshold, theirs)
        if t == 0:
            special = {e.short_name: v for e, v in run.fix_special_errors().items()}
            assert 100 * analysis.special["AP50"]["FP"] == pytest.approx(special["FalsePos"], abs=0.05)
            assert 100 * analysis.special["AP50"]["FN"] == pytest.approx(special["FalseNeg"], abs=0.05)
            counts = {e.short_name: n for e, n in run.count_errors().items()}
            ours = analysis.counts["FP"]
            assert [ours["cls"], ours["loc"], ours["both"], ours["dupe"], ours["bkg"], analysis.counts["FN"]["miss"]] \
                == [counts["Cls"], counts["Loc"], counts["Both"], counts["Dupe"], counts["Bkg"], counts["Miss"]]


# --- confusion matrix ---------------------------------------------------------------------------------


def supervision_matrix(gt, results, score, iou):
    sv = pytest.importorskip("supervision")
    index = {c["id"]: k for k, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
    targets, predictions = [], []
    for image in gt["images"]:
        anns = sorted((a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]),
                      key=lambda a: index[a["category_id"]])  # detkit's order, for ties in IoU
        dets = sorted((r for r in results if r["image_id"] == image["id"]), key=lambda r: index[r["category_id"]])
        targets.append(np.array([xyxy(a["bbox"]) + [index[a["category_id"]]] for a in anns]).reshape(-1, 5))
        predictions.append(np.array([xyxy(r["bbox"]) + [index[r["category_id"]], r["score"]]
                                     for r in dets]).reshape(-1, 6))
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    return sv.ConfusionMatrix.from_tensors(predictions, targets, names, conf_threshold=score,
                                           iou_threshold=iou).matrix


@pytest.mark.parametrize("score, iou", [(0.3, 0.5), (0.6, 0.3), (0.0, 0.75), (0.5, "ties")])
def test_confusion_matrix_equals_supervisions(score, iou):
    if iou == "ties":  # a detection at IoU 0.5 exactly (no match: supervision wants more), a GT twice
        (gt, results), iou = scene_with_ties(), 0.5
    else:
        gt, results = synthetic_coco(num_images=30, num_categories=5, max_gt=8, dets_per_image=30,
                                     crowd_fraction=0.0, seed=6)
    analysis = analyze(copy.deepcopy(gt), copy.deepcopy(results), confusion_score=score, confusion_iou=iou, worst=0)
    expected = supervision_matrix(gt, results, score, iou)
    assert np.array_equal(analysis.confusion.counts, expected)
    assert analysis.confusion.counts[:-1, :-1].trace() > 0 and analysis.confusion.counts[-1].sum() > 0
    normalized = analysis.confusion.normalized
    rows = analysis.confusion.counts.sum(1) > 0
    assert np.allclose(normalized[rows].sum(1), 1) and not normalized[~rows].any()


def test_confusion_matrix_leaves_out_detections_on_crowd_regions():
    gt, results = scene(2)
    gt["annotations"].append({"id": 99, "image_id": 1, "category_id": 1, "bbox": [100.0, 0.0, 100.0, 100.0],
                              "area": 10000.0, "iscrowd": 1})
    results.append({"image_id": 1, "category_id": 1, "bbox": [130.0, 10.0, 30.0, 30.0], "score": 0.9})  # in it
    results.append({"image_id": 1, "category_id": 2, "bbox": [130.0, 10.0, 30.0, 30.0], "score": 0.9})  # other class
    counts = analyze(gt, results, worst=0).confusion.counts
    assert counts[-1].tolist() == [0, 1, 0, 0]  # only the other class's detection is a background error
    assert counts[:-1, :-1].trace() == 4


def test_most_confused_pairs_from_planted_swaps():
    gt, results = scene()
    for r in results[::2]:  # the first object of each image: c0 -> c1, c1 -> c2, c2 -> c0 ...
        r["category_id"] = other_class(r["category_id"])
    confusion = analyze(gt, results, worst=0).confusion
    pairs = confusion.most_confused(10)
    assert {(t, p) for t, p, _ in pairs} == {("c0", "c1"), ("c1", "c2"), ("c2", "c0")}
    assert sum(n for _, _, n in pairs) == 12


# --- per class ----------------------------------------------------------------------------------------


def test_f1_thresholds_by_brute_force_on_pycocotools_matches(synthetic):
    gt, results = synthetic
    analysis = analyze(copy.deepcopy(gt), copy.deepcopy(results), worst=0)
    E = pycocotools_eval(gt, results, "bbox")
    for k, cat_id in enumerate(E.params.catIds):
        scores, hits, npos = [], [], 0
        for e in E.evalImgs:
            if e is not None and e["category_id"] == cat_id and e["aRng"] == [0, 1e10] and e["maxDet"] == 100:
                keep = ~e["dtIgnore"][0].astype(bool)
                scores += list(np.array(e["dtScores"])[keep])
                hits += list(e["dtMatches"][0][keep] > 0)
                npos += int((e["gtIgnore"] == 0).sum())
        scores, hits = np.array(scores), np.array(hits)
        best = (None, None, None, -1.0)
        for threshold in sorted(set(scores), reverse=True):
            kept = scores >= threshold
            tp = hits[kept].sum()
            if tp == 0 or npos == 0:
                continue
            p, r = tp / kept.sum(), tp / npos
            f1 = 2 * p * r / (p + r)
            if f1 > best[3]:
                best = (threshold, p, r, f1)
        summary = analysis.per_class[k]
        if best[0] is None:
            assert summary.threshold is None and summary.f1 is None
        else:
            assert (summary.threshold, summary.precision, summary.recall) == pytest.approx(best[:3], abs=1e-12)
        assert summary.ap == pytest.approx(analysis.metrics.per_category[summary.name])
        assert summary.num_gt == npos


def test_ap_by_size_and_per_class_ap_are_cocos(synthetic):
    gt, results = synthetic
    analysis = analyze(copy.deepcopy(gt), copy.deepcopy(results), worst=0)
    stats = analysis.metrics.stats
    assert analysis.ap_by_size == {"small": stats["APs"], "medium": stats["APm"], "large": stats["APl"]}
    precision = analysis.metrics.precision
    for k, summary in enumerate(analysis.per_class):
        values = precision[0, :, k, 0, -1]
        assert summary.ap50 == (values.mean() if (values > -1).all() else -1)


# --- worst images -------------------------------------------------------------------------------------


def test_worst_images_rank_the_planted_errors_first_and_label_them(tmp_path):
    import cv2

    gt, results = scene(6)
    # Image 3: its first object swapped to another class, its second missed, plus a background detection.
    first, second = [r for r in results if r["image_id"] == 3]
    first["category_id"] = other_class(first["category_id"])
    results.remove(second)
    results.append({"image_id": 3, "category_id": 1, "bbox": [120.0, 10.0, 40.0, 40.0], "score": 0.97})
    # Image 2: a duplicate, scored above a hit of its class so that its class's threshold keeps it.
    dupe = next(r for r in results if r["image_id"] == 2)
    results.append({**dupe, "score": dupe["score"] - 0.001})
    cv2.imwrite(str(tmp_path / "2.png"), np.full((200, 200, 3), 200, np.uint8))  # image 3's file
    analysis = analyze(gt, results, images=str(tmp_path))
    assert [w.image_id for w in analysis.worst] == [3, 2]
    worst = analysis.worst[0]
    assert (worst.false_positives, worst.false_negatives) == (2, 2)
    assert sorted(d["outcome"] for d in worst.detections) == ["bkg", "cls"]
    assert sorted(g["outcome"] for g in worst.ground_truth) == ["cls", "miss"]
    assert sorted(d["outcome"] for d in analysis.worst[1].detections) == ["TP", "TP", "dupe"]
    assert worst.image_found and not analysis.worst[1].image_found  # 1.png is not there: drawn on grey
    drawing = worst.drawing
    assert drawing.shape == (512, 512, 3) and drawing.dtype == np.uint8
    colours = {tuple(c) for c in drawing.reshape(-1, 3)}
    assert {STYLE["fp"], STYLE["gt_error"]} <= colours  # errors drawn, GT apart from detections
    assert STYLE["tp"] not in colours  # no correct detection on this image


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(image_id=777), "result record 1: image_id 777 is not in the ground truth"),
    (lambda r: r.update(category_id=55), "result record 1: category_id 55 is not in the ground truth"),
    (lambda r: r.update(score=float("nan")), "result record 1: score nan is not finite"),
    (lambda r: r.pop("score"), "result record 1 has no 'score' field"),
])
def test_bad_results_name_the_record(change, message, tmp_path):
    gt, results = scene(2)
    change(results[1])
    with pytest.raises(ValueError, match=f"^results: {message}"):
        analyze(gt, results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + message):
        analyze(gt, str(path))


def test_empty_results_are_an_error(tmp_path):
    gt, _ = scene(2)
    with pytest.raises(ValueError, match="no detections to analyse"):
        analyze(gt, [])
    path = tmp_path / "results.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="must be a JSON list"):
        analyze(gt, str(path))


def test_to_dict_is_strict_json(synthetic):
    gt, results = synthetic
    data = analyze(copy.deepcopy(gt), copy.deepcopy(results), worst=2).to_dict()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert set(back["errors"]["AP50"]) == set(ERROR_TYPES)
    assert len(back["confusion"]["counts"]) == len(gt["categories"]) + 1
    assert back["worst"] and "drawing" not in back["worst"][0]
