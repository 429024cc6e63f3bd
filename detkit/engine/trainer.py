"""The training loop: epochs of SGD/AdamW steps, evaluation, checkpoints,
resume, DistributedDataParallel under torchrun.

Work dir layout:
    last.pth, best.pth, epoch_NNNN.pth   checkpoints (detkit.engine.checkpoint)
    metrics.jsonl                        one JSON record per log line / evaluation
    metrics.json                         every number of the last evaluation
    curves.png                           loss and validation metric
    vis/*.jpg                            validation images with predicted boxes
    config.json                          the resolved config
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..config import Config
from ..data import collate
from ..evaluation import save_metrics
from ..jsonio import write_json_atomic
from . import distributed as dist
from .build import LRSchedule, build_datasets, build_model, build_optimizer
from .checkpoint import (CheckpointError, load_checkpoint, load_model_state, rng_state, save_checkpoint,
                         set_rng_state)
from .evaluate import evaluate, key_metric, summary
from .outputs import MetricsLog, write_outputs


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped, checkpoints untouched."""


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimizer steps taken
    best: Optional[float] = None  # best value of config.eval.key so far
    last_metrics: dict = field(default_factory=dict)


def train(config: Config, work_dir: str, resume: bool = False, device: Optional[str] = None,
          progress: bool = True) -> TrainState:
    """Trains `config` into `work_dir` (see the module doc); returns the final
    state. With resume, continues from work_dir/last.pth exactly where the
    uninterrupted run would be."""
    device_ = dist.local_device(device)
    dist.init_distributed(device_)
    rank, world = dist.get_rank(), dist.get_world_size()
    os.makedirs(work_dir, exist_ok=True)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    splits = _datasets_rank0_first(config)
    model = build_model(config.model, len(splits.classes) + 1).to(device_)
    optimizer = build_optimizer(config.solver, model)
    torch.manual_seed(config.seed + rank)  # augmentation and sampling differ between ranks
    loader, sampler, generator = _train_loader(splits.train, config, rank, world)
    schedule = LRSchedule(config.schedule, len(loader))
    state = TrainState()
    log = MetricsLog(os.path.join(work_dir, "metrics.jsonl"), enabled=dist.is_main_process())
    if resume:
        state = _resume(os.path.join(work_dir, "last.pth"), config, model, optimizer)
        log.truncate(state.iteration, state.epoch)
    elif dist.is_main_process():
        log.reset()
        write_json_atomic(os.path.join(work_dir, "config.json"), config.to_dict())
    runner = Runner(config, model, optimizer, schedule, device_, log, progress, work_dir)
    for epoch in range(state.epoch, config.schedule.epochs):
        sampler.set_epoch(epoch)
        generator.manual_seed(config.seed * 100_003 + epoch * world + rank)  # worker seeds, reproducible
        runner.run_epoch(loader, epoch, state)
        state.epoch = epoch + 1
        if state.epoch % config.eval.period == 0 or state.epoch == config.schedule.epochs:
            _evaluate_epoch(runner.bare_model, splits, config, device_, state, log)
        rng = dist.all_gather_object(rng_state())  # every rank's generators, so each resumes its own stream
        if dist.is_main_process():
            _save(work_dir, config, splits.classes, model, optimizer, state, rng)
        dist.barrier()
    if dist.is_main_process():
        write_outputs(work_dir, runner.bare_model, splits, config, device_, log.records())
    dist.barrier()
    return state


def _datasets_rank0_first(config: Config):
    """Rank 0 builds first, so the Shapes set is generated once, not raced."""
    if not dist.is_main_process():
        dist.barrier()
    splits = build_datasets(config)
    if dist.is_main_process():
        dist.barrier()
    return splits


def _train_loader(dataset, config: Config, rank: int, world: int):
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    generator = torch.Generator()
    loader = DataLoader(dataset, batch_size=config.data.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=config.data.num_workers, drop_last=True, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{config.name}: data.batch_size {config.data.batch_size} is larger than this rank's "
                         f"share of the {len(dataset)} training images")
    return loader, sampler, generator


class Runner:
    """One epoch of optimizer steps, with AMP on CUDA, gradient clipping and
    the NaN guard."""

    def __init__(self, config: Config, model: nn.Module, optimizer, schedule: LRSchedule,
                 device: torch.device, log: "MetricsLog", progress: bool, work_dir: str):
        self.config, self.optimizer, self.schedule, self.device = config, optimizer, schedule, device
        self.bare_model = model
        if device.type == "cpu" and hasattr(model, "convert_weights_layout"):
            model.convert_weights_layout()  # before DDP builds its gradient buckets
        self.model = (nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
                      if dist.is_initialized() else model)
        self.amp = config.solver.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.log, self.progress, self.work_dir = log, progress and dist.is_main_process(), work_dir

    def run_epoch(self, loader: DataLoader, epoch: int, state: TrainState) -> None:
        self.model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.config.schedule.epochs}", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        window, images_seen, started = [], 0, time.perf_counter()
        for images, targets in bar:
            losses = self.step(images, targets, state)
            window.append(losses)
            images_seen += len(images) * dist.get_world_size()
            if state.iteration % self.config.log_period == 0 or state.iteration == 1:
                speed = images_seen / (time.perf_counter() - started)
                record = self._log(window, epoch, state, speed)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", img_s=f"{speed:.1f}")
                window = []
        bar.close()

    def step(self, images, targets, state: TrainState) -> dict[str, float]:
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = [_training_target(t, self.device) for t in targets]
        lr = self.schedule.apply(self.optimizer, self.config.solver.lr, state.iteration)
        with torch.autocast(self.device.type, enabled=self.amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        if not dist.all_ranks_finite(loss):
            last = os.path.join(self.work_dir, "last.pth")
            kept = f"the last good checkpoint is {last}" if os.path.exists(last) else "no checkpoint was written yet"
            values = {k: v.item() for k, v in losses.items()}
            raise NonFiniteLossError(f"loss is not finite at iteration {state.iteration + 1} (epoch {state.epoch + 1}"
                                     f", lr {lr:.3g}): {values}; training stopped, {kept}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.solver.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.bare_model.parameters(), self.config.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.iteration += 1
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}, "lr": lr}

    def _log(self, window: list[dict], epoch: int, state: TrainState, speed: float) -> dict:
        mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
        mean = dist.mean_over_ranks(mean)
        record = {"type": "train", "epoch": epoch + 1, "iteration": state.iteration, **mean, "images_per_s": speed}
        self.log.write(record)
        return record


def _training_target(target: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Boxes, labels (and masks) on the device; crowd regions are not objects
    to learn, so they are dropped here as detectron2 does."""
    keep = ~target["iscrowd"] if "iscrowd" in target else None
    out = {}
    for key in ("boxes", "labels", "masks"):
        if key in target:
            value = target[key] if keep is None else target[key][keep]
            out[key] = value.to(device, non_blocking=True)
    return out


def _evaluate_epoch(model: nn.Module, splits, config: Config, device: torch.device, state: TrainState,
                    log: "MetricsLog") -> None:
    metrics = evaluate(model, splits.val, config.eval.metric, splits.classes, device, gt=splits.val_ann,
                       iou_type=config.eval.iou_type, num_images=config.eval.num_images,
                       batch_size=config.data.batch_size)
    if metrics is None:  # not rank 0
        return
    value = key_metric(metrics, config.eval.key)
    state.last_metrics = summary(metrics)
    improved = state.best is None or value > state.best
    state.best = value if improved else state.best
    state.last_metrics["improved"] = improved
    log.write({"type": "eval", "epoch": state.epoch, "iteration": state.iteration, "images": metrics.images,
               **summary(metrics)})
    save_metrics(os.path.join(log.folder, "metrics.json"), metrics)
    if log.enabled:
        tqdm.write(f"epoch {state.epoch}: {config.eval.key} {value:.4f} (best {state.best:.4f})")


def _save(work_dir: str, config: Config, classes: list[str], model: nn.Module, optimizer,
          state: TrainState, rng: list[dict]) -> None:
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
                  "classes": list(classes), "epoch": state.epoch, "iteration": state.iteration,
                  "best": state.best, "metrics": {k: v for k, v in state.last_metrics.items() if k != "improved"},
                  "rng": rng}
    save_checkpoint(os.path.join(work_dir, f"epoch_{state.epoch:04d}.pth"), checkpoint)
    _prune(work_dir, config.keep_checkpoints)
    if state.last_metrics.pop("improved", False):
        save_checkpoint(os.path.join(work_dir, "best.pth"), checkpoint)
    save_checkpoint(os.path.join(work_dir, "last.pth"), checkpoint)


def _prune(work_dir: str, keep: int) -> None:
    epochs = sorted(f for f in os.listdir(work_dir) if f.startswith("epoch_") and f.endswith(".pth"))
    for name in epochs[:max(0, len(epochs) - keep)]:
        os.remove(os.path.join(work_dir, name))


def _resume(path: str, config: Config, model: nn.Module, optimizer) -> TrainState:
    """Loads last.pth; the checkpoint must be of the same model and classes."""
    if not os.path.exists(path):
        raise CheckpointError(f"--resume: no checkpoint to resume from at {path}")
    checkpoint = load_checkpoint(path)
    saved = Config.from_dict(checkpoint["config"], path)
    if saved.model.name != config.model.name or saved.model.options != config.model.options:
        raise CheckpointError(f"{path}: the checkpoint is of model {saved.model.name} {saved.model.options}, "
                              f"the config asks for {config.model.name} {config.model.options}")
    load_model_state(model, checkpoint["model"], path)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: the optimizer state does not fit ({exc})") from None
    states, rank = checkpoint["rng"], dist.get_rank()
    set_rng_state(states[rank] if rank < len(states) else states[0])
    if len(states) != dist.get_world_size():  # another world size: derive a distinct stream per rank
        torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + rank)
    return TrainState(epoch=int(checkpoint["epoch"]), iteration=int(checkpoint["iteration"]),
                      best=checkpoint.get("best"), last_metrics=dict(checkpoint.get("metrics") or {}))
