"""GoogLeNet (Inception v1, Szegedy et al., 2015) with BatchNorm, returning
multi-scale features. Module names follow torchvision's googlenet, so its
ImageNet checkpoint loads (the auxiliary classifiers and fc are not used)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .width import scaled_channels

# (in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) as in the paper / torchvision.
INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32), "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64), "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64), "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128), "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}



class BasicConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, in_ch, ch1, ch3red, ch3, ch5red, ch5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_ch, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_ch, ch3red, kernel_size=1),
                                     BasicConv2d(ch3red, ch3, kernel_size=3, padding=1))
        # torchvision (and its checkpoint) use 3x3 here where the paper has 5x5.
        self.branch3 = nn.Sequential(BasicConv2d(in_ch, ch5red, kernel_size=1),
                                     BasicConv2d(ch5red, ch5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_ch, pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """Features "c3" (after inception3b, stride 8), "c4" (4e, 16), "c5" (5b, 32).

    trainable_layers: stages left trainable from the last: 0-4 (inception5,
    inception4, inception3, then the stem convs); 4 trains everything.
    """

    # torchvision's googlenet weights expect pixels in [-1, 1] (its transform_input=True re-maps
    # ImageNet-normalised inputs to that), so detectors on this body normalise so.
    torchvision_name, imagenet_weights = "googlenet", None
    image_mean, image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, width: float = 1.0, trainable_layers: int = 4):
        super().__init__()
        c = lambda v: scaled_channels(v, width)  # noqa: E731
        self.conv1 = BasicConv2d(3, c(64), kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(c(64), c(64), kernel_size=1)
        self.conv3 = BasicConv2d(c(64), c(192), kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        in_ch = c(192)
        for name, spec in INCEPTIONS.items():
            module = Inception(in_ch, *(c(v) for v in spec[1:]))
            setattr(self, name, module)
            in_ch = sum(c(v) for v in (spec[1], spec[3], spec[5], spec[6]))
            if name == "inception3b":
                self.out_channels = {"c3": in_ch}
            elif name == "inception4e":
                self.out_channels["c4"] = in_ch
        self.out_channels["c5"] = in_ch
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-2, b=2)
        if not 0 <= trainable_layers <= 4:
            raise ValueError(f"trainable_layers must be in 0..4, got {trainable_layers}")
        trainable = ("inception5", "inception4", "inception3", "conv")[:trainable_layers]
        for name, p in self.named_parameters():
            if not (trainable and name.startswith(trainable)):
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.inception3b(self.inception3a(x))
        out = OrderedDict(c3=x)
        x = self.maxpool3(x)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = getattr(self, name)(x)
        out["c4"] = x
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        out["c5"] = x
        return out

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads torchvision's googlenet ImageNet state_dict (aux1, aux2, fc dropped)."""
        state = {k: v for k, v in state_dict.items() if not k.startswith(("aux1.", "aux2.", "fc."))}
        self.load_state_dict(state, strict=True)
