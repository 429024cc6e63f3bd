"""Selective search object proposals (Uijlings, van de Sande, Gevers and
Smeulders, "Selective Search for Object Recognition", IJCV 2013), the region
proposals of R-CNN and Fast R-CNN.

Each strategy segments the image with Felzenszwalb and Huttenlocher's graph
method (IJCV 2004) in one colour space at one k, then greedily merges the
most similar pair of neighbouring regions until one is left; every region of
that hierarchy is a proposal. The strategies' proposals are ranked as the
paper does: a region's value is its position in its hierarchy (1 for the
last merge, the whole image) times a random number in [0, 1); boxes are
sorted by value and duplicates dropped.

Faithful to the paper and its MATLAB code: sigma = 0.8, min_size = k, the
strategies of each mode, 25-bin colour histograms per channel, 8 x 10 texture
bins per channel, size and fill, size-weighted histogram updates, the
ranking. Where the paper leaves a choice open, the choices made here:
texture uses first-order Gaussian derivatives (sigma = 1) steered to 0, 45,
90 and 135 degrees, each split into its positive and negative half (the 8
orientations), each map divided by its largest value in the image and cut
into 10 bins; colour spaces are OpenCV's 8-bit conversions scaled to [0, 1]
(hue is not treated as circular); regions touching by a corner are
neighbours (the segmentation's 8-connected graph); equal similarities merge
the pair with the lower region indices first.

Sizes and cost: the image is used at the size it comes in (R-CNN resized
to about 500 pixels a side first; nothing here resizes). Time grows with the
pixels, a little faster: "fast" takes about 85 ms and yields about 300 boxes
on a 256 x 256 Shapes image, 0.55 s and 4,300 boxes on a 600 x 512 photo, on
one core of an idle server (benchmarks/selective_search.py); "quality" about
5x as long. Images are limited to MAX_PIXELS. The kernels live in
detkit.ops._ss_numba (compiled on first use, then cached); their plain-Python
references are in the tests.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

SIGMA = 0.8  # FH smoothing, the paper's value
MAX_PIXELS = 2**29 - 1  # edge ids (4 per pixel) are int32, to halve the sort's memory traffic
TEXTURE_SIGMA = 1.0  # the Gaussian derivatives', the paper's value
# Similarity combinations: which of colour, texture, size, fill they add.
SIMILARITIES = {
    "CTSF": (True, True, True, True),
    "TSF": (False, True, True, True),
    "F": (False, False, False, True),
    "S": (False, False, True, False),
}


@dataclass(frozen=True)
class Strategy:
    colour_spaces: tuple[str, ...]
    ks: tuple[int, ...]
    similarities: tuple[str, ...]


# The paper's three settings (section 5.3 and Table 5).
MODES = {
    "single": Strategy(("hsv",), (100,), ("CTSF",)),
    "fast": Strategy(("hsv", "lab"), (50, 100), ("CTSF", "TSF")),
    "quality": Strategy(("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), ("CTSF", "TSF", "F", "S")),
}


def _kernels() -> ModuleType:
    """The numba kernels, imported on first use so that importing detkit.ops
    never fails where numba is missing (there is no usable pure-Python path:
    the references in the tests take minutes per image)."""
    try:
        return importlib.import_module("detkit.ops._ss_numba")
    except ImportError as exc:
        raise RuntimeError(f"selective_search needs numba, which failed to import: {exc}") from None


def selective_search(image: np.ndarray, mode: str = "fast", seed: int = 0) -> Tensor:
    """Selective search region proposals.

    Args:
        image: np.ndarray[H, W, 3] uint8, RGB (as detkit.data.read_image returns).
        mode: "single" (HSV; k = 100; colour+texture+size+fill), "fast" (HSV
            and Lab; k = 50, 100; C+T+S+F and T+S+F: 8 strategies) or
            "quality" (HSV, Lab, rgI, H, I; k = 50, 100, 150, 300; C+T+S+F,
            T+S+F, F, S: 80 strategies), as in the paper.
        seed: seeds the random part of the ranking; equal seeds give equal output.

    Returns:
        float32 Tensor[N, 4] (x1, y1, x2, y2) in absolute pixels (a region of
        pixel columns 3..7 spans x1 = 3, x2 = 8), distinct boxes, best-ranked
        first. Every box lies within the image; the whole image is among them.
    """
    image = _check_image(image)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    strategy = MODES[mode]
    boxes, priority = [], []
    for space in strategy.colour_spaces:
        colour = colour_space(image, space)
        features = pixel_bins(colour)
        smoothed = _kernels().smooth(colour.astype(np.float64) * 255.0, gaussian_mask(SIGMA))
        for k in strategy.ks:
            labels, n = _kernels().segment(smoothed, float(k), k)
            regions = region_features(labels, n, features)
            for name in strategy.similarities:
                region_boxes = group(regions, SIMILARITIES[name], labels.size)
                boxes.append(region_boxes)
                priority.append(np.arange(len(region_boxes), 0, -1))  # 1 = the last merge
    return _rank(np.concatenate(boxes), np.concatenate(priority), seed)


def _check_image(image: np.ndarray) -> np.ndarray:
    if isinstance(image, Tensor):
        raise ValueError("image must be a numpy array [H, W, 3] uint8 RGB, got a torch.Tensor (use .numpy(), "
                         "with channels last)")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array [H, W, 3] uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (grayscale? convert it with cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))" if image.ndim == 2 else ""
        raise ValueError(f"image must have shape [H, W, 3] (RGB), got {image.shape}{hint}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    _check_pixels(image)
    return np.ascontiguousarray(image)


def _check_pixels(image: np.ndarray) -> None:
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"image has {image.shape[0]} x {image.shape[1]} pixels, more than {MAX_PIXELS}: "
                         "resize it (R-CNN used about 500 pixels a side)")


def colour_space(image: np.ndarray, space: str) -> np.ndarray:
    """image [H, W, 3] uint8 RGB -> float32 [H, W, C] in [0, 1]: "hsv" (hue
    over the full 0..255 range), "lab" (OpenCV's 8-bit L*a*b*), "rgi"
    (normalised r, g and intensity), "h" (hue) or "i" (intensity), C = 3 or 1."""
    import cv2  # here, not at the top: `import detkit` imports ops and stays free of OpenCV

    if space in ("hsv", "h"):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
        out = hsv if space == "hsv" else hsv[:, :, :1]
    elif space == "lab":
        out = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
    elif space == "i":
        out = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif space == "rgi":
        rgb = image.astype(np.float32)
        total = rgb.sum(axis=2, keepdims=True)
        rg = np.divide(rgb[:, :, :2], total, out=np.full_like(rgb[:, :, :2], 1 / 3), where=total > 0)
        return np.concatenate([rg, total / (3 * 255)], axis=2)
    else:
        raise ValueError(f"unknown colour space {space!r}")
    return out.astype(np.float32) / 255


def gaussian_mask(sigma: float) -> np.ndarray:
    """FH's make_fgauss: half a Gaussian of ceil(4 sigma) + 1 taps, normalised
    so that the full, mirrored filter sums to 1."""
    sigma = max(sigma, 0.01)
    mask = np.exp(-0.5 * (np.arange(math.ceil(sigma * 4) + 1) / sigma) ** 2)
    return mask / (2 * mask[1:].sum() + mask[0])


def felzenszwalb(image: np.ndarray, k: float, sigma: float = SIGMA, min_size: int = 20) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation ("Efficient Graph-Based
    Image Segmentation", IJCV 2004).

    Args:
        image: np.ndarray[H, W, C] of any real dtype, C >= 1 (values as
            given: k is on their scale, 0..255 in the paper).
        k: the threshold constant (larger k, larger regions).
        sigma: the Gaussian smoothing applied first.
        min_size: smaller regions are joined to a neighbour.

    Returns:
        int64 np.ndarray[H, W] of region labels 0..n-1, numbered in raster order.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or 0 in image.shape:
        raise ValueError(f"image must be a non-empty [H, W] or [H, W, C] array, got {getattr(image, 'shape', image)}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"image must be of a real dtype, got {image.dtype}")
    if not (math.isfinite(k) and k >= 0) or isinstance(min_size, bool) or not isinstance(min_size, int):
        raise ValueError(f"k must be finite and >= 0 and min_size an int, got k={k!r}, min_size={min_size!r}")
    if image.ndim == 2:
        image = image[:, :, None]
    _check_pixels(image)
    pixels = np.ascontiguousarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():
        raise ValueError("image has NaN or inf values")
    smoothed = _kernels().smooth(pixels, gaussian_mask(float(sigma)))
    return _kernels().segment(smoothed, float(k), int(min_size))[0]


def pixel_bins(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """colour [H, W, C] in [0, 1] -> each pixel's colour bin per channel
    (uint8 [H, W, C], 25 bins) and texture bin per channel and orientation
    (uint8 [H, W, 8C], 10 bins; see _ss_numba.texture_bins)."""
    import cv2

    colour_bins = np.minimum(colour * 25, 24).astype(np.uint8)
    radius = math.ceil(3 * TEXTURE_SIGMA)
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-0.5 * (x / TEXTURE_SIGMA) ** 2)
    g /= g.sum()
    dg = x * g  # correlating with it gives d/dx of the smoothed image, up to a scale the bins divide out
    gx = cv2.sepFilter2D(colour, cv2.CV_32F, dg, g, borderType=cv2.BORDER_REPLICATE).reshape(colour.shape)
    gy = cv2.sepFilter2D(colour, cv2.CV_32F, g, dg, borderType=cv2.BORDER_REPLICATE).reshape(colour.shape)
    return colour_bins, _kernels().texture_bins(gx, gy)


def region_features(labels: np.ndarray, n: int, bins: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """(sizes [n], boxes [n, 4] inclusive pixel corners, colour histograms
    [n, 25C], texture histograms [n, 80C], neighbour pairs [P, 2]) of the
    regions of labels [H, W] (0..n-1), from pixel_bins' bins."""
    return (*_kernels().region_stats(labels, n, *bins), _kernels().neighbour_pairs(labels, n))


def group(regions: tuple[np.ndarray, ...], use: tuple[bool, bool, bool, bool], image_size: int) -> np.ndarray:
    """The hierarchy of one segmentation's regions (region_features) under
    the similarity that `use` (colour, texture, size, fill) selects: int64
    [n + M, 4] boxes (inclusive pixel corners) of the n initial regions, then
    of each merge in order."""
    _, boxes = _kernels().hierarchical_grouping(*regions, np.array(use), float(image_size))
    return boxes


def _rank(boxes: np.ndarray, priority: np.ndarray, seed: int) -> Tensor:
    """The paper's ranking: by priority x U[0, 1), ascending; the first of equal boxes kept."""
    value = priority * np.random.default_rng(seed).random(len(priority))
    boxes = boxes[np.argsort(value, kind="stable")]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    boxes[:, 2:] += 1  # inclusive last pixel -> the box's far edge
    return torch.from_numpy(boxes.astype(np.float32))
