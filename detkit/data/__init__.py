"""Datasets (COCO, VOC, the synthetic Shapes set), transforms, batching, and
the images on disk (reading one, finding those that paths, folders and globs name)."""
from . import proposals, shapes, transforms
from .coco import CocoDetection
from .collate import collate, collate_stacked
from .images import IMAGE_EXTENSIONS, expand_inputs, image_files, read_image
from .problems import AnnotationError
from .voc import VOC_CLASSES, VOCDetection

__all__ = [
    "AnnotationError",
    "CocoDetection",
    "VOCDetection",
    "VOC_CLASSES",
    "collate",
    "collate_stacked",
    "expand_inputs",
    "image_files",
    "IMAGE_EXTENSIONS",
    "proposals",
    "read_image",
    "shapes",
    "transforms",
]
