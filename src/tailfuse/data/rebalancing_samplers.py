"""Re-balancing samplers of the peers: progressive, effective-number, CBEN.

Each draws a class from its class distribution, then a uniform image of that class, with
replacement (equivalent to the authors' ``multinomial`` over per-image weights), from
the epoch's seeded generator; the trainer cuts the epoch into global batches and each
DDP rank takes its share (:func:`~tailfuse.data.samplers.rank_share`), as for every
sampler. The progressive ones change with the epoch: the session calls ``set_epoch``
before drawing, so a resumed run draws exactly what an uninterrupted one draws.

- ``progressive`` (Kang et al. 2020, "progressively-balanced"):
  ``p_c(t) = (1 − t/T)·n_c/N + (t/T)/C``, t the 0-based epoch of T.
- ``progressive_power``: ``p_c(t) ∝ n_c^q`` with the power q going from 1 (instance) at
  the first epoch to 0 (class-balanced) at the last, ``q = 1 − t/(T−1)``.
- ``effective_number`` (GCL's and MiSLAS's ``EffectNumSampler``): image weight
  ``(1−β)/(1−β^{n_c})``, β = 0.9999, so ``p_c ∝ n_c·(1−β)/(1−β^{n_c})``.
- ``cben`` (GCL's ``CBEffectNumSampler``, spec h2t §6.3): the same with a per-class
  ``β_c = a + b·δ_c``, a = 0.9999, b = 1e-5, ``δ_c = (log n_max − log n_c)/(log n_max − log n_min)``
  (the code's ``(δ − δ.min())/δ.max() − δ.min()`` is this, as δ.min() = 0). The author means it
  to sample the tail somewhat less than ``effective_number`` (GCLLoss issue #1); on CIFAR-sized
  counts the two distributions differ by well under a tenth of a point.
"""

from __future__ import annotations

import math

import torch

from tailfuse.data.samplers import _ClassWeightedSampler, register_sampler


class _EpochDependentSampler(_ClassWeightedSampler):
    """A class-weighted sampler whose distribution depends on (epoch, total epochs)."""

    def __init__(self, labels: torch.Tensor, num_classes: int, num_samples: int | None = None):
        super().__init__(labels, num_classes, num_samples)
        self.epoch, self.total_epochs = 0, 1

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the session before each epoch's draw."""
        self.epoch, self.total_epochs = epoch, max(total_epochs, 1)


@register_sampler("progressive")
class ProgressivelyBalancedSampler(_EpochDependentSampler):
    """``(1 − t/T)·instance + (t/T)·class-balanced`` (Kang et al. 2020, eq. 2)."""

    def class_probabilities(self) -> torch.Tensor:
        counts = self.class_counts.double()
        progress = self.epoch / self.total_epochs
        return (1.0 - progress) * counts / counts.sum() + progress / self.num_classes


@register_sampler("progressive_power")
class ProgressivePowerSampler(_EpochDependentSampler):
    """``p_c ∝ n_c^q``, q from 1 at the first epoch down to 0 at the last."""

    def power(self) -> float:
        """The power q of the current epoch."""
        if self.total_epochs <= 1:
            return 0.0
        return 1.0 - self.epoch / (self.total_epochs - 1)

    def class_probabilities(self) -> torch.Tensor:
        weights = self.class_counts.double() ** self.power()
        return weights / weights.sum()


def effective_number_image_weights(class_counts: list[int], betas: list[float]) -> list[float]:
    """Per-image weight of each class, ``(1−β_c)/(1−β_c^{n_c})`` (Cui et al. 2019)."""
    return [
        (1.0 - beta) / (1.0 - beta**count) for count, beta in zip(class_counts, betas, strict=True)
    ]


def cben_betas(class_counts: list[int], a: float = 0.9999, b: float = 1e-5) -> list[float]:
    """GCL's CBEN ``β_c = a + b·(log n_max − log n_c)/(log n_max − log n_min)``."""
    logs = [math.log(count) for count in class_counts]
    largest = max(logs)
    span = largest - min(logs)
    return [a + b * ((largest - value) / span if span else 0.0) for value in logs]


class _EffectiveNumberBase(_ClassWeightedSampler):
    def betas(self) -> list[float]:
        raise NotImplementedError

    def class_probabilities(self) -> torch.Tensor:
        counts = self.class_counts.tolist()
        weights = torch.tensor(
            effective_number_image_weights(counts, self.betas()), dtype=torch.float64
        )
        mass = weights * self.class_counts.double()
        return mass / mass.sum()


@register_sampler("effective_number")
class EffectiveNumberSampler(_EffectiveNumberBase):
    """Image weight ``(1−β)/(1−β^{n_c})`` with β = 0.9999 (GCL/MiSLAS ``EffectNumSampler``)."""

    beta = 0.9999

    def betas(self) -> list[float]:
        return [self.beta] * self.num_classes


@register_sampler("cben")
class ClassBalancedEffectiveNumberSampler(_EffectiveNumberBase):
    """GCL's ``CBEffectNumSampler``: effective number with a per-class β (a = 0.9999, b = 1e-5)."""

    def betas(self) -> list[float]:
        return cben_betas(self.class_counts.tolist())
