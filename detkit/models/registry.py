"""The zoo's registry: model names -> builder functions, the options each
takes, and `build()`, which checks the options and loads starting weights.
Family modules register their builders here; this module imports none of them.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Callable, Optional, Union

from torch import nn

from .weights import PRETRAINED_MODELS, class_layers, load_state, starting_weights

PathLike = Union[str, os.PathLike]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class ModelOptionError(ValueError):
    """An option the named model does not take; the message lists the ones it does."""


def register(name: str) -> Callable:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder
    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """Every option `build(name, ...)` takes, with its default for this model."""
    options = {}
    for param in inspect.signature(_builder(name)).parameters.values():
        if param.name == "num_classes":
            continue
        if param.name == "detector":
            options.update(dataclasses.asdict(param.default))
        else:
            options[param.name] = param.default
    return options


def pretrained_models() -> list[str]:
    """The zoo names that `build(name, weights=...)` can load torchvision weights for."""
    return sorted(PRETRAINED_MODELS)


def build(name: str, num_classes: Optional[int] = None, weights: Optional[PathLike] = None,
          **options: object) -> nn.Module:
    """Builds a zoo model. `options` are the builder's own keyword arguments
    (width, size, backbone_weights, ...) and the fields of its detector options
    (score_thresh, min_size, ...), flat; an option the model does not take is a
    ModelOptionError that lists the ones it does (see `model_options(name)`).

    weights: where the whole model starts: a file (a detkit checkpoint or a
        state_dict) or a torchvision weights name ("DEFAULT", "COCO_V1",
        "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"). Named weights set
        `model.classes` (COCO's 91 slots, "N/A" gaps included). With another
        `num_classes` than the weights', the class-dependent layers are
        re-initialised and everything else loads strictly (fine-tuning).
    num_classes: including the background. Default: the class count of the
        weights (named weights and detkit checkpoints know it), else 91; a
        plain state_dict must then fit exactly. Given, and unlike the weights',
        it fine-tunes.
    """
    builder = _builder(name)
    arguments = _builder_arguments(name, builder, options)  # before any download: a typo fails at once
    state, classes, source = starting_weights(name, weights, pretrained_models()) if weights is not None else (None, None, None)
    fine_tune = num_classes is not None
    if num_classes is None:
        num_classes = len(classes) + 1 if classes else 91
    model = builder(num_classes, **arguments)
    if state is None:
        return model
    # No class count asked for: the file's must be the model's; asked for, it may differ (fine-tuning).
    reinitialised = load_state(model, state, source, class_layers(model) if fine_tune else None)
    if classes and not reinitialised:
        model.classes = list(classes)
    return model


def _builder_arguments(name: str, builder: Callable[..., nn.Module], options: dict) -> dict:
    """Flat options -> the builder's keyword arguments plus its `detector` settings."""
    params = inspect.signature(builder).parameters
    detector = params["detector"].default
    fields = {f.name for f in dataclasses.fields(detector)}
    reserved = {"detector", "num_classes", "weights"}  # build's own arguments, or not options at all
    unknown = [key for key in options if key not in fields and (key not in params or key in reserved)]
    if unknown:
        raise ModelOptionError(f"model {name!r} takes no option {', '.join(map(repr, unknown))}; its options: "
                               f"{', '.join(model_options(name))}")
    # Config files and --set give lists where the options hold tuples.
    flat = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    own = {k: v for k, v in flat.items() if k not in fields}
    return {**own, "detector": dataclasses.replace(detector, **{k: v for k, v in flat.items() if k in fields})}
