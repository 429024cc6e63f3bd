"""Anchor generators, called as torchvision's are: `gen(image_list, feature_maps)`
returns one Tensor[A, 4] (x1, y1, x2, y2) per image.

- AnchorGenerator: RPN/FPN anchors (Faster R-CNN), per-level sizes x ratios.
- DefaultBoxGenerator: SSD default boxes (Liu et al., 2016).

Both give torchvision's anchors for the same arguments, are computed by a
numba kernel on the CPU, and are cached per (feature-map sizes, image size,
dtype, device): a detector sees the same few sizes over and over. Each image
gets its own copy of the cached tensor, as torchvision gives each its own
tensor, so an in-place edit by a caller cannot change later calls' anchors.
(torch has no read-only tensors. A copy takes about 7 us for SSD300's 8,732
boxes and 0.7 ms for the 243k FPN anchors of an 800x1216 image, against 9 ms
to generate those and seconds for the detector's forward pass.)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from . import _ext
from ._checks import as_numpy

_CACHE_SIZE = 16

for _op in ("AnchorGenerator", "DefaultBoxGenerator"):
    _ext.register(_op, "numba")


class _AnchorCache:
    """A small LRU of computed anchors keyed by everything they depend on."""

    def __init__(self, size: int = _CACHE_SIZE):
        self.size = size
        self.entries: "OrderedDict[tuple, Tensor]" = OrderedDict()

    def get(self, key: tuple, compute) -> Tensor:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        value = compute()
        self.entries[key] = value
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value


def _shapes(image_list, feature_maps: Sequence[Tensor]) -> tuple[tuple, tuple[int, int]]:
    if len(feature_maps) == 0:
        raise ValueError("feature_maps is empty")
    grid_sizes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in feature_maps)
    image_size = (int(image_list.tensors.shape[-2]), int(image_list.tensors.shape[-1]))
    for level, (gh, gw) in enumerate(grid_sizes):
        if gh <= 0 or gw <= 0:
            raise ValueError(f"feature_maps[{level}] has an empty grid {gh}x{gw}")
    return grid_sizes, image_size


class AnchorGenerator(nn.Module):
    """Anchors for a set of feature maps: at every cell of level l, one anchor
    per (size, aspect ratio) of sizes[l] x aspect_ratios[l], aspect = h / w.

    Args:
        sizes: per level, anchor sizes in pixels (sqrt of the anchor area).
        aspect_ratios: per level, height / width ratios.
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[int]] = ((128, 256, 512),),
        aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
    ):
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"sizes has {len(sizes)} levels but aspect_ratios has {len(aspect_ratios)}")
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(a) for a in aspect_ratios)
        self.cell_anchors = [self.generate_anchors(s, a) for s, a in zip(self.sizes, self.aspect_ratios)]
        self._cache = _AnchorCache()

    @staticmethod
    def generate_anchors(scales: Sequence[int], aspect_ratios: Sequence[float], dtype=torch.float32) -> Tensor:
        """Cell anchors: Tensor[len(ratios) * len(scales), 4], centred on 0 and rounded."""
        scales_t = torch.as_tensor(scales, dtype=dtype)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales_t[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales_t[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        grid_sizes, image_size = _shapes(image_list, feature_maps)
        if len(grid_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"got {len(grid_sizes)} feature maps but the generator has {len(self.cell_anchors)} levels of sizes"
            )
        strides = tuple((image_size[0] // gh, image_size[1] // gw) for gh, gw in grid_sizes)
        dtype, device = _anchor_dtype(feature_maps[0].dtype), feature_maps[0].device
        key = (grid_sizes, strides, dtype, device)
        anchors = self._cache.get(key, lambda: self._anchors(grid_sizes, strides, dtype, device))
        return [anchors.clone() for _ in range(len(image_list.image_sizes))]

    def _anchors(self, grid_sizes, strides, dtype, device) -> Tensor:
        levels = []
        for (gh, gw), (sh, sw), base in zip(grid_sizes, strides, self.cell_anchors):
            base = base.to(dtype)
            if _ext.compiled("numba", base) and device.type == "cpu":
                levels.append(torch.from_numpy(_ext.numba_kernels.grid_anchors(as_numpy(base), gh, gw, sh, sw)))
            else:
                levels.append(_grid_anchors_reference(base.to(device), gh, gw, sh, sw))
        return torch.cat(levels).to(device)


def _grid_anchors_reference(base: Tensor, gh: int, gw: int, sh: int, sw: int) -> Tensor:
    shifts_x = torch.arange(gw, dtype=torch.int64, device=base.device) * sw
    shifts_y = torch.arange(gh, dtype=torch.int64, device=base.device) * sh
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)


class DefaultBoxGenerator(nn.Module):
    """SSD default boxes. On level k with scale s_k: boxes of (s_k, s_k),
    (sqrt(s_k s_{k+1}),) * 2 and, per aspect ratio r, (s_k sqrt(r), s_k / sqrt(r))
    and its transpose, centred at ((i + 0.5) / f_k) of the image.

    Args:
        aspect_ratios: per level, the extra aspect ratios (e.g. [[2], [2, 3], ...]).
        min_ratio, max_ratio: the scale range when `scales` is not given.
        scales: per level scales (plus one extra); overrides min/max_ratio.
        steps: per level, the image stride that places the centres
            (f_k = image size / step); defaults to the feature-map size.
        clip: clamp the relative (w, h) to [0, 1].
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[int]],
        min_ratio: float = 0.15,
        max_ratio: float = 0.9,
        scales: Optional[Sequence[float]] = None,
        steps: Optional[Sequence[int]] = None,
        clip: bool = True,
    ):
        super().__init__()
        if steps is not None and len(aspect_ratios) != len(steps):
            raise ValueError(f"aspect_ratios has {len(aspect_ratios)} levels but steps has {len(steps)}")
        self.aspect_ratios = aspect_ratios
        self.steps = steps
        self.clip = clip
        levels = len(aspect_ratios)
        if scales is None:
            if levels > 1:
                span = max_ratio - min_ratio
                self.scales = [min_ratio + span * k / (levels - 1.0) for k in range(levels)] + [1.0]
            else:
                self.scales = [min_ratio, max_ratio]
        else:
            self.scales = list(scales)
        if len(self.scales) < levels + 1:
            raise ValueError(f"scales needs {levels + 1} values (one per level plus one), got {len(self.scales)}")
        self._wh_pairs = [self._wh_pairs_of(k) for k in range(levels)]
        self._cache = _AnchorCache()

    def _wh_pairs_of(self, k: int) -> Tensor:
        s_k = self.scales[k]
        s_prime = math.sqrt(self.scales[k] * self.scales[k + 1])
        pairs = [[s_k, s_k], [s_prime, s_prime]]
        for ratio in self.aspect_ratios[k]:
            root = math.sqrt(ratio)
            pairs.extend([[s_k * root, s_k / root], [s_k / root, s_k * root]])
        wh = torch.as_tensor(pairs, dtype=torch.float32)
        return wh.clamp(min=0, max=1) if self.clip else wh

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        grid_sizes, image_size = _shapes(image_list, feature_maps)
        if len(grid_sizes) != len(self._wh_pairs):
            raise ValueError(f"got {len(grid_sizes)} feature maps but the generator has {len(self._wh_pairs)} levels")
        dtype, device = _anchor_dtype(feature_maps[0].dtype), feature_maps[0].device
        key = (grid_sizes, image_size, dtype, device)
        boxes = self._cache.get(key, lambda: self._default_boxes(grid_sizes, image_size, dtype).to(device))
        return [boxes.clone() for _ in range(len(image_list.image_sizes))]

    def _centre_divisors(self, k: int, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, float]:
        if self.steps is not None:
            return image_size[1] / self.steps[k], image_size[0] / self.steps[k]
        return grid[1], grid[0]

    def _default_boxes(self, grid_sizes, image_size, dtype) -> Tensor:
        if not _ext.compiled("numba", self._wh_pairs[0]):
            return _default_boxes_reference(self, grid_sizes, image_size, dtype)
        total = sum(gh * gw * len(wh) for (gh, gw), wh in zip(grid_sizes, self._wh_pairs))
        out = torch.empty(total, 4, dtype=dtype)
        out_np = out.numpy()
        scalar = out_np.dtype.type
        start = 0
        for k, ((gh, gw), wh) in enumerate(zip(grid_sizes, self._wh_pairs)):
            x_f, y_f = self._centre_divisors(k, (gh, gw), image_size)
            start = _ext.numba_kernels.default_boxes(
                as_numpy(wh.to(dtype)), gh, gw, x_f, y_f,
                scalar(image_size[0]), scalar(image_size[1]), scalar(0.5), out_np, start,
            )
        return out


def _anchor_dtype(feature_dtype: torch.dtype) -> torch.dtype:
    """Anchors stay float32 under mixed precision: half precision would put
    pixel coordinates of large images 0.5 px or more off."""
    return torch.float32 if feature_dtype in (torch.float16, torch.bfloat16) else feature_dtype


def _default_boxes_reference(gen: DefaultBoxGenerator, grid_sizes, image_size, dtype) -> Tensor:
    levels = []
    for k, ((gh, gw), wh) in enumerate(zip(grid_sizes, gen._wh_pairs)):
        x_f, y_f = gen._centre_divisors(k, (gh, gw), image_size)
        shifts_x = ((torch.arange(0, gw) + 0.5) / x_f).to(dtype=dtype)
        shifts_y = ((torch.arange(0, gh) + 0.5) / y_f).to(dtype=dtype)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        centres = torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)) * len(wh), dim=-1).reshape(-1, 2)
        sizes = wh.to(dtype).repeat(gh * gw, 1)
        levels.append(torch.cat((centres, sizes), dim=1))
    cxcywh = torch.cat(levels)
    scale = torch.tensor([image_size[1], image_size[0]])
    return torch.cat(
        [(cxcywh[:, :2] - 0.5 * cxcywh[:, 2:]) * scale, (cxcywh[:, :2] + 0.5 * cxcywh[:, 2:]) * scale], -1
    )
