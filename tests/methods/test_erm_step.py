"""The ERM step: mixup pairs each image with its partner's label; predictions; post-hoc τ.

The model is a stub whose logits are fixed functions of the image, so every value below is
worked out by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import build_config
from tailfuse.data.randomness import EpochRandomness
from tailfuse.methods import Batch, StepContext, build_method


class MeanLogits(nn.Module):
    """Logits ``[m, 0, 0]`` where m is the image's mean value (a model with known outputs)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.inputs: list[torch.Tensor] = []

    def forward(self, images):
        self.inputs.append(images.detach().clone())
        logits = torch.zeros(len(images), self.num_classes)
        logits[:, 0] = images.mean(dim=(1, 2, 3))
        return logits


def erm(method: dict, counts=(6, 3, 1)):
    config = build_config({"method": {"name": "erm", **method}})
    model = MeanLogits(len(counts))
    return build_method(config, model, list(counts)), model


def test_mixup_step_mixes_images_and_pairs_each_with_its_partners_label():
    method, model = erm({"mixup_alpha": 1.0})
    images = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 2, 1])
    randomness = EpochRandomness(7, 0)
    loss = method.loss({"main": Batch(images, labels)}, StepContext(0, 1, randomness))

    # the same draws the step makes, taken from fresh copies of the epoch's streams
    fresh = EpochRandomness(7, 0)
    lam = float(fresh.numpy.beta(1.0, 1.0))
    partner = torch.randperm(4, generator=fresh.augment)
    assert 0.0 < lam < 1.0 and partner.tolist() != [0, 1, 2, 3]
    (seen,) = model.inputs
    means = seen.mean(dim=(1, 2, 3))
    expected_means = [lam * k + (1 - lam) * float(partner[k]) for k in range(4)]
    assert means.tolist() == pytest.approx(expected_means)

    # CE of logits [m, 0, 0]: target 0 -> log(e^m + 2) - m; target 1 or 2 -> log(e^m + 2)
    def ce(m, target):
        return math.log(math.exp(m) + 2) - (m if target == 0 else 0.0)

    partner_labels = [int(labels[int(partner[k])]) for k in range(4)]
    expected = (
        sum(
            lam * ce(m, int(y)) + (1 - lam) * ce(m, y2)
            for m, y, y2 in zip(expected_means, labels, partner_labels, strict=True)
        )
        / 4
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the images' own labels alone give another value: the partner labels do enter the loss
    own = sum(ce(m, int(y)) for m, y in zip(expected_means, labels, strict=True)) / 4
    assert abs(own - expected) > 1e-3


def test_without_mixup_the_step_is_plain_cross_entropy_on_the_batch():
    method, model = erm({})
    images = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1).expand(2, 3, 2, 2).contiguous()
    loss = method.loss(
        {"main": Batch(images, torch.tensor([0, 2]))}, StepContext(0, 1, EpochRandomness(0, 0))
    )
    expected = (math.log(3) + math.log(math.exp(2) + 2)) / 2  # m=0 target 0; m=2 target 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(model.inputs[0], images)  # nothing mixed


def test_posthoc_tau_subtracts_tau_log_prior_from_the_logits():
    method, _ = erm({"posthoc_tau": 1.0}, counts=(6, 3, 1))
    images = torch.full((1, 3, 2, 2), 1.0)
    # logits [1, 0, 0]; prior [0.6, 0.3, 0.1]
    expected = [1 - math.log(0.6), -math.log(0.3), -math.log(0.1)]
    assert method.predict(images)[0].tolist() == pytest.approx(expected, rel=1e-6)
    half, _ = erm({"posthoc_tau": 0.5}, counts=(6, 3, 1))
    assert half.predict(images)[0].tolist() == pytest.approx(
        [1 - 0.5 * math.log(0.6), -0.5 * math.log(0.3), -0.5 * math.log(0.1)], rel=1e-6
    )


def test_prediction_loss_logits_evaluates_with_the_kps_training_logits():
    """KPS on counts [50, 1]: r = [log(2500)/log 50, log 50/log 50] = [2, 1]; logits r_j·cos θ_j."""
    config = build_config(
        {
            "model": {"head": "cosine", "cosine_scale": 1.0},
            "method": {"name": "erm", "loss": "kps", "prediction": "loss_logits"},
        }
    )
    cosines = torch.tensor([[0.4, 0.7], [-0.2, 0.1]])

    class FixedCosines(nn.Module):
        def forward(self, images):
            return cosines

    method = build_method(config, FixedCosines(), [50, 1])
    assert method.predict(torch.zeros(2, 3, 2, 2)).flatten().tolist() == pytest.approx(
        [0.8, 0.7, -0.4, 0.1]
    )
    head_rule = build_method(
        build_config(
            {
                "model": {"head": "cosine", "cosine_scale": 1.0},
                "method": {"name": "erm", "loss": "kps"},
            }
        ),
        FixedCosines(),
        [50, 1],
    )
    assert torch.equal(
        head_rule.predict(torch.zeros(2, 3, 2, 2)), cosines
    )  # the authors' rule: raw cosines


def test_without_mixup_the_step_sees_the_images_as_they_are():
    """mixup_alpha 0: no mixing at all (not a Beta(0, 0) draw); CE of [m, 0, 0] by hand."""
    method, model = erm({"mixup_alpha": 0.0})
    images = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1).expand(2, 3, 2, 2).contiguous()
    loss = method.loss(
        {"main": Batch(images, torch.tensor([0, 1]))}, StepContext(0, 1, EpochRandomness(7, 0))
    )
    assert torch.equal(model.inputs[0], images)
    expected = ((math.log(1 + 2) - 0.0) + math.log(math.exp(2.0) + 2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_the_step_tells_the_loss_its_epoch_and_random_stream():
    """LDAM-DRW switches to class weights from ``drw_epoch``; GCL draws its noise
    from the step's stream."""

    def cosine_erm(method_options):
        model_options = {"head": "cosine", "cosine_scale": 1.0}
        config = build_config({"model": model_options, "method": {"name": "erm", **method_options}})
        return build_method(config, MeanLogits(3), [6, 3, 1]), None

    method, _ = cosine_erm({"loss": "ldam", "loss_options": {"drw_epoch": 2}})
    images = torch.zeros(2, 3, 2, 2)
    for epoch in (1, 3):
        method.loss(
            {"main": Batch(images, torch.tensor([0, 2]))},
            StepContext(epoch, 4, EpochRandomness(0, epoch)),
        )
        assert method.criterion.epoch == epoch
    gcl, _ = cosine_erm({"loss": "gcl"})
    randomness = EpochRandomness(5, 1)
    gcl.loss({"main": Batch(images, torch.tensor([0, 2]))}, StepContext(1, 4, randomness))
    assert gcl.criterion.generator is randomness.stream("loss")


def test_without_mixup_the_step_draws_nothing_from_the_augmentation_stream():
    """mixup_alpha 0 leaves the epoch's augmentation stream as it was (a partner draw would
    shift every later crop and flip of the epoch)."""
    method, _ = erm({"mixup_alpha": 0.0})
    randomness = EpochRandomness(7, 0)
    untouched = EpochRandomness(7, 0)
    images = torch.zeros(4, 3, 2, 2)
    method.loss({"main": Batch(images, torch.tensor([0, 1, 2, 1]))}, StepContext(0, 1, randomness))
    assert torch.equal(
        torch.randperm(16, generator=randomness.augment),
        torch.randperm(16, generator=untouched.augment),
    )


def test_a_processs_share_of_the_global_batch_mixes_as_one_process_would():
    """Rows 2:4 of a global batch of 4 (DDP): partners come from the whole batch and the mixed
    images and loss terms are the one-process step's rows 2 and 3."""
    images = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 2, 1])
    one_process, one_model = erm({"mixup_alpha": 1.0})
    one_process.loss({"main": Batch(images, labels)}, StepContext(0, 1, EpochRandomness(7, 0)))
    share, share_model = erm({"mixup_alpha": 1.0})
    whole = Batch(images, labels)
    loss = share.loss(
        {"main": Batch(images[2:], labels[2:], whole=whole, start=2)},
        StepContext(0, 1, EpochRandomness(7, 0)),
    )
    assert torch.equal(share_model.inputs[0], one_model.inputs[0][2:])

    fresh = EpochRandomness(7, 0)
    lam = float(fresh.numpy.beta(1.0, 1.0))
    partner = torch.randperm(4, generator=fresh.augment)[2:]
    # the partners of rows 2 and 3 as one process draws them; not rows 2 and 3 themselves
    assert partner.tolist() != [2, 3] and partner.tolist() != [0, 1]

    def ce(m, target):
        return math.log(math.exp(m) + 2) - (m if target == 0 else 0.0)

    means = [lam * (2 + k) + (1 - lam) * float(partner[k]) for k in range(2)]
    expected = (
        sum(
            lam * ce(m, int(labels[2 + k])) + (1 - lam) * ce(m, int(labels[int(partner[k])]))
            for k, m in enumerate(means)
        )
        / 2
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
