"""Running a model over a dataset and scoring it, split across ranks."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..evaluation import COCOEvaluator, COCOMetrics, VOCEvaluator, VOCMetrics
from ..jsonio import load_json
from . import distributed as dist


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
            targets[image_id] = target
    return predictions, targets


def evaluate(model: nn.Module, dataset, metric: str, classes: Sequence[str], device: torch.device,
             gt: Optional[Union[str, dict]] = None, iou_type: str = "bbox", num_images: int = 0,
             batch_size: int = 8) -> Optional[Union[COCOMetrics, VOCMetrics]]:
    """Scores `model` on `dataset` (COCO against `gt`, or VOC). Each rank
    predicts its share of the images; rank 0 gathers them and returns the
    metrics, the other ranks return None."""
    count = min(num_images, len(dataset)) if num_images > 0 else len(dataset)
    mine = list(range(dist.get_rank(), count, dist.get_world_size()))
    predictions, targets = predict(model, dataset, mine, device, batch_size)
    if iou_type == "bbox":
        predictions = {i: {k: v for k, v in p.items() if k != "masks"} for i, p in predictions.items()}
    gathered = dist.all_gather_object((predictions, targets if metric == "voc" else None))
    if not dist.is_main_process():
        return None
    merged_predictions, merged_targets = {}, {}
    for part_predictions, part_targets in gathered:
        merged_predictions.update(part_predictions)
        merged_targets.update(part_targets or {})
    metrics = score(merged_predictions, merged_targets, metric, classes, gt, iou_type)
    metrics.images = len(merged_predictions)  # how many images were scored, all ranks together
    return metrics


def score(predictions: dict, targets: dict, metric: str, classes: Sequence[str],
          gt: Optional[Union[str, dict]] = None, iou_type: str = "bbox") -> Union[COCOMetrics, VOCMetrics]:
    if metric == "voc":
        evaluator = VOCEvaluator(classes)
        evaluator.update(predictions, targets)
        return evaluator.compute()
    if gt is None:
        raise ValueError("COCO evaluation needs the ground truth annotation file (gt)")
    coco = COCOEvaluator(_only_images(gt, set(predictions)), iou_type=iou_type)
    coco.update(predictions)
    return coco.compute()


def _only_images(gt: Union[str, dict, os.PathLike], image_ids: set) -> dict:
    """The ground truth restricted to the evaluated images, so a partial
    evaluation doesn't count the rest as misses."""
    dataset = load_json(gt) if isinstance(gt, (str, os.PathLike)) else gt
    images = [img for img in dataset["images"] if img["id"] in image_ids]
    if len(images) == len(dataset["images"]):
        return dataset
    annotations = [a for a in dataset.get("annotations", []) if a["image_id"] in image_ids]
    return {**dataset, "images": images, "annotations": annotations}


def key_metric(metrics: Union[COCOMetrics, VOCMetrics], key: str) -> float:
    if isinstance(metrics, VOCMetrics):
        if key != "mAP":
            raise ValueError(f"eval.key for VOC metrics must be 'mAP', got {key!r}")
        return metrics.mAP
    if key not in metrics.stats:
        raise ValueError(f"eval.key {key!r} is not a COCO stat; choose one of {list(metrics.stats)}")
    return metrics.stats[key]


def summary(metrics: Union[COCOMetrics, VOCMetrics]) -> dict[str, Any]:
    """The headline numbers of `metrics` as a flat dict."""
    if isinstance(metrics, VOCMetrics):
        return {"mAP": metrics.mAP}
    return dict(metrics.stats)
