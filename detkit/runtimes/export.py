"""Exporting a detector to ONNX or TorchScript.

export_dynamic writes one self-contained ONNX graph of an SSD or a
Faster/Mask R-CNN that takes an image of any size, a uint8 Tensor[H, W, 3]
(RGB, as decoded) or a float Tensor[3, H, W] in [0, 1], normalises and
resizes it inside the graph, and returns (boxes Tensor[N, 4] (x1, y1, x2, y2)
in the input's pixels, scores Tensor[N], labels Tensor[N]), plus masks
Tensor[N, 1, H, W] for Mask R-CNN, after NMS: what a deployment needs and
nothing else (see runtimes.self_contained). Only the input's height and
width are dynamic.

export_model writes a fixed-size graph of any detector: it takes one image, a float Tensor[3, H, W] in [0, 1] of the
size given at export, and returns (boxes Tensor[N, 4] (x1, y1, x2, y2) in that
image's pixels, scores Tensor[N], labels Tensor[N] (1..K)), plus masks
Tensor[N, 1, H, W] for Mask R-CNN. The graph is traced: the resize factors and
the anchors of that size are constants in it, so other sizes must be resized
to it first. The box ops run their torch reference path while tracing (the
compiled kernels are opaque to the tracer), and NMS becomes ONNX
NonMaxSuppression.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..io.jsonio import atomic_write
from .self_contained import self_contained

FORMATS = ("onnx", "torchscript")


class ExportWrapper(nn.Module):
    """A detector's eval forward on one image, returning a tuple of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.has_masks = getattr(getattr(model, "roi_heads", None), "mask_head", None) is not None

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model([image])[0]
        outputs = (out["boxes"], out["scores"], out["labels"])
        return outputs + (out["masks"],) if self.has_masks else outputs

    @property
    def output_names(self) -> list[str]:
        return ["boxes", "scores", "labels"] + (["masks"] if self.has_masks else [])


def export_model(model: nn.Module, path: Union[str, os.PathLike], image_size: Sequence[int],
                 fmt: str = "onnx", opset: int = 17) -> str:
    """Writes `model` (in eval mode) for images of image_size (H, W) to `path`
    as ONNX or TorchScript; the file appears only once complete."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ValueError("ONNX export needs the onnx package: pip install 'detkit[export]'")
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive (H, W), got {tuple(image_size)}")
    wrapper = ExportWrapper(model).eval()
    example = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0),
                         device=next(model.parameters()).device)
    with atomic_write(path, "wb") as f, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # data-dependent branches are expected
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based ONNX exporter's
        if fmt == "onnx":
            torch.onnx.export(wrapper, (example,), f, dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=wrapper.output_names)
        else:
            torch.jit.save(torch.jit.trace(wrapper, (example,), check_trace=False), f)
    return os.fspath(path)


def export_dynamic(model: nn.Module, path: Union[str, os.PathLike], input_type: str = "uint8",
                   opset: int = 17, example: Optional[Tensor] = None) -> str:
    """Writes `model` (an SSD or a Faster/Mask R-CNN) to `path` as one ONNX
    graph for images of any size (see the module docstring); the file
    appears only once complete. Inputs: "image" (uint8 [H, W, 3] or float
    [3, H, W]); outputs: "boxes", "scores", "labels" (and "masks"). example:
    the image traced (random 97x131 pixels of input_type by default); the
    graph does not depend on what it holds, nor on whether the model finds
    anything in it."""
    if importlib.util.find_spec("onnx") is None:
        raise ValueError("ONNX export needs the onnx package: pip install 'detkit[export]'")
    wrapper = self_contained(model, input_type)  # checks the model's kind and input_type
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    axes = {0: "height", 1: "width"} if input_type == "uint8" else {1: "height", 2: "width"}
    if example is None:
        example = torch.randint(0, 256, (97, 131, 3), generator=generator, dtype=torch.uint8) \
            if input_type == "uint8" else torch.rand(3, 97, 131, generator=generator)
    names = ["boxes", "scores", "labels"] + (["masks"] if wrapper.has_masks else [])
    output_axes = {name: {0: "detections"} for name in names}
    if wrapper.has_masks:
        output_axes["masks"] = {0: "detections", 2: "height", 3: "width"}
    with atomic_write(path, "wb") as f, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # what is constant is meant to be
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(wrapper, (example.to(device),), f, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=names,
                          dynamic_axes={"image": axes, **output_axes})
    return os.fspath(path)
