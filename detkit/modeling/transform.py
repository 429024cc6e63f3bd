"""Model-side input handling: check, normalise, resize and batch images;
map detections back to the original image sizes. Numerically the same as
torchvision's GeneralizedRCNNTransform, so torchvision checkpoints give the
same outputs."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from .targets import TensorTarget


def check_images(images: Sequence[Tensor]) -> None:
    """Images: a list of float Tensor[3, H, W] in [0, 1], finite."""
    if isinstance(images, Tensor) and images.dim() == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError("images must be a non-empty list of Tensor[3, H, W]")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(f"images[{i}] must be a Tensor[3, H, W], got {getattr(image, 'shape', type(image))}")
        if image.shape[0] != 3:
            raise ValueError(f"images[{i}] has {image.shape[0]} channels; detkit models take RGB Tensor[3, H, W] "
                             "(convert grayscale with image.expand(3, -1, -1), drop alpha with image[:3])")
        if not image.is_floating_point():
            raise TypeError(f"images[{i}] must be float in [0, 1], got {image.dtype}")
        # a NaN or inf makes the sum non-finite; the sum is ~30x cheaper than isfinite().all() on a
        # large image, which then only confirms (finite values whose sum overflows pass)
        if not bool(torch.isfinite(image.sum())) and not bool(torch.isfinite(image).all()):
            raise ValueError(f"images[{i}] contains NaN or inf")


def check_targets(targets: Sequence[TensorTarget], num_images: int, num_classes: int, masks: bool = False,
                  images: Optional[Sequence[Tensor]] = None) -> None:
    """Targets: one dict per image with boxes Tensor[N, 4] (x2 > x1, y2 > y1)
    and int64 labels in 1..num_classes-1; with masks, "masks" [N, H, W] of the
    image's size."""
    if targets is None or len(targets) != num_images:
        raise ValueError(f"training needs one target per image: got {0 if targets is None else len(targets)} "
                         f"targets for {num_images} images")
    for i, target in enumerate(targets):
        boxes, labels = target.get("boxes"), target.get("labels")
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be a Tensor[N, 4], got {getattr(boxes, 'shape', boxes)}")
        if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],):
            raise ValueError(f"targets[{i}]['labels'] must be a Tensor[{boxes.shape[0]}]")
        if boxes.numel() and not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"targets[{i}]['boxes'] contains NaN or inf")
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(1)
        if bool(degenerate.any()):
            j = int(degenerate.nonzero()[0, 0])
            raise ValueError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has no width or height")
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(f"targets[{i}]['labels'] must be in 1..{num_classes - 1} (0 is background), got "
                             f"{labels.tolist()}")
        if masks:
            m = target.get("masks")
            expected = (boxes.shape[0], *images[i].shape[-2:])
            if not isinstance(m, Tensor) or tuple(m.shape) != expected:
                raise ValueError(f"targets[{i}]['masks'] must be a Tensor{list(expected)} (one mask per box, "
                                 f"the image's size), got {getattr(m, 'shape', m)}")


class DetectionTransform(nn.Module):
    """Normalises, resizes (bilinear) and batches images; scales target boxes.

    Args:
        min_size, max_size: shorter side target and cap on the longer side; a
            tuple of min sizes picks one per image in training (multi-scale),
            the last at inference. The pick uses torch's generator exactly as
            torchvision does, so seeded training runs match it draw for draw.
        image_mean, image_std: per channel, in the units of the [0, 1] input.
        size_divisible: batch padding multiple.
        fixed_size: (width, height) to resize every image to (SSD).
    """

    def __init__(self, min_size: int, max_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                 size_divisible: int = 32, fixed_size: Optional[tuple[int, int]] = None):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.size_divisible, self.fixed_size = size_divisible, fixed_size

    def forward(self, images: list[Tensor], targets: Optional[list[TensorTarget]] = None):
        targets = [dict(t) for t in targets] if targets is not None else None
        resized = []
        for i, image in enumerate(images):
            image = self.normalize(image)
            h, w = image.shape[-2:]
            image = self.resize(image)
            if targets is not None:
                targets[i]["boxes"] = resize_boxes(targets[i]["boxes"], (h, w), image.shape[-2:])
                if "masks" in targets[i]:  # nearest, as torchvision
                    masks = targets[i]["masks"]
                    targets[i]["masks"] = F.interpolate(masks[:, None].float(), size=image.shape[-2:])[:, 0].byte() \
                        if masks.numel() else masks.new_zeros((0, *image.shape[-2:]))
            resized.append(image)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
        return ImageList(self.batch(resized), sizes), targets

    def normalize(self, image: Tensor) -> Tensor:
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def _min_size(self) -> int:
        if not self.training:
            return self.min_size[-1]
        return self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]

    def resize(self, image: Tensor) -> Tensor:
        min_size = self._min_size()  # drawn even for a fixed size: the RNG stream stays torchvision's
        if self.fixed_size is not None:
            size, scale = [self.fixed_size[1], self.fixed_size[0]], None
        else:
            h, w = image.shape[-2:]
            size, scale = None, min(min_size / min(h, w), self.max_size / max(h, w))
        return F.interpolate(image[None], size=size, scale_factor=scale, mode="bilinear",
                             recompute_scale_factor=True if scale is not None else None, align_corners=False)[0]

    def batch(self, images: list[Tensor]) -> Tensor:
        c = images[0].shape[0]
        h = max(img.shape[1] for img in images)
        w = max(img.shape[2] for img in images)
        stride = float(self.size_divisible)
        h, w = int(math.ceil(h / stride) * stride), int(math.ceil(w / stride) * stride)
        batched = images[0].new_full((len(images), c, h, w), 0)
        for i, img in enumerate(images):
            batched[i, :, : img.shape[1], : img.shape[2]].copy_(img)
        return batched

    def postprocess(self, detections: list[TensorTarget], image_sizes, original_sizes) -> list[TensorTarget]:
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det["boxes"] = resize_boxes(det["boxes"], size, original)
        return detections


def resize_boxes(boxes: Tensor, original_size, new_size) -> Tensor:
    """Scales xyxy boxes from original_size (h, w) to new_size (h, w), in float32 ratios as torchvision.
    A size may be a tuple or an int Tensor[2] (a graph value when traced: runtimes.self_contained)."""
    ratio_h, ratio_w = (torch.as_tensor(new_size, device=boxes.device).to(torch.float32) /
                        torch.as_tensor(original_size, device=boxes.device).to(torch.float32)).unbind(0)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


class ChannelsLast:
    """Mixin for detectors: with `channels_last` set, CPU inputs and the
    modules listed by `_conv_modules()` run in channels-last memory format
    (oneDNN's faster convolution layout; results change by rounding only).
    Weights are converted once, on the first call."""

    channels_last: bool = False

    def _conv_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def _layout(self, x: Tensor) -> Tensor:
        if not (self.channels_last and x.device.type == "cpu"):
            return x
        self.convert_weights_layout()
        return x.contiguous(memory_format=torch.channels_last)

    def convert_weights_layout(self) -> None:
        """Puts the convolution weights in channels-last now rather than on the
        first call; DistributedDataParallel must see the final layout."""
        if self.channels_last and not getattr(self, "_weights_channels_last", False):
            for module in self._conv_modules():
                module.to(memory_format=torch.channels_last)
            self._weights_channels_last = True
