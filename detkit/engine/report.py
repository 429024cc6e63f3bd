"""Evaluating a loaded model and writing its report files (tools/eval.py)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import nn

from ..data import CocoDetection, VOCDetection
from ..evaluation import ap_table, plot_pr_curves, save_metrics
from .build import build_datasets, eval_transforms
from .evaluate import build_evaluator, predict


def evaluate_model(model: nn.Module, out: str, data: str = "config", images: Optional[str] = None,
                   ann: Optional[str] = None, voc_root: Optional[str] = None, year: str = "2007",
                   split: str = "test", iou_type: Optional[str] = None, num_images: int = 0) -> str:
    """Scores a model from `detkit.load_model` and writes metrics.json,
    results.json (the detections as COCO-style result records) and
    pr_curves.png into `out`; returns the printed report.

    data: "config" (the validation split of the checkpoint's own config), "coco"
    (`images` + `ann`) or "voc" (`voc_root`, `year`, `split`)."""
    config, classes = model.config, model.classes
    iou_type = iou_type or config.eval.iou_type
    dataset, gt, metric = _dataset(model, data, images, ann, voc_root, year, split)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # onnxruntime: none left
    count = min(num_images, len(dataset)) if num_images > 0 else len(dataset)
    predictions, targets = predict(model, dataset, list(range(count)), device, config.data.batch_size)
    if list(dataset.classes) != list(classes):
        predictions = relabel(predictions, label_map(classes, dataset.classes, ann or voc_root or "the data"))
        classes = dataset.classes
    os.makedirs(out, exist_ok=True)
    evaluator = build_evaluator(metric, classes, gt, iou_type, image_ids=set(predictions))
    evaluator.update(predictions, targets)
    metrics = evaluator.compute()
    evaluator.write_results(os.path.join(out, "results.json"))
    save_metrics(os.path.join(out, "metrics.json"), metrics)
    if metrics.curves:
        plot_pr_curves(metrics.curves, os.path.join(out, "pr_curves.png"))
    table = ap_table(metrics.per_class, title=metrics.per_class_metric)
    return f"{len(predictions)} images, {iou_type}\n{metrics.headline()}\n{table}"


def _dataset(model: nn.Module, data: str, images, ann, voc_root, year: str, split: str):
    """(dataset, COCO ground truth or None, metric name)."""
    classes = model.classes
    if data == "config":
        splits = build_datasets(model.config, proposals=False)  # evaluation needs no training proposals
        return splits.val, splits.val_ann, model.config.eval.metric
    if data == "coco":
        if not images or not ann:
            raise ValueError("--data coco needs --images (the image folder) and --ann (the annotation JSON)")
        return CocoDetection(images, ann, eval_transforms()), ann, "coco"
    if not voc_root:
        raise ValueError("--data voc needs --voc-root (the VOCdevkit folder)")
    return VOCDetection(voc_root, year, split, keep_difficult=True, transforms=eval_transforms(),
                        classes=classes), None, "voc"


def label_map(model_classes: Sequence[str], data_classes: Sequence[str], source: str) -> dict[int, int]:
    """Model label -> data label, matched by class name: a COCO-pretrained model's
    91 slots ("N/A" gaps included) onto a COCO file's 80 contiguous labels. Every
    class of the data must be one the model knows."""
    data_label = {name: n + 1 for n, name in enumerate(data_classes)}
    unknown = [name for name in data_classes if name not in set(model_classes)]
    if unknown:
        raise ValueError(f"{source}: its classes {unknown[:5]} are not among the model's classes "
                         f"{list(model_classes)[:5]}...")
    return {n + 1: data_label[name] for n, name in enumerate(model_classes) if name in data_label}


def relabel(predictions: dict, mapping: dict[int, int]) -> dict:
    """Predictions with labels mapped by `mapping`; detections of classes the data lacks are dropped."""
    out = {}
    for image_id, prediction in predictions.items():
        labels = prediction["labels"].tolist()
        keep = torch.tensor([label in mapping for label in labels], dtype=torch.bool)
        moved = {k: v[keep] for k, v in prediction.items()}
        moved["labels"] = torch.tensor([mapping[label] for label, kept in zip(labels, keep.tolist()) if kept],
                                       dtype=prediction["labels"].dtype)
        out[image_id] = moved
    return out
