"""The MobileNetV3-Large family: torchvision's ssdlite320_mobilenet_v3_large,
fasterrcnn_mobilenet_v3_large_fpn and fasterrcnn_mobilenet_v3_large_320_fpn
(same names, defaults and outputs; their checkpoints load), the CPU detectors
people deploy. `width` scales every channel count for small models."""
from __future__ import annotations

from typing import Optional, Sequence

from .. import ops
from ..modeling.backbones import MobileNetV3Large
from ..modeling.fpn import BackboneWithFPN
from ..modeling.poolers import MultiScaleRoIAlign
from ..modeling.rcnn import FasterRCNN
from ..modeling.ssd import SSD
from ..modeling.ssdlite import SSDLiteFeatureExtractor, SSDLiteHead, normal_init
from .heads import anchor_ratios, roi_heads, rpn
from .options import RCNNOptions, SSDOptions
from .registry import PathLike, register
from .ssd import default_boxes
from .weights import load_backbone_weights

# torchvision's SSDlite post-processing (more, lower-scoring candidates than SSD300's).
SSDLITE = SSDOptions(score_thresh=0.001, nms_thresh=0.55, detections_per_img=300, topk_candidates=300)
# torchvision's MobileNetV3 R-CNNs: proposals need objectness 0.05; the 320 model also has small
# inputs and 150 proposals at test time.
MOBILENET_RCNN = RCNNOptions(rpn_score_thresh=0.05)
MOBILENET_RCNN_320 = RCNNOptions(min_size=320, max_size=640, rpn_pre_nms_top_n=(2000, 150),
                                 rpn_post_nms_top_n=(2000, 150), rpn_score_thresh=0.05)
FPN_ANCHOR_SIZES = (32, 64, 128, 256, 512)  # every size on each of the 3 maps, as torchvision places them


@register("ssdlite320_mobilenet_v3_large")
def ssdlite320_mobilenet_v3_large(num_classes: int = 91, *, width: float = 1.0, size: int = 320,
                                  scales: Optional[Sequence[float]] = None,
                                  backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 6,
                                  detector: SSDOptions = SSDLITE) -> SSD:
    """SSDlite on MobileNetV3-Large at 320x320, torchvision's
    ssdlite320_mobilenet_v3_large; torchvision's published COCO box AP is 21.3.

    As torchvision: without backbone_weights the C4 stage is halved (the
    "reduced tail" its COCO checkpoint has) and every conv drawn from N(0, 0.03);
    inputs are scaled to [-1, 1] (mean = std = 0.5), ImageNet weights or not.
    `width` scales the body (multiples of 8) and the extra blocks. `scales`
    (one default-box size per map plus one, fractions of the input) replaces
    torchvision's linear 0.2-0.95 spread, e.g. for objects smaller than COCO's."""
    body = MobileNetV3Large(width, reduced_tail=backbone_weights is None, eps=0.001, momentum=0.03,
                            trainable_layers=trainable_backbone_layers)
    if backbone_weights is None:
        normal_init(body)
    load_backbone_weights(body, backbone_weights)
    backbone = SSDLiteFeatureExtractor(body, width=width)
    spread = {"scales": list(scales)} if scales is not None else {"min_ratio": 0.2, "max_ratio": 0.95}
    anchors, settings = default_boxes(detector, [[2, 3] for _ in range(6)], **spread)
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes)
    return SSD(backbone, anchors, (size, size), num_classes, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
               head=head, **settings)


def _mobilenet_fpn(num_classes: int, width: float, backbone_weights: Optional[PathLike],
                   trainable_backbone_layers: int, frozen_bn: bool, o: RCNNOptions) -> FasterRCNN:
    """Faster R-CNN on an FPN over the body's two stride-32 taps (the C4 block and
    the last conv: maps "0", "1" and the pooled "pool"), every anchor size on each map.
    `width` scales the body, the FPN (256) and the box head (1024)."""
    body = MobileNetV3Large(width, norm="frozen" if frozen_bn else "batch", trainable_layers=trainable_backbone_layers)
    load_backbone_weights(body, backbone_weights)
    channels, hidden = max(16, int(256 * width)), max(64, int(1024 * width))
    backbone = BackboneWithFPN(body, ["c4", "c5"], channels)
    sizes = tuple(o.anchor_sizes) if o.anchor_sizes is not None else FPN_ANCHOR_SIZES
    anchors = ops.AnchorGenerator((sizes,) * 3, (anchor_ratios(o),) * 3)
    # torchvision names maps "0".."3" and pools those present; both are stride 32, so all boxes pool from "0"
    pool = MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2)
    heads = roi_heads(pool, channels, hidden, num_classes, o)
    return FasterRCNN(backbone, rpn(anchors, channels, o), heads, num_classes, min_size=o.min_size,
                      max_size=o.max_size, image_mean=body.image_mean, image_std=body.image_std,
                      channels_last=o.channels_last)


@register("fasterrcnn_mobilenet_v3_large_fpn")
def fasterrcnn_mobilenet_v3_large_fpn(num_classes: int = 91, *, width: float = 1.0,
                                      backbone_weights: Optional[PathLike] = None,
                                      trainable_backbone_layers: int = 6, frozen_bn: bool = True,
                                      detector: RCNNOptions = MOBILENET_RCNN) -> FasterRCNN:
    """Faster R-CNN on MobileNetV3-Large-FPN, torchvision's
    fasterrcnn_mobilenet_v3_large_fpn (800 px inputs; COCO box AP 32.8);
    FrozenBatchNorm (eps 1e-5) as its checkpoint was trained."""
    return _mobilenet_fpn(num_classes, width, backbone_weights, trainable_backbone_layers, frozen_bn, detector)


@register("fasterrcnn_mobilenet_v3_large_320_fpn")
def fasterrcnn_mobilenet_v3_large_320_fpn(num_classes: int = 91, *, width: float = 1.0,
                                          backbone_weights: Optional[PathLike] = None,
                                          trainable_backbone_layers: int = 6, frozen_bn: bool = True,
                                          detector: RCNNOptions = MOBILENET_RCNN_320) -> FasterRCNN:
    """fasterrcnn_mobilenet_v3_large_fpn at 320 px with 150 test proposals,
    torchvision's fasterrcnn_mobilenet_v3_large_320_fpn (COCO box AP 22.8)."""
    return _mobilenet_fpn(num_classes, width, backbone_weights, trainable_backbone_layers, frozen_bn, detector)
