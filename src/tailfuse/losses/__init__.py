"""Loss functions, built by name with the training class counts.

Every loss is an ``nn.Module`` called as ``loss(logits, labels)`` and returns the batch
mean. Each family lives in its own module and registers itself in :data:`LOSSES`.

Any loss that takes ``class_weights=`` in its forward can be re-weighted by effective
number (:mod:`tailfuse.losses.reweighting`) with the options ``reweight_from_epoch``
(0: class-balanced from the start, "CB"; later: DRW; ``drw_epoch`` is the same key) and
``beta`` (0.9999).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tailfuse.config import RAW_COSINE_LOSSES
from tailfuse.errors import ConfigError, did_you_mean
from tailfuse.losses.cross_entropy import CrossEntropy
from tailfuse.losses.experts import ExpertCrossEntropy, ResLoss, RIDELoss, TADELoss
from tailfuse.losses.gcl import GaussianCloudedLogitLoss
from tailfuse.losses.label_aware_smoothing import LabelAwareSmoothing
from tailfuse.losses.logit_adjustment import FocalLoss, LogitAdjustedLoss
from tailfuse.losses.margins import KPSLoss, LDAMLoss
from tailfuse.losses.reweighting import ClassReweighting

#: Loss name -> factory(class_counts, **options).
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "cross_entropy": lambda class_counts, **options: CrossEntropy(**options),
    "label_aware_smoothing": lambda class_counts, **options: LabelAwareSmoothing(
        class_counts, **options
    ),
    "ldam": lambda class_counts, **options: LDAMLoss(class_counts, **options),
    "kps": lambda class_counts, **options: KPSLoss(class_counts, **options),
    "balanced_softmax": lambda class_counts, **options: LogitAdjustedLoss(
        class_counts, tau=1.0, **options
    ),
    "logit_adjusted": lambda class_counts, **options: LogitAdjustedLoss(class_counts, **options),
    "focal": lambda class_counts, **options: FocalLoss(**options),
    "gcl": lambda class_counts, **options: GaussianCloudedLogitLoss(class_counts, **options),
    # multi-expert losses: called with a list of per-expert (ResLoss: per-branch) logits
    "ride": lambda class_counts, **options: RIDELoss(class_counts, **options),
    "tade": lambda class_counts, **options: TADELoss(class_counts, **options),
    "expert_cross_entropy": lambda class_counts, **options: ExpertCrossEntropy(**options),
    "reslt": lambda class_counts, **options: ResLoss(class_counts, **options),
}

#: Losses whose forward takes ``class_weights=`` (so the re-weighting options apply).
REWEIGHTABLE = {
    "cross_entropy",
    "ldam",
    "kps",
    "balanced_softmax",
    "logit_adjusted",
    "focal",
    "gcl",
}

REWEIGHTING_OPTIONS = ("reweight_from_epoch", "drw_epoch", "beta")

#: LDAM, KPS and GCL take raw cosines (a cosine head with scale 1) and scale them themselves.
RAW_COSINE_LOSSES.update({"ldam", "kps", "gcl"})
#: Losses that take ``drw_epoch`` / ``beta`` options themselves (RIDE's DRW, ResLoss's β).
OWN_REWEIGHTING = {"ride", "reslt"}


def build_loss(name: str, class_counts: list[int], **options) -> nn.Module:
    """Create the loss ``name`` for a training set with ``class_counts``."""
    if name not in LOSSES:
        raise ConfigError(
            f"unknown loss '{name}'{did_you_mean(name, LOSSES)}; choose from "
            f"{', '.join(sorted(LOSSES))}"
        )
    own = name in OWN_REWEIGHTING
    reweighting = (
        {} if own else {key: options.pop(key) for key in REWEIGHTING_OPTIONS if key in options}
    )
    try:
        loss = LOSSES[name](class_counts, **options)
    except TypeError as error:
        raise ConfigError(
            f"loss '{name}' does not take these options {sorted(options)}: {error}"
        ) from None
    except ValueError as error:
        raise ConfigError(f"loss '{name}': {error}") from None
    if not reweighting:
        return loss
    if name not in REWEIGHTABLE:
        raise ConfigError(
            f"loss '{name}' takes no class weights; {sorted(reweighting)} need one "
            f"of {sorted(REWEIGHTABLE)}"
        )
    if "reweight_from_epoch" in reweighting and "drw_epoch" in reweighting:
        raise ConfigError("give reweight_from_epoch or drw_epoch (the same setting), not both")
    from_epoch = reweighting.get("reweight_from_epoch", reweighting.get("drw_epoch"))
    if from_epoch is None:
        raise ConfigError(
            f"loss '{name}': beta needs reweight_from_epoch "
            "(0: class-balanced; E: DRW from epoch E)"
        )
    beta = float(reweighting.get("beta", 0.9999))
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"loss '{name}': beta must lie in [0, 1), got {beta}")
    return ClassReweighting(loss, class_counts, beta=beta, from_epoch=int(from_epoch))


def advance_loss(
    loss: nn.Module,
    epoch: int,
    generator: torch.Generator,
    rows: tuple[int, int] | None = None,
) -> None:
    """Tell a loss where training is: the epoch (DRW, KPS), the step's random stream (GCL)
    and, under DDP, where the share's rows lie in the global batch (GCL's noise)."""
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(epoch)
    if hasattr(loss, "set_generator"):
        loss.set_generator(generator)
    if hasattr(loss, "set_rows"):
        loss.set_rows(rows)


__all__ = [
    "LOSSES",
    "ClassReweighting",
    "CrossEntropy",
    "GaussianCloudedLogitLoss",
    "ExpertCrossEntropy",
    "FocalLoss",
    "KPSLoss",
    "LDAMLoss",
    "LabelAwareSmoothing",
    "LogitAdjustedLoss",
    "advance_loss",
    "RIDELoss",
    "ResLoss",
    "TADELoss",
    "build_loss",
]
