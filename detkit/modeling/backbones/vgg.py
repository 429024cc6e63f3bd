"""VGG-16 in the SSD form (Liu et al., 2016): conv4_3 with a learned L2Norm
scale, conv5 and a dilated fc6/fc7 as convolutions, then the extra layers.
Module names follow torchvision's SSDFeatureExtractorVGG, so its SSD
checkpoints load strictly; vgg16 ImageNet weights load as pretraining."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .width import scaled_channels

from ..initializers import xavier_init

VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")



def vgg16_features(width: float = 1.0) -> nn.Sequential:
    """torchvision's vgg16().features (conv + ReLU, max pools), channels scaled by width."""
    layers, in_ch = [], 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = scaled_channels(v, width)
            layers += [nn.Conv2d(in_ch, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out
    return nn.Sequential(*layers)


def _extra(in_ch: int, mid: int, out: int, stride: int, padding: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, mid, kernel_size=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, out, kernel_size=kernel, padding=padding, stride=stride), nn.ReLU(inplace=True))


class SSDVGG16(nn.Module):
    """Returns 6 feature maps (7 with highres, for SSD512) as an OrderedDict
    "0".."5"; `out_channels` lists their channels.

    Args:
        highres: add the extra 4x4 layer of SSD512.
        width: channel multiplier (e.g. 0.25 for small CPU models).
        trainable_layers: VGG stages (0-5) left trainable, from the last.
    """

    # The torchvision weights that fit and the input they expect: the Caffe VGG-16 features SSD
    # was trained from, on 0-255 pixels less the mean (IMAGENET1K_V1 expects other inputs).
    torchvision_name, imagenet_weights = "vgg16", ("IMAGENET1K_FEATURES",)
    image_mean, image_std = (0.48235, 0.45882, 0.40784), (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)

    def __init__(self, highres: bool = False, width: float = 1.0, trainable_layers: int = 5):
        super().__init__()
        backbone = vgg16_features(width)
        pools = [i for i, layer in enumerate(backbone) if isinstance(layer, nn.MaxPool2d)]
        backbone[pools[2]].ceil_mode = True  # 75 -> 38 at 300x300
        c = lambda v: scaled_channels(v, width)  # noqa: E731
        self.scale_weight = nn.Parameter(torch.ones(c(512)) * 20)
        self.features = nn.Sequential(*backbone[: pools[3]])  # up to conv4_3 (+ ReLU)
        fc = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=False),  # pool5, stride 1
            nn.Conv2d(c(512), c(1024), kernel_size=3, padding=6, dilation=6),  # fc6, atrous
            nn.ReLU(inplace=True),
            nn.Conv2d(c(1024), c(1024), kernel_size=1),  # fc7
            nn.ReLU(inplace=True),
        )
        extra = [_extra(c(1024), c(256), c(512), 2, 1), _extra(c(512), c(128), c(256), 2, 1),
                 _extra(c(256), c(128), c(256), 1, 0), _extra(c(256), c(128), c(256), 1, 0)]
        if highres:
            extra.append(_extra(c(256), c(128), c(256), 1, 0, kernel=4))
        xavier_init(nn.ModuleList(extra))
        xavier_init(fc)
        self.extra = nn.ModuleList([nn.Sequential(*backbone[pools[3]:-1], fc)] + extra)  # conv5 + fc, then extras
        self.out_channels = [c(512), c(1024), c(512), c(256), c(256), c(256)] + ([c(256)] if highres else [])
        self._freeze(pools, trainable_layers)

    def _freeze(self, pools: list[int], trainable_layers: int) -> None:
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        stages = [0] + pools[:-1]  # torchvision's stage starts
        freeze_before = len(self.features) + len(self.extra[0]) if trainable_layers == 0 \
            else stages[5 - trainable_layers]
        layers = list(self.features) + list(self.extra[0])[:-1]
        for layer in layers[:freeze_before]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.features(x)
        outputs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(outputs))

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads torchvision's vgg16 ImageNet state_dict (its `features.*`)
        into conv1_1..conv5_3; the classifier is not used."""
        convs = [i for i, layer in enumerate(vgg16_features()) if isinstance(layer, nn.Conv2d)]
        n_early = len(self.features)
        mapped = {}
        for i in convs:
            target = f"features.{i}" if i < n_early else f"extra.0.{i - n_early}"  # extra.0 starts at pool4
            for kind in ("weight", "bias"):
                key = f"features.{i}.{kind}"
                if key not in state_dict:
                    raise KeyError(f"vgg16 checkpoint has no {key!r}")
                mapped[f"{target}.{kind}"] = state_dict[key]
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        assert not unexpected, unexpected


class VGG16C5(nn.Module):
    """VGG-16 up to conv5_3 (stride 16): the single feature map of the
    original Faster R-CNN. Returns {"c5": ...}; loads vgg16 ImageNet weights."""

    # The torchvision weights that fit and the input normalisation they expect.
    torchvision_name, imagenet_weights = "vgg16", ("IMAGENET1K_V1",)
    image_mean, image_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, width: float = 1.0, trainable_layers: int = 5):
        super().__init__()
        self.features = vgg16_features(width)[:-1]  # drop pool5
        self.out_channels = {"c5": scaled_channels(512, width)}
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        pools = [0] + [i + 1 for i, layer in enumerate(self.features) if isinstance(layer, nn.MaxPool2d)]
        freeze_before = len(self.features) if trainable_layers == 0 else pools[5 - trainable_layers]
        for layer in list(self.features)[:freeze_before]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict(c5=self.features(x))

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads torchvision's vgg16 ImageNet `features.*` (conv1_1..conv5_3)."""
        own = {k: v for k, v in state_dict.items() if k.startswith("features.") and k in self.state_dict()}
        missing = set(self.state_dict()) - set(own)
        if missing:
            raise KeyError(f"vgg16 checkpoint lacks {sorted(missing)[:3]}")
        self.load_state_dict(own, strict=True)
