"""The target dict of the data pipeline. Datasets and transforms work on
numpy arrays; ``detkit.data.transforms.ToTensor`` turns a target into the
tensor form the models take (``detkit.modeling.targets.TensorTarget``). Both
use torchvision's keys.
"""
from __future__ import annotations

from typing import Any

NumpyTarget = dict[str, Any]
"""A target in the data pipeline: ``boxes`` float32 ndarray[N, 4] (x1, y1, x2, y2
pixels), ``labels`` int64 ndarray[N], optional ``masks`` uint8 ndarray[N, H, W],
``iscrowd``/``difficult`` ndarray[N], plus per-image values such as ``image_id``."""
