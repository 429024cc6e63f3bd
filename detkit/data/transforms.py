"""Detection transforms on numpy images (HxWx3 uint8 RGB) with OpenCV.

Each transform is called as `image, target = t(image, target)` and keeps the
target's boxes, labels, masks and every other per-object array in step; boxes
that a crop or flip makes degenerate are dropped with their labels and masks.
A target's "proposals" (a dataset's region proposals for Fast R-CNN,
float32 [P, 4]) move with the image as its boxes do.
Randomness comes from torch's generator, which DataLoader seeds per worker and
torch.manual_seed makes reproducible.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .targets import NumpyTarget

# Target entries with one row per object; everything else (image_id, ...) is left alone.
PER_OBJECT = ("boxes", "labels", "iscrowd", "difficult", "masks", "scores")
# Box sets that move with the image: the objects' boxes and, for Fast R-CNN, the
# dataset's region proposals (Tensor[P, 4], not per object: a crop drops its own).
BOX_SETS = ("boxes", "proposals")


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _chance(p: float) -> bool:
    return float(torch.rand(())) < p


def _keep(target: NumpyTarget, keep: np.ndarray) -> NumpyTarget:
    """The target restricted to the objects where `keep` is true."""
    out = dict(target)
    for key in PER_OBJECT:
        if key in out:
            out[key] = out[key][keep]
    return out


def _drop_degenerate(target: NumpyTarget) -> NumpyTarget:
    boxes = target["boxes"]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return target if keep.all() else _keep(target, keep)


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target: NumpyTarget):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ConvertColor:
    """cv2 colour conversion, e.g. ConvertColor("RGB", "BGR") for Caffe-style weights."""

    def __init__(self, src: str = "RGB", dst: str = "BGR"):
        code = getattr(cv2, f"COLOR_{src}2{dst}", None)
        if code is None:
            raise ValueError(f"OpenCV has no conversion from {src} to {dst}")
        self.code = code

    def __call__(self, image, target):
        return cv2.cvtColor(image, self.code), target


def _box_sets(target: NumpyTarget) -> list[str]:
    return [key for key in BOX_SETS if key in target]


def _resize_target(target: NumpyTarget, h: int, w: int, height: int, width: int, masks: bool = True) -> NumpyTarget:
    """Boxes (and masks) of an h x w image resized to height x width."""
    out = dict(target)
    scale = np.array([width / w, height / h, width / w, height / h], dtype=np.float32)
    for key in _box_sets(target):
        boxes = target[key] * scale
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)  # float32 rounding can overshoot the border
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        out[key] = boxes
    if masks and "masks" in target:
        out["masks"] = (np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
                                  for m in target["masks"]]) if len(target["masks"])
                        else np.zeros((0, height, width), dtype=np.uint8))
    return out


def _resize(image, target: NumpyTarget, height: int, width: int):
    h, w = image.shape[:2]
    return (cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR),
            _resize_target(target, h, w, height, width))


class Resize:
    """Resizes to a fixed size: int (square) or (height, width)."""

    def __init__(self, size: Union[int, tuple[int, int]]):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, image, target):
        return _resize(image, target, *self.size)


class ResizeShortestEdge:
    """Scales the shorter side to min_size (one drawn at random from a
    sequence), unless that makes the longer side exceed max_size
    (detectron2's and torchvision's R-CNN resize)."""

    def __init__(self, min_size: Union[int, Sequence[int]], max_size: int):
        self.min_sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        self.max_size = max_size

    def __call__(self, image, target):
        h, w = image.shape[:2]
        short = self.min_sizes[int(torch.randint(len(self.min_sizes), ()))] if len(self.min_sizes) > 1 \
            else self.min_sizes[0]
        scale = min(short / min(h, w), self.max_size / max(h, w))
        return _resize(image, target, int(round(h * scale)), int(round(w * scale)))


def _flip_target(target: NumpyTarget, extent: int, masks: bool = True, vertical: bool = False) -> NumpyTarget:
    """Mirrors boxes (and masks) across the image's width, or its height with
    vertical=True; `extent` is that width or height."""
    out = dict(target)
    cols = [1, 3] if vertical else [0, 2]
    for key in _box_sets(target):
        boxes = target[key].copy()
        boxes[:, cols] = extent - target[key][:, cols[::-1]]
        out[key] = boxes
    if masks and "masks" in target:
        out["masks"] = (target["masks"][:, ::-1, :] if vertical else target["masks"][:, :, ::-1]).copy()
    return out


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def sample(self) -> bool:
        return _chance(self.p)

    def __call__(self, image, target):
        if not self.sample():
            return image, target
        return cv2.flip(image, 1), _flip_target(target, image.shape[1])


class RandomVerticalFlip:
    """Upside-down with probability p: for top-down or synthetic imagery,
    where an upside-down scene is still a plausible one."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        if not _chance(self.p):
            return image, target
        return cv2.flip(image, 0), _flip_target(target, image.shape[0], vertical=True)


class PhotometricDistort:
    """Random brightness, contrast, saturation and hue, each with probability
    p, contrast before or after the colour changes, then a random channel
    permutation (the SSD paper's distortion, torchvision's
    RandomPhotometricDistort ranges). uint8 in, uint8 out, via lookup tables."""

    def __init__(self, brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.05, 0.05),
                 p: float = 0.5):
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p
        self._levels = np.arange(256, dtype=np.float32)

    def _lut(self, factor: float, offset: float = 0.0) -> np.ndarray:
        return np.clip(self._levels * factor + offset, 0, 255).astype(np.uint8)

    def _contrast(self, image):
        factor = _uniform(*self.contrast)
        mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean())
        return cv2.LUT(image, self._lut(factor, (1 - factor) * mean))

    def __call__(self, image, target):
        if _chance(self.p):
            image = cv2.LUT(image, self._lut(_uniform(*self.brightness)))
        contrast_first = _chance(0.5)
        if contrast_first and _chance(self.p):
            image = self._contrast(image)
        change_saturation, change_hue = _chance(self.p), _chance(self.p)
        if change_saturation or change_hue:
            # Per-channel LUTs on split planes: several times cheaper than numpy arithmetic.
            h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))  # H in [0, 180)
            if change_saturation:
                s = cv2.LUT(s, self._lut(_uniform(*self.saturation)))
            if change_hue:
                shift = int(round(_uniform(*self.hue) * 180))
                h = cv2.LUT(h, ((np.arange(256) + shift) % 180).astype(np.uint8))
            image = cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)
        if not contrast_first and _chance(self.p):
            image = self._contrast(image)
        if _chance(self.p):
            channels = cv2.split(image)
            image = cv2.merge([channels[i] for i in torch.randperm(3).tolist()])
        return image, target


def _expand_target(target: NumpyTarget, top: int, left: int, new_h: int, new_w: int, masks: bool = True) -> NumpyTarget:
    out = dict(target)
    for key in _box_sets(target):
        out[key] = target[key] + np.array([left, top, left, top], dtype=np.float32)
    if masks and "masks" in target:
        h, w = target["masks"].shape[1:]
        grown = np.zeros((len(target["masks"]), new_h, new_w), dtype=np.uint8)
        grown[:, top:top + h, left:left + w] = target["masks"]
        out["masks"] = grown
    return out


class Expand:
    """Zoom out: places the image at a random spot of a canvas up to
    max_ratio times larger, filled with `fill` (the SSD paper's expansion)."""

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[int] = (124, 116, 104), p: float = 0.5):
        self.max_ratio, self.fill, self.p = max_ratio, np.asarray(fill, dtype=np.uint8), p

    def sample(self, h: int, w: int) -> Optional[tuple[int, int, int, int]]:
        """(canvas height, canvas width, top, left), or None for no expansion."""
        if not _chance(self.p):
            return None
        ratio = _uniform(1.0, self.max_ratio)
        new_h, new_w = int(h * ratio), int(w * ratio)
        return new_h, new_w, int(_uniform(0, new_h - h)), int(_uniform(0, new_w - w))

    def __call__(self, image, target):
        h, w, c = image.shape
        params = self.sample(h, w)
        if params is None:
            return image, target
        new_h, new_w, top, left = params
        canvas = np.empty((new_h, new_w, c), dtype=image.dtype)
        canvas[:] = self.fill[:c]
        canvas[top:top + h, left:left + w] = image
        return canvas, _expand_target(target, top, left, new_h, new_w)


def _iou_with(crop: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(crop[:2], boxes[:, :2])
    rb = np.minimum(crop[2:], boxes[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((crop[2] - crop[0]) * (crop[3] - crop[1]) + area - inter)


class MinIoURandomCrop:
    """The SSD paper's patch sampler: pick a minimum IoU from min_ious (or
    keep the whole image), then try up to `trials` random patches of
    min_scale..1 of each side with aspect ratio in [0.5, 2]; accept one whose
    IoU with every object reaches the minimum and that contains at least one
    object centre. Objects whose centre lies outside are dropped; the rest are
    clipped to the patch."""

    def __init__(self, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), min_scale: float = 0.3,
                 trials: int = 50):
        self.options = (None,) + tuple(min_ious) + (0.0,)  # None: keep the image as it is
        self.min_scale, self.trials = min_scale, trials

    def sample(self, boxes: np.ndarray, h: int, w: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(crop [x1, y1, x2, y2] ints, objects kept), or None to keep the whole image."""
        if len(boxes) == 0:
            return None
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        while True:
            min_iou = self.options[int(torch.randint(len(self.options), ()))]
            if min_iou is None:
                return None
            for _ in range(self.trials):
                cw, ch = _uniform(self.min_scale, 1.0) * w, _uniform(self.min_scale, 1.0) * h
                if not 0.5 <= ch / cw <= 2.0:
                    continue
                left, top = _uniform(0, w - cw), _uniform(0, h - ch)
                crop = np.array([int(left), int(top), int(left + cw), int(top + ch)], dtype=np.float32)
                if crop[2] <= crop[0] or crop[3] <= crop[1]:
                    continue
                if _iou_with(crop, boxes).min() < min_iou:
                    continue
                inside = ((centres[:, 0] > crop[0]) & (centres[:, 1] > crop[1]) &
                          (centres[:, 0] < crop[2]) & (centres[:, 1] < crop[3]))
                if inside.any():
                    return crop.astype(int), inside

    def __call__(self, image, target):
        params = self.sample(target["boxes"], *image.shape[:2])
        if params is None:
            return image, target
        return self._crop(image, target, *params)

    @staticmethod
    def _crop(image, target: NumpyTarget, crop: np.ndarray, inside: np.ndarray):
        x1, y1, x2, y2 = (int(v) for v in crop)
        return np.ascontiguousarray(image[y1:y2, x1:x2]), _crop_target(target, crop, inside)


def _crop_target(target: NumpyTarget, crop: np.ndarray, inside: np.ndarray, masks: bool = True) -> NumpyTarget:
    x1, y1, x2, y2 = (int(v) for v in crop)
    out = _keep(target, inside)
    for key in _box_sets(out):
        boxes = out[key].copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(x1, x2) - x1
        boxes[:, 1::2] = boxes[:, 1::2].clip(y1, y2) - y1
        out[key] = boxes
    if "proposals" in out:  # proposals outside the crop are gone; the objects' go with _drop_degenerate
        proposals = out["proposals"]
        out["proposals"] = proposals[(proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1])]
    if masks and "masks" in out:
        out["masks"] = np.ascontiguousarray(out["masks"][:, y1:y2, x1:x2])
    return _drop_degenerate(out)


class ExpandCropFlipResize:
    """Expand -> MinIoURandomCrop -> RandomHorizontalFlip -> Resize(size) in
    one cv2.warpAffine: the same random draws and the same boxes as the four
    transforms in a row, but the expanded canvas (up to 16x the image) is
    never built; the output is sampled straight from the input, with `fill`
    outside it."""

    def __init__(self, size: Union[int, tuple[int, int]] = 300, expand: Optional[Expand] = None,
                 crop: Optional[MinIoURandomCrop] = None, flip: Optional[RandomHorizontalFlip] = None):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.expand = expand or Expand()
        self.crop = crop or MinIoURandomCrop()
        self.flip = flip or RandomHorizontalFlip()

    def __call__(self, image, target):
        h, w = image.shape[:2]
        params = self.expand.sample(h, w)
        canvas_h, canvas_w, top, left = params if params is not None else (h, w, 0, 0)
        target = _expand_target(target, top, left, canvas_h, canvas_w, masks=False)
        crop = self.crop.sample(target["boxes"], canvas_h, canvas_w)
        window = np.array([0, 0, canvas_w, canvas_h]) if crop is None else crop[0]
        if crop is not None:
            target = _crop_target(target, *crop, masks=False)
        flip = self.flip.sample()
        crop_w, crop_h = int(window[2] - window[0]), int(window[3] - window[1])
        if flip:
            target = _flip_target(target, crop_w, masks=False)
        out_h, out_w = self.size
        target = _resize_target(target, crop_h, crop_w, out_h, out_w, masks=False)
        # Output pixel (u, v) reads input pixel M @ (u, v, 1): cv2.resize's centre
        # alignment (src = (dst + 0.5) * scale - 0.5), mirrored when flipped.
        sx, sy = crop_w / out_w, crop_h / out_h
        x0 = window[0] - left + 0.5 * sx - 0.5
        y0 = window[1] - top + 0.5 * sy - 0.5
        if flip:
            m = np.array([[-sx, 0, x0 + crop_w - sx], [0, sy, y0]])
        else:
            m = np.array([[sx, 0, x0], [0, sy, y0]])
        fill = tuple(int(v) for v in self.expand.fill[: image.shape[2]])
        size = (out_w, out_h)
        out_image = cv2.warpAffine(image, m, size, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        if "masks" in target:  # still the input's masks, of the objects kept: warp them the same way
            masks = target["masks"]
            target["masks"] = (np.stack([cv2.warpAffine(mask, m, size, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST,
                                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                                         for mask in masks]) if len(masks)
                               else np.zeros((0, out_h, out_w), dtype=np.uint8))
        return out_image, target


class Normalize:
    """(image / 255 - mean) / std, as float32; mean and std per channel in [0, 1] units."""

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        self.mean = np.asarray(mean, dtype=np.float32) * 255
        self.inv_std = 1 / (np.asarray(std, dtype=np.float32) * 255)

    def __call__(self, image, target):
        return (image.astype(np.float32) - self.mean) * self.inv_std, target


class ToTensor:
    """Image -> float32 Tensor[3, H, W] (uint8 scaled to [0, 1]); target arrays -> tensors."""

    def __call__(self, image, target):
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        tensor = tensor.float().div_(255) if tensor.dtype == torch.uint8 else tensor.float()
        out = {key: torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
               for key, value in target.items()}
        return tensor, out


def ssd_train(size: int = 300, fill: Sequence[int] = (124, 116, 104)) -> Compose:
    """The SSD paper's training augmentation (photometric distortion, expand,
    min-IoU crop, flip, resize; the geometric steps fused into one warp),
    ending in a size x size tensor in [0, 1]."""
    return Compose([PhotometricDistort(), ExpandCropFlipResize(size, expand=Expand(fill=fill)), ToTensor()])


def ssd_eval(size: int = 300) -> Compose:
    return Compose([Resize(size), ToTensor()])


def rcnn_train(min_size: Union[int, Sequence[int]] = 800, max_size: int = 1333) -> Compose:
    return Compose([ResizeShortestEdge(min_size, max_size), RandomHorizontalFlip(), ToTensor()])


def rcnn_eval(min_size: int = 800, max_size: int = 1333) -> Compose:
    return Compose([ResizeShortestEdge(min_size, max_size), ToTensor()])
