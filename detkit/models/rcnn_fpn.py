"""Faster and Mask R-CNN on an FPN: torchvision's R50-FPN twins (their
checkpoints load), ResNet-18 and GoogLeNet bodies, and small CPU variants."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from .. import ops
from ..modeling.backbones import GoogLeNet, ResNet
from ..modeling.fpn import BackboneWithFPN
from ..modeling.poolers import MultiScaleRoIAlign
from ..modeling.rcnn import FasterRCNN
from ..modeling.roi_heads import MaskRCNNHeads, MaskRCNNPredictor
from .heads import anchor_ratios, roi_heads, rpn
from .options import SMALL_RCNN, RCNNOptions
from .registry import PathLike, register
from .weights import load_backbone_weights


def _rcnn_fpn(body: nn.Module, in_features: Sequence[str], num_classes: int, backbone_weights: Optional[PathLike],
              width: float, masks: bool, o: RCNNOptions) -> FasterRCNN:
    """Backbone + FPN + RPN + RoI heads (+ mask head); `width` scales the FPN
    and head channels too (1.0: torchvision's 256 / 1024 / 256)."""
    load_backbone_weights(body, backbone_weights)
    channels, hidden = max(16, int(256 * width)), max(64, int(1024 * width))
    backbone = BackboneWithFPN(body, list(in_features), channels)
    maps = len(in_features) + 1  # "pool" included
    sizes = tuple(o.anchor_sizes) if o.anchor_sizes is not None else (32, 64, 128, 256, 512)[-maps:]
    if len(sizes) != maps:
        raise ValueError(f"anchor_sizes needs one size per FPN map ({maps}), got {list(sizes)}")
    anchors = ops.AnchorGenerator(tuple((size,) for size in sizes), (anchor_ratios(o),) * maps)
    levels = ["0", "1", "2", "3"][: len(in_features)]
    mask_parts = {}
    if masks:
        mask_parts = dict(mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
                          mask_head=MaskRCNNHeads(channels, (channels,) * 4),
                          mask_predictor=MaskRCNNPredictor(channels, channels, num_classes))
    pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2)
    heads = roi_heads(pool, channels, hidden, num_classes, o, **mask_parts)
    return FasterRCNN(backbone, rpn(anchors, channels, o), heads, num_classes, min_size=o.min_size,
                      max_size=o.max_size, image_mean=body.image_mean, image_std=body.image_std,
                      channels_last=o.channels_last)


def _resnet_fpn(depth: int, masks: bool, num_classes: int, width: float, backbone_weights: Optional[PathLike],
                trainable_backbone_layers: int, frozen_bn: bool, detector: RCNNOptions) -> FasterRCNN:
    body = ResNet(depth, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers, width=width)
    return _rcnn_fpn(body, ("c2", "c3", "c4", "c5"), num_classes, backbone_weights, width, masks, detector)


@register("fasterrcnn_resnet50_fpn")
def fasterrcnn_resnet50_fpn(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
                            trainable_backbone_layers: int = 5, frozen_bn: bool = True,
                            detector: RCNNOptions = RCNNOptions()) -> FasterRCNN:
    """Faster R-CNN on ResNet-50-FPN; loads torchvision's fasterrcnn_resnet50_fpn
    checkpoint (FrozenBatchNorm, as published)."""
    return _resnet_fpn(50, False, num_classes, width, backbone_weights, trainable_backbone_layers, frozen_bn,
                       detector)


@register("maskrcnn_resnet50_fpn")
def maskrcnn_resnet50_fpn(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
                          trainable_backbone_layers: int = 5, frozen_bn: bool = True,
                          detector: RCNNOptions = RCNNOptions()) -> FasterRCNN:
    """Mask R-CNN on ResNet-50-FPN; loads torchvision's maskrcnn_resnet50_fpn checkpoint."""
    return _resnet_fpn(50, True, num_classes, width, backbone_weights, trainable_backbone_layers, frozen_bn, detector)


@register("fasterrcnn_resnet18_fpn")
def fasterrcnn_resnet18_fpn(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
                            trainable_backbone_layers: int = 5, frozen_bn: bool = True,
                            detector: RCNNOptions = RCNNOptions()) -> FasterRCNN:
    """Faster R-CNN on ResNet-18-FPN (torchvision's layout on a smaller body)."""
    return _resnet_fpn(18, False, num_classes, width, backbone_weights, trainable_backbone_layers, frozen_bn,
                       detector)


@register("maskrcnn_resnet18_fpn")
def maskrcnn_resnet18_fpn(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
                          trainable_backbone_layers: int = 5, frozen_bn: bool = True,
                          detector: RCNNOptions = RCNNOptions()) -> FasterRCNN:
    """Mask R-CNN on ResNet-18-FPN."""
    return _resnet_fpn(18, True, num_classes, width, backbone_weights, trainable_backbone_layers, frozen_bn, detector)


@register("fasterrcnn_resnet18_fpn_small")
def fasterrcnn_resnet18_fpn_small(num_classes: int = 91, *, width: float = 0.25,
                                  detector: RCNNOptions = SMALL_RCNN) -> FasterRCNN:
    """Faster R-CNN on ResNet-18-FPN at quarter width with trainable BatchNorm,
    256 px inputs and fewer proposals: for training from scratch on a CPU."""
    return _resnet_fpn(18, False, num_classes, width, None, 5, False, detector)


@register("maskrcnn_resnet18_fpn_small")
def maskrcnn_resnet18_fpn_small(num_classes: int = 91, *, width: float = 0.25,
                                detector: RCNNOptions = SMALL_RCNN) -> FasterRCNN:
    """Mask R-CNN counterpart of fasterrcnn_resnet18_fpn_small."""
    return _resnet_fpn(18, True, num_classes, width, None, 5, False, detector)


@register("fasterrcnn_googlenet_fpn")
def fasterrcnn_googlenet_fpn(num_classes: int = 91, *, width: float = 1.0,
                             backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 4,
                             detector: RCNNOptions = RCNNOptions()) -> FasterRCNN:
    """Faster R-CNN with an FPN on GoogLeNet's c3-c5 (strides 8-32, plus the pooled level)."""
    body = GoogLeNet(width=width, trainable_layers=trainable_backbone_layers)
    return _rcnn_fpn(body, ("c3", "c4", "c5"), num_classes, backbone_weights, width, False, detector)
