"""Helpers that tests import (fixtures live in conftest.py)."""
import os

from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_ssd_config(shapes_root: str, **schedule) -> Config:
    """A quarter-width SSD on 12 Shapes images: a few seconds an epoch."""
    return Config(
        name="tiny_ssd",
        model=ModelConfig(name="ssd300_resnet18", options={"width": 0.25, "size": 96}),
        data=DataConfig(format="shapes", root=shapes_root, augment="ssd", size=96, batch_size=4, num_workers=1,
                        shapes=ShapesConfig(num_train=12, num_val=4, image_size=96, seed=3)),
        solver=SolverConfig(optimizer="adamw", lr=1e-3, clip_grad_norm=10.0),
        schedule=ScheduleConfig(**{"epochs": 2, "warmup_iters": 2, "decay": "cosine", **schedule}),
        eval=EvalConfig(period=1, metric="coco", key="AP50", vis_images=2),
        log_period=1,
        keep_checkpoints=5,
    )


def fit(model, images, targets, optimizer, steps: int) -> list[float]:
    """`steps` training steps on one fixed batch; returns each step's total loss."""
    model.train()
    history = []
    for _ in range(steps):
        loss = sum(model(list(images), targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history


def shapes_batch(paths, with_masks: bool = False) -> tuple[list, list]:
    """Every training image of a generated Shapes set as tensors, and its targets."""
    from detkit.data import CocoDetection
    from detkit.data import transforms as T

    dataset = CocoDetection(paths.image_root, paths.coco_train, transforms=T.ToTensor(), with_masks=with_masks)
    images, targets = zip(*(dataset[i] for i in range(len(dataset))))
    keys = ("boxes", "labels", "masks") if with_masks else ("boxes", "labels")
    return list(images), [{key: t[key] for key in keys} for t in targets]


def overfit(name: str, paths, steps: int, lr: float, with_masks: bool = False, **options):
    """A zoo model trained from scratch with Adam on every image of a small
    Shapes set at once for `steps` steps: (model in eval mode, loss history,
    images, targets)."""
    import torch

    from detkit import models

    images, targets = shapes_batch(paths, with_masks)
    model = models.build(name, num_classes=len(paths.classes) + 1, **options)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = fit(model, images, targets, optimizer, steps)
    return model.eval(), history, images, targets
