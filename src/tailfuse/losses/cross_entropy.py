"""Cross-entropy, optionally with per-class weights, and its mixup form."""

from __future__ import annotations

import torch
from torch import nn

from tailfuse.losses.reduction import weighted_cross_entropy
from tailfuse.numerics import at_least_float32


class CrossEntropy(nn.Module):
    """``mean_b −log softmax(z_b)[y_b]`` (weighted by ``class_weights`` when given)."""

    def __init__(self, class_weights: list[float] | None = None):
        super().__init__()
        weights = (
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``class_weights`` (from a re-weighting schedule) replace the
        constructor's for this call."""
        weight = class_weights if class_weights is not None else self.class_weights
        return weighted_cross_entropy(at_least_float32(logits), labels, weight)


def mixup_loss(
    loss: nn.Module,
    logits: torch.Tensor,
    labels: torch.Tensor,
    partner_labels: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """``λ·L(z, y) + (1−λ)·L(z, y_partner)`` for a mixed batch (Zhang et al. 2018)."""
    if lam == 1.0:
        return loss(logits, labels)
    return lam * loss(logits, labels) + (1.0 - lam) * loss(logits, partner_labels)
