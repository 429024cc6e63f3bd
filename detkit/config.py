"""Typed configs: the schema, loading `configs/*.py`, `--set` overrides.

A config file is plain Python that assigns a `Config` to the name `config`:

    from detkit.config import Config, ModelConfig
    config = Config(name="ssd_shapes", model=ModelConfig(name="ssd300_resnet18", options={"width": 0.5}))

Overrides address fields by dotted path (`solver.lr=0.01`, `model.options.width=0.5`);
values are Python literals, or plain text for text fields. A config travels inside
every checkpoint as a dict (`to_dict` / `from_dict`), so a checkpoint needs nothing
else to be rebuilt.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import runpy
import traceback
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union


class ConfigError(ValueError):
    """A config file, dict or override is invalid; the message names it."""


# The metric names eval.key may take, per eval.metric (tests check them against the evaluators').
EVAL_KEYS = {"coco": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
             "voc": ("mAP",)}
# data.format's choices: the Shapes set generated, or a dataset read in one of five formats.
DATA_FORMATS = ("coco", "voc", "shapes", "yolo", "labelme", "cvat")
# solver.amp's choices (True, from configs written before "auto", means "fp16": CUDA's float16).
AMP_CHOICES = (False, True, "auto", "bf16", "fp16")
# The zoo's mask models, by torchvision's naming: only they predict masks.
MASK_MODEL_PREFIX = "maskrcnn_"


@dataclass
class ModelConfig:
    name: str = "ssd300_vgg16"  # a name from detkit.models.list_models()
    options: dict = field(default_factory=dict)  # builder keyword arguments (width, size, min_size, ...)
    # Where the backbone starts: an ImageNet state_dict file or a torchvision weights name
    # ("IMAGENET1K_V1", "IMAGENET1K_FEATURES" for VGG-16, "DEFAULT").
    backbone_weights: Optional[str] = None
    # Where the whole model starts: a detkit checkpoint, a state_dict file or a torchvision weights
    # name ("DEFAULT", "COCO_V1"); another class count than the data's fine-tunes (class layers anew).
    weights: Optional[str] = None


@dataclass
class ShapesConfig:
    """The synthetic Shapes set, generated once into data.root."""

    num_train: int = 1000
    num_val: int = 200
    image_size: int = 128
    preset: str = "basic"
    seed: int = 0


# data.train_split / data.val_split when not set, per format
SPLIT_DEFAULTS = {"voc": ("trainval", "test"), "yolo": ("train", "val")}


@dataclass
class DataConfig:
    # "coco", "voc", "shapes", or "yolo" (root: data.yaml or its folder; train_split, val_split: data.yaml's
    # split keys), "labelme" (root; train_images, val_images: the LabelMe folders under it), "cvat" (root;
    # train_ann, val_ann: the XML files; train_images, val_images: their image folders).
    format: str = "coco"
    root: str = "datasets/coco"  # coco: the image folder; voc: the VOCdevkit folder; shapes: the cache folder
    train_ann: str = "annotations/instances_train2017.json"  # coco, relative to root or absolute
    val_ann: str = "annotations/instances_val2017.json"
    train_images: str = "train2017"  # coco, relative to root
    val_images: str = "val2017"
    year: str = "2007"  # voc
    # voc image sets, yolo split keys; None: the format's own (voc: trainval / test, yolo: train / val)
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    # Training augmentation: "ssd" (the paper's), "light" (colour, horizontal flip), "flips" (colour,
    # horizontal and vertical flips: top-down or synthetic scenes), all at the square data.size; or, for
    # R-CNNs at a shortest edge drawn from data.min_size: "rcnn" (horizontal flip), "rcnn_light" (colour,
    # horizontal flip) or "rcnn_flips" (colour, horizontal and vertical flips).
    augment: str = "ssd"
    size: int = 300  # ssd, light and flips: the square training size
    min_size: list = field(default_factory=lambda: [800])  # rcnn: shortest-edge choices
    max_size: int = 1333
    masks: bool = False
    batch_size: int = 8  # per process
    num_workers: int = 2
    skip_invalid: bool = False
    # Region proposals for models on external proposals (fastrcnn_*, rcnn_*): "" none; "selective_search"
    # computes them once per split (mode "fast", at most max_proposals each) into <root>/proposals/; or a
    # detkit .npz proposals file for the training split (relative to root or absolute).
    proposals: str = ""
    max_proposals: int = 2000
    shapes: ShapesConfig = field(default_factory=ShapesConfig)


@dataclass
class SolverConfig:
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: Optional[float] = None
    # Mixed precision: "auto" (bfloat16 where the CPU has AMX or AVX512-BF16, or on a CUDA GPU that has
    # it, float16 on an older GPU, else float32), "bf16", "fp16" (CUDA only) or False (float32). A kind
    # the device lacks runs in float32 and says so. Losses, box coding, matching and the step stay float32.
    amp: Union[bool, str] = False
    # Exponential moving average of the weights (0 = off): evaluation, best.pth and detect() use it.
    # Its decay warms up as ema_decay * (1 - exp(-step / ema_tau)), as Ultralytics' ModelEMA does.
    ema_decay: float = 0.0
    ema_tau: float = 2000.0  # iterations


@dataclass
class ScheduleConfig:
    epochs: int = 12
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    decay: str = "multistep"  # "multistep" or "cosine"
    milestones: list = field(default_factory=lambda: [8, 11])  # epochs
    gamma: float = 0.1


@dataclass
class EvalConfig:
    period: int = 1  # evaluate every `period` epochs (and after the last)
    metric: str = "coco"  # "coco" or "voc"; the key metric below decides the best checkpoint
    key: str = "AP50"  # a COCO stat name, or "mAP" for voc
    iou_type: str = "bbox"
    num_images: int = 0  # evaluate on the first N validation images; 0 = all
    vis_images: int = 4  # validation images drawn into the work dir
    vis_score: float = 0.5
    # Also analyse each evaluation (detkit.evaluation.analyze): its error breakdown (TIDE's ΔAP per error type)
    # goes into metrics.jsonl, the last one's report.html and analysis.json into the work dir. COCO metric only.
    analyze: bool = False
    # Stop the run `patience` evaluations after the last improvement of eval.key (0: never stop early).
    patience: int = 0
    # Also log the training losses on the validation split (no augmentation) at each evaluation.
    val_loss: bool = True


@dataclass
class LogConfig:
    # TensorBoard event files in the work dir: None = on when the tensorboard package is installed,
    # True = required, False = off.
    tensorboard: Optional[bool] = None


@dataclass
class CheckpointConfig:
    # Also write last.pth every N iterations, so a kill loses at most N steps; --resume continues
    # mid-epoch exactly. 0: only at the end of each epoch.
    period_iters: int = 0


@dataclass
class Config:
    name: str = "detkit"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    log_period: int = 20  # iterations between metric log lines
    log: LogConfig = field(default_factory=LogConfig)
    keep_checkpoints: int = 1  # per-epoch checkpoints kept beside last.pth and best.pth
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Local DDP ranks on the CPU when not started by torchrun (tools/train.py spawns them; each gets
    # an equal share of the threads). data.batch_size is per rank.
    processes: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "Config":
        return _from_dict(cls, values, source)

    def validate(self, source: Optional[str] = None) -> "Config":
        """Checks choices and ranges; errors start with `source` (default: the name)."""
        where = source or self.name
        choices = [("data.format", self.data.format, DATA_FORMATS),
                   ("data.augment", self.data.augment, ("ssd", "light", "flips", "rcnn", "rcnn_light", "rcnn_flips")),
                   ("solver.optimizer", self.solver.optimizer, ("sgd", "adamw")),
                   ("schedule.decay", self.schedule.decay, ("multistep", "cosine")),
                   ("eval.metric", self.eval.metric, ("coco", "voc")),
                   ("eval.iou_type", self.eval.iou_type, ("bbox", "segm")),
                   ("solver.amp", self.solver.amp, AMP_CHOICES)]
        for key, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(f"{where}: {key} must be one of {list(allowed)}, got {value!r}")
        positive = [("data.batch_size", self.data.batch_size), ("schedule.epochs", self.schedule.epochs),
                    ("solver.lr", self.solver.lr), ("eval.period", self.eval.period), ("processes", self.processes),
                    ("data.max_proposals", self.data.max_proposals)]
        for key, value in positive:
            if not value > 0:
                raise ConfigError(f"{where}: {key} must be positive, got {value!r}")
        if not 0 <= self.solver.ema_decay < 1:
            raise ConfigError(f"{where}: solver.ema_decay must be in [0, 1) (0 = off), got {self.solver.ema_decay!r}")
        if not self.solver.ema_tau > 0:
            raise ConfigError(f"{where}: solver.ema_tau must be positive, got {self.solver.ema_tau!r}")
        if self.checkpoint.period_iters < 0:
            raise ConfigError(f"{where}: checkpoint.period_iters must be 0 (once per epoch) or positive, "
                              f"got {self.checkpoint.period_iters!r}")
        problem = self._inconsistency()
        if problem:
            raise ConfigError(f"{where}: {problem}")
        return self

    def _inconsistency(self) -> Optional[str]:
        """The first pair of fields that cannot work together, described; None if all fit.
        Checked at load time so a run does not fail hours in, at its first evaluation."""
        data, evaluation, schedule = self.data, self.eval, self.schedule
        masks_model = self.model.name.startswith(MASK_MODEL_PREFIX)
        if evaluation.key not in EVAL_KEYS[evaluation.metric]:
            return (f"eval.key {evaluation.key!r} is not a {evaluation.metric} metric; "
                    f"with eval.metric={evaluation.metric!r} use one of {list(EVAL_KEYS[evaluation.metric])}")
        if data.format == "voc" and evaluation.metric != "voc":
            return "data.format='voc' has no COCO ground truth to score against; set eval.metric=voc (key mAP)"
        if evaluation.iou_type == "segm" and evaluation.metric != "coco":
            return "eval.iou_type='segm' needs eval.metric='coco' (VOC scores boxes only)"
        if evaluation.analyze and evaluation.metric != "coco":
            return "eval.analyze=True analyses COCO's matching: it needs eval.metric='coco'"
        if evaluation.iou_type == "segm" and not masks_model:
            return f"eval.iou_type='segm' needs a mask model (maskrcnn_*), but model.name is {self.model.name!r}"
        if masks_model and not (data.masks or evaluation.iou_type == "segm"):
            return (f"model.name {self.model.name!r} learns masks: set data.masks=True (and eval.iou_type=segm "
                    "to score them)")
        if data.masks and not masks_model:
            return f"data.masks=True loads masks for a mask model, but model.name {self.model.name!r} predicts none"
        if data.augment.startswith("rcnn") and not (data.min_size and all(isinstance(s, int) and s > 0
                                                                          for s in data.min_size)):
            return f"data.min_size must list positive sizes for data.augment={data.augment!r}, got {data.min_size!r}"
        if schedule.decay == "multistep" and any(m <= 0 for m in schedule.milestones):
            return f"schedule.milestones are epochs and must be positive, got {schedule.milestones!r}"
        negative = [(k, v) for k, v in (("schedule.warmup_iters", schedule.warmup_iters),
                                        ("eval.num_images", evaluation.num_images),
                                        ("eval.patience", evaluation.patience),
                                        ("keep_checkpoints", self.keep_checkpoints)) if v < 0]
        if negative:
            return f"{negative[0][0]} must be >= 0, got {negative[0][1]!r}"
        return None


def load_config(path: Union[str, os.PathLike], overrides: Optional[list[str]] = None) -> Config:
    """Runs a config file and returns its `config`, with `overrides` applied."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        namespace = runpy.run_path(path, run_name="detkit_config")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except Exception as exc:  # the user's file: report where it failed, not our stack
        line = _line_in(exc, path)
        raise ConfigError(f"{path}{line}: {type(exc).__name__}: {exc}") from exc
    config = namespace.get("config")
    if not isinstance(config, Config):
        raise ConfigError(f"{path}: must assign a detkit.config.Config to the name 'config', "
                          f"found {type(config).__name__}")
    return apply_overrides(config, overrides or [], source=path)


def _line_in(exc: BaseException, path: str) -> str:
    """', line N' of the deepest traceback entry inside the config file."""
    if isinstance(exc, SyntaxError) and exc.lineno and exc.filename == path:
        return f", line {exc.lineno}"
    target = os.path.abspath(path)
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == target]
    return f", line {lines[-1]}" if lines else ""


def apply_overrides(config: Config, overrides: list[str], source: Optional[str] = None) -> Config:
    """Applies `key=value` strings in order and validates the result."""
    # A deep copy: the caller's config stays as it was.
    config = Config.from_dict(config.to_dict(), source or config.name)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. solver.lr=0.01)")
        _set_path(config, key.strip(), text.strip())
    return config.validate(source)


def _set_path(config: Config, key: str, text: str) -> None:
    parts = key.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict):  # free-form builder options: any key, literal values
            if last:
                node[part] = _literal(text, key)
            else:
                node = node.setdefault(part, {})
            continue
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            prefix = ".".join(parts[:depth])
            valid = ", ".join(f"{prefix}.{n}" if prefix else n for n in names)
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {valid}")
        if last:
            hint = typing.get_type_hints(type(node))[part]
            setattr(node, part, _coerce(text, hint, key))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node) and not isinstance(node, dict):
                raise ConfigError(f"config key {'.'.join(parts[:depth + 1])!r} is a value, not a section")


def _literal(text: str, key: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # plain words are text


def _coerce(text: str, hint: Any, key: str) -> Any:
    """Parses `text` for a field annotated `hint`: text fields take it as is."""
    optional = typing.get_origin(hint) is Union and type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    if optional and text in ("None", "null", ""):
        return None
    if base is str:
        return text
    if typing.get_origin(base) is Union:  # e.g. solver.amp: a bool or a word
        value = _literal(text, key)
        if not isinstance(value, typing.get_args(base)):
            kinds = " or ".join(a.__name__ for a in typing.get_args(base))
            raise ConfigError(f"config key {key!r} expects {kinds}, got {value!r}")
        return value
    if dataclasses.is_dataclass(base):
        raise ConfigError(f"config key {key!r} is a section; set its fields ({key}.<field>=...)")
    return _check_type(_literal(text, key), base, key)


def _check_type(value: Any, base: Any, key: str) -> Any:
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is list and isinstance(value, tuple):
        return list(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} expects {base.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, values: Any, source: str, prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{source}: unknown config key {where}{unknown[0]}; valid keys: "
                          + ", ".join(where + n for n in names))
    kwargs = {}
    for name, value in values.items():
        hint, key = hints[name], f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, source, key)
        elif value is None or hint is str or typing.get_origin(hint) is Union:
            kwargs[name] = value
        else:
            kwargs[name] = _check_type(value, hint, f"{source}: {key}")
    return cls(**kwargs)
