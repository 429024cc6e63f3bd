"""MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", 2019) returning
the maps detectors tap. Its 17 layers are its own children "0".."16", named as
in torchvision's mobilenet_v3_large().features, so torchvision's ImageNet
weights load (features.N.* -> N.*) and, inside a detector, its detection
checkpoints' backbone.body.N.* (Faster R-CNN FPN) keys match."""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, Optional

from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

# Table 1 of the paper, torchvision's order: (kernel, expanded, out, squeeze-excite, hard-swish, stride);
# the last three rows are the C4 stage, which `reduced_tail` halves (Table 6).
LARGE = ((3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
         (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
         (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
         (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
         (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1))
TAIL = 3  # rows of LARGE in the C4 stage
# The maps returned, torchvision's C0..C5: the stem, each strided block (the start of a stage, as
# torchvision's FPN extractor taps it) and the last 1x1 conv. Layer index -> (name, stride).
TAPS = {0: ("c0", 2), 2: ("c1", 4), 4: ("c2", 8), 7: ("c3", 16), 13: ("c4", 32), 16: ("c5", 32)}


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: the nearest multiple of `divisor`, at least
    `divisor`, and not more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> activation, torchvision's Conv2dNormActivation
    (children "0", "1", "2"). A plain Sequential, so BatchNorm folding finds the pair."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, norm: Callable[[int], nn.Module],
                 activation: Optional[Callable[..., nn.Module]], stride: int = 1, groups: int = 1):
        layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  norm(out_ch)]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_ch


class SqueezeExcitation(nn.Module):
    """x * hardsigmoid(fc2(relu(fc1(mean over H, W of x)))): [N, C, H, W] -> same."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class InvertedResidual(nn.Module):
    """1x1 expansion (when the width changes), depthwise kxk, optional
    squeeze-excite, linear 1x1 projection; a residual when shapes allow.
    [N, in_ch, H, W] -> [N, out_ch, H / stride, W / stride]."""

    def __init__(self, in_ch: int, kernel: int, expanded: int, out_ch: int, se: bool, hardswish: bool,
                 stride: int, norm: Callable[[int], nn.Module]):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(ConvNormAct(in_ch, expanded, 1, norm, act))
        layers.append(ConvNormAct(expanded, expanded, kernel, norm, act, stride=stride, groups=expanded))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(ConvNormAct(expanded, out_ch, 1, norm, None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_ch == out_ch
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3Large(nn.Module):
    """Features "c0".."c5" (strides 2, 4, 8, 16, 32, 32; see TAPS): [N, 3, H, W]
    -> OrderedDict of [N, out_channels[name], H / stride, W / stride].

    Args:
        width: channel multiplier (torchvision's width_mult: multiples of 8).
        reduced_tail: halve the C4 stage and the last conv (Table 6 of the
            paper), as torchvision's SSDlite does when no ImageNet weights load.
        norm: the norm layer: "frozen" (FrozenBatchNorm2d) or "batch" (BatchNorm2d).
        eps, momentum: the norm's (ImageNet classifier: 1e-3, 0.01; torchvision's
            R-CNNs pass a norm class and get 1e-5; SSDlite: 1e-3, 0.03).
        trainable_layers: stages (0-6, the last first, as torchvision counts them)
            left trainable.
    """

    torchvision_name = "mobilenet_v3_large"  # its ImageNet twin in torchvision.models
    # Both torchvision members expect ImageNet-normalised inputs; "DEFAULT" is V1, the weights
    # torchvision's detection builders start from (its classification DEFAULT is V2).
    imagenet_weights = ("IMAGENET1K_V1", "IMAGENET1K_V2")
    image_mean, image_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, width: float = 1.0, reduced_tail: bool = False, norm: str = "batch", eps: float = 1e-5,
                 momentum: float = 0.1, trainable_layers: int = 6):
        super().__init__()
        if norm not in ("batch", "frozen"):
            raise ValueError(f"norm must be 'batch' or 'frozen', got {norm!r}")
        norm_layer = partial(FrozenBatchNorm2d, eps=eps) if norm == "frozen" else \
            partial(nn.BatchNorm2d, eps=eps, momentum=momentum)
        c = lambda v: make_divisible(v * width)  # noqa: E731
        in_ch = c(16)
        layers: list[nn.Module] = [ConvNormAct(3, in_ch, 3, norm_layer, nn.Hardswish, stride=2)]
        first_tail = len(LARGE) - TAIL
        for i, (kernel, expanded, out, se, hs, stride) in enumerate(LARGE):
            # torchvision halves the tail's outputs, and the expansions of all but its first block
            divider = 2 if reduced_tail and i >= first_tail else 1
            expanded //= divider if i > first_tail else 1
            layers.append(InvertedResidual(in_ch, kernel, c(expanded), c(out // divider), se, hs, stride,
                                           norm_layer))
            in_ch = c(out // divider)
        layers.append(ConvNormAct(in_ch, 6 * in_ch, 1, norm_layer, nn.Hardswish))
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)
        self.out_channels = {name: layers[i].out_channels for i, (name, _) in TAPS.items()}
        self.strides = {name: stride for name, stride in TAPS.values()}
        self.stage_starts = list(TAPS)  # torchvision's stage_indices
        self._init_weights()
        self._freeze(trainable_layers)

    def _init_weights(self) -> None:
        """torchvision's MobileNetV3 initialisation (kaiming fan-out convs, zero biases)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _freeze(self, trainable_layers: int) -> None:
        """Freezes the layers before the first of the last `trainable_layers` stages."""
        stages = len(self.stage_starts)
        if not 0 <= trainable_layers <= stages:
            raise ValueError(f"trainable_layers must be in 0..{stages}, got {trainable_layers}")
        layers = list(self.children())
        freeze_before = len(layers) if trainable_layers == 0 else self.stage_starts[stages - trainable_layers]
        for layer in layers[:freeze_before]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        out = OrderedDict()
        for i, layer in enumerate(self.children()):
            x = layer(x)
            if i in TAPS:
                out[TAPS[i][0]] = x
        return out

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads a torchvision mobilenet_v3_large ImageNet state_dict (`features.N.*`;
        the classifier is dropped). Needs the full tail (reduced_tail=False)."""
        # FrozenBatchNorm2d drops the num_batches_tracked entries itself
        state = {k.removeprefix("features."): v for k, v in state_dict.items() if k.startswith("features.")}
        self.load_state_dict(state, strict=True)
