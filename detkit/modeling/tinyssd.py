"""TinySSD, the single-shot detector of "Dive into Deep Learning" (d2l.ai,
section 14.7), with the book's anchors, labelling and prediction
(detkit.ops.d2l) behind detkit's model contract.

The network is the book's, module for module and under its names (blk_i,
cls_i, bbox_i), so a state_dict trained with the book's code loads strictly:
a base network of three down-sampling blocks (3 -> 16 -> 32 -> 64
channels), three more blocks (64 -> 128 -> 128 -> 128) and a global max
pool; each of the five stages gets four anchors per pixel and a 3x3 class
and box predictor. The loss is the book's: cross-entropy over all anchors
plus L1 over the offsets of the assigned ones, each averaged per image.

Contract (torchvision's, as every detkit model): model(images, targets)
with images a list of Tensor[3, H, W] in [0, 1] and targets a list of
{"boxes": Tensor[N, 4] (x1, y1, x2, y2) pixels, "labels": Tensor[N] in
1..num_classes-1}; a loss dict in train mode, one {"boxes", "scores",
"labels"} per image (pixels of that image) in eval mode.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import d2l
from .targets import TensorTarget
from .transform import DetectionTransform, check_images, check_targets

# The book's anchors: two sizes per stage (the second sqrt(s_i * s_{i+1})) and three ratios.
BOOK_SIZES = ((0.2, 0.272), (0.37, 0.447), (0.54, 0.619), (0.71, 0.79), (0.88, 0.961))
BOOK_RATIOS = (1.0, 2.0, 0.5)
# The book feeds images as floats in 0..255 without normalising: mean 0, std 1/255 turns
# detkit's [0, 1] inputs into those, so weights trained with the book's code work unchanged.
BOOK_MEAN = (0.0, 0.0, 0.0)
BOOK_STD = (1 / 255, 1 / 255, 1 / 255)


def down_sample_blk(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU, then a 2x2 max pool: halves height and width."""
    layers: list[nn.Module] = []
    for _ in range(2):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels),
                   nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def base_net() -> nn.Sequential:
    filters = [3, 16, 32, 64]
    return nn.Sequential(*(down_sample_blk(a, b) for a, b in zip(filters[:-1], filters[1:])))


def get_blk(i: int) -> nn.Module:
    """The book's stage i: the base network, two-then-three down-sampling blocks, a global max pool."""
    if i == 0:
        return base_net()
    if i == 1:
        return down_sample_blk(64, 128)
    if i == 4:
        return nn.AdaptiveMaxPool2d((1, 1))
    return down_sample_blk(128, 128)


def flatten_pred(pred: Tensor) -> Tensor:
    """[B, A*k, H, W] -> [B, H*W*A*k] in (y, x, anchor) order, the anchors' order."""
    return torch.flatten(pred.permute(0, 2, 3, 1), start_dim=1)


class TinySSD(nn.Module):
    """The book's TinySSD.

    Args:
        num_classes: including the background (detkit's convention; the
            book's num_classes is this minus one).
        size: the side of the square every image is resized to (the book: 256); >= 64.
        sizes, ratios: the anchors of each of the five stages (the book's).
        image_mean, image_std: normalisation of the [0, 1] input; the
            default reproduces the book's 0..255 inputs.
        score_thresh: the book's pos_threshold: detections scoring below it are dropped.
        nms_thresh: the class-agnostic NMS IoU (the book: 0.5).
        detections_per_img: the most detections returned per image.
        iou_thresh: the anchor labelling IoU (the book: 0.5).
    """

    def __init__(self, num_classes: int, size: int = 256, sizes: Sequence[Sequence[float]] = BOOK_SIZES,
                 ratios: Sequence[float] = BOOK_RATIOS, image_mean: Sequence[float] = BOOK_MEAN,
                 image_std: Sequence[float] = BOOK_STD, score_thresh: float = 0.009999999, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, iou_thresh: float = 0.5):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if size < 64:
            raise ValueError(f"size must be >= 64 (five halvings leave the fourth stage a pixel), got {size}")
        if len(sizes) != 5:
            raise ValueError(f"sizes needs one list per stage (5), got {len(sizes)}")
        self.num_classes, self.size = num_classes, size
        self.sizes, self.ratios = [list(s) for s in sizes], list(ratios)
        self.num_anchors = len(self.sizes[0]) + len(self.ratios) - 1
        if any(len(s) + len(self.ratios) - 1 != self.num_anchors for s in self.sizes):
            raise ValueError(f"every stage needs as many sizes, got {sizes}")
        for i, channels in enumerate([64, 128, 128, 128, 128]):
            setattr(self, f"blk_{i}", get_blk(i))  # the book's names: its state_dicts load
            setattr(self, f"cls_{i}", nn.Conv2d(channels, self.num_anchors * num_classes, kernel_size=3, padding=1))
            setattr(self, f"bbox_{i}", nn.Conv2d(channels, self.num_anchors * 4, kernel_size=3, padding=1))
        self.transform = DetectionTransform(size, size, image_mean, image_std, size_divisible=1,
                                            fixed_size=(size, size))
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.iou_thresh = detections_per_img, iou_thresh
        self._anchors: dict[tuple, Tensor] = {}  # feature-map sizes -> anchors; not state

    def class_layers(self) -> dict[str, Callable[[], None]]:
        """The layers whose shape depends on num_classes -> their constructor
        initialisation: what fine-tuning to another class count re-initialises."""
        return {f"cls_{i}": getattr(self, f"cls_{i}").reset_parameters for i in range(5)}

    def forward_raw(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The book's TinySSD.forward on a normalised batch x: Tensor[B, 3, S, S].

        Returns anchors Tensor[1, A, 4] (normalised x1, y1, x2, y2),
        cls_preds Tensor[B, A, num_classes] (logits, background first) and
        bbox_preds Tensor[B, 4A] (the book's offsets).
        """
        cls_preds, bbox_preds, shapes = [], [], []
        for i in range(5):
            x = getattr(self, f"blk_{i}")(x)
            shapes.append(tuple(x.shape[-2:]))
            cls_preds.append(flatten_pred(getattr(self, f"cls_{i}")(x)))
            bbox_preds.append(flatten_pred(getattr(self, f"bbox_{i}")(x)))
        cls_preds = torch.cat(cls_preds, dim=1)
        return self.anchors(shapes, x.device), cls_preds.reshape(x.shape[0], -1, self.num_classes), \
            torch.cat(bbox_preds, dim=1)

    def anchors(self, shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
        """multibox_prior of each stage's map, concatenated: Tensor[1, A, 4]; cached per map sizes."""
        key = (tuple(shapes), str(device))
        if key not in self._anchors:
            self._anchors[key] = torch.cat([d2l.multibox_prior(torch.empty(0, *hw, device=device), s, self.ratios)
                                            for hw, s in zip(shapes, self.sizes)], dim=1)
        return self._anchors[key]

    def forward(self, images: list[Tensor], targets: Optional[list[TensorTarget]] = None):
        check_images(images)
        if self.training:
            check_targets(targets, len(images), self.num_classes)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(list(images), targets if self.training else None)
        anchors, cls_preds, bbox_preds = self.forward_raw(image_list.tensors)
        if self.training:
            return self.compute_loss(anchors, cls_preds, bbox_preds, targets)
        return self.postprocess(anchors, cls_preds, bbox_preds, original_sizes)

    def book_labels(self, targets: list[TensorTarget]) -> Tensor:
        """Targets in pixels of the resized input -> the book's labels Tensor[B, G, 5]
        (class from 0, normalised x1, y1, x2, y2), padded with rows of -1."""
        most = max(len(t["boxes"]) for t in targets)
        labels = torch.full((len(targets), most, 5), -1.0, device=targets[0]["boxes"].device)
        for row, t in zip(labels, targets):
            n = len(t["boxes"])
            row[:n, 0] = t["labels"].float() - 1
            row[:n, 1:] = t["boxes"].float() / self.size
        return labels

    def compute_loss(self, anchors: Tensor, cls_preds: Tensor, bbox_preds: Tensor,
                     targets: list[TensorTarget]) -> dict[str, Tensor]:
        """The book's calc_loss, its two terms apart: mean cross-entropy over each
        image's anchors and mean L1 over its masked offsets, averaged over images."""
        offsets, masks, classes = d2l.multibox_target(anchors, self.book_labels(targets), self.iou_thresh)
        batch = cls_preds.shape[0]
        cls = F.cross_entropy(cls_preds.reshape(-1, self.num_classes).float(), classes.reshape(-1),
                              reduction="none").reshape(batch, -1).mean(dim=1)
        bbox = F.l1_loss(bbox_preds.float() * masks, offsets * masks, reduction="none").mean(dim=1)
        return {"loss_classifier": cls.mean(), "loss_box_reg": bbox.mean()}

    def postprocess(self, anchors: Tensor, cls_preds: Tensor, bbox_preds: Tensor,
                    original_sizes: list[tuple[int, int]]) -> list[TensorTarget]:
        """multibox_detection, then per image the rows with a class (already by
        decreasing score), clipped to the image and scaled to its pixels."""
        cls_probs = F.softmax(cls_preds.float(), dim=2).permute(0, 2, 1)
        output = d2l.multibox_detection(cls_probs, bbox_preds.float(), anchors, self.nms_thresh, self.score_thresh)
        results = []
        for rows, (height, width) in zip(output, original_sizes):
            rows = rows[rows[:, 0] >= 0][: self.detections_per_img]
            scale = rows.new_tensor([width, height, width, height])
            results.append({"boxes": rows[:, 2:].clamp(0.0, 1.0) * scale, "scores": rows[:, 1],
                            "labels": rows[:, 0].long() + 1})
        return results
