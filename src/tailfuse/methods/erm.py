"""Empirical risk minimisation: one branch, a loss, optional input mixup (stage 1).

The stage-1 recipe of H2T/MiSLAS is ERM with cross-entropy and mixup α = 1 on an
instance-sampled batch (spec h2t §2.3).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tailfuse.config import StrictModel
from tailfuse.data.pipeline import mixup
from tailfuse.losses import build_loss
from tailfuse.losses.cross_entropy import mixup_loss
from tailfuse.methods.base import Batch, Method, StepContext, register_method


class ErmOptions(StrictModel):
    """Options of ``method.name: erm``."""

    name: Literal["erm"] = "erm"
    loss: str = "cross_entropy"
    mixup_alpha: float = Field(0.0, ge=0.0)
    sampler: str = "instance"


@register_method("erm", ErmOptions)
class EmpiricalRiskMinimization(Method):
    """Train the whole model on one sampled branch with ``loss`` (and mixup when α > 0)."""

    def __init__(self, options, model, class_counts, config):
        super().__init__(options, model, class_counts, config)
        self.criterion = build_loss(options.loss, class_counts)

    def branches(self) -> dict[str, str]:
        return {"main": self.options.sampler}

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        batch = batches["main"]
        if self.options.mixup_alpha > 0:
            images, partner, lam = mixup(
                batch.images,
                self.options.mixup_alpha,
                context.randomness.numpy,
                context.randomness.augment,
            )
            logits = self.model(images)
            return mixup_loss(self.criterion, logits, batch.labels, batch.labels[partner], lam)
        return self.criterion(self.model(batch.images), batch.labels)
