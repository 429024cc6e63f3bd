"""Where a training run's numbers go besides metrics.jsonl: TensorBoard, or a
tracker of your own.

A tracker is any object with these methods (all called on rank 0 only):

    log(record: dict)            every metrics.jsonl record as it is written:
                                 {"type": "train" | "eval" | "stop", "epoch", "iteration", ...numbers}
    log_evaluation(step: int, images: list[np.ndarray], curves: dict[str, (recall, precision)])
                                 after each evaluation: validation images (H, W, 3 uint8 RGB) with
                                 their detections drawn, and the per-class PR curves at IoU 0.5
    close()                      when the run ends, or fails

Pass trackers to detkit.engine.train(config, work_dir, trackers=[...]); an
MLflow or Weights & Biases tracker is a dozen lines on these three methods.
TensorBoard's (log.tensorboard) is the one detkit ships.
"""
from __future__ import annotations

import glob
import importlib.util
import os
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

import numpy as np

from ..io.viz import agg_figure, image_grid

EVENT_FILE_PATTERN = "events.out.tfevents.*"


class Tracker(Protocol):
    def log(self, record: Mapping[str, Any]) -> None: ...

    def log_evaluation(self, step: int, images: Sequence[np.ndarray],
                       curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None: ...

    def close(self) -> None: ...


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(tag, value) for every number of a metrics record, tagged "<type>/<key>"
    ("train/loss", "eval/AP50", "eval/errors/Cls" for nested dicts); the step
    ("iteration") is not a value of its own."""
    prefix = record.get("type", "log")
    yield from _numbers(record, prefix, skip=("type", "iteration"))


def _numbers(values: Mapping[str, Any], prefix: str, skip: Sequence[str] = ()) -> Iterator[tuple[str, float]]:
    for key, value in values.items():
        if key in skip:
            continue
        if isinstance(value, Mapping):
            yield from _numbers(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}/{key}", float(value)


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def build_trackers(enabled: Optional[bool], work_dir: str, purge_step: Optional[int]) -> list[Tracker]:
    """[TensorBoardTracker] per log.tensorboard (None: if the package is installed)."""
    if enabled is False or (enabled is None and not tensorboard_available()):
        return []
    if not tensorboard_available():
        raise ImportError("log.tensorboard=True needs the tensorboard package: pip install 'detkit[tensorboard]' "
                          "(or set log.tensorboard=False)")
    return [TensorBoardTracker(work_dir, purge_step)]


class TensorBoardTracker:
    """Event files in `work_dir`: every scalar of metrics.jsonl at its
    iteration; at each evaluation a grid of validation images with their
    detections and the PR curves. Resuming, purge_step drops what a killed run
    logged after its checkpoint, as metrics.jsonl is truncated there."""

    def __init__(self, work_dir: str, purge_step: Optional[int] = None):
        from torch.utils.tensorboard import SummaryWriter

        if purge_step is None:  # a fresh run: the last run's events would mix with this one's
            for path in glob.glob(os.path.join(glob.escape(work_dir), EVENT_FILE_PATTERN)):
                os.remove(path)
        self.writer = SummaryWriter(log_dir=work_dir, purge_step=purge_step, flush_secs=30)

    def log(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("iteration", 0))
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)
        if record.get("type") != "train":
            self.writer.flush()

    def log_evaluation(self, step: int, images: Sequence[np.ndarray],
                       curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        if images:
            self.writer.add_image("eval/detections", image_grid(images, columns=4, pad=2), step, dataformats="HWC")
        if curves:
            self.writer.add_figure("eval/pr_curves", pr_figure(curves), step, close=False)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def pr_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """Precision against recall, one line per class, on one matplotlib Figure."""
    fig = agg_figure(figsize=(5, 4))
    ax = fig.subplots()
    for name, (recall, precision) in curves.items():
        defined = precision >= 0  # COCO marks unreached recall with -1
        ax.plot(recall[defined], precision[defined], lw=1.2, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="PR at IoU 0.5")
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
