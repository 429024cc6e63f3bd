"""Output that people read: a per-class AP table, a JSON of every number and
precision-recall curves as a PNG."""
from __future__ import annotations

import os
from typing import Mapping, Sequence, Union

from ..io.jsonio import write_json_atomic
from .coco import COCOMetrics, pr_curves
from .voc import VOCMetrics


def ap_table(per_class: Mapping[str, float], title: str = "AP", columns: int = 3) -> str:
    """Per-class AP as an aligned text table, `columns` classes per row;
    -1 (no ground truth) is shown as "-"."""
    cells = [(name, "-" if value < 0 else f"{100 * value:.1f}") for name, value in per_class.items()]
    width = max([len(name) for name, _ in cells] + [len("class")])
    header = " | ".join([f"{'class':<{width}} | {title:>5}"] * min(columns, max(1, len(cells))))
    lines = [header, "-" * len(header)]
    for row in range(0, len(cells), columns):
        lines.append(" | ".join(f"{name:<{width}} | {value:>5}" for name, value in cells[row:row + columns]))
    return "\n".join(lines)


def save_metrics(path: Union[str, os.PathLike], metrics: Union[COCOMetrics, VOCMetrics]) -> None:
    """Writes every number of `metrics` as JSON, atomically."""
    write_json_atomic(path, metrics.to_dict())


def coco_pr_curves(metrics: COCOMetrics, names: Sequence[str], iou: float = 0.5) -> dict[str, tuple]:
    """Per-category (recall, precision) at IoU `iou`, all areas, 100 detections."""
    return pr_curves(metrics.precision, names, iou)


def plot_pr_curves(curves: Mapping[str, tuple], path: Union[str, os.PathLike], title: str = "Precision-recall",
                   columns: int = 4) -> None:
    """Draws one precision-recall panel per class into a PNG at `path`.

    curves: class name -> (recall array, precision array), e.g.
    VOCMetrics.curves or coco_pr_curves(metrics, names).
    """
    from ..io.viz import agg_figure, save_png  # matplotlib and OpenCV load only when plotting

    names = list(curves)
    if not names:
        raise ValueError("no curves to plot: no class has ground truth")
    rows, cols = (len(names) + columns - 1) // columns, min(columns, len(names))
    fig = agg_figure(figsize=(3.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        recall, precision = curves[name]
        ax.plot(recall, precision, lw=1.5)
        ax.set(title=name, xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
