"""Running a model over a dataset and scoring it, split across ranks."""
from __future__ import annotations

import os
from typing import Any, Collection, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from ..evaluation import COCOEvaluator, COCOMetrics, VOCEvaluator, VOCMetrics, analyze_evaluator
from . import distributed as dist

Evaluator = Union[COCOEvaluator, VOCEvaluator]
Metrics = Union[COCOMetrics, VOCMetrics]
# The target fields an evaluator reads (VOC; COCO reads its annotation file): ranks
# send only these to rank 0, never the masks.
SCORED_TARGET_KEYS = ("boxes", "labels", "difficult")


@torch.no_grad()
def predict(model: nn.Module, dataset, indices: Sequence[int], device: torch.device,
            batch_size: int = 8) -> tuple[dict, dict]:
    """({image_id: prediction}, {image_id: target}) for dataset[indices], on the
    CPU. Items are (Tensor[3, H, W], target) pairs."""
    model.eval()
    predictions, targets = {}, {}
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        outputs = model([image.to(device) for image, _ in items])
        for (_, target), output in zip(items, outputs):
            image_id = target["image_id"]
            predictions[image_id] = {k: v.detach().cpu() for k, v in output.items()}
            targets[image_id] = {k: v for k, v in target.items() if k != "masks"}  # scored from the annotation file
    return predictions, targets


def evaluate(model: nn.Module, dataset, metric: str, classes: Sequence[str], device: torch.device,
             gt: Optional[Union[str, dict]] = None, iou_type: str = "bbox", num_images: int = 0,
             batch_size: int = 8, analyze: bool = False) -> Optional[Metrics]:
    """Scores `model` on `dataset` (COCO against `gt`, or VOC). Each rank
    predicts its share of the images; rank 0 gathers them and returns the
    metrics, the other ranks return None. With analyze (COCO), the metrics
    carry the error analysis as `.analysis` (None when nothing was detected)."""
    mine = _rank_share(dataset, num_images)
    predictions, targets = predict(model, dataset, mine, device, batch_size)
    if iou_type == "bbox":
        predictions = {i: {k: v for k, v in p.items() if k != "masks"} for i, p in predictions.items()}
    targets = {i: {k: v for k, v in t.items() if k in SCORED_TARGET_KEYS} for i, t in targets.items()}
    gathered = dist.all_gather_object((predictions, targets))
    if not dist.is_main_process():
        return None
    merged_predictions, merged_targets = {}, {}
    for part_predictions, part_targets in gathered:
        merged_predictions.update(part_predictions)
        merged_targets.update(part_targets)
    metrics = score(merged_predictions, merged_targets, metric, classes, gt, iou_type, analyze,
                    getattr(dataset, "image_root", None))
    metrics.images = len(merged_predictions)  # how many images were scored, all ranks together
    return metrics


@torch.no_grad()
def validation_loss(model: nn.Module, dataset, device: torch.device, num_images: int = 0,
                    batch_size: int = 8) -> Optional[dict[str, float]]:
    """The model's training losses on `dataset` as its validation transforms
    give it (no augmentation), with BatchNorm and dropout in eval mode: on rank
    0 {"val_loss": total, "val_<loss name>": ...}, each the mean over the
    images (batches weighted by their size), all ranks' shares together; None
    on the other ranks. Random draws inside the losses (R-CNN's RoI sampling)
    use the caller's generators: isolate them to keep a run reproducible."""
    mine = _rank_share(dataset, num_images)
    sums: dict[str, float] = {}
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, (_BatchNorm, _DropoutNd)):
            module.eval()
    try:
        for start in range(0, len(mine), batch_size):
            items = [dataset[i] for i in mine[start:start + batch_size]]
            losses = model([image.to(device) for image, _ in items], [loss_target(t, device) for _, t in items])
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(items)
    finally:
        model.train(was_training)
    gathered = dist.all_gather_object((sums, len(mine)))
    if not dist.is_main_process():
        return None
    images = sum(n for _, n in gathered)
    totals = {name: sum(part.get(name, 0.0) for part, _ in gathered) / max(images, 1) for name in sums}
    return {"val_loss": sum(totals.values()), **{f"val_{name}": value for name, value in totals.items()}}


def _rank_share(dataset, num_images: int) -> list[int]:
    """This rank's indices of the first `num_images` items (0: all), every world-size-th."""
    count = min(num_images, len(dataset)) if num_images > 0 else len(dataset)
    return list(range(dist.get_rank(), count, dist.get_world_size()))


def loss_target(target: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Boxes, labels (and masks) on the device; crowd regions (and VOC's
    difficult objects) are not objects to learn, so they are dropped here as
    detectron2 does. A dataset's region proposals (Fast R-CNN's) come along whole."""
    keep = None
    for flag in ("iscrowd", "difficult"):
        if flag in target:
            drop = target[flag].bool()
            keep = ~drop if keep is None else keep & ~drop
    out = {}
    for key in ("boxes", "labels", "masks"):
        if key in target:
            value = target[key] if keep is None else target[key][keep]
            out[key] = value.to(device, non_blocking=True)
    if "proposals" in target:
        out["proposals"] = target["proposals"].to(device, non_blocking=True)
    return out


def build_evaluator(metric: str, classes: Sequence[str], gt: Optional[Union[str, os.PathLike, dict]] = None,
                    iou_type: str = "bbox", image_ids: Optional[Collection] = None) -> Evaluator:
    """The evaluator of eval.metric: "coco" (pycocotools' metrics against the
    annotation file `gt`, restricted to `image_ids` so that a partial
    evaluation does not count the other images' objects as misses) or "voc"
    (VOC2007 mAP@0.5, ground truth from the targets given to update)."""
    if metric not in EVALUATORS:
        raise ValueError(f"unknown eval.metric {metric!r}; choose one of {sorted(EVALUATORS)}")
    return EVALUATORS[metric](classes, gt, iou_type, image_ids)


def _coco_evaluator(classes, gt, iou_type, image_ids) -> COCOEvaluator:
    if gt is None:
        raise ValueError("COCO evaluation needs the ground truth annotation file (gt)")
    return COCOEvaluator(gt, iou_type=iou_type, image_ids=image_ids)


def _voc_evaluator(classes, gt, iou_type, image_ids) -> VOCEvaluator:
    return VOCEvaluator(classes)  # boxes only: a mask model is scored on its boxes


EVALUATORS = {"coco": _coco_evaluator, "voc": _voc_evaluator}


def score(predictions: dict, targets: dict, metric: str, classes: Sequence[str],
          gt: Optional[Union[str, os.PathLike, dict]] = None, iou_type: str = "bbox", analyze: bool = False,
          images: Optional[str] = None) -> Metrics:
    """The metrics of `predictions` ({image_id: prediction}) for the images
    they name; targets: {image_id: target}, as predict() returns them. With
    analyze (COCO only), also the error analysis as `metrics.analysis`
    (detkit.evaluation.analyze; None without any detection), its worst
    images read from the folder `images`."""
    evaluator = build_evaluator(metric, classes, gt, iou_type, image_ids=set(predictions))
    evaluator.update(predictions, targets)
    if not (analyze and isinstance(evaluator, COCOEvaluator)):
        return evaluator.compute()
    if not any(len(p["scores"]) for p in predictions.values()):  # an early model may detect nothing yet
        metrics = evaluator.compute()
        metrics.analysis = None
        return metrics
    analysis = analyze_evaluator(evaluator, images=images)
    analysis.metrics.analysis = analysis
    return analysis.metrics


def key_metric(metrics: Metrics, key: str) -> float:
    """The number that eval.key names, e.g. "AP50" (COCO) or "mAP" (VOC)."""
    if key not in metrics.stats:
        raise ValueError(f"eval.key {key!r} is not one of the {type(metrics).__name__} stats {list(metrics.stats)}")
    return metrics.stats[key]


def summary(metrics: Metrics) -> dict[str, Any]:
    """The headline numbers of `metrics` as a flat dict."""
    return dict(metrics.stats)
