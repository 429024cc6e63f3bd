"""log.tensorboard and the tracker hook: TensorBoard's own reader finds
every number of metrics.jsonl at its step, before and after a resume, and the
evaluation images and PR curves at each evaluation."""
import importlib.util
import os
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detkit.config import apply_overrides
from detkit.engine import train
from detkit.engine import tracking

from tests.engine.test_trainer import records


def event_data(work_dir):
    """{tag: [(step, value)]} of the scalars and {tag: [(step, width, height)]}
    of the images, as TensorBoard reads the work dir (purged steps dropped)."""
    events = EventAccumulator(work_dir, size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    images = {tag: [(e.step, e.width, e.height) for e in events.Images(tag)] for tag in events.Tags()["images"]}
    return scalars, images


def expected_scalars(work_dir):
    """{tag: [(step, value as float32)]} restated from metrics.jsonl: every
    number of every record, tagged "<type>/<key>", at the record's iteration."""
    expected = {}

    def add(prefix, values, step):
        for key, value in values.items():
            if isinstance(value, dict):
                add(f"{prefix}/{key}", value, step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(f"{prefix}/{key}", []).append((step, float(np.float32(value))))

    for record in records(work_dir):
        add(record["type"], {k: v for k, v in record.items() if k not in ("type", "iteration")}, record["iteration"])
    return expected


def assert_event_files_match_the_log(work_dir):
    scalars, images = event_data(work_dir)
    assert scalars == expected_scalars(work_dir)
    for tag in ("train/loss", "train/lr", "train/images_per_s", "train/classification", "eval/AP50", "eval/val_loss"):
        assert tag in scalars, tag
    eval_steps = [r["iteration"] for r in records(work_dir, "eval")]
    for tag in ("eval/detections", "eval/pr_curves"):
        assert [step for step, _, _ in images[tag]] == eval_steps, tag
        assert all(width > 0 and height > 0 for _, width, height in images[tag])


def test_the_event_files_hold_the_metrics_log(trained):
    _, work_dir = trained
    assert_event_files_match_the_log(work_dir)


def test_a_resumed_run_purges_what_the_killed_run_logged_after_its_checkpoint(trained, trained_copy):
    """Resumed from epoch 1's checkpoint, with epoch 2 already in the event
    file: TensorBoard shows each step once, with the resumed run's values."""
    config, work_dir = trained_copy
    shutil.copy(os.path.join(work_dir, "epoch_0001.pth"), os.path.join(work_dir, "last.pth"))
    train(config, work_dir, resume=True, progress=False)
    assert_event_files_match_the_log(work_dir)


class Collector:
    def __init__(self):
        self.records, self.evaluations, self.closed = [], [], False

    def log(self, record):
        self.records.append(dict(record))

    def log_evaluation(self, step, images, curves):
        self.evaluations.append((step, len(images), sorted(curves)))

    def close(self):
        self.closed = True


def test_a_tracker_of_your_own_gets_every_record(trained, tmp_path):
    config, reference = trained
    config = apply_overrides(config, ["log.tensorboard=False"])
    collector = Collector()
    train(config, str(tmp_path), progress=False, trackers=[collector])
    assert collector.records == records(str(tmp_path)) and collector.closed
    assert [step for step, _, _ in collector.evaluations] == [r["iteration"] for r in records(str(tmp_path), "eval")]
    assert all(count == config.eval.vis_images for _, count, _ in collector.evaluations)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("events.out")]


def test_tensorboard_on_without_the_package_is_an_error_that_says_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert tracking.build_trackers(None, str(tmp_path), None) == []
    with pytest.raises(ImportError, match=r"log\.tensorboard=True needs the tensorboard package: "
                                          r"pip install 'detkit\[tensorboard\]'"):
        tracking.build_trackers(True, str(tmp_path), None)


def test_a_fresh_run_in_a_used_work_dir_replaces_its_event_files(trained_copy):
    """The earlier run's event files are deleted, as its metrics.jsonl is: each step shows once."""
    config, work_dir = trained_copy
    train(config, work_dir, progress=False)
    assert_event_files_match_the_log(work_dir)
