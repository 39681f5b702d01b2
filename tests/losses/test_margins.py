"""LDAM (+DRW) and KPS against the spec's numbers and hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailfuse.losses import build_loss
from tailfuse.losses.margins import KPSLoss, LDAMLoss, class_balanced_weights

CIFAR10_IF200 = [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25]


def test_kps_multipliers_margins_and_scales_match_spec_table():
    loss = KPSLoss(CIFAR10_IF200, max_m=0.2, s=15)
    assert loss.multipliers.tolist() == pytest.approx(
        [2.354, 2.204, 2.053, 1.903, 1.752, 1.602, 1.451, 1.301, 1.150, 1.000], abs=1e-3
    )
    assert loss.margins.tolist() == pytest.approx(
        [0.0849, 0.0977, 0.1105, 0.1233, 0.1360, 0.1488, 0.1616, 0.1744, 0.1872, 0.2000], abs=1e-4
    )
    assert loss.sample_scales[0].item() == pytest.approx(15.0) and loss.sample_scales[
        -1
    ].item() == pytest.approx(35.32, abs=0.01)


def test_kps_loss_by_hand_before_and_after_the_epoch_switch():
    counts = [100, 10]
    loss = KPSLoss(counts, max_m=0.5, s=15, weighted_from_epoch=3)
    r = [math.log(50 * 100 / 10) / math.log(50), 1.0]
    m = [0.5 * r[1] / r[0], 0.5 * r[0] / r[0]]  # reversed list
    cosine = torch.tensor([[0.6, 0.2], [0.1, 0.3]])
    labels = torch.tensor([0, 1])
    logits = torch.tensor([[r[0] * 0.6 - m[0], r[1] * 0.2], [r[0] * 0.1, r[1] * 0.3 - m[1]]])
    assert torch.isclose(loss(cosine, labels), F.cross_entropy(15 * logits, labels))
    loss.set_epoch(3)
    scales = torch.tensor([[min(max(15 * r[1], 15), 50)], [min(max(15 * r[0], 15), 50)]])
    assert torch.isclose(loss(cosine, labels), F.cross_entropy(scales * logits, labels))


def test_kps_loss_on_a_batch_without_the_last_class():
    """Three classes, labels only 0: the margin goes to class 0 of three
    logits (counts 50, 5, 1)."""
    loss = KPSLoss([50, 5, 1], max_m=0.5, s=10)
    r = [math.log(50 * 50) / math.log(50), math.log(50 * 5) / math.log(50), 1.0]
    margin = 0.5 * r[2] / r[0]  # reversed list: class 0 takes the rarest class's multiplier
    cosine = torch.tensor([[0.5, 0.1, -0.3]])
    logits = [10 * (r[0] * 0.5 - margin), 10 * r[1] * 0.1, 10 * r[2] * -0.3]
    expected = math.log(sum(math.exp(z) for z in logits)) - logits[0]
    assert loss(cosine, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-4)


def test_kps_by_count_margins_equal_reversed_ones_on_sorted_exponential_counts():
    reversed_order = KPSLoss(CIFAR10_IF200, max_m=0.2).margins
    by_count = KPSLoss(CIFAR10_IF200, max_m=0.2, margin_order="by_count").margins
    assert torch.allclose(reversed_order, by_count, atol=2e-3)
    shuffled = [CIFAR10_IF200[i] for i in (3, 0, 9, 1, 2, 4, 5, 6, 7, 8)]
    assert KPSLoss(shuffled, max_m=0.2, margin_order="by_count").margins[2].item() == pytest.approx(
        0.2
    )


def test_ldam_margins_and_loss_by_hand():
    counts = [16, 1]
    loss = LDAMLoss(counts, max_m=0.5, s=30)
    assert loss.margins.tolist() == pytest.approx([0.25, 0.5])  # 0.5 * (1/16)^(1/4)
    cosine = torch.tensor([[0.5, 0.1], [0.2, 0.4]])
    labels = torch.tensor([0, 1])
    expected = F.cross_entropy(30 * torch.tensor([[0.25, 0.1], [0.2, -0.1]]), labels)
    assert torch.isclose(loss(cosine, labels), expected)


def test_ldam_and_ride_margins_are_the_authors_float64_values_cast_to_float32():
    """LDAM-DRW's and RIDE's code: ``m = 1/sqrt(sqrt(n)); m *= max_m/max(m)`` in NumPy float64,
    then a float32 tensor. On CIFAR-10-LT IF 100 a float32 computation differs in the last bit."""
    import numpy as np

    from tailfuse.losses.experts import RIDELoss

    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    authors = 1.0 / np.sqrt(np.sqrt(np.array(counts, dtype=np.float64)))
    authors = torch.tensor(authors * (0.5 / authors.max()), dtype=torch.float)
    single_precision = torch.tensor(counts, dtype=torch.float32).pow(-0.25)
    assert not torch.equal(single_precision * (0.5 / single_precision.max()), authors)
    assert torch.equal(LDAMLoss(counts, max_m=0.5).margins, authors)
    assert torch.equal(RIDELoss(counts, max_m=0.5).margins, authors)


def test_ldam_defaults_max_m_half_and_unweighted_until_set_epoch():
    """Counts 81 and 16: Δ ∝ n^(−1/4) = 1/3 and 1/2, scaled so the rarest gets max_m = 0.5:
    [1/3, 1/2]; with drw_epoch = 1 a fresh loss is in epoch 0 and not yet re-weighted."""
    loss = LDAMLoss([81, 16], drw_epoch=1)
    assert loss.margins.tolist() == pytest.approx([1 / 3, 0.5], abs=1e-6)
    cosine, labels = torch.tensor([[0.5, 0.1], [0.2, 0.4]]), torch.tensor([0, 1])
    plain = F.cross_entropy(30 * torch.tensor([[0.5 - 1 / 3, 0.1], [0.2, -0.1]]), labels)
    assert loss(cosine, labels).item() == pytest.approx(plain.item(), rel=1e-5)


def test_drw_weights_switch_on_at_their_epoch():
    counts = [5000, 25]
    weights = class_balanced_weights(counts, 0.9999)
    assert sum(weights) == pytest.approx(2.0) and weights[1] > weights[0]
    loss = LDAMLoss(counts, drw_epoch=160)
    cosine, labels = torch.tensor([[0.3, 0.1], [0.2, 0.2]]), torch.tensor([0, 1])
    before = loss(cosine, labels)
    loss.set_epoch(160)
    after = loss(cosine, labels)
    adjusted = 30 * (cosine - F.one_hot(labels, 2) * loss.margins)
    assert torch.isclose(
        after, F.cross_entropy(adjusted, labels, weight=torch.tensor(weights, dtype=torch.float32))
    )
    assert not torch.isclose(before, after)


def test_spec_drw_weights_cifar10_if200():
    weights = class_balanced_weights(CIFAR10_IF200)
    assert weights[0] == pytest.approx(0.028, abs=1e-3) and weights[-1] == pytest.approx(
        4.44, abs=0.01
    )


def test_build_loss_rejects_unknown_options():
    from tailfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="loss 'kps' does not take"):
        build_loss("kps", [2, 1], margin=3)


def test_kps_with_class_weights_is_the_weighted_mean_by_hand():
    """Counts [50, 1]: r = [2, 1], margins [0.25, 0.5] (reversed), s = 15; DRW weights [0.5, 2]."""
    loss = KPSLoss([50, 1], max_m=0.5, s=15.0, weighted_from_epoch=None)
    cosine = torch.tensor([[0.5, 0.1], [0.2, 0.4]])
    labels = torch.tensor([0, 1])
    # sample 0: r*cos = [1.0, 0.1], target margin 0.25 -> [0.75, 0.1] * 15 = [11.25, 1.5]
    first = math.log1p(math.exp(1.5 - 11.25))
    # sample 1: r*cos = [0.4, 0.4], target margin 0.5 -> [0.4, -0.1] * 15 = [6.0, -1.5]
    second = math.log1p(math.exp(6.0 + 1.5))
    weighted = loss(cosine, labels, class_weights=torch.tensor([0.5, 2.0])).item()
    assert weighted == pytest.approx((0.5 * first + 2.0 * second) / 2.5, rel=1e-5)
    assert loss(cosine, labels).item() == pytest.approx((first + second) / 2, rel=1e-5)


def test_kps_defaults_and_the_per_sample_scale_clamp_at_50():
    """FFN's KPS constants: max_m 0.5, s 15, per-sample scales from epoch 120, clamp(s·r, s, 50)."""
    loss = KPSLoss([1000, 1])
    assert (loss.s, loss.weighted_from_epoch, loss.epoch) == (15.0, 120, 0)
    # r = [log(50000)/log 50, 1] = [2.76578, 1]; reversed partner [1, 2.76578]
    assert loss.margins.tolist() == pytest.approx([0.5 / 2.765776, 0.5], abs=1e-6)
    assert loss.sample_scales.tolist() == pytest.approx([15.0, 15.0 * 2.765776], abs=1e-4)
    assert loss.state_dict() == {}
    # s = 20: 20 · 2.76578 = 55.3 is clamped to 50
    assert KPSLoss([1000, 1], s=20.0).sample_scales.tolist() == pytest.approx([20.0, 50.0])
    with pytest.raises(ValueError, match="unknown margin_order 'sorted'"):
        KPSLoss([1000, 1], margin_order="sorted")
