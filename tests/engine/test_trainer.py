import errno
import json
import os
import random
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detkit.config import apply_overrides
from detkit.engine import CheckpointError, NonFiniteLossError, load_checkpoint, train
from detkit.engine import checkpoint as checkpoint_module
from detkit.engine import trainer as trainer_module
from detkit.engine.build import build_model, build_optimizer

from tests.helpers import REPO, tiny_ssd_config


def records(work_dir, kind=None):
    with open(os.path.join(work_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return [r for r in lines if kind is None or r["type"] == kind]


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for n, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{n}]")
    else:
        assert a == b, where


# Everything a resumed run must reproduce: its final checkpoint's contents and its log.
RUN_STATE = ("model", "optimizer", "scaler", "epoch", "iteration", "epoch_iteration", "best", "metrics", "rng",
             "log_window")


def assert_same_run(work_dir, reference):
    """The two work dirs' last.pth and metrics.jsonl are the same bit for bit
    (the logged speed aside); with EMA, the trained weights and the average's
    update count too."""
    ours = load_checkpoint(os.path.join(work_dir, "last.pth"))
    theirs = load_checkpoint(os.path.join(reference, "last.pth"))
    assert ours.keys() == theirs.keys()
    for key in RUN_STATE + tuple(k for k in ("train_weights", "ema_updates", "evals_since_best") if k in theirs):
        assert_same_tensors(ours[key], theirs[key], key)
    drop_speed = lambda lines: [{k: v for k, v in r.items() if k != "images_per_s"} for r in lines]  # noqa: E731
    assert drop_speed(records(work_dir)) == drop_speed(records(reference))


def test_run_writes_a_complete_work_dir(trained):
    config, work_dir = trained
    for name in ("last.pth", "best.pth", "epoch_0001.pth", "epoch_0002.pth", "metrics.json", "config.json"):
        assert os.path.isfile(os.path.join(work_dir, name)), name
    curves = cv2.imread(os.path.join(work_dir, "curves.png"))
    assert curves is not None and curves.shape[2] == 3
    drawn = sorted(os.listdir(os.path.join(work_dir, "vis")))
    assert len(drawn) == config.eval.vis_images and all(cv2.imread(os.path.join(work_dir, "vis", f)) is not None
                                                        for f in drawn)
    train_lines, eval_lines = records(work_dir, "train"), records(work_dir, "eval")
    iters_per_epoch = config.data.shapes.num_train // config.data.batch_size
    assert [r["iteration"] for r in train_lines] == list(range(1, 2 * iters_per_epoch + 1))
    assert [r["epoch"] for r in eval_lines] == [1, 2]
    assert all(r["images"] == config.data.shapes.num_val for r in eval_lines)
    checkpoint = load_checkpoint(os.path.join(work_dir, "last.pth"))
    assert checkpoint["epoch"] == 2 and checkpoint["iteration"] == 2 * iters_per_epoch
    assert checkpoint["classes"] == ["circle", "square", "triangle", "hexagon", "star"]
    assert checkpoint["config"] == config.to_dict()
    assert checkpoint["metrics"]["AP50"] == eval_lines[-1]["AP50"]
    with open(os.path.join(work_dir, "config.json")) as f:
        assert json.load(f) == json.loads(json.dumps(config.to_dict()))


def test_resume_continues_exactly_where_the_run_stopped(trained, trained_copy):
    """A run killed after epoch 1 (its last.pth is epoch 1's, its log runs
    on into epoch 2) resumes to the uninterrupted run's weights, optimizer
    state and log, bit for bit."""
    config, reference = trained
    _, work_dir = trained_copy
    shutil.copy(os.path.join(work_dir, "epoch_0001.pth"), os.path.join(work_dir, "last.pth"))
    for name in ("epoch_0002.pth", "best.pth"):
        os.remove(os.path.join(work_dir, name))
    state = train(config, work_dir, resume=True, progress=False)
    assert state.epoch == 2
    assert_same_run(work_dir, reference)


class Stopped(Exception):
    pass


def at_training_step(monkeypatch, step, action):
    """Calls action(losses) on the model's `step`-th training forward (counting
    from 1 across epochs); action may raise or edit the losses."""
    build = trainer_module.build_model
    calls = {"n": 0}

    def wrapped_build(model_config, num_classes):
        model = build(model_config, num_classes)
        forward = model.forward

        def counting_forward(images, targets=None):
            out = forward(images, targets)
            if model.training and torch.is_grad_enabled():  # a training step, not the validation loss
                calls["n"] += 1
                if calls["n"] == step:
                    action(out)
            return out

        model.forward = counting_forward
        return model

    monkeypatch.setattr(trainer_module, "build_model", wrapped_build)


def stop_at_training_step(monkeypatch, step):
    """The model's `step`-th training forward raises Stopped: the run ends
    there, as a kill between two checkpoints would end it."""
    def stop(_):
        raise Stopped
    at_training_step(monkeypatch, step, stop)


def test_resume_mid_epoch_continues_bit_for_bit(trained, trained_copy, monkeypatch):
    """checkpoint.period_iters=1: a run resumed after epoch 1 and stopped
    during step 5 (the second of epoch 2's three; last.pth holds step 4)
    resumes to the uninterrupted run's weights, optimizer, generators and
    log, bit for bit, with a DataLoader worker augmenting the images."""
    config, reference = trained
    _, work_dir = trained_copy
    shutil.copy(os.path.join(work_dir, "epoch_0001.pth"), os.path.join(work_dir, "last.pth"))
    periodic = apply_overrides(config, ["checkpoint.period_iters=1"])
    assert periodic.data.num_workers == 1
    stop_at_training_step(monkeypatch, 2)
    with pytest.raises(Stopped):
        train(periodic, work_dir, resume=True, progress=False)
    monkeypatch.undo()
    stopped = load_checkpoint(os.path.join(work_dir, "last.pth"))
    assert (stopped["epoch"], stopped["epoch_iteration"], stopped["iteration"]) == (1, 1, 4)
    with pytest.raises(CheckpointError, match=r"last\.pth: written in epoch 2 after its batch 1, by 1 ranks with "
                                              r"data\.batch_size=4; this run has 1 ranks with data\.batch_size=3"):
        train(apply_overrides(periodic, ["data.batch_size=3"]), work_dir, resume=True, progress=False)
    state = train(periodic, work_dir, resume=True, progress=False)
    assert (state.epoch, state.iteration, state.epoch_iteration) == (2, 6, 0)
    assert_same_run(work_dir, reference)


def test_the_sampler_starts_an_epoch_part_way():
    sampler = trainer_module.ResumableSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=0)
    sampler.set_epoch(3)
    whole = list(sampler)
    assert len(whole) == len(sampler) == 5 and {epoch for epoch, _ in whole} == {3}
    sampler.set_epoch(3, start=2)
    assert list(sampler) == whole[2:] and len(sampler) == 3
    sampler.set_epoch(4)
    assert len(sampler) == 5 and [i for _, i in sampler] != [i for _, i in whole]


class Draws:
    """A dataset whose samples are draws from the three global generators."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.rand(3), np.random.rand(), random.random()


def test_each_sample_draws_from_its_own_seed():
    samples = trainer_module.SeededSamples(Draws(), seed=7)
    torch.manual_seed(0)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = samples[(1, 4)]
    samples[(1, 5)]
    again = samples[(1, 4)]  # after another sample: the same draws
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    for other in (samples[(1, 5)], samples[(2, 4)], trainer_module.SeededSamples(Draws(), seed=8)[(1, 4)]):
        assert not torch.equal(first[0], other[0]) and first[1] != other[1] and first[2] != other[2]
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_a_work_dir_under_a_file_is_an_error_at_start(shapes_root, tmp_path):
    """Root may write anywhere, so the unwritable folder is one whose path
    runs through a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    work_dir = blocker / "run"
    with pytest.raises(OSError, match=f"work dir {re.escape(str(work_dir))} cannot be written: a folder on its path "
                                      f"is a file"):
        train(tiny_ssd_config(shapes_root), str(work_dir), progress=False)


def test_a_full_disk_is_an_error_at_start(shapes_root, tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    work_dir = tmp_path / "run"
    with pytest.raises(OSError, match=f"work dir {re.escape(str(work_dir))} cannot be written: the disk is full"):
        train(tiny_ssd_config(shapes_root), str(work_dir), progress=False)
    assert os.listdir(work_dir) == []  # the probe file is gone and nothing else was written


def test_too_little_room_for_the_checkpoints_is_an_error_at_start(trained, tmp_path, monkeypatch):
    config, reference = trained
    model = build_model(config.model, 6)
    estimate = trainer_module._checkpoint_bytes(model, build_optimizer(config.solver, model))
    assert 0.9 < estimate / os.path.getsize(os.path.join(reference, "last.pth")) < 1.1  # weights + AdamW's 2 moments
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(2**40, 2**40 - 2**20, 2**20))
    work_dir = tmp_path / "run"
    need = 8 * estimate / 2**20  # keep_checkpoints=5 epoch files, last, best and one being written
    with pytest.raises(OSError, match=f"work dir {re.escape(str(work_dir))}: 1 MiB free, but its checkpoints need "
                                      f"about {need:.0f} MiB \\(8 files"):
        train(config, str(work_dir), progress=False)
    assert not os.path.exists(work_dir / "metrics.jsonl")


def test_resume_refuses_a_checkpoint_of_another_model(trained_copy):
    config, work_dir = trained_copy
    wider = apply_overrides(config, ["model.options.width=0.5"])
    with pytest.raises(CheckpointError, match=r"last\.pth: the checkpoint is of model ssd300_resnet18"):
        train(wider, work_dir, resume=True, progress=False)


def test_resume_refuses_another_class_count(trained_copy):
    config, work_dir = trained_copy
    hard = apply_overrides(config, ["data.shapes.preset=hard"])  # 8 classes instead of 5
    with pytest.raises(CheckpointError, match=r"last\.pth does not fit SSD .*other shapes"):
        train(hard, work_dir, resume=True, progress=False)


def test_resume_needs_a_checkpoint(shapes_root, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from at .*last.pth"):
        train(tiny_ssd_config(shapes_root), str(tmp_path), resume=True, progress=False)


def test_non_finite_loss_stops_with_the_iteration_and_keeps_the_checkpoint(shapes_root, tmp_path, monkeypatch):
    def poison(losses):  # the second iteration of epoch 2
        losses["classification"] = losses["classification"] * float("nan")
    at_training_step(monkeypatch, 5, poison)
    config = tiny_ssd_config(shapes_root)
    with pytest.raises(NonFiniteLossError, match=r"iteration 5 \(epoch 2.*classification.*last good checkpoint is"):
        train(config, str(tmp_path), progress=False)
    checkpoint = load_checkpoint(tmp_path / "last.pth")
    assert checkpoint["epoch"] == 1 and checkpoint["iteration"] == 3


def ddp_overrides(shapes_root):
    return [f"data.root={shapes_root}", "data.shapes.num_train=16", "data.shapes.num_val=4",
            "data.shapes.image_size=96", "data.shapes.seed=3", "data.size=96", "model.options.size=96",
            "model.options.width=0.25", "data.batch_size=4", "data.num_workers=0", "schedule.epochs=1",
            "schedule.warmup_iters=1", "eval.vis_images=1", "eval.period=1"]


def test_two_process_gloo_run(shapes_root, tmp_path):
    """torchrun with 2 CPU processes: DDP over gloo, evaluation split across
    the ranks and gathered on rank 0."""
    work_dir = tmp_path / "ddp"
    overrides = ddp_overrides(shapes_root) + ["processes=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, "configs", "ssd_shapes.py"),
               "--work-dir", str(work_dir), "--no-progress", "--set", *overrides]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(work_dir / "last.pth")
    assert checkpoint["epoch"] == 1
    assert checkpoint["iteration"] == 2  # 16 images / (2 ranks x 4)
    assert len(checkpoint["rng"]) == 2  # each rank's generators
    (evaluation,) = records(work_dir, "eval")
    assert evaluation["images"] == 4  # both ranks' predictions were gathered
    assert "AP50" in result.stdout


def test_processes_spawns_local_ranks_without_torchrun(shapes_root, tmp_path):
    """config.processes = 2: tools/train.py spawns two gloo ranks itself (the
    default Shapes config trains this way on a 2-core CPU)."""
    work_dir = tmp_path / "spawned"
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, "configs", "ssd_shapes.py"),
               "--work-dir", str(work_dir), "--no-progress", "--set", *ddp_overrides(shapes_root), "processes=2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(work_dir / "last.pth")
    assert checkpoint["iteration"] == 2 and len(checkpoint["rng"]) == 2
    assert "AP50" in result.stdout and "Grad strides do not match" not in result.stderr
    bad = subprocess.run(command[:-1] + ["processes=2", "data.shapes.preset=nope"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "data.shapes.preset must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr
