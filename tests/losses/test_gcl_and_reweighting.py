"""GCL (noise, count scaling, clip, margin, focal form) and class-balanced / DRW
re-weighting, by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailfuse.errors import ConfigError
from tailfuse.losses import advance_loss, build_loss
from tailfuse.losses.gcl import GaussianCloudedLogitLoss, gcl_noise_scale


def test_noise_scale_is_the_log_count_gap_over_its_range():
    # counts 100, 10, 1: logs 4.605, 2.303, 0 -> (log 100 - log n)/(log 100 - log 1) = 0, 0.5, 1
    assert gcl_noise_scale([100, 10, 1]) == pytest.approx([0.0, 0.5, 1.0])
    assert gcl_noise_scale([7, 7]) == [0.0, 0.0]
    # the rarest class has 10 images (log 10 ≠ 0):
    # (log 1000 − log n) / (log 1000 − log 10) = 0, 0.5, 1
    assert gcl_noise_scale([1000, 100, 10]) == pytest.approx([0.0, 0.5, 1.0])


def _noise(seed: int, shape) -> torch.Tensor:
    """The standard normals the loss draws from a generator seeded with ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_gcl_stage1_loss_by_hand_with_a_fixed_generator():
    loss = GaussianCloudedLogitLoss([100, 10, 1], m=0.0, s=30.0, noise_mul=0.5)
    cosine = torch.tensor([[0.5, 0.2, -0.1], [0.1, 0.3, 0.4]])
    labels = torch.tensor([0, 2])
    z = _noise(7, (2, 3))
    loss.set_generator(torch.Generator().manual_seed(7))
    value = loss(cosine, labels)
    # delta = |clip(z/3, -1, 1)|; class 0 gets no noise, class 1 half of
    # 0.5*delta, class 2 all of it
    delta = (z / 3).clamp(-1, 1).abs()
    clouded = cosine - 0.5 * delta * torch.tensor([0.0, 0.5, 1.0])
    expected = sum(-F.log_softmax(30 * clouded[b], 0)[labels[b]] for b in range(2)) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    # the head class's logit is never noised: the same cosine rows with any
    # other noise keep column 0
    loss.set_generator(torch.Generator().manual_seed(8))
    assert torch.equal(loss.clouded_logits(cosine, labels)[:, 0], 30 * cosine[:, 0])


def test_gcl_defaults_are_the_stage1_constants_m_0_s_30_noise_half():
    """``loss: gcl`` with no options gives the hand-computed stage-1 value above
    (m 0, s 30, noise_mul 0.5)."""
    loss = build_loss("gcl", [100, 10, 1])
    cosine = torch.tensor([[0.5, 0.2, -0.1], [0.1, 0.3, 0.4]])
    labels = torch.tensor([0, 2])
    z = _noise(7, (2, 3))
    loss.set_generator(torch.Generator().manual_seed(7))
    delta = (z / 3).clamp(-1, 1).abs()
    clouded = cosine - 0.5 * delta * torch.tensor([0.0, 0.5, 1.0])
    expected = sum(-F.log_softmax(30 * clouded[b], 0)[labels[b]] for b in range(2)) / 2
    assert loss(cosine, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gcl_without_a_stream_refuses_to_draw_noise_but_needs_none_without_noise():
    """The noise must come from the step's seeded stream (advance_loss sets it): the global RNG
    would make a resumed run, and a DDP run, differ from the uninterrupted one-process run."""
    cosine, labels = torch.tensor([[0.5, 0.2, -0.1]]), torch.tensor([0])
    noisy = GaussianCloudedLogitLoss([100, 10, 1], noise_mul=0.5)
    with pytest.raises(RuntimeError, match="GCL's noise needs a seeded stream"):
        noisy(cosine, labels)
    quiet = GaussianCloudedLogitLoss([100, 10, 1], m=0.1, s=20.0, noise_mul=0.0)
    margin = torch.tensor([[20 * (0.5 - 0.1), 20 * 0.2, 20 * -0.1]])
    assert torch.allclose(quiet.clouded_logits(cosine, labels), margin)
    assert torch.allclose(
        GaussianCloudedLogitLoss([4, 4], noise_mul=0.5).clouded_logits(cosine[:, :2], labels),
        30 * cosine[:, :2],
    )  # equal counts: no class gets noise


def test_gcl_noise_is_clipped_at_one():
    # 1e6 draws of N(0, 1/9): about 1e6 * P(|z| > 3) = 2700 would exceed 1 without the clip
    loss = GaussianCloudedLogitLoss([1000, 1], m=0.0, s=1.0, noise_mul=1.0)
    loss.set_generator(torch.Generator().manual_seed(0))
    cosine = torch.zeros(500_000, 2)
    logits = loss.clouded_logits(cosine, torch.zeros(500_000, dtype=torch.long))
    tail_noise = -logits[:, 1]  # the rarest class: noise_mul * delta * 1
    assert tail_noise.max().item() == 1.0 and tail_noise.min().item() >= 0.0
    assert (tail_noise == 1.0).sum().item() > 1000  # the clipped mass sits exactly at 1
    assert tail_noise.mean().item() == pytest.approx(
        math.sqrt(2 / math.pi) / 3, abs=0.005
    )  # E|N(0,1/9)|


def test_gcl_stage2_margin_scale_and_focal_form_by_hand():
    loss = GaussianCloudedLogitLoss(
        [4, 4], m=0.1, s=20.0, noise_mul=0.5, gamma=1.0
    )  # equal counts: no noise
    cosine = torch.tensor([[0.6, 0.4]])
    labels = torch.tensor([0])
    logits = torch.tensor([20 * (0.6 - 0.1), 20 * 0.4])  # 10, 8
    p = math.exp(10) / (math.exp(10) + math.exp(8))
    assert loss(cosine, labels).item() == pytest.approx((1 - p) * -math.log(p), rel=1e-5)
    assert loss.training_logits(cosine)[0].tolist() == pytest.approx([12.0, 8.0])
    assert torch.allclose(loss.clouded_logits(cosine, labels), logits.view(1, 2))


def test_class_balanced_weights_on_cross_entropy_by_hand():
    counts = [3, 1]
    loss = build_loss("cross_entropy", counts, reweight_from_epoch=0, beta=0.5)
    # (1-0.5)/(1-0.5^3) = 4/7 and (1-0.5)/(1-0.5) = 1, normalised to sum 2: 8/11, 14/11
    assert loss.weights.tolist() == pytest.approx([8 / 11, 14 / 11])
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    l0, l1 = -math.log(math.e / (math.e + 1)), -math.log(math.e**2 / (1 + math.e**2))
    expected = (8 / 11 * l0 + 14 / 11 * l1) / (8 / 11 + 14 / 11)  # F.cross_entropy's weighted mean
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_class_balanced_cross_entropy_divided_by_the_batch_size_as_cuis_code():
    """``class_weight_divisor: batch_size``: ``Σ w_y·CE / B`` (Cui et al.'s
    ``tf.losses.softmax_cross_entropy`` with per-image weights), not ``Σ w_y·CE / Σ w_y``."""
    loss = build_loss(
        "cross_entropy", [3, 1], reweight_from_epoch=0, beta=0.5, class_weight_divisor="batch_size"
    )
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    l0, l1 = -math.log(math.e / (math.e + 1)), -math.log(math.e**2 / (1 + math.e**2))
    l2 = -math.log(math.e**3 / (math.e**3 + 1))
    by_batch = (8 / 11 * l0 + 14 / 11 * l1 + 8 / 11 * l2) / 3
    by_weights = (8 / 11 * l0 + 14 / 11 * l1 + 8 / 11 * l2) / (30 / 11)
    assert loss(logits, labels).item() == pytest.approx(by_batch, rel=1e-6)
    assert abs(by_batch - by_weights) > 1e-2  # the two divisors differ on this batch
    summed = build_loss(
        "cross_entropy", [3, 1], reweight_from_epoch=0, beta=0.5, class_weight_divisor="weight_sum"
    )
    assert summed(logits, labels).item() == pytest.approx(by_weights, rel=1e-6)
    # without weights both divisors are the plain mean
    plain = build_loss("cross_entropy", [3, 1], class_weight_divisor="batch_size")
    assert plain(logits, labels).item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)


def test_unknown_class_weight_divisor_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError) as raised:
        build_loss("cross_entropy", [3, 1], reweight_from_epoch=0, class_weight_divisor="batch")
    assert str(raised.value) == (
        "loss 'cross_entropy': class_weight_divisor 'batch' is not one of weight_sum, "
        "batch_size (did you mean 'batch_size'?)"
    )


def test_class_balanced_focal_is_a_plain_mean_of_weighted_terms():
    loss = build_loss("focal", [3, 1], gamma=1.0, reweight_from_epoch=0, beta=0.5)
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    p0, p1 = math.e / (math.e + 1), math.e**2 / (1 + math.e**2)
    expected = (8 / 11 * (1 - p0) * -math.log(p0) + 14 / 11 * (1 - p1) * -math.log(p1)) / 2
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_drw_switches_weights_on_at_its_epoch_for_any_loss():
    loss = build_loss("balanced_softmax", [3, 1], drw_epoch=2, beta=0.5)
    logits, labels = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    plain = build_loss("balanced_softmax", [3, 1])(logits, labels)
    generator = torch.Generator()
    advance_loss(loss, 1, generator)
    assert loss(logits, labels).item() == pytest.approx(plain.item())
    advance_loss(loss, 2, generator)
    # z + log prior = log 0.75, log 0.25: per-sample -log 0.75 and -log 0.25,
    # weighted 8/11 and 14/11
    expected = (8 / 11 * -math.log(0.75) + 14 / 11 * -math.log(0.25)) / 2
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_drw_through_the_generic_schedule_equals_ldams_own():
    from tailfuse.losses.margins import LDAMLoss

    counts = [5000, 25]
    generic = build_loss("ldam", counts, drw_epoch=160)
    own = LDAMLoss(counts, drw_epoch=160)
    cosine, labels = torch.tensor([[0.3, 0.1], [0.2, 0.2]]), torch.tensor([0, 1])
    for epoch in (159, 160):
        generic.set_epoch(epoch)
        own.set_epoch(epoch)
        assert generic(cosine, labels).item() == pytest.approx(own(cosine, labels).item(), rel=1e-6)


def test_reweighting_passes_the_epoch_to_a_loss_with_its_own_schedule():
    """KPS switches to its per-sample scale at ``weighted_from_epoch``; wrapped in DRW, it must
    still see the epoch (counts [100, 10]: class 1's scale min(max(15·r, 15), 50),
    r = log 500 / log 50)."""
    from tailfuse.losses.margins import KPSLoss

    wrapped = build_loss("kps", [100, 10], drw_epoch=5, weighted_from_epoch=3, s=15.0)
    own = KPSLoss([100, 10], s=15.0, weighted_from_epoch=3)
    cosine, labels = torch.tensor([[0.6, 0.2], [0.1, 0.3]]), torch.tensor([0, 1])
    wrapped.set_epoch(3)
    own.set_epoch(3)
    assert wrapped.loss.epoch == 3
    assert wrapped(cosine, labels).item() == pytest.approx(own(cosine, labels).item(), rel=1e-6)
    own.set_epoch(0)
    assert (
        abs(wrapped(cosine, labels).item() - own(cosine, labels).item()) > 1e-3
    )  # the switch matters here


def test_reweighting_refuses_losses_without_class_weights_and_half_settings():
    with pytest.raises(ConfigError, match="takes no class weights"):
        build_loss("label_aware_smoothing", [3, 1], reweight_from_epoch=0)
    with pytest.raises(ConfigError, match="beta needs reweight_from_epoch"):
        build_loss("cross_entropy", [3, 1], beta=0.9)
    with pytest.raises(ConfigError, match="not both"):
        build_loss("cross_entropy", [3, 1], beta=0.9, drw_epoch=1, reweight_from_epoch=1)


def test_gcl_class_weights_by_hand_in_cross_entropy_and_focal_form():
    """noise_mul 0 (no cloud), m 0.1, s 20; DRW weights [0.5, 2].

    CE form (γ = 0) is the weighted mean Σ w·l / Σ w; the focal form (γ > 0) is GCL's
    ``mean_b w·(1 − p)^γ·(−log p)``.
    """
    loss = GaussianCloudedLogitLoss([10, 1], m=0.1, s=20.0, noise_mul=0.0, gamma=0.0)
    loss.set_generator(torch.Generator().manual_seed(0))
    cosine = torch.tensor([[0.5, 0.2], [0.1, 0.3]])
    labels = torch.tensor([0, 1])
    weights = torch.tensor([0.5, 2.0])
    # sample 0: 20·[0.5 − 0.1, 0.2] = [8, 4]; sample 1: 20·[0.1, 0.3 − 0.1] = [2, 4]
    first, second = math.log1p(math.exp(-4.0)), math.log1p(math.exp(-2.0))
    assert loss(cosine, labels, weights).item() == pytest.approx(
        (0.5 * first + 2.0 * second) / 2.5, rel=1e-5
    )
    assert loss(cosine, labels).item() == pytest.approx((first + second) / 2, rel=1e-5)
    focal = GaussianCloudedLogitLoss([10, 1], m=0.1, s=20.0, noise_mul=0.0, gamma=1.0)
    focal.set_generator(torch.Generator().manual_seed(0))
    p_first, p_second = 1 / (1 + math.exp(-4.0)), 1 / (1 + math.exp(-2.0))
    expected = (0.5 * (1 - p_first) * first + 2.0 * (1 - p_second) * second) / 2
    assert focal(cosine, labels, weights).item() == pytest.approx(expected, rel=1e-5)


def test_class_reweighting_defaults_are_cuis_beta_from_the_first_epoch():
    """β = 0.9999 on counts [3, 1]: (1−β)/(1−β³) = 1e-4/2.9997e-4 = 0.333367 and 1, normalised to
    sum 2: 0.500038 and 1.499962. From epoch 0 on, so a fresh module already weights."""
    from tailfuse.losses.cross_entropy import CrossEntropy
    from tailfuse.losses.reweighting import ClassReweighting

    loss = ClassReweighting(CrossEntropy(), [3, 1])
    assert loss.weights.tolist() == pytest.approx([0.500038, 1.499962], abs=1e-6)
    assert loss.from_epoch == 0 and loss.active()
    # a later start: a fresh module is in epoch 0, so it does not weight before set_epoch
    later = ClassReweighting(CrossEntropy(), [3, 1], from_epoch=1)
    assert not later.active()
    logits, labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    plain = (-math.log(math.e / (math.e + 1)) - math.log(math.e**2 / (1 + math.e**2))) / 2
    assert later(logits, labels).item() == pytest.approx(plain, rel=1e-6)
    later.set_epoch(1)
    assert later.active()


def test_beta_may_be_zero_but_not_one():
    # β = 0 weighs every class (1 − 0) / (1 − 0ⁿ) = 1: the plain loss; β = 1 divides by zero
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    plain = build_loss("cross_entropy", [9, 1])(logits, labels)
    uniform = build_loss("cross_entropy", [9, 1], reweight_from_epoch=0, beta=0.0)
    assert torch.allclose(uniform(logits, labels), plain)
    for beta in (1.0, 1.5):
        with pytest.raises(ConfigError) as raised:
            build_loss("cross_entropy", [9, 1], reweight_from_epoch=0, beta=beta)
        assert str(raised.value) == f"loss 'cross_entropy': beta must lie in [0, 1), got {beta}"
