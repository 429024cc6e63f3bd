"""solver.ema_decay: the moving average against a plain restatement of its
formula, what the checkpoint keeps, and what evaluation and detect() use."""
import math
import os

import torch
from torch import nn

from detkit.api import load_model
from detkit.config import apply_overrides
from detkit.engine import load_checkpoint, train
from detkit.engine.ema import ModelEMA
from detkit.engine.build import build_datasets
from detkit.engine.evaluate import evaluate, validation_loss

from tests.engine.test_trainer import assert_same_tensors, records


def test_the_average_follows_the_formula_with_its_warm_up():
    """ema <- d * ema + (1 - d) * w with d = decay * (1 - exp(-k / tau)) for the
    k-th update after the first (which copies), BatchNorm statistics included;
    the integer batch counter is copied."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    expected = {}
    for k in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(2, 3, 8, 8))  # moves the BatchNorm statistics
        ema.update(model)
        d = 0.9 * (1 - math.exp(-k / 3.0))
        for name, value in model.state_dict().items():
            if not value.is_floating_point() or k == 0:
                expected[name] = value.clone()
            else:
                expected[name] = d * expected[name] + (1 - d) * value
    assert ema.updates == 6
    averaged = ema.module.state_dict()
    assert averaged.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(averaged[name], value, rtol=1e-6, atol=1e-6), name
    assert averaged["1.num_batches_tracked"].item() == 6
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_the_average_restores_from_its_state():
    """A restored average takes the next update as the one it was saved from."""
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, 0.5, 1.0)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    state = ema.state()
    restored = ModelEMA(nn.Linear(3, 2), 0.5, 1.0)
    restored.load(state["model"], state["ema_updates"])
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    restored.update(model)
    assert restored.updates == ema.updates == 4
    assert_same_tensors(restored.module.state_dict(), ema.module.state_dict())


def test_the_average_does_not_change_what_is_trained(trained, tmp_path):
    """An EMA run's trained weights and optimizer are the plain run's, bit for
    bit: the average only watches. Its "model" (the average) is another set
    of weights, updated once per step."""
    config, plain = trained
    train(apply_overrides(config, ["solver.ema_decay=0.9", "solver.ema_tau=2"]), str(tmp_path), progress=False)
    ours = load_checkpoint(os.path.join(tmp_path, "last.pth"))
    theirs = load_checkpoint(os.path.join(plain, "last.pth"))
    assert ours["ema_updates"] == ours["iteration"] == theirs["iteration"]
    assert_same_tensors(ours["train_weights"], theirs["model"], "weights")
    assert_same_tensors(ours["optimizer"], theirs["optimizer"], "optimizer")
    assert not all(torch.equal(ours["model"][k], ours["train_weights"][k]) for k in ours["model"])


def test_evaluation_best_and_detect_use_the_average(trained_ema_bf16):
    """The logged evaluation is the average's: its validation loss is the
    checkpoint "model" weights' again, not the trained weights'; detect()'s
    loader reads the average; best.pth holds it with the trained weights."""
    config, work_dir = trained_ema_bf16
    last = load_checkpoint(os.path.join(work_dir, "last.pth"))
    logged = records(work_dir, "eval")[-1]
    splits = build_datasets(config)
    model = load_model(os.path.join(work_dir, "last.pth"), "cpu")
    assert_same_tensors(model.state_dict(), last["model"])
    device = torch.device("cpu")
    assert validation_loss(model, splits.val, device, batch_size=config.data.batch_size)["val_loss"] == \
        logged["val_loss"]
    metrics = evaluate(model, splits.val, "coco", splits.classes, device, gt=splits.val_ann)
    assert metrics.stats == {k: logged[k] for k in metrics.stats}
    model.load_state_dict(last["train_weights"])
    assert validation_loss(model, splits.val, device, batch_size=config.data.batch_size)["val_loss"] != \
        logged["val_loss"]
    best = load_checkpoint(os.path.join(work_dir, "best.pth"))
    epoch = load_checkpoint(os.path.join(work_dir, f"epoch_{best['epoch']:04d}.pth"))
    assert_same_tensors(best["model"], epoch["model"])
    assert_same_tensors(best["train_weights"], epoch["train_weights"])
