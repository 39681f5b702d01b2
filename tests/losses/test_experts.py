"""Multi-expert losses against values worked out by hand (spec h2t §3.1, glt_ifl §4)."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.errors import ConfigError
from tailfuse.losses import build_loss
from tailfuse.losses.experts import RESLT_GROUP_MASKS, inverse_prior, reslt_group_masks


def test_ride_loss_is_ldam_ce_per_expert_plus_the_diversity_kl():
    # counts 16 and 1: n^-1/4 = 0.5 and 1 -> margins 0.5 * [0.5, 1] = [0.25, 0.5]; s = 1
    loss = build_loss("ride", [16, 1], max_m=0.5, s=1.0, diversity_factor=-0.2, temperature=1.0)
    first, second = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    label = torch.tensor([0])
    # expert CE with the target margin: [1 - 0.25, 0] and [0 - 0.25, 1]
    ce_first = math.log(1 + math.exp(-0.75))
    ce_second = math.log(1 + math.exp(1.25))
    # the mean logits [0.5, 0.5] give the target distribution [1/2, 1/2]; KL(mean || expert)
    p = math.e / (math.e + 1)
    kl = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))  # the same for both experts
    expected = ce_first + ce_second - 0.2 * 1.0**2 * 2 * kl
    assert loss([first, second], label).item() == pytest.approx(expected, rel=1e-6)


def test_ride_loss_with_a_diversity_factor_of_one():
    """α_div = 1 (any non-zero factor adds the KL term): the first test's case,
    KL added once per expert."""
    loss = build_loss("ride", [16, 1], max_m=0.5, s=1.0, diversity_factor=1.0, temperature=1.0)
    first, second = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p = math.e / (math.e + 1)
    kl = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    expected = math.log(1 + math.exp(-0.75)) + math.log(1 + math.exp(1.25)) + 2 * kl
    assert loss([first, second], torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_ride_loss_drw_weights_and_class_temperatures_switch_on_at_drw_epoch():
    loss = build_loss(
        "ride", [16, 1], max_m=0.5, s=1.0, drw_epoch=3, diversity_factor=0.0, reweight_factor=0.05
    )
    logits, labels = torch.zeros(2, 2), torch.tensor([0, 1])
    ce_head, ce_tail = (
        math.log(1 + math.exp(0.25)),
        math.log(1 + math.exp(0.5)),
    )  # margins 0.25, 0.5
    loss.set_epoch(2)
    assert loss([logits], labels).item() == pytest.approx((ce_head + ce_tail) / 2, rel=1e-6)
    loss.set_epoch(3)
    raw = [(1 - 0.9999) / (1 - 0.9999**16), 1.0]  # (1 - beta) / (1 - beta^n), beta = 0.9999
    w = [2 * r / sum(raw) for r in raw]  # normalised to sum C = 2
    assert loss([logits], labels).item() == pytest.approx(
        (w[0] * ce_head + w[1] * ce_tail) / (w[0] + w[1]), rel=1e-5
    )
    # temperature scale C * pi * r + 1 - r, normalised by its max: pi = [16/17, 1/17], r = 0.05
    scale = [2 * 16 / 17 * 0.05 + 0.95, 2 * 1 / 17 * 0.05 + 0.95]
    assert loss.temperature_scale.tolist() == pytest.approx([1.0, scale[1] / scale[0]], rel=1e-6)


def test_ride_loss_with_diversity_under_class_temperatures():
    loss = build_loss(
        "ride",
        [16, 1],
        max_m=0.0,
        s=1.0,
        drw_epoch=0,
        diversity_factor=-0.2,
        temperature=2.0,
        reweight_factor=0.05,
    )
    first, second = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    scale = [1.0, (2 / 17 * 0.05 + 0.95) / (2 * 16 / 17 * 0.05 + 0.95)]
    temperatures = [2.0 * s for s in scale]
    mean_t = sum(temperatures) / 2

    def softmax(values):
        exps = [math.exp(v) for v in values]
        return [e / sum(exps) for e in exps]

    target = softmax([0.5 / temperatures[0], 0.5 / temperatures[1]])
    kls = []
    for expert in ([1.0, 0.0], [0.0, 1.0]):
        q = softmax([expert[0] / temperatures[0], expert[1] / temperatures[1]])
        kls.append(sum(t * math.log(t / qi) for t, qi in zip(target, q, strict=True)))
    ce = math.log(1 + math.exp(-1.0)) + math.log(
        1 + math.exp(1.0)
    )  # label 0, no margin; DRW weight cancels
    expected = ce - 0.2 * mean_t**2 * sum(kls)
    assert loss([first, second], torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_tade_loss_on_zero_logits():
    loss = build_loss("tade", [3, 1], tau=2.0)  # prior [0.75, 0.25], inverse prior [0.25, 0.75]
    zeros = torch.zeros(1, 2)
    ce_plain = math.log(2)
    ce_balanced = -math.log(0.75)  # logits log(pi): softmax = pi
    # logits log pi - 2 log pi_inv: [log .75 - 2 log .25, log .25 - 2 log .75] -> odds 12 : 4/9
    ce_inverse = -math.log(12 / (12 + 0.25 / 0.5625))
    expected = ce_plain + ce_balanced + ce_inverse
    assert loss([zeros, zeros, zeros], torch.tensor([0])).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_tade_loss_default_tau_is_two():
    """Prior [0.75, 0.25], inverse [0.25, 0.75]; third expert's logits on
    zeros: log π − 2·log π_inv."""
    zeros = torch.zeros(1, 2)
    third = [math.log(0.75) - 2 * math.log(0.25), math.log(0.25) - 2 * math.log(0.75)]
    ce_third = math.log(sum(math.exp(z) for z in third)) - third[1]
    expected = math.log(2) - math.log(0.25) + ce_third  # label 1
    assert build_loss("tade", [3, 1])(
        [zeros, zeros, zeros], torch.tensor([1])
    ).item() == pytest.approx(expected, rel=1e-5)


def test_inverse_prior_reverses_the_rank_order():
    assert inverse_prior(torch.tensor([0.5, 0.2, 0.3])).tolist() == pytest.approx([0.2, 0.5, 0.3])


def test_reslt_loss_on_hand_made_branch_logits():
    loss = build_loss("reslt", [1] * 10, beta=0.5, groups="cifar10")
    labels = torch.tensor(
        [0, 3, 5]
    )  # groups: all head; medium y >= 2: the last two; tail y >= 4: the last
    head = torch.zeros(3, 10)
    medium = torch.zeros(3, 10)
    tail = torch.zeros(3, 10)
    rows = torch.arange(3)
    medium[rows, labels] = math.log(9)  # p_y = 9 / 18
    tail[rows, labels] = math.log(81)  # p_y = 81 / 90
    individual = (3 * math.log(10) + 2 * math.log(2) - math.log(0.9)) / (3 + 2 + 1)
    fused = -math.log(729 / 738)  # summed logit log 729 against nine zeros
    expected = 0.5 * fused + 0.5 * individual
    assert loss([head, medium, tail], labels).item() == pytest.approx(expected, rel=1e-5)


def test_reslt_loss_default_beta_is_the_authors_0_99():
    """Label 0 (cifar100 groups: only the head mask is on): I = CE(z_H) with z_H = [2, 0, 0];
    F = CE(z_H + z_M + z_T) = CE([2, 1, 0]); the loss is β·I + (1 − β)·F with β = 0.99."""
    from tailfuse.losses.experts import ResLoss

    head, medium, tail = (
        torch.tensor([[2.0, 0.0, 0.0]]),
        torch.tensor([[0.0, 1.0, 0.0]]),
        torch.zeros(1, 3),
    )
    individual = -math.log(math.exp(2) / (math.exp(2) + 2) + 1e-7)
    fused = -math.log(math.exp(2) / (math.exp(2) + math.e + 1) + 1e-7)
    value = ResLoss([5, 3, 1])([head, medium, tail], torch.tensor([0])).item()
    assert value == pytest.approx(0.99 * individual + 0.01 * fused, rel=1e-6)


def test_reslt_group_masks_per_dataset_including_the_authors_imagenet_rule():
    labels = torch.tensor([0, 50, 99])
    assert reslt_group_masks(labels, *RESLT_GROUP_MASKS["cifar100"]).tolist() == [
        [1, 1, 1],
        [0, 1, 1],
        [0, 0, 1],
    ]
    labels = torch.tensor([0, 500, 900])
    # the authors' ImageNet code: y < 825 and y < 220 (inverted for head-first labels)
    assert reslt_group_masks(labels, *RESLT_GROUP_MASKS["imagenet_lt"]).tolist() == [
        [1, 1, 1],
        [1, 1, 0],
        [1, 0, 0],
    ]
    assert reslt_group_masks(labels, *RESLT_GROUP_MASKS["imagenet_lt_head_first"]).tolist() == [
        [1, 1, 1],
        [0, 1, 1],
        [0, 0, 1],
    ]
    assert reslt_group_masks(torch.tensor([0, 7000]), *RESLT_GROUP_MASKS["inat2018"]).tolist() == [
        [1, 1],
        [1, 0],
        [0, 0],
    ]


def test_ride_loss_defaults_are_official_rides_constants():
    """Spec h2t §2 (loss.RIDE): max_m 0.5, s 30, T 1, reweight_factor 0.05, α_div −0.2, β 0.9999."""
    from tailfuse.losses.experts import RIDELoss

    loss = RIDELoss([100, 10, 1])
    # m_c = 0.5 · n_c^(-1/4) / max n^(-1/4): 0.5 · [0.31623, 0.56234, 1]
    assert loss.margins.tolist() == pytest.approx([0.158114, 0.281171, 0.5], abs=1e-6)
    # t_c = 3·π_c·0.05 + 0.95 = [1.085135, 0.963514, 0.951351], divided by its max
    assert loss.temperature_scale.tolist() == pytest.approx([1.0, 0.887920, 0.876712], abs=1e-6)
    assert (loss.s, loss.temperature, loss.diversity_factor, loss.base_loss_factor) == (
        30.0,
        1.0,
        -0.2,
        1.0,
    )
    assert loss.drw_epoch is None and loss.epoch == 0 and not loss.reweighting
    # (1 − 0.9999) / (1 − 0.9999^n), normalised to sum to C: the tail class weighs the most
    assert loss.drw_weights.argmax().item() == 2
    assert loss.state_dict() == {}  # constants of the class counts, not checkpointed state
    with pytest.raises(ConfigError, match="reweight_factor is too large"):
        RIDELoss([1000, 1], reweight_factor=1.2)


def test_reslt_group_masks_at_their_boundaries():
    """``at_least``: g_M = 1[y ≥ medium_from], g_T = 1[y ≥ tail_from]; ``below``: y < ... ."""
    labels = torch.tensor([1, 2, 3, 4, 5])
    masks = reslt_group_masks(labels, medium_from=2, tail_from=4, rule="at_least")
    assert masks.dtype == torch.float32
    assert masks.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    masks = reslt_group_masks(labels, medium_from=4, tail_from=2, rule="below")
    assert masks.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert reslt_group_masks(labels, 4, None, "below")[2].tolist() == [0, 0, 0, 0, 0]
    assert reslt_group_masks(labels, 2, None, "at_least")[2].tolist() == [0, 0, 0, 0, 0]
    with pytest.raises(ConfigError, match="unknown ResLT mask rule 'above'"):
        reslt_group_masks(labels, 2, 4, "above")


def test_ride_margins_are_scaled_so_the_rarest_class_gets_max_m():
    """n^(−1/4) for counts [81, 16]: 1/3 and 1/2; scaled by max_m / 1/2 = 1 (max_m 0.5) they stay
    1/3 and 1/2. The rarest class is not a single image here, so max n^(−1/4) ≠ 1."""
    loss = build_loss("ride", [81, 16], max_m=0.5)
    assert loss.margins.tolist() == pytest.approx([1 / 3, 1 / 2], rel=1e-6)
    smaller = build_loss("ride", [81, 16], max_m=0.2)
    assert smaller.margins.tolist() == pytest.approx([0.4 / 3, 0.2], rel=1e-6)
