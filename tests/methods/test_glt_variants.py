"""One asserted effect per quick CIFAR-10-GLT recipe variant, built from the recipe itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import load_recipe
from tailfuse.data.pipeline import BatchAugmenter
from tailfuse.data.randomness import EpochRandomness
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.models import Classifier, LinearHead

COUNTS = [3, 1]  # prior 3/4, 1/4


class MeanBackbone(nn.Module):
    out_channels = 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.inputs = []

    def forward(self, images):
        self.inputs.append(images.detach().clone())
        return (self.scale * images.mean(dim=(1, 2, 3))).view(-1, 1, 1, 1).expand(-1, 4, 2, 2)


def from_recipe(recipe: str, overrides=()):
    config = load_recipe(recipe, list(overrides))
    model = Classifier(MeanBackbone(), LinearHead(4, len(COUNTS)))
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
    method = build_method(config, model, COUNTS)
    if config.method.name == "ifl":
        method.bind_training_set(torch.tensor([0, 0, 0, 1]))
    return config, method, model


def context(epoch=0):
    return StepContext(epoch=epoch, total_epochs=16, randomness=EpochRandomness(0, epoch))


@pytest.mark.parametrize(
    "recipe", ["cifar10_glt_quick_bsm", "cifar10_glt_quick_bsm_ifl", "cifar10_glt_quick_bsm_alt"]
)
def test_balanced_softmax_variants_train_on_logits_plus_log_prior(recipe):
    _, method, _ = from_recipe(recipe)
    zero = torch.zeros(2, 2)
    # CE(0 + log pi, y): -log(3/4) for the head class, -log(1/4) for the tail class
    assert method.criterion(zero, torch.tensor([0, 0])).item() == pytest.approx(
        -math.log(0.75), rel=1e-5
    )
    assert method.criterion(zero, torch.tensor([1, 1])).item() == pytest.approx(
        -math.log(0.25), rel=1e-5
    )


def test_logit_adjusted_variant_subtracts_log_prior_at_test():
    _, method, model = from_recipe("cifar10_glt_quick_la_ifl")
    logits = method.predict(torch.zeros(1, 3, 2, 2))
    assert logits[0].tolist() == pytest.approx([-math.log(0.75), -math.log(0.25)], rel=1e-5)


def test_mixup_variant_feeds_mixed_images_to_the_model():
    _, method, model = from_recipe("cifar10_glt_quick_mixup_ifl")
    images = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    env = Batch(images[:2], torch.tensor([0, 0]), torch.tensor([0, 1]))
    env2 = Batch(images[2:], torch.tensor([0, 1]), torch.tensor([2, 3]))
    method.loss({"env1": env, "env2": env2}, context())
    fresh = EpochRandomness(0, 0)
    lam = float(fresh.numpy.beta(1.0, 1.0))
    partner = torch.randperm(4, generator=fresh.augment)
    (seen,) = model.backbone.inputs
    assert seen.mean(dim=(1, 2, 3)).tolist() == pytest.approx(
        [lam * k + (1 - lam) * float(partner[k]) for k in range(4)]
    )


def test_randaugment_variant_changes_the_training_images_beyond_crop_and_flip():
    plain = load_recipe("cifar10_glt_quick_ifl").data.augment
    randaug = load_recipe("cifar10_glt_quick_randaug_ifl").data.augment
    assert not plain.rand_augment and randaug.rand_augment
    images = torch.randint(
        0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    # crop and flip draw first from the same stream, so the two outputs differ only by RandAugment
    first = BatchAugmenter(plain).train(images, torch.Generator().manual_seed(1))
    second = BatchAugmenter(randaug).train(images, torch.Generator().manual_seed(1))
    assert not torch.equal(first, second)


def test_three_environment_variant_splits_the_batch_in_three():
    config, method, _ = from_recipe("cifar10_glt_quick_ifl_3env")
    assert sorted(method.branches()) == ["env1", "env2", "env3"]
    assert method.branch_batch_size("env1", config.train.batch_size) == config.train.batch_size // 3


def test_one_environment_variant_keeps_one_uniform_environment_and_the_whole_batch():
    config, method, _ = from_recipe("cifar10_glt_quick_ifl_1env")
    assert list(method.branches()) == ["env1"]
    assert method.branch_batch_size("env1", config.train.batch_size) == config.train.batch_size
    method.confidence.copy_(torch.tensor([0.1, 0.5, 0.9, 0.3]))
    method.end_epoch(
        context(config.method.update_milestones[0])
    )  # an update milestone: nothing to rebuild
    assert method.state.environment_weights.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_alt_variant_trains_on_train_cbl():
    assert load_recipe("cifar10_glt_quick_bsm_alt").data.glt.train_set == "cbl"
    assert load_recipe("cifar10_glt_quick_bsm").data.glt.train_set == "glt"
