"""Detectors on external region proposals: R-CNN (Girshick et al., 2014) and
Fast R-CNN (Girshick, 2015), the two steps before Faster R-CNN.

Both score and refine given proposals with the same RoI heads as Faster
R-CNN (softmax over N+1 classes, class-specific box regression, per-class
NMS); they differ in where the CNN runs:

- R-CNN warps every proposal's image region (with context padding) to a
  fixed size and runs the CNN on each crop: `WarpedRegionFeatures`;
- Fast R-CNN runs the CNN once on the whole image and pools each
  proposal's cells of the feature map (RoIPool): `SingleScaleRoIPool`.

Proposals come from, in order: the `proposals` argument, the targets'
"proposals" (a dataset's precomputed ones, training only), or selective
search on the image itself (`SelectiveSearchProposer`), so evaluation,
tools/infer.py and detect() need nothing but images.

Contract (torchvision's, as every detkit model): model(images, targets) with
images a list of Tensor[3, H, W] in [0, 1]; a loss dict in train mode, one
{"boxes", "scores", "labels"} per image (its own pixels) in eval mode.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..ops.selective_search import selective_search
from .targets import TensorTarget
from .transform import ChannelsLast, DetectionTransform, check_images, check_targets, resize_boxes


class SelectiveSearchProposer(nn.Module):
    """Images [3, H, W] in [0, 1] -> their selective search boxes, Tensor[P, 4]
    (x1, y1, x2, y2) in the paper's ranking, the first `max_proposals`."""

    def __init__(self, mode: str = "fast", max_proposals: int = 2000):
        super().__init__()
        self.mode, self.max_proposals = mode, max_proposals

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        out = []
        for image in images:
            pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
            rgb = np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy())
            out.append(selective_search(rgb, mode=self.mode)[: self.max_proposals].to(image.device))
        return out


class ImageAsFeatures(nn.Module):
    """R-CNN's "backbone": the normalised image itself, {"image": x}; its
    CNN runs per region inside WarpedRegionFeatures."""

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict(image=x)


class WarpedRegionFeatures(nn.Module):
    """R-CNN's per-region CNN features, called like a RoI pooler:
    {"image": Tensor[B, 3, H, W] normalised}, boxes list of Tensor[K_i, 4],
    image sizes -> Tensor[sum K_i, C, pool_size, pool_size].

    Each box is dilated so that `context` pixels of the warped crop surround
    it (the paper's p = 16 at 227 px), its region warped anisotropically
    (bilinear) to crop_size x crop_size, and the crop run through `body`;
    the body's map `feature` is max-pooled to pool_size (R-CNN's pool5).
    Outside the image a crop reads zeros, the mean after normalisation, as
    the paper fills it with the image mean. Crops go through the body
    `chunk` at a time to bound memory, channels-last on the CPU when
    `channels_last` is set (the owning model sets it)."""

    channels_last = False

    def __init__(self, body: nn.Module, feature: str, crop_size: int = 112, context: float = 8.0,
                 pool_size: int = 7, chunk: int = 256):
        super().__init__()
        if not 0 <= 2 * context < crop_size:
            raise ValueError(f"context must be in [0, crop_size / 2), got {context} for crop_size {crop_size}")
        self.body, self.feature = body, feature
        self.crop_size, self.context, self.chunk = crop_size, context, chunk
        self.pool = nn.AdaptiveMaxPool2d(pool_size)

    def dilate(self, boxes: Tensor) -> Tensor:
        """Boxes grown about their centres so that, warped to crop_size, they
        keep `context` px of surroundings on every side."""
        scale = self.crop_size / (self.crop_size - 2 * self.context)
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * scale
        return torch.cat([centre - half, centre + half], dim=1)

    def crops(self, images: Tensor, boxes: list[Tensor]) -> Tensor:
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), self.dilate(b)], dim=1)
                          for i, b in enumerate(boxes)])
        return roi_align(images, rois, (self.crop_size, self.crop_size), 1.0, sampling_ratio=2, aligned=True)

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes) -> Tensor:
        crops = self.crops(features["image"], boxes)
        if self.channels_last and crops.device.type == "cpu":
            crops = crops.contiguous(memory_format=torch.channels_last)
        if len(crops) == 0:
            return self.pool(self.body(crops[:1].new_zeros((1, *crops.shape[1:])))[self.feature])[:0]
        return torch.cat([self.pool(self.body(part)[self.feature]) for part in crops.split(self.chunk)])


class ProposalRCNN(ChannelsLast, nn.Module):
    """R-CNN or Fast R-CNN: proposals in, detections out (see the module doc).

    Args:
        backbone: Fast R-CNN: the CNN body, {name: map} of the whole image;
            R-CNN: ImageAsFeatures (the body sits in the RoI heads' pooler).
        roi_heads: RoIHeads whose box_roi_pool is SingleScaleRoIPool (Fast
            R-CNN) or WarpedRegionFeatures (R-CNN).
        proposer: proposals for images that come without any.
        num_classes: including the background.
        min_size, max_size, image_mean, image_std: the input transform.
        channels_last: run the CNN channels-last on the CPU.
    """

    def __init__(self, backbone: nn.Module, roi_heads: nn.Module, proposer: nn.Module, num_classes: int,
                 min_size: int = 600, max_size: int = 1000, image_mean=(0.485, 0.456, 0.406),
                 image_std=(0.229, 0.224, 0.225), channels_last: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        self.transform = DetectionTransform(min_size, max_size, image_mean, image_std, size_divisible=32)
        self.backbone, self.roi_heads, self.proposer = backbone, roi_heads, proposer
        self.num_classes = num_classes
        self.channels_last = channels_last
        if isinstance(roi_heads.box_roi_pool, WarpedRegionFeatures):
            roi_heads.box_roi_pool.channels_last = channels_last

    def _conv_modules(self) -> list[nn.Module]:
        pool = self.roi_heads.box_roi_pool
        return [pool.body if isinstance(pool, WarpedRegionFeatures) else self.backbone]

    def _layout(self, x: Tensor) -> Tensor:
        if isinstance(self.roi_heads.box_roi_pool, WarpedRegionFeatures):
            self.convert_weights_layout()  # crops are made per call; the body's weights are converted once
            return x
        return super()._layout(x)

    def forward(self, images: list[Tensor], targets: Optional[list[TensorTarget]] = None,
                proposals: Optional[list[Tensor]] = None):
        """proposals: per image Tensor[P_i, 4] (x1, y1, x2, y2) in its pixels;
        default: the targets' "proposals" in training, else selective search."""
        check_images(images)
        if self.training:
            check_targets(targets, len(images), self.num_classes, images=images)
        proposals = self._proposals(images, targets, proposals)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(list(images), targets if self.training else None)
        proposals = [resize_boxes(p.to(torch.float32), original, size)
                     for p, original, size in zip(proposals, original_sizes, image_list.image_sizes)]
        features = self.backbone(self._layout(image_list.tensors))
        detections, losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return losses
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def _proposals(self, images: list[Tensor], targets, proposals) -> list[Tensor]:
        if proposals is None and self.training and all("proposals" in t for t in targets):
            proposals = [t["proposals"] for t in targets]
        if proposals is None:
            return self.proposer(images)
        if len(proposals) != len(images):
            raise ValueError(f"got {len(proposals)} proposal sets for {len(images)} images")
        for i, p in enumerate(proposals):
            if not isinstance(p, Tensor) or p.dim() != 2 or p.shape[-1] != 4:
                raise ValueError(f"proposals[{i}] must be a Tensor[P, 4], got {getattr(p, 'shape', p)}")
        return list(proposals)
