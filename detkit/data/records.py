"""Every dataset format in one form: COCO's dict. Readers of the five formats
(COCO, VOC, YOLO, LabelMe, CVAT; detkit.data.formats.load_records picks one)
return `Records`; writers take them; the
datasets of the new formats are `CocoDetection`s over them, so every format
gives the same targets, masks, checks and `skip_invalid` policy.

    records = load_records("data.yaml", split="train")          # detkit.data.formats; format from the path
    records.coco["images"][0]  -> {"id": 1, "file_name": "images/train/a.jpg", "width": 640, "height": 480}
    dataset = records.dataset(transforms=..., with_masks=True)  # a CocoDetection

The dict holds:
    images:      {"id": int, "file_name": str (relative to image_root, '/'-separated), "width": int,
                  "height": int}
    annotations: {"id": int, "image_id": int, "category_id": int, "bbox": [x, y, w, h] float pixels,
                  "area": float, "iscrowd": 0 | 1, "segmentation": [[x1, y1, x2, y2, ...], ...] polygons
                  (or [] for a box only), optional "difficult": bool (VOC)}
    categories:  {"id": int (1..K for the new formats), "name": str}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

FORMATS = ("coco", "voc", "yolo", "labelme", "cvat")


@dataclass
class Records:
    """A detection dataset as a COCO dict, the folder its file names are
    relative to, and what it was read from (messages name it)."""

    coco: dict[str, list[dict[str, Any]]]
    image_root: str
    source: str
    skipped: list[str] = field(default_factory=list)  # what skip_invalid left out, each naming its record

    @property
    def classes(self) -> list[str]:
        """Category names in id order (label l is classes[l - 1])."""
        return [c["name"] for c in sorted(self.coco["categories"], key=lambda c: c["id"])]

    def dataset(self, transforms: Optional[Callable] = None, with_masks: bool = False, skip_invalid: bool = False):
        """A CocoDetection over these records."""
        from .coco import CocoDetection

        return CocoDetection(self.image_root, self.source, transforms=transforms, with_masks=with_masks,
                             skip_invalid=skip_invalid, dataset=self.coco)


def box_record(ann_id: int, image_id: int, category_id: int, box: list[float],
                polygons: Optional[list[list[float]]] = None, **extra: Any) -> dict[str, Any]:
    """An annotation dict from an (x1, y1, x2, y2) box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "segmentation": polygons or [], **extra}

