"""IFL values worked out by hand: environment weights on narrow confidence ranges, the
3-environment scales, post-hoc adjustment in predict, the cosine center loss and the
class-mean center initialisation (spec glt_ifl §3, §8)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import load_recipe
from tailfuse.data.randomness import EpochRandomness
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.methods.ifl import confidence_beta, intra_class_environment_weights
from tailfuse.models import Classifier, LinearHead, build_model

# class 0 spans only [0.5, 0.7], class 1 only [0.9, 0.95]: both are min-max scaled to [0, 1]
LABELS = torch.tensor([0] * 5 + [1] * 5)
CONFIDENCE = torch.tensor([0.5, 0.55, 0.6, 0.65, 0.7, 0.9, 0.9, 0.9, 0.9, 0.95])
# class 0: u = [1, .75, .5, .25, 0] + 1e-5, h = mean of the 4 smallest = 0.37501, t = 1.00001,
# beta = ln 4 / ln(t/h + 1e-5) = 1.41341, w = u^beta / sum
CLASS0_T4 = [0.458236, 0.305142, 0.172035, 0.064588, 3.93e-8]
# class 1: u = [1, 1, 1, 1, 0] + 1e-5, h = 0.75001, beta = ln 4 / ln(4/3) = 4.81877: the four
# least confident share the class, the most confident gets (1e-5)^4.8 ~ 0
CLASS1_T4 = [0.25, 0.25, 0.25, 0.25, 2.5e-13]
# T = 2: ln 2 / ln(2.66665) = 0.707 is clamped to 1, so w = u / sum(u) = u / 2.50005
CLASS0_T2 = [0.4, 0.3, 0.2, 0.1, 4.0e-6]


def test_environment_weights_min_max_scale_a_narrow_confidence_range():
    weights = intra_class_environment_weights(LABELS, CONFIDENCE, 2, sample_scale=4.0)
    assert weights[:5].tolist() == pytest.approx(CLASS0_T4, rel=1e-4, abs=1e-9)
    assert weights[5:].tolist() == pytest.approx(CLASS1_T4, rel=1e-6, abs=1e-12)


def test_environment_weights_with_sample_scale_two_clamp_beta_at_one():
    weights = intra_class_environment_weights(LABELS[:5], CONFIDENCE[:5], 1, sample_scale=2.0)
    assert weights.tolist() == pytest.approx(CLASS0_T2, rel=1e-4, abs=1e-8)


def test_environment_weights_follow_the_per_class_rule_for_any_class_size():
    # The all-classes-at-once computation against the rule applied class by class
    # (confidence_beta, checked by hand above): class sizes that are not multiples of 5
    # (floor(0.8 n) smallest u for h, floor(0.2 n) largest for t), one under 5, and a class
    # whose beta (ln 4 / ln 1.072 = 19.9) is clamped at 10.
    generator = torch.Generator().manual_seed(0)
    sizes = [5, 6, 7, 9, 13, 4]
    parts = [torch.rand(size, generator=generator, dtype=torch.float64) for size in sizes]
    sizes.append(20)  # p = 1 once, 0 once, 0.02 otherwise: t / h = 0.985 / 0.919
    parts.append(torch.tensor([1.0, 0.0] + [0.02] * 18, dtype=torch.float64))
    labels = torch.cat([torch.full((size,), c) for c, size in enumerate(sizes)])
    confidence = torch.cat(parts)

    weights = intra_class_environment_weights(labels, confidence, len(sizes), sample_scale=4.0)

    for c, p in enumerate(parts):
        if len(p) < 5:
            expected = torch.full_like(p, 1.0 / len(p))
        else:
            u = (1.0 - (p - p.min()) / (p.max() - p.min() + 1e-9)).abs() + 1e-5
            raw = u ** confidence_beta(u, 4.0) + 1e-12
            expected = raw / raw.sum()
        assert weights[labels == c].tolist() == pytest.approx(expected.tolist(), rel=1e-9), c
    u = (1.0 - parts[-1]).abs() + 1e-5
    assert confidence_beta(u, 4.0) == 10.0
    assert float(weights[-19] / weights[-18]) == pytest.approx((1.00001 / 0.98001) ** 10)


def ifl(overrides=(), counts=(5, 5), model=None):
    config = load_recipe("cifar10_glt_quick_ifl", list(overrides))
    torch.manual_seed(0)
    model = model or build_model(config.model, len(counts))
    method = build_method(config, model, list(counts))
    method.bind_training_set(
        torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    )
    return method, model


def test_mixup_weights_the_own_label_by_lambda_and_the_partners_by_one_minus_lambda():
    method, _ = ifl(["method.loss=cross_entropy", "method.center_loss=l2"])
    logits, labels, partner = torch.tensor([[2.0, 0.0]]), torch.tensor([0]), torch.tensor([1])
    # CE(label 0) = log(1 + e^-2) = 0.126928, CE(label 1) = 2.126928
    mixed = method._classification(logits, labels, partner, 0.75)
    assert float(mixed) == pytest.approx(0.75 * 0.126928 + 0.25 * 2.126928, abs=1e-6)
    # squared distances of (1, 0) to the centers (0, 0) and (3, 0): 1 and 4
    features, centers = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    term = method._center_term(features, centers, labels, partner, 0.75)
    assert float(term) == pytest.approx(0.75 * 1.0 + 0.25 * 4.0)


def test_three_environments_rebuild_env2_with_half_the_scale_and_env3_with_the_scale():
    method, _ = ifl(["method.environments=3", "method.update_milestones=[0]"])
    assert sorted(method.branches()) == ["env1", "env2", "env3"]
    assert {method.branch_batch_size(b, 64) for b in method.branches()} == {21}
    method.confidence.copy_(CONFIDENCE)
    method.end_epoch(StepContext(epoch=0, total_epochs=16, randomness=EpochRandomness(0, 0)))
    weights = method.state.environment_weights
    assert weights[0].tolist() == [1.0] * 10  # env 1 stays instance-uniform
    assert weights[1, :5].tolist() == pytest.approx(CLASS0_T2, rel=1e-4, abs=1e-8)  # T/2 = 2
    assert weights[2, :5].tolist() == pytest.approx(CLASS0_T4, rel=1e-4, abs=1e-9)  # T = 4


def test_no_rebuild_outside_the_update_milestones():
    method, _ = ifl(["method.update_milestones=[3]"])
    method.confidence.copy_(CONFIDENCE)
    method.end_epoch(StepContext(epoch=2, total_epochs=16, randomness=EpochRandomness(0, 2)))
    assert method.state.environment_weights.tolist() == [[1.0] * 10] * 2


def test_posthoc_adjustment_in_predict_subtracts_tau_log_prior():
    images = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    for tau, shift in (
        (1.0, [0.693147, 1.098612, 1.791759]),
        (0.5, [0.346574, 0.549306, 0.895880]),
    ):
        method, model = ifl(
            [f"method.posthoc_tau={tau}"], counts=(3, 2, 1), model=stub_model()
        )  # prior 1/2, 1/3, 1/6
        model.eval()
        with torch.no_grad():
            difference = method.predict(images) - model(images)
        for row in difference.tolist():
            assert row == pytest.approx(shift, abs=1e-5)  # -tau * log prior


class MeanBackbone(nn.Module):
    """Feature map whose every channel holds the image's mean value."""

    out_channels = 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images):
        return (self.scale * images.mean(dim=(1, 2, 3))).view(-1, 1, 1, 1).expand(-1, 4, 2, 2)


def stub_model():
    return Classifier(MeanBackbone(), LinearHead(4, 3))


def test_cosine_center_loss_update_by_hand():
    method, _ = ifl(["method.center_loss=cosine"], counts=(2, 1, 1))
    centers = torch.zeros(3, 64)
    centers[0, 1], centers[1, 0], centers[2, 2] = 1.0, 1.0, 1.0
    method.state.centers.copy_(centers)
    features = torch.zeros(2, 64)
    features[0, 0], features[1, 1] = 1.0, 2.0  # sample 0 (class 0) = e0, sample 1 (class 1) = 2 e1
    method._update_centers(features, torch.tensor([0, 1]), None, 1.0)
    # d/dc mean_i (1 - cos(f_i, c_y)) at cos = 0 is -f/(2 |f| |c|); lr 0.5 -> c += 0.25 * f/|f|
    expected = centers.clone()
    expected[0, 0] = 0.25
    expected[1, 1] = 0.25
    assert torch.allclose(method.state.centers, expected, atol=1e-6)
    # the squared-L2 rule moves centers to (1 - n_c/B) c + (n_c/B) mean f instead
    l2, _ = ifl([], counts=(2, 1, 1))
    l2.state.centers.copy_(centers)
    l2._update_centers(features, torch.tensor([0, 1]), None, 1.0)
    assert l2.state.centers[0, :2].tolist() == pytest.approx([0.5, 0.5])


def test_cosine_center_term_enters_the_loss_with_alpha():
    method, model = ifl(
        [
            "method.center_loss=cosine",
            "method.center_milestones=[0]",
            "method.center_weights=[0.5]",
        ],
        counts=(2, 2, 2),
        model=stub_model(),
    )
    method.state.centers.copy_(
        torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]])
    )
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
    images = torch.ones(
        1, 3, 2, 2
    )  # feature (1, 1, 1, 1): cos 1 with center 0, -1 with center 1, 0 with center 2
    context = StepContext(epoch=0, total_epochs=1, randomness=EpochRandomness(0, 0))
    losses = []
    for label in (0, 1, 2):
        batch = Batch(images, torch.tensor([label]), torch.tensor([2 * label]))
        losses.append(method.loss({"env1": batch, "env2": batch}, context).item())
    # CE of zero logits = ln 3; alpha * (1 - cos) = 0.5 * (0, 2, 1)
    assert losses == pytest.approx([math.log(3), math.log(3) + 1.0, math.log(3) + 0.5], abs=1e-6)


def test_class_mean_center_init_sets_centers_to_the_last_warmup_epochs_class_means():
    overrides = [
        "method.center_init=class_mean",
        "method.center_milestones=[0,2]",
        "method.center_weights=[0.0,0.005]",
    ]
    method, _ = ifl(overrides, counts=(2, 1, 1), model=stub_model())
    random_centers = method.state.centers.clone()

    def batch(values, labels, indices):
        images = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
        return Batch(images, torch.tensor(labels), torch.tensor(indices))

    for epoch in (0, 1):
        context = StepContext(epoch=epoch, total_epochs=4, randomness=EpochRandomness(0, epoch))
        # epoch 0 is not the last warm-up epoch: its features must not count
        first = (
            batch([100.0, 50.0], [0, 1], [0, 2])
            if epoch == 0
            else batch([1.0, 10.0], [0, 1], [0, 2])
        )
        second = batch([-9.0], [0], [1]) if epoch == 0 else batch([3.0], [0], [1])
        method.loss({"env1": first, "env2": second}, context)
        method.end_epoch(context)
        if epoch == 0:
            assert torch.equal(method.state.centers, random_centers)
    # epoch 1 (the last before alpha > 0): class 0 saw 1 and 3, class 1 saw 10, class 2 nothing
    assert method.state.centers[0].tolist() == pytest.approx([2.0] * 4)
    assert method.state.centers[1].tolist() == pytest.approx([10.0] * 4)
    assert torch.equal(method.state.centers[2], random_centers[2])
