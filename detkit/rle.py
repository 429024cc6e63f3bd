"""COCO run-length encoding of binary masks (pycocotools' format), the one
encoder behind the Shapes set's annotations, the evaluator's results and
inference's JSON."""
from __future__ import annotations

from typing import Any, Mapping, Union

import numpy as np
import torch


def encode_masks(masks: Union[torch.Tensor, np.ndarray]) -> list[dict[str, Any]]:
    """One JSON-ready COCO RLE ({"size": [H, W], "counts": str}) per mask.

    masks: Tensor or ndarray [N, H, W] or [N, 1, H, W]; floating-point values
    are probabilities (foreground above 0.5), other dtypes are foreground
    where non-zero.
    """
    from pycocotools import mask as mask_utils

    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W] or [N, 1, H, W], got shape {tuple(masks.shape)}")
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu()
        binary = (masks > 0.5 if masks.is_floating_point() else masks != 0).numpy()
    else:
        binary = masks > 0.5 if np.issubdtype(masks.dtype, np.floating) else masks != 0
    return [rle_to_json(mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))) for m in binary]


def rle_to_json(rle: Mapping) -> Mapping:
    """`rle` with its byte-string counts (as pycocotools makes them) decoded to
    text for JSON; other segmentations unchanged."""
    if isinstance(rle, Mapping) and isinstance(rle.get("counts"), bytes):
        return {**rle, "counts": rle["counts"].decode("ascii")}
    return rle
