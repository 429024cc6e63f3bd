"""Synthetic box sets for tests and benchmarks: reproducible for a seed."""
from __future__ import annotations

import torch
from torch import Tensor


def random_boxes(n: int, size: float = 1000.0, max_side: float = 200.0, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Tensor[n, 4] (x1, y1, x2, y2): uniform corners, sides in [0, max_side)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * max_side
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def clustered_boxes(n: int, centers: int = 250, size: float = 1000.0, seed: int = 0,
                    dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Detector-like output: n boxes jittered around `centers` objects.

    Returns boxes: Tensor[n, 4] (x1, y1, x2, y2) and scores: Tensor[n], a
    random permutation of distinct values in (0, 1] (no ties, so any two
    correct NMS implementations keep the same indices in the same order).
    """
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(centers, 2, generator=g, dtype=torch.float64) * size
    side = 16 + torch.rand(centers, 2, generator=g, dtype=torch.float64) * 200
    obj = torch.randint(0, centers, (n,), generator=g)
    ctr = centre[obj] + torch.randn(n, 2, generator=g, dtype=torch.float64) * side[obj] * 0.1
    wh = side[obj] * (1 + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(min=0.5)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1).to(dtype)
    scores = ((torch.randperm(n, generator=g) + 1).to(torch.float64) / n).to(dtype)
    return boxes, scores
