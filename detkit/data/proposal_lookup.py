"""A dataset's precomputed region proposals by image id, handed out as its
targets' "proposals" entry (detectron2's load_proposals idea): Fast R-CNN
trains on the proposals the dataset supplies beside the boxes."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


class ProposalLookup:
    """{image_id: (boxes [P, 4], scores [P])} (detkit.data.proposals' form) ->
    float32 [P, 4] (x1, y1, x2, y2) per image. Every image of the dataset
    must have an entry; a missing one is a ValueError naming it and `what`
    (the dataset's annotation source) at construction, not mid-training."""

    def __init__(self, proposals: Mapping[Any, Any], image_ids: Iterable, what: str):
        if not isinstance(proposals, Mapping):
            raise ValueError(f"{what}: proposals must be a mapping {{image_id: (boxes, scores)}}, "
                             f"got {type(proposals).__name__}")
        ids = list(image_ids)
        missing = [i for i in ids if i not in proposals]
        if missing:
            raise ValueError(f"{what}: the proposals lack {len(missing)} of its {len(ids)} images, e.g. image ids "
                             f"{', '.join(map(repr, missing[:3]))}")
        self.boxes = {i: _rows(proposals[i], i, what) for i in ids}

    def __call__(self, image_id: Any) -> np.ndarray:
        return self.boxes[image_id].copy()  # transforms may write into what they get


def _rows(value: Any, image_id: Any, what: str) -> np.ndarray:
    boxes = value[0] if isinstance(value, (tuple, list)) else value
    boxes = np.asarray(boxes.numpy() if hasattr(boxes, "numpy") else boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: proposals of image {image_id!r} must be boxes [P, 4], got shape {boxes.shape}")
    return boxes
