"""IFL (spec glt_ifl §3): environment weights, center update, steps, resume, end to end."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.config import load_recipe
from tailfuse.data.prepare import load_data
from tailfuse.data.randomness import EpochRandomness
from tailfuse.engine.runtime import make_runtime
from tailfuse.engine.session import TrainingSession
from tailfuse.errors import ConfigError
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.methods.ifl import (
    EnvironmentSampler,
    center_weight,
    confidence_beta,
    intra_class_environment_weights,
    record_last,
)
from tailfuse.models import build_model

from ..fakes import write_image_folder

NAN = float("nan")


def test_environment_weights_on_a_hand_made_confidence_table():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 10 + [3] * 2)
    confidence = torch.tensor(
        [0.0, 0.25, 0.5, 0.75, 1.0]  # class 0: evenly spread
        + [0.9, 0.2, NAN]  # class 1: two seen (< 5) -> 1/2 each, the unseen one 0
        + [1.0]
        + [0.0] * 9  # class 2: beta clamps at 10
        + [NAN, NAN]  # class 3: never seen -> all 0
    )
    weights = intra_class_environment_weights(labels, confidence, 4, sample_scale=4.0)
    sums = torch.zeros(4, dtype=torch.float64).index_add_(0, labels, weights)
    assert sums.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert weights[5:8].tolist() == [0.5, 0.5, 0.0]
    # class 0: u = 1 - p + 1e-5; h = mean of the 4 smallest, t = the largest; beta = ln 4 / ln(t/h)
    u = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64) + 1e-5
    beta = math.log(4.0) / math.log(float(u.max() / u.sort().values[:4].mean()) + 1e-5)
    assert confidence_beta(u, 4.0) == pytest.approx(beta, rel=1e-6)  # 1.4134
    expected = (u**beta + 1e-12) / (u**beta + 1e-12).sum()
    assert weights[:5].tolist() == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-10)
    assert weights[4] < 1e-6  # the most confident sample is (almost) never drawn
    # class 2: u = [1e-5, 1, ..., 1] -> t/h = 1 / (7/8) -> ln4/ln(8/7) = 10.4 -> clamped to 10
    assert confidence_beta(torch.tensor([1e-5] + [1.0 + 1e-5] * 9), 4.0) == 10.0
    assert weights[8] < 1e-10 and weights[9:18].tolist() == pytest.approx([1 / 9] * 9)
    # low clamp: a class whose tail is far above its head gets beta = 1
    assert confidence_beta(torch.tensor([1.0, 1e-5, 1e-5, 1e-5, 1e-5]), 4.0) == 1.0


def test_beta_tail_is_the_floor_of_a_fifth_of_the_class():
    # the authors: h = mean of the floor(0.8 n) smallest u, t = mean of the floor(0.2 n) largest.
    # n = 6: h over 4 values, t over 1 (the fifth value is in neither);
    # t/h = 2 -> beta = ln 4 / ln 2
    u = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    assert confidence_beta(u, 4.0) == pytest.approx(math.log(4.0) / math.log(2.0 + 1e-5), abs=1e-9)
    assert confidence_beta(u, 4.0) == pytest.approx(2.0, abs=1e-4)
    # n = 9: h over 7, t over 1: t/h = 3 / 1 -> beta = ln 4 / ln 3 = 1.2619
    u = torch.tensor([1.0] * 8 + [3.0], dtype=torch.float64)
    assert confidence_beta(u, 4.0) == pytest.approx(1.2619, abs=1e-4)
    # n = 10 (a multiple of 5): t over the 2 largest, h over the 8 smallest: (2 + 4) / 2 / 1 = 3
    u = torch.tensor([1.0] * 8 + [2.0, 4.0], dtype=torch.float64)
    assert confidence_beta(u, 4.0) == pytest.approx(1.2619, abs=1e-4)


def test_an_environment_without_weight_draws_every_image_uniformly():
    # all weights 0 (no image recorded since the last rebuild): uniform, not a multinomial error
    sampler = EnvironmentSampler(
        torch.tensor([0, 0, 1, 1]), 2, lambda: torch.zeros(4, dtype=torch.float64), 4000
    )
    drawn = sampler.epoch_indices(torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=4)
    assert len(drawn) == 4000 and counts.min() > 900 and counts.max() < 1100


def test_record_last_keeps_the_last_record_of_a_repeated_index():
    # two million records of three samples, pattern 2, 0, 2, 1, 0: a plain indexed write with
    # repeated indices lets any of them win (CUDA, and multi-threaded CPU writes of this size)
    count = 2_000_000
    indices = torch.tensor([2, 0, 2, 1, 0]).repeat(count // 5)
    values = torch.arange(count, dtype=torch.float64)
    for _ in range(4):  # a racy write picks the last record by chance; four tries rarely all do
        target = torch.full((4,), float("nan"), dtype=torch.float64)
        record_last(target, indices, values)
        assert target[:3].tolist() == [count - 1, count - 2, count - 3]  # the last 0, 1, 2
        assert math.isnan(target[3])  # never recorded
    small = torch.zeros(3)
    record_last(small, torch.tensor([1, 1, 0]), torch.tensor([5.0, 7.0, 9.0]))
    assert small.tolist() == [9.0, 7.0, 0.0]


@pytest.mark.gpu
def test_record_last_on_cuda_keeps_the_last_record():
    count = 2_000_000
    indices = torch.tensor([2, 0, 2, 1, 0], device="cuda").repeat(count // 5)
    values = torch.arange(count, dtype=torch.float64, device="cuda")
    target = torch.zeros(3, dtype=torch.float64, device="cuda")
    record_last(target, indices, values)
    assert target.tolist() == [count - 1, count - 2, count - 3]


def test_milestones_past_the_last_epoch_are_refused(tmp_path, capsys):
    from tailfuse.cli import main

    # the quick recipe rebuilds environments after epochs 10 and 13 and weights the center loss
    # from epochs 10 and 13: with 12 epochs the second rebuild and weight would never happen
    with pytest.raises(ConfigError, match=r"method.update_milestones \[10, 13\].*train.epochs=12"):
        load_recipe("cifar10_glt_quick_ifl", ["train.epochs=12"])
    with pytest.raises(
        ConfigError, match=r"method.center_milestones \[0, 10, 13\].*train.epochs=12"
    ):
        load_recipe("cifar10_glt_quick_ifl", ["train.epochs=12", "method.update_milestones=[10]"])
    assert (
        main(["train", "cifar10_glt_quick_ifl", "train.epochs=4", "--out", str(tmp_path / "run")])
        == 2
    )
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "run").exists()
    # milestones that cannot take effect are not checked: one environment is never rebuilt, and
    # always_update rebuilds after every epoch
    for override in ("method.environments=1", "method.always_update=true"):
        config = load_recipe("cifar10_glt_quick_ifl", ["train.epochs=14", override])
        assert config.method.update_milestones == [10, 13]


def test_center_weight_follows_the_milestones():
    options = load_recipe("cifar10_glt_quick_ifl").method
    assert [center_weight(options, e) for e in (0, 9, 10, 12, 13, 15)] == [
        0.0,
        0.0,
        0.001,
        0.001,
        0.005,
        0.005,
    ]


def _method(overrides=(), class_counts=(3, 2, 1)):
    config = load_recipe("cifar10_glt_quick_ifl", list(overrides))
    torch.manual_seed(0)
    model = build_model(config.model, len(class_counts))
    method = build_method(config, model, list(class_counts))
    labels = torch.repeat_interleave(torch.arange(len(class_counts)), torch.tensor(class_counts))
    method.bind_training_set(labels)
    return method, model, labels


def test_a_loss_drawing_random_noise_is_refused():
    # GCL's noise would come from the global random state, unseeded by the epoch's streams
    with pytest.raises(ConfigError, match=r"ifl: loss 'gcl' draws random noise"):
        _method(["method.loss=gcl", "model.head=cosine", "model.cosine_scale=1"])


def test_center_update_is_the_moving_average_rule():
    method, _, _ = _method()
    centers = torch.randn(3, 64)
    method.state.centers.copy_(centers)
    features = torch.randn(8, 64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    method._update_centers(features, labels, None, 1.0)
    expected = centers.clone()
    for c in range(3):
        members = labels == c
        share = members.sum() / len(labels)
        expected[c] = (1 - share) * centers[c] + share * features[members].mean(0)
    assert torch.allclose(method.state.centers, expected, atol=1e-5)


def test_a_step_records_confidence_and_moves_centers_only_when_alpha_is_positive():
    method, model, labels = _method()
    batches = {
        f"env{k}": Batch(torch.randn(3, 3, 32, 32), labels[[0, 3, 5]], torch.tensor([0, 3, 5]))
        for k in (1, 2)
    }
    before = method.state.centers.clone()
    context = StepContext(epoch=0, total_epochs=16, randomness=EpochRandomness(0, 0))
    loss = method.loss(batches, context)
    assert loss.requires_grad and torch.equal(
        method.state.centers, before
    )  # alpha = 0 before epoch 10
    recorded = ~torch.isnan(method.confidence)
    assert recorded.nonzero().flatten().tolist() == [0, 3, 5]
    late = StepContext(epoch=13, total_epochs=16, randomness=EpochRandomness(0, 13))
    method.loss(batches, late)
    assert not torch.equal(method.state.centers, before)
    method.end_epoch(late)  # epoch 13 is an update milestone
    env2 = method.state.environment_weights[1]
    assert (
        env2[[0, 3, 5]].tolist() == [1.0, 1.0, 1.0] and env2.sum() == 3.0
    )  # one seen sample per class
    assert torch.equal(method.state.environment_weights[0], torch.ones(6, dtype=torch.float64))
    assert torch.isnan(method.confidence).all()  # records restart every epoch
    # ... and so does their order: sample 5, drawn last above, is drawn first next epoch
    next_batches = {
        "env1": Batch(torch.randn(1, 3, 32, 32), labels[[5]], torch.tensor([5])),
        "env2": Batch(torch.randn(1, 3, 32, 32), labels[[1]], torch.tensor([1])),
    }
    method.loss(next_batches, StepContext(epoch=14, total_epochs=16, randomness=late.randomness))
    assert (~torch.isnan(method.confidence)).nonzero().flatten().tolist() == [1, 5]


@pytest.fixture(scope="module")
def tiny_glt(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("glt"), [40, 40, 40], [40, 40, 40])


def tiny_glt_overrides(root, epochs=2, **extra):
    values = {
        "data.root": str(root),
        "data.glt.rho": 4,
        "data.glt.gbl_per_rank": 3,
        "data.glt.cbl_test_per_class": 10,
        "data.glt.cbl_val_per_class": 10,
        "data.glt.test_lt_pool_per_class": 10,
        "train.epochs": epochs,
        "train.batch_size": 16,
        "train.eval_every": 1,
        "train.progress": "false",
        "train.precision": "fp32",
        "method.update_milestones": "[0]",
        "method.center_milestones": "[0,1]",
        "method.center_weights": "[0.0,0.005]",
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


@pytest.mark.parametrize(
    ("epoch_images", "environments", "steps"),
    [("per_environment", 2, 8), ("shared", 2, 4), ("per_environment", 3, 13)],
)
def test_steps_per_epoch_and_branch_batches(tiny_glt, epoch_images, environments, steps):
    # per environment: ceil(63 / 8); shared: ceil(ceil(63 / 2) / 8);
    # three environments: ceil(63 / 5)
    config = load_recipe(
        "cifar10_glt_quick_ifl",
        tiny_glt_overrides(
            tiny_glt, **{"method.epoch_images": epoch_images, "method.environments": environments}
        ),
    )
    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device)
    assert (
        len(data.train) == 63
    )  # pools 40, 20, 10 (rho 4) at 7:2:1 = 70 images, minus the 10 % val (7)
    session = TrainingSession(config, data, runtime)
    assert session.steps_per_epoch == steps
    assert set(session.batch_sizes.values()) == {16 // environments}
    record = session.train_epoch(0)
    draws = (
        63 if epoch_images == "per_environment" else 32
    )  # indices each environment draws per epoch
    expected_images = environments * draws
    assert record["images_per_second"] * record["seconds"] == pytest.approx(
        expected_images, rel=1e-6
    )


def test_resumed_ifl_run_equals_an_uninterrupted_one(tiny_glt, tmp_path):
    from tailfuse.engine.checkpoint import load_checkpoint
    from tailfuse.engine.trainer import train

    two_epochs = load_recipe("cifar10_glt_quick_ifl", tiny_glt_overrides(tiny_glt, epochs=2))
    train(two_epochs, tmp_path / "whole")
    # an interrupted run: one epoch (cosine lr at epoch 0 does not depend on the length; the
    # center weight of epoch 1 is left out, as a one-epoch run refuses it, and is 0 in epoch 0
    # either way), then its checkpoint relabelled as the two-epoch recipe's and resumed
    one_epoch = tiny_glt_overrides(
        tiny_glt, epochs=1, **{"method.center_milestones": "[0]", "method.center_weights": "[0.0]"}
    )
    train(load_recipe("cifar10_glt_quick_ifl", one_epoch), tmp_path / "resumed")
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    saved["config"]["train"]["epochs"] = 2
    saved["config"]["method"].update(center_milestones=[0, 1], center_weights=[0.0, 0.005])
    torch.save(saved, tmp_path / "resumed" / "checkpoints" / "last.pt")
    train(two_epochs, tmp_path / "resumed", resume=True)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["session"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["session"]
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for key, value in whole["method_modules"]["ifl"].items():
        assert torch.equal(value, resumed["method_modules"]["ifl"][key]), key
    env2 = whole["method_modules"]["ifl"]["environment_weights"][1]
    assert not torch.equal(env2, torch.ones_like(env2))  # environments were rebuilt at epoch 0
