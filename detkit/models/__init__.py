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
name; see detkit.models.weights. Weights of another class count fine-tune: all but
the class-dependent layers load, and those are re-initialised.
"""
from __future__ import annotations

from ..runtimes import RUNTIMES, optimize
from .anchors import AnchorFit, fit_anchors
from .options import RCNN_PAPER, SMALL_RCNN, VGG16_PAPER, ProposalOptions, RCNNOptions, SSDOptions, TinySSDOptions
from .registry import ModelOptionError, build, list_models, model_options, pretrained_models
from .weights import load_weights

# Each family module registers its builders; the builders are also importable from here.
from .ssd import (ssd300_googlenet, ssd300_resnet18, ssd300_resnet18_small, ssd300_resnet34,
                  ssd300_resnet50, ssd300_resnet101, ssd300_vgg16, ssd300_vgg16_small, ssd512_vgg16)
from .rcnn_fpn import (fasterrcnn_googlenet_fpn, fasterrcnn_resnet18_fpn, fasterrcnn_resnet18_fpn_small,
                       fasterrcnn_resnet50_fpn, maskrcnn_resnet18_fpn, maskrcnn_resnet18_fpn_small,
                       maskrcnn_resnet50_fpn)
from .single_map import fasterrcnn_resnet18_c4, fasterrcnn_vgg16
from .mobilenet import (fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_mobilenet_v3_large_fpn,
                        ssdlite320_mobilenet_v3_large)
from .textbook import tinyssd

__all__ = ["build", "list_models", "model_options", "pretrained_models", "load_weights", "SSDOptions", "RCNNOptions",
           "ProposalOptions", "TinySSDOptions", "SMALL_RCNN", "VGG16_PAPER", "RCNN_PAPER", "ModelOptionError",
           "optimize", "RUNTIMES", "fit_anchors", "AnchorFit",
           # the builders registered under their own names (R-CNN and Fast R-CNN: through build() only)
           "ssd300_googlenet", "ssd300_resnet18", "ssd300_resnet18_small", "ssd300_resnet34", "ssd300_resnet50",
           "ssd300_resnet101", "ssd300_vgg16", "ssd300_vgg16_small", "ssd512_vgg16", "fasterrcnn_googlenet_fpn",
           "fasterrcnn_resnet18_fpn", "fasterrcnn_resnet18_fpn_small", "fasterrcnn_resnet50_fpn",
           "maskrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn_small", "maskrcnn_resnet50_fpn", "fasterrcnn_resnet18_c4",
           "fasterrcnn_vgg16", "tinyssd", "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn",
           "fasterrcnn_mobilenet_v3_large_320_fpn"]
