"""TADE (Zhang et al., NeurIPS 2022) as the GLT code trains it (spec glt_ifl §4 "TADE").

A RIDE backbone and expert classifiers; the three experts learn with CE, Balanced-Softmax
CE and inverse-prior CE (τ = 2; :class:`~tailfuse.losses.experts.TADELoss`); prediction
is the plain mean of the experts. TADE's test-time self-supervised aggregation (learning
expert weights on unlabelled test images) is not built: the GLT code does not use it
either (spec glt_ifl §8.9); ``aggregation_weights`` gives fixed expert weights instead.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from tailfuse.config import StrictModel
from tailfuse.losses.experts import TADELoss
from tailfuse.methods.base import register_method
from tailfuse.methods.ride import ExpertTraining


class TadeOptions(StrictModel):
    """Options of ``method.name: tade``: τ of the inverse-prior expert; fixed test-time weights."""

    name: Literal["tade"] = "tade"
    loss: Literal["tade"] = "tade"
    tau: float = Field(2.0, ge=0.0)
    sampler: str = "instance"
    mixup_alpha: float = Field(0.0, ge=0.0)
    aggregation_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("aggregation_weights")
    @classmethod
    def _positive(cls, value):
        if min(value) < 0 or sum(value) <= 0:
            raise ValueError("method.aggregation_weights must be non-negative with a positive sum")
        return value


@register_method("tade", TadeOptions)
class Tade(ExpertTraining):
    """TADE: three skill-diverse experts, one loss each; mean (or fixed weights) at test."""

    def build_criterion(self):
        return TADELoss(self.class_counts, tau=self.options.tau)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        expert_logits = self.model.head.expert_logits(self.model.features(images))
        weights = torch.tensor(self.options.aggregation_weights, device=expert_logits[0].device)
        weights = weights / weights.sum()
        return sum(weight * logits for weight, logits in zip(weights, expert_logits, strict=True))
