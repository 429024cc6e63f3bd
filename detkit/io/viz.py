"""Drawing detections (OpenCV) and plots (matplotlib, on an Agg figure without pyplot)."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .jsonio import atomic_write

# Well-separated colours (RGB), cycled by label.
_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                     (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)],
                    dtype=np.uint8)


def color_of(label: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in _PALETTE[int(label) % len(_PALETTE)])


def draw_detections(image: np.ndarray, detections: Mapping[str, torch.Tensor], classes: Sequence[str],
                    score_threshold: float = 0.0) -> np.ndarray:
    """A copy of `image` (H x W x 3 uint8, RGB) with boxes, "name score" labels
    and, where given, masks (Tensor[N, 1|-, H, W], probabilities or 0/1) drawn.

    detections: {"boxes": Tensor[N, 4] (x1, y1, x2, y2), "scores": Tensor[N],
    "labels": Tensor[N] (1..K; class name classes[label - 1])}. Without
    "scores" (ground truth) every box is drawn, labelled by its name alone.
    """
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    scores = detections.get("scores")
    keep = (scores >= score_threshold).cpu() if scores is not None else torch.ones(len(detections["boxes"]), dtype=bool)
    boxes = detections["boxes"].cpu()[keep].round().int().tolist()
    scores = scores.cpu()[keep].tolist() if scores is not None else [None] * len(boxes)
    labels = detections["labels"].cpu()[keep].tolist()
    if "masks" in detections:
        masks = detections["masks"].cpu()[keep]
        masks = masks[:, 0] if masks.dim() == 4 else masks
        for mask, label in zip(masks, labels):
            region = mask.numpy() >= 0.5
            canvas[region] = (0.5 * canvas[region] + 0.5 * np.array(color_of(label))).astype(np.uint8)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
        color = color_of(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        name = classes[label - 1] if 0 < label <= len(classes) else str(label)
        _put_label(canvas, name if score is None else f"{name} {score:.2f}", x1, y1, color)
    return canvas


def _put_label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    scale = max(0.35, max(canvas.shape[:2]) / 1200)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = max(0, y - h - base - 2)
    cv2.rectangle(canvas, (x, top), (x + w + 2, top + h + base + 2), color, -1)
    cv2.putText(canvas, text, (x + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)


def write_image(path: Union[str, os.PathLike], image_rgb: np.ndarray) -> None:
    """Writes an RGB image; the format follows the file extension."""
    path = os.fspath(path)
    if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")


def image_grid(images: Sequence[np.ndarray], columns: int, pad: int = 0, fill: int = 255) -> np.ndarray:
    """Images (H, W, 3 uint8, any sizes) tiled row by row, `columns` to a row,
    each in a cell of the largest image's size plus `pad`, on a canvas of
    `fill`: [H, W, 3] uint8."""
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    cell_h = max(im.shape[0] for im in images) + pad
    cell_w = max(im.shape[1] for im in images) + pad
    canvas = np.full((len(rows) * cell_h + pad, min(len(images), columns) * cell_w + pad, 3), fill, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = pad + r * cell_h, pad + c * cell_w
            canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
    return canvas


def plot_training_curves(records: Sequence[Mapping], path: Union[str, os.PathLike],
                         metric: Optional[str] = None) -> None:
    """Loss against iteration (training, and validation where eval lines carry
    "val_loss") and, where records carry it, `metric` against epoch, side by
    side in one PNG. records: the metrics log's dicts, with "iteration" and
    "loss" (train lines) or "epoch" and metric (eval lines)."""
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval" and metric in r]
    fig = agg_figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    marker = "." if len(train) < 50 else None
    validation = [r for r in records if r.get("type") == "eval" and "val_loss" in r]
    axes[0].plot([r["iteration"] for r in train], [r["loss"] for r in train], lw=1, marker=marker, label="training")
    if validation:
        axes[0].plot([r["iteration"] for r in validation], [r["val_loss"] for r in validation], marker="o",
                     label="validation")
        axes[0].legend(fontsize=8)
    losses = [r["loss"] for r in train] + [r["val_loss"] for r in validation]
    axes[0].set(xlabel="iteration", ylabel="loss", title="loss")
    axes[0].set_yscale("log" if losses and min(losses) > 0 else "linear")
    axes[1].plot([r["epoch"] for r in evals], [r[metric] for r in evals], marker="o")
    axes[1].set(xlabel="epoch", ylabel=metric or "metric", title=f"validation {metric or ''}", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def agg_figure(**kwargs):
    """A matplotlib Figure drawn by the Agg canvas, without pyplot: plotting
    into it leaves the user's backend and pyplot's figures alone (a notebook
    keeps its inline backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Union[str, os.PathLike], dpi: int = 100) -> None:
    """Writes `fig` as a PNG at `path` atomically (a killed run leaves the old file or none)."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format="png")
