"""Prior-aware losses: Balanced Softmax, logit-adjusted CE, focal loss (spec glt_ifl §4).

π_c is the training class prior ``n_c / N``.

- Balanced Softmax (Ren et al. 2020): ``CE(z + log π, y)`` in training, raw z at test.
- Logit-adjusted loss (Menon et al. 2021): ``CE(z + τ·log π, y)``; τ = 1 is Balanced Softmax.
- Focal (Lin et al. 2017): ``−(1−p_t)^γ log p_t``, γ = 2. By default the factor is computed
  from a detached p_t, as the GLT and KPS code do; ``detach_factor=False`` differentiates it
  too, as LDAM-DRW's focal loss does (gradients differ by 10–16 %).

The post-hoc form of logit adjustment (``z − τ·log π`` at test) is a prediction rule:
``method.posthoc_tau`` of ``erm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.losses.reduction import weighted_cross_entropy
from tailfuse.numerics import at_least_float32


def log_prior(class_counts: list[int]) -> torch.Tensor:
    """``log(π_c + 1e-12)`` of the training class prior."""
    counts = torch.tensor(class_counts, dtype=torch.float64)
    return torch.log(counts / counts.sum() + 1e-12).float()


def posthoc_adjust(
    logits: torch.Tensor, log_prior_values: torch.Tensor, tau: float
) -> torch.Tensor:
    """Post-hoc logit adjustment ``z − τ·log π`` (Menon et al. 2021);
    ``tau`` 0 returns ``logits``."""
    if tau <= 0:
        return logits
    return at_least_float32(logits) - tau * log_prior_values.to(logits.device)


class LogitAdjustedLoss(nn.Module):
    """``CE(z + τ·log π, y)``; ``tau=1`` is Balanced Softmax."""

    def __init__(self, class_counts: list[int], tau: float = 1.0):
        super().__init__()
        self.register_buffer("adjustment", tau * log_prior(class_counts), persistent=False)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``class_weights``: a weighted mean over the batch (as ``F.cross_entropy(weight=)``)."""
        return weighted_cross_entropy(
            at_least_float32(logits) + self.adjustment.to(logits.device), labels, class_weights
        )


class FocalLoss(nn.Module):
    """``mean −(1−p_t)^γ·log p_t``.

    ``detach_factor=True`` (default; the GLT and KPS code): the modulating factor
    ``(1−p_t)^γ`` carries no gradient. ``False``: it does (LDAM-DRW's ``FocalLoss``).
    With ``class_weights`` w (class-balanced focal, Cui et al. 2019):
    ``mean w_y·(1−p_t)^γ·(−log p_t)``, a plain mean over the batch as the CB-focal and GCL codes
    compute it (not a weighted mean).
    """

    def __init__(self, gamma: float = 2.0, detach_factor: bool = True):
        super().__init__()
        self.gamma = gamma
        self.detach_factor = detach_factor

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        log_probabilities = F.log_softmax(at_least_float32(logits), dim=1)
        return focal_mean(log_probabilities, labels, self.gamma, class_weights, self.detach_factor)


def focal_mean(
    log_probabilities: torch.Tensor,
    labels: torch.Tensor,
    gamma: float,
    class_weights: torch.Tensor | None = None,
    detach_factor: bool = True,
) -> torch.Tensor:
    """``mean_b w_{y_b}·(1−p_b)^γ·(−log p_b)`` with ``p_b`` the target probability.

    The factor ``(1−p_b)^γ`` is detached unless ``detach_factor`` is false (LDAM-DRW's focal).
    """
    log_p = log_probabilities.gather(1, labels.view(-1, 1)).squeeze(1)
    probability = log_p.detach().exp() if detach_factor else log_p.exp()
    factor = (1.0 - probability) ** gamma
    per_sample = -(factor * log_p)
    if class_weights is not None:
        per_sample = per_sample * class_weights.to(per_sample.device)[labels]
    return per_sample.mean()
