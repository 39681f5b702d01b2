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
from tailfuse.errors import ConfigError
from tailfuse.losses import advance_loss, build_loss
from tailfuse.losses.cross_entropy import mixup_loss
from tailfuse.losses.logit_adjustment import log_prior, posthoc_adjust
from tailfuse.methods.base import Batch, Method, StepContext, register_method


class ErmOptions(StrictModel):
    """Options of ``method.name: erm``.

    ``loss_options`` go to the loss (e.g. ``{max_m: 0.2, weighted_from_epoch: 120}`` for
    KPS). ``prediction: loss_logits`` evaluates with the loss's training logits (KPS:
    ``r_j·cos θ_j``) instead of the head's output (KPS: raw ``cos θ_j``, the authors' rule).
    ``posthoc_tau`` > 0 subtracts ``τ·log π`` from the logits at test (post-hoc logit
    adjustment, Menon et al. 2021; spec glt_ifl §4 "Logit-Adj", τ = 1).
    """

    name: Literal["erm"] = "erm"
    loss: str = "cross_entropy"
    loss_options: dict[str, float | int | str | None] = {}
    mixup_alpha: float = Field(0.0, ge=0.0)
    sampler: str = "instance"
    prediction: Literal["head", "loss_logits"] = "head"
    posthoc_tau: float = Field(0.0, ge=0.0)


@register_method("erm", ErmOptions)
class EmpiricalRiskMinimization(Method):
    """Train the whole model on one sampled branch with ``loss`` (and mixup when α > 0)."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        self.criterion = build_loss(options.loss, class_counts, **options.loss_options)
        self.log_prior = log_prior(class_counts)
        if options.prediction == "loss_logits" and not hasattr(self.criterion, "training_logits"):
            raise ConfigError(
                f"method.prediction=loss_logits: loss '{options.loss}' has no training logits"
            )

    def branches(self) -> dict[str, str]:
        return {"main": self.options.sampler}

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        batch = batches["main"]
        advance_loss(
            self.criterion, context.epoch, context.randomness.stream("loss"), batch.global_rows
        )
        if self.options.mixup_alpha > 0:
            whole = batch.whole or batch  # under DDP: partners from the whole global batch
            images, partner, lam = mixup(
                batch.images,
                self.options.mixup_alpha,
                context.randomness.numpy,
                context.randomness.augment,
                pool=whole.images,
                start=batch.start,
            )
            logits = self.model(images)
            return mixup_loss(self.criterion, logits, batch.labels, whole.labels[partner], lam)
        return self.criterion(self.model(batch.images), batch.labels)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        if self.options.prediction == "loss_logits":
            logits = self.criterion.training_logits(logits)
        return posthoc_adjust(logits, self.log_prior, self.options.posthoc_tau)
