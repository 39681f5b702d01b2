"""Multi-expert methods: what trains in each stage, BBN's alpha, H2T on expert maps, errors."""

from __future__ import annotations

import pytest
import torch

from tailfuse.config import load_recipe
from tailfuse.data.randomness import EpochRandomness
from tailfuse.errors import ConfigError
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.methods.bbn import cumulative_alpha
from tailfuse.methods.h2t import fuse_channels
from tailfuse.models import build_model

COUNTS = [6, 3, 1]


def _method(recipe, *overrides):
    config = load_recipe(recipe, list(overrides))
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    return build_method(config, model, COUNTS), model


def _trained(method):
    return {id(p) for group in method.parameter_groups() for p in group["params"]}


@pytest.mark.parametrize(
    "recipe",
    [
        "cifar10_lt_quick_ride",
        "cifar10_lt_quick_tade",
        "cifar10_lt_quick_reslt",
        "cifar10_lt_quick_bbn",
    ],
)
def test_stage1_methods_train_the_whole_model(recipe):
    method, model = _method(recipe)
    assert _trained(method) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize(
    ("recipe", "branches"),
    [
        ("cifar10_lt_quick_ride_h2t", {"balanced": "class_balanced", "fusing": "instance"}),
        ("cifar10_lt_quick_reslt_h2t", {"balanced": "class_balanced", "fusing": "instance"}),
        # the controls without the fusion: no instance-sampled fusing branch
        ("cifar10_lt_quick_ride_dr", {"balanced": "class_balanced"}),
        ("cifar10_lt_quick_reslt_stage2", {"balanced": "class_balanced"}),
    ],
)
def test_stage2_on_experts_trains_only_the_head(recipe, branches):
    method, model = _method(recipe)
    assert _trained(method) == {id(p) for p in model.head.parameters()}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert method.branches() == branches


@pytest.mark.parametrize(
    ("control", "with_h2t"),
    [
        ("cifar10_lt_quick_ride_dr", "cifar10_lt_quick_ride_h2t"),
        ("cifar10_lt_quick_reslt_stage2", "cifar10_lt_quick_reslt_h2t"),
    ],
)
def test_the_stage2_controls_differ_from_their_h2t_rows_only_by_the_fusion(control, with_h2t):
    """A control separates the re-training from the fusion only if nothing else changed."""
    control_config = load_recipe(control).model_dump()
    fused_config = load_recipe(with_h2t).model_dump()
    assert control_config["method"]["h2t"]["ratio"] == 0
    assert fused_config["method"]["h2t"]["ratio"] > 0
    for config in (control_config, fused_config):
        config.pop("name")
        config["method"].pop("h2t")
    assert control_config == fused_config


def test_ride_stage2_trains_the_expert_classifiers_with_class_aware_batches():
    """The GLT authors' ClassAwareSampler, as cRT's: COUNTS 6, 3, 1 give min(6 * 3, 4 * 10) = 18
    samples per epoch, not N = 10."""
    method, model = _method("imagenet_glt_ride_stage2")
    assert _trained(method) == {id(p) for p in model.head.parameters()}
    method.bind_training_set(torch.repeat_interleave(torch.arange(3), torch.tensor(COUNTS)))
    balanced = method.branches()["balanced"]
    assert balanced.name == "class_aware" and balanced.num_samples == 18
    method, _ = _method("imagenet_glt_ride_stage2", "method.epoch_length=dataset")
    assert method.branches() == {"balanced": "class_aware"}


def test_ride_stage2_follows_the_epoch_of_its_loss():
    """A DRW schedule in ride_stage2's loss switches on at its epoch (the loss is told it)."""
    method, model = _method(
        "imagenet_glt_ride_stage2",
        "method.loss=ride",
        "method.loss_options={drw_epoch: 1}",
    )
    batch = {"balanced": Batch(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]))}
    model.train()
    seen = []
    for epoch in (0, 1):
        context = StepContext(
            epoch=epoch, total_epochs=2, randomness=EpochRandomness(0, epoch, torch.device("cpu"))
        )
        method.loss(batch, context)
        seen.append(method.criterion.epoch)
    assert seen == [0, 1]


def test_reslt_stage2_refuses_loss_options_it_would_ignore():
    with pytest.raises(ConfigError, match="ResLoss takes method.beta and method.groups"):
        _method("cifar10_lt_quick_reslt_h2t", "method.loss_options={smooth: 0.1}")


def test_bbn_alpha_schedule():
    assert [cumulative_alpha(e, 200) for e in (0, 100, 199)] == pytest.approx(
        [1.0, 0.75, 1 - (199 / 200) ** 2]
    )
    # the GLT code feeds its 0-based epoch into BBN's (e - 1) formula
    assert [cumulative_alpha(e, 100, "glt") for e in (0, 1, 51)] == pytest.approx(
        [1 - 0.01**2, 1.0, 0.75]
    )


@pytest.mark.parametrize(
    ("overrides", "alpha"),
    [([], 1 - (20 / 40) ** 2), (["method.alpha_epoch=glt"], 1 - (19 / 40) ** 2)],
)
def test_bbn_step_mixes_both_branches_and_their_labels(overrides, alpha):
    """Epoch 20 of 40: α = 1 − (20/40)², or 1 − (19/40)² with the GLT code's epoch count."""
    method, model = _method("cifar10_lt_quick_bbn", *overrides)
    assert method.branches() == {"conventional": "instance", "rebalancing": "reverse"}
    images = torch.randn(4, 3, 32, 32)
    first = Batch(images, torch.tensor([0, 0, 1, 2]))
    second = Batch(images.flip(0), torch.tensor([2, 1, 2, 0]))
    context = StepContext(
        epoch=20, total_epochs=40, randomness=EpochRandomness(0, 20, torch.device("cpu"))
    )
    model.train()
    torch.manual_seed(1)
    loss = method.loss({"conventional": first, "rebalancing": second}, context)
    torch.manual_seed(1)
    backbone, head = model.backbone, model.head
    logits = head.mixed_logits(
        backbone(first.images, branch="conventional"),
        backbone(second.images, branch="rebalancing"),
        alpha,
    )
    ce = torch.nn.functional.cross_entropy
    expected = alpha * ce(logits, first.labels) + (1 - alpha) * ce(logits, second.labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_h2t_fuses_each_expert_map_with_its_own_channel_subset():
    fused = [torch.zeros(3, 8, 2, 2) for _ in range(3)]
    fusing = [torch.full((3, 8, 2, 2), float(k + 1)) for k in range(3)]
    result = fuse_channels(fused, fusing, 0.25, torch.Generator().manual_seed(0))
    subsets = []
    for k, expert_map in enumerate(result):
        replaced = (expert_map != 0).all(dim=(2, 3))  # (batch, channels): whole channel maps copied
        assert replaced.sum(dim=1).tolist() == [2, 2, 2]  # floor(0.25 * 8) channels per sample
        assert (replaced == replaced[0]).all()  # the same channels for every sample of the batch
        assert (
            expert_map[replaced.unsqueeze(-1).unsqueeze(-1).expand_as(expert_map)] == k + 1
        ).all()  # from its own donor
        subsets.append(frozenset(torch.nonzero(replaced[0]).flatten().tolist()))
    assert len(set(subsets)) > 1  # independent draws per expert (seeded: not all equal)


def test_ride_h2t_step_fuses_every_expert_before_the_averaging_head():
    method, model = _method("cifar10_lt_quick_ride_h2t")
    balanced = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    fusing = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 0, 1]))
    context = StepContext(
        epoch=0, total_epochs=10, randomness=EpochRandomness(0, 0, torch.device("cpu"))
    )
    method.train_mode()
    torch.manual_seed(2)
    loss = method.loss({"balanced": balanced, "fusing": fusing}, context)
    torch.manual_seed(2)
    with torch.no_grad():
        maps = model.features(balanced.images)
        donors = model.features(fusing.images)
        fused = fuse_channels(
            maps, donors, 0.25, EpochRandomness(0, 0, torch.device("cpu")).stream("h2t")
        )
    expected = torch.nn.functional.cross_entropy(model.head(fused), balanced.labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


IMAGENET_RESLT = [
    "model.backbone=ride_resnet50",
    "model.backbone_options.reslt_block=true",
    "model.head=reslt_channel_split",
]


@pytest.mark.parametrize("overrides", [[], IMAGENET_RESLT], ids=["cifar", "imagenet_block"])
def test_reslt_h2t_step_fuses_every_expert_map_then_takes_resloss_of_the_branches(overrides):
    """ResLT + H2T: each expert's map (ImageNet: the block's 1x1 map) fused with its own
    subset of the fusing batch's channels, then ResLoss of [z_H, z_M, z_T] on the labels."""
    from tailfuse.losses.experts import ResLoss

    method, model = _method("cifar10_lt_quick_reslt_h2t", *overrides)
    balanced = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    fusing = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 0, 1]))
    context = StepContext(
        epoch=0, total_epochs=10, randomness=EpochRandomness(0, 0, torch.device("cpu"))
    )
    method.train_mode()
    loss = method.loss({"balanced": balanced, "fusing": fusing}, context)
    with torch.no_grad():
        maps = model.features(balanced.images)
        donors = model.features(fusing.images)
        fused = fuse_channels(
            maps, donors, 0.4, EpochRandomness(0, 0, torch.device("cpu")).stream("h2t")
        )
    assert len(fused) == 3 and not any(torch.equal(f, m) for f, m in zip(fused, maps, strict=True))
    resloss = ResLoss(COUNTS, beta=0.3, groups="cifar10")
    expected = resloss(model.head.branch_logits(fused), balanced.labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_methods_refuse_models_that_do_not_fit():
    with pytest.raises(ConfigError, match="multi-expert model"):
        _method("cifar10_lt_quick", "method.name=ride")
    with pytest.raises(ConfigError, match="BBN model"):
        _method("cifar10_lt_quick_ride", "method.name=bbn")
    with pytest.raises(ConfigError, match="reslt"):
        _method("cifar10_lt_quick_ride", "method.name=reslt", "method.groups=cifar10")
    with pytest.raises(ConfigError, match="do not fit"):
        _method("cifar10_glt_quick_ride_ifl", "method.loss=cross_entropy", "method.loss_options={}")


def test_crt_reinitialises_every_expert_classifier():
    config = load_recipe("cifar10_lt_quick_ride_h2t", ["method.name=crt"])
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    before = [p.detach().clone() for p in model.head.parameters()]
    torch.manual_seed(5)
    build_method(config, model, COUNTS)
    after = list(model.head.parameters())
    assert len(before) == 3 and all(
        not torch.equal(b, a) for b, a in zip(before, after, strict=True)
    )


def test_expert_methods_hand_their_options_to_their_losses():
    """The recipe's loss settings reach the loss the method trains with."""
    ride, _ = _method(
        "cifar10_lt_quick_ride", "method.loss_options.max_m=0.3", "method.loss_options.s=20"
    )
    assert ride.criterion.margins.max().item() == pytest.approx(0.3)
    assert (ride.criterion.s, ride.criterion.drw_epoch, ride.criterion.diversity_factor) == (
        20,
        32,
        -0.2,
    )
    for recipe in ("cifar10_lt_quick_reslt", "cifar10_lt_quick_reslt_h2t"):
        reslt, _ = _method(recipe, "method.beta=0.7", "method.groups=cifar100")
        criterion = reslt.criterion
        assert (criterion.beta, criterion.medium_from, criterion.tail_from, criterion.rule) == (
            0.7,
            35,
            70,
            "at_least",
        )
        # a group row other than ResLoss's own default (cifar100)
        criterion = _method(recipe, "method.groups=imagenet_lt")[0].criterion
        assert (criterion.medium_from, criterion.tail_from, criterion.rule) == (825, 220, "below")
    assert (
        _method("cifar10_lt_quick_tade", "method.tau=0.5")[0].criterion.tau == 0.5
    )  # TADELoss's default is 2


def test_reslt_cross_entropy_keeps_the_authors_epsilon():
    """``−log(softmax + 1e-7)``: a target probability that underflows to 0
    costs −log 1e-7 = 16.118."""
    from tailfuse.losses.experts import ResLoss

    losses = ResLoss._cross_entropy(
        torch.tensor([[0.0, -200.0], [0.0, -200.0]]), torch.tensor([1, 0])
    )
    assert losses.tolist() == pytest.approx([16.118096, -1e-7], abs=1e-6)
    with pytest.raises(
        ConfigError, match="unknown ResLT groups 'cifar1000'; choose from cifar10, cifar100"
    ):
        ResLoss([3, 2, 1], groups="cifar1000")


@pytest.mark.parametrize("recipe", ["cifar10_glt_quick_ride_ifl", "cifar10_glt_quick_tade_ifl"])
def test_ifl_on_experts_records_the_expert_mean_and_centers_the_joined_features(recipe):
    """center_ride / center_tade (spec glt_ifl §3.5): confidence p(y|x) from the mean of the
    experts' logits; the centers live on the concatenated pooled expert features."""
    method, model = _method(recipe)
    labels = torch.repeat_interleave(torch.arange(3), torch.tensor(COUNTS))
    method.bind_training_set(labels)
    drawn = torch.tensor([0, 6, 9, 1])
    torch.manual_seed(1)
    images = torch.randn(4, 3, 32, 32)
    batches = {
        "env1": Batch(images[:2], labels[drawn[:2]], drawn[:2]),
        "env2": Batch(images[2:], labels[drawn[2:]], drawn[2:]),
    }
    epoch = method.options.center_milestones[-1]  # center loss on
    context = StepContext(
        epoch=epoch, total_epochs=method.config.train.epochs, randomness=EpochRandomness(0, epoch)
    )
    centers = method.state.centers.clone()
    method.loss(batches, context)

    with torch.no_grad():
        expert_logits = model.head.expert_logits(model.features(images))
        mean = torch.stack(expert_logits).mean(0)
        expected = mean.softmax(1).gather(1, labels[drawn].view(-1, 1)).squeeze(1)
    assert method.confidence[drawn].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    joined = model.backbone.num_experts * model.backbone.out_channels
    assert centers.shape == (3, joined)
    moved = (method.state.centers != centers).any(dim=1)
    assert moved.tolist() == [True, True, True]  # every drawn class's center moved
