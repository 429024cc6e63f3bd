"""The target and detection dict at the model boundary (torchvision's keys);
the data pipeline's numpy form is ``detkit.data.targets.NumpyTarget``."""
from __future__ import annotations

from torch import Tensor

TensorTarget = dict[str, Tensor]
"""A target or detection at the model boundary: ``boxes`` float Tensor[N, 4],
``labels`` int64 Tensor[N], optional ``masks`` (uint8 Tensor[N, H, W] in,
float Tensor[N, 1, H, W] out) and, for detections, ``scores`` Tensor[N]."""
