"""The SSD family: SSD300/512 on VGG-16 (torchvision's ssd300_vgg16 and its
checkpoint), and SSD300 on ResNet and GoogLeNet bodies through an extra-layer neck."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from torch import nn

from .. import ops
from ..modeling.backbones import GoogLeNet, ResNet, SSDVGG16
from ..modeling.ssd import SSD
from ..modeling.ssd_neck import SSDNeck
from .options import SSDOptions
from .registry import PathLike, register
from .weights import load_backbone_weights

SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
# Default-box scales (fractions of the input, one per level plus one for the last level's
# extra box); tuples, so a builder's default cannot be changed in place.
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD512_SCALES = (0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06)


def _ssd(backbone: nn.Module, body: nn.Module, num_classes: int, size: int, detector: SSDOptions,
         steps: Optional[list[int]] = None, ratios: Sequence = SSD300_RATIOS,
         scales: Sequence[float] = SSD300_SCALES) -> SSD:
    """An SSD whose inputs are normalised as the body's ImageNet weights expect."""
    anchors, settings = default_boxes(detector, ratios, scales=scales, steps=steps)
    return SSD(backbone, anchors, (size, size), num_classes, image_mean=body.image_mean, image_std=body.image_std,
               **settings)


def default_boxes(detector: SSDOptions, ratios: Sequence, **generator_options: Any):
    """(the DefaultBoxGenerator of the model's `ratios`, or of detector.aspect_ratios
    when set; the rest of the detector settings, as SSD takes them)."""
    settings = dataclasses.asdict(detector)
    chosen = settings.pop("aspect_ratios")
    if chosen is not None:
        if len(chosen) != len(ratios) or not all(len(r) and all(x >= 1 for x in r) for r in chosen):
            raise ValueError(f"aspect_ratios must list one non-empty set of ratios >= 1 per map ({len(ratios)} "
                             f"maps, e.g. {[list(r) for r in ratios]}), got {chosen}")
        ratios = [list(r) for r in chosen]
    return ops.DefaultBoxGenerator(ratios, **generator_options), settings


def _ssd_on_neck(body: nn.Module, num_classes: int, size: int, scales: Sequence[float],
                 backbone_weights: Optional[PathLike], detector: SSDOptions) -> SSD:
    """SSD300's levels on a classification body's c3-c5 plus three extra maps."""
    load_backbone_weights(body, backbone_weights)
    return _ssd(SSDNeck(body), body, num_classes, size, detector, scales=scales)


@register("ssd300_vgg16")
def ssd300_vgg16(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                 scales: Sequence[float] = SSD300_SCALES,
                 backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                 detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on VGG-16, torchvision's ssd300_vgg16 (same names, defaults and
    outputs); torchvision's published COCO box AP is 25.1."""
    backbone = SSDVGG16(highres=False, width=width, trainable_layers=trainable_backbone_layers)
    load_backbone_weights(backbone, backbone_weights)
    steps = [8, 16, 32, 64, 100, 300] if size == 300 else None
    return _ssd(backbone, backbone, num_classes, size, detector, steps=steps, scales=scales)


@register("ssd300_vgg16_small")
def ssd300_vgg16_small(num_classes: int = 91, *, width: float = 0.25, size: int = 300,
                       scales: Sequence[float] = SSD300_SCALES,
                       detector: SSDOptions = SSDOptions()) -> SSD:
    """ssd300_vgg16 at quarter width, for training from scratch on a CPU."""
    return ssd300_vgg16(num_classes, width=width, size=size, scales=scales, detector=detector)


@register("ssd512_vgg16")
def ssd512_vgg16(num_classes: int = 91, *, width: float = 1.0, size: int = 512,
                 scales: Sequence[float] = SSD512_SCALES,
                 backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                 detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD512 on VGG-16: one more level; default boxes placed by feature-map size."""
    backbone = SSDVGG16(highres=True, width=width, trainable_layers=trainable_backbone_layers)
    load_backbone_weights(backbone, backbone_weights)
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]
    return _ssd(backbone, backbone, num_classes, size, detector, ratios=ratios, scales=scales)


def _ssd_resnet(depth: int, num_classes: int, width: float, size: int, scales: Sequence[float],
                backbone_weights: Optional[PathLike], trainable_backbone_layers: int, frozen_bn: bool,
                detector: SSDOptions) -> SSD:
    body = ResNet(depth, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers, width=width)
    return _ssd_on_neck(body, num_classes, size, scales, backbone_weights, detector)


@register("ssd300_resnet18")
def ssd300_resnet18(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                    scales: Sequence[float] = SSD300_SCALES,
                    backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                    frozen_bn: bool = False, detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on ResNet-18 features c3-c5 plus three extra maps."""
    return _ssd_resnet(18, num_classes, width, size, scales,
                       backbone_weights, trainable_backbone_layers, frozen_bn, detector)


@register("ssd300_resnet18_small")
def ssd300_resnet18_small(num_classes: int = 91, *, width: float = 0.5, size: int = 300,
                          scales: Sequence[float] = SSD300_SCALES,
                          detector: SSDOptions = SSDOptions()) -> SSD:
    """ssd300_resnet18 at half width, for training from scratch on a CPU."""
    return _ssd_resnet(18, num_classes, width, size, scales, None, 5, False, detector)


@register("ssd300_resnet34")
def ssd300_resnet34(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                    scales: Sequence[float] = SSD300_SCALES,
                    backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                    frozen_bn: bool = False, detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on ResNet-34 features c3-c5 plus three extra maps."""
    return _ssd_resnet(34, num_classes, width, size, scales,
                       backbone_weights, trainable_backbone_layers, frozen_bn, detector)


@register("ssd300_resnet50")
def ssd300_resnet50(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                    scales: Sequence[float] = SSD300_SCALES,
                    backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                    frozen_bn: bool = False, detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on ResNet-50 features c3-c5 plus three extra maps."""
    return _ssd_resnet(50, num_classes, width, size, scales,
                       backbone_weights, trainable_backbone_layers, frozen_bn, detector)


@register("ssd300_resnet101")
def ssd300_resnet101(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                     scales: Sequence[float] = SSD300_SCALES,
                     backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                     frozen_bn: bool = False, detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on ResNet-101 features c3-c5 plus three extra maps."""
    return _ssd_resnet(101, num_classes, width, size, scales, backbone_weights, trainable_backbone_layers, frozen_bn,
                       detector)


@register("ssd300_googlenet")
def ssd300_googlenet(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                     scales: Sequence[float] = SSD300_SCALES,
                     backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 4,
                     detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on GoogLeNet (Inception v1 with BatchNorm) features plus three extra maps."""
    body = GoogLeNet(width=width, trainable_layers=trainable_backbone_layers)
    return _ssd_on_neck(body, num_classes, size, scales, backbone_weights, detector)
