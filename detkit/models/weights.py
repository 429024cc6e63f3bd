"""Starting weights and fine-tuning for the zoo: one reader for detkit checkpoints and plain
state_dicts (torchvision's files), and one strict loader whose errors name
the file and the keys.

    state, classes = read_weights("last.pth")        # classes is None for a plain state_dict
    load_state_strict(model, state, "last.pth")

Starting weights may also be named as torchvision names them ("DEFAULT",
"COCO_V1", "IMAGENET1K_V1", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"): the name
is resolved with torchvision's weights enums and fetched with their
`get_state_dict`, which reads the torch hub cache and downloads only what is
not there. Files are read with `torch.load(weights_only=True)`, so a file from
elsewhere cannot run code.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Optional, Union
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ..modeling.ssd import SSD
from ..modeling.tinyssd import TinySSD

# The tag every detkit checkpoint carries (detkit.engine.checkpoint writes it).
CHECKPOINT_FORMAT = "detkit"

# Zoo names whose whole model has a torchvision twin of the same name with published weights
# (and the same tensor names).
PRETRAINED_MODELS = frozenset({"ssd300_vgg16", "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
                               "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn",
                               "fasterrcnn_mobilenet_v3_large_320_fpn"})
# A torchvision weights name: an enum member ("COCO_V1") or "Enum_Weights.MEMBER"; never a file name.
_WEIGHTS_NAME = re.compile(r"(?:[A-Za-z][A-Za-z0-9_]*_Weights\.)?[A-Z][A-Z0-9_]*")

PathLike = Union[str, os.PathLike]


class WeightsError(ValueError):
    """A weights file is missing, unreadable or does not fit; the message names it."""


def error_summary(exc: BaseException) -> str:
    """'TypeName: first line of the message', for one-line errors that wrap another."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def read_weights(path: PathLike, what: str = "weights file") -> tuple[dict[str, Tensor], Optional[list[str]]]:
    """The model state_dict in `path` and, for a detkit checkpoint, its class
    names (None for a plain state_dict such as torchvision's)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{what} not found: {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickled code, not a torch file, ...
        raise WeightsError(f"{path}: not a readable weights file ({error_summary(exc)})") from None
    classes = None
    if isinstance(content, dict) and content.get("format") == CHECKPOINT_FORMAT:
        classes = content.get("classes")
        content = content.get("model")
    if not isinstance(content, dict) or not all(isinstance(v, Tensor) for v in content.values()):
        raise WeightsError(f"{path}: expected a state_dict (names -> tensors) or a detkit checkpoint, "
                           f"got {type(content).__name__}")
    return content, classes


# torchvision's published R-CNN files (2019) predate its current module names; torchvision
# renames them on load (RPNHead and MaskRCNNHeads._load_from_state_dict), and so does detkit:
# rpn.head.conv.weight -> rpn.head.conv.0.0.weight, roi_heads.mask_head.mask_fcn1.weight -> ...0.0.weight.
_LEGACY_RPN = re.compile(r"^(.*rpn\.head\.conv)\.(weight|bias)$")
_LEGACY_MASK = re.compile(r"^(.*roi_heads\.mask_head)\.mask_fcn(\d+)\.(weight|bias)$")


def upgrade_legacy_keys(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """`state` with torchvision's pre-2020 R-CNN names mapped to today's, and
    the BatchNorm counters that the model's FrozenBatchNorm layers lack dropped."""
    own = model.state_dict()
    upgraded = {}
    for key, value in state.items():
        rpn, mask = _LEGACY_RPN.match(key), _LEGACY_MASK.match(key)
        if rpn:
            key = f"{rpn.group(1)}.0.0.{rpn.group(2)}"
        elif mask:
            key = f"{mask.group(1)}.{int(mask.group(2)) - 1}.0.{mask.group(3)}"
        elif key.endswith("num_batches_tracked") and key not in own:
            continue
        upgraded[key] = value
    return upgraded


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
    files, old R-CNN names included) into `model`, strictly, and returns `model`."""
    state, _ = read_weights(path)
    load_state(model, state, os.fspath(path))
    return model


def is_weights_name(spec: Any) -> bool:
    """True for "DEFAULT", "COCO_V1", "VGG16_Weights.IMAGENET1K_FEATURES", ...;
    False for anything that exists as a file or looks like a path."""
    return isinstance(spec, str) and bool(_WEIGHTS_NAME.fullmatch(spec)) and not os.path.isfile(spec)


def resolve_weights(spec: str, twin: Optional[str], what: str, pretrained: Optional[list[str]] = None):
    """The torchvision weights enum member named `spec` for the torchvision
    model `twin` (e.g. "fasterrcnn_resnet50_fpn", "resnet18"). `what` names
    the model in errors; `pretrained` lists the names that do have weights."""
    import torchvision

    if twin is None:
        raise WeightsError(f"{what} has no pretrained weights in torchvision, so {spec!r} cannot be loaded; "
                           f"models with named weights: {', '.join(pretrained or [])}. Give a file path instead.")
    enum = torchvision.models.get_model_weights(twin)
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    enum_name, _, member = spec.rpartition(".")
    if enum_name and enum_name != enum.__name__:
        raise WeightsError(f"{spec!r} are weights of another model; {what} takes {enum.__name__}."
                           f"{{{', '.join(['DEFAULT', *members])}}}")
    if member not in enum.__members__:
        raise WeightsError(f"unknown weights {spec!r} for {what}; choose one of: DEFAULT, {', '.join(members)} "
                           f"(or {enum.__name__}.<name>)")
    return enum[member]


def hub_file(weights) -> str:
    """Where torchvision's get_state_dict keeps `weights` in the torch hub cache."""
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))


def fetch_state_dict(weights) -> dict[str, Tensor]:
    """The state_dict of a torchvision weights enum member, from the torch hub
    cache or, where it is missing, downloaded into it by torchvision."""
    path = hub_file(weights)
    cached = os.path.isfile(path)
    try:
        return weights.get_state_dict(progress=False, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - urllib, socket, HTTP and disk errors all mean: no file
        if cached:
            raise WeightsError(f"{path}: the cached {weights} weights cannot be read ({error_summary(exc)}); "
                               "delete the file to fetch it again") from None
        raise WeightsError(f"{weights}: {os.path.basename(path)} is not in the torch hub cache "
                           f"({os.path.dirname(path)}) and downloading it failed ({error_summary(exc)}). "
                           f"Put the file from {weights.url} there, or connect to the internet once") from None


def load_state(model: nn.Module, state: dict[str, Tensor], source: str,
               class_layers: Optional[dict[str, Callable[[], None]]] = None) -> list[str]:
    """Loads `state` (torchvision's old R-CNN names included) into `model`,
    strictly. With `class_layers` (prefix -> its re-initialiser), `state` may
    also differ in the class count (fine-tuning): every other tensor loads
    strictly, and each class layer whose shape differs is re-initialised as the
    model's constructor does. Returns the re-initialised tensor names (empty
    when nothing was); any other mismatch is a WeightsError naming `source`."""
    state = upgrade_legacy_keys(state, model)
    class_layers = class_layers or {}
    missing, unexpected, wrong = mismatches(model, state)
    wrong_keys = [entry.split(":", 1)[0] for entry in wrong]
    in_class_layer = lambda key: any(key.startswith(prefix + ".") for prefix in class_layers)  # noqa: E731
    if not wrong or missing or unexpected or not all(in_class_layer(k) for k in wrong_keys):
        load_state_strict(model, state, source)
        return []
    layers = sorted({prefix for prefix in class_layers for key in wrong_keys if key.startswith(prefix + ".")})
    fresh = [key for key in model.state_dict() if any(key.startswith(p + ".") for p in layers)]
    for prefix in layers:
        class_layers[prefix]()
    result = model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    assert sorted(result.missing_keys) == sorted(fresh) and not result.unexpected_keys
    if not _other_rank():
        print(f"detkit: {source} has another class count; re-initialised {', '.join(fresh)}", file=sys.stderr)
    return fresh


def _other_rank() -> bool:
    """True in every distributed rank but the first (they load the same weights; one says so)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


# --- starting weights of zoo models ---------------------------------------------------------------


def starting_weights(name: str, weights: PathLike, pretrained: list[str]):
    """(state_dict, class names or None, source text) of `weights` for zoo model `name`."""
    if is_weights_name(weights):
        twin = name if name in PRETRAINED_MODELS else None
        member = resolve_weights(weights, twin, f"model {name!r}", pretrained)
        categories = member.meta.get("categories")
        return fetch_state_dict(member), (categories[1:] if categories else None), f"{member}"
    state, classes = read_weights(weights)
    return state, classes, os.fspath(weights)


def class_layers(model: nn.Module) -> dict[str, Callable[[], None]]:
    """The layers whose shape depends on the class count -> their constructor initialisation."""
    if isinstance(model, TinySSD):
        return model.class_layers()
    if isinstance(model, SSD):
        if hasattr(model.head, "class_layers"):  # SSDlite: only each map's last 1x1 conv has a class dimension
            return {f"head.{prefix}": init for prefix, init in model.head.class_layers().items()}
        return {"head.classification_head": model.head.classification_head.reset_parameters}
    layers = {"roi_heads.box_predictor": model.roi_heads.box_predictor.reset_parameters}
    if model.roi_heads.mask_predictor is not None:
        layers["roi_heads.mask_predictor.mask_fcn_logits"] = model.roi_heads.mask_predictor.reset_logits
    return layers


def load_backbone_weights(backbone: nn.Module, spec: Optional[PathLike]) -> None:
    """Loads ImageNet classification weights into `backbone` (their classifier
    dropped): a file, or a torchvision weights name of the backbone's twin
    ("IMAGENET1K_V1", "IMAGENET1K_FEATURES" for VGG-16, "DEFAULT", ...)."""
    if spec is None:
        return
    if is_weights_name(spec):
        member = backbone_member(backbone, spec)
        state, source = fetch_state_dict(member), f"{member}"
    else:
        (state, _), source = read_weights(spec, "backbone weights"), os.fspath(spec)
    try:
        backbone.load_imagenet(state)
    except (RuntimeError, KeyError) as exc:
        raise WeightsError(f"{source} does not fit {type(backbone).__name__}: {str(exc).splitlines()[0]}") from None


def backbone_member(backbone: nn.Module, spec: str):
    """The torchvision weights `spec` names for `backbone`: "DEFAULT" is the
    member that fits its input normalisation (VGG-16 for SSD: IMAGENET1K_FEATURES),
    and a member trained on other inputs is refused."""
    fitting = backbone.imagenet_weights
    what = type(backbone).__name__
    member = resolve_weights(fitting[0] if spec == "DEFAULT" and fitting else spec, backbone.torchvision_name, what)
    if fitting and member.name not in fitting:
        raise WeightsError(f"{member} expects other inputs than {what} is fed; it takes "
                           f"{type(member).__name__}.{{{', '.join(fitting)}}}")
    return member
