"""Reading starting weights: one reader for detkit checkpoints and plain
state_dicts (torchvision's files), and one strict loader whose errors name
the file and the keys.

    state, classes = read_weights("last.pth")        # classes is None for a plain state_dict
    load_state_strict(model, state, "last.pth")

Files are read with `torch.load(weights_only=True)`, so a file from elsewhere
cannot run code.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

# The tag every detkit checkpoint carries (detkit.engine.checkpoint writes it).
CHECKPOINT_FORMAT = "detkit"

PathLike = Union[str, os.PathLike]


class WeightsError(ValueError):
    """A weights file is missing, unreadable or does not fit; the message names it."""


def read_weights(path: PathLike, what: str = "weights file") -> tuple[dict[str, Tensor], Optional[list[str]]]:
    """The model state_dict in `path` and, for a detkit checkpoint, its class
    names (None for a plain state_dict such as torchvision's)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{what} not found: {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickled code, not a torch file, ...
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {reason})") from None
    classes = None
    if isinstance(content, dict) and content.get("format") == CHECKPOINT_FORMAT:
        classes = content.get("classes")
        content = content.get("model")
    if not isinstance(content, dict) or not all(isinstance(v, Tensor) for v in content.values()):
        raise WeightsError(f"{path}: expected a state_dict (names -> tensors) or a detkit checkpoint, "
                           f"got {type(content).__name__}")
    return content, classes


def mismatches(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) keys of `state` against `model`;
    wrong-shape entries read 'key: (file shape) in the file, (model shape) in the model'."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    return missing, unexpected, wrong


def load_state_strict(model: nn.Module, state: dict[str, Any], source: str) -> nn.Module:
    """Loads `state` into `model` only if every key and shape fits; otherwise a
    WeightsError names `source` and the first offending keys."""
    missing, unexpected, wrong = mismatches(model, state)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors have other shapes (another class count or width?), e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} model weights are missing, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights, e.g. {', '.join(unexpected[:3])}")
        raise WeightsError(f"{source} does not fit {type(model).__name__} (another model?): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def load_weights(model: nn.Module, path: PathLike) -> nn.Module:
    """Loads a detkit checkpoint's model or a plain state_dict (torchvision's
    files) into `model`, strictly, and returns `model`."""
    state, _ = read_weights(path)
    return load_state_strict(model, state, os.fspath(path))
