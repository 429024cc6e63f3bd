"""RoIAlign with a compiled backward on the CPU.

torchvision's CPU RoIAlign backward runs on one thread and recomputes every
sample's bilinear weights for each channel; in a small Mask R-CNN training
step on 2 cores it took 39% of the time (see the issue-12 profile). Here the
forward is torchvision's own (detections stay bit-identical), and the
backward computes each sample's corners and weights once, then scatters the
gradient channel by channel in parallel, in torchvision's order of addition.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Union

import numpy as np
import torch
from torch import Tensor

from . import _ext

_ext.register("roi_align (backward)", "numba")


def roi_align(input: Tensor, boxes: Union[Tensor, list[Tensor]], output_size: Union[int, tuple[int, int]],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """torchvision.ops.roi_align, same arguments and outputs.

    input: Tensor[N, C, H, W]; boxes: Tensor[K, 5] (image index, x1, y1, x2, y2)
    or a list of Tensor[K_i, 4] per image. Returns Tensor[K, C, PH, PW]. The
    compiled backward serves float CPU inputs that require grad with a fixed
    sampling_ratio > 0; everything else is torchvision's."""
    from torchvision.ops import roi_align as torchvision_roi_align
    from torchvision.ops._utils import convert_boxes_to_roi_format

    rois = boxes if isinstance(boxes, Tensor) else convert_boxes_to_roi_format(boxes)
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    fast = (input.requires_grad and input.device.type == "cpu" and sampling_ratio > 0
            and input.dtype in (torch.float32, torch.float64) and _ext.numba_kernels is not None
            and not _ext._tracing())
    if not fast:
        return torchvision_roi_align(input, rois, size, spatial_scale, sampling_ratio, aligned)
    return _RoIAlign.apply(input, rois, size, spatial_scale, sampling_ratio, aligned)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, size: tuple[int, int], spatial_scale: float,
                sampling_ratio: int, aligned: bool) -> Tensor:
        from torchvision.ops import roi_align as torchvision_roi_align

        ctx.save_for_backward(rois)
        ctx.setup = (tuple(input.shape), size, spatial_scale, sampling_ratio, aligned)
        return torchvision_roi_align(input, rois, size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (rois,) = ctx.saved_tensors
        shape, size, spatial_scale, grid, aligned = ctx.setup
        grad_input = roi_align_backward(grad_output, rois, shape, size, spatial_scale, grid, aligned)
        return grad_input, None, None, None, None, None  # rois and the settings take no gradient


def roi_align_backward(grad_output: Tensor, rois: Tensor, input_shape: tuple[int, int, int, int],
                       size: tuple[int, int], spatial_scale: float, grid: int, aligned: bool) -> Tensor:
    """The gradient of roi_align's input: Tensor[N, C, H, W] (channels-last
    strides) from grad_output [K, C, PH, PW]."""
    n, channels, height, width = input_shape
    dtype = grad_output.dtype
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    values = np.arange(max(height, width, size[0], size[1], grid) + 1, dtype=numpy_dtype)
    rois_np = rois.detach().to(dtype).contiguous().numpy()
    kernels = _ext.numba_kernels
    image, out_bin, corners, weights = kernels.roi_align_samples(
        rois_np, height, width, numpy_dtype(spatial_scale), size[0], size[1], grid, aligned, values)
    per_bin = grad_output.detach().permute(0, 2, 3, 1).reshape(-1, channels).contiguous().numpy()
    grad_input = np.zeros((n, height * width, channels), numpy_dtype)  # channels-last: see roi_align_scatter
    scatter = functools.partial(kernels.roi_align_scatter, per_bin, image, out_bin, corners, weights,
                                numpy_dtype(grid * grid), grad_input)
    threads = max(1, min(_ext.num_threads(), channels))  # torch's setting: one thread per DDP rank stays one
    if threads == 1:
        scatter(0, channels)
    else:  # whole channels per thread; the kernel releases the GIL
        bounds = [channels * i // threads for i in range(threads + 1)]
        list(_pool(threads).map(scatter, bounds[:-1], bounds[1:]))
    return torch.from_numpy(grad_input).view(n, height, width, channels).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    """Idle threads that sleep between calls. numba's own parallel loops (its
    OpenMP layer) keep their threads spinning after each call, which starved
    the other DDP rank on 2 cores: 9 instead of 65 images/s training a small
    Faster R-CNN as two ranks."""
    return ThreadPoolExecutor(threads, thread_name_prefix="detkit-roi-align")
