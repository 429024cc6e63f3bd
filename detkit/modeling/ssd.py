"""SSD (Liu et al., "SSD: Single Shot MultiBox Detector", 2016) built from
detkit's parts: default boxes, fused target assignment, box decoding and NMS
are detkit.ops kernels.

The contract is torchvision's: model(images, targets) returns a loss dict in
train mode and one {"boxes", "scores", "labels"} per image (original image
coordinates) in eval mode. Module and parameter names match torchvision's SSD,
so its state_dicts load strictly and give the same detections.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchor_maps import flatten_anchor_maps
from .initializers import xavier_init

from .. import ops
from .transform import ChannelsLast, DetectionTransform, check_images, check_targets

from .targets import TensorTarget


class ScoringHead(nn.Module):
    """One 3x3 conv per feature map; outputs concatenated as [N, sum(HWA), columns]
    in (y, x, anchor) order, matching the default boxes."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], columns: int):
        super().__init__()
        self.module_list = nn.ModuleList(nn.Conv2d(c, columns * a, kernel_size=3, padding=1)
                                         for c, a in zip(in_channels, num_anchors))
        self.num_columns = columns
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The constructor's initialisation (fine-tuning to another class count re-runs it)."""
        xavier_init(self.module_list)

    def forward(self, features: list[Tensor]) -> Tensor:
        return flatten_anchor_maps([conv(x) for conv, x in zip(self.module_list, features)], self.num_columns)


class SSDHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int):
        super().__init__()
        self.classification_head = ScoringHead(in_channels, num_anchors, num_classes)
        self.regression_head = ScoringHead(in_channels, num_anchors, 4)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        return {"bbox_regression": self.regression_head(features), "cls_logits": self.classification_head(features)}


class SSD(ChannelsLast, nn.Module):
    """The SSD detector.

    Args:
        backbone: returns an OrderedDict of feature maps; `out_channels` lists them.
        anchor_generator: ops.DefaultBoxGenerator with one level per feature map.
        size: (width, height) every image is resized to.
        num_classes: including the background (label 0).
        image_mean, image_std: normalisation of the [0, 1] input.
        score_thresh, nms_thresh, detections_per_img, topk_candidates: post-processing.
        iou_thresh: the matching IoU; positive_fraction sets the 3:1 negative mining.
        channels_last: run the convolutions in channels-last memory format on
            the CPU (faster with oneDNN; results differ from NCHW by rounding).
    """

    def __init__(self, backbone: nn.Module, anchor_generator: ops.DefaultBoxGenerator, size: tuple[int, int],
                 num_classes: int, image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225), head: Optional[nn.Module] = None,
                 score_thresh: float = 0.01, nms_thresh: float = 0.45, detections_per_img: int = 200,
                 iou_thresh: float = 0.5, topk_candidates: int = 400, positive_fraction: float = 0.25,
                 channels_last: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if len(backbone.out_channels) != len(anchor_generator.aspect_ratios):
            raise ValueError(f"the backbone has {len(backbone.out_channels)} feature maps but the anchor generator "
                             f"{len(anchor_generator.aspect_ratios)} levels")
        self.backbone = backbone
        self.anchor_generator = anchor_generator
        self.head = head if head is not None else SSDHead(
            backbone.out_channels, anchor_generator.num_anchors_per_location(), num_classes)
        self.transform = DetectionTransform(min(size), max(size), image_mean, image_std, size_divisible=1,
                                            fixed_size=size)
        self.box_coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.num_classes = num_classes
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates
        self.iou_thresh = iou_thresh
        self.neg_to_pos_ratio = (1.0 - positive_fraction) / positive_fraction
        self.channels_last = channels_last

    def forward(self, images: list[Tensor], targets: Optional[list[TensorTarget]] = None):
        check_images(images)
        if self.training:
            check_targets(targets, len(images), self.num_classes)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(list(images), targets if self.training else None)
        try:
            features = list(self.backbone(self._layout(image_list.tensors)).values())
        except RuntimeError as exc:
            if "size" not in str(exc):
                raise
            raise ValueError(f"inputs resized to {tuple(image_list.tensors.shape[-2:])} are too small for "
                             f"{type(self.backbone).__name__} ({str(exc).splitlines()[0]}); build the model with a "
                             "larger size") from None
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        if self.training:
            return self.compute_loss(targets, head_outputs, anchors)
        detections = self.postprocess_detections(head_outputs, anchors, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def _conv_modules(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def compute_loss(self, targets: list[TensorTarget], head_outputs: dict[str, Tensor], anchors: list[Tensor]):
        """Smooth-L1 over matched anchors plus cross-entropy over the matched
        and the 3:1 hardest negative anchors, both divided by the matches."""
        bbox_regression, cls_logits = head_outputs["bbox_regression"], head_outputs["cls_logits"]
        box_losses, cls_targets, num_foreground = [], [], 0
        for target, regression, image_anchors in zip(targets, bbox_regression, anchors):
            box_targets, labels = ops.ssd_assign(image_anchors.detach(), target["boxes"].detach(), target["labels"],
                                                 self.iou_thresh, self.box_coder.weights)
            foreground = labels > 0
            num_foreground += int(foreground.sum())
            box_losses.append(F.smooth_l1_loss(regression[foreground], box_targets[foreground].to(regression),
                                               reduction="sum"))
            cls_targets.append(labels.to(cls_logits.device))
        cls_targets = torch.stack(cls_targets)
        cls_loss = F.cross_entropy(cls_logits.reshape(-1, cls_logits.size(-1)), cls_targets.view(-1),
                                   reduction="none").view(cls_targets.shape)
        foreground = cls_targets > 0
        num_negative = self.neg_to_pos_ratio * foreground.sum(1, keepdim=True)
        negative_loss = cls_loss.detach().clone()
        negative_loss[foreground] = -float("inf")
        order = negative_loss.sort(1, descending=True)[1]
        hard_negatives = order.sort(1)[1] < num_negative
        n = max(1, num_foreground)
        return {"bbox_regression": torch.stack(box_losses).sum() / n,
                "classification": (cls_loss[foreground].sum() + cls_loss[hard_negatives].sum()) / n}

    def postprocess_detections(self, head_outputs: dict[str, Tensor], anchors: list[Tensor],
                               image_sizes: list[tuple[int, int]]) -> list[TensorTarget]:
        """Per class: scores above score_thresh, the top topk_candidates; then
        per-class NMS and the best detections_per_img. Vectorised over classes
        (torchvision loops over them in Python)."""
        scores_all = F.softmax(head_outputs["cls_logits"].float(), dim=-1)  # float32 under AMP
        results = []
        for regression, scores, image_anchors, size in zip(head_outputs["bbox_regression"], scores_all, anchors,
                                                           image_sizes):
            boxes = ops.clip_boxes_to_image(self.box_coder.decode_single(regression.float(), image_anchors), size)
            anchor_idx, labels, values = self._candidates(scores[:, 1:])
            cand_boxes = boxes[anchor_idx]
            keep = ops.batched_nms(cand_boxes, values, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": cand_boxes[keep], "scores": values[keep], "labels": labels[keep]})
        return results

    def _candidates(self, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(anchor index, label, score) of each class's top-k scores above the
        threshold, class by class in decreasing score (torchvision's order):
        one topk over the class-major score matrix instead of a loop over classes."""
        by_class = scores.t().masked_fill(scores.t() <= self.score_thresh, float("-inf"))
        values, anchor_idx = by_class.topk(min(self.topk_candidates, by_class.shape[1]), dim=1)
        keep = values > self.score_thresh
        labels = torch.arange(1, scores.shape[1] + 1, device=scores.device)[:, None].expand_as(values)
        return anchor_idx[keep], labels[keep], values[keep]
