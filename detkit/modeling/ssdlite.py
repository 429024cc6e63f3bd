"""SSDlite's parts (MobileNetV2 paper, section 6.2; MobileNetV3 paper, section
6.3): a MobileNetV3 body split at the C4 expansion plus four depthwise extra
blocks, and heads of depthwise-separable predictors. Module names follow
torchvision's ssdlite (SSDLiteFeatureExtractorMobileNet, SSDLiteHead), so its
checkpoints load into detkit.modeling.ssd.SSD with this head injected."""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, Sequence

from torch import Tensor, nn

from .anchor_maps import flatten_anchor_maps
from .backbones.mobilenet import ConvNormAct, MobileNetV3Large

# torchvision's SSDlite norm: BatchNorm2d(eps=0.001, momentum=0.03) everywhere.
SSDLITE_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def normal_init(module: nn.Module, std: float = 0.03) -> None:
    """N(0, std) weights and zero biases for every Conv2d (torchvision's SSDlite init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)


def extra_block(in_ch: int, out_ch: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    """1x1 to out_ch / 2, depthwise 3x3 stride 2, 1x1 to out_ch (each with norm and ReLU6):
    [N, in_ch, H, W] -> [N, out_ch, ceil(H / 2), ceil(W / 2)]."""
    mid = out_ch // 2
    return nn.Sequential(ConvNormAct(in_ch, mid, 1, norm, nn.ReLU6),
                         ConvNormAct(mid, mid, 3, norm, nn.ReLU6, stride=2, groups=mid),
                         ConvNormAct(mid, out_ch, 1, norm, nn.ReLU6))


class SSDLiteFeatureExtractor(nn.Module):
    """Six maps "0".."5" (strides 16, 32, 64, 128, 256, 512 at 320 px): the C4
    block's expansion (before its stride-2 depthwise conv), the body's last
    conv, then four extra blocks; `out_channels` lists their channels.

    Args:
        body: a MobileNetV3Large; its layers are taken over (not copied).
        norm: the extra blocks' norm layer.
        width: channel multiplier of the extra blocks (at least min_depth each).
    """

    def __init__(self, body: MobileNetV3Large, norm: Callable[[int], nn.Module] = SSDLITE_NORM,
                 width: float = 1.0, min_depth: int = 16):
        super().__init__()
        layers = list(body.children())
        c4 = body.stage_starts[-2]  # the strided block of the last stage
        if layers[c4].use_res_connect:
            raise ValueError("the C4 block has a residual and cannot be split")
        self.features = nn.Sequential(
            nn.Sequential(*layers[:c4], layers[c4].block[0]),  # up to the C4 expansion (stride 16)
            nn.Sequential(layers[c4].block[1:], *layers[c4 + 1:]),  # from the C4 depthwise conv on (stride 32)
        )
        depth = lambda d: max(min_depth, int(d * width))  # noqa: E731
        channels = [layers[-1].out_channels, depth(512), depth(256), depth(256), depth(128)]
        self.extra = nn.ModuleList(extra_block(a, b, norm) for a, b in zip(channels, channels[1:]))
        normal_init(self.extra)
        self.out_channels = [layers[c4].block[0].out_channels] + channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        outputs = []
        for block in [*self.features, *self.extra]:
            x = block(x)
            outputs.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(outputs))


def prediction_block(in_ch: int, out_ch: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    """Depthwise 3x3 (norm, ReLU6), then a 1x1 conv with bias to `out_ch` outputs."""
    return nn.Sequential(ConvNormAct(in_ch, in_ch, 3, norm, nn.ReLU6, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1))


class SSDLiteScoringHead(nn.Module):
    """One prediction block per map; outputs [N, sum(HWA), columns] in (level, y,
    x, anchor) order, the default boxes' order (as detkit.modeling.ssd.ScoringHead)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], columns: int,
                 norm: Callable[[int], nn.Module] = SSDLITE_NORM):
        super().__init__()
        self.module_list = nn.ModuleList(prediction_block(c, columns * a, norm)
                                         for c, a in zip(in_channels, num_anchors))
        self.num_columns = columns
        normal_init(self.module_list)

    def forward(self, features: list[Tensor]) -> Tensor:
        return flatten_anchor_maps([block(x) for block, x in zip(self.module_list, features)], self.num_columns)


class SSDLiteHead(nn.Module):
    """{"bbox_regression": [N, anchors, 4], "cls_logits": [N, anchors, num_classes]}."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 norm: Callable[[int], nn.Module] = SSDLITE_NORM):
        super().__init__()
        self.classification_head = SSDLiteScoringHead(in_channels, num_anchors, num_classes, norm)
        self.regression_head = SSDLiteScoringHead(in_channels, num_anchors, 4, norm)

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        return {"bbox_regression": self.regression_head(features), "cls_logits": self.classification_head(features)}

    def class_layers(self) -> dict[str, Callable[[], None]]:
        """The layers whose shape depends on the class count (each map's last 1x1
        conv; the depthwise convs and norms before them do not) -> their
        constructor initialisation, for fine-tuning to another class count."""
        return {f"classification_head.module_list.{i}.1": partial(normal_init, block[1])
                for i, block in enumerate(self.classification_head.module_list)}
