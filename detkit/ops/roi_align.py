"""RoIAlign compiled for the CPU, forward and backward, equal to
torchvision's bit for bit (on x86 builds, which do not fuse multiply-adds).

torchvision's CPU RoIAlign runs on one thread, a channel at a time: its
backward took 39% of a small Mask R-CNN training step on 2 cores (the
issue-12 profile), its forward 12-15% of a Faster R-CNN R50-FPN inference
(1,000 RoIs; the issue-14 profile). Here every sample's corners and bilinear
weights are computed once, in torchvision's arithmetic, then the forward
gathers whole channel rows of a channels-last copy of the map (a view when
the map is already channels-last) and the backward scatters into one, on
torch's thread count, each element summing its terms in torchvision's order.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Union

import numpy as np
import torch
import torchvision
from torch import Tensor
from torchvision.ops._utils import convert_boxes_to_roi_format

from . import _ext
from ._checks import HALF_DTYPES, upcast

_ext.register("roi_align", "numba")
_ext.register("roi_align (backward)", "numba")

# torchvision's roi_align, taken now: a user may put detkit's in its place
# (torchvision.ops.roi_align = detkit.ops.roi_align, also in torchvision.ops.poolers),
# and a fallback looking it up at call time would then call itself.
_torchvision_roi_align = torchvision.ops.roi_align


def roi_align(input: Tensor, boxes: Union[Tensor, list[Tensor]], output_size: Union[int, tuple[int, int]],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """torchvision.ops.roi_align, same arguments and outputs.

    input: Tensor[N, C, H, W]; boxes: Tensor[K, 5] (image index, x1, y1, x2, y2)
    or a list of Tensor[K_i, 4] per image. Returns Tensor[K, C, PH, PW] of
    input's dtype. The compiled kernels serve float CPU inputs with a fixed
    sampling_ratio > 0 (the R-CNNs' 2); everything else (adaptive sampling,
    other devices, tracing) is torchvision's. float16/bfloat16 input or rois
    are computed in float32, as under torchvision's autocast (its CPU kernel
    refuses bfloat16 outside autocast, and rounds float16 at every step)."""
    rois = boxes if isinstance(boxes, Tensor) else convert_boxes_to_roi_format(boxes)
    if isinstance(input, Tensor) and isinstance(rois, Tensor) and (
            input.dtype in HALF_DTYPES or rois.dtype in HALF_DTYPES):
        out = roi_align(upcast(input), upcast(rois), output_size, spatial_scale, sampling_ratio, aligned)
        return out.to(input.dtype)
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if not (compiled_serves(input, sampling_ratio) and rois.dtype == input.dtype and rois.device.type == "cpu"):
        return _torchvision_roi_align(input, rois, size, spatial_scale, sampling_ratio, aligned)  # its checks too
    if input.requires_grad and torch.is_grad_enabled():
        return _RoIAlign.apply(input, rois, size, spatial_scale, sampling_ratio, aligned)
    return roi_align_forward(input, rois, size, spatial_scale, sampling_ratio, aligned)


def compiled_serves(input: Tensor, sampling_ratio: int) -> bool:
    """Whether the compiled kernels take this call (else torchvision's roi_align
    does); float16/bfloat16 input counts, as roi_align computes it in float32."""
    return (input.device.type == "cpu" and sampling_ratio > 0
            and input.dtype in (torch.float32, torch.float64) + HALF_DTYPES
            and _ext.numba_kernels is not None and not _ext._tracing())


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, size: tuple[int, int], spatial_scale: float,
                sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.samples = _samples(rois, tuple(input.shape), size, spatial_scale, sampling_ratio, aligned, input.dtype)
        ctx.setup = (tuple(input.shape), size, sampling_ratio)
        return roi_align_forward(input, rois, size, spatial_scale, sampling_ratio, aligned, ctx.samples)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        shape, size, grid = ctx.setup
        grad_input = roi_align_backward(grad_output, ctx.samples, shape, grid)
        return grad_input, None, None, None, None, None  # rois and the settings take no gradient


def roi_align_forward(input: Tensor, rois: Tensor, size: tuple[int, int], spatial_scale: float, grid: int,
                      aligned: bool, samples: Optional[tuple[np.ndarray, ...]] = None) -> Tensor:
    """torchvision's roi_align of float CPU `input` [N, C, H, W] with a fixed
    sampling ratio `grid` (rois of its dtype): Tensor[K, C, PH, PW],
    contiguous, no gradient. samples: _samples' result, when already made."""
    n, channels, height, width = input.shape
    if len(rois) == 0:  # an FPN level without boxes: no copy of its map
        return input.new_empty((0, channels, *size))
    if samples is None:
        samples = _samples(rois, tuple(input.shape), size, spatial_scale, grid, aligned, input.dtype)
    # channels-last rows: a view of a channels-last map, else one copy of it
    features = input.detach().permute(0, 2, 3, 1).reshape(n, height * width, channels).contiguous().numpy()
    out = np.empty((len(rois), channels, size[0] * size[1]), features.dtype)
    gather = functools.partial(_ext.numba_kernels.roi_align_gather, features, samples[0], samples[2], samples[3],
                               features.dtype.type(grid * grid), out)
    _split(gather, len(rois))
    return torch.from_numpy(out).view(len(rois), channels, *size)


def roi_align_backward(grad_output: Tensor, samples: tuple[np.ndarray, ...],
                       input_shape: tuple[int, int, int, int], grid: int) -> Tensor:
    """The gradient of roi_align's input: Tensor[N, C, H, W] (channels-last
    strides) from grad_output [K, C, PH, PW] and the forward's _samples."""
    n, channels, height, width = input_shape
    image, out_bin, corners, weights = samples
    per_bin = grad_output.detach().permute(0, 2, 3, 1).reshape(-1, channels).contiguous().numpy()
    grad_input = np.zeros((n, height * width, channels), per_bin.dtype)  # channels-last: see roi_align_scatter
    scatter = functools.partial(_ext.numba_kernels.roi_align_scatter, per_bin, image, out_bin, corners, weights,
                                per_bin.dtype.type(grid * grid), grad_input)
    _split(scatter, channels)  # whole channels per thread: no two threads add to one element
    return torch.from_numpy(grad_input).view(n, height, width, channels).permute(0, 3, 1, 2)


def _samples(rois: Tensor, input_shape: tuple[int, int, int, int], size: tuple[int, int], spatial_scale: float,
             grid: int, aligned: bool, dtype: torch.dtype) -> tuple[np.ndarray, ...]:
    """roi_align_samples of `rois` on maps of `input_shape`, in `dtype`'s arithmetic."""
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must be Tensor[K, 5] (image index, x1, y1, x2, y2), got {list(rois.shape)}")
    # the kernels take int(index), truncating as torchvision does: (-1, N) reads maps 0..N-1
    if len(rois) and not bool(((rois[:, 0] > -1) & (rois[:, 0] < input_shape[0])).all()):
        raise ValueError(f"roi_align: rois[:, 0] must be image indices in [0, {input_shape[0]}), got values in "
                         f"[{float(rois[:, 0].min()):g}, {float(rois[:, 0].max()):g}]")
    height, width = input_shape[2:]
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    values = np.arange(max(height, width, size[0], size[1], grid) + 1, dtype=numpy_dtype)
    rois_np = rois.detach().to(dtype).contiguous().numpy()
    return _ext.numba_kernels.roi_align_samples(rois_np, height, width, numpy_dtype(spatial_scale), size[0],
                                                size[1], grid, aligned, values)


def _split(kernel, count: int) -> None:
    """kernel(start, stop) over [0, count), split into contiguous ranges, one per
    thread of torch's setting (one thread per DDP rank stays one)."""
    threads = max(1, min(_ext.num_threads(), count))
    if threads == 1:
        kernel(0, count)
        return
    bounds = [count * i // threads for i in range(threads + 1)]
    list(_pool(threads).map(kernel, bounds[:-1], bounds[1:]))


@functools.lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    """Idle threads that sleep between calls. numba's own parallel loops (its
    OpenMP layer) keep their threads spinning after each call, which starved
    the other DDP rank on 2 cores: 9 instead of 65 images/s training a small
    Faster R-CNN as two ranks."""
    return ThreadPoolExecutor(threads, thread_name_prefix="detkit-roi-align")
