"""Multi-scale RoIAlign for FPN heads that runs detkit's compiled RoIAlign
(detkit.ops.roi_align) on the CPU.

torchvision's CPU RoIAlign backward ran 39% of a small Mask R-CNN training
step on 2 cores, its forward 12-15% of a Faster R-CNN R50-FPN inference. On
the CPU (fixed sampling ratio, not tracing) levels are assigned by
torchvision's rules and each is pooled with detkit's roi_align, whose
outputs and gradients equal torchvision's bit for bit; tracing and other
devices take torchvision's MultiScaleRoIAlign unchanged.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

from ..ops.roi_align import compiled_serves, roi_align


class MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign (same arguments, outputs and state);
    features dict, boxes Tensor[K_i, 4] per image, image sizes ->
    Tensor[sum K_i, C, PH, PW]."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        maps = [x[name] for name in self.featmap_names]
        if not compiled_serves(maps[0], self.sampling_ratio):
            return super().forward(x, boxes, image_shapes)
        scales = [_stride_scale(m, image_shapes) for m in maps]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(maps) == 1:
            return roi_align(maps[0], rois, self.output_size, scales[0], self.sampling_ratio)
        levels = self._levels(boxes, scales)
        result = maps[0].new_zeros((len(rois), maps[0].shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(maps, scales)):
            index = torch.where(levels == level)[0]
            result[index] = roi_align(feature, rois[index], self.output_size, scale,
                                      self.sampling_ratio).to(result.dtype)
        return result

    def _levels(self, boxes: list[Tensor], scales: list[float]) -> Tensor:
        """Each box's map: floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6),
        clamped to the maps given (FPN, eq. 1), computed as torchvision's LevelMapper does."""
        low, high = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
        side = torch.sqrt(torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes]))
        level = torch.floor(self.canonical_level + torch.log2(side / self.canonical_scale)
                            + torch.tensor(1e-6, dtype=side.dtype))
        return torch.clamp(level, min=low, max=high).to(torch.int64) - low


def _stride_scale(feature: Tensor, image_shapes: list[tuple[int, int]]) -> float:
    """1 / the map's stride, a power of two, from the batch's largest image height (torchvision's rule)."""
    height = max(shape[0] for shape in image_shapes)
    return 2.0 ** float(torch.tensor(float(feature.shape[-2]) / float(height)).log2().round())
