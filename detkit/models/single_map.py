"""Zoo builders on one stride-16 map: the Faster R-CNN paper's VGG-16 model,
Faster R-CNN on ResNet-18's layer3 (C4), and R-CNN / Fast R-CNN on external
proposals over four bodies: the lineage's three steps on one body. Build them
through detkit.models.build.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .. import ops
from ..modeling.backbones import VGG16C5, AlexNet, NiN, ResNetC4
from ..modeling.proposal_rcnn import ImageAsFeatures, ProposalRCNN, SelectiveSearchProposer, WarpedRegionFeatures
from ..modeling.rcnn import FasterRCNN
from ..modeling.roi_heads import SingleScaleRoIPool
from .heads import anchor_ratios, roi_heads, rpn
from .options import RCNN_PAPER, VGG16_PAPER, ProposalOptions, RCNNOptions
from .registry import PathLike, register
from .weights import load_backbone_weights


def _single_map_pool(feature: str, roi_pool: str) -> SingleScaleRoIPool:
    """7x7 features of each box on the stride-16 map `feature`: "align" (RoIAlign) or "pool" (RoIPool)."""
    if roi_pool not in ("align", "pool"):
        raise ValueError(f"roi_pool must be 'align' or 'pool', got {roi_pool!r}")
    return SingleScaleRoIPool(feature, 7, 1 / 16, align=roi_pool == "align")


def _single_map_faster(body: nn.Module, feature: str, num_classes: int, backbone_weights: Optional[PathLike],
                       hidden: int, default_anchors: tuple[int, ...], roi_pool: str,
                       detector: RCNNOptions) -> FasterRCNN:
    """Faster R-CNN on one stride-16 map: the RPN's anchors (ratios 0.5-2) and
    7x7 RoIAlign (or RoIPool) features for two `hidden`-d layers."""
    pool = _single_map_pool(feature, roi_pool)
    load_backbone_weights(body, backbone_weights)
    channels = body.out_channels[feature]
    anchors = ops.AnchorGenerator((tuple(detector.anchor_sizes or default_anchors),), (anchor_ratios(detector),))
    heads = roi_heads(pool, channels, hidden, num_classes, detector)
    return FasterRCNN(body, rpn(anchors, channels, detector), heads, num_classes, min_size=detector.min_size,
                      max_size=detector.max_size, image_mean=body.image_mean, image_std=body.image_std,
                      channels_last=detector.channels_last)


@register("fasterrcnn_vgg16")
def fasterrcnn_vgg16(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
                     trainable_backbone_layers: int = 4, roi_pool: str = "align",
                     detector: RCNNOptions = VGG16_PAPER) -> FasterRCNN:
    """The Faster R-CNN paper's single-scale model: VGG-16 conv5_3 (stride 16),
    9 anchors per position (128-512, ratios 0.5-2), 7x7 RoI features and two
    4096-d layers; roi_pool="pool" uses the Fast R-CNN RoIPool layer."""
    body = VGG16C5(width=width, trainable_layers=trainable_backbone_layers)
    return _single_map_faster(body, "c5", num_classes, backbone_weights, max(64, int(4096 * width)),
                              (128, 256, 512), roi_pool, detector)


@register("fasterrcnn_resnet18_c4")
def fasterrcnn_resnet18_c4(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
                           trainable_backbone_layers: int = 4, roi_pool: str = "align",
                           detector: RCNNOptions = RCNNOptions(min_size=600, max_size=1000)) -> FasterRCNN:
    """Faster R-CNN on ResNet-18's layer3 (stride 16, trainable BatchNorm):
    15 anchors per position (32-512, ratios 0.5-2) and two 1024-d layers;
    the same body as fastrcnn_resnet18_c4 and rcnn_resnet18_c4."""
    body = ResNetC4(18, trainable_layers=trainable_backbone_layers, width=width)
    return _single_map_faster(body, "c4", num_classes, backbone_weights, max(64, int(1024 * width)),
                              (32, 64, 128, 256, 512), roi_pool, detector)


# --- R-CNN and Fast R-CNN on external proposals -------------------------------------------------

# Single-map bodies (stride 16) for R-CNN and Fast R-CNN: name -> (constructor(width,
# trainable_layers), map name, fc-layer width at width 1.0, default trainable layers).
_PROPOSAL_BODIES = {
    "resnet18_c4": (lambda w, t: ResNetC4(18, trainable_layers=t, width=w), "c4", 1024, 4),
    "alexnet": (lambda w, t: AlexNet(width=w).detection_body(t), "c5", 4096, 5),
    "nin": (lambda w, t: NiN(width=w).detection_body(t), "c5", 1024, 3),
    "vgg16": (lambda w, t: VGG16C5(width=w, trainable_layers=t), "c5", 4096, 4),
}


def _proposal_model(backbone: nn.Module, pool: nn.Module, channels: int, hidden: int, pool_size: int,
                    num_classes: int, image_norm: nn.Module, o: ProposalOptions) -> ProposalRCNN:
    heads = roi_heads(pool, channels, hidden, num_classes, o, pool_size=pool_size, bg_iou_low=o.bg_iou_low,
                      reg_iou_thresh=o.reg_iou_thresh)
    return ProposalRCNN(backbone, heads, SelectiveSearchProposer(o.proposal_mode, o.max_proposals), num_classes,
                        min_size=o.min_size, max_size=o.max_size, image_mean=image_norm.image_mean,
                        image_std=image_norm.image_std, channels_last=o.channels_last)


def _proposal_body(name: str, width: float, backbone_weights: Optional[PathLike],
                   trainable_backbone_layers: Optional[int]) -> tuple[nn.Module, str, int]:
    """(body with its starting weights, its map's name, the fc layers' width) of _PROPOSAL_BODIES[name]."""
    make, feature, fc, trainable = _PROPOSAL_BODIES[name]
    body = make(width, trainable if trainable_backbone_layers is None else trainable_backbone_layers)
    load_backbone_weights(body, backbone_weights)
    return body, feature, max(64, int(fc * width))


def _fast_rcnn(name: str, num_classes: int, width: float, backbone_weights: Optional[PathLike],
               trainable_backbone_layers: Optional[int], roi_pool: str, detector: ProposalOptions) -> ProposalRCNN:
    pool = _single_map_pool(_PROPOSAL_BODIES[name][1], roi_pool)
    body, feature, hidden = _proposal_body(name, width, backbone_weights, trainable_backbone_layers)
    return _proposal_model(body, pool, body.out_channels[feature], hidden, 7, num_classes, body, detector)


def _rcnn(name: str, num_classes: int, width: float, backbone_weights: Optional[PathLike],
          trainable_backbone_layers: Optional[int], crop_size: int, context: Optional[float],
          detector: ProposalOptions) -> ProposalRCNN:
    if crop_size < 32:
        raise ValueError(f"crop_size must be >= 32 (two cells of the stride-16 map), got {crop_size}")
    body, feature, hidden = _proposal_body(name, width, backbone_weights, trainable_backbone_layers)
    context = 16 * crop_size / 227 if context is None else context  # the paper's 16 px at 227
    pool_size = crop_size // 16
    pool = WarpedRegionFeatures(body, feature, crop_size, context, pool_size)
    return _proposal_model(ImageAsFeatures(), pool, body.out_channels[feature], hidden, pool_size, num_classes, body,
                           detector)


def _register_proposal_models(name: str, crop_size: int, detail: str) -> None:
    """Registers rcnn_<name> and fastrcnn_<name> on one of _PROPOSAL_BODIES."""

    def fast(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
             trainable_backbone_layers: Optional[int] = None, roi_pool: str = "pool",
             detector: ProposalOptions = ProposalOptions()) -> ProposalRCNN:
        return _fast_rcnn(name, num_classes, width, backbone_weights, trainable_backbone_layers, roi_pool, detector)

    def slow(num_classes: int = 91, *, width: float = 1.0, backbone_weights: Optional[PathLike] = None,
             trainable_backbone_layers: Optional[int] = None, crop_size: int = crop_size,
             context: Optional[float] = None, detector: ProposalOptions = RCNN_PAPER) -> ProposalRCNN:
        return _rcnn(name, num_classes, width, backbone_weights, trainable_backbone_layers, crop_size, context,
                     detector)

    fast.__name__ = fast.__qualname__ = f"fastrcnn_{name}"
    fast.__doc__ = (f"Fast R-CNN on {detail}: the whole image through the CNN once, RoIPool (roi_pool='align': "
                    "RoIAlign) 7x7 per proposal, two fc layers, softmax and class-specific boxes; proposals from "
                    "the data or selective search. trainable_backbone_layers: None keeps the body's default.")
    slow.__name__ = slow.__qualname__ = f"rcnn_{name}"
    slow.__doc__ = (f"R-CNN on {detail}: every proposal's region (with context, the paper's 16 px at 227) "
                    "warped to crop_size and run through the CNN, max-pooled to crop_size / 16, two fc layers, "
                    "softmax and class-specific boxes. trainable_backbone_layers: None keeps the body's default.")
    register(f"fastrcnn_{name}")(fast)
    register(f"rcnn_{name}")(slow)


_register_proposal_models("resnet18_c4", 112, "ResNet-18's layer3 (stride 16, trainable BatchNorm)")
_register_proposal_models("alexnet", 224, "the book's AlexNet conv5 (stride 16)")
_register_proposal_models("nin", 224, "the book's NiN body (stride 16)")
_register_proposal_models("vgg16", 224, "VGG-16 conv5_3 (stride 16), the Fast R-CNN paper's model")
