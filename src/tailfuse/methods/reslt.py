"""ResLT (Cui et al., TPAMI 2022) on RIDE-style experts, as the H2T code runs it.

Spec h2t §3.1–§3.2.

``model.head: reslt`` gives three branch logits ``[z_H, z_M, z_T]`` (head / medium / tail
BatchNorm branches, one linear layer per expert, expert mean); the loss is ResLoss
``(1−β)·CE(z_H + z_M + z_T) + β·(group-masked CE of each branch)``; prediction is the sum
of the three. ``groups`` names the per-dataset masks (``cifar100``: y ≥ 35 / ≥ 70;
``cifar10``: ≥ 2 / ≥ 4; ``imagenet_lt``: the authors' y < 825 / < 220, probably inverted
(spec h2t §3.1, §6.1.16) and ``imagenet_lt_head_first`` its mirror on head-first labels;
``inat2018``: y < 6600, no tail branch).

``reslt`` trains everything (stage 1, optional mixup as the authors' CIFAR-10 config);
``reslt_stage2`` re-trains the head on the frozen backbone with ResLoss and the optional
H2T fusion (each expert's map fused with its own channel subset).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tailfuse.config import StrictModel
from tailfuse.data.pipeline import mixup
from tailfuse.errors import ConfigError
from tailfuse.losses.experts import RESLT_GROUP_MASKS, ResLoss
from tailfuse.methods.base import Batch, Method, StepContext, register_method
from tailfuse.methods.decoupled import DecoupledOptions, DecoupledStage2

GroupName = Literal[tuple(RESLT_GROUP_MASKS)]  # type: ignore[valid-type]


def _require_reslt_head(model, method: str) -> None:
    if not hasattr(model.head, "branch_logits"):
        raise ConfigError(
            f"method {method} needs model.head: reslt on a multi-expert backbone (ride_*), or "
            "reslt_channel_split with model.backbone_options.reslt_block: true (ImageNet)"
        )


class ResltOptions(StrictModel):
    """Options of ``method.name: reslt``: ResLoss β, the group masks, mixup α."""

    name: Literal["reslt"] = "reslt"
    beta: float = Field(0.99, ge=0.0, le=1.0)
    groups: GroupName
    sampler: str = "instance"
    mixup_alpha: float = Field(0.0, ge=0.0)


@register_method("reslt", ResltOptions)
class ResidualLearning(Method):
    """ResLT stage 1: the whole model trained with ResLoss."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        _require_reslt_head(model, options.name)
        self.criterion = ResLoss(class_counts, beta=options.beta, groups=options.groups)

    def branches(self) -> dict[str, str]:
        return {"main": self.options.sampler}

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        batch = batches["main"]
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
            branch_logits = self.model.head.branch_logits(self.model.features(images))
            return lam * self.criterion(branch_logits, batch.labels) + (1.0 - lam) * self.criterion(
                branch_logits, whole.labels[partner]
            )
        return self.criterion(
            self.model.head.branch_logits(self.model.features(batch.images)), batch.labels
        )


class ResltStage2Options(DecoupledOptions):
    """``reslt_stage2``: the head re-trained with ResLoss (β) on class-balanced batches, + H2T."""

    name: Literal["reslt_stage2"] = "reslt_stage2"
    loss: Literal["reslt"] = "reslt"
    beta: float = Field(0.5, ge=0.0, le=1.0)
    groups: GroupName
    shift_bn: bool = False


@register_method("reslt_stage2", ResltStage2Options)
class ResltStage2(DecoupledStage2):
    """ResLT stage 2 (the authors' CIFAR-10 ``stage2_ResLT`` / ``stage2_ResLT_H2T`` configs)."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        _require_reslt_head(model, options.name)
        if options.loss_options:
            raise ConfigError(
                f"method {options.name}: ResLoss takes method.beta and method.groups, "
                f"not loss_options ({', '.join(sorted(options.loss_options))})"
            )
        super().__init__(options, model, class_counts, config, auxiliary)
        self.criterion = ResLoss(class_counts, beta=options.beta, groups=options.groups)

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        features = self.balanced_features(batches, context)
        return self.criterion(self.model.head.branch_logits(features), batches["balanced"].labels)
