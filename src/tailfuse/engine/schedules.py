"""Learning-rate schedules, set once per epoch (spec h2t §2.2)."""

from __future__ import annotations

import math

from tailfuse.config import ScheduleConfig


def learning_rate(schedule: ScheduleConfig, base_lr: float, epoch: int, total_epochs: int) -> float:
    """The learning rate of 0-based ``epoch``.

    Warm-up: ``lr·(epoch+1)/W`` for the first W epochs. Multistep: ``lr·γ^k`` with k the
    number of milestones ≤ epoch (so [160, 180] gives 0.1·lr from the 161st epoch).
    Cosine: ``lr·½(1+cos(π·epoch/E))``. Everything is scaled by ``lr_factor``.
    """
    peak = schedule.lr_factor * base_lr
    if epoch < schedule.warmup_epochs:
        return peak * (epoch + 1) / schedule.warmup_epochs
    if schedule.name == "multistep":
        return peak * schedule.gamma ** sum(epoch >= milestone for milestone in schedule.milestones)
    if schedule.name == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * epoch / total_epochs))
    return peak
