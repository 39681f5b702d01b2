"""MiSLAS label-aware smoothing: ε per class and the loss, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.losses.label_aware_smoothing import LabelAwareSmoothing, smoothing_per_class


def test_epsilon_shapes_by_hand():
    counts = [100, 55, 10]  # r = 1, 0.5, 0
    assert smoothing_per_class(counts, 0.4, 0.1, "linear") == pytest.approx([0.4, 0.25, 0.1])
    assert smoothing_per_class(counts, 0.4, 0.1, "concave") == pytest.approx(
        [0.4, 0.1 + 0.3 * math.sin(math.pi / 4), 0.1]
    )
    assert smoothing_per_class(counts, 0.4, 0.1, "convex") == pytest.approx(
        [0.4, 0.4 + 0.3 * math.sin(1.5 * math.pi + math.pi / 4), 0.1]
    )


def test_loss_by_hand():
    loss = LabelAwareSmoothing([10, 1], smooth_head=0.5, smooth_tail=0.0, shape="linear")
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    log_p = torch.log_softmax(logits, dim=1)
    first = 0.5 * -log_p[0, 0] + 0.5 * -(log_p[0].mean())
    second = 1.0 * -log_p[1, 1]
    assert torch.isclose(loss(logits, labels), (first + second) / 2)


def test_the_defaults_are_mislas_concave_from_0_4_to_0_1():
    """MiSLAS's CIFAR setting (spec h2t §3.1): ε from 0.4 (head) to 0.1 (tail), concave."""
    counts = [100, 55, 10]  # r = 1, 0.5, 0
    concave = [0.4, 0.1 + 0.3 * math.sin(math.pi / 4), 0.1]
    assert smoothing_per_class(counts, 0.4, 0.1) == pytest.approx(concave)
    assert LabelAwareSmoothing(counts).epsilon.tolist() == pytest.approx(concave)


def test_counts_one_apart_span_the_whole_range():
    # n_max − n_min = 1: r = (2 − 1) / 1 = 1 for the larger class, 0 for the smaller
    assert smoothing_per_class([2, 1], 0.4, 0.1, "linear") == pytest.approx([0.4, 0.1])
    # equal counts: no span, every class at the tail value
    assert smoothing_per_class([5, 5], 0.4, 0.1, "linear") == pytest.approx([0.1, 0.1])
