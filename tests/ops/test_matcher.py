import pytest
import torch
from torchvision.models.detection import _utils as tv
from torchvision.ops import box_iou as tv_box_iou

from detkit import ops
from detkit.ops import matcher as M
from detkit.data.synthetic import random_boxes


def ssd300_anchors(dtype=torch.float32):
    from torchvision.models.detection.image_list import ImageList

    gen = ops.DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]], steps=[8, 16, 32, 64, 100, 300])
    images = ImageList(torch.zeros(1, 3, 300, 300, dtype=dtype), [(300, 300)])
    return gen(images, [torch.zeros(1, 1, g, g, dtype=dtype) for g in (38, 19, 10, 5, 3, 1)])[0]


def gt_for(n, seed, dtype=torch.float32):
    boxes = random_boxes(n, size=250.0, max_side=120.0, seed=seed, dtype=dtype)
    boxes[:, 2:] += 4
    labels = torch.randint(1, 21, (n,), generator=torch.Generator().manual_seed(seed))
    return boxes, labels


def quality(g, a, seed, ties=False):
    q = torch.rand(g, a, generator=torch.Generator().manual_seed(seed))
    return (q * 8).floor() / 8 if ties else q


@pytest.mark.parametrize("allow_low", [False, True])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (1, 50), (7, 3000), (40, 200)])
def test_matcher_matches_torchvision_and_reference(shape, ties, allow_low):
    q = quality(*shape, seed=shape[1], ties=ties)
    ours = ops.Matcher(0.7, 0.3, allow_low)
    out = ours(q)
    assert out.dtype == torch.int64
    assert torch.equal(out, tv.Matcher(0.7, 0.3, allow_low)(q))
    assert torch.equal(out, ours._reference(q))


@pytest.mark.parametrize("shape", [(1, 1), (5, 8732), (30, 100)])
@pytest.mark.parametrize("ties", [False, True])
def test_ssd_matcher_matches_torchvision(shape, ties):
    q = quality(*shape, seed=7, ties=ties)
    out = ops.SSDMatcher(0.5)(q)
    assert torch.equal(out, tv.SSDMatcher(0.5)(q))
    assert torch.equal(out, ops.SSDMatcher(0.5)._reference(q))


def test_matcher_empty_ground_truth_is_all_background():
    assert ops.Matcher(0.5, 0.4)(torch.zeros(0, 6)).tolist() == [-1] * 6
    assert ops.SSDMatcher(0.5)(torch.zeros(0, 3)).tolist() == [-1] * 3
    assert ops.Matcher(0.5, 0.4)(torch.zeros(3, 0)).shape == (0,)


def test_matcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="low_threshold .* must be <= high_threshold"):
        ops.Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match="high_threshold must be in"):
        ops.Matcher(1.5, 0.7)
    q = torch.rand(2, 3)
    q[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"match_quality_matrix\[5\] is not finite"):
        ops.Matcher(0.5, 0.5)(q)
    with pytest.raises(TypeError, match="match_quality_matrix must be a float16, bfloat16, float32 or float64"):
        ops.Matcher(0.5, 0.5)(torch.ones(2, 3, dtype=torch.int64))


def torchvision_ssd_targets(anchors, gt_boxes, gt_labels, threshold=0.5, weights=(10.0, 10.0, 5.0, 5.0)):
    """torchvision's SSD target assignment, as SSD.compute_loss does it."""
    matches = tv.SSDMatcher(threshold)(tv_box_iou(gt_boxes, anchors))
    fg = matches >= 0
    labels = torch.zeros(len(anchors), dtype=torch.int64)
    labels[fg] = gt_labels[matches[fg]]
    targets = torch.zeros_like(anchors)
    targets[fg] = tv.BoxCoder(weights).encode_single(gt_boxes[matches[fg]], anchors[fg])
    return targets, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_gt", [1, 10, 60])
def test_ssd_assign_matches_torchvision_pipeline_and_reference(num_gt, dtype):
    anchors = ssd300_anchors(dtype)
    gt_boxes, gt_labels = gt_for(num_gt, seed=num_gt, dtype=dtype)
    targets, labels = ops.ssd_assign(anchors, gt_boxes, gt_labels)
    tv_targets, tv_labels = torchvision_ssd_targets(anchors, gt_boxes, gt_labels)
    assert torch.equal(labels, tv_labels)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets, tv_targets, **tol)
    ref_targets, ref_labels = M._ssd_assign_reference(anchors, gt_boxes, gt_labels, 0.5, (10.0, 10.0, 5.0, 5.0))
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(targets, ref_targets, **tol)
    # Every GT gets at least its best anchor.
    assert set(labels[labels > 0].tolist()) == set(gt_labels.tolist())


def test_ssd_assign_empty_ground_truth_and_overlapping_best_anchor():
    anchors = ssd300_anchors()
    targets, labels = ops.ssd_assign(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert labels.eq(0).all() and targets.eq(0).all() and targets.shape == (8732, 4)
    # Two identical GT boxes share a best anchor: the later one wins it, as in torchvision.
    gt = torch.tensor([[100, 100, 160, 150.0], [100, 100, 160, 150.0]])
    labels_in = torch.tensor([3, 7])
    targets, labels = ops.ssd_assign(anchors, gt, labels_in)
    assert torch.equal(labels, torchvision_ssd_targets(anchors, gt, labels_in)[1])


def test_ssd_assign_rejects_bad_input():
    anchors = ssd300_anchors()
    gt, labels = gt_for(3, seed=1)
    with pytest.raises(ValueError, match=r"gt_labels\[1\] is 0; object labels start at 1"):
        ops.ssd_assign(anchors, gt, torch.tensor([1, 0, 2]))
    with pytest.raises(TypeError, match="gt_labels must be an integer tensor"):
        ops.ssd_assign(anchors, gt, labels.float())
    with pytest.raises(ValueError, match=r"gt_labels must have shape \(3,\)"):
        ops.ssd_assign(anchors, gt, labels[:2])
    bad = gt.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"gt_boxes\[2\] is not finite"):
        ops.ssd_assign(anchors, bad, labels)
    flat = gt.clone()
    flat[0, 2] = flat[0, 0]
    with pytest.raises(ValueError, match=r"gt_boxes\[0\] has zero width"):
        ops.ssd_assign(anchors, flat, labels)
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        ops.ssd_assign(anchors, gt, labels, iou_threshold=2.0)
