"""Exporting a detector to ONNX or TorchScript.

The exported graph takes one image, a float Tensor[3, H, W] in [0, 1] of the
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
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from ..io.jsonio import atomic_write

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
