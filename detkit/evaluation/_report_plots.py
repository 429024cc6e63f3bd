"""The report's pictures as PNG bytes: the error breakdown, the confusion
heatmap, per-class precision-recall curves and the worst images.

Class names come from the user's data: every text that holds one is drawn
with parse_math=False, so that a name with "$" is shown as written rather
than parsed as TeX (which could fail the whole report).
"""
from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .analysis import Analysis

# The types as the report names them, TIDE's order; FP and FN are TIDE's special errors.
TYPE_LABELS = {"cls": "classification", "loc": "localisation", "both": "cls + loc", "dupe": "duplicate",
               "bkg": "background", "miss": "missed", "FP": "all false positives", "FN": "all false negatives"}
PALETTE = {"cls": "#e6194b", "loc": "#f58231", "both": "#911eb4", "dupe": "#4363d8", "bkg": "#3cb44b",
           "miss": "#808000", "FP": "#555555", "FN": "#999999"}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def _figure(width: float, height: float):
    from ..io.viz import agg_figure  # matplotlib loads only when a report is drawn

    return agg_figure(figsize=(width, height))


def error_bars(analysis: "Analysis") -> bytes:
    """Horizontal bars: ΔAP (in AP points) per type, at the foreground IoU and over .50:.95."""
    fig = _figure(8, 4.2)
    ax = fig.subplots()
    names = list(analysis.errors["AP"]) + list(analysis.special["AP"])
    rows = np.arange(len(names))
    for offset, key, alpha in ((-0.2, analysis.fg_key, 1.0), (0.2, "AP", 0.45)):
        values = [100 * {**analysis.errors[key], **analysis.special[key]}[n] for n in names]
        bars = ax.barh(rows + offset, values, height=0.38, color=[PALETTE[n] for n in names], alpha=alpha)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    from matplotlib.patches import Patch  # the legend tells the two bars apart by shade, not by colour

    ax.legend(handles=[Patch(color="#444444", label=f"ΔAP at IoU {analysis.fg_iou:g}"),
                       Patch(color="#444444", alpha=0.45, label="ΔAP over IoU .50:.95")],
              loc="lower right", fontsize=8)
    ax.set_yticks(rows, [TYPE_LABELS[n] for n in names])
    ax.axhline(5.5, color="#bbbbbb", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("AP points gained by fixing all errors of the type")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def confusion_heatmap(analysis: "Analysis") -> bytes:
    """Row-normalised heatmap, counts written in the cells while they fit."""
    matrix = analysis.confusion
    k = len(matrix.labels)
    side = min(22.0, max(5.0, 0.32 * k + 2.5))
    fig = _figure(side, side * 0.85)
    ax = fig.subplots()
    image = ax.imshow(matrix.normalized, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(k)
    ax.set_xticks(ticks, matrix.labels[:-1] + ["(missed)"], rotation=90, fontsize=8, parse_math=False)
    ax.set_yticks(ticks, matrix.labels, fontsize=8, parse_math=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 25:
        normalized = matrix.normalized
        for i in range(k):
            for j in range(k):
                if matrix.counts[i, j]:
                    color = "white" if normalized[i, j] > 0.5 else "black"
                    ax.text(j, i, str(matrix.counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_title(f"score >= {matrix.score_threshold:g}, IoU > {matrix.iou_threshold:g}")
    fig.tight_layout()
    return _png(fig)


def pr_curves(analysis: "Analysis", columns: int = 4) -> bytes:
    """One panel per class with GT: precision against recall at IoU 0.5,
    the recommended threshold's point marked."""
    summaries = {c.name: c for c in analysis.per_class}
    names = list(analysis.pr_curves)
    rows = max(1, (len(names) + columns - 1) // columns)
    fig = _figure(2.6 * columns, 2.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        recall, precision = analysis.pr_curves[name]
        defined = precision > -1
        ax.plot(recall[defined], precision[defined], lw=1.4)
        summary = summaries.get(name)
        if summary is not None and summary.threshold is not None and analysis.fg_iou == 0.5:
            ax.plot([summary.recall], [summary.precision], "o", color="#e6194b", ms=4)
        ax.set_title(name, fontsize=8, parse_math=False)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig, dpi=80 if len(names) > 24 else 100)


def image_png(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG bytes."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError("could not encode an image as PNG")
    return encoded.tobytes()
