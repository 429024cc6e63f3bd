"""COCOEvaluator and VOCEvaluator behind one interface, and the engine code
that picks one by eval.metric (detkit/engine/evaluate.py)."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from detkit.engine.evaluate import build_evaluator, evaluate, key_metric, score, summary
from detkit.evaluation import COCOEvaluator, VOCEvaluator
from detkit.evaluation.coco import STAT_NAMES
from detkit.data.synthetic import synthetic_coco


def pycocotools_stats(gt, results, image_ids):
    """pycocotools' 12 numbers and precision array over `image_ids` only."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        E = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        E.params.imgIds = sorted(image_ids)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E.stats, E.eval["precision"]


def as_predictions(gt, results):
    """COCO result records -> detkit prediction dicts (xyxy boxes, labels 1..K
    in category-id order) and the matching targets."""
    label_of = {c["id"]: n + 1 for n, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
    predictions, targets = {}, {}
    for image in gt["images"]:
        mine = [r for r in results if r["image_id"] == image["id"]]
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        predictions[image["id"]] = {
            "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)],
                                  dtype=torch.float64).reshape(-1, 4),
            "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
            "labels": torch.tensor([label_of[r["category_id"]] for r in mine], dtype=torch.int64),
        }
        targets[image["id"]] = {
            "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                                  dtype=torch.float64).reshape(-1, 4),
            "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
        }
    return predictions, targets


@pytest.fixture(scope="module")
def synthetic():
    gt, results = synthetic_coco(num_images=12, seed=12)
    return gt, results, [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]


def test_coco_image_ids_evaluates_those_images_as_pycocotools_does(synthetic):
    gt, results, _ = synthetic
    image_ids = {img["id"] for img in gt["images"][2:9]}
    mine = [r for r in results if r["image_id"] in image_ids]
    evaluator = COCOEvaluator(copy.deepcopy(gt), image_ids=image_ids)
    evaluator.update(copy.deepcopy(mine))
    metrics = evaluator.compute()
    stats, precision = pycocotools_stats(gt, mine, image_ids)
    assert np.array_equal([metrics.stats[name] for name in STAT_NAMES], stats)
    assert np.array_equal(metrics.precision, precision)
    everything = COCOEvaluator(copy.deepcopy(gt))
    everything.update(copy.deepcopy(mine))
    assert everything.compute().stats["AR100"] < metrics.stats["AR100"]  # the other images' objects are misses
    with pytest.raises(ValueError, match="image_id .* is not in the ground truth"):
        evaluator.update([r for r in results if r["image_id"] not in image_ids][:1])


def test_one_update_signature_for_both_metrics(synthetic):
    gt, results, classes = synthetic
    predictions, targets = as_predictions(gt, results)
    some = dict(list(predictions.items())[:8])
    coco = score(some, targets, "coco", classes, gt=copy.deepcopy(gt))
    stats, precision = pycocotools_stats(gt, results, set(some))
    assert np.array_equal([coco.stats[name] for name in STAT_NAMES], stats)
    assert np.array_equal(coco.precision, precision)
    voc = score(some, {i: targets[i] for i in some}, "voc", classes)
    reference = VOCEvaluator(classes)
    for image_id in some:  # fed one image at a time, its target first, gives the same numbers
        reference.update({}, {image_id: targets[image_id]})
        reference.update({image_id: some[image_id]})
    assert voc.per_class == reference.compute().per_class and 0.05 < voc.mAP < 1


def test_both_metrics_read_the_same_way(synthetic):
    gt, results, classes = synthetic
    predictions, targets = as_predictions(gt, results)
    coco = score(predictions, targets, "coco", classes, gt=copy.deepcopy(gt))
    voc = score(predictions, targets, "voc", classes)
    assert key_metric(coco, "AP50") == coco.stats["AP50"] and summary(coco) == coco.stats
    assert key_metric(voc, "mAP") == voc.mAP and summary(voc) == {"mAP": voc.mAP}
    with pytest.raises(ValueError, match=r"eval.key 'AP50' is not one of the VOCMetrics stats \['mAP'\]"):
        key_metric(voc, "AP50")
    assert coco.per_class == coco.per_category and coco.per_class_metric == "AP"
    assert voc.per_class_metric == "AP50"
    assert voc.headline() == f"VOC mAP@0.5: {voc.mAP:.4f}" and coco.headline().startswith(f"AP {coco.stats['AP']:.4f}")
    assert "class_7" not in coco.curves and "class_7" not in voc.curves  # no GT, no curve
    recall, precision = coco.curves["class_0"]
    assert np.array_equal(precision, coco.precision[0, :, 0, 0, -1]) and recall[-1] == 1.0


def test_both_evaluators_write_their_detections(synthetic, tmp_path):
    gt, results, classes = synthetic
    predictions, targets = as_predictions(gt, results)
    for metric in ("coco", "voc"):
        evaluator = build_evaluator(metric, classes, copy.deepcopy(gt), image_ids=set(predictions))
        evaluator.update(predictions, targets)
        evaluator.write_results(tmp_path / f"{metric}.json")
        records = json.loads((tmp_path / f"{metric}.json").read_text())
        assert len(records) == len(results)
        by_image = {}
        for r in records:
            by_image.setdefault(r["image_id"], []).append(r)
        for image_id, prediction in predictions.items():
            mine = by_image.get(image_id, [])
            xywh = prediction["boxes"].clone()
            xywh[:, 2:] -= xywh[:, :2]
            np.testing.assert_allclose(np.reshape([r["bbox"] for r in mine], (-1, 4)), xywh.numpy(), rtol=1e-12)
            assert [r["score"] for r in mine] == prediction["scores"].tolist()
    voc = VOCEvaluator(classes)  # VOC records carry the label as category_id
    voc.update(predictions, targets)
    assert [r["category_id"] for r in voc.results()] == [l for p in predictions.values() for l in p["labels"].tolist()]


def test_build_evaluator_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown eval.metric 'map'; choose one of \['coco', 'voc'\]"):
        build_evaluator("map", ["a"])
    with pytest.raises(ValueError, match="needs the ground truth annotation file"):
        build_evaluator("coco", ["a"])


class _Oracle(nn.Module):
    """Predicts each image's ground truth (its index is written in its pixels)."""

    def __init__(self, targets):
        super().__init__()
        self.targets = targets
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        outputs = []
        for image in images:
            target = self.targets[int(round(float(image[0, 0, 0]) * 10))]
            n = len(target["labels"])
            outputs.append({"boxes": target["boxes"].float(), "scores": torch.linspace(1.0, 0.5, n),
                            "labels": target["labels"], "masks": torch.ones(n, 1, 8, 8)})
        return outputs


@pytest.mark.parametrize("metric", ["coco", "voc"])
def test_evaluate_scores_a_model_with_either_metric(metric):
    boxes = [[[1.0, 1.0, 4.0, 5.0], [2.0, 0.0, 7.0, 3.0]], [[0.0, 0.0, 8.0, 8.0]], [[3.0, 3.0, 6.0, 7.0]]]
    targets = [{"image_id": n + 1, "boxes": torch.tensor(b), "labels": torch.tensor([1 + k % 2 for k in range(len(b))]),
                "masks": torch.ones(len(b), 8, 8, dtype=torch.uint8)} for n, b in enumerate(boxes)]
    dataset = [(torch.full((3, 8, 8), n / 10), target) for n, target in enumerate(targets)]
    gt = {"images": [{"id": n + 1, "width": 8, "height": 8} for n in range(3)],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 10 * (n + 1) + k, "image_id": n + 1, "category_id": 1 + k % 2, "iscrowd": 0,
                           "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                          for n, b in enumerate(boxes) for k, (x1, y1, x2, y2) in enumerate(b)]}
    metrics = evaluate(_Oracle(targets), dataset, metric, ["a", "b"], torch.device("cpu"), gt=gt, batch_size=2)
    assert metrics.images == 3
    assert key_metric(metrics, "mAP" if metric == "voc" else "AP") == pytest.approx(1.0)
    partial = evaluate(_Oracle(targets), dataset, metric, ["a", "b"], torch.device("cpu"), gt=gt, num_images=2)
    assert partial.images == 2 and key_metric(partial, "mAP" if metric == "voc" else "AR100") == pytest.approx(1.0)
