"""The textbook's TinySSD (Dive into Deep Learning, 14.7) in the zoo."""
from __future__ import annotations

from ..modeling.tinyssd import TinySSD
from .options import TinySSDOptions
from .registry import register


@register("tinyssd")
def tinyssd(num_classes: int = 91, *, size: int = 256, detector: TinySSDOptions = TinySSDOptions()) -> TinySSD:
    """The book's TinySSD (d2l.ai 14.7) on size x size inputs (the book: 256,
    5444 anchors), with its anchors, labelling, loss and prediction."""
    return TinySSD(num_classes, size=size, score_thresh=detector.score_thresh, nms_thresh=detector.nms_thresh,
                   detections_per_img=detector.detections_per_img, iou_thresh=detector.iou_thresh)
