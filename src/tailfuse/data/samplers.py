"""Index samplers over a labelled training set (spec h2t §1.2; Kang et al. 2020).

Each sampler returns, per epoch, one tensor of dataset indices drawn from a seeded
generator; the trainer cuts it into global batches, and under DDP each rank takes its
share of every global batch (:func:`rank_share`). Nothing here loops per image on the
hot path, and no sampler loops over classes or visits: an epoch of iNaturalist 2018
(437,513 images, 8,142 classes) is built in well under a second
(benchmarks/sampler_epoch_build.py).
"""

from __future__ import annotations

import abc
import math

import torch

from tailfuse.errors import ConfigError, did_you_mean

SAMPLERS: dict[str, type[IndexSampler]] = {}


def register_sampler(name: str):
    def decorator(cls):
        SAMPLERS[name] = cls
        cls.name = name
        return cls

    return decorator


class IndexSampler(abc.ABC):
    """Base: knows the labels; ``epoch_indices`` draws one epoch of ``num_samples`` indices."""

    name = "base"

    def __init__(self, labels: torch.Tensor, num_classes: int, num_samples: int | None = None):
        self.labels = labels.detach().to("cpu", torch.int64)
        self.num_classes = num_classes
        self.num_samples = num_samples or len(self.labels)
        self.class_counts = torch.bincount(self.labels, minlength=num_classes)
        if (self.class_counts == 0).any():
            empty = torch.nonzero(self.class_counts == 0).flatten().tolist()
            raise ConfigError(
                f"classes {empty} have no training images; a sampler needs every class"
            )
        order = torch.argsort(self.labels, stable=True)
        self.indices_by_class = order
        self.class_starts = torch.cumsum(self.class_counts, 0) - self.class_counts

    @abc.abstractmethod
    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch of ``num_samples`` dataset indices."""

    def _uniform_within(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For each drawn class, one uniformly chosen image of it (with replacement)."""
        sizes = self.class_counts[classes]
        offsets = (
            torch.rand(len(classes), generator=generator, dtype=torch.float64) * sizes
        ).long()
        offsets = torch.minimum(offsets, sizes - 1)
        return self.indices_by_class[self.class_starts[classes] + offsets]

    def class_probabilities(self) -> torch.Tensor:
        """The class distribution this sampler draws from (for checks and reports)."""
        counts = self.class_counts.double()
        return counts / counts.sum()


@register_sampler("instance")
class InstanceSampler(IndexSampler):
    """A plain shuffle: every image once per epoch, class frequency ∝ n_c."""

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        permutation = torch.randperm(len(self.labels), generator=generator)
        if self.num_samples <= len(self.labels):
            return permutation[: self.num_samples]
        repeats = math.ceil(self.num_samples / len(self.labels))
        extra = [torch.randperm(len(self.labels), generator=generator) for _ in range(repeats - 1)]
        return torch.cat([permutation, *extra])[: self.num_samples]


class _ClassWeightedSampler(IndexSampler):
    """Draw a class from ``class_probabilities()``, then a uniform image of it, with replacement."""

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        classes = torch.multinomial(
            self.class_probabilities(), self.num_samples, replacement=True, generator=generator
        )
        return self._uniform_within(classes, generator)


@register_sampler("class_balanced")
class ClassBalancedSampler(_ClassWeightedSampler):
    """Uniform class, then a uniform image of that class (spec h2t §1.2, fused branch)."""

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        classes = torch.randint(self.num_classes, (self.num_samples,), generator=generator)
        return self._uniform_within(classes, generator)

    def class_probabilities(self) -> torch.Tensor:
        return torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)


@register_sampler("square_root")
class SquareRootSampler(_ClassWeightedSampler):
    """Class probability ∝ sqrt(n_c) (Mahajan et al. 2018; Kang et al. 2020)."""

    def class_probabilities(self) -> torch.Tensor:
        weights = self.class_counts.double().sqrt()
        return weights / weights.sum()


@register_sampler("reverse")
class ReverseSampler(_ClassWeightedSampler):
    """Class probability ∝ 1/n_c (BBN's reversed sampler)."""

    def class_probabilities(self) -> torch.Tensor:
        weights = 1.0 / self.class_counts.double()
        return weights / weights.sum()


@register_sampler("class_aware")
class ClassAwareSampler(IndexSampler):
    """cRT's sampler: visit classes in shuffled cycles, taking 4 consecutive images of each.

    Each class keeps its own shuffled cycle over its images, so an image repeats only
    after the whole class has been seen (Shen et al. 2016; Kang et al. 2020).
    """

    samples_per_class = 4

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        visits = math.ceil(self.num_samples / self.samples_per_class)
        cycles = math.ceil(visits / self.num_classes)
        class_order = torch.cat(
            [torch.randperm(self.num_classes, generator=generator) for _ in range(cycles)]
        )[:visits]
        visits_per_class = torch.bincount(class_order, minlength=self.num_classes)
        streams, stream_starts = self._shuffled_rounds(
            visits_per_class * self.samples_per_class, generator
        )
        # rank of each visit among the visits of its class (0 for its first visit, ...)
        by_class = torch.argsort(class_order, stable=True)
        first_visit = torch.cumsum(visits_per_class, 0) - visits_per_class
        visit_rank = torch.empty(visits, dtype=torch.long)
        visit_rank[by_class] = torch.arange(visits) - first_visit[class_order[by_class]]
        # visit v of class c takes images 4k .. 4k+3 of c's stream, k its rank
        offsets = torch.arange(self.samples_per_class)
        positions = (
            stream_starts[class_order].unsqueeze(1)
            + visit_rank.unsqueeze(1) * self.samples_per_class
            + offsets
        )
        return streams[positions.flatten()][: self.num_samples]

    def _shuffled_rounds(
        self, needed: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each class's images in ``ceil(needed_c / n_c)`` independent random
        orders, one after another.

        Returns all classes' streams concatenated and where each class's stream starts;
        one random key per (class, round, image) and two sorts, no loop over classes.
        """
        counts = self.class_counts
        rounds = torch.where(needed > 0, (needed + counts - 1) // counts, torch.zeros_like(needed))
        lengths = rounds * counts
        starts = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum())
        element_class = torch.repeat_interleave(torch.arange(self.num_classes), lengths)
        offset = torch.arange(total) - starts[element_class]
        member = offset % counts[element_class]
        round_group = (torch.cumsum(rounds, 0) - rounds)[element_class] + offset // counts[
            element_class
        ]
        keys = torch.rand(total, generator=generator, dtype=torch.float64)
        by_key = torch.argsort(keys)
        order = by_key[
            torch.argsort(round_group[by_key], stable=True)
        ]  # random within each (class, round)
        images = self.indices_by_class[self.class_starts[element_class] + member]
        return images[order], starts


def class_aware_epoch_length(class_counts: list[int], max_repeat: int = 4) -> int:
    """Epoch length of the GLT authors' ClassAwareSampler: ``min(max_c n_c · C, max_repeat · N)``.

    Spec glt_ifl §4 (cRT, LWS): the largest class times the class count, capped at
    ``max_repeat`` (4) passes over the training set; pass it as ``num_samples``.
    """
    counts = [int(count) for count in class_counts]
    return min(max(counts) * len(counts), max_repeat * sum(counts))


def build_sampler(
    name: str, labels: torch.Tensor, num_classes: int, num_samples: int | None = None
) -> IndexSampler:
    """Create a sampler by name (see :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ConfigError(
            f"unknown sampler '{name}'{did_you_mean(name, SAMPLERS)}; choose from "
            f"{', '.join(sorted(SAMPLERS))}"
        )
    return SAMPLERS[name](labels, num_classes, num_samples)


def rank_share(global_batch: torch.Tensor, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The part of one global batch that process ``rank`` of ``world_size`` trains on."""
    if world_size == 1:
        return global_batch
    return global_batch.tensor_split(world_size)[rank]


# progressive, effective-number and CBEN samplers register themselves into SAMPLERS
from tailfuse.data import rebalancing_samplers  # noqa: E402, F401
