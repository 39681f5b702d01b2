"""Cross-entropy, optionally with per-class weights, and its mixup form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.errors import did_you_mean
from tailfuse.losses.reduction import weighted_cross_entropy
from tailfuse.numerics import at_least_float32

#: What the weighted sum ``Σ_b w_{y_b}·CE_b`` of a batch is divided by.
#: ``weight_sum``: ``Σ_b w_{y_b}``, PyTorch's ``F.cross_entropy(weight=)`` (LDAM-DRW's DRW code).
#: ``batch_size``: the number of images, Cui et al.'s class-balanced softmax code
#: (``tf.losses.softmax_cross_entropy`` with per-image weights, which divides by the count of
#: non-zero weights). With effective-number weights on CIFAR-10-LT IF 100 an image weighs 0.17
#: on average, so ``weight_sum`` makes the loss, and its gradient, about 5.8 times larger.
CLASS_WEIGHT_DIVISORS = ("weight_sum", "batch_size")


class CrossEntropy(nn.Module):
    """``mean_b −log softmax(z_b)[y_b]``; with ``class_weights`` w, ``Σ_b w_{y_b}·CE_b``
    divided by ``Σ_b w_{y_b}`` or by the batch size (``class_weight_divisor``, see
    :data:`CLASS_WEIGHT_DIVISORS`)."""

    def __init__(
        self, class_weights: list[float] | None = None, class_weight_divisor: str = "weight_sum"
    ):
        super().__init__()
        if class_weight_divisor not in CLASS_WEIGHT_DIVISORS:
            raise ValueError(
                f"class_weight_divisor '{class_weight_divisor}' is not one of "
                f"{', '.join(CLASS_WEIGHT_DIVISORS)}"
                f"{did_you_mean(class_weight_divisor, CLASS_WEIGHT_DIVISORS)}"
            )
        self.class_weight_divisor = class_weight_divisor
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
        logits = at_least_float32(logits)
        if weight is None or self.class_weight_divisor == "weight_sum":
            return weighted_cross_entropy(logits, labels, weight)
        per_image = F.cross_entropy(logits, labels, reduction="none")
        return (weight.to(per_image)[labels] * per_image).mean()


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
