"""Cross-entropy and its mixup form on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.errors import ConfigError
from tailfuse.losses import build_loss
from tailfuse.losses.cross_entropy import CrossEntropy, mixup_loss


def test_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    first = -math.log(math.exp(2) / (math.exp(2) + 2))
    second = math.log(3)
    assert math.isclose(
        build_loss("cross_entropy", [1, 1, 1])(logits, labels).item(),
        (first + second) / 2,
        rel_tol=1e-6,
    )


def test_mixup_loss_is_the_lambda_weighted_sum():
    loss = build_loss("cross_entropy", [1, 1])
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    labels, partners = torch.tensor([0, 1]), torch.tensor([1, 1])
    expected = 0.3 * loss(logits, labels) + 0.7 * loss(logits, partners)
    assert torch.isclose(mixup_loss(loss, logits, labels, partners, 0.3), expected)
    assert torch.isclose(mixup_loss(loss, logits, labels, partners, 1.0), loss(logits, labels))


def test_class_weights_of_the_constructor_weight_each_sample_unless_a_call_replaces_them():
    # per-sample losses ln 2 (logits 0, 0) and ln 4 (label 1 against logits ln 3, 0);
    # weights 1 and 3: (1·ln 2 + 3·ln 4) / (1 + 3) = 7/4 ln 2
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    weighted = CrossEntropy([1, 3])  # integer weights are taken as float
    assert math.isclose(weighted(logits, labels).item(), 1.75 * math.log(2), rel_tol=1e-6)
    equal = torch.tensor([1.0, 1.0])
    assert math.isclose(weighted(logits, labels, equal).item(), 1.5 * math.log(2), rel_tol=1e-6)
    assert weighted.state_dict() == {}  # the weights come from the config, not checkpoints


def test_an_unknown_loss_name_is_one_error_with_a_suggestion():
    with pytest.raises(
        ConfigError,
        match=r"unknown loss 'cross_entropi' \(did you mean 'cross_entropy'.*choose from",
    ):
        build_loss("cross_entropi", [1, 1])
    with pytest.raises(ConfigError) as raised:
        build_loss("no_such_loss", [1, 1])
    assert str(raised.value).startswith(
        "unknown loss 'no_such_loss'; choose from balanced_softmax, "
    )
    assert ", cross_entropy, expert_cross_entropy, focal, " in str(raised.value)


def test_a_bad_loss_option_is_one_error_naming_the_loss():
    with pytest.raises(ConfigError) as raised:
        build_loss("label_aware_smoothing", [3, 1], shape="wavy")
    assert str(raised.value) == (
        "loss 'label_aware_smoothing': unknown smoothing shape 'wavy' "
        "(concave, linear, convex, exp)"
    )
