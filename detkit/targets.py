"""The two forms of a per-image target dict, named apart.

The data pipeline (datasets and transforms in ``detkit.data``) works on numpy
arrays; ``detkit.data.transforms.ToTensor`` turns them into tensors, and the models in
``detkit.modeling`` take and return tensors. Both use torchvision's keys.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

NumpyTarget = dict[str, Any]
"""A target in the data pipeline: ``boxes`` float32 ndarray[N, 4] (x1, y1, x2, y2
pixels), ``labels`` int64 ndarray[N], optional ``masks`` uint8 ndarray[N, H, W],
``iscrowd``/``difficult`` ndarray[N], plus per-image values such as ``image_id``."""

TensorTarget = dict[str, Tensor]
"""A target or detection at the model boundary: ``boxes`` float Tensor[N, 4],
``labels`` int64 Tensor[N], optional ``masks`` (uint8 Tensor[N, H, W] in,
float Tensor[N, 1, H, W] out) and, for detections, ``scores`` Tensor[N]."""
