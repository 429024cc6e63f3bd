"""Self-describing checkpoints, written atomically and read without pickled code.

A checkpoint is one `torch.save` dict:
    {"format": "detkit", "version": 1, "model": state_dict, "config": Config.to_dict(),
     "classes": [names], "epoch": int, "iteration": int, "optimizer"?, "rng"?, "metrics"?, "best"?,
     "scaler"?, "epoch_iteration"?, "log_window"?}
"epoch" counts finished epochs; a checkpoint written mid-epoch (config.checkpoint.period_iters)
has "epoch_iteration" > 0, the batches of the next epoch already taken, and one "rng" and
"log_window" entry per rank (detkit.engine.trainer).
Everything in it is tensors and plain Python values, so `torch.load(weights_only=True)`
reads it. It is written to a temporary file in the same folder, flushed to disk and
renamed over the old one: a kill at any moment leaves either the old or the new file
(and perhaps a `.tmp-*` file, never read as a checkpoint, which the trainer deletes when
it next starts).
"""
from __future__ import annotations

import os
import random
import shutil
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from ..io.jsonio import atomic_write
from ..models.weights import CHECKPOINT_FORMAT, WeightsError, error_summary, load_state_strict

FORMAT = CHECKPOINT_FORMAT
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit; the message names the file."""


def save_checkpoint(path: Union[str, os.PathLike], state: dict[str, Any]) -> None:
    """Writes `state` (plus the format tag) to `path` atomically."""
    with atomic_write(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)


def load_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a detkit checkpoint with `weights_only=True`; errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (truncated, corrupt or not a torch file; "
                              f"{error_summary(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a detkit checkpoint (no 'format': 'detkit' entry); "
                              f"for torchvision weights use model.weights or detkit.models.load_weights")
    missing = [key for key in ("model", "config", "classes") if key not in state]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {missing}")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this detkit "
                              f"reads ({VERSION})")
    return state


def load_model_state(model: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """Loads weights strictly; a checkpoint of another model or class count is named."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{source}: the weights are a {type(state_dict).__name__}, not a state_dict")
    try:
        load_state_strict(model, state_dict, source)
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch generator states as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": _plain(random.getstate()), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def check_checkpoint_space(folder: Union[str, os.PathLike], checkpoint_bytes: int, files: int) -> None:
    """Raises an OSError naming `folder` when its disk cannot hold `files`
    checkpoints of about `checkpoint_bytes` each (the .pth files already there
    are overwritten, so they count as room), before a run spends hours
    reaching its first checkpoint."""
    folder = os.fspath(folder)
    existing = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
                   if name.endswith(".pth") and os.path.isfile(os.path.join(folder, name)))
    needed = files * checkpoint_bytes - existing
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(f"work dir {folder}: {free / 2**20:.0f} MiB free, but its checkpoints need about "
                      f"{needed / 2**20:.0f} MiB ({files} files of {checkpoint_bytes / 2**20:.0f} MiB); "
                      f"free some space or choose another work dir")


def checkpoint_classes(state: dict[str, Any], source: Optional[str] = None) -> list[str]:
    classes = state["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{source or 'checkpoint'}: 'classes' must be a list of names")
    return classes
