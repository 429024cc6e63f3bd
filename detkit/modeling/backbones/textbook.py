"""The textbook CNNs of Dive into Deep Learning (d2l.ai, ch. 7-8): LeNet-5,
AlexNet (the book's single-GPU version) and Network in Network, as classifiers
(`forward(x) -> logits [B, num_classes]`).

Each is `features` (the conv body) then `classifier`. The bodies of AlexNet
and NiN also serve detectors: `detection_body()` wraps the same modules (no
copy) as a backbone returning {"c5": map} at stride 16, like VGG16C5.
Layer shapes are the book's; there are no pretrained weights (torchvision's
AlexNet is the 64/192-channel variant, not this one)."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from .width import scaled_channels

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _init(module: nn.Module) -> None:
    """Xavier-uniform weights, as the book's init_cnn; zero biases, as torchvision's
    VGG (the book keeps PyTorch's random ones)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class FeatureBody(nn.Module):
    """A classifier's conv body as a detection backbone: x [B, 3, H, W] ->
    {"c5": [B, C, ceil(H/16), ceil(W/16)]} (H/16 exactly for the multiples
    of 32 that DetectionTransform pads to).

    The book's bodies pad little (AlexNet's first conv 1 px, NiN's none), so
    their maps are smaller than H/16 and shifted: AlexNet's cell k sees
    pixels centred on 16k + 16 (NiN's on 16k + 17). The anchor generator takes the stride as
    image size // map size and RoI pooling maps pixel x to cell x/16, so the
    input is zero-padded by `pad` px per side first: then cell k is centred
    on pixel 16k and the map has H/16 cells, as both assume. The padding
    touches no weight; a classifier's trained body works unchanged.

    Attributes: out_channels {"c5": C}, strides {"c5": 16}, image_mean,
    image_std, torchvision_name (None: no torchvision twin).
    """

    torchvision_name, imagenet_weights = None, None
    image_mean, image_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, features: nn.Sequential, channels: int, pad: int):
        super().__init__()
        self.features = features  # shared with the classifier: same module, same parameters
        self.pad = pad
        self.out_channels = {"c5": channels}
        self.strides = {"c5": 16}

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict(c5=self.features(F.pad(x, (self.pad,) * 4)))

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        """Loads the body from a state_dict of the classifier it came from
        (e.g. trained on ImageNet as in the book); `classifier.*` is dropped."""
        own = {k: v for k, v in state_dict.items() if k.startswith("features.")}
        self.load_state_dict(own, strict=True)


def _freeze(features: nn.Sequential, trainable_layers: int) -> None:
    """Freezes all but the last `trainable_layers` stages (a stage: a module with parameters)."""
    stages = [m for m in features if any(True for _ in m.parameters())]
    if not 0 <= trainable_layers <= len(stages):
        raise ValueError(f"trainable_layers must be in 0..{len(stages)}, got {trainable_layers}")
    for stage in stages[: len(stages) - trainable_layers]:
        for p in stage.parameters():
            p.requires_grad_(False)


class LeNet(nn.Module):
    """LeNet-5 as in the book: conv 6@5x5 (pad 2), avgpool 2, conv 16@5x5,
    avgpool 2, fc 120, 84, num_classes, sigmoid activations.

    x [B, in_channels, 28, 28] -> logits [B, num_classes]. An adaptive pool
    to the book's 5x5 map before the fc layers (identity at 28x28) lets other
    sizes in, e.g. the original 32x32.

    Args:
        activation: "sigmoid" (the book) or "relu".
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "sigmoid"):
        super().__init__()
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', got {activation!r}")
        act = nn.Sigmoid if activation == "sigmoid" else nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), act(), nn.AvgPool2d(2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), act(), nn.AvgPool2d(2, stride=2))
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d((5, 5)), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, num_classes))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    """AlexNet, the book's single-GPU version: conv 96@11x11 s4 (pad 1),
    maxpool 3 s2, conv 256@5x5, maxpool, conv 384, 384, 256 @3x3, maxpool,
    fc 4096, dropout, fc 4096, dropout, fc num_classes.

    x [B, in_channels, 224, 224] -> logits [B, num_classes]. `features` ends
    at conv5 + ReLU (stride 16, 12x12 at 224; pool5 opens the classifier). An
    adaptive pool to the book's 5x5 (identity at 224) lets inputs from 65 px
    up in.

    Args:
        width: multiplies the conv channels and the 4096-d layers (e.g. 0.125 on the CPU).
    """

    image_mean, image_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        c = lambda v: scaled_channels(v, width)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c(96), kernel_size=11, stride=4, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c(96), c(256), kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c(256), c(384), kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c(384), c(384), kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c(384), c(256), kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(
            nn.MaxPool2d(3, stride=2), nn.AdaptiveAvgPool2d((5, 5)), nn.Flatten(),
            nn.Linear(c(256) * 5 * 5, c(4096)), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(c(4096), c(4096)), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(c(4096), num_classes))
        self.out_channels = {"c5": c(256)}
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def detection_body(self, trainable_layers: int = 5) -> FeatureBody:
        """`features` as a backbone ({"c5"}, stride 16); trainable_layers: convs
        left trainable from the last (0-5). Freezing reaches this network too."""
        _freeze(self.features, trainable_layers)
        return FeatureBody(self.features, self.out_channels["c5"], pad=16)  # + conv1's 1: cell k on pixel 16k


def nin_block(in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    """A kxk conv then two 1x1 convs (a per-pixel MLP), each with ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, kernel_size=1), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, kernel_size=1), nn.ReLU(inplace=True))


class NiN(nn.Module):
    """Network in Network (Lin et al., 2013) as in the book: NiN blocks of
    96@11x11 s4, 256@5x5, 384@3x3 with max pools (3, s2) between, then
    max pool, dropout, a block of num_classes@3x3 and global average pooling.

    x [B, in_channels, 224, 224] -> logits [B, num_classes]. `features` ends
    after the 384 block (stride 16, 12x12 at 224). Inputs from 67 px up.
    The last block keeps the book's ReLU, so logits are >= 0.

    Weights are Xavier and biases zero, as in LeNet and AlexNet, except the
    class block's biases: they start at CLASS_BLOCK_BIAS (0.1). The block is
    num_classes wide in all three convs (the paper's ImageNet model has
    1024-wide hidden 1x1 convs). With few classes and zero biases, a unit of
    its ReLUs can sit below zero on every input. It then gets no gradient and
    stays dead: a dead logit's class is never predicted, and a dead layer
    stops every gradient. A positive bias keeps the units on while the body
    learns, as Krizhevsky et al. (2012) start AlexNet's ReLU biases at 1. The
    value is measured, not the book's (5 Shapes classes, 67 px crops, Adam
    1e-3, 900 steps, seeds 0-12): zero biases gave 0.15-0.79 held-out
    accuracy (seed 5 at chance: all 5 units of the middle ReLU dead by step
    200); 0.1 gave 0.47-0.86, and 0.54-0.83 on seeds 13-25; 0.03 held (0.42
    at worst); 0.01, 0.3 and 1 each left a seed near or at chance. Setting it
    draws no random numbers: the weights match a zero-bias init.

    Args:
        width: multiplies the 96/256/384 channels (not the class block).
    """

    CLASS_BLOCK_BIAS = 0.1

    image_mean, image_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        c = lambda v: scaled_channels(v, width)  # noqa: E731
        self.features = nn.Sequential(
            nin_block(in_channels, c(96), kernel_size=11, stride=4, padding=0), nn.MaxPool2d(3, stride=2),
            nin_block(c(96), c(256), kernel_size=5, stride=1, padding=2), nn.MaxPool2d(3, stride=2),
            nin_block(c(256), c(384), kernel_size=3, stride=1, padding=1))
        self.classifier = nn.Sequential(
            nn.MaxPool2d(3, stride=2), nn.Dropout(dropout),
            nin_block(c(384), num_classes, kernel_size=3, stride=1, padding=1),
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
        self.out_channels = {"c5": c(384)}
        _init(self)
        for m in self.classifier.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.constant_(m.bias, self.CLASS_BLOCK_BIAS)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def detection_body(self, trainable_layers: int = 3) -> FeatureBody:
        """`features` as a backbone ({"c5"}, stride 16); trainable_layers: NiN
        blocks left trainable from the last (0-3). Freezing reaches this network too."""
        _freeze(self.features, trainable_layers)
        return FeatureBody(self.features, self.out_channels["c5"], pad=17)  # conv1 pads none: cell k on pixel 16k
