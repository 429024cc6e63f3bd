"""Evaluation: COCO metrics identical to pycocotools, Pascal VOC mAP, reports."""
from .coco import COCOEvaluator, COCOMetrics, evaluate_coco
from .results import ap_table, coco_pr_curves, plot_pr_curves, save_metrics
from .voc import VOCEvaluator, VOCMetrics, voc_ap

__all__ = [
    "COCOEvaluator",
    "COCOMetrics",
    "VOCEvaluator",
    "VOCMetrics",
    "ap_table",
    "coco_pr_curves",
    "evaluate_coco",
    "plot_pr_curves",
    "save_metrics",
    "voc_ap",
]
