"""GCL stage 2: re-balance the cosine classifier with the GCL loss (Li et al. 2022; spec h2t §3.1).

The stage-1 model is ``erm`` with ``loss: gcl`` (m = 0, s = 30, noise_mul 0.5) on a cosine
head. Stage 2 freezes the backbone (eval-mode BatchNorm: the authors' classifier script
calls ``model.eval()``), keeps the stage-1 cosine classifier and fine-tunes it with GCL
(m = 0.1, s = 20, noise_mul 0.5) in its focal form (γ = 1) on class-balanced batches. It is
a :class:`~tailfuse.methods.decoupled.DecoupledStage2`, so ``h2t.ratio > 0`` fuses
head features into the balanced batch: GCL + H2T. Prediction is ``argmax s·cos θ``.
"""

from __future__ import annotations

from typing import Literal

import torch

from tailfuse.errors import ConfigError
from tailfuse.methods.base import register_method
from tailfuse.methods.decoupled import DecoupledOptions, DecoupledStage2
from tailfuse.models import CosineHead


class GclStage2Options(DecoupledOptions):
    """``method.name: gcl``: DecoupledStage2 with GCL's stage-2 loss and eval-mode BatchNorm."""

    name: Literal["gcl"] = "gcl"
    loss: str = "gcl"
    loss_options: dict[str, float | int | str | None] = {
        "m": 0.1,
        "s": 20.0,
        "noise_mul": 0.5,
        "gamma": 1.0,
    }
    shift_bn: bool = False


@register_method("gcl", GclStage2Options)
class GclStage2(DecoupledStage2):
    """Fine-tune the stage-1 cosine classifier with the focal GCL loss on class-balanced batches."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        if not isinstance(model.head, CosineHead):
            raise ConfigError(
                "method.name=gcl needs model.head=cosine (GCL works on cosine logits)"
            )
        super().__init__(options, model, class_counts, config, auxiliary)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().predict(images)
        if hasattr(self.criterion, "training_logits"):
            return self.criterion.training_logits(logits)
        return logits
