"""Builders: a `Config` in, datasets, model, optimizer and schedule out.
The only place (with detkit.models) that reads configs; everything it builds
takes plain values."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from .. import models
from ..config import SPLIT_DEFAULTS, Config, ConfigError, DataConfig, ModelConfig, ScheduleConfig, SolverConfig
from ..data import CocoDetection, VOCDetection, shapes
from ..data.cvat import CVATDetection
from ..data.labelme import LabelMeDetection
from ..data.yolo import YOLODetection, yolo_splits
from ..data import proposals as proposal_files
from ..data.proposal_lookup import ProposalLookup
from ..data import transforms as T


@dataclass
class DataSplits:
    train: Any
    val: Any
    classes: list[str]
    # The COCO ground truth of the validation split: a file, the records read (YOLO, LabelMe, CVAT), None for VOC.
    val_ann: Optional[Union[str, dict]]


def train_transforms(data: DataConfig) -> Callable:
    if data.augment == "ssd":
        return T.ssd_train(data.size)
    if data.augment == "rcnn":
        return T.rcnn_train(tuple(data.min_size), data.max_size)
    # Colour and flips only, for sets framed like their validation split: at the square size
    # (SSD) or at a shortest edge drawn from min_size (R-CNN, multi-scale training).
    vertical = data.augment in ("flips", "rcnn_flips")
    flips = [T.RandomHorizontalFlip()] + ([T.RandomVerticalFlip()] if vertical else [])
    resize = (T.ResizeShortestEdge(tuple(data.min_size), data.max_size) if data.augment.startswith("rcnn")
              else T.Resize(data.size))
    return T.Compose([T.PhotometricDistort(), *flips, resize, T.ToTensor()])


def eval_transforms() -> Callable:
    """Evaluation images go in at their own size: the model resizes them and
    maps its boxes back, so predictions are in the file's pixels."""
    return T.Compose([T.ToTensor()])


def prepare_shapes(data: DataConfig) -> shapes.ShapesPaths:
    """Generates the Shapes set into data.root once. It is written to a
    temporary folder and renamed, so an interrupted run leaves no half set."""
    spec = data.shapes
    root = os.path.abspath(os.path.join(data.root, f"{spec.preset}_{spec.image_size}px_{spec.num_train}_"
                                                   f"{spec.num_val}_seed{spec.seed}"))
    if spec.preset not in shapes.PRESETS:
        raise ValueError(f"data.shapes.preset must be one of {sorted(shapes.PRESETS)}, got {spec.preset!r}")
    classes = shapes.PRESETS[spec.preset].classes
    if not os.path.isdir(root):
        os.makedirs(os.path.dirname(root), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-shapes-", dir=os.path.dirname(root))
        try:
            shapes.generate(tmp, spec.num_train, spec.num_val, spec.image_size, spec.seed, spec.preset)
            os.rename(tmp, root)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(root):  # another process may have won the race; otherwise it is an error
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return shapes.ShapesPaths(root, classes)


def build_datasets(config: Config, proposals: bool = True) -> DataSplits:
    """The training and validation splits; proposals=False leaves out the
    training split's region proposals (data.proposals), which only training reads."""
    data = config.data if proposals else dataclasses.replace(config.data, proposals="")
    masks = data.masks or config.eval.iou_type == "segm"
    if data.format == "shapes":
        paths = prepare_shapes(data)
        if config.eval.metric == "voc":
            return _voc_splits(paths.voc_root, "2007", "train", "val", list(paths.classes), data)
        return _coco_splits(paths.image_root, paths.image_root, paths.coco_train, paths.coco_val, masks, data)
    if data.format == "voc":
        from ..data import VOC_CLASSES
        return _voc_splits(data.root, data.year, *splits_of(data), list(VOC_CLASSES), data)
    if data.format in ("yolo", "labelme", "cvat"):
        return _record_splits(masks, data)
    under = lambda path: path if os.path.isabs(path) else os.path.join(data.root, path)  # noqa: E731
    return _coco_splits(under(data.train_images), under(data.val_images), under(data.train_ann),
                        under(data.val_ann), masks, data)


def splits_of(data: DataConfig) -> tuple[str, str]:
    """(training split, validation split): data.train_split / val_split, or the format's own."""
    train, val = SPLIT_DEFAULTS.get(data.format, (None, None))
    return data.train_split or train, data.val_split or val


def _coco_splits(train_images, val_images, train_ann, val_ann, masks: bool, data: DataConfig) -> DataSplits:
    train = CocoDetection(train_images, train_ann, train_transforms(data), with_masks=masks,
                          skip_invalid=data.skip_invalid)
    # The validation split has masks too for a mask model: its validation loss has a mask term.
    val = CocoDetection(val_images, val_ann, eval_transforms(), with_masks=masks, skip_invalid=data.skip_invalid)
    _attach_proposals(train, data, os.path.splitext(os.path.basename(train_ann))[0],
                      os.path.dirname(os.path.abspath(train_ann)))
    return DataSplits(train, val, train.classes, val_ann)


def _voc_splits(root, year, train_split, val_split, classes, data: DataConfig) -> DataSplits:
    train = VOCDetection(root, year, train_split, transforms=train_transforms(data), classes=classes,
                         skip_invalid=data.skip_invalid)
    val = VOCDetection(root, year, val_split, keep_difficult=True, transforms=eval_transforms(), classes=classes,
                       skip_invalid=data.skip_invalid)
    _attach_proposals(train, data, train_split, train.root)
    return DataSplits(train, val, classes, None)


def _record_splits(masks: bool, data: DataConfig) -> DataSplits:
    """A YOLO, LabelMe or CVAT set: CocoDetections over the records read, the
    validation split's records its COCO ground truth. Both splits share the
    training split's classes (labels 1..K)."""
    under = lambda path: path if os.path.isabs(path) else os.path.join(data.root, path)  # noqa: E731
    train_options = {"transforms": train_transforms(data), "with_masks": masks, "skip_invalid": data.skip_invalid}
    val_options = {"transforms": eval_transforms(), "with_masks": masks, "skip_invalid": data.skip_invalid}
    if data.format == "yolo":
        found, (train_split, val_split) = yolo_splits(data.root), splits_of(data)
        for key, split in (("data.train_split", train_split), ("data.val_split", val_split)):
            if split not in found:
                raise ConfigError(f"{key}={split!r} is not a split of {data.root}'s data.yaml; it has {found}")
        train = YOLODetection(data.root, train_split, **train_options)
        val = YOLODetection(data.root, val_split, **val_options)
        tag, folder = train_split, os.path.dirname(os.path.abspath(train.ann_file))
    elif data.format == "labelme":
        train = LabelMeDetection(under(data.train_images), **train_options)
        val = LabelMeDetection(under(data.val_images), classes=train.classes, **val_options)
        tag, folder = "labelme", train.ann_file
    else:
        train = CVATDetection(under(data.train_ann), under(data.train_images), **train_options)
        val = CVATDetection(under(data.val_ann), under(data.val_images), **val_options)
        if val.classes != train.classes:  # labels are numbered in <meta>'s order: another order is other labels
            raise ValueError(f"data.val_ann {under(data.val_ann)}: its labels {val.classes} are not data.train_ann's "
                             f"{train.classes}")
        tag = os.path.splitext(os.path.basename(data.train_ann))[0]
        folder = os.path.dirname(os.path.abspath(train.ann_file))
    _attach_proposals(train, data, tag, folder)
    return DataSplits(train, val, train.classes, val.records.coco)


def _attach_proposals(train, data: DataConfig, split: str, folder: str) -> None:
    """Gives the training split its region proposals (data.proposals): selective
    search computed once into <folder>/proposals/ (resumable, reused by later
    runs), or a proposals file. Evaluation needs none: the model computes its own."""
    if not data.proposals:
        return
    if data.proposals == "selective_search":
        path = os.path.join(folder, "proposals", f"{split}_selective_search_fast_{data.max_proposals}.npz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        found = proposal_files.compute_proposals(train, path, "fast", data.max_proposals, progress=sys.stderr.isatty())
    else:
        path = data.proposals if os.path.isabs(data.proposals) else os.path.join(data.root, data.proposals)
        found = proposal_files.load_proposals(path)
    train.proposals = ProposalLookup(found, train.ids, path)


def build_model(model: ModelConfig, num_classes: Optional[int]) -> nn.Module:
    """The named model for `num_classes` (background included; None: the
    starting weights' count), with its starting weights loaded: a file or a
    torchvision weights name; weights of another class count fine-tune (see
    models.build). An option the model does not take is a ModelOptionError."""
    options = dict(model.options)
    for key, instead in (("num_classes", "it comes from the data"), ("weights", "set model.weights")):
        if key in options:
            raise ConfigError(f"model.options.{key} is not a model option: {instead}")
    if model.backbone_weights is not None:
        if "backbone_weights" in options:
            raise ConfigError("model.backbone_weights and model.options.backbone_weights are both set; keep one")
        options["backbone_weights"] = model.backbone_weights
    return models.build(model.name, num_classes=num_classes, weights=model.weights or None, **options)


def build_optimizer(solver: SolverConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; biases and norm weights (1-d tensors) get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": solver.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer, options = ((torch.optim.SGD, {"momentum": solver.momentum}) if solver.optimizer == "sgd" else
                          (torch.optim.AdamW, {}))
    try:  # one fused kernel for all parameters: 5x faster than the per-tensor loop on the CPU (torch >= 2.4)
        return optimizer(groups, lr=solver.lr, fused=True, **options)
    except (RuntimeError, TypeError):
        return optimizer(groups, lr=solver.lr, **options)


class LRSchedule:
    """The learning-rate factor at an iteration: linear warmup from
    warmup_factor, then step decay at epoch milestones or cosine to zero.
    A pure function of the iteration, so resuming needs only the iteration."""

    def __init__(self, schedule: ScheduleConfig, iters_per_epoch: int):
        self.warmup_iters = schedule.warmup_iters
        self.warmup_factor = schedule.warmup_factor
        self.decay = schedule.decay
        self.milestones = [m * iters_per_epoch for m in schedule.milestones]
        self.gamma = schedule.gamma
        self.total = max(1, schedule.epochs * iters_per_epoch)

    def factor(self, iteration: int) -> float:
        warmup = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warmup = self.warmup_factor * (1 - alpha) + alpha
        if self.decay == "cosine":
            return warmup * 0.5 * (1 + math.cos(math.pi * min(iteration, self.total) / self.total))
        return warmup * self.gamma ** sum(iteration >= m for m in self.milestones)

    def apply(self, optimizer: torch.optim.Optimizer, base_lr: float, iteration: int) -> float:
        lr = base_lr * self.factor(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
