"""Losses of multi-expert models: they take a list of per-expert (or per-branch) logits.

- :class:`RIDELoss` (spec h2t §3.1, glt_ifl §4 "RIDE"; official RIDE ``RIDELoss``): per
  expert, LDAM-margin CE with DRW weights plus ``α_div·T̄²·KL(softmax(z̄/T) ‖ softmax(z_k/T))``.
- :class:`TADELoss` (spec glt_ifl §4 "TADE"; official TADE ``DiverseExpertLoss``): CE,
  Balanced-Softmax CE and inverse-prior CE, one per expert.
- :class:`ExpertCrossEntropy`: the sum of per-expert CE (RIDE stage 2; "RIDE + IFL, CE").
- :class:`ResLoss` (spec h2t §3.1, ResLT): ``(1−β)·F + β·I`` over ``[z_H, z_M, z_T]``.

Each class has ``takes_expert_logits = True`` (``ResLoss``: ``takes_branch_logits``), so
methods know to hand it the list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.errors import ConfigError
from tailfuse.losses.margins import class_balanced_weights, ldam_margins
from tailfuse.losses.reduction import weighted_cross_entropy, weighted_mean_denominator
from tailfuse.numerics import at_least_float32


class RIDELoss(nn.Module):
    """RIDE's loss over expert logits ``z_k`` (already scaled, e.g. ``30·cos``); returns Σ_k L_k.

    ``L_k = base_loss_factor·CE(z_k − s·m_y·onehot(y), y; w)``
    ``      + α_div·T̄²·KL(softmax(z̄/T) ‖ softmax(z_k/T))``
    with LDAM margins ``m_c = max_m·n_c^{−1/4}/max n^{−1/4}``, ``z̄`` the expert mean (no
    gradient), α_div = ``diversity_factor`` (−0.2: diversity is rewarded). From 0-based
    epoch ``drw_epoch`` on (official RIDE: ``epoch > reweight_epoch`` with 1-based epochs),
    ``w`` are the class-balanced weights (β = 0.9999) and the temperature is per class:
    ``T_c = T·t_c`` with ``t_c ∝ C·π_c·r + 1 − r`` normalised by its max (``r`` =
    ``reweight_factor``, 0.05 in official RIDE and the H2T code; the GLT code's 0.02 per
    spec glt_ifl §4), ``T̄`` = mean of ``T_c``; before that ``w = 1`` and ``T`` is scalar.
    ``max_m: 0`` drops the margins (plain CE per expert).
    """

    takes_expert_logits = True

    def __init__(
        self,
        class_counts: list[int],
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
        base_loss_factor: float = 1.0,
        diversity_factor: float = -0.2,
        temperature: float = 1.0,
        reweight_factor: float = 0.05,
    ):
        super().__init__()
        counts = torch.tensor(class_counts, dtype=torch.float64)
        self.register_buffer("margins", ldam_margins(class_counts, max_m), persistent=False)
        self.register_buffer(
            "drw_weights",
            torch.tensor(class_balanced_weights(class_counts, beta)),
            persistent=False,
        )
        prior = counts / counts.sum()
        scale = len(class_counts) * prior * reweight_factor + 1.0 - reweight_factor
        if not (scale > 0).all():
            raise ConfigError(
                "ride loss: reweight_factor is too large (a class temperature is not positive)"
            )
        self.register_buffer("temperature_scale", (scale / scale.max()).float(), persistent=False)
        self.s, self.drw_epoch, self.base_loss_factor = s, drw_epoch, base_loss_factor
        self.diversity_factor, self.temperature = diversity_factor, temperature
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def reweighting(self) -> bool:
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def forward(self, expert_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        expert_logits = [at_least_float32(logits) for logits in expert_logits]
        mean_logits = torch.stack(expert_logits).mean(0).detach()
        num_classes = mean_logits.shape[1]
        margin = F.one_hot(labels, num_classes) * (self.s * self.margins.to(mean_logits.device))
        if self.reweighting:
            weight = self.drw_weights.to(mean_logits.device)
            temperature = self.temperature * self.temperature_scale.to(mean_logits.device).view(
                1, -1
            )
            temperature_mean = float(temperature.mean())
        else:
            weight, temperature, temperature_mean = None, self.temperature, self.temperature
        target = F.softmax(mean_logits / temperature, dim=1)
        total = mean_logits.new_zeros(())
        for logits in expert_logits:
            total = total + self.base_loss_factor * weighted_cross_entropy(
                logits - margin, labels, weight
            )
            if self.diversity_factor != 0:
                log_expert = F.log_softmax(logits / temperature, dim=1)
                divergence = F.kl_div(log_expert, target, reduction="batchmean")
                total = total + self.diversity_factor * temperature_mean**2 * divergence
        return total


def inverse_prior(prior: torch.Tensor) -> torch.Tensor:
    """The prior with its rank order reversed: the most frequent class gets the rarest's share."""
    values, order = torch.sort(prior)
    ranks = torch.argsort(order)
    return values[len(prior) - 1 - ranks]


class TADELoss(nn.Module):
    """TADE's expert losses: ``CE(z1) + CE(z2 + log π) + CE(z3 + log π − τ·log π_inv)``.

    π = training class prior, π_inv = :func:`inverse_prior`, logs of ``π + 1e-9``; τ = 2.
    """

    takes_expert_logits = True

    def __init__(self, class_counts: list[int], tau: float = 2.0):
        super().__init__()
        counts = torch.tensor(class_counts, dtype=torch.float64)
        prior = counts / counts.sum()
        self.register_buffer("log_prior", torch.log(prior + 1e-9).float(), persistent=False)
        self.register_buffer(
            "log_inverse_prior", torch.log(inverse_prior(prior) + 1e-9).float(), persistent=False
        )
        self.tau = tau

    def expert_adjusted_logits(self, expert_logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """The logits each expert's CE sees: raw, + log π, + log π − τ·log π_inv."""
        if len(expert_logits) != 3:
            raise ConfigError(f"the tade loss needs exactly 3 experts, not {len(expert_logits)}")
        log_prior = self.log_prior.to(expert_logits[0].device)
        log_inverse = self.log_inverse_prior.to(expert_logits[0].device)
        first, second, third = (at_least_float32(logits) for logits in expert_logits)
        return [first, second + log_prior, third + log_prior - self.tau * log_inverse]

    def forward(self, expert_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return sum(
            F.cross_entropy(logits, labels) for logits in self.expert_adjusted_logits(expert_logits)
        )


class ExpertCrossEntropy(nn.Module):
    """Σ_k CE(z_k, y): every expert trained with plain cross-entropy."""

    takes_expert_logits = True

    def forward(self, expert_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(at_least_float32(logits), labels) for logits in expert_logits)


#: ResLT group masks per dataset: (medium_from, tail_from, rule). ``at_least``: g_M = 1[y ≥ a],
#: g_T = 1[y ≥ b] (labels sorted head first). ``below``: g_M = 1[y < a], g_T = 1[y < b], the
#: authors' ImageNet-LT / iNat code (spec h2t §3.1: the inverse convention, probably a bug).
#: ``imagenet_lt_head_first`` mirrors the authors' ImageNet masks onto head-first labels.
RESLT_GROUP_MASKS: dict[str, tuple[int, int | None, str]] = {
    "cifar100": (35, 70, "at_least"),
    "cifar10": (2, 4, "at_least"),
    "imagenet_lt": (825, 220, "below"),
    "imagenet_lt_head_first": (175, 780, "at_least"),
    "inat2018": (6600, None, "below"),
}


def reslt_group_masks(
    labels: torch.Tensor, medium_from: int, tail_from: int | None, rule: str
) -> torch.Tensor:
    """``[g_H, g_M, g_T]`` as a (3, B) float tensor; g_H is all ones, g_T zero
    without ``tail_from``."""
    head = torch.ones_like(labels, dtype=torch.float32)
    if rule == "at_least":
        medium = (labels >= medium_from).float()
        tail = (labels >= tail_from).float() if tail_from is not None else torch.zeros_like(head)
    elif rule == "below":
        medium = (labels < medium_from).float()
        tail = (labels < tail_from).float() if tail_from is not None else torch.zeros_like(head)
    else:
        raise ConfigError(f"unknown ResLT mask rule '{rule}' (at_least, below)")
    return torch.stack([head, medium, tail])


class ResLoss(nn.Module):
    """ResLT's loss on ``[z_H, z_M, z_T]`` (H2T ``loss.py`` ResLoss, spec h2t §3.1).

    ``I = Σ_b Σ_k CE(z_k)·g_k / Σ_b Σ_k g_k`` (each branch on its class group),
    ``F = mean_b CE(z_H + z_M + z_T)``; loss ``(1−β)·F + β·I`` with
    ``CE = −log(softmax + 1e-7)``. ``groups`` names a row of :data:`RESLT_GROUP_MASKS`.
    """

    takes_branch_logits = True

    def __init__(self, class_counts: list[int], beta: float = 0.99, groups: str = "cifar100"):
        super().__init__()
        if groups not in RESLT_GROUP_MASKS:
            raise ConfigError(
                f"unknown ResLT groups '{groups}'; choose from "
                f"{', '.join(sorted(RESLT_GROUP_MASKS))}"
            )
        self.beta = beta
        self.medium_from, self.tail_from, self.rule = RESLT_GROUP_MASKS[groups]

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probabilities = (
            torch.softmax(at_least_float32(logits), dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
        )
        return -torch.log(probabilities + 1e-7)

    def forward(self, branch_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        masks = reslt_group_masks(labels, self.medium_from, self.tail_from, self.rule).to(
            labels.device
        )
        per_branch = torch.stack([self._cross_entropy(logits, labels) for logits in branch_logits])
        individual = (per_branch * masks).sum() / weighted_mean_denominator(masks.sum())
        fused = self._cross_entropy(sum(branch_logits), labels).mean()
        return (1.0 - self.beta) * fused + self.beta * individual
