"""Weighted means over the whole global batch, under DDP as in one process.

A weighted loss (class-balanced CE, DRW, ResLT's group masks) is ``Σ_b w_b·l_b / Σ_b w_b``
over the batch, as the authors' codes compute it on the batch their ``DataParallel``
gathers. Under DDP each process sees only its share of the global batch. The training
session treats every loss as a per-sample mean: it scales a process's loss by its share
of the global batch times the number of processes, and DDP averages the gradients. A
weighted mean over the share alone would then weight each process's images by that
process's own weight sum, which is not the one-process loss.

While the session computes a step's loss under DDP it opens :func:`global_batch`; inside
it, :func:`weighted_mean_denominator` returns ``Σ_global w · share`` instead of the local
``Σ w`` (one all-reduce of a number), which makes the scaled and averaged losses exactly
the one-process weighted mean. Outside it (one process, evaluation) nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GlobalBatch:
    """How this process's step relates to the global batch."""

    all_reduce: Callable[[torch.Tensor], torch.Tensor]  # sum over the processes
    share: float  # this process's images / the global batch's (the session's loss scaling)


_GLOBAL_BATCH: ContextVar[GlobalBatch | None] = ContextVar("tailfuse_global_batch", default=None)


@contextmanager
def global_batch(
    all_reduce: Callable[[torch.Tensor], torch.Tensor], share: float
) -> Iterator[None]:
    """Within this block, weighted means are taken over the global batch (one DDP step)."""
    token = _GLOBAL_BATCH.set(GlobalBatch(all_reduce, share))
    try:
        yield
    finally:
        _GLOBAL_BATCH.reset(token)


def weighted_mean_denominator(local_weight_sum: torch.Tensor) -> torch.Tensor:
    """The denominator of a weighted mean: ``Σ w`` here, or ``Σ_global w · share`` in a
    :func:`global_batch` step (so that share-scaled, process-averaged losses are the
    global ``Σ w·l / Σ w``)."""
    context = _GLOBAL_BATCH.get()
    if context is None:
        return local_weight_sum
    total = context.all_reduce(local_weight_sum.detach().double().clone())
    return (total * context.share).to(local_weight_sum.dtype)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """``F.cross_entropy(logits, labels, weight=weight)``: ``Σ w_y·CE / Σ w_y``, its weighted
    mean over the global batch in a :func:`global_batch` step."""
    if weight is not None:
        weight = weight.to(logits.dtype)  # float32 weights on float64 logits (parity runs)
    if weight is None or _GLOBAL_BATCH.get() is None:
        return F.cross_entropy(logits, labels, weight=weight)
    sample_weights = weight[labels]
    numerator = (sample_weights * F.cross_entropy(logits, labels, reduction="none")).sum()
    return numerator / weighted_mean_denominator(sample_weights.sum())
