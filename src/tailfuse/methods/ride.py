"""RIDE (Wang et al., ICLR 2021) and its decoupled stage 2, on multi-expert backbones.

``ride`` trains the whole model (``model.backbone: ride_*``, ``model.head:
expert_cosine``) with a loss over the per-expert logits: ``ride`` (LDAM + DRW per expert
plus the diversity KL, :class:`~tailfuse.losses.experts.RIDELoss`; spec h2t §3.1, glt_ifl
§4) or ``expert_cross_entropy`` (per-expert CE). Prediction: the mean of the experts'
logits. Not built: official RIDE's expert router (dynamic expert assignment) and its
self-distillation; neither the H2T nor the GLT code uses them (spec glt_ifl §4, §8.9).

``ride_stage2`` (spec glt_ifl §4 "RIDE stage 2"): frozen backbone, class-aware sampling,
per-expert CE on the expert classifiers, 10 epochs. RIDE + H2T uses the decoupled ``dr``
method with ``h2t`` on a RIDE model: each expert's map is fused with its own channel
subset (methods/h2t.py), the head averages the experts (spec h2t §1.5).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tailfuse.config import StrictModel
from tailfuse.data.pipeline import mixup
from tailfuse.errors import ConfigError
from tailfuse.losses import advance_loss, build_loss
from tailfuse.methods.base import Batch, Method, StepContext, register_method
from tailfuse.methods.decoupled import DecoupledOptions, DecoupledStage2


def require_expert_head(model, method: str) -> None:
    """Stop with a clear message unless the model has per-expert classifiers."""
    if not hasattr(model.head, "expert_logits"):
        raise ConfigError(
            f"method {method} needs a multi-expert model: model.backbone ride_* and "
            "model.head expert_linear/expert_cosine"
        )


class RideOptions(StrictModel):
    """Options of ``method.name: ride``.

    ``loss``: a loss over expert logits (``ride``, ``expert_cross_entropy``, ``tade``);
    ``loss_options`` go to it (``ride``: ``max_m``, ``s`` (= the head's ``cosine_scale``),
    ``drw_epoch``, ``beta``, ``diversity_factor``, ``temperature``, ``reweight_factor``,
    ``base_loss_factor``). ``mixup_alpha`` > 0 mixes inputs (λ/(1−λ) mix of the loss).
    """

    name: Literal["ride"] = "ride"
    loss: str = "ride"
    loss_options: dict[str, float | int | str | None] = {}
    sampler: str = "instance"
    mixup_alpha: float = Field(0.0, ge=0.0)


class ExpertTraining(Method):
    """Train a multi-expert model end to end with a loss over the experts' logits."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        require_expert_head(model, options.name)
        self.criterion = self.build_criterion()
        if not getattr(self.criterion, "takes_expert_logits", False):
            raise ConfigError(
                f"method {options.name}: loss '{options.loss}' does not take expert logits"
            )

    def build_criterion(self):
        return build_loss(self.options.loss, self.class_counts, **self.options.loss_options)

    def branches(self) -> dict[str, str]:
        return {"main": self.options.sampler}

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        batch = batches["main"]
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(context.epoch)
        images = batch.images
        if self.options.mixup_alpha > 0:
            whole = batch.whole or batch  # under DDP: partners from the whole global batch
            images, partner, lam = mixup(
                images,
                self.options.mixup_alpha,
                context.randomness.numpy,
                context.randomness.augment,
                pool=whole.images,
                start=batch.start,
            )
            expert_logits = self.model.head.expert_logits(self.model.features(images))
            return lam * self.criterion(expert_logits, batch.labels) + (1.0 - lam) * self.criterion(
                expert_logits, whole.labels[partner]
            )
        return self.criterion(
            self.model.head.expert_logits(self.model.features(images)), batch.labels
        )


register_method("ride", RideOptions)(ExpertTraining)


class RideStage2Options(DecoupledOptions):
    """``ride_stage2``: frozen backbone, class-aware sampling, per-expert CE on the expert heads."""

    name: Literal["ride_stage2"] = "ride_stage2"
    loss: str = "expert_cross_entropy"
    sampler: str = "class_aware"
    shift_bn: bool = True
    #: the GLT authors' ClassAwareSampler, as cRT's: min(max_c n_c * C, 4 N) samples per epoch
    epoch_length: Literal["dataset", "max_class"] = "max_class"


@register_method("ride_stage2", RideStage2Options)
class RideStage2(DecoupledStage2):
    """Re-train the expert classifiers on a frozen RIDE backbone (optionally with H2T)."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        require_expert_head(model, options.name)
        if not getattr(self.criterion, "takes_expert_logits", False):
            raise ConfigError(
                f"method ride_stage2: loss '{options.loss}' does not take expert logits"
            )

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        advance_loss(
            self.criterion,
            context.epoch,
            context.randomness.stream("loss"),
            batches["balanced"].global_rows,
        )
        features = self.balanced_features(batches, context)
        return self.criterion(self.model.head.expert_logits(features), batches["balanced"].labels)
