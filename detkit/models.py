"""The model zoo, the public face of `detkit.modeling`: one builder function
per name, each with its real keyword arguments.

    model = detkit.models.build("ssd300_vgg16", num_classes=21, score_thresh=0.2)
    model = detkit.models.build("fasterrcnn_resnet50_fpn", weights="COCO_V1")     # torchvision's COCO weights
    model = detkit.models.build("fasterrcnn_resnet50_fpn", num_classes=4, weights="DEFAULT")  # to fine-tune
    model = detkit.models.build("ssd300_resnet50", backbone_weights="IMAGENET1K_V1")
    detkit.models.load_weights(model, "ssd300_vgg16_coco.pth")   # a torchvision file or a detkit checkpoint
    fast = detkit.models.optimize(model, runtime="int8", calibration=images)  # see detkit.runtimes

`detkit.modeling` holds the parts (backbones, FPN, RPN, RoI heads, SSD); this
module assembles them under torchvision's names. Every builder takes the
architecture's own options (width, size, trainable_backbone_layers, ...) as
keyword arguments and the detector's settings as one frozen options object
(`SSDOptions` or `RCNNOptions`) whose defaults are that model's. `build()`
accepts both as flat keyword arguments, as a config's `model.options` holds
them, and refuses any option the model does not take, listing those it does.

Starting weights (`weights=` for the whole model, `backbone_weights=` for the
ImageNet body) are a file path, a detkit checkpoint or a torchvision weights
name; see detkit.weights. Weights of another class count fine-tune: all but
the class-dependent layers load, and those are re-initialised.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from torch import nn

from . import ops
from .modeling.backbones import GoogLeNet, ResNet, SSDVGG16
from .modeling.fpn import BackboneWithFPN
from .modeling.poolers import MultiScaleRoIAlign
from .modeling.rcnn import FasterRCNN
from .modeling.roi_heads import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, RoIHeads, TwoMLPHead
from .modeling.rpn import RegionProposalNetwork, RPNHead
from .modeling.ssd import SSD
from .modeling.ssd_neck import SSDNeck
from .modeling.tinyssd import TinySSD
from .runtimes import RUNTIMES, optimize
from .weights import (PRETRAINED_MODELS, WeightsError, fetch_state_dict, is_weights_name, load_state, load_weights,
                      read_weights, resolve_weights)

__all__ = ["build", "list_models", "model_options", "pretrained_models", "load_weights", "SSDOptions", "RCNNOptions",
           "ProposalOptions", "TinySSDOptions", "ModelOptionError", "optimize", "RUNTIMES"]

PathLike = Union[str, os.PathLike]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
# Default-box scales (fractions of the input, one per level plus one for the last level's
# extra box); tuples, so a builder's default cannot be changed in place.
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD512_SCALES = (0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06)


class ModelOptionError(ValueError):
    """An option the named model does not take; the message lists the ones it does."""


@dataclass(frozen=True)
class SSDOptions:
    """Detector settings of every SSD (see detkit.modeling.ssd.SSD): post-processing,
    the matching IoU, the hard-negative fraction and the memory layout."""

    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    topk_candidates: int = 400
    iou_thresh: float = 0.5
    positive_fraction: float = 0.25
    channels_last: bool = False


@dataclass(frozen=True)
class RCNNOptions:
    """Detector settings of every Faster/Mask R-CNN, torchvision's names and
    defaults: the input transform, the RPN (`rpn_*`; top-n values are
    (train, test) pairs) and the RoI heads (the unprefixed sampling and
    post-processing settings)."""

    min_size: Union[int, tuple[int, ...]] = 800  # a tuple: one drawn per training image
    max_size: int = 1333
    channels_last: bool = False
    # Anchor sides in pixels: one per FPN map (finest first), or all of them on fasterrcnn_vgg16's one
    # map; None keeps the model's own (FPN: 32-512, VGG-16: 128-512). Small images want small anchors.
    anchor_sizes: Optional[tuple[int, ...]] = None
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000)
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100


@dataclass(frozen=True)
class ProposalOptions:
    """Detector settings of R-CNN and Fast R-CNN (detectors on external
    proposals; see detkit.modeling.proposal_rcnn): the input transform, the
    selective search that proposes when no proposals are given, the RoI
    sampling (foreground IoU >= fg_iou_thresh, background in [bg_iou_low,
    bg_iou_thresh), boxes regressed from reg_iou_thresh) and the per-class
    post-processing. Defaults: the Fast R-CNN paper's (600 px, 64 RoIs per
    image, 25% foreground, background from 0.1, NMS 0.3)."""

    min_size: Union[int, tuple[int, ...]] = 600
    max_size: int = 1000
    channels_last: bool = False
    proposal_mode: str = "fast"  # selective search strategy: "fast" or "quality"
    max_proposals: int = 2000
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    bg_iou_low: float = 0.1
    reg_iou_thresh: float = 0.5
    batch_size_per_image: int = 64
    positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    detections_per_img: int = 100


# R-CNN's training windows (Girshick et al., 2014): every proposal under 0.5 IoU is background, and
# the box regressor learns from proposals of at least 0.6 IoU.
RCNN_PAPER = ProposalOptions(bg_iou_low=0.0, reg_iou_thresh=0.6)


@dataclass(frozen=True)
class TinySSDOptions:
    """Detector settings of TinySSD (the book's defaults): its pos_threshold,
    NMS IoU, detections kept per image and anchor labelling IoU."""

    score_thresh: float = 0.009999999
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    iou_thresh: float = 0.5


# Small R-CNNs for training from scratch on a CPU: small inputs, fewer proposals and samples.
SMALL_RCNN = RCNNOptions(min_size=256, max_size=256, rpn_pre_nms_top_n=(300, 300), rpn_post_nms_top_n=(150, 100),
                         batch_size_per_image=128)
# The Faster R-CNN paper's single-scale VGG-16 model: 600 px inputs, 12000/6000 -> 2000/300 proposals.
VGG16_PAPER = RCNNOptions(min_size=600, max_size=1000, rpn_pre_nms_top_n=(12000, 6000),
                          rpn_post_nms_top_n=(2000, 300))


def register(name: str) -> Callable:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder
    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """Every option `build(name, ...)` takes, with its default for this model."""
    options = {}
    for param in inspect.signature(_builder(name)).parameters.values():
        if param.name == "num_classes":
            continue
        if param.name == "detector":
            options.update(dataclasses.asdict(param.default))
        else:
            options[param.name] = param.default
    return options


def pretrained_models() -> list[str]:
    """The zoo names that `build(name, weights=...)` can load torchvision weights for."""
    return sorted(PRETRAINED_MODELS)


def build(name: str, num_classes: Optional[int] = None, weights: Optional[PathLike] = None,
          **options: object) -> nn.Module:
    """Builds a zoo model. `options` are the builder's own keyword arguments
    (width, size, backbone_weights, ...) and the fields of its detector options
    (score_thresh, min_size, ...), flat; an option the model does not take is a
    ModelOptionError that lists the ones it does (see `model_options(name)`).

    weights: where the whole model starts: a file (a detkit checkpoint or a
        state_dict) or a torchvision weights name ("DEFAULT", "COCO_V1",
        "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"). Named weights set
        `model.classes` (COCO's 91 slots, "N/A" gaps included). With another
        `num_classes` than the weights', the class-dependent layers are
        re-initialised and everything else loads strictly (fine-tuning).
    num_classes: including the background. Default: the class count of the
        weights (named weights and detkit checkpoints know it), else 91; a
        plain state_dict must then fit exactly. Given, and unlike the weights',
        it fine-tunes.
    """
    builder = _builder(name)
    arguments = _builder_arguments(name, builder, options)  # before any download: a typo fails at once
    state, classes, source = _starting_weights(name, weights) if weights is not None else (None, None, None)
    fine_tune = num_classes is not None
    if num_classes is None:
        num_classes = len(classes) + 1 if classes else 91
    model = builder(num_classes, **arguments)
    if state is None:
        return model
    # No class count asked for: the file's must be the model's; asked for, it may differ (fine-tuning).
    reinitialised = load_state(model, state, source, _class_layers(model) if fine_tune else None)
    if classes and not reinitialised:
        model.classes = list(classes)
    return model


def _builder_arguments(name: str, builder: Callable[..., nn.Module], options: dict) -> dict:
    """Flat options -> the builder's keyword arguments plus its `detector` settings."""
    params = inspect.signature(builder).parameters
    detector = params["detector"].default
    fields = {f.name for f in dataclasses.fields(detector)}
    reserved = {"detector", "num_classes", "weights"}  # build's own arguments, or not options at all
    unknown = [key for key in options if key not in fields and (key not in params or key in reserved)]
    if unknown:
        raise ModelOptionError(f"model {name!r} takes no option {', '.join(map(repr, unknown))}; its options: "
                               f"{', '.join(model_options(name))}")
    # Config files and --set give lists where the options hold tuples.
    flat = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    own = {k: v for k, v in flat.items() if k not in fields}
    return {**own, "detector": dataclasses.replace(detector, **{k: v for k, v in flat.items() if k in fields})}


def _starting_weights(name: str, weights: PathLike):
    """(state_dict, class names or None, source text) of `weights` for zoo model `name`."""
    if is_weights_name(weights):
        twin = name if name in PRETRAINED_MODELS else None
        member = resolve_weights(weights, twin, f"model {name!r}", pretrained_models())
        categories = member.meta.get("categories")
        return fetch_state_dict(member), (categories[1:] if categories else None), f"{member}"
    state, classes = read_weights(weights)
    return state, classes, os.fspath(weights)


def _class_layers(model: nn.Module) -> dict[str, Callable[[], None]]:
    """The layers whose shape depends on the class count -> their constructor initialisation."""
    if isinstance(model, TinySSD):
        return model.class_layers()
    if isinstance(model, SSD):
        return {"head.classification_head": model.head.classification_head.reset_parameters}
    layers = {"roi_heads.box_predictor": model.roi_heads.box_predictor.reset_parameters}
    if model.roi_heads.mask_predictor is not None:
        layers["roi_heads.mask_predictor.mask_fcn_logits"] = model.roi_heads.mask_predictor.reset_logits
    return layers


def _backbone_weights(backbone: nn.Module, spec: Optional[PathLike]) -> None:
    """Loads ImageNet classification weights into `backbone` (their classifier
    dropped): a file, or a torchvision weights name of the backbone's twin
    ("IMAGENET1K_V1", "IMAGENET1K_FEATURES" for VGG-16, "DEFAULT", ...)."""
    if spec is None:
        return
    if is_weights_name(spec):
        member = _backbone_member(backbone, spec)
        state, source = fetch_state_dict(member), f"{member}"
    else:
        (state, _), source = read_weights(spec, "backbone weights"), os.fspath(spec)
    try:
        backbone.load_imagenet(state)
    except (RuntimeError, KeyError) as exc:
        raise WeightsError(f"{source} does not fit {type(backbone).__name__}: {str(exc).splitlines()[0]}") from None


def _backbone_member(backbone: nn.Module, spec: str):
    """The torchvision weights `spec` names for `backbone`: "DEFAULT" is the
    member that fits its input normalisation (VGG-16 for SSD: IMAGENET1K_FEATURES),
    and a member trained on other inputs is refused."""
    fitting = backbone.imagenet_weights
    what = type(backbone).__name__
    member = resolve_weights(fitting[0] if spec == "DEFAULT" and fitting else spec, backbone.torchvision_name, what)
    if fitting and member.name not in fitting:
        raise WeightsError(f"{member} expects other inputs than {what} is fed; it takes "
                           f"{type(member).__name__}.{{{', '.join(fitting)}}}")
    return member


# --- SSD ------------------------------------------------------------------------------------------


def _ssd(backbone: nn.Module, body: nn.Module, num_classes: int, size: int, detector: SSDOptions,
         steps: Optional[list[int]] = None, ratios: Sequence = SSD300_RATIOS,
         scales: Sequence[float] = SSD300_SCALES) -> SSD:
    """An SSD whose inputs are normalised as the body's ImageNet weights expect."""
    anchors = ops.DefaultBoxGenerator(ratios, scales=scales, steps=steps)
    return SSD(backbone, anchors, (size, size), num_classes, image_mean=body.image_mean, image_std=body.image_std,
               **dataclasses.asdict(detector))


def _ssd_on_neck(body: nn.Module, num_classes: int, size: int, scales: Sequence[float],
                 backbone_weights: Optional[PathLike], detector: SSDOptions) -> SSD:
    """SSD300's levels on a classification body's c3-c5 plus three extra maps."""
    _backbone_weights(body, backbone_weights)
    return _ssd(SSDNeck(body), body, num_classes, size, detector, scales=scales)


@register("ssd300_vgg16")
def ssd300_vgg16(num_classes: int = 91, *, width: float = 1.0, size: int = 300,
                 scales: Sequence[float] = SSD300_SCALES,
                 backbone_weights: Optional[PathLike] = None, trainable_backbone_layers: int = 5,
                 detector: SSDOptions = SSDOptions()) -> SSD:
    """SSD300 on VGG-16, torchvision's ssd300_vgg16 (same names, defaults and
    outputs); torchvision's published COCO box AP is 25.1."""
    backbone = SSDVGG16(highres=False, width=width, trainable_layers=trainable_backbone_layers)
    _backbone_weights(backbone, backbone_weights)
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
    _backbone_weights(backbone, backbone_weights)
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


# --- Faster and Mask R-CNN ------------------------------------------------------------------------


def _rpn(anchors: ops.AnchorGenerator, channels: int, o: RCNNOptions) -> RegionProposalNetwork:
    head = RPNHead(channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(anchors, head, fg_iou_thresh=o.rpn_fg_iou_thresh, bg_iou_thresh=o.rpn_bg_iou_thresh,
                                 batch_size_per_image=o.rpn_batch_size_per_image,
                                 positive_fraction=o.rpn_positive_fraction, pre_nms_top_n=tuple(o.rpn_pre_nms_top_n),
                                 post_nms_top_n=tuple(o.rpn_post_nms_top_n), nms_thresh=o.rpn_nms_thresh,
                                 score_thresh=o.rpn_score_thresh)


def _roi_heads(pool: nn.Module, channels: int, hidden: int, num_classes: int, o: Union[RCNNOptions, ProposalOptions],
               pool_size: int = 7, **parts: Union[nn.Module, float]) -> RoIHeads:
    return RoIHeads(pool, TwoMLPHead(channels * pool_size * pool_size, hidden), FastRCNNPredictor(hidden, num_classes),
                    fg_iou_thresh=o.fg_iou_thresh, bg_iou_thresh=o.bg_iou_thresh,
                    batch_size_per_image=o.batch_size_per_image, positive_fraction=o.positive_fraction,
                    bbox_reg_weights=tuple(o.bbox_reg_weights), score_thresh=o.score_thresh,
                    nms_thresh=o.nms_thresh, detections_per_img=o.detections_per_img, **parts)


def _rcnn_fpn(body: nn.Module, in_features: Sequence[str], num_classes: int, backbone_weights: Optional[PathLike],
              width: float, masks: bool, o: RCNNOptions) -> FasterRCNN:
    """Backbone + FPN + RPN + RoI heads (+ mask head); `width` scales the FPN
    and head channels too (1.0: torchvision's 256 / 1024 / 256)."""
    _backbone_weights(body, backbone_weights)
    channels, hidden = max(16, int(256 * width)), max(64, int(1024 * width))
    backbone = BackboneWithFPN(body, list(in_features), channels)
    maps = len(in_features) + 1  # "pool" included
    sizes = tuple(o.anchor_sizes) if o.anchor_sizes is not None else (32, 64, 128, 256, 512)[-maps:]
    if len(sizes) != maps:
        raise ValueError(f"anchor_sizes needs one size per FPN map ({maps}), got {list(sizes)}")
    anchors = ops.AnchorGenerator(tuple((size,) for size in sizes), ((0.5, 1.0, 2.0),) * maps)
    levels = ["0", "1", "2", "3"][: len(in_features)]
    mask_parts = {}
    if masks:
        mask_parts = dict(mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
                          mask_head=MaskRCNNHeads(channels, (channels,) * 4),
                          mask_predictor=MaskRCNNPredictor(channels, channels, num_classes))
    pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2)
    roi_heads = _roi_heads(pool, channels, hidden, num_classes, o, **mask_parts)
    return FasterRCNN(backbone, _rpn(anchors, channels, o), roi_heads, num_classes, min_size=o.min_size,
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


# --- TinySSD --------------------------------------------------------------------------------------


@register("tinyssd")
def tinyssd(num_classes: int = 91, *, size: int = 256, detector: TinySSDOptions = TinySSDOptions()) -> TinySSD:
    """The book's TinySSD (d2l.ai 14.7) on size x size inputs (the book: 256,
    5444 anchors), with its anchors, labelling, loss and prediction."""
    return TinySSD(num_classes, size=size, score_thresh=detector.score_thresh, nms_thresh=detector.nms_thresh,
                   detections_per_img=detector.detections_per_img, iou_thresh=detector.iou_thresh)


# The single-map (stride-16) builders live in their own file; importing it registers them.
from . import models_single_map  # noqa: E402,F401  (after everything it imports from here is defined)
