"""The learning rate as a function of the optimiser step, and the weight average (EMA).

A run's learning rate is a pure function of its optimiser step (:class:`LRSchedule`): the
Trainer sets it before every step, so a run resumed at step s continues exactly where an
uninterrupted run would be, whatever was saved. Two shapes:

- ``"step"``: the base rate times ``gamma`` at each milestone (the paper's x0.1 at epochs 25
  and 35 of 50; milestones in steps);
- ``"cosine"``: half a cosine from the base rate down to 0 at the last step.

Both may start with a linear warm-up over ``warmup_steps`` (from ``lr / warmup_steps`` up
to ``lr``); the cosine then spans the steps after the warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

#: The shapes of the learning-rate schedule.
LR_SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate of every optimiser step of one run.

    Attributes:
        lr: the base learning rate.
        total_steps: the run's length in optimiser steps.
        shape: ``"step"`` or ``"cosine"`` (see the module docstring).
        milestones: ``"step"`` only: the steps (counted from 0) from which the rate is
            multiplied by ``gamma`` once more.
        gamma: the factor at each milestone.
        warmup_steps: steps of linear warm-up at the start (0: none).
    """

    lr: float
    total_steps: int
    shape: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.shape not in LR_SCHEDULES:
            raise ValueError(f"lr schedule must be 'step' or 'cosine', got {self.shape!r}")
        if self.total_steps < 1:
            raise ValueError(f"a run needs at least one step, got {self.total_steps}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, {self.total_steps}), got {self.warmup_steps}"
            )

    def __call__(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0 is the first)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.shape == "cosine":
            span = self.total_steps - self.warmup_steps
            progress = (step - self.warmup_steps) / span
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        passed = sum(step >= milestone for milestone in self.milestones)
        return self.lr * self.gamma**passed


def milestone_steps(
    fractions: list[float] | None, epochs: list[int], total_steps: int, steps_per_epoch: int
) -> tuple[int, ...]:
    """The milestones of a ``"step"`` schedule in optimiser steps.

    Args:
        fractions: milestones as shares of the run (``[0.5, 0.7]``: at half and 70 % of
            the steps, rounded down), or None to use ``epochs``.
        epochs: milestones in epochs (the paper's ``[25, 35]``), used without ``fractions``.
        total_steps: the run's length in optimiser steps.
        steps_per_epoch: optimiser steps in one pass over the training patches.
    """
    if fractions is not None:
        return tuple(int(fraction * total_steps) for fraction in fractions)
    return tuple(epoch * steps_per_epoch for epoch in epochs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights.

    After each optimiser step, ``average.update_parameters(model)`` sets each averaged
    weight to ``decay * average + (1 - decay) * current``. Buffers are not averaged: the
    batch-norm statistics of an average of weights are not the average of the statistics
    the trained weights had along the way (on CoNSeP that mismatch cost validation mPQ+
    0.35 -> 0.19), so they are recomputed for the averaged weights with
    :func:`refresh_batch_norm` before the average is used.
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def refresh_batch_norm(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], object]
) -> None:
    """Recompute ``model``'s batch-norm statistics as the plain mean over ``batches``
    (:func:`torch.optim.swa_utils.update_bn`).

    Args:
        model: a network with batch-norm layers (left in the mode it was in).
        batches: training batches, in whatever form ``forward`` takes them.
        forward: runs one batch through ``model`` in training mode (a detector's forward
            needs its targets there, so this is the method's training forward, not
            ``model(images)``); no gradients are kept.
    """
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, _TrainingForward(model, forward))


class _TrainingForward(nn.Module):
    """``model`` behind a forward that takes a whole training batch (for ``update_bn``, which
    calls its module on each item of the loader)."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any], object]) -> None:
        super().__init__()
        self.model = model
        self.run = forward

    def forward(self, batch: Any) -> object:
        return self.run(self.model, batch)
