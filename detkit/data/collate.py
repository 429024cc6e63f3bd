"""Batching (image, target) pairs for a DataLoader."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def collate(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Images as a list (sizes may differ: the R-CNN family batches them
    itself), targets as a list."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def collate_stacked(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
    """Images stacked into Tensor[B, C, H, W] (SSD's fixed-size input)."""
    images, targets = collate(batch)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"collate_stacked needs images of one size, got {sorted(shapes)}; "
                         "resize them (e.g. transforms.Resize) or use collate")
    return torch.stack(images), targets
