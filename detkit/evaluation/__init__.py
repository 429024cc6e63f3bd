"""Evaluation: COCO metrics identical to pycocotools, Pascal VOC mAP, error analysis, reports."""
from .analysis import Analysis, ClassSummary, ConfusionMatrix, analyze, analyze_evaluator
from .coco import COCOEvaluator, COCOMetrics, evaluate_coco
from .report import write_report
from .results import ap_table, coco_pr_curves, plot_pr_curves, save_metrics
from .voc import VOCEvaluator, VOCMetrics, voc_ap
from .worst import ERROR_TYPES, ImageErrors

__all__ = [
    "Analysis",
    "COCOEvaluator",
    "COCOMetrics",
    "ClassSummary",
    "ConfusionMatrix",
    "ERROR_TYPES",
    "ImageErrors",
    "VOCEvaluator",
    "VOCMetrics",
    "analyze",
    "analyze_evaluator",
    "ap_table",
    "coco_pr_curves",
    "evaluate_coco",
    "plot_pr_curves",
    "save_metrics",
    "voc_ap",
    "write_report",
]
