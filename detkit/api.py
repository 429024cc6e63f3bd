"""The one-line entry points: `load_model(checkpoint or zoo name)` and `detect(images, checkpoint or zoo name)`,
either run by an inference runtime of detkit.runtimes ("eager", "fused", ...)."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import models, runtimes
from .config import MASK_MODEL_PREFIX, Config, ConfigError, DataConfig, EvalConfig, ModelConfig
from .data.images import image_files, read_image
from .engine.build import build_model
from .engine.checkpoint import CheckpointError, checkpoint_classes, load_checkpoint, load_model_state

ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Any]  # Any: a PIL image
# Sample images for runtimes that calibrate: a folder or glob pattern of images, or a list of images.
Calibration = Union[str, os.PathLike, Sequence[Any], None]

# detect(images, "model.pth") in a loop must not reload the file for every call: it keeps
# the one model it loaded last, keyed by (path, file modification time, device, runtime,
# calibration), and reloads when any of them changes. clear_model_cache() frees it.
_MODEL_CACHE: dict[tuple, nn.Module] = {}
# Calibration images given as objects (arrays, tensors) are keyed by the identity of their
# list; holding the list here keeps that id from passing to another object meanwhile.
_CACHE_PINNED: list = []


def clear_model_cache() -> None:
    """Frees the model that detect() keeps from the checkpoint path it was last given."""
    _MODEL_CACHE.clear()
    _CACHE_PINNED.clear()


def load_model(checkpoint: Union[str, os.PathLike], device: Optional[Union[str, torch.device]] = None,
               runtime: str = "eager", calibration: Calibration = None) -> nn.Module:
    """A model for inference on `device` (default: CUDA if available, else the CPU):
    the one saved in a detkit checkpoint (it carries its config and class names),
    or, given a zoo name with pretrained weights ("fasterrcnn_resnet50_fpn"; see
    detkit.models.pretrained_models()), that model with torchvision's default
    weights and COCO's class names. `model.classes` holds the names (label l is
    classes[l - 1]); `model.config` the config it was built from.

    runtime: one of detkit.runtimes.RUNTIMES. "eager" (the default): the model
        itself in eval mode; "fused": a copy with its BatchNorms folded into the
        convolutions (outputs change by float rounding only); the others as
        detkit.runtimes describes. The result is
        detkit.runtimes.optimize(model, runtime, calibration), keeping
        .classes and .config.
    calibration: sample images for runtimes that calibrate (int8): a folder or
        a glob pattern of images (passed on as the sorted list of their paths),
        or a list of image paths, arrays or tensors; the other runtimes ignore it.
    """
    runtimes.check_runtime(runtime)  # before anything is loaded
    name = os.fspath(checkpoint)
    model = _pretrained(name) if _is_zoo_name(name) else _from_checkpoint(name)
    device = torch.device(device) if device is not None else _default_device()
    return optimized(model.to(device).eval(), runtime, calibration)


def optimized(model: nn.Module, runtime: str, calibration: Calibration = None, int8_engine: str = "auto") -> nn.Module:
    """detkit.runtimes.optimize(model, runtime, calibration, int8_engine), a folder
    or glob of calibration images expanded to their paths; .classes and .config kept."""
    result = runtimes.optimize(model, runtime, calibration_inputs(calibration), int8_engine)
    for attribute in ("classes", "config"):
        if hasattr(model, attribute) and not hasattr(result, attribute):
            setattr(result, attribute, getattr(model, attribute))
    return result


def calibration_inputs(calibration: Calibration) -> Optional[list]:
    """None, or a list: a folder or glob pattern becomes the sorted paths of its
    images (an error if there are none); a list is passed on as given."""
    if calibration is None:
        return None
    if isinstance(calibration, (str, os.PathLike)):
        return image_files(os.fspath(calibration))
    if isinstance(calibration, (np.ndarray, torch.Tensor)):
        raise TypeError("calibration: give a list of images (or a folder or glob), not one array")
    return list(calibration)


def _is_zoo_name(name: str) -> bool:
    return not os.path.exists(name) and name in models.list_models()


def _pretrained(name: str) -> nn.Module:
    """A zoo model with its torchvision DEFAULT weights, and a config that says so."""
    if name not in models.pretrained_models():
        raise ValueError(f"{name} has no pretrained weights to load by name; models that do: "
                         f"{', '.join(models.pretrained_models())}; otherwise give a checkpoint path")
    iou_type = "segm" if name.startswith(MASK_MODEL_PREFIX) else "bbox"
    config = Config(name=name, model=ModelConfig(name=name, weights="DEFAULT"),
                    data=DataConfig(masks=iou_type == "segm"), eval=EvalConfig(iou_type=iou_type, key="AP"))
    model = build_model(config.model, num_classes=None)
    model.config = config.validate()
    return model


def _from_checkpoint(path: str) -> nn.Module:
    state = load_checkpoint(path)
    try:
        config = Config.from_dict(state["config"], path)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is invalid: {exc}") from None
    classes = checkpoint_classes(state, path)
    model_config = config.model
    model_config.weights, model_config.backbone_weights = None, None  # the checkpoint holds every weight
    model = build_model(model_config, num_classes=len(classes) + 1)
    load_model_state(model, state["model"], path)
    model.classes = list(classes)
    model.config = config
    return model


def detect(images: Union[ImageInput, Sequence[ImageInput]], checkpoint: Union[str, os.PathLike, nn.Module],
           score_threshold: float = 0.5, device: Optional[Union[str, torch.device]] = None,
           bgr: bool = False, runtime: str = "eager", calibration: Calibration = None) -> list[dict[str, Any]]:
    """Runs a detector on one image or a list of images.

    images: file paths, H x W x 3 uint8 numpy arrays (RGB; BGR as OpenCV reads
        them with bgr=True), PIL images, or float tensors [3, H, W] in [0, 1].
    checkpoint: a detkit checkpoint path, a zoo name with pretrained weights
        ("maskrcnn_resnet50_fpn": torchvision's COCO weights and class names),
        or a model from load_model. The model of the last path or name is kept
        in memory (one model) until the path, the file, the device, the runtime
        or the calibration changes or clear_model_cache() is called.
    runtime, calibration: as in load_model. A model object is run as given
        with runtime="eager" (the default) and as
        detkit.runtimes.optimize(model, runtime, calibration) with another
        runtime: a new copy on every call, so to detect repeatedly optimize once
        (load_model(checkpoint, runtime=...) or detkit.runtimes.optimize) and
        pass that model.
    Returns one dict per image: {"boxes": Tensor[N, 4] (x1, y1, x2, y2) in the
    image's pixels, "scores": Tensor[N], "labels": Tensor[N] (1..K),
    "class_names": list[str], and "masks": Tensor[N, 1, H, W] for Mask R-CNN},
    keeping detections with score >= score_threshold.
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    runtimes.check_runtime(runtime)  # before anything is loaded
    if isinstance(checkpoint, (str, os.PathLike)):
        model = _cached_model(checkpoint, device, runtime, calibration)
    else:
        model = checkpoint if runtime == "eager" else optimized(checkpoint, runtime, calibration)
    classes = getattr(model, "classes", None)
    if classes is None:
        raise ValueError("the model has no .classes; load it with detkit.load_model(checkpoint)")
    single = not isinstance(images, (list, tuple))
    batch = [images] if single else list(images)
    model_device = _model_device(model)
    tensors = [to_tensor(image, bgr, f"images[{n}]").to(model_device) for n, image in enumerate(batch)]
    if isinstance(model, nn.Module):
        model.eval()
    with torch.no_grad():
        outputs = model(tensors) if tensors else []
    return [_keep(output, classes, score_threshold) for output in outputs]


def _cached_model(checkpoint, device, runtime: str = "eager", calibration: Calibration = None) -> nn.Module:
    name = os.fspath(checkpoint)
    path = name if _is_zoo_name(name) else os.path.abspath(name)
    stamp = os.stat(path).st_mtime_ns if os.path.exists(path) else None
    if isinstance(calibration, (str, os.PathLike)):
        calibration = calibration_inputs(calibration)  # the folder's files now: a changed folder reloads
    elif calibration is not None and not isinstance(calibration, (list, tuple, np.ndarray, torch.Tensor)):
        calibration = list(calibration)  # a generator: read once, here
    key = (path, stamp, str(device), runtime, _calibration_key(calibration))
    if key not in _MODEL_CACHE:
        clear_model_cache()  # free the old model before loading the new one
        _MODEL_CACHE[key] = optimized(load_model(path, device), runtime, calibration)
        _CACHE_PINNED.append(calibration)
    return _MODEL_CACHE[key]


def _calibration_key(calibration) -> Optional[tuple]:
    """Image paths by value; a list of arrays or tensors by its identity."""
    if calibration is None:
        return None
    if not isinstance(calibration, (np.ndarray, torch.Tensor)) and \
            all(isinstance(item, (str, os.PathLike)) for item in calibration):
        return ("paths", tuple(os.path.abspath(item) for item in calibration))
    return ("object", id(calibration))


def _model_device(model) -> torch.device:
    """The device of the model's parameters; a runtime's module without any: its .device, else the CPU."""
    parameters = model.parameters() if isinstance(model, nn.Module) else iter(())
    first = next(parameters, None)
    if first is not None:
        return first.device
    return torch.device(getattr(model, "device", "cpu"))


def to_tensor(image: ImageInput, bgr: bool = False, name: str = "image") -> torch.Tensor:
    """Tensor[3, H, W] float in [0, 1] from any accepted image kind."""
    if isinstance(image, (str, os.PathLike)):
        return _from_array(read_image(image), name)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"{name}: a tensor image must be [3, H, W], got {list(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"{name}: a tensor image must be float in [0, 1], got {image.dtype}")
        return image
    if isinstance(image, np.ndarray):
        array = image[..., ::-1] if bgr and image.ndim == 3 else image
        return _from_array(array, name)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        return _from_array(np.asarray(image.convert("RGB")), name)
    raise TypeError(f"{name}: expected a path, numpy array, PIL image or tensor, got {type(image).__name__}")


def _from_array(array: np.ndarray, name: str) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name}: expected an H x W x 3 array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 array, got {array.dtype}")
    return torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255)


def _keep(output: dict[str, torch.Tensor], classes: Sequence[str], score_threshold: float) -> dict[str, Any]:
    keep = output["scores"] >= score_threshold
    result: dict[str, Any] = {key: value[keep] for key, value in output.items()}
    result["class_names"] = [classes[label - 1] for label in result["labels"].tolist()]
    return result


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
