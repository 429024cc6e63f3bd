"""COCO run-length encoding of binary masks (pycocotools' format), the one
encoder behind the Shapes set's annotations, the evaluator's results and
inference's JSON; and the one check of a COCO segmentation before
pycocotools decodes it (datasets and the evaluator read the same files)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from .jsonio import short_repr


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


# The largest mask checked segmentations may have: OpenCV's limit on one decoded
# image (CV_IO_MAX_IMAGE_PIXELS), so no annotation of a readable image is larger.
MAX_MASK_PIXELS = 2**30


def segmentation_problem(segmentation: Any, height: Any, width: Any) -> Optional[str]:
    """Why pycocotools cannot safely be given a COCO `segmentation` of a
    height x width image, or None when it can.

    pycocotools' C code takes polygon coordinates and RLE sizes on faith: a
    coordinate of 1e12 crashes it, an RLE size of 10^5 x 10^5 allocates 10 GB.
    Accepted: polygons (lists of x, y coordinates within one image size of
    the image; a list of 4-value lists, which pycocotools reads as boxes) and
    RLEs of the image's size (counts a list adding up to height * width, or a
    compressed string, whose runs pycocotools >= 2.0.5 checks as it decodes).
    height and width must be positive integers, at most MAX_MASK_PIXELS
    together.
    """
    if not (type(height) is int and type(width) is int and height > 0 and width > 0
            and height * width <= MAX_MASK_PIXELS):
        return (f"its image needs positive integer height and width, at most {MAX_MASK_PIXELS} pixels "
                f"together, got {short_repr(height)} x {short_repr(width)}")
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation, height, width)
    if isinstance(segmentation, Mapping):
        return _rle_problem(segmentation, height, width)
    return f"segmentation must be polygons or an RLE, got {short_repr(segmentation)}"


def _polygons_problem(polygons: list, height: int, width: int) -> Optional[str]:
    reach = max(height, width)
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) % 2 or len(polygon) < 4:
            return f"a polygon must be a list of x, y coordinates, got {short_repr(polygon)}"
        if len(polygon) != len(polygons[0]) and 4 in (len(polygon), len(polygons[0])):
            return "polygons mix 4-value boxes with longer polygons"
        try:  # min, max and sum run in C; sum fails on anything but numbers and is NaN for a NaN
            low, high, total = min(polygon), max(polygon), sum(polygon)
            in_reach = -reach <= low and high <= 2 * reach and math.isfinite(total)
        except TypeError:
            return f"polygon coordinates must be numbers, got {short_repr(polygon)}"
        except OverflowError:  # a 400-digit integer added to a float
            in_reach = False
        if not in_reach:
            return f"polygon coordinates must be finite and within {reach} px of the image, got {short_repr(polygon)}"
    return None


def _rle_problem(rle: Mapping, height: int, width: int) -> Optional[str]:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)
            and size == [height, width]):
        return f"RLE size must be the image's [height, width] {[height, width]}, got {short_repr(size)}"
    if isinstance(counts, list):
        if not all(type(c) is int and c >= 0 for c in counts) or sum(counts) != height * width:
            return (f"RLE counts must be non-negative integers adding up to {height * width}, "
                    f"got {short_repr(counts)}")
    elif not isinstance(counts, (str, bytes)):  # bytes: as pycocotools' encode returns them
        return f"RLE counts must be a list or a string, got {short_repr(counts)}"
    return None
