"""Extra SSD layers on top of a backbone's c3, c4, c5: three more maps, each
half the size of the last (38, 19, 10 -> 5, 3, 2 at 300x300); padded, so any
input size works."""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .initializers import xavier_init


class SSDNeck(nn.Module):
    """backbone features c3, c4, c5 plus 3 extra maps: OrderedDict "0".."5"."""

    def __init__(self, backbone: nn.Module, extra_channels=(512, 256, 256)):
        super().__init__()
        self.body = backbone
        in_ch = [backbone.out_channels[k] for k in ("c3", "c4", "c5")]
        layers, prev = [], in_ch[-1]
        for out in extra_channels:
            layers.append(nn.Sequential(
                nn.Conv2d(prev, out // 2, kernel_size=1), nn.ReLU(inplace=True),
                nn.Conv2d(out // 2, out, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True)))
            prev = out
        self.extra = nn.ModuleList(layers)
        xavier_init(self.extra)
        self.out_channels = in_ch + list(extra_channels)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features = self.body(x)
        maps = [features["c3"], features["c4"], features["c5"]]
        x = maps[-1]
        for layer in self.extra:
            x = layer(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))
