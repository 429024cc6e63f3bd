import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.evaluation import COCOEvaluator, evaluate_coco
from detkit.evaluation.coco import STAT_NAMES
from detkit.data.synthetic import synthetic_coco


def pycocotools_eval(gt, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(results))
        E = COCOeval(coco, dt, iou_type)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def detkit_eval(gt, results, iou_type):
    evaluator = COCOEvaluator(copy.deepcopy(gt), iou_type)
    evaluator.update(copy.deepcopy(results))
    return evaluator.compute()


def assert_identical(metrics, E):
    ours = np.array([metrics.stats[name] for name in STAT_NAMES])
    assert np.abs(ours - E.stats).max() <= 1e-9, (ours, E.stats)
    assert np.array_equal(metrics.precision, E.eval["precision"])
    assert np.array_equal(metrics.recall, E.eval["recall"])
    assert np.array_equal(metrics.scores, E.eval["scores"])
    assert metrics.per_category == pycocotools_per_category(E)


def pycocotools_per_category(E):
    """Category name -> AP as pycocotools' summarize() averages it: precision
    at IoU .50:.95, all areas, 100 detections, over the defined (> -1) entries;
    -1 for a category without ground truth."""
    per_category = {}
    for k, cat_id in enumerate(E.params.catIds):
        precision = E.eval["precision"][:, :, k, 0, -1]
        defined = precision[precision > -1]
        per_category[E.cocoGt.cats[cat_id]["name"]] = float(np.mean(defined)) if defined.size else -1.0
    return per_category


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=0),
        dict(seed=1, crowd_fraction=0.25),  # crowd matching rules
        dict(seed=2, dets_per_image=5),  # fewer detections than maxDets 10 / 100
        dict(seed=3, num_categories=3, max_gt=30, dets_per_image=150),
        dict(seed=4, num_images=5, num_categories=20),  # categories with no GT
    ],
)
def test_bbox_identical_to_pycocotools(kwargs):
    gt, results = synthetic_coco(num_images=kwargs.pop("num_images", 30), **kwargs)
    metrics = detkit_eval(gt, results, "bbox")
    E = pycocotools_eval(gt, results, "bbox")
    assert_identical(metrics, E)
    assert metrics.stats["AP50"] > 0.05  # the data is not degenerate
    assert set(metrics.per_category) == {c["name"] for c in gt["categories"]}


def test_bbox_quirks_match_pycocotools():
    gt, results = synthetic_coco(num_images=20, seed=5, crowd_fraction=0.2)
    gt["annotations"][0]["id"] = 0  # pycocotools reads a match to GT id 0 as no match
    for ann in gt["annotations"][1::7]:
        ann["ignore"] = 1  # overwritten by iscrowd in pycocotools: not ignored
    gt["annotations"].append({**gt["annotations"][2], "id": 99999, "image_id": 123456789})  # unknown image
    for r in results[::13]:
        r["score"] = 0.5  # many exact ties across images
    assert_identical(detkit_eval(gt, results, "bbox"), pycocotools_eval(gt, results, "bbox"))


@pytest.mark.parametrize("seed", [0, 1])
def test_segm_identical_to_pycocotools(seed):
    gt, results = synthetic_coco(num_images=15, seed=seed, with_masks=True, crowd_fraction=0.2)
    # Some GT as RLE (compressed and uncompressed), not polygons.
    for n, ann in enumerate(gt["annotations"][::5]):
        image = next(i for i in gt["images"] if i["id"] == ann["image_id"])
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"]))
        if n % 2:
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        else:
            mask = mask_utils.decode(rle)
            flat = mask.flatten(order="F")
            runs, value, count = [], 0, 0
            for v in flat:
                if v == value:
                    count += 1
                else:
                    runs.append(count)
                    value, count = v, 1
            runs.append(count)
            ann["segmentation"] = {"size": list(mask.shape), "counts": runs}
    assert_identical(detkit_eval(gt, results, "segm"), pycocotools_eval(gt, results, "segm"))
    # Results without "bbox": loadRes takes the mask area (and box) instead.
    no_box = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    assert_identical(detkit_eval(gt, no_box, "segm"), pycocotools_eval(gt, no_box, "segm"))


def test_empty_results_give_zero_ap():
    gt, _ = synthetic_coco(num_images=5)
    metrics = detkit_eval(gt, [], "bbox")
    assert all(value == 0.0 for value in metrics.stats.values() if value != -1)
    assert metrics.stats["AP"] == 0.0 and metrics.stats["AR100"] == 0.0


def test_prediction_dicts_equal_result_records():
    gt, results = synthetic_coco(num_images=10, seed=6)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    predictions = {}
    for img in gt["images"]:
        rows = [r for r in results if r["image_id"] == img["id"]]
        xywh = torch.tensor([r["bbox"] for r in rows], dtype=torch.float64).reshape(-1, 4)
        predictions[img["id"]] = {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            "scores": torch.tensor([r["score"] for r in rows], dtype=torch.float64),
            "labels": torch.tensor([cat_ids.index(r["category_id"]) + 1 for r in rows], dtype=torch.int64),
        }
    evaluator = COCOEvaluator(gt)
    evaluator.update(predictions)
    from_dicts = evaluator.compute()
    reordered = [r for img in gt["images"] for r in results if r["image_id"] == img["id"]]
    E = pycocotools_eval(gt, reordered, "bbox")
    assert np.abs(np.array([from_dicts.stats[n] for n in STAT_NAMES]) - E.stats).max() <= 1e-9


def test_results_json_round_trips_through_pycocotools(tmp_path):
    gt, results = synthetic_coco(num_images=10, seed=7)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    evaluator = COCOEvaluator(str(gt_path))
    evaluator.update(results)
    evaluator.write_results(res_path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        E = COCOeval(coco, coco.loadRes(str(res_path)), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    metrics = evaluate_coco(gt_path, res_path)
    assert np.abs(np.array([metrics.stats[n] for n in STAT_NAMES]) - E.stats).max() <= 1e-9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_metrics_to_dict_is_json_ready():
    gt, results = synthetic_coco(num_images=5, seed=8)
    payload = json.dumps(detkit_eval(gt, results, "bbox").to_dict())
    assert '"AP"' in payload and '"per_category"' in payload


# --- bad input -----------------------------------------------------------------------------------


@pytest.fixture
def small():
    return synthetic_coco(num_images=4, seed=9)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(image_id=424242), r"result record 3: image_id 424242 is not in the ground truth"),
        (lambda r: r.update(category_id=7777), r"result record 3: category_id 7777 is not in the ground truth"),
        (lambda r: r.update(score=float("nan")), r"result record 3: score nan is not finite"),
        (lambda r: r.update(bbox=[1.0, 2.0, -3.0, 4.0]), r"result record 3: bbox .* negative size"),
        (lambda r: r.pop("score"), r"result record 3 has no 'score' field"),
    ],
)
def test_bad_result_records_are_named(small, change, message):
    gt, results = small
    change(results[3])
    with pytest.raises(ValueError, match=message):
        COCOEvaluator(gt).update(results)


def test_bad_ground_truth_and_files(tmp_path, small):
    gt, results = small
    broken = copy.deepcopy(gt)
    del broken["annotations"][2]["area"]
    with pytest.raises(ValueError, match=r"annotation \d+: 'area' must be a finite number; it is missing"):
        COCOEvaluator(broken)
    with pytest.raises(ValueError, match="'categories' must be a list"):
        COCOEvaluator({"images": [], "annotations": []})
    bad_json = tmp_path / "gt.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="gt.json: not valid JSON"):
        COCOEvaluator(str(bad_json))
    with pytest.raises(ValueError, match="iou_type must be one of"):
        COCOEvaluator(gt, iou_type="keypoints")
    with pytest.raises(ValueError, match="label 99 has no category id"):
        COCOEvaluator(gt).update({gt["images"][0]["id"]: {
            "boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([99])}})


def test_ground_truth_from_a_pycocotools_coco_object():
    gt, results = synthetic_coco(num_images=6, seed=10)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
    evaluator = COCOEvaluator(coco)
    evaluator.update(copy.deepcopy(results))
    assert_identical(evaluator.compute(), pycocotools_eval(gt, results, "bbox"))
    with pytest.raises(TypeError, match="gt must be a COCO JSON path, a dict or a pycocotools COCO"):
        COCOEvaluator(42)


def test_segm_prediction_dicts_with_masks_equal_records():
    gt, results = synthetic_coco(num_images=6, seed=11, with_masks=True)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    predictions, reordered = {}, []
    for img in gt["images"]:
        rows = [r for r in results if r["image_id"] == img["id"]]
        reordered.extend(rows)
        masks = [mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()})
                 for r in rows]
        xywh = torch.tensor([r["bbox"] for r in rows], dtype=torch.float64).reshape(-1, 4)
        predictions[img["id"]] = {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            "scores": torch.tensor([r["score"] for r in rows], dtype=torch.float64),
            "labels": torch.tensor([cat_ids.index(r["category_id"]) + 1 for r in rows], dtype=torch.int64),
            # soft masks [N, 1, H, W] as a model returns them; > 0.5 is the object
            "masks": torch.from_numpy(np.stack(masks)).float()[:, None] * 0.9 if masks
            else torch.zeros(0, 1, img["height"], img["width"]),
        }
    evaluator = COCOEvaluator(gt, iou_type="segm")
    evaluator.update(predictions)
    E = pycocotools_eval(gt, reordered, "segm")
    stats = np.array([evaluator.compute().stats[n] for n in STAT_NAMES])
    assert np.abs(stats - E.stats).max() <= 1e-9
    assert all("counts" in r["segmentation"] for r in evaluator.results())


@pytest.mark.parametrize(
    "change, iou_type, message",
    [
        (lambda gt: gt["annotations"].append(7), "bbox", r"gt: annotations\[\d+\] must be an object, got 7"),
        (lambda gt: gt["images"].append({"id": "x"}), "bbox", r"gt: images\[\d+\] must be an object with an integer"),
        (lambda gt: gt["categories"].append([1]), "bbox", r"gt: categories\[\d+\] must be an object with an"),
        (lambda gt: gt["annotations"][0].update(bbox=["1", 2, 3, 4]), "bbox",
         r"gt: annotation \d+: 'bbox' must be 4 finite numbers; got \['1', 2, 3, 4\]"),
        (lambda gt: gt["annotations"][0].update(area=10**400), "bbox", r"'area' must be a finite number"),
        (lambda gt: gt["annotations"][0].update(iscrowd=[1]), "bbox", r"'iscrowd' must be 0 or 1; got \[1\]"),
        (lambda gt: gt["annotations"][0].update(id=2**64), "bbox", r"'id' must be an integer"),
        (lambda gt: gt["annotations"][0].update(segmentation=[[0, 0, 1e12, 0, 1e12, 1e12]]), "segm",
         r"polygon coordinates must be finite and within"),  # would crash pycocotools
        (lambda gt: gt["annotations"][0].update(segmentation={"size": [10**5, 10**5], "counts": "0"}), "segm",
         r"RLE size must be the image's"),  # would allocate 10 GB in pycocotools
        (lambda gt: gt["images"][0].update(height=10**6, width=10**6), "segm", r"its image needs positive integer"),
    ],
)
def test_malformed_ground_truth_records_are_named(change, iou_type, message):
    gt, _ = synthetic_coco(num_images=4, seed=9, with_masks=True)
    ann_image = {img["id"]: img for img in gt["images"]}
    first_image = ann_image[gt["annotations"][0]["image_id"]]
    gt["images"] = [first_image] + [img for img in gt["images"] if img is not first_image]
    change(gt)
    with pytest.raises(ValueError, match=message):
        COCOEvaluator(gt, iou_type=iou_type)


def test_annotations_with_unhashable_ids_are_not_scored():
    gt, results = synthetic_coco(num_images=4, seed=9)
    scored = detkit_eval(gt, results, "bbox").stats
    gt["annotations"].append({**gt["annotations"][0], "id": 999999, "image_id": [1], "category_id": {"a": 1}})
    assert detkit_eval(gt, results, "bbox").stats == scored  # like an annotation of an unknown image
    evaluator = COCOEvaluator(gt, image_ids={gt["images"][0]["id"]})
    assert list(evaluator.gt.img_ids) == [gt["images"][0]["id"]]


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ({"size": [10**5, 10**5], "counts": "0"}, r"result record 1: RLE size must be the image's"),
        ({"size": [10, 10], "counts": [-5, 105]}, r"result record 1: RLE size must be the image's"),
        ([[0, 0, 1e12, 0, 1e12, 1e12]], r"result record 1: polygon coordinates must be finite"),
        (None, r"result record 1: segmentation must be polygons or an RLE, got None"),
    ],
)
def test_malformed_segmentation_results_are_named(segmentation, message):
    gt, results = synthetic_coco(num_images=4, seed=9, with_masks=True)
    results[1]["segmentation"] = segmentation
    with pytest.raises(ValueError, match=message):
        COCOEvaluator(gt, iou_type="segm").update(results)


def test_an_empty_polygon_list_is_an_empty_mask():
    gt, results = synthetic_coco(num_images=6, seed=12, with_masks=True)
    scored = detkit_eval(gt, results, "segm")
    ann = gt["annotations"][0]
    gt["annotations"].append({**ann, "id": 999999, "segmentation": []})  # pycocotools fails on [] (IndexError)
    with_empty = detkit_eval(gt, results, "segm")
    assert with_empty.stats["AR100"] < scored.stats["AR100"]  # one more object that nothing can match


def test_segm_results_without_a_box_take_it_from_any_segmentation():
    gt, results = synthetic_coco(num_images=4, seed=13, with_masks=True)
    no_box = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    no_box[0]["segmentation"] = []  # no polygon: an empty mask, box [0, 0, 0, 0]
    evaluator = COCOEvaluator(gt, iou_type="segm")
    evaluator.update(no_box)
    assert evaluator.results()[0]["bbox"] == [0.0, 0.0, 0.0, 0.0]
    assert 0 <= evaluator.compute().stats["AP"] <= 1
