"""Loss functions, built by name with the training class counts.

Every loss is an ``nn.Module`` called as ``loss(logits, labels)`` and returns the batch
mean. Each family lives in its own module and registers itself in :data:`LOSSES`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tailfuse.errors import ConfigError
from tailfuse.losses.cross_entropy import CrossEntropy
from tailfuse.losses.label_aware_smoothing import LabelAwareSmoothing
from tailfuse.losses.logit_adjustment import FocalLoss, LogitAdjustedLoss
from tailfuse.losses.margins import KPSLoss, LDAMLoss

#: Loss name -> factory(class_counts, **options).
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "cross_entropy": lambda class_counts, **options: CrossEntropy(**options),
    "label_aware_smoothing": lambda class_counts, **options: LabelAwareSmoothing(class_counts, **options),
    "ldam": lambda class_counts, **options: LDAMLoss(class_counts, **options),
    "kps": lambda class_counts, **options: KPSLoss(class_counts, **options),
    "balanced_softmax": lambda class_counts, **options: LogitAdjustedLoss(class_counts, tau=1.0, **options),
    "logit_adjusted": lambda class_counts, **options: LogitAdjustedLoss(class_counts, **options),
    "focal": lambda class_counts, **options: FocalLoss(**options),
}


def build_loss(name: str, class_counts: list[int], **options) -> nn.Module:
    """Create the loss ``name`` for a training set with ``class_counts``."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; choose from {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](class_counts, **options)
    except TypeError as error:
        raise ConfigError(f"loss '{name}' does not take these options {sorted(options)}: {error}") from None


__all__ = [
    "LOSSES",
    "CrossEntropy",
    "FocalLoss",
    "KPSLoss",
    "LDAMLoss",
    "LabelAwareSmoothing",
    "LogitAdjustedLoss",
    "build_loss",
]
