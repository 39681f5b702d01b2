"""Balanced Softmax, logit-adjusted CE, focal loss and post-hoc adjustment, by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tailfuse  # noqa: F401
from tailfuse.config import build_config
from tailfuse.losses import build_loss
from tailfuse.losses.logit_adjustment import log_prior
from tailfuse.methods import build_method
from tailfuse.models import build_model


def test_balanced_softmax_adds_the_log_prior():
    loss = build_loss("balanced_softmax", [3, 1])
    logits, labels = torch.tensor([[0.5, 0.5]]), torch.tensor([1])
    expected = -math.log(0.25 / (0.75 + 0.25))  # softmax of z + log π = log(0.75), log(0.25)
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_logit_adjusted_tau_scales_the_prior():
    loss = build_loss("logit_adjusted", [3, 1], tau=2.0)
    logits, labels = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    assert loss(logits, labels).item() == pytest.approx(
        -math.log(0.75**2 / (0.75**2 + 0.25**2)), rel=1e-5
    )


def test_logit_adjusted_default_tau_is_one_balanced_softmax():
    loss = build_loss("logit_adjusted", [3, 1])
    logits, labels = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    assert loss(logits, labels).item() == pytest.approx(
        -math.log(0.75), rel=1e-5
    )  # softmax(log π) = π


def test_focal_loss_by_hand_and_gradient_through_log_p_only():
    loss = build_loss("focal", [1, 1], gamma=2.0)
    logits = torch.tensor([[2.0, 0.0]], requires_grad=True)
    p = math.exp(2) / (math.exp(2) + 1)
    value = loss(logits, torch.tensor([0]))
    assert value.item() == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-5)
    value.backward()
    expected_grad = -((1 - p) ** 2) * torch.tensor(
        [1 - p, -(1 - p)]
    )  # d(-log p)/dz scaled by the fixed factor
    assert torch.allclose(logits.grad[0], expected_grad.float(), atol=1e-6)
    assert build_loss("focal", [1, 1], gamma=0.0)(
        logits.detach(), torch.tensor([0])
    ).item() == pytest.approx(F.cross_entropy(logits.detach(), torch.tensor([0])).item())


def test_focal_loss_default_gamma_is_lins_two():
    """``loss: focal`` without ``gamma`` is Lin et al.'s γ = 2: logits [1, 0], label 0."""
    p = math.e / (math.e + 1)
    loss = build_loss("focal", [1, 1])
    assert loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(
        -((1 - p) ** 2) * math.log(p), rel=1e-5
    )


def test_posthoc_logit_adjustment_subtracts_tau_log_prior():
    counts = [30, 10]
    config = build_config({"method": {"name": "erm", "posthoc_tau": 1.0}})
    model = build_model(config.model, 2).eval()
    method = build_method(config, model, counts)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        shift = torch.log(torch.tensor([0.75, 0.25]))
        assert torch.allclose(method.predict(images), model(images) - shift, atol=1e-5)


def test_focal_factor_is_detached_by_default():
    """Logits [0, 0], label 0, γ = 1: p = 0.5. With (1 − p) held constant, d/dz₀ of −(1−p)·log p
    is −(1 − p)·(1 − p) = −0.25; differentiating the factor too would give
    p(1−p)·log p − (1−p)² = 0.25·ln 0.5 − 0.25 = −0.4233."""
    from tailfuse.losses.logit_adjustment import focal_mean

    for detach, expected in ((None, -0.25), (False, 0.25 * math.log(0.5) - 0.25)):
        logits = torch.zeros(1, 2, requires_grad=True)
        options = {} if detach is None else {"detach_factor": detach}
        focal_mean(torch.log_softmax(logits, dim=1), torch.tensor([0]), 1.0, **options).backward()
        assert logits.grad[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_log_prior_of_a_class_without_training_images_is_finite():
    # log(0 + 1e-12) for the empty class, log(1/4) and log(3/4) for the others
    prior = log_prior([0, 1, 3])
    expected = torch.tensor([math.log(1e-12), math.log(0.25), math.log(0.75)])
    assert torch.allclose(prior, expected, atol=1e-6)
