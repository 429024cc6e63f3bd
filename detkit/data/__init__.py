"""Datasets (COCO, VOC, the synthetic Shapes set), transforms and batching."""
from . import proposals, shapes, transforms
from .coco import CocoDetection
from .collate import collate, collate_stacked
from .images import read_image
from .problems import AnnotationError
from .voc import VOC_CLASSES, VOCDetection

__all__ = [
    "AnnotationError",
    "CocoDetection",
    "VOCDetection",
    "VOC_CLASSES",
    "collate",
    "collate_stacked",
    "proposals",
    "read_image",
    "shapes",
    "transforms",
]
