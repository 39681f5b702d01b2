"""Margin losses on cosine logits: LDAM with DRW (Cao et al. 2019) and KPS (spec ffn §2).

Both take **raw cosines** ``cos θ_j`` (a cosine head with ``model.cosine_scale: 1``) and
apply their own scale. Both follow the epoch through :meth:`set_epoch`: DRW switches its
class weights on, KPS its per-sample scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.losses.reduction import weighted_cross_entropy
from tailfuse.numerics import at_least_float32


def class_balanced_weights(class_counts: list[int], beta: float = 0.9999) -> list[float]:
    """Effective-number weights ``(1−β)/(1−β^{n_c})``, normalised to sum to C (Cui et al. 2019)."""
    raw = [(1.0 - beta) / (1.0 - beta**count) for count in class_counts]
    total = sum(raw)
    return [len(class_counts) * value / total for value in raw]


def ldam_margins(class_counts: list[int], max_m: float) -> torch.Tensor:
    """LDAM's per-class margins ``Δ_c = max_m·n_c^{−1/4} / max_j n_j^{−1/4}`` (spec ffn §2.2;
    RIDE's too), computed in float64 and returned as float32, as the authors' NumPy code does."""
    margins = torch.tensor(class_counts, dtype=torch.float64).pow(-0.25)
    return (margins * (max_m / margins.max())).float()


class LDAMLoss(nn.Module):
    """LDAM: ``CE(s·(z − Δ_y·onehot(y)), y)`` with
    ``Δ_c = max_m·(n_min/n_c)^{1/4}`` (spec ffn §2.2).

    DRW: from 0-based epoch ``drw_epoch`` on, the CE is weighted by
    :func:`class_balanced_weights` (spec ffn §2.3); ``drw_epoch=None`` never re-weights.
    """

    def __init__(
        self,
        class_counts: list[int],
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ):
        super().__init__()
        self.register_buffer("margins", ldam_margins(class_counts, max_m), persistent=False)
        self.register_buffer(
            "drw_weights",
            torch.tensor(class_balanced_weights(class_counts, beta)),
            persistent=False,
        )
        self.s = s
        self.drw_epoch = drw_epoch
        self.epoch = 0

    @property
    def logit_scale(self) -> float:
        """``s``: the loss's logits are ``s·cos``, so calibration is measured on them."""
        return self.s

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(
        self, cosine: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        cosine = at_least_float32(cosine)
        adjusted = cosine - F.one_hot(labels, cosine.shape[1]) * self.margins.to(cosine.device)
        weight = class_weights
        if self.drw_epoch is not None and self.epoch >= self.drw_epoch:
            weight = self.drw_weights.to(cosine.device)
        return weighted_cross_entropy(self.s * adjusted, labels, weight)


class KPSLoss(nn.Module):
    """KPS (Key Point Sensitive) loss on raw cosines, as the authors' code
    computes it (spec ffn §2.1).

    ``r_c = log(50·n_c/n_min)/log 50`` multiplies every logit; the target logit loses the
    margin ``m_c = max_m·r_{C−1−c}/r_max`` (the code reverses the list by class index:
    ``margin_order: reversed``; ``by_count`` computes it from ``n_c`` directly, which is
    what the reversal means when classes are not sorted by count). Scale ``s`` for every
    sample, and from 0-based epoch ``weighted_from_epoch`` on the per-sample scale
    ``clamp(s·r_{C−1−y}, s, 50)``.
    """

    def __init__(
        self,
        class_counts: list[int],
        max_m: float = 0.5,
        s: float = 15.0,
        weighted_from_epoch: int | None = 120,
        margin_order: str = "reversed",
    ):
        super().__init__()
        n_min, n_max = min(class_counts), max(class_counts)
        multipliers = [math.log(50.0 * count / n_min) / math.log(50.0) for count in class_counts]
        r_max = max(multipliers)
        if margin_order == "reversed":
            partner = list(reversed(multipliers))
        elif margin_order == "by_count":
            # the multiplier of the class whose count mirrors n_c on the log scale: n_max·n_min/n_c
            partner = [math.log(50.0 * n_max / count) / math.log(50.0) for count in class_counts]
        else:
            raise ValueError(f"unknown margin_order '{margin_order}' (reversed, by_count)")
        self.register_buffer(
            "multipliers", torch.tensor(multipliers, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "margins",
            torch.tensor([max_m * p / r_max for p in partner], dtype=torch.float32),
            persistent=False,
        )
        self.register_buffer(
            "sample_scales",
            torch.tensor([min(max(s * p, s), 50.0) for p in partner], dtype=torch.float32),
            persistent=False,
        )
        self.s = s
        self.weighted_from_epoch = weighted_from_epoch
        self.epoch = 0

    @property
    def logit_scale(self) -> float:
        """``s``, the base scale (the per-sample scale needs the label, unknown at test)."""
        return self.s

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def training_logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """``r_j·cos θ_j``: the logits KPS trains on, without margin and scale."""
        return at_least_float32(cosine) * self.multipliers.to(cosine.device)

    def forward(
        self, cosine: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.training_logits(cosine)
        logits = logits - F.one_hot(labels, cosine.shape[1]) * self.margins.to(cosine.device)
        if self.weighted_from_epoch is not None and self.epoch >= self.weighted_from_epoch:
            scale = self.sample_scales.to(cosine.device)[labels].unsqueeze(1)
        else:
            scale = self.s
        return weighted_cross_entropy(scale * logits, labels, class_weights)
