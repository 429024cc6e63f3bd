"""A small SSD trained from scratch must overfit a handful of Shapes images:
the loss falls and every object is found (IoU >= 0.5, right label)."""
import torch

from detkit import ops
from detkit.data import shapes
from tests.helpers import overfit


def recall_at_50(detections, targets) -> float:
    found = total = 0
    for det, target in zip(detections, targets):
        for box, label in zip(target["boxes"], target["labels"]):
            total += 1
            same = det["labels"] == label
            found += bool(same.any() and ops.box_iou(box[None], det["boxes"][same]).max() >= 0.5)
    return found / total


def test_small_ssd_overfits_a_few_shapes_images(tmp_path):
    torch.manual_seed(0)
    paths = shapes.generate(tmp_path, num_train=4, num_val=0, image_size=128, seed=0)
    model, history, images, targets = overfit("ssd300_resnet18_small", paths, 80, 1e-3, size=128, score_thresh=0.3)
    assert sum(history[-10:]) < sum(history[:10]) / 5, history
    with torch.no_grad():
        detections = model(images)
    assert recall_at_50(detections, targets) == 1.0


def mask_iou(detections, targets) -> float:
    """Mean mask IoU of each GT object with its best-matching detection (same label, box IoU >= 0.5)."""
    ious = []
    for det, target in zip(detections, targets):
        for box, label, gt_mask in zip(target["boxes"], target["labels"], target["masks"].bool()):
            same = torch.where(det["labels"] == label)[0]
            if len(same) == 0:
                ious.append(0.0)
                continue
            best = same[ops.box_iou(box[None], det["boxes"][same])[0].argmax()]
            mask = det["masks"][best, 0] > 0.5
            ious.append(float((mask & gt_mask).sum()) / max(1.0, float((mask | gt_mask).sum())))
    return sum(ious) / len(ious)


def confident(model, images, threshold: float = 0.5):
    with torch.no_grad():
        detections = model(images)
    return [{k: v[d["scores"] > threshold] for k, v in d.items()} for d in detections]


def test_small_faster_rcnn_overfits_a_few_shapes_images(tmp_path):
    torch.manual_seed(0)
    paths = shapes.generate(tmp_path, num_train=4, num_val=0, image_size=128, seed=0)
    model, history, images, targets = overfit("fasterrcnn_resnet18_fpn_small", paths, 60, 2e-3, min_size=128,
                                              max_size=128)
    assert sum(history[-10:]) < sum(history[:10]) / 2, history
    assert recall_at_50(confident(model, images), targets) == 1.0


def test_small_mask_rcnn_overfits_a_few_shapes_images(overfit_maskrcnn):
    model, history, images, targets = overfit_maskrcnn
    assert sum(history[-10:]) < sum(history[:10]) / 2, history
    detections = confident(model, images)
    assert recall_at_50(detections, targets) == 1.0
    assert mask_iou(detections, targets) > 0.7
