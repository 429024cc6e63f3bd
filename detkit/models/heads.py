"""The RPN and the box RoI heads as every R-CNN family builds them from its options."""
from __future__ import annotations

from typing import Union

from torch import nn

from .. import ops
from ..modeling.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from ..modeling.rpn import RegionProposalNetwork, RPNHead
from .options import ProposalOptions, RCNNOptions


def rpn(anchors: ops.AnchorGenerator, channels: int, o: RCNNOptions) -> RegionProposalNetwork:
    head = RPNHead(channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(anchors, head, fg_iou_thresh=o.rpn_fg_iou_thresh, bg_iou_thresh=o.rpn_bg_iou_thresh,
                                 batch_size_per_image=o.rpn_batch_size_per_image,
                                 positive_fraction=o.rpn_positive_fraction, pre_nms_top_n=tuple(o.rpn_pre_nms_top_n),
                                 post_nms_top_n=tuple(o.rpn_post_nms_top_n), nms_thresh=o.rpn_nms_thresh,
                                 score_thresh=o.rpn_score_thresh)


def roi_heads(pool: nn.Module, channels: int, hidden: int, num_classes: int, o: Union[RCNNOptions, ProposalOptions],
               pool_size: int = 7, **parts: Union[nn.Module, float]) -> RoIHeads:
    return RoIHeads(pool, TwoMLPHead(channels * pool_size * pool_size, hidden), FastRCNNPredictor(hidden, num_classes),
                    fg_iou_thresh=o.fg_iou_thresh, bg_iou_thresh=o.bg_iou_thresh,
                    batch_size_per_image=o.batch_size_per_image, positive_fraction=o.positive_fraction,
                    bbox_reg_weights=tuple(o.bbox_reg_weights), score_thresh=o.score_thresh,
                    nms_thresh=o.nms_thresh, detections_per_img=o.detections_per_img, **parts)


def anchor_ratios(o: RCNNOptions) -> tuple[float, ...]:
    """The RPN's anchor aspect ratios (height / width): the options', else torchvision's (0.5, 1, 2)."""
    ratios = tuple(float(r) for r in o.anchor_ratios) if o.anchor_ratios is not None else (0.5, 1.0, 2.0)
    if not ratios or any(not r > 0 for r in ratios):
        raise ValueError(f"anchor_ratios must be positive numbers, got {list(ratios)}")
    return ratios
