"""ResNet-18/34/50/101 (He et al., 2016) returning multi-scale features.
Module names follow torchvision's resnet, so its ImageNet checkpoints load."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from .width import scaled_channels

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3))}



class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int, norm: Callable, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = norm(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = norm(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int, norm: Callable, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = norm(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = norm(ch)
        self.conv3 = nn.Conv2d(ch, ch * 4, 1, bias=False)
        self.bn3 = norm(ch * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """Features "c2".."c5" (strides 4, 8, 16, 32); `out_channels` by name.

    Args:
        depth: 18, 34, 50 or 101.
        frozen_bn: FrozenBatchNorm2d (statistics and affine fixed), as
            detection models use with ImageNet pretraining.
        trainable_layers: stages (0-5: layer4, layer3, ..., stem) left trainable.
        width: channel multiplier.
    """

    # Every torchvision ResNet weights member (IMAGENET1K_V1, _V2) expects ImageNet-normalised inputs.
    imagenet_weights = None
    image_mean, image_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, depth: int = 50, frozen_bn: bool = False, trainable_layers: int = 5, width: float = 1.0):
        super().__init__()
        self.torchvision_name = f"resnet{depth}"  # its ImageNet twin in torchvision.models
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        kind, counts = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        stem = scaled_channels(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = norm(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch, self.out_channels = stem, {}
        for i, (count, ch) in enumerate(zip(counts, (64, 128, 256, 512))):
            ch, stride = scaled_channels(ch, width), 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_ch != ch * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(in_ch, ch * block.expansion, 1, stride, bias=False),
                                           norm(ch * block.expansion))
            blocks = [block(in_ch, ch, stride, norm, downsample)]
            in_ch = ch * block.expansion
            blocks += [block(in_ch, ch, 1, norm) for _ in range(count - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels[f"c{i + 2}"] = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._freeze(trainable_layers)

    def _freeze(self, trainable_layers: int) -> None:
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            trainable.append("bn1")
        for name, p in self.named_parameters():
            if not any(name.startswith(t) for t in trainable):
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = OrderedDict()
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            out[f"c{i + 1}"] = x
        return out

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads a torchvision resnet ImageNet state_dict (the fc layer is dropped)."""
        state = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        if any(isinstance(m, FrozenBatchNorm2d) for m in self.modules()):
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        self.load_state_dict(state, strict=True)


class ResNetC4(ResNet):
    """ResNet up to layer3 (stride 16), returning {"c4": map}: the one feature
    map of single-scale R-CNNs (Fast/Faster R-CNN "C4" models, R-CNN's crops).

    Args: as ResNet, but trainable_layers counts layer3, layer2, layer1 and
    the stem (0-4)."""

    def __init__(self, depth: int = 50, frozen_bn: bool = False, trainable_layers: int = 4, width: float = 1.0):
        if not 0 <= trainable_layers <= 4:
            raise ValueError(f"trainable_layers must be in 0..4, got {trainable_layers}")
        super().__init__(depth, frozen_bn, trainable_layers + 1, width)  # ResNet counts layer4 first
        del self.layer4
        del self.out_channels["c5"]
        self.strides = {"c4": 16}

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return OrderedDict(c4=self.layer3(self.layer2(self.layer1(x))))

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads a torchvision resnet ImageNet state_dict but its layer4 and fc."""
        super().load_imagenet({k: v for k, v in state_dict.items() if not k.startswith("layer4.")})
