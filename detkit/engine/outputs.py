"""What a training run writes into its work dir: the metrics log (JSON lines),
the training curves and validation images with their predictions drawn."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..io.jsonio import atomic_write
from ..io.viz import draw_detections, plot_training_curves, write_image


class MetricsLog:
    """Appends one JSON record per line to `path` and hands it to the
    trackers (detkit.engine.tracking); on ranks other than 0 it does nothing.
    Each line is flushed, so a killed run keeps its log."""

    def __init__(self, path: str, enabled: bool = True, trackers: Sequence = ()):
        self.path, self.enabled, self.trackers = path, enabled, list(trackers) if enabled else []
        self.folder = os.path.dirname(os.path.abspath(path))

    def reset(self) -> None:
        if self.enabled and os.path.exists(self.path):
            os.remove(self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for tracker in self.trackers:
            tracker.log(record)

    def write_evaluation(self, step: int, images: Sequence[np.ndarray], curves: dict) -> None:
        """An evaluation's drawn validation images and PR curves, to the trackers."""
        for tracker in self.trackers:
            tracker.log_evaluation(step, images, curves)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

    def records(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip().endswith("}")]

    def truncate(self, iteration: int, epoch: int) -> None:
        """Drops what a killed run logged after its last checkpoint, so the
        resumed run does not log those iterations twice."""
        if not self.enabled:
            return
        # A "stop" line is written again if the resumed run is still out of patience.
        kept = [r for r in self.records() if r.get("iteration", 0) <= iteration and r.get("epoch", 0) <= epoch
                and r.get("type") != "stop"]
        with atomic_write(self.path) as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)


def write_outputs(work_dir: str, model: nn.Module, splits, config, device: torch.device,
                  records: Sequence[dict]) -> None:
    """curves.png and a few validation images with predictions drawn."""
    plot_training_curves(records, os.path.join(work_dir, "curves.png"), metric=config.eval.key)
    drawn = draw_validation(model, splits, config, device)
    if not drawn:
        return
    folder = os.path.join(work_dir, "vis")
    os.makedirs(folder, exist_ok=True)
    for image_id, image in drawn:
        write_image(os.path.join(folder, f"{image_id}.jpg"), image)


@torch.no_grad()
def draw_validation(model: nn.Module, splits, config, device: torch.device) -> list[tuple[Any, np.ndarray]]:
    """[(image_id, RGB uint8 [H, W, 3])]: the first eval.vis_images validation
    images with the model's detections above eval.vis_score drawn."""
    drawn = []
    model.eval()
    for index in range(min(config.eval.vis_images, len(splits.val))):
        image, target = splits.val[index]
        prediction = model([image.to(device)])[0]
        rgb = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
        drawn.append((target["image_id"], draw_detections(rgb, prediction, splits.classes, config.eval.vis_score)))
    return drawn
