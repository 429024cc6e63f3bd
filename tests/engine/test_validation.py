"""The validation loss logged at each evaluation, and eval.patience."""
import os

import torch
from torch import nn

from detkit.config import apply_overrides
from detkit.engine import load_checkpoint, train
from detkit.engine.build import build_datasets, build_model
from detkit.engine.evaluate import loss_target, validation_loss

from tests.engine.test_trainer import assert_same_tensors, records

CPU = torch.device("cpu")


def restated_validation_loss(model, dataset, batch_size):
    """The training losses over the split, BatchNorm frozen, mean per image:
    the model's forward in training mode on un-augmented batches, by hand."""
    frozen = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    totals, count = {}, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            model.train()
            for m in frozen:
                m.eval()
            losses = model([image for image, _ in items], [loss_target(t, CPU) for _, t in items])
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(items)
            count += len(items)
    return {name: value / count for name, value in totals.items()}


def test_each_evaluation_logs_the_models_losses_on_the_validation_split(trained):
    config, work_dir = trained
    logged = records(work_dir, "eval")[-1]
    splits = build_datasets(config)
    model = build_model(config.model, len(splits.classes) + 1)
    model.load_state_dict(load_checkpoint(os.path.join(work_dir, "last.pth"))["model"])
    expected = restated_validation_loss(model, splits.val, config.data.batch_size)
    assert set(expected) == {"bbox_regression", "classification"}
    for name, value in expected.items():
        assert abs(logged[f"val_{name}"] - value) < 1e-6 * max(1.0, abs(value)), name
    assert abs(logged["val_loss"] - sum(expected.values())) < 1e-6 * logged["val_loss"]


def test_the_validation_loss_leaves_the_model_as_it_was(trained):
    """No BatchNorm statistic moves, the mode is given back."""
    config, work_dir = trained
    splits = build_datasets(config)
    model = build_model(config.model, len(splits.classes) + 1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    validation_loss(model, splits.val, CPU, batch_size=2)
    assert not model.training
    assert_same_tensors(model.state_dict(), before)


def test_patience_stops_the_run_and_says_why(trained, tmp_path, capsys):
    """With a learning rate too small to move AP, epoch 2's evaluation does not
    improve on epoch 1's: patience 1 stops the run after epoch 2 of 4, the
    log and the printout say why, best.pth is epoch 1's."""
    config, _ = trained
    config = apply_overrides(config, ["schedule.epochs=4", "solver.lr=1e-12", "eval.patience=1"])
    state = train(config, str(tmp_path), progress=False)
    assert state.epoch == 2 and state.evals_since_best == 1
    reason = ("early stop after epoch 2: AP50 has not improved on 0.0000 for 1 evaluations (eval.patience=1)")
    assert state.stopped == reason and reason in capsys.readouterr().out
    assert records(str(tmp_path), "stop") == [{"type": "stop", "epoch": 2, "iteration": 6, "reason": reason}]
    assert [r["epoch"] for r in records(str(tmp_path), "eval")] == [1, 2]
    best = load_checkpoint(os.path.join(tmp_path, "best.pth"))
    assert best["epoch"] == 1
    assert_same_tensors(best["model"], load_checkpoint(os.path.join(tmp_path, "epoch_0001.pth"))["model"])
    # Resumed, the run is still out of patience: it stops at once, logging it once.
    resumed = train(config, str(tmp_path), resume=True, progress=False)
    assert resumed.epoch == 2 and resumed.stopped == reason
    assert len(records(str(tmp_path), "stop")) == 1


def test_patience_counts_from_the_last_improvement(trained, tmp_path):
    """With a learning rate that learns, no stop while AP keeps rising."""
    config, _ = trained
    state = train(apply_overrides(config, ["eval.patience=1"]), str(tmp_path), progress=False)
    evals = records(str(tmp_path), "eval")
    if evals[1]["AP50"] > evals[0]["AP50"]:
        assert state.epoch == 2 and not state.stopped and not records(str(tmp_path), "stop")
    else:  # the tiny run did not improve: then patience must have stopped it? It ends at epoch 2 either way
        assert state.epoch == 2


def test_the_validation_loss_leaves_the_training_streams_alone(trained, tmp_path):
    """The same run without the validation loss ends with the same weights,
    optimizer and generators: the loss's random draws (the transform's size
    draw, R-CNN's RoI sampling) come from streams of their own."""
    config, reference = trained
    train(apply_overrides(config, ["eval.val_loss=False"]), str(tmp_path), progress=False)
    ours, theirs = (load_checkpoint(os.path.join(folder, "last.pth")) for folder in (str(tmp_path), reference))
    for key in ("model", "optimizer", "rng"):
        assert_same_tensors(ours[key], theirs[key], key)
    assert "val_loss" not in records(str(tmp_path), "eval")[-1]
