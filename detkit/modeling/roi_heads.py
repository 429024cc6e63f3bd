"""Fast R-CNN box heads on RoI-aligned proposal features (torchvision's rules
and names), written as short steps instead of one long forward."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign, roi_pool

from .. import ops
from ..ops.roi_align import roi_align
from .rpn import encode_matched

from .targets import TensorTarget


class SingleScaleRoIPool(nn.Module):
    """RoIPool (the Fast R-CNN layer, max pooling over quantised bins) or
    RoIAlign on one feature map, called like MultiScaleRoIAlign."""

    def __init__(self, feature: str, output_size: int, spatial_scale: float, align: bool = False):
        super().__init__()
        self.feature, self.output_size, self.spatial_scale, self.align = feature, output_size, spatial_scale, align

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes) -> Tensor:
        x = features[self.feature]
        if self.align:
            return roi_align(x, boxes, self.output_size, self.spatial_scale, sampling_ratio=2)
        return roi_pool(x, boxes, self.output_size, self.spatial_scale)


class TwoMLPHead(nn.Module):
    def __init__(self, in_channels: int, representation_size: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def reset_parameters(self) -> None:
        """The constructor's initialisation (nn.Linear's own), for fine-tuning to another class count."""
        self.cls_score.reset_parameters()
        self.bbox_pred.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class MaskRCNNHeads(nn.Sequential):
    """Four 3x3 conv + ReLU layers on 14x14 RoI features (names as torchvision's)."""

    def __init__(self, in_channels: int = 256, layers=(256, 256, 256, 256)):
        blocks, prev = [], in_channels
        for width in layers:
            blocks.append(nn.Sequential(nn.Conv2d(prev, width, 3, padding=1), nn.ReLU(inplace=True)))
            prev = width
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


class MaskRCNNPredictor(nn.Sequential):
    """2x deconvolution then per-class 28x28 mask logits."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.relu = nn.ReLU(inplace=True)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1, 1, 0)
        nn.init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.mask_fcn_logits.weight, mode="fan_out", nonlinearity="relu")

    def reset_logits(self) -> None:
        """Re-initialises the per-class layer as the constructor does (the weight
        Kaiming-normal, the bias nn.Conv2d's default), for fine-tuning to another class count."""
        self.mask_fcn_logits.reset_parameters()
        nn.init.kaiming_normal_(self.mask_fcn_logits.weight, mode="fan_out", nonlinearity="relu")


class RoIHeads(nn.Module):
    """Box classification and regression for the proposals.

    Training: proposals plus the GT boxes are matched (IoU >= fg_iou_thresh
    foreground, < bg_iou_thresh background, and below bg_iou_low neither:
    Fast R-CNN's [0.1, 0.5) background), batch_size_per_image sampled at
    positive_fraction, cross-entropy + smooth-L1 (beta 1/9) on the foreground
    with IoU >= reg_iou_thresh (R-CNN regresses from 0.6). Inference: per
    class boxes above score_thresh, NMS per class, the best detections_per_img.
    With mask_roi_pool/mask_head/mask_predictor, also per-detection masks
    (Mask R-CNN): binary cross-entropy on the positives' GT masks RoI-aligned
    to 28x28; at inference the mask of the detected class.
    """

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_head: nn.Module, box_predictor: nn.Module,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, mask_roi_pool=None, mask_head=None,
                 mask_predictor=None, bg_iou_low: float = 0.0, reg_iou_thresh: float = 0.0):
        super().__init__()
        self.bg_iou_low, self.reg_iou_thresh = bg_iou_low, reg_iou_thresh
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor
        self.matcher = ops.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = ops.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = ops.BoxCoder(bbox_reg_weights)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_sizes, targets=None):
        if self.training:
            proposals, labels, regression_targets, matched, regress = self.sample_proposals(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_sizes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            losses = fastrcnn_loss(class_logits, box_regression, labels, regression_targets, regress)
            if self.mask_head is not None:
                losses["loss_mask"] = self.mask_loss(features, proposals, labels, matched, targets, image_sizes)
            return [], losses
        detections = self.postprocess(class_logits, box_regression, proposals, image_sizes)
        if self.mask_head is not None:
            self.add_masks(features, detections, image_sizes)
        return detections, {}

    def _mask_logits(self, features, boxes: list[Tensor], image_sizes) -> Tensor:
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_sizes)))

    def mask_loss(self, features, proposals, labels, matched, targets, image_sizes) -> Tensor:
        positive = [torch.where(l > 0)[0] for l in labels]
        boxes = [p[i] for p, i in zip(proposals, positive)]
        gt_index = [m[i] for m, i in zip(matched, positive)]
        logits = self._mask_logits(features, boxes, image_sizes)
        size = logits.shape[-1]
        mask_labels = torch.cat([t["labels"][i] for t, i in zip(targets, gt_index)])
        mask_targets = torch.cat([_project_masks(t["masks"], b, i, size) for t, b, i in zip(targets, boxes, gt_index)])
        if mask_targets.numel() == 0:
            return logits.sum() * 0
        chosen = logits[torch.arange(len(mask_labels), device=mask_labels.device), mask_labels]
        return F.binary_cross_entropy_with_logits(chosen, mask_targets)

    def add_masks(self, features, detections: list[TensorTarget], image_sizes) -> None:
        boxes = [d["boxes"] for d in detections]
        probs = self._mask_logits(features, boxes, image_sizes).sigmoid()
        labels = torch.cat([d["labels"] for d in detections])
        probs = probs[torch.arange(len(labels), device=labels.device), labels][:, None]
        for det, mask in zip(detections, probs.split([len(b) for b in boxes])):
            det["masks"] = mask

    def sample_proposals(self, proposals: list[Tensor], targets: list[TensorTarget]):
        """Adds the GT boxes to the proposals, matches and samples them.
        Returns per image the sampled proposals, their labels (0 background),
        regression targets, matched GT indices and whether each is regressed."""
        proposals = [torch.cat((p, t["boxes"].to(p.dtype))) for p, t in zip(proposals, targets)]
        labels, matched_boxes, matched_index, best_iou = [], [], [], []
        for image_proposals, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            if gt_boxes.numel() == 0:
                idx = torch.zeros(len(image_proposals), dtype=torch.int64, device=image_proposals.device)
                image_labels = torch.zeros(len(image_proposals), dtype=torch.int64, device=image_proposals.device)
                gt_boxes = torch.zeros((1, 4), dtype=image_proposals.dtype, device=image_proposals.device)
                iou = torch.zeros(len(image_proposals), dtype=image_proposals.dtype, device=image_proposals.device)
            else:
                overlaps = ops.box_iou(gt_boxes, image_proposals)
                matches = self.matcher(overlaps)
                idx = matches.clamp(min=0)
                image_labels = gt_labels[idx].to(torch.int64)
                image_labels[matches == ops.Matcher.BELOW_LOW_THRESHOLD] = 0
                image_labels[matches == ops.Matcher.BETWEEN_THRESHOLDS] = -1
                iou = overlaps.max(0).values
                if self.bg_iou_low > 0:  # too far from every object to teach the background (Fast R-CNN)
                    image_labels[(image_labels == 0) & (iou < self.bg_iou_low)] = -1
            labels.append(image_labels)
            matched_boxes.append(gt_boxes[idx])
            matched_index.append(idx)
            best_iou.append(iou)
        pos, neg = self.sampler(labels)
        sampled = [torch.where(p | n)[0] for p, n in zip(pos, neg)]
        proposals = [p[s] for p, s in zip(proposals, sampled)]
        labels = [l[s] for l, s in zip(labels, sampled)]
        matched_boxes = [m[s] for m, s in zip(matched_boxes, sampled)]
        matched_index = [m[s] for m, s in zip(matched_index, sampled)]
        regress = [(l > 0) & (iou[s] >= self.reg_iou_thresh) for l, iou, s in zip(labels, best_iou, sampled)]
        regression_targets = [encode_matched(self.box_coder, m, p, t["boxes"])
                              for m, p, t in zip(matched_boxes, proposals, targets)]
        return proposals, labels, regression_targets, matched_index, regress

    def postprocess(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor], image_sizes):
        counts = [len(p) for p in proposals]
        boxes_all = self.box_coder.decode(box_regression.float(), proposals).split(counts, 0)  # float32 under AMP
        scores_all = F.softmax(class_logits.float(), -1).split(counts, 0)
        detections = []
        for boxes, scores, size in zip(boxes_all, scores_all, image_sizes):
            num_classes = scores.shape[-1]
            boxes = ops.clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)
            labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)[:, 1:].reshape(-1)
            scores = scores[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = ops.remove_small_boxes(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections


def _project_masks(gt_masks: Tensor, boxes: Tensor, gt_index: Tensor, size: int) -> Tensor:
    """The matched GT masks cropped to the boxes and resized to size x size (RoIAlign)."""
    rois = torch.cat([gt_index.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0)[:, 0]


def paste_masks(detections: list[TensorTarget], original_sizes) -> None:
    """28x28 mask probabilities -> [N, 1, H, W] at the original image size."""
    for det, size in zip(detections, original_sizes):
        if "masks" in det:
            det["masks"] = paste_masks_in_image(det["masks"], det["boxes"], size)


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                  regression_targets, regress: Optional[list[Tensor]] = None) -> dict[str, Tensor]:
    """Cross-entropy over the sampled RoIs; smooth-L1 on the foreground's
    boxes of their own class (only where `regress`, if given), summed and
    divided by the number of RoIs, as torchvision."""
    labels = torch.cat(labels, 0)
    targets = torch.cat(list(regression_targets), 0)
    classification = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0 if regress is None else torch.cat(regress, 0))[0]
    per_class = box_regression.reshape(len(labels), box_regression.size(-1) // 4, 4)
    box_loss = F.smooth_l1_loss(per_class[positive, labels[positive]], targets[positive], beta=1 / 9,
                                reduction="sum") / labels.numel()
    return {"loss_classifier": classification, "loss_box_reg": box_loss}
