"""Feature Pyramid Network (Lin et al., 2017) on a backbone's c2..c5, with
torchvision's module names (backbone.body.*, backbone.fpn.*)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _conv(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    # A Sequential around the conv, as torchvision's Conv2dNormActivation without norm and activation.
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2))


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway with lateral 1x1 and output 3x3 convs, plus a
    stride-2 max-pooled level ("pool") for the RPN."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        self.inner_blocks = nn.ModuleList(_conv(c, out_channels, 1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_conv(out_channels, out_channels, 3) for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        names, x = list(features), list(features.values())
        last = self.inner_blocks[-1](x[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(len(x) - 2, -1, -1):
            lateral = self.inner_blocks[i](x[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[i](last))
        results.append(F.max_pool2d(results[-1], 1, 2, 0))
        return OrderedDict(zip(names + ["pool"], results))


class BackboneWithFPN(nn.Module):
    """body (ResNet or GoogLeNet features) -> FPN maps "0".."3" and "pool"."""

    def __init__(self, body: nn.Module, in_features: Sequence[str], out_channels: int = 256):
        super().__init__()
        self.body = body
        self.in_features = list(in_features)
        self.fpn = FeaturePyramidNetwork([body.out_channels[k] for k in in_features], out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), features[k]) for i, k in enumerate(self.in_features)))
