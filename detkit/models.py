"""The model zoo: names -> builders, and loading torchvision checkpoints.

    model = detkit.models.build("ssd300_vgg16", num_classes=21)
    detkit.models.load_torchvision(model, "ssd300_vgg16_coco.pth")
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from . import ops
from .modeling.backbones import VGG16C5, GoogLeNet, ResNet, SSDVGG16
from .modeling.fpn import BackboneWithFPN
from .modeling.rcnn import FasterRCNN
from .modeling.roi_heads import (FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RoIHeads,
                                 SingleScaleRoIPool, TwoMLPHead)
from .modeling.rpn import RegionProposalNetwork, RPNHead
from .modeling.ssd import SSD
from .modeling.ssd_neck import SSDNeck

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
# torchvision's SSD300 input scaling: the Caffe VGG mean, in [0, 1] input units, and no std.
VGG_MEAN, VGG_STD = (0.48235, 0.45882, 0.40784), (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)


def register(name: str):
    def wrap(builder):
        _REGISTRY[name] = builder
        return builder
    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str, num_classes: int = 91, **overrides: Any) -> nn.Module:
    """Builds a registered model. Overrides go to the builder (width, size,
    backbone_weights, trainable_backbone_layers) or to the detector (score_thresh, ...)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, **overrides)


def _load_file(path: Union[str, os.PathLike], what: str) -> dict:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle with code, ...
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return state


def load_torchvision(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Loads a state_dict saved from the torchvision model of the same name,
    strictly; a mismatch names the file and the keys."""
    state = _load_file(path, "checkpoint")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(f"{os.fspath(path)} does not match {type(model).__name__}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, wrong shape {wrong_shape[:2]} (another model or class count?)")
    model.load_state_dict(state, strict=True)
    return model


def _ssd(backbone: nn.Module, num_classes: int, size: int, steps: Optional[list[int]], ratios=SSD300_RATIOS,
         scales=SSD300_SCALES, mean=VGG_MEAN, std=VGG_STD, **detector: Any) -> SSD:
    anchors = ops.DefaultBoxGenerator(ratios, scales=scales, steps=steps)
    return SSD(backbone, anchors, (size, size), num_classes, image_mean=mean, image_std=std, **detector)


def _backbone_weights(backbone: nn.Module, path: Optional[Union[str, os.PathLike]]) -> None:
    if path is not None:
        state = _load_file(path, "backbone checkpoint")
        try:
            backbone.load_imagenet(state)
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"{os.fspath(path)} does not fit {type(backbone).__name__}: "
                             f"{str(exc).splitlines()[0]}") from None


@register("ssd300_vgg16")
def ssd300_vgg16(num_classes: int = 91, width: float = 1.0, size: int = 300, backbone_weights=None,
                 trainable_backbone_layers: int = 5, **detector: Any) -> SSD:
    """SSD300 on VGG-16, torchvision's ssd300_vgg16 (same names, defaults and
    outputs); torchvision's published COCO box AP is 25.1."""
    backbone = SSDVGG16(highres=False, width=width, trainable_layers=trainable_backbone_layers)
    _backbone_weights(backbone, backbone_weights)
    return _ssd(backbone, num_classes, size, [8, 16, 32, 64, 100, 300] if size == 300 else None, **detector)


@register("ssd512_vgg16")
def ssd512_vgg16(num_classes: int = 91, width: float = 1.0, size: int = 512, backbone_weights=None,
                 trainable_backbone_layers: int = 5, **detector: Any) -> SSD:
    """SSD512 on VGG-16: one more level; default boxes placed by feature-map size."""
    backbone = SSDVGG16(highres=True, width=width, trainable_layers=trainable_backbone_layers)
    _backbone_weights(backbone, backbone_weights)
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]
    scales = [0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06]
    return _ssd(backbone, num_classes, size, None, ratios=ratios, scales=scales, **detector)


def _ssd_on(body: nn.Module, num_classes: int, size: int, backbone_weights, **detector: Any) -> SSD:
    _backbone_weights(body, backbone_weights)
    imagenet = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return _ssd(SSDNeck(body), num_classes, size, None, **imagenet, **detector)


for _depth in (18, 34, 50, 101):
    def _resnet_builder(num_classes: int = 91, width: float = 1.0, size: int = 300, backbone_weights=None,
                        trainable_backbone_layers: int = 5, frozen_bn: bool = False, _depth=_depth, **detector):
        body = ResNet(_depth, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers, width=width)
        return _ssd_on(body, num_classes, size, backbone_weights, **detector)

    _resnet_builder.__doc__ = f"SSD300 on ResNet-{_depth} features c3-c5 plus three extra maps."
    register(f"ssd300_resnet{_depth}")(_resnet_builder)


@register("ssd300_googlenet")
def ssd300_googlenet(num_classes: int = 91, width: float = 1.0, size: int = 300, backbone_weights=None,
                     trainable_backbone_layers: int = 4, **detector: Any) -> SSD:
    """SSD300 on GoogLeNet (Inception v1 with BatchNorm) features plus three extra maps."""
    return _ssd_on(GoogLeNet(width=width, trainable_layers=trainable_backbone_layers), num_classes, size,
                   backbone_weights, **detector)


# Small width-multiplied variants for training from scratch on a CPU.
register("ssd300_vgg16_small")(lambda num_classes=91, **kw: ssd300_vgg16(num_classes, **{"width": 0.25, **kw}))
register("ssd300_resnet18_small")(
    lambda num_classes=91, **kw: _REGISTRY["ssd300_resnet18"](num_classes, **{"width": 0.5, **kw}))


# --- Faster R-CNN ----------------------------------------------------------------------------------


def _faster_rcnn_fpn(body: nn.Module, in_features, num_classes: int, backbone_weights, masks: bool = False,
                     width: float = 1.0, min_size=800, max_size: int = 1333, rpn_pre_nms_top_n=(2000, 1000),
                     rpn_post_nms_top_n=(2000, 1000), channels_last: bool = False, **heads: Any) -> FasterRCNN:
    """Backbone + FPN + RPN + RoI heads; `width` scales the FPN and head channels
    too (1.0: torchvision's 256 / 1024 / 256)."""
    from torchvision.ops import MultiScaleRoIAlign

    _backbone_weights(body, backbone_weights)
    channels, hidden = max(16, int(256 * width)), max(64, int(1024 * width))
    backbone = BackboneWithFPN(body, in_features, channels)
    sizes = ((32,), (64,), (128,), (256,), (512,))[-(len(in_features) + 1):]  # one per FPN map, "pool" included
    anchors = ops.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    rpn = RegionProposalNetwork(anchors, RPNHead(channels, 3), pre_nms_top_n=tuple(rpn_pre_nms_top_n),
                                post_nms_top_n=tuple(rpn_post_nms_top_n))
    levels = ["0", "1", "2", "3"][: len(in_features)]
    pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2)
    if masks:
        heads.update(mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
                     mask_head=MaskRCNNHeads(channels, (channels,) * 4),
                     mask_predictor=MaskRCNNPredictor(channels, channels, num_classes))
    roi_heads = RoIHeads(pool, TwoMLPHead(channels * 7 * 7, hidden), FastRCNNPredictor(hidden, num_classes), **heads)
    return FasterRCNN(backbone, rpn, roi_heads, num_classes, min_size=min_size, max_size=max_size)


for _depth in (18, 50):
    def _frcnn_builder(num_classes: int = 91, width: float = 1.0, backbone_weights=None,
                       trainable_backbone_layers: int = 5, frozen_bn: bool = True, _depth=_depth, **kwargs):
        body = ResNet(_depth, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers, width=width)
        return _faster_rcnn_fpn(body, ["c2", "c3", "c4", "c5"], num_classes, backbone_weights, width=width, **kwargs)

    _frcnn_builder.__doc__ = (f"Faster R-CNN on ResNet-{_depth}-FPN; the ResNet-50 one loads torchvision's "
                              "fasterrcnn_resnet50_fpn checkpoint (FrozenBatchNorm, as published).")
    register(f"fasterrcnn_resnet{_depth}_fpn")(_frcnn_builder)

    def _mrcnn_builder(num_classes: int = 91, _depth=_depth, **kwargs):
        return _REGISTRY[f"fasterrcnn_resnet{_depth}_fpn"](num_classes, masks=True, **kwargs)

    _mrcnn_builder.__doc__ = f"Mask R-CNN on ResNet-{_depth}-FPN (torchvision's maskrcnn_resnet50_fpn layout)."
    register(f"maskrcnn_resnet{_depth}_fpn")(_mrcnn_builder)


# Small R-CNNs for training from scratch on a CPU: quarter width, small inputs, fewer proposals and samples.
_SMALL_RCNN = dict(width=0.25, frozen_bn=False, min_size=256, max_size=256, rpn_pre_nms_top_n=(300, 300),
                   rpn_post_nms_top_n=(150, 100), batch_size_per_image=128)
register("fasterrcnn_resnet18_fpn_small")(
    lambda num_classes=91, **kw: _REGISTRY["fasterrcnn_resnet18_fpn"](num_classes, **{**_SMALL_RCNN, **kw}))
register("maskrcnn_resnet18_fpn_small")(
    lambda num_classes=91, **kw: _REGISTRY["maskrcnn_resnet18_fpn"](num_classes, **{**_SMALL_RCNN, **kw}))


@register("fasterrcnn_googlenet_fpn")
def fasterrcnn_googlenet_fpn(num_classes: int = 91, width: float = 1.0, backbone_weights=None,
                             trainable_backbone_layers: int = 4, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an FPN on GoogLeNet's c3-c5 (strides 8-32, plus the pooled level)."""
    body = GoogLeNet(width=width, trainable_layers=trainable_backbone_layers)
    return _faster_rcnn_fpn(body, ["c3", "c4", "c5"], num_classes, backbone_weights, width=width, **kwargs)


@register("fasterrcnn_vgg16")
def fasterrcnn_vgg16(num_classes: int = 91, width: float = 1.0, backbone_weights=None,
                     trainable_backbone_layers: int = 4, roi_pool: str = "align", min_size=600, max_size: int = 1000,
                     rpn_pre_nms_top_n=(12000, 6000), rpn_post_nms_top_n=(2000, 300), **heads: Any) -> FasterRCNN:
    """The Faster R-CNN paper's single-scale model: VGG-16 conv5_3 (stride 16),
    9 anchors per position (128-512, ratios 0.5-2), 7x7 RoI features and two
    4096-d layers; roi_pool="pool" uses the Fast R-CNN RoIPool layer."""
    if roi_pool not in ("align", "pool"):
        raise ValueError(f"roi_pool must be 'align' or 'pool', got {roi_pool!r}")
    body = VGG16C5(width=width, trainable_layers=trainable_backbone_layers)
    _backbone_weights(body, backbone_weights)
    channels, hidden = body.out_channels["c5"], max(64, int(4096 * width))
    anchors = ops.AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),))
    rpn = RegionProposalNetwork(anchors, RPNHead(channels, 9), pre_nms_top_n=tuple(rpn_pre_nms_top_n),
                                post_nms_top_n=tuple(rpn_post_nms_top_n))
    pool = SingleScaleRoIPool("c5", 7, 1 / 16, align=roi_pool == "align")
    roi_heads = RoIHeads(pool, TwoMLPHead(channels * 7 * 7, hidden), FastRCNNPredictor(hidden, num_classes), **heads)
    return FasterRCNN(body, rpn, roi_heads, num_classes, min_size=min_size, max_size=max_size)
