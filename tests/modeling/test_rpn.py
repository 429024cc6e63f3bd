"""The RPN on hand-made inputs: anchors, GT boxes and predictions small enough
that the right answer is worked out by hand (or from first principles here),
then compared with torchvision's RPN, the reference detkit follows."""
import math

import pytest
import torch
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detkit import ops
from detkit.modeling.rpn import RegionProposalNetwork, RPNHead, encode_matched, flatten_predictions

OFFSET = 10.0  # features hold prediction + OFFSET, so that they pass the head's ReLU unchanged


def encode(gt, anchor, weights=(1.0, 1.0, 1.0, 1.0)):
    """(dx, dy, dw, dh) of a GT box from an anchor, from the R-CNN definition."""
    wx, wy, ww, wh = weights
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    return [wx * ((gt[0] + gw / 2) - (anchor[0] + aw / 2)) / aw, wy * ((gt[1] + gh / 2) - (anchor[1] + ah / 2)) / ah,
            ww * math.log(gw / aw), wh * math.log(gh / ah)]


def bce(logit, label):
    return math.log1p(math.exp(logit)) - label * logit


def smooth_l1(diff, beta=1 / 9):
    return 0.5 * diff ** 2 / beta if abs(diff) < beta else abs(diff) - 0.5 * beta


def reading_head(num_anchors: int) -> RPNHead:
    """An RPNHead that copies its input out: a feature map of 5 * A channels
    [logits + OFFSET (A), deltas + OFFSET (4A, anchor-major)] gives exactly
    those logits and deltas."""
    a, channels = num_anchors, 5 * num_anchors
    head = RPNHead(channels, a)
    with torch.no_grad():
        head.conv[0][0].weight.zero_()
        head.conv[0][0].weight[:, :, 1, 1] = torch.eye(channels)
        head.conv[0][0].bias.zero_()
        head.cls_logits.weight.zero_()
        head.cls_logits.weight[:, :a, 0, 0] = torch.eye(a)
        head.cls_logits.bias.fill_(-OFFSET)
        head.bbox_pred.weight.zero_()
        head.bbox_pred.weight[:, a:, 0, 0] = torch.eye(4 * a)
        head.bbox_pred.bias.fill_(-OFFSET)
    return head


def features_for(logits: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """logits: [N, A, H, W], deltas: [N, A, 4, H, W] -> the reading head's input."""
    return torch.cat([logits, deltas.flatten(1, 2)], 1) + OFFSET


def make_rpn(sizes, **kwargs):
    generator = ops.AnchorGenerator(sizes, ((1.0,),) * len(sizes))
    return RegionProposalNetwork(generator, reading_head(len(sizes[0])), **kwargs)


def torchvision_twin(rpn: RegionProposalNetwork, sizes, pre, post) -> tv_rpn.RegionProposalNetwork:
    """torchvision's RPN with the same head, anchors and settings."""
    return tv_rpn.RegionProposalNetwork(
        TVAnchorGenerator(sizes, ((1.0,),) * len(sizes)), rpn.head, rpn.matcher.high_threshold,
        rpn.matcher.low_threshold, rpn.sampler.batch_size_per_image, rpn.sampler.positive_fraction,
        dict(training=pre[0], testing=pre[1]), dict(training=post[0], testing=post[1]), rpn.nms_thresh,
        rpn.score_thresh)


def test_rpn_head_shapes_and_flatten_order():
    head = RPNHead(8, 3)
    out_logits, out_deltas = head([torch.rand(2, 8, 5, 4), torch.rand(2, 8, 3, 2)])
    assert [tuple(t.shape) for t in out_logits] == [(2, 3, 5, 4), (2, 3, 3, 2)]
    assert [tuple(t.shape) for t in out_deltas] == [(2, 12, 5, 4), (2, 12, 3, 2)]
    # Values that spell out (image, level, y, x, anchor, coordinate): the rows must come out in
    # (image, level, y, x, anchor) order, the anchor generator's, with the 4 deltas of an anchor together.
    n, a, grids = 2, 3, [(2, 3), (1, 2)]
    logits, deltas, expected_logits, expected_deltas = [], [], [], []
    for level, (h, w) in enumerate(grids):
        logit = torch.zeros(n, a, h, w)
        delta = torch.zeros(n, a * 4, h, w)
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    for k in range(a):
                        code = 10000 * i + 1000 * level + 100 * y + 10 * x + k
                        logit[i, k, y, x] = code
                        delta[i, 4 * k: 4 * k + 4, y, x] = torch.tensor([code + 0.1 * c for c in range(4)])
        logits.append(logit)
        deltas.append(delta)
    for i in range(n):
        for level, (h, w) in enumerate(grids):
            for y in range(h):
                for x in range(w):
                    for k in range(a):
                        code = 10000 * i + 1000 * level + 100 * y + 10 * x + k
                        expected_logits.append([code])
                        expected_deltas.append([code + 0.1 * c for c in range(4)])
    flat_logits, flat_deltas = flatten_predictions(logits, deltas)
    assert torch.equal(flat_logits, torch.tensor(expected_logits))
    torch.testing.assert_close(flat_deltas, torch.tensor(expected_deltas))


def test_assign_targets_thresholds_and_low_quality_matches():
    gt = torch.tensor([[0.0, 0, 10, 10], [40, 0, 60, 20], [0, 40, 10, 50], [100, 100, 110, 110]])
    anchors = torch.tensor([
        [0.0, 0, 10, 10],     # IoU 1 with gt 0: foreground
        [0, 0, 10, 8],        # 0.8 with gt 0: foreground
        [0, 0, 10, 5],        # 0.5 with gt 0: between the thresholds, ignored
        [0, 0, 10, 2],        # 0.2 with gt 0: background
        [20, 20, 30, 30],     # overlaps nothing: background
        [40, 0, 60, 10],      # 0.5, but gt 1's best anchor: foreground (low-quality match)
        [40, 0, 60, 5],       # 0.25 with gt 1: background
        [0, 40, 10, 44],      # 0.4 with gt 2, tied best: foreground
        [0, 46, 10, 50],      # 0.4 with gt 2, tied best: foreground
        [100, 100, 110, 102],  # 0.2, below even the background threshold, but gt 3's best: foreground
    ])
    expected_labels = torch.tensor([1.0, 1, -1, 0, 0, 1, 0, 1, 1, 1])
    expected_gt = {0: 0, 1: 0, 5: 1, 7: 2, 8: 2, 9: 3}
    rpn = make_rpn(((16,),))
    targets = [{"boxes": gt}, {"boxes": torch.zeros(0, 4)}]
    labels, matched = rpn.assign_targets([anchors, anchors], targets)
    assert torch.equal(labels[0], expected_labels)
    for anchor, g in expected_gt.items():
        assert torch.equal(matched[0][anchor], gt[g])
    # An image without objects is all background.
    assert torch.equal(labels[1], torch.zeros(10))
    assert torch.equal(encode_matched(rpn.box_coder, matched[1], anchors, targets[1]["boxes"]), torch.zeros(10, 4))
    # Regression targets with weights (1, 1, 1, 1), e.g. anchor 1 -> gt 0 is (0, 1/8, 0, log(10/8)).
    codes = encode_matched(rpn.box_coder, matched[0], anchors, gt)
    for anchor, g in expected_gt.items():
        torch.testing.assert_close(codes[anchor], torch.tensor(encode(gt[g].tolist(), anchors[anchor].tolist())))
    torch.testing.assert_close(codes[1], torch.tensor([0, 1 / 8, 0, math.log(10 / 8)]))
    # torchvision's RPN assigns the same.
    tv_labels, tv_matched = torchvision_twin(rpn, ((16,),), (1, 1), (1, 1)).assign_targets_to_anchors(
        [anchors, anchors], targets)
    for ours, theirs in zip(labels + matched, tv_labels + tv_matched):
        assert torch.equal(ours, theirs)


def proposal_scene():
    """Two levels, two anchors (16 and 18 px) per cell: level 0 a 4x4 grid of
    stride 16, level 1 a 2x2 grid of stride 32; two images, 60x50 and 64x64.
    Anchor (y, x, k) of a level has centre (stride * x, stride * y)."""
    n = 2
    logits = [torch.full((n, 2, 4, 4), -OFFSET), torch.full((n, 2, 2, 2), -OFFSET)]
    deltas = [torch.zeros(n, 2, 4, 4, 4), torch.zeros(n, 2, 4, 2, 2)]
    for level, (y, x, k), logit in [
        (0, (1, 1, 0), 4.0),   # [8, 8, 24, 24]
        (0, (1, 1, 1), 3.0),   # [7, 7, 25, 25]: IoU 0.79 with the one above, removed by NMS
        (0, (2, 2, 0), 2.5),   # [24, 24, 40, 40]
        (0, (2, 1, 0), 2.0),   # dx = 3 below: [56, 24, 72, 40]; no width left in the 50 px wide image
        (0, (3, 3, 0), 1.0),   # [40, 40, 56, 56]: 5th of its level, cut by pre_nms_top_n = 4
        (1, (1, 1, 0), 0.0),   # [24, 24, 40, 40]: a level-0 box too, but NMS is per level
        (1, (0, 1, 1), -1.0),  # [23, -9, 41, 9] -> clipped to [23, 0, 41, 9]
        (1, (1, 0, 0), -2.0),  # [-8, 24, 8, 40]: score 0.12 < score_thresh 0.2
    ]:
        logits[level][:, k, y, x] = logit
    deltas[0][:, 0, 0, 2, 1] = 3.0
    features = {str(level): features_for(l, d) for level, (l, d) in enumerate(zip(logits, deltas))}
    images = ImageList(torch.zeros(n, 3, 64, 64), [(60, 50), (64, 64)])
    return images, features


def proposals_with_scores(rpn: RegionProposalNetwork, images: ImageList, features: dict):
    """filter_proposals on the head's predictions: forward's boxes and their scores."""
    maps = list(features.values())
    with torch.no_grad():
        objectness, pred_deltas = flatten_predictions(*rpn.head(maps))
        proposals = rpn.box_coder.decode(pred_deltas, rpn.anchor_generator(images, maps))
        proposals = proposals.view(len(images.tensors), -1, 4)
        return rpn.filter_proposals(proposals, objectness, images.image_sizes, [m[0, 0].numel() * 2 for m in maps])


def test_proposals_top_n_clip_small_boxes_nms_per_level_score_thresh():
    sizes = ((16, 18), (16, 18))
    pre, post = (2, 4), (2, 5)
    rpn = make_rpn(sizes, pre_nms_top_n=pre, post_nms_top_n=post, nms_thresh=0.7, score_thresh=0.2).eval()
    images, features = proposal_scene()
    with torch.no_grad():
        boxes, losses = rpn(images, features)
    assert losses == {}
    # Best first. Image 1 also keeps the shifted box (its width leaves it 8 px), so its [0, 24, 8, 40]
    # would be 6th: cut by post_nms_top_n = 5 as well as by score_thresh.
    expected = [torch.tensor([[8.0, 8, 24, 24], [24, 24, 40, 40], [24, 24, 40, 40], [23, 0, 41, 9]]),
                torch.tensor([[8.0, 8, 24, 24], [24, 24, 40, 40], [56, 24, 64, 40], [24, 24, 40, 40], [23, 0, 41, 9]])]
    expected_scores = [torch.sigmoid(torch.tensor([4.0, 2.5, 0.0, -1.0])),
                       torch.sigmoid(torch.tensor([4.0, 2.5, 2.0, 0.0, -1.0]))]
    filtered, scores = proposals_with_scores(rpn, images, features)
    for got, got_filtered, got_scores, want, want_scores in zip(boxes, filtered, scores, expected, expected_scores):
        assert torch.equal(got, want) and torch.equal(got_filtered, want)
        torch.testing.assert_close(got_scores, want_scores)
    # torchvision's RPN proposes the same boxes.
    twin = torchvision_twin(rpn, sizes, pre, post).eval()
    with torch.no_grad():
        tv_boxes, _ = twin(images, features)
    for got, want in zip(boxes, tv_boxes):
        assert torch.equal(got, want)
    # Training uses the first values of the pairs: the best 2 of each level (level 0's second is
    # suppressed by NMS), then the best 2 of those three.
    rpn.train()
    targets = [{"boxes": torch.tensor([[8.0, 8, 24, 24]])}] * 2
    boxes, losses = rpn(images, features, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    _, scores = proposals_with_scores(rpn, images, features)
    for got, got_scores in zip(boxes, scores):
        assert torch.equal(got, torch.tensor([[8.0, 8, 24, 24], [24, 24, 40, 40]]))
        torch.testing.assert_close(got_scores, torch.sigmoid(torch.tensor([4.0, 0.0])))


# One 2x2 level of stride 16 in a 32x32 image, anchors of 16 and 32 px: anchor 2 * (2y + x) + k.
LOSS_ANCHORS = [[-8.0, -8, 8, 8], [-16, -16, 16, 16], [8, -8, 24, 8], [0, -16, 32, 16],
                [-8, 8, 8, 24], [-16, 0, 16, 32], [8, 8, 24, 24], [0, 0, 32, 32]]
LOSS_GT = [4.0, 4, 28, 28]
# Against LOSS_GT: anchor 7 has IoU 0.56 < 0.7 but is the GT's best (foreground), anchor 6 0.44 (ignored),
# the others below 0.3 (background). Image 1 has no GT: all 8 background.
LOSS_LABELS = [[0, 0, 0, 0, 0, 0, -1, 1], [0] * 8]


@pytest.mark.parametrize("batch_size, num_pos, num_sampled", [(256, 1, 15), (4, 1, 8), (1, 0, 2)])
def test_rpn_losses_by_hand(batch_size, num_pos, num_sampled):
    # Every negative has the same logit, so the loss does not depend on which ones the sampler draws.
    neg_logit, pos_logit, ignored_logit = -1.0, 2.0, 5.0
    logits = torch.full((2, 2, 2, 2), neg_logit)
    logits[0, 1, 1, 1], logits[0, 0, 1, 1] = pos_logit, ignored_logit
    # Distinct deltas for every anchor; anchor 7's are exact binary fractions, one below beta = 1/9.
    deltas = (torch.arange(2 * 2 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 2, 4, 2, 2) % 7 - 3) / 8
    positive_deltas = [0.0625, -0.5, 0.25, 0.75]
    deltas[0, 1, :, 1, 1] = torch.tensor(positive_deltas)
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32), (32, 32)])
    features = {"0": features_for(logits, deltas)}
    targets = [{"boxes": torch.tensor([LOSS_GT])}, {"boxes": torch.zeros(0, 4)}]
    rpn = make_rpn(((16, 32),), batch_size_per_image=batch_size, positive_fraction=0.5).train()
    anchors = rpn.anchor_generator(images, list(features.values()))
    assert torch.equal(anchors[0], torch.tensor(LOSS_ANCHORS))
    assert [l.tolist() for l in rpn.assign_targets(anchors, targets)[0]] == LOSS_LABELS

    torch.manual_seed(0)
    _, losses = rpn(images, features, targets)
    num_neg = num_sampled - num_pos
    expected_objectness = (num_pos * bce(pos_logit, 1) + num_neg * bce(neg_logit, 0)) / num_sampled
    target = encode(LOSS_GT, LOSS_ANCHORS[7])
    assert target[:2] == [0, 0] and target[2] == target[3] == pytest.approx(math.log(24 / 32))
    box_sum = sum(smooth_l1(p - t) for p, t in zip(positive_deltas, target))
    expected_box = num_pos * box_sum / num_sampled
    torch.testing.assert_close(losses["loss_objectness"], torch.tensor(expected_objectness))
    torch.testing.assert_close(losses["loss_rpn_box_reg"], torch.tensor(expected_box))
    # torchvision's RPN computes the same losses from the same head and anchors.
    torch.manual_seed(0)
    _, tv_losses = torchvision_twin(rpn, ((16, 32),), rpn._pre, rpn._post).train()(images, features, targets)
    for key in losses:
        torch.testing.assert_close(losses[key], tv_losses[key])
    # The losses reach the head.
    sum(losses.values()).backward()
    assert rpn.head.cls_logits.weight.grad.abs().sum() > 0
