"""The dense part of each detector type: the submodules that the
"onnxruntime", "openvino", "int8" and "bf16" runtimes replace, the inputs
they take while the model runs (for export and calibration), and the copy
of a model with them replaced.

    SSD                          backbone, head
    FasterRCNN (and Mask R-CNN)  backbone, rpn.head
    ProposalRCNN, Fast R-CNN     backbone
    ProposalRCNN, R-CNN          roi_heads.box_roi_pool.body (the per-crop CNN)
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from ..modeling.proposal_rcnn import ImageAsFeatures, ProposalRCNN, WarpedRegionFeatures
from ..modeling.rcnn import FasterRCNN
from ..modeling.ssd import SSD
from .fold import fold_batchnorms

MAX_CAPTURED_BATCH = 16  # inputs kept per call when capturing (R-CNN's body sees hundreds of crops a call)


def dense_parts(model: nn.Module, runtime: str = "onnxruntime") -> list[str]:
    """The dotted paths of `model`'s dense submodules, which the runtimes replace."""
    if isinstance(model, SSD):
        return ["backbone", "head"]
    if isinstance(model, FasterRCNN):
        return ["backbone", "rpn.head"]
    if isinstance(model, ProposalRCNN):
        if not isinstance(model.backbone, ImageAsFeatures):
            return ["backbone"]
        if isinstance(model.roi_heads.box_roi_pool, WarpedRegionFeatures):
            return ["roi_heads.box_roi_pool.body"]
    raise ValueError(f"runtime {runtime!r} does not know the dense part of a {type(model).__name__} "
                     "(it knows SSD, FasterRCNN/Mask R-CNN and ProposalRCNN)")


def capture_example_inputs(model: nn.Module, paths: Iterable[str]) -> dict[str, list[tuple]]:
    """capture_inputs on one random 240x320 image (with two fixed proposals for
    a ProposalRCNN, whose selective search would take a while)."""
    image = torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(0))
    if not isinstance(model, ProposalRCNN):
        return capture_inputs(model, paths, [image])
    proposals = torch.tensor([[32.0, 24.0, 192.0, 168.0], [96.0, 48.0, 288.0, 216.0]])
    return capture_inputs(model, paths, [image], call=lambda images: model(images, proposals=[proposals]))


@torch.no_grad()
def capture_inputs(model: nn.Module, paths: Iterable[str], images: Sequence[Tensor],
                   call: Optional[Callable] = None) -> dict[str, list[tuple]]:
    """The positional inputs each submodule at `paths` takes while `model`
    (or `call`) runs on each image alone, as single-image inference does;
    cloned, at most MAX_CAPTURED_BATCH of a batch."""
    captured: dict[str, list[tuple]] = {path: [] for path in paths}

    def keep(t):
        return t[:MAX_CAPTURED_BATCH].detach().float().contiguous().clone() if isinstance(t, Tensor) else t

    def hook(path):
        return lambda module, args: captured[path].append(pytree.tree_map(keep, args))
    handles = [model.get_submodule(path).register_forward_pre_hook(hook(path)) for path in captured]
    try:
        for image in images:
            (call or model)([image])
    finally:
        for handle in handles:
            handle.remove()
    for path, inputs in captured.items():
        if not inputs:
            raise RuntimeError(f"{type(model).__name__}.{path} was not called on the images")
    return captured


def replace_dense_parts(model: nn.Module, runtime: str, replace: Callable[[nn.Module, list], nn.Module],
                        images: Optional[Sequence[Tensor]] = None) -> nn.Module:
    """A deep copy of `model` (eval mode, norms folded, parts in NCHW) with
    each dense part replaced by replace(part, the inputs it took while the copy
    ran on `images`, or on one example image when None)."""
    paths = dense_parts(model, runtime)
    twin = copy.deepcopy(model).eval()
    channels_last = getattr(twin, "channels_last", False)
    if channels_last:
        twin.channels_last = False  # the parts export from NCHW weights and are captured with NCHW inputs
    fold_batchnorms(twin)  # norms left unfolded export as BatchNormalization, which ORT fuses itself
    for path in paths:
        twin.get_submodule(path).to(memory_format=torch.contiguous_format)
    inputs = capture_inputs(twin, paths, images) if images is not None else capture_example_inputs(twin, paths)
    replaced = []
    for path in paths:
        part = twin.get_submodule(path)
        replacement = replace(part, inputs[path])
        if hasattr(part, "out_channels"):
            replacement.out_channels = part.out_channels
        twin.set_submodule(path, replacement)
        replaced.append(replacement)
    if channels_last and not all(any(m is r for r in replaced) for m in twin._conv_modules()):
        twin.channels_last = True  # what stays in torch (e.g. a mask head) runs channels-last as before
    return twin
