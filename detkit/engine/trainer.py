"""The training loop: epochs of SGD/AdamW steps, evaluation, checkpoints,
resume, DistributedDataParallel under torchrun.

Work dir layout:
    last.pth, best.pth, epoch_NNNN.pth   checkpoints (detkit.engine.checkpoint)
    metrics.jsonl                        one JSON record per log line / evaluation
    events.out.tfevents.*                the same numbers for TensorBoard (log.tensorboard)
    metrics.json                         every number of the last evaluation
    curves.png                           loss and validation metric
    vis/*.jpg                            validation images with predicted boxes
    config.json                          the resolved config

last.pth is written after every epoch and, with config.checkpoint.period_iters = N,
every N iterations. `resume` continues from it exactly, mid-epoch too: the same
weights at the end as the uninterrupted run, bit for bit on the CPU. Three
things make that hold:
  - the sampler can start an epoch at batch k (ResumableSampler), so the
    batches already taken are skipped by index, without loading their images;
  - each sample's augmentation is drawn from generators seeded by (seed, epoch,
    index) (SeededSamples), not from the DataLoader worker's stream, which
    depends on every sample that worker handled before (and would differ after
    a skip, or with another num_workers);
  - the checkpoint holds every rank's main-process generators, the DataLoader
    generator as the epoch began, the optimizer, the gradient scaler, the
    weights' moving average (solver.ema_decay) and the metrics log lines not
    yet written.

With solver.ema_decay the checkpoint's "model" is the moving average (what
evaluation, best.pth, detect() and fine-tuning use) and "train_weights" the
weights being trained. eval.patience stops the run that many evaluations after
the last improvement of eval.key. The validation loss is logged at every
evaluation, its random draws seeded by (seed, epoch) so that it takes nothing
from the training streams.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import Config
from ..data import collate
from ..evaluation import save_metrics, write_report
from ..io.jsonio import check_writable_folder, remove_temp_files, write_json_atomic
from ..io.progress import ProgressBar
from . import distributed as dist
from .build import LRSchedule, build_datasets, build_model, build_optimizer
from .checkpoint import (CheckpointError, check_checkpoint_space, load_checkpoint, load_model_state, rng_state,
                         save_checkpoint, set_rng_state)
from .ema import ModelEMA
from .evaluate import evaluate, key_metric, loss_target, summary, validation_loss
from .outputs import MetricsLog, draw_validation, write_outputs
from .precision import single_pixel_convolutions_at_stride_one, training_precision
from .tracking import Tracker, build_trackers


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped, checkpoints untouched."""


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimizer steps taken
    epoch_iteration: int = 0  # steps taken in the epoch under way (0 between epochs)
    best: Optional[float] = None  # best value of config.eval.key so far
    last_metrics: dict = field(default_factory=dict)
    evals_since_best: int = 0  # evaluations since eval.key last improved
    stopped: str = ""  # why the run stopped before schedule.epochs (eval.patience); "" if it did not


def train(config: Config, work_dir: str, resume: bool = False, device: Optional[str] = None,
          progress: bool = True, trackers: Sequence[Tracker] = ()) -> TrainState:
    """Trains `config` into `work_dir` (see the module doc); returns the final
    state. With resume, continues from work_dir/last.pth exactly where the
    uninterrupted run would be. trackers (detkit.engine.tracking) receive
    every logged record on rank 0, beside TensorBoard's when log.tensorboard."""
    device_ = dist.local_device(device)
    dist.init_distributed(device_)
    rank, world = dist.get_rank(), dist.get_world_size()
    if dist.is_main_process():  # the only rank that writes into the work dir
        check_writable_folder(work_dir, "work dir")
        remove_temp_files(work_dir)  # what a killed checkpoint write left; never a finished file
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    splits = _rank0_first(build_datasets, config)
    # Resuming, last.pth holds every weight: the starting weights are neither read nor fetched again.
    model_config = replace(config.model, weights=None, backbone_weights=None) if resume else config.model
    model = _rank0_first(build_model, model_config, len(splits.classes) + 1).to(device_)
    optimizer = build_optimizer(config.solver, model)
    if dist.is_main_process():
        check_checkpoint_space(work_dir, _checkpoint_bytes(model, optimizer), config.keep_checkpoints + 3)
    _seed_main_process(config.seed + rank)  # main-process randomness (e.g. RoI sampling) differs between ranks
    loader, sampler, generator = _train_loader(splits.train, config, rank, world)
    iters_per_epoch = len(loader)
    schedule = LRSchedule(config.schedule, iters_per_epoch)
    state, resumed = TrainState(), {}
    if resume:
        state, resumed = _resume(os.path.join(work_dir, "last.pth"), config, model, optimizer, iters_per_epoch)
    main = dist.is_main_process()
    log = MetricsLog(os.path.join(work_dir, "metrics.jsonl"), enabled=main, trackers=list(trackers) + (
        build_trackers(config.log.tensorboard, work_dir, state.iteration + 1 if resume else None) if main else []))
    if resume:
        log.truncate(state.iteration, state.epoch + 1 if state.epoch_iteration else state.epoch)
    elif main:
        log.reset()
        write_json_atomic(os.path.join(work_dir, "config.json"), config.to_dict())
    try:
        _train_epochs(config, work_dir, splits, model, optimizer, schedule, device_, log, progress, state, resumed,
                      loader, sampler, generator)
    finally:
        log.close()
    return state


def _train_epochs(config: Config, work_dir: str, splits, model: nn.Module, optimizer, schedule: LRSchedule,
                  device_: torch.device, log: MetricsLog, progress: bool, state: TrainState, resumed: dict,
                  loader: DataLoader, sampler: "ResumableSampler", generator: torch.Generator) -> None:
    world, rank, iters_per_epoch = dist.get_world_size(), dist.get_rank(), len(loader)
    runner = Runner(config, model, optimizer, schedule, device_, log, progress, work_dir)
    runner.load_state(resumed)
    saver = Checkpointer(work_dir, config, splits.classes, runner, generator)
    for epoch in range(state.epoch, config.schedule.epochs):
        if _out_of_patience(config, state, log):
            break
        sampler.set_epoch(epoch, start=state.epoch_iteration * config.data.batch_size)
        if state.epoch_iteration:  # resuming mid-epoch: the generator as this epoch began
            generator.set_state(resumed["loader"])
        else:
            generator.manual_seed(config.seed * 100_003 + epoch * world + rank)  # worker seeds, reproducible
        saver.epoch_started()
        runner.run_epoch(loader, epoch, state, iters_per_epoch, saver.save_mid_epoch)
        state.epoch, state.epoch_iteration = epoch + 1, 0
        if state.epoch % config.eval.period == 0 or state.epoch == config.schedule.epochs:
            _evaluate_epoch(runner.eval_model, splits, config, device_, state, log)
        saver.save_epoch(state)
    final_model = runner.eval_model  # on every rank: it gathers rank 0's average
    if dist.is_main_process():
        write_outputs(work_dir, final_model, splits, config, device_, log.records())
    dist.barrier()


def _out_of_patience(config: Config, state: TrainState, log: MetricsLog) -> bool:
    """Whether eval.patience evaluations have passed without an improvement of
    eval.key before the schedule's end; the first time, logs why the run stops.
    Every rank agrees: the count travels from rank 0 after each evaluation."""
    patience = config.eval.patience
    if not patience or state.evals_since_best < patience or state.epoch >= config.schedule.epochs:
        return False
    if not state.stopped:
        state.stopped = (f"early stop after epoch {state.epoch}: {config.eval.key} has not improved on "
                         f"{state.best:.4f} for {state.evals_since_best} evaluations (eval.patience={patience})")
        log.write({"type": "stop", "epoch": state.epoch, "iteration": state.iteration, "reason": state.stopped})
        if log.enabled:
            ProgressBar.write(state.stopped)
    return True


def _rank0_first(build: Callable, *args: Any):
    """build(*args) on rank 0 first, then on the others: the Shapes set is
    generated and pretrained weights are downloaded once, not raced."""
    if not dist.is_main_process():
        dist.barrier()
    built = build(*args)
    if dist.is_main_process():
        dist.barrier()
    return built


def _seed_main_process(seed: int) -> None:
    """torch, numpy and Python's generators: a run draws the same numbers in
    a fresh process as in a long-lived one (a test, a notebook)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About the size of one checkpoint: the weights, and the optimizer's
    per-weight moments (two for Adam(W), one for SGD's momentum)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) else 1
    return weights * (1 + moments)


class SeededSamples(Dataset):
    """`dataset` indexed by (epoch, index) keys: each sample is loaded and
    augmented with the torch (CPU), numpy and Python generators seeded from
    (seed, epoch, index), and the generators are put back afterwards.

    A DataLoader worker's own stream depends on every sample it handled
    before in the epoch, so skipping the first batches on resume (or another
    num_workers) would change every later augmentation. A stream per sample
    depends on nothing but the key. Put back, the generators of the main
    process (num_workers=0) are untouched, as the checkpoint recorded them."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with _seeded_generators(self.seed, epoch, index):
            return self.dataset[index]


@contextlib.contextmanager
def _seeded_generators(*key: int) -> Iterator[None]:
    high, low = (int(w) for w in np.random.SeedSequence([k % 2**64 for k in key]).generate_state(2))
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(high << 32 | low)  # CPU only: torch.manual_seed would reseed CUDA too
    np.random.seed(high)
    random.seed(low)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


class ResumableSampler(DistributedSampler):
    """DistributedSampler yielding (epoch, index) keys for SeededSamples, whose
    epoch can start part way: set_epoch(epoch, start) skips this rank's first
    `start` samples by index (nothing is loaded for them)."""

    start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, index) for index in indices])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def _train_loader(dataset, config: Config, rank: int, world: int):
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    generator = torch.Generator()
    loader = DataLoader(SeededSamples(dataset, config.seed), batch_size=config.data.batch_size, sampler=sampler,
                        collate_fn=collate, num_workers=config.data.num_workers, drop_last=True, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{config.name}: data.batch_size {config.data.batch_size} is larger than this rank's "
                         f"share of the {len(dataset)} training images")
    return loader, sampler, generator


class Runner:
    """One epoch of optimizer steps, with autocast (solver.amp), gradient
    clipping, the NaN guard and the weights' moving average (solver.ema_decay)."""

    def __init__(self, config: Config, model: nn.Module, optimizer, schedule: LRSchedule,
                 device: torch.device, log: "MetricsLog", progress: bool, work_dir: str):
        self.config, self.optimizer, self.schedule, self.device = config, optimizer, schedule, device
        self.bare_model = model
        if device.type == "cpu" and hasattr(model, "convert_weights_layout"):
            model.convert_weights_layout()  # before DDP builds its gradient buckets
        self.ema = ModelEMA(model, config.solver.ema_decay, config.solver.ema_tau) if config.solver.ema_decay else None
        self.model = (nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
                      if dist.is_initialized() else model)
        self.precision = training_precision(config.solver.amp, device)
        if self.precision.dtype == torch.bfloat16 and device.type == "cpu":
            single_pixel_convolutions_at_stride_one(model)  # a CPU bfloat16 kernel's NaN (see precision.py)
        if config.solver.amp and dist.is_main_process():
            ProgressBar.write(self.precision.reason)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaled and device.type == "cuda")
        self.log, self.progress, self.work_dir = log, progress and dist.is_main_process(), work_dir
        self.window: list[dict[str, float]] = []  # step losses not yet averaged into a log line

    @property
    def eval_model(self) -> nn.Module:
        """What evaluation and the outputs use: the moving average when kept,
        rank 0's on every rank. (Each rank's average differs in the BatchNorm
        statistics, which DDP leaves per rank; rank 0's is the one checkpointed
        and resumed, so it is the one that is exact.)"""
        if self.ema is None:
            return self.bare_model
        dist.broadcast_module(self.ema.module)
        return self.ema.module

    def load_state(self, resumed: dict[str, Any]) -> None:
        """The gradient scaler, the moving average and the pending log window of
        a resumed run (a run that turns EMA on when resumed starts its average there)."""
        if resumed.get("scaler") and self.scaler.is_enabled():  # {} when saved without AMP
            self.scaler.load_state_dict(resumed["scaler"])
        if self.ema is not None and "ema" in resumed:
            self.ema.load(*resumed["ema"])
        self.window = list(resumed.get("window") or [])

    def run_epoch(self, loader: DataLoader, epoch: int, state: TrainState, iters_per_epoch: int,
                  save_mid_epoch: Callable[[TrainState], None]) -> None:
        """The epoch's remaining steps; every checkpoint.period_iters steps
        (unless the epoch ends there) calls save_mid_epoch on every rank."""
        self.model.train()
        period = self.config.checkpoint.period_iters
        bar = ProgressBar(loader, desc=f"epoch {epoch + 1}/{self.config.schedule.epochs}", disable=not self.progress,
                          dynamic_ncols=True, leave=False, initial=state.epoch_iteration, total=iters_per_epoch)
        images_seen, started = 0, time.perf_counter()
        for images, targets in bar:
            self.window.append(self.step(images, targets, state))
            state.epoch_iteration += 1
            images_seen += len(images) * dist.get_world_size()
            if state.iteration % self.config.log_period == 0 or state.iteration == 1:
                speed = images_seen / (time.perf_counter() - started)
                record = self._log(epoch, state, speed)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", img_s=f"{speed:.1f}")
            if period and state.iteration % period == 0 and state.epoch_iteration < iters_per_epoch:
                save_mid_epoch(state)
        self.window = []
        bar.close()

    def step(self, images, targets, state: TrainState) -> dict[str, float]:
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = [loss_target(t, self.device) for t in targets]
        lr = self.schedule.apply(self.optimizer, self.config.solver.lr, state.iteration)
        with torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.enabled):
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
        if self.ema is not None and dist.is_main_process():  # the others take rank 0's at evaluation
            self.ema.update(self.bare_model)
        state.iteration += 1
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}, "lr": lr}

    def _log(self, epoch: int, state: TrainState, speed: float) -> dict:
        mean = {k: sum(w[k] for w in self.window) / len(self.window) for k in self.window[0]}
        mean = dist.mean_over_ranks(mean)
        record = {"type": "train", "epoch": epoch + 1, "iteration": state.iteration, **mean, "images_per_s": speed}
        self.log.write(record)
        self.window = []
        return record


def _evaluate_epoch(model: nn.Module, splits, config: Config, device: torch.device, state: TrainState,
                    log: "MetricsLog") -> None:
    metrics = evaluate(model, splits.val, config.eval.metric, splits.classes, device, gt=splits.val_ann,
                       iou_type=config.eval.iou_type, num_images=config.eval.num_images,
                       batch_size=config.data.batch_size, analyze=config.eval.analyze)
    losses: Optional[dict[str, float]] = {}
    if config.eval.val_loss:
        with _seeded_generators(config.seed, state.epoch, -1):  # RoI sampling's draws; the training streams stay put
            losses = validation_loss(model, splits.val, device, config.eval.num_images, config.data.batch_size)
    if metrics is not None:  # rank 0
        _record_evaluation(model, metrics, losses, splits, config, device, state, log)
    # Every rank learns how long eval.key has not improved, to stop together (eval.patience).
    state.evals_since_best = dist.all_gather_object(state.evals_since_best)[0]


def _record_evaluation(model: nn.Module, metrics, losses: dict[str, float], splits, config: Config,
                       device: torch.device, state: TrainState, log: "MetricsLog") -> None:
    value = key_metric(metrics, config.eval.key)
    state.last_metrics = summary(metrics)
    improved = state.best is None or value > state.best
    state.best = value if improved else state.best
    state.evals_since_best = 0 if improved else state.evals_since_best + 1
    state.last_metrics["improved"] = improved
    record = {"type": "eval", "epoch": state.epoch, "iteration": state.iteration, "images": metrics.images,
              **summary(metrics), **losses}
    analysis = getattr(metrics, "analysis", None)
    if config.eval.analyze:  # ΔAP per error type, epoch by epoch; None while nothing is detected
        record["errors"] = analysis.summary() if analysis is not None else None
    log.write(record)
    save_metrics(os.path.join(log.folder, "metrics.json"), metrics)
    if analysis is not None and log.enabled and state.epoch == config.schedule.epochs:
        write_report(analysis, log.folder)  # the last evaluation's report.html and analysis.json
    if log.trackers:
        drawn = [image for _, image in draw_validation(model, splits, config, device)]
        log.write_evaluation(state.iteration, drawn, metrics.curves)
    if log.enabled:
        loss = f", validation loss {losses['val_loss']:.4f}" if losses else ""
        ProgressBar.write(f"epoch {state.epoch}: {config.eval.key} {value:.4f} (best {state.best:.4f}){loss}")


class Checkpointer:
    """Writes the work dir's checkpoints on rank 0, with every rank's
    generators and pending log lines. Every rank calls its save methods (they
    gather from all ranks)."""

    def __init__(self, work_dir: str, config: Config, classes: list[str], runner: Runner,
                 generator: torch.Generator):
        self.work_dir, self.config, self.classes, self.runner, self.generator = (work_dir, config, list(classes),
                                                                                 runner, generator)
        self.loader_state = generator.get_state()

    def epoch_started(self) -> None:
        """Records the DataLoader generator before the epoch's iterator draws
        its worker seeds from it; a mid-epoch resume starts from this state."""
        self.loader_state = self.generator.get_state()

    def save_mid_epoch(self, state: TrainState) -> None:
        checkpoint = self._gather(state)
        if dist.is_main_process():
            save_checkpoint(os.path.join(self.work_dir, "last.pth"), checkpoint)

    def save_epoch(self, state: TrainState) -> None:
        """epoch_NNNN.pth (the oldest pruned), best.pth when the key metric
        improved, last.pth; the ranks wait for rank 0 to finish."""
        checkpoint = self._gather(state)
        if dist.is_main_process():
            save_checkpoint(os.path.join(self.work_dir, f"epoch_{state.epoch:04d}.pth"), checkpoint)
            _prune(self.work_dir, self.config.keep_checkpoints)
            if state.last_metrics.pop("improved", False):
                save_checkpoint(os.path.join(self.work_dir, "best.pth"), checkpoint)
            save_checkpoint(os.path.join(self.work_dir, "last.pth"), checkpoint)
        dist.barrier()

    def _gather(self, state: TrainState) -> dict[str, Any]:
        mine = {"rng": {**rng_state(), "loader": self.loader_state}, "window": list(self.runner.window)}
        ranks = dist.all_gather_object(mine)  # each rank resumes its own streams
        weights = {"model": self.runner.bare_model.state_dict()}
        if self.runner.ema is not None:  # "model": what readers use; the trained weights beside it
            weights = {**self.runner.ema.state(), "train_weights": weights["model"]}
        return {**weights, "optimizer": self.runner.optimizer.state_dict(),
                "scaler": self.runner.scaler.state_dict(), "config": self.config.to_dict(), "classes": self.classes,
                "epoch": state.epoch, "iteration": state.iteration, "epoch_iteration": state.epoch_iteration,
                "best": state.best, "evals_since_best": state.evals_since_best,
                "metrics": {k: v for k, v in state.last_metrics.items() if k != "improved"},
                "rng": [r["rng"] for r in ranks], "log_window": [r["window"] for r in ranks]}


def _prune(work_dir: str, keep: int) -> None:
    epochs = sorted(f for f in os.listdir(work_dir) if f.startswith("epoch_") and f.endswith(".pth"))
    for name in epochs[:max(0, len(epochs) - keep)]:
        os.remove(os.path.join(work_dir, name))


def _resume(path: str, config: Config, model: nn.Module, optimizer,
            iters_per_epoch: int) -> tuple[TrainState, dict[str, Any]]:
    """Loads last.pth into the model, the optimizer and this rank's
    generators; returns the state and what the runner and the loader take
    back (scaler, log window, DataLoader generator)."""
    if not os.path.exists(path):
        raise CheckpointError(f"--resume: no checkpoint to resume from at {path}")
    checkpoint = load_checkpoint(path)
    saved = Config.from_dict(checkpoint["config"], path)
    if saved.model.name != config.model.name or saved.model.options != config.model.options:
        raise CheckpointError(f"{path}: the checkpoint is of model {saved.model.name} {saved.model.options}, "
                              f"the config asks for {config.model.name} {config.model.options}")
    load_model_state(model, checkpoint.get("train_weights", checkpoint["model"]), path)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: the optimizer state does not fit ({exc})") from None
    state = TrainState(epoch=int(checkpoint["epoch"]), iteration=int(checkpoint["iteration"]),
                       epoch_iteration=int(checkpoint.get("epoch_iteration", 0)), best=checkpoint.get("best"),
                       last_metrics=dict(checkpoint.get("metrics") or {}),
                       evals_since_best=int(checkpoint.get("evals_since_best", 0)))
    states, rank = checkpoint["rng"], dist.get_rank()
    if state.epoch_iteration:
        _check_mid_epoch_fits(path, saved, config, len(states), state, iters_per_epoch)
    set_rng_state(states[rank] if rank < len(states) else states[0])
    if len(states) != dist.get_world_size():  # another world size: derive a distinct stream per rank
        torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + rank)
    resumed = {"scaler": checkpoint.get("scaler") or {}}
    if "ema_updates" in checkpoint:
        resumed["ema"] = (checkpoint["model"], int(checkpoint["ema_updates"]))
    if state.epoch_iteration:
        resumed.update(loader=states[rank]["loader"], window=checkpoint["log_window"][rank])
    return state, resumed


def _check_mid_epoch_fits(path: str, saved: Config, config: Config, saved_world: int, state: TrainState,
                          iters_per_epoch: int) -> None:
    """A mid-epoch position is a count of this rank's batches: it means the
    same samples only with the same ranks, batch size and epoch length."""
    world = dist.get_world_size()
    if (saved_world, saved.data.batch_size) != (world, config.data.batch_size) or \
            state.epoch_iteration >= iters_per_epoch:
        raise CheckpointError(
            f"{path}: written in epoch {state.epoch + 1} after its batch {state.epoch_iteration}, by "
            f"{saved_world} ranks with data.batch_size={saved.data.batch_size}; this run has {world} ranks with "
            f"data.batch_size={config.data.batch_size} and {iters_per_epoch} batches an epoch. Resume with the "
            f"same ranks and batch size, or from an end-of-epoch checkpoint (copy epoch_NNNN.pth to last.pth)")
