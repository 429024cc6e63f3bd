"""Region Proposal Network (Ren et al., 2015), torchvision's rules and names."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .anchor_maps import flatten_anchor_maps

from .targets import TensorTarget


class RPNHead(nn.Module):
    """A shared 3x3 conv, then per-anchor objectness and box deltas."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1),
                                                nn.ReLU(inplace=True)))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hidden = [self.conv(f) for f in features]
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


def flatten_predictions(logits: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level objectness and deltas -> [N * sum(HWA), 1] and [N * sum(HWA), 4]."""
    return flatten_anchor_maps(logits, 1).flatten(0, -2), flatten_anchor_maps(deltas, 4).reshape(-1, 4)


def encode_matched(coder: ops.BoxCoder, matched: Tensor, references: Tensor, gt_boxes: Tensor) -> Tensor:
    """Regression targets of references against their matched GT boxes; an
    image with no GT has only background, whose targets are never used."""
    if gt_boxes.numel() == 0:
        return torch.zeros_like(references)
    return coder.encode_single(matched, references)


class RegionProposalNetwork(nn.Module):
    """Proposals: per level the pre_nms_top_n highest objectness anchors,
    decoded, clipped, small ones removed, NMS per level, the post_nms_top_n best.
    Train and test values are (train, test) pairs."""

    def __init__(self, anchor_generator: ops.AnchorGenerator, head: RPNHead, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n=(2000, 1000), post_nms_top_n=(2000, 1000), nms_thresh: float = 0.7,
                 score_thresh: float = 0.0):
        super().__init__()
        self.anchor_generator, self.head = anchor_generator, head
        self.box_coder = ops.BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = ops.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = ops.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre, self._post = pre_nms_top_n, post_nms_top_n
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, 1e-3

    def forward(self, images, features: dict[str, Tensor], targets=None):
        features = list(features.values())
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(images, features)
        per_level = [o[0].numel() for o in logits]
        objectness, pred_deltas = flatten_predictions(logits, deltas)
        # Box arithmetic in float32 even under autocast: half precision is off by pixels.
        objectness, pred_deltas = objectness.float(), pred_deltas.float()
        proposals = self.box_coder.decode(pred_deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        losses = {}
        if self.training:
            labels, matched_boxes = self.assign_targets(anchors, targets)
            regression_targets = [encode_matched(self.box_coder, m, a, t["boxes"])
                                  for m, a, t in zip(matched_boxes, anchors, targets)]
            losses = self.compute_loss(objectness, pred_deltas, labels, regression_targets)
        return boxes, losses

    def _top_n(self, objectness: Tensor, per_level: list[int]) -> Tensor:
        picks, offset = [], 0
        limit = self._pre[0] if self.training else self._pre[1]
        for level in objectness.split(per_level, 1):
            picks.append(level.topk(min(limit, level.shape[1]), dim=1)[1] + offset)
            offset += level.shape[1]
        return torch.cat(picks, 1)

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_sizes, per_level: list[int]):
        n = proposals.shape[0]
        objectness = objectness.detach().reshape(n, -1)
        levels = torch.cat([torch.full((k,), i, dtype=torch.int64) for i, k in enumerate(per_level)])
        levels = levels.to(objectness.device).reshape(1, -1).expand_as(objectness)
        top = self._top_n(objectness, per_level)
        rows = torch.arange(n, device=objectness.device)[:, None]
        objectness, levels, proposals = objectness[rows, top], levels[rows, top], proposals[rows, top]
        post = self._post[0] if self.training else self._post[1]
        final_boxes, final_scores = [], []
        for boxes, scores, lvl, size in zip(proposals, torch.sigmoid(objectness), levels, image_sizes):
            boxes = ops.clip_boxes_to_image(boxes, size)
            keep = ops.remove_small_boxes(boxes, self.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = ops.batched_nms(boxes, scores, lvl, self.nms_thresh)[:post]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def assign_targets(self, anchors: list[Tensor], targets: list[TensorTarget]):
        labels, matched = [], []
        for image_anchors, target in zip(anchors, targets):
            gt = target["boxes"]
            if gt.numel() == 0:
                matched.append(torch.zeros_like(image_anchors))
                labels.append(torch.zeros(len(image_anchors), dtype=torch.float32, device=gt.device))
                continue
            idx = self.matcher(ops.box_iou(gt, image_anchors))
            matched.append(gt[idx.clamp(min=0)])
            image_labels = (idx >= 0).to(torch.float32)
            image_labels[idx == ops.Matcher.BELOW_LOW_THRESHOLD] = 0.0
            image_labels[idx == ops.Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(image_labels)
        return labels, matched

    def compute_loss(self, objectness: Tensor, pred_deltas: Tensor, labels: list[Tensor],
                     regression_targets) -> dict[str, Tensor]:
        """Binary cross-entropy over the sampled anchors, smooth-L1 (beta 1/9)
        over the sampled positives, both per sampled anchor."""
        pos_masks, neg_masks = self.sampler(labels)
        pos = torch.where(torch.cat(pos_masks, 0))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(neg_masks, 0))[0]], 0)
        labels = torch.cat(labels, 0)
        targets = torch.cat(list(regression_targets), 0)
        box_loss = F.smooth_l1_loss(pred_deltas[pos], targets[pos], beta=1 / 9, reduction="sum") / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
