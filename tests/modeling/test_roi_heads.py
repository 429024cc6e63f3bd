"""The RoI heads on hand-made inputs: proposals, GT boxes, masks and head
outputs small enough that the right answer is worked out by hand (or from
first principles here), then compared with torchvision's RoIHeads functions,
the reference detkit follows."""
import math

import pytest
import torch
from torch import nn
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.ops import MultiScaleRoIAlign, box_iou

from detkit.modeling.roi_heads import (FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RoIHeads,
                                       SingleScaleRoIPool, TwoMLPHead, _project_masks, fastrcnn_loss, paste_masks)

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def encode(gt, proposal, weights=WEIGHTS):
    """(dx, dy, dw, dh) of a GT box from a proposal, from the R-CNN definition."""
    wx, wy, ww, wh = weights
    pw, ph = proposal[2] - proposal[0], proposal[3] - proposal[1]
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    dx = wx * ((gt[0] + gw / 2) - (proposal[0] + pw / 2)) / pw
    dy = wy * ((gt[1] + gh / 2) - (proposal[1] + ph / 2)) / ph
    return [dx, dy, ww * math.log(gw / pw), wh * math.log(gh / ph)]


def smooth_l1(diff, beta=1 / 9):
    return 0.5 * diff ** 2 / beta if abs(diff) < beta else abs(diff) - 0.5 * beta


def bce(logit, target):
    return math.log1p(math.exp(logit)) - target * logit


def make_heads(num_classes=4, channels=2, mask=False, **kwargs) -> RoIHeads:
    """Small RoIHeads on one feature map "0" of stride 1."""
    torch.manual_seed(0)
    modules = dict(box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(channels * 49, 16),
                   box_predictor=FastRCNNPredictor(16, num_classes))
    if mask:
        modules.update(mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), mask_head=MaskRCNNHeads(channels, (4,)),
                       mask_predictor=MaskRCNNPredictor(4, 4, num_classes))
    return RoIHeads(**modules, **kwargs)


def test_single_scale_roi_pool_on_a_ramp():
    # Feature value x + 10 y (+ 100 in image 1) at feature pixel (y, x); spatial_scale 0.5 halves the boxes.
    ramp = torch.arange(8.0)[None, :] + 10 * torch.arange(8.0)[:, None]
    features = {"c4": torch.stack([ramp, ramp + 100])[:, None]}
    boxes = [torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([[4.0, 4, 12, 12]])]
    # RoIPool: [0, 0, 4, 4] rounds to 5x5 feature pixels; 2x2 bins of 2.5 cover pixels 0-2 and 2-4 (floor/ceil),
    # whose maxima are at 2 and 4. Image 1's box, [2, 2, 6, 6], covers 2-4 and 4-6.
    pooled = SingleScaleRoIPool("c4", 2, 0.5)(features, boxes, [(16, 16)] * 2)
    assert torch.equal(pooled[:, 0], torch.tensor([[[22.0, 24], [42, 44]], [[144, 146], [164, 166]]]))
    # RoIAlign: bins of 2 feature pixels, the mean of 2x2 bilinear samples of a linear ramp = its value at the bin
    # centre (1 and 3 for [0, 4]; 3 and 5 for [2, 6]).
    aligned = SingleScaleRoIPool("c4", 2, 0.5, align=True)(features, boxes, [(16, 16)] * 2)
    torch.testing.assert_close(aligned[:, 0], torch.tensor([[[11.0, 13], [31, 33]], [[133, 135], [153, 155]]]))


GT_BOXES = torch.tensor([[0.0, 0, 20, 20], [30, 30, 50, 50]])
GT_LABELS = torch.tensor([3, 1])
PROPOSALS = torch.tensor([
    [0.0, 0, 20, 20],   # IoU 1 with gt 0
    [0, 0, 20, 12],     # 0.6 with gt 0
    [0, 0, 20, 10],     # 0.5 with gt 0: foreground (>= fg_iou_thresh)
    [0, 0, 20, 8],      # 0.4 with gt 0
    [30, 30, 50, 45],   # 0.75 with gt 1
    [60, 60, 70, 70],   # overlaps nothing
    [10, 0, 40, 40],    # 0.14 with gt 0, 0.07 with gt 1
])


def test_sample_proposals_adds_gt_boxes_and_labels_by_iou():
    heads = make_heads(batch_size_per_image=512, positive_fraction=0.25)  # large enough to sample all
    targets = [{"boxes": GT_BOXES, "labels": GT_LABELS}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}]
    lonely = torch.tensor([[5.0, 5, 15, 15]])
    proposals, labels, regression_targets, matched, _ = heads.sample_proposals([PROPOSALS, lonely], targets)
    # The GT boxes join the proposals (indices 7 and 8), matching themselves.
    assert torch.equal(proposals[0], torch.cat([PROPOSALS, GT_BOXES]))
    assert labels[0].tolist() == [3, 3, 3, 0, 1, 0, 0, 3, 1]
    foreground_gt = {0: 0, 1: 0, 2: 0, 4: 1, 7: 0, 8: 1}
    for index, gt in foreground_gt.items():
        assert matched[0][index] == gt
        want = encode(GT_BOXES[gt].tolist(), proposals[0][index].tolist())
        torch.testing.assert_close(regression_targets[0][index], torch.tensor(want))
    # e.g. proposal 1 -> gt 0: the centre moves 4 px of 12 (x10) and the height grows 20/12 (log, x5).
    torch.testing.assert_close(regression_targets[0][1], torch.tensor([0, 10 * 4 / 12, 0, 5 * math.log(20 / 12)]))
    # An image without objects: all background, zero targets.
    assert torch.equal(proposals[1], lonely) and labels[1].tolist() == [0]
    assert torch.equal(regression_targets[1], torch.zeros(1, 4))
    # With bg_iou_thresh 0.3, the 0.4 proposal is ignored: never sampled.
    heads = make_heads(bg_iou_thresh=0.3, batch_size_per_image=512, positive_fraction=0.25)
    proposals, labels, _, _, _ = heads.sample_proposals([PROPOSALS], targets[:1])
    assert torch.equal(proposals[0], torch.cat([PROPOSALS[[0, 1, 2, 4, 5, 6]], GT_BOXES]))
    assert labels[0].tolist() == [3, 3, 3, 1, 0, 0, 3, 1]


@pytest.mark.parametrize("num_fg, num_bg, expected_pos, expected_neg", [
    (10, 20, 2, 6),  # 8 at 0.25: 2 positives, 6 negatives
    (0, 20, 1, 7),   # only the GT box itself is positive: negatives fill the rest
    (10, 3, 2, 3),   # too few negatives: fewer than 8 sampled, never more positives than 2
])
def test_sample_proposals_respects_batch_size_and_positive_fraction(num_fg, num_bg, expected_pos, expected_neg):
    heads = make_heads(batch_size_per_image=8, positive_fraction=0.25)
    gt = torch.tensor([[20.0, 20, 60, 60]])
    g = torch.Generator().manual_seed(1)
    foreground = gt + torch.rand(num_fg, 4, generator=g) * 4       # IoU > 0.8 with the GT
    background = torch.rand(num_bg, 4, generator=g) * 10 + torch.tensor([70.0, 70, 80, 80])  # IoU 0
    for seed in range(3):
        torch.manual_seed(seed)
        proposals, labels, _, _, _ = heads.sample_proposals([torch.cat([foreground, background])],
                                                          [{"boxes": gt, "labels": torch.tensor([2])}])
        assert ((labels[0] == 2).sum(), (labels[0] == 0).sum()) == (expected_pos, expected_neg)
        # Each sampled proposal has the label its IoU says.
        iou = box_iou(proposals[0], gt)[:, 0]
        assert torch.equal(labels[0] > 0, iou >= 0.5)


def test_fastrcnn_loss_by_hand_and_as_torchvision():
    class_logits = torch.tensor([[2.0, 0, -1], [0, 1, 3], [1, 1, 1]])
    labels = [torch.tensor([1, 2]), torch.tensor([0])]  # two images
    box_regression = torch.arange(36, dtype=torch.float32).reshape(3, 12) / 20 - 0.7
    regression_targets = [torch.tensor([[0.1, -0.2, 0.05, 0.3], [-0.4, 0.0, 0.2, 0.01]]), torch.tensor([[9.0] * 4])]
    losses = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
    flat_labels = [1, 2, 0]
    classification = sum(math.log(sum(math.exp(v) for v in row)) - row[label]
                         for row, label in zip(class_logits.tolist(), flat_labels)) / 3
    # Only the positives' deltas of their own class count, normalised by all 3 sampled RoIs.
    deltas = [box_regression[0, 4:8].tolist(), box_regression[1, 8:12].tolist()]
    box = sum(smooth_l1(p - t) for d, ts in zip(deltas, regression_targets[0].tolist()) for p, t in zip(d, ts)) / 3
    torch.testing.assert_close(losses["loss_classifier"], torch.tensor(classification))
    torch.testing.assert_close(losses["loss_box_reg"], torch.tensor(box))
    tv_classifier, tv_box = tv_roi_heads.fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
    torch.testing.assert_close(losses["loss_classifier"], tv_classifier)
    torch.testing.assert_close(losses["loss_box_reg"], tv_box)


def postprocess_scene():
    """Class probabilities (background, 1, 2) and deltas for two images, 50x60 and 10x10."""
    proposals = [torch.tensor([
        [10.0, 10, 30, 30],  # class 1 0.7; its class-2 deltas move it 10 px right: [20, 10, 40, 30] at 0.2
        [12, 10, 32, 30],    # class 1 0.6 (IoU 0.82 with the one above: suppressed), class 2 0.35 (kept)
        [50, 10, 70, 30],    # class 1 0.5, clipped to [50, 10, 60, 30]
        [60, 5, 80, 25],     # class 1 0.9, but no width left after clipping
        [0, 0, 10, 10],      # background
    ]), torch.tensor([[0.0, 0, 20, 20]])]  # clipped to [0, 0, 10, 10], class 2 0.5 and class 1 0.3
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.05, 0.6, 0.35], [0.47, 0.5, 0.03], [0.06, 0.9, 0.04],
                          [0.96, 0.02, 0.02], [0.2, 0.3, 0.5]])
    box_regression = torch.zeros(6, 3, 4)
    box_regression[:, 0] = 3.0  # background deltas are never used
    box_regression[0, 2, 0] = 5.0  # dx = 5 / 10 of the width
    return probs.log(), box_regression.reshape(6, 12), proposals, [(50, 60), (10, 10)]


def test_postprocess_by_hand_and_as_torchvision():
    class_logits, box_regression, proposals, image_sizes = postprocess_scene()
    heads = make_heads(num_classes=3, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    detections = heads.postprocess(class_logits, box_regression, proposals, image_sizes)
    expected = [
        ([[10.0, 10, 30, 30], [50, 10, 60, 30], [12, 10, 32, 30], [20, 10, 40, 30]], [0.7, 0.5, 0.35, 0.2], [1, 1, 2, 2]),
        ([[0.0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.3], [2, 1]),
    ]
    for det, (boxes, scores, labels) in zip(detections, expected):
        torch.testing.assert_close(det["boxes"], torch.tensor(boxes))
        torch.testing.assert_close(det["scores"], torch.tensor(scores))
        assert det["labels"].tolist() == labels
    tv_heads = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, WEIGHTS, 0.05, 0.5, 100)
    for det, boxes, scores, labels in zip(detections, *tv_heads.postprocess_detections(
            class_logits, box_regression, proposals, image_sizes)):
        assert torch.equal(det["boxes"], boxes) and torch.equal(det["scores"], scores)
        assert torch.equal(det["labels"], labels)
    # detections_per_img keeps the best; a higher score_thresh drops the weaker ones.
    heads.detections_per_img = 3
    detections = heads.postprocess(class_logits, box_regression, proposals, image_sizes)
    torch.testing.assert_close(detections[0]["scores"], torch.tensor([0.7, 0.5, 0.35]))
    heads.detections_per_img, heads.score_thresh = 100, 0.4
    detections = heads.postprocess(class_logits, box_regression, proposals, image_sizes)
    assert [d["labels"].tolist() for d in detections] == [[1, 1], [2]]


def align_profile(start: float, end: float, ones: tuple[int, int], size: int) -> list[float]:
    """RoIAlign (aligned=False, adaptive sampling) along one axis of a 0/1 mask
    that is 1 on pixels ones[0] .. ones[1] - 1: per output bin, the mean of
    linear interpolations between integer pixel positions."""
    bin_size = (end - start) / size
    grid = math.ceil(bin_size)
    value = lambda pixel: 1.0 if ones[0] <= pixel < ones[1] else 0.0  # noqa: E731
    out = []
    for b in range(size):
        samples = [start + b * bin_size + (i + 0.5) * bin_size / grid for i in range(grid)]
        low = [math.floor(s) for s in samples]
        out.append(sum((1 - (s - p)) * value(p) + (s - p) * value(p + 1) for s, p in zip(samples, low)) / grid)
    return out


def rectangle_masks():
    """Two 32x32 GT masks: ones on rows 8-23 x columns 4-19, and rows 20-29 x columns 20-29."""
    masks = torch.zeros(2, 32, 32, dtype=torch.uint8)
    masks[0, 8:24, 4:20] = 1
    masks[1, 20:30, 20:30] = 1
    return masks


def test_mask_targets_are_the_gt_masks_roi_aligned_to_the_boxes():
    masks = rectangle_masks()
    boxes = torch.tensor([[12.0, 8, 28, 24], [20, 20, 30, 30], [4, 8, 20, 24]])
    targets = _project_masks(masks, boxes, torch.tensor([0, 1, 0]), 16)
    # The first box is shifted 8 px right of mask 0: its left 7 columns are inside, the 8th straddles the edge
    # (bilinear between pixels 19 and 20: 0.5), the rest outside; the last row straddles the bottom edge.
    by_hand = torch.outer(torch.tensor([1.0] * 15 + [0.5]), torch.tensor([1.0] * 7 + [0.5] + [0.0] * 8))
    torch.testing.assert_close(targets[0], by_hand)
    for target, box, (mask_rows, mask_cols) in zip(targets, boxes, [((8, 24), (4, 20)), ((20, 30), (20, 30))] * 2):
        x1, y1, x2, y2 = box.tolist()
        expected = torch.outer(torch.tensor(align_profile(y1, y2, mask_rows, 16)),
                               torch.tensor(align_profile(x1, x2, mask_cols, 16)))
        torch.testing.assert_close(target, expected)
    assert torch.equal(targets, tv_roi_heads.project_masks_on_boxes(masks, boxes, torch.tensor([0, 1, 0]), 16))


class ConstantMaskLogits(nn.Module):
    """A stand-in mask branch: 16x16 logits of value per_class[k] for class k."""

    def __init__(self, per_class):
        super().__init__()
        self.per_class = torch.tensor(per_class)

    def forward(self, features, boxes, image_sizes):
        n = sum(len(b) for b in boxes)
        return self.per_class[None, :, None, None].expand(n, -1, 16, 16)


def test_mask_loss_by_hand():
    per_class = [0.0, 2.0, -1.0]
    heads = make_heads(num_classes=3, mask_roi_pool=ConstantMaskLogits(per_class), mask_head=nn.Identity(),
                       mask_predictor=nn.Identity())
    masks = rectangle_masks()
    targets = [{"boxes": torch.tensor([[4.0, 8, 20, 24], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2]),
                "masks": masks}]
    proposals = [torch.tensor([[12.0, 8, 28, 24], [20, 20, 30, 30], [0, 0, 4, 4]])]
    labels, matched = [torch.tensor([1, 2, 0])], [torch.tensor([0, 1, 0])]
    loss = heads.mask_loss({}, proposals, labels, matched, targets, [(32, 32)])
    # Positive 0 (class 1, logit 2) against mask 0 in its box; positive 1 (class 2, logit -1) against mask 1.
    total = 0.0
    for (x1, y1, x2, y2), (rows, cols), logit in [((12, 8, 28, 24), ((8, 24), (4, 20)), 2.0),
                                                   ((20, 20, 30, 30), ((20, 30), (20, 30)), -1.0)]:
        for row in align_profile(y1, y2, rows, 16):
            for col in align_profile(x1, x2, cols, 16):
                total += bce(logit, row * col)
    torch.testing.assert_close(loss, torch.tensor(total / (2 * 16 * 16)))
    # No positives: a zero loss, not NaN.
    loss = heads.mask_loss({}, proposals, [torch.tensor([0, 0, 0])], matched, targets, [(32, 32)])
    assert loss.item() == 0.0


def test_paste_masks_puts_the_mask_in_its_box():
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., :14] = 1.0  # the left half of the box
    detections = [{"boxes": torch.tensor([[10.0, 10, 20, 20]]), "masks": mask}, {"boxes": torch.zeros(0, 4)}]
    paste_masks(detections, [(30, 40), (30, 40)])
    pasted = detections[0]["masks"]
    assert pasted.shape == (1, 1, 30, 40)
    inside = pasted[0, 0] > 0.5
    # The left half of the box (columns 10-14), a pixel's margin for the interpolation at the edges.
    assert inside[11:19, 11:14].all() and not inside[:, :9].any() and not inside[:, 16:].any()
    assert not inside[:9].any() and not inside[21:].any()
    assert "masks" not in detections[1]


def test_roi_heads_train_and_eval_as_torchvision():
    heads = make_heads(num_classes=3, mask=True, batch_size_per_image=16, positive_fraction=0.25)
    tv_heads = tv_roi_heads.RoIHeads(heads.box_roi_pool, heads.box_head, heads.box_predictor, 0.5, 0.5, 16, 0.25,
                                     WEIGHTS, 0.05, 0.5, 100, heads.mask_roi_pool, heads.mask_head,
                                     heads.mask_predictor)
    g = torch.Generator().manual_seed(2)
    features = {"0": torch.rand(2, 2, 32, 32, generator=g)}
    proposals = [PROPOSALS / 2 + 1, torch.tensor([[1.0, 1, 9, 9], [2, 2, 30, 30]])]
    masks = rectangle_masks()
    targets = [{"boxes": torch.tensor([[4.0, 8, 20, 24], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2]),
                "masks": masks},
               {"boxes": torch.tensor([[4.0, 8, 20, 24]]), "labels": torch.tensor([2]), "masks": masks[:1]}]
    image_sizes = [(32, 32), (32, 32)]
    heads.train(), tv_heads.train()
    torch.manual_seed(3)
    _, losses = heads(features, proposals, image_sizes, targets)
    torch.manual_seed(3)
    _, tv_losses = tv_heads(features, proposals, image_sizes, targets)
    assert set(losses) == set(tv_losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for key in losses:
        torch.testing.assert_close(losses[key], tv_losses[key])
    heads.eval(), tv_heads.eval()
    heads.score_thresh = tv_heads.score_thresh = 0.0  # keep some detections of the random heads
    with torch.no_grad():
        detections, _ = heads(features, proposals, image_sizes)
        tv_detections, _ = tv_heads(features, proposals, image_sizes)
    assert all(len(d["boxes"]) > 0 for d in detections)
    for det, tv_det in zip(detections, tv_detections):
        assert set(det) == set(tv_det) == {"boxes", "scores", "labels", "masks"}
        for key in det:
            torch.testing.assert_close(det[key], tv_det[key])
