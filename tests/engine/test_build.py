"""engine/build.py: the learning-rate schedule, the optimizer and the model
builder, on hand-made inputs."""
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from detkit.config import DataConfig, ModelConfig, ScheduleConfig, SolverConfig
from detkit.engine.build import LRSchedule, build_model, build_optimizer, train_transforms
from detkit.models import ModelOptionError
from detkit.models.weights import WeightsError


def schedule(**fields) -> ScheduleConfig:
    return ScheduleConfig(**{"epochs": 4, "warmup_iters": 0, "milestones": [2, 3], "gamma": 0.1, **fields})


def test_warmup_rises_linearly_from_the_warmup_factor():
    lr = LRSchedule(schedule(warmup_iters=10, warmup_factor=0.1), iters_per_epoch=100)
    assert lr.factor(0) == pytest.approx(0.1)
    assert lr.factor(5) == pytest.approx(0.1 * 0.5 + 0.5)  # halfway: (1 - a) * f + a
    assert lr.factor(10) == 1.0 and lr.factor(99) == 1.0


def test_multistep_drops_by_gamma_at_each_milestone_epoch():
    lr = LRSchedule(schedule(), iters_per_epoch=100)
    assert [lr.factor(i) for i in (0, 199, 200, 299, 300, 399)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_falls_to_zero_at_the_end_and_stays_there():
    lr = LRSchedule(schedule(decay="cosine"), iters_per_epoch=10)
    assert lr.factor(0) == 1.0
    assert lr.factor(20) == pytest.approx(0.5)  # half of 40 iterations
    assert lr.factor(10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr.factor(40) == pytest.approx(0.0, abs=1e-12) and lr.factor(50) == pytest.approx(0.0, abs=1e-12)


def test_warmup_multiplies_the_decay():
    lr = LRSchedule(schedule(warmup_iters=400, warmup_factor=0.0, milestones=[1]), iters_per_epoch=100)
    assert lr.factor(200) == pytest.approx(0.5 * 0.1)


def test_apply_sets_every_group_and_is_a_pure_function_of_the_iteration():
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(SolverConfig(lr=0.5), model)
    lr = LRSchedule(schedule(), iters_per_epoch=10)
    assert lr.apply(optimizer, 0.5, 25) == pytest.approx(0.05)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.05])
    lr.apply(optimizer, 0.5, 5)
    assert lr.apply(optimizer, 0.5, 25) == pytest.approx(0.05)  # no hidden state


def test_weight_decay_spares_biases_and_norm_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    model[1].weight.requires_grad_(False)  # frozen parameters are left out
    optimizer = build_optimizer(SolverConfig(optimizer="sgd", lr=0.1, weight_decay=0.01, momentum=0.8), model)
    decay, no_decay = optimizer.param_groups
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].bias), id(model[2].bias)}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert isinstance(optimizer, torch.optim.SGD) and decay["momentum"] == 0.8


def test_one_sgd_step_matches_the_formula():
    weight = nn.Parameter(torch.tensor([[1.0, -2.0]]))
    model = nn.Module()
    model.weight = weight
    optimizer = build_optimizer(SolverConfig(optimizer="sgd", lr=0.1, weight_decay=0.5, momentum=0.9), model)
    weight.grad = torch.tensor([[0.2, 0.4]])
    optimizer.step()
    # first step: v = g + wd * w; w -= lr * v
    expected = torch.tensor([[1.0, -2.0]]) - 0.1 * (torch.tensor([[0.2, 0.4]]) + 0.5 * torch.tensor([[1.0, -2.0]]))
    assert torch.allclose(weight.detach(), expected)


def test_adamw_is_chosen_by_name():
    optimizer = build_optimizer(SolverConfig(optimizer="adamw", lr=1e-3), nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.AdamW)


def test_build_model_passes_options_and_refuses_unknown_ones():
    net = build_model(ModelConfig(name="ssd300_vgg16_small", options={"size": 96, "score_thresh": 0.2}), 4)
    assert net.transform.fixed_size == (96, 96) and net.score_thresh == 0.2 and net.num_classes == 4
    with pytest.raises(ModelOptionError, match=r"'ssd300_vgg16_small' takes no option 'min_size'"):
        build_model(ModelConfig(name="ssd300_vgg16_small", options={"min_size": 96}), 4)


def test_build_model_loads_a_detkit_checkpoint_or_a_state_dict(tmp_path):
    config = ModelConfig(name="ssd300_vgg16_small", options={"size": 96})
    source = build_model(config, 4)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), plain)
    torch.save({"format": "detkit", "model": source.state_dict(), "classes": ["a", "b", "c"]}, wrapped)
    for path in (plain, wrapped):
        torch.manual_seed(123)  # other initial weights
        loaded = build_model(ModelConfig(name=config.name, options=config.options, weights=str(path)), 4)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))
    tuned = build_model(ModelConfig(name=config.name, options=config.options, weights=str(plain)), 6)
    assert tuned.num_classes == 6  # another class count fine-tunes (tests/models/test_pretrained.py)
    wider = ModelConfig(name=config.name, options={**config.options, "width": 0.5}, weights=str(plain))
    with pytest.raises(WeightsError, match=r"plain\.pth does not fit SSD .*other shapes"):
        build_model(wider, 4)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"junk\.pth: not a readable weights file"):
        build_model(ModelConfig(name=config.name, options=config.options, weights=str(tmp_path / "junk.pth")), 4)


@pytest.mark.parametrize("augment, expected", [
    ("rcnn", ["ResizeShortestEdge", "RandomHorizontalFlip", "ToTensor"]),
    ("rcnn_light", ["PhotometricDistort", "RandomHorizontalFlip", "ResizeShortestEdge", "ToTensor"]),
    ("rcnn_flips", ["PhotometricDistort", "RandomHorizontalFlip", "RandomVerticalFlip", "ResizeShortestEdge",
                    "ToTensor"]),
    ("flips", ["PhotometricDistort", "RandomHorizontalFlip", "RandomVerticalFlip", "Resize", "ToTensor"]),
])
def test_training_augmentation_presets(augment, expected):
    data = DataConfig(augment=augment, size=64, min_size=[48, 64], max_size=100)
    transforms = train_transforms(data)
    assert [type(t).__name__ for t in transforms.transforms] == expected
    image = np.zeros((40, 80, 3), np.uint8)
    target = {"boxes": np.array([[10.0, 5, 30, 25]], np.float32), "labels": np.array([1])}
    sizes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        tensor, out = transforms(image.copy(), {k: v.copy() for k, v in target.items()})
        sizes.add(tuple(tensor.shape[1:]))
        assert out["boxes"].shape == (1, 4) and 0 <= out["boxes"].min() and out["boxes"][0, 2] <= tensor.shape[2]
    if augment.startswith("rcnn"):  # multi-scale: a shortest edge drawn from min_size, the longer side capped
        assert sizes == {(48, 96), (50, 100)}
    else:
        assert sizes == {(64, 64)}


def test_the_training_split_gets_proposals_computed_once_or_from_a_file(tmp_path):
    from detkit.config import Config, DataConfig, ShapesConfig
    from detkit.data import proposals as P
    from detkit.engine.build import build_datasets

    data = DataConfig(format="shapes", root=str(tmp_path / "shapes"), augment="rcnn", min_size=[64], max_size=64,
                      proposals="selective_search", max_proposals=25,
                      shapes=ShapesConfig(num_train=3, num_val=2, image_size=64))
    splits = build_datasets(Config(data=data))
    cache = os.path.join(os.path.dirname(splits.train.ann_file), "proposals",
                         "instances_train_selective_search_fast_25.npz")
    cached = P.load_proposals(cache)
    assert sorted(cached) == sorted(splits.train.ids) and all(len(b) <= 25 for b, _ in cached.values())
    assert "proposals" in splits.train[0][1] and "proposals" not in splits.val[0][1]
    assert build_datasets(Config(data=data), proposals=False).train.proposals is None
    P.save_proposals(tmp_path / "mine.npz", {i: (torch.tensor([[1.0, 2.0, 30.0, 40.0]]), torch.ones(1))
                                             for i in splits.train.ids})
    data.proposals = str(tmp_path / "mine.npz")
    from_file = build_datasets(Config(data=data)).train
    assert from_file.proposals(from_file.ids[0]).tolist() == [[1.0, 2.0, 30.0, 40.0]]
    data.proposals = "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        build_datasets(Config(data=data))
