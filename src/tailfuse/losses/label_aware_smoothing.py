"""Label-aware smoothing (MiSLAS, Zhong et al. 2021; spec h2t §3.1).

Per-class smoothing ``ε_j`` from the training count ``n_j``, with
``r_j = (n_j − n_min)/(n_max − n_min)``:

- concave: ``ε_j = ε_t + (ε_h − ε_t)·sin(π r_j / 2)``
- linear:  ``ε_j = ε_t + (ε_h − ε_t)·r_j``
- convex:  ``ε_j = ε_h + (ε_h − ε_t)·sin(3π/2 + π r_j / 2)``
- exp:     ``ε_j = ε_t + (ε_h − ε_t)·r_j^power`` (MiSLAS's fourth shape; needs ``power``)

Loss: ``mean_b[(1−ε_y)(−log p_y) + ε_y·(−(1/C)Σ_k log p_k)]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.numerics import at_least_float32


def smoothing_per_class(
    class_counts: list[int],
    smooth_head: float,
    smooth_tail: float,
    shape: str = "concave",
    power: float | None = None,
) -> list[float]:
    """``ε_j`` of every class for the given shape (MiSLAS's ``LabelAwareSmoothing``, h2t §3.1)."""
    if (shape == "exp") != (power is not None):
        raise ValueError("the exp smoothing shape takes a power, and only it does")
    n_max, n_min = max(class_counts), min(class_counts)
    span = max(n_max - n_min, 1)
    values = []
    for count in class_counts:
        ratio = (count - n_min) / span
        if shape == "concave":
            values.append(smooth_tail + (smooth_head - smooth_tail) * math.sin(math.pi * ratio / 2))
        elif shape == "linear":
            values.append(smooth_tail + (smooth_head - smooth_tail) * ratio)
        elif shape == "convex":
            values.append(
                smooth_head
                + (smooth_head - smooth_tail) * math.sin(1.5 * math.pi + math.pi * ratio / 2)
            )
        elif shape == "exp":
            values.append(smooth_tail + (smooth_head - smooth_tail) * ratio**power)
        else:
            raise ValueError(f"unknown smoothing shape '{shape}' (concave, linear, convex, exp)")
    return values


class LabelAwareSmoothing(nn.Module):
    """Cross-entropy with a per-class label-smoothing strength ``ε_y`` (larger for head classes)."""

    def __init__(
        self,
        class_counts: list[int],
        smooth_head: float = 0.4,
        smooth_tail: float = 0.1,
        shape: str = "concave",
        power: float | None = None,
    ):
        super().__init__()
        values = smoothing_per_class(class_counts, smooth_head, smooth_tail, shape, power)
        epsilon = torch.tensor(values, dtype=torch.float32)
        self.register_buffer("epsilon", epsilon, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probabilities = F.log_softmax(at_least_float32(logits), dim=1)
        epsilon = self.epsilon.to(logits.device)[labels]
        target_term = -log_probabilities.gather(1, labels.view(-1, 1)).squeeze(1)
        uniform_term = -log_probabilities.mean(dim=1)
        return ((1 - epsilon) * target_term + epsilon * uniform_term).mean()
