"""Datasets (COCO, VOC, YOLO, LabelMe, CVAT, the synthetic Shapes set),
transforms, batching, conversion between the formats, checks and statistics
of a dataset, and the images on disk (reading one, finding those that paths,
folders and globs name)."""
from . import proposals, shapes, transforms
from .coco import CocoDetection
from .cvat import CVATDetection, read_cvat
from .checks import CheckReport
from .collate import collate, collate_stacked
from .convert import convert, write_dataset, write_records
from .images import IMAGE_EXTENSIONS, expand_inputs, image_files, read_image
from .labelme import LabelMeDetection, read_labelme
from .problems import AnnotationError
from .formats import check_dataset, load_records
from .records import FORMATS, Records
from .stats import dataset_stats
from .voc import VOC_CLASSES, VOCDetection
from .yolo import YOLODetection, read_yolo

__all__ = [
    "AnnotationError",
    "CVATDetection",
    "LabelMeDetection",
    "YOLODetection",
    "read_cvat",
    "read_labelme",
    "read_yolo",
    "CheckReport",
    "FORMATS",
    "Records",
    "check_dataset",
    "dataset_stats",
    "load_records",
    "CocoDetection",
    "VOCDetection",
    "VOC_CLASSES",
    "collate",
    "collate_stacked",
    "convert",
    "write_dataset",
    "write_records",
    "expand_inputs",
    "image_files",
    "IMAGE_EXTENSIONS",
    "proposals",
    "read_image",
    "shapes",
    "transforms",
]
