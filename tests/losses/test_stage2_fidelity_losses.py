"""Issue 9 items 13, 17, 18: margin losses need raw cosines; focal's factor;
MiSLAS's ``exp`` smoothing."""

from __future__ import annotations

import math

import pytest
import torch

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import build_config
from tailfuse.errors import ConfigError
from tailfuse.losses import build_loss
from tailfuse.losses.label_aware_smoothing import smoothing_per_class


@pytest.mark.parametrize(
    ("model", "method"),
    [
        (
            {"head": "cosine", "cosine_scale": 30.0},
            {"name": "erm", "loss": "ldam"},
        ),  # effective scale 900
        ({"head": "cosine", "cosine_scale": 30.0}, {"name": "erm", "loss": "kps"}),
        ({"head": "linear"}, {"name": "erm", "loss": "ldam"}),
        (
            {"head": "linear"},
            {"name": "dr", "loss": "ldam"},
        ),  # DR on a linear head: margins of up to 15 logits
    ],
)
def test_margin_losses_are_refused_unless_the_head_gives_raw_cosines(model, method):
    with pytest.raises(ConfigError, match="model.head=cosine with model.cosine_scale=1"):
        build_config({"model": model, "method": method})


def test_margin_losses_are_accepted_on_raw_cosines():
    config = build_config(
        {"model": {"head": "cosine", "cosine_scale": 1.0}, "method": {"name": "dr", "loss": "ldam"}}
    )
    assert config.method.loss == "ldam"


def _focal_gradient(detach_factor: bool | None) -> float:
    options = (
        {"gamma": 2.0} if detach_factor is None else {"gamma": 2.0, "detach_factor": detach_factor}
    )
    loss = build_loss("focal", [1, 1], **options)
    logits = torch.zeros(1, 2, requires_grad=True)
    loss(logits, torch.tensor([0])).backward()
    return logits.grad[0, 0].item()


def test_focal_loss_detaches_its_factor_by_default_and_can_keep_its_gradient():
    # p = 0.5, gamma = 2. Detached: dL/dz0 = -(1-p)^2 * (1-p) = -0.125.
    assert _focal_gradient(None) == pytest.approx(-0.125, abs=1e-6)
    assert _focal_gradient(True) == pytest.approx(-0.125, abs=1e-6)
    # LDAM-DRW's focal differentiates the factor too:
    # dL/dp = 2(1-p)log p - (1-p)^2/p, dp/dz0 = p(1-p)
    expected = (2 * 0.5 * math.log(0.5) - 0.25 / 0.5) * 0.25
    assert _focal_gradient(False) == pytest.approx(expected, abs=1e-6)  # -0.298287


def test_label_aware_smoothing_has_mislas_exp_shape():
    # r = (n - n_min)/(n_max - n_min) = 1, 4/9, 0; eps = 0.1 + 0.3 * r^2
    values = smoothing_per_class([100, 50, 10], 0.4, 0.1, "exp", power=2.0)
    assert values == pytest.approx([0.4, 0.1 + 0.3 * (4 / 9) ** 2, 0.1])
    loss = build_loss(
        "label_aware_smoothing",
        [100, 50, 10],
        smooth_head=0.4,
        smooth_tail=0.1,
        shape="exp",
        power=2.0,
    )
    assert loss.epsilon.tolist() == pytest.approx([0.4, 0.159259, 0.1], abs=1e-6)


def test_exp_smoothing_needs_a_power_in_the_recipe():
    config = build_config(
        {"method": {"name": "mislas", "label_smoothing": {"shape": "exp", "power": 3.0}}}
    )
    assert config.method.label_smoothing.power == 3.0
    with pytest.raises(ConfigError, match="power"):
        build_config({"method": {"name": "mislas", "label_smoothing": {"shape": "exp"}}})
    with pytest.raises(ConfigError, match="power"):
        build_config(
            {"method": {"name": "mislas", "label_smoothing": {"shape": "concave", "power": 2.0}}}
        )
