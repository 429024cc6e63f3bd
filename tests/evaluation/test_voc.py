import numpy as np
import pytest
import torch

from detkit.evaluation import VOCEvaluator, voc_ap

CLASSES = ["aeroplane", "bicycle", "bird"]


def devkit_ap(gts, dets, label, use_07, threshold=0.5):
    """The VOC devkit's evaluation of one class, written out plainly, on
    1-based inclusive corners with the devkit's "+1" areas."""
    positives = sum(1 for boxes, labels, difficult in gts.values() for l, d in zip(labels, difficult)
                    if l == label and not d)
    found = [(score, image, box) for image, (boxes, scores, labels) in dets.items()
             for box, score, l in zip(boxes, scores, labels) if l == label]
    found.sort(key=lambda r: -r[0])  # Python's sort is stable: ties keep their order
    taken = {image: [False] * len(v[0]) for image, v in gts.items()}
    tp, fp = [], []
    for score, image, b in found:
        boxes, labels, difficult = gts[image]
        best, best_j = -np.inf, -1
        for j, (g, l) in enumerate(zip(boxes, labels)):
            if l != label:
                continue
            iw = max(min(b[2], g[2]) - max(b[0], g[0]) + 1.0, 0.0)
            ih = max(min(b[3], g[3]) - max(b[1], g[1]) + 1.0, 0.0)
            inter = iw * ih
            union = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter
            if inter / union > best:
                best, best_j = inter / union, j
        if best > threshold:
            if difficult[best_j]:
                tp.append(0), fp.append(0)
            elif not taken[image][best_j]:
                taken[image][best_j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    rec = tp / positives
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07:
        return sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) for t in np.arange(0, 1.1, 0.1)) / 11
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_like_data(seed, images=25):
    rng = np.random.default_rng(seed)
    gts, dets = {}, {}
    for image in range(images):
        n = int(rng.integers(1, 6))
        x1, y1 = rng.integers(1, 300, n), rng.integers(1, 200, n)
        boxes = np.stack([x1, y1, x1 + rng.integers(5, 120, n), y1 + rng.integers(5, 120, n)], 1).astype(float)
        labels = rng.integers(1, 4, n)
        difficult = rng.random(n) < 0.15
        gts[image] = (boxes, labels, difficult)
        k = int(rng.integers(0, 8))
        pick = rng.integers(0, n, k)
        noisy = boxes[pick] + rng.integers(-8, 9, (k, 4))
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        extra = np.array([[10.0, 10.0, 60.0, 50.0]] * int(rng.integers(0, 2)))
        det_boxes = np.concatenate([noisy, extra.reshape(-1, 4)])
        det_labels = np.concatenate([labels[pick], rng.integers(1, 4, len(extra))])
        scores = np.round(rng.random(len(det_boxes)), 2)
        dets[image] = (det_boxes, scores, det_labels)
    return gts, dets


def to_detkit(boxes):
    """1-based inclusive VOC corners -> detkit's 0-based continuous xyxy."""
    out = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4).clone()
    out[:, :2] -= 1
    return out


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_evaluator_matches_the_devkit(seed, use_07):
    gts, dets = voc_like_data(seed)
    evaluator = VOCEvaluator(CLASSES, use_07_metric=use_07)
    evaluator.update(
        {i: {"boxes": to_detkit(b), "scores": torch.tensor(s), "labels": torch.tensor(l)} for i, (b, s, l) in dets.items()},
        {i: {"boxes": to_detkit(b), "labels": torch.tensor(l), "difficult": torch.tensor(d)}
         for i, (b, l, d) in gts.items()},
    )
    metrics = evaluator.compute()
    for label, name in enumerate(CLASSES, start=1):
        assert metrics.per_class[name] == pytest.approx(devkit_ap(gts, dets, label, use_07), abs=1e-12)
    assert metrics.mAP == pytest.approx(np.mean(list(metrics.per_class.values())))
    assert 0.05 < metrics.mAP < 1.0


def test_voc_ap_definitions_by_hand():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    # Area: recall 0->0.5 at precision 1, 0.5->1 at 2/3.
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11-point: t = 0..0.5 (6 points) best precision 1, t = 0.6..1.0 (5 points) 2/3.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=False) == 0.0


def test_difficult_objects_neither_count_nor_penalise():
    evaluator = VOCEvaluator(["cat"], use_07_metric=False)
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    evaluator.update(
        {0: {"boxes": box, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}},
        {0: {"boxes": box, "labels": torch.tensor([1, 1]), "difficult": torch.tensor([False, True])}},
    )
    assert evaluator.compute().per_class["cat"] == pytest.approx(1.0)


def test_voc_bad_input():
    evaluator = VOCEvaluator(CLASSES)
    target = {"boxes": torch.zeros(1, 4), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="prediction for image 7 has no target"):
        evaluator.update({7: {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([1])}}, {})
    with pytest.raises(ValueError, match=r"target for image 1: label 4 is outside 1\.\.3"):
        evaluator.update({}, {1: {"boxes": torch.zeros(1, 4), "labels": torch.tensor([4])}})
    with pytest.raises(ValueError, match="a score is not finite"):
        evaluator.update({2: {"boxes": torch.zeros(1, 4), "scores": torch.tensor([float("nan")]),
                              "labels": torch.tensor([1])}}, {2: target})
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        VOCEvaluator(CLASSES, iou_threshold=1.5)
