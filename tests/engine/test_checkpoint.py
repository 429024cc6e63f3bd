import os
import random
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from detkit.engine import checkpoint as ckpt
from detkit.engine.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from detkit.io.jsonio import remove_temp_files


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "config": {"name": "x"}, "classes": ["a"], "epoch": 1}


def test_round_trip(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, state(1.0))
    loaded = load_checkpoint(path)
    assert loaded["format"] == "detkit" and loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))


def test_a_write_that_dies_midway_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint(path, state(1.0))

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # a kill between the first bytes and the rename

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, state(2.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pth"]  # no temporary file left behind


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    save_checkpoint(good, state(1.0))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pth: cannot be read as a checkpoint"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="plain.pth: not a detkit checkpoint"):
        load_checkpoint(plain)
    partial = tmp_path / "partial.pth"
    torch.save({"format": "detkit", "model": {}}, partial)
    with pytest.raises(CheckpointError, match=r"partial.pth: the checkpoint lacks \['config', 'classes'\]"):
        load_checkpoint(partial)


class Payload:
    """Unpickling this would run code; weights_only must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": "detkit", "model": {}, "config": {}, "classes": [], "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.pth: cannot be read"):
        load_checkpoint(path)


def test_weights_of_another_model_are_named():
    model = nn.Sequential(nn.Linear(4, 3))
    other = nn.Sequential(nn.Linear(4, 5)).state_dict()
    with pytest.raises(CheckpointError, match=r"f.pth does not fit.*0.weight: \(5, 4\) in the file, \(3, 4\)"):
        load_model_state(model, other, "f.pth")
    with pytest.raises(CheckpointError, match="missing, e.g. 0.bias"):
        load_model_state(model, {"0.weight": torch.zeros(3, 4)}, "f.pth")
    with pytest.raises(CheckpointError, match="unexpected weights, e.g. extra"):
        load_model_state(model, {**model.state_dict(), "extra": torch.zeros(1)}, "f.pth")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    saved = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    save_checkpoint(tmp_path / "r.pth", {**state(0.0), "rng": saved})
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    ckpt.set_rng_state(load_checkpoint(tmp_path / "r.pth")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_a_killed_writes_temporary_file_is_removed_and_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint(path, state(1.0))
    monkeypatch.setattr(os, "remove", lambda p: None)  # a SIGKILL skips atomic_write's clean-up
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (f.write(b"PK half a zip"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        save_checkpoint(path, state(2.0))
    monkeypatch.undo()
    (tmp_path / ".hidden.pth").write_bytes(b"not ours")
    (leftover,) = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    assert remove_temp_files(tmp_path) == [str(tmp_path / leftover)]
    assert sorted(os.listdir(tmp_path)) == [".hidden.pth", "last.pth"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_the_space_check_counts_the_checkpoints_it_will_replace(tmp_path, monkeypatch):
    mib = 2**20
    free = shutil._ntuple_diskusage(2**40, 2**40 - 2 * mib, 2 * mib)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda folder: free)
    (tmp_path / "last.pth").write_bytes(bytes(3 * mib))
    (tmp_path / "metrics.jsonl").write_bytes(bytes(mib))  # not a checkpoint: no room for one
    ckpt.check_checkpoint_space(tmp_path, mib, 5)  # 5 MiB: 3 held by last.pth, 2 free
    with pytest.raises(OSError, match=f"work dir {tmp_path}: 2 MiB free, but its checkpoints need about 3 MiB "
                                      r"\(6 files of 1 MiB\)"):
        ckpt.check_checkpoint_space(tmp_path, mib, 6)
