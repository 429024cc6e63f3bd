"""An exponential moving average of the weights (solver.ema_decay), kept
beside the trained model: what evaluation, best.pth and detect() use.

The first update copies the weights; the k-th after it takes, for every
float parameter and buffer (BatchNorm statistics included, as Ultralytics'
ModelEMA does),

    ema <- d_k * ema + (1 - d_k) * weights,   d_k = decay * (1 - exp(-k / tau)),

so the early updates follow the weights closely (d_k near 0) and the average
lengthens as training settles. The averaging itself is torch's AveragedModel;
integer buffers (BatchNorm's batch counter) are copied.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


class ModelEMA:
    """The moving average of `model`'s weights; `module` is the averaged model
    (in eval mode), `updates` the number of updates taken."""

    def __init__(self, model: nn.Module, decay: float, tau: float):
        self.decay, self.tau = decay, tau
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.eval()
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged.item())

    def decay_at(self, updates: int) -> float:
        return self.decay * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def _average(self, averaged: list[Tensor], current: list[Tensor], updates: Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        weight = 1 - self.decay_at(int(updates.item()))
        torch._foreach_lerp_(averaged, current, weight)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the averaged weights go under "model" (what
        every reader of a checkpoint uses), the update count beside them."""
        return {"model": self.module.state_dict(), "ema_updates": self.updates}

    def load(self, weights: dict[str, Tensor], updates: int) -> None:
        self.module.load_state_dict(weights)
        self.averaged.n_averaged.fill_(updates)
