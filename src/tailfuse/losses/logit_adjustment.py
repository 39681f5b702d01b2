"""Prior-aware losses: Balanced Softmax, logit-adjusted CE, focal loss (spec glt_ifl §4).

π_c is the training class prior ``n_c / N``.

- Balanced Softmax (Ren et al. 2020): ``CE(z + log π, y)`` in training, raw z at test.
- Logit-adjusted loss (Menon et al. 2021): ``CE(z + τ·log π, y)``; τ = 1 is Balanced Softmax.
- Focal (Lin et al. 2017): ``−(1−p_t)^γ log p_t`` with the factor computed from a detached
  p_t (as the GLT code), γ = 2.

The post-hoc form of logit adjustment (``z − τ·log π`` at test) is a prediction rule:
``method.posthoc_tau`` of ``erm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def log_prior(class_counts: list[int]) -> torch.Tensor:
    """``log(π_c + 1e-12)`` of the training class prior."""
    counts = torch.tensor(class_counts, dtype=torch.float64)
    return torch.log(counts / counts.sum() + 1e-12).float()


def posthoc_adjust(logits: torch.Tensor, log_prior_values: torch.Tensor, tau: float) -> torch.Tensor:
    """Post-hoc logit adjustment ``z − τ·log π`` (Menon et al. 2021); ``tau`` 0 returns ``logits``."""
    if tau <= 0:
        return logits
    return logits.float() - tau * log_prior_values.to(logits.device)


class LogitAdjustedLoss(nn.Module):
    """``CE(z + τ·log π, y)``; ``tau=1`` is Balanced Softmax."""

    def __init__(self, class_counts: list[int], tau: float = 1.0):
        super().__init__()
        self.register_buffer("adjustment", tau * log_prior(class_counts), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.adjustment.to(logits.device), labels)


class FocalLoss(nn.Module):
    """``mean −(1−p_t)^γ·log p_t``, the modulating factor without gradient."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
        factor = (1.0 - log_p.detach().exp()) ** self.gamma
        return -(factor * log_p).mean()
