"""MiSLAS label-aware smoothing: ε per class and the loss, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.losses.label_aware_smoothing import LabelAwareSmoothing, smoothing_per_class


def test_epsilon_shapes_by_hand():
    counts = [100, 55, 10]  # r = 1, 0.5, 0
    assert smoothing_per_class(counts, 0.4, 0.1, "linear") == pytest.approx([0.4, 0.25, 0.1])
    assert smoothing_per_class(counts, 0.4, 0.1, "concave") == pytest.approx([0.4, 0.1 + 0.3 * math.sin(math.pi / 4), 0.1])
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
