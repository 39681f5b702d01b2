"""Issue 9 items 10, 14, 15, 20: MiSLAS's own stage 2, calibration logits,
FFN's BN quirk, option checks."""

from __future__ import annotations

import math

import pytest
import torch

import tailfuse  # noqa: F401  (registers the methods)
from tailfuse.config import build_config
from tailfuse.data.randomness import EpochRandomness
from tailfuse.data.samplers import ClassAwareSampler
from tailfuse.errors import ConfigError
from tailfuse.eval.metrics import classification_metrics
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.models import build_model

COUNTS = [50, 20, 8, 3]


def make(recipe: dict):
    config = build_config(recipe)
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    return build_method(config, model, COUNTS), model


# ---------------------------------------------------------- item 10: MiSLAS's own stage 2


def test_mislas_lws_trains_head_and_scales_with_the_scales_at_full_lr():
    method, model = make(
        {"schedule": {"name": "cosine", "lr_factor": 0.5}, "method": {"name": "mislas_lws"}}
    )
    head_group, scales_group = method.parameter_groups()
    assert (
        head_group["params"] == list(model.head.parameters())
        and head_group.get("lr_scale", 1.0) == 1.0
    )
    assert scales_group["params"] == [method.scales.scales]
    # the schedule gives lr_factor * lr; MiSLAS gives the LWS group 1.0 * lr (train_stage2.py)
    assert scales_group["lr_scale"] == pytest.approx(2.0)
    assert method.options.loss == "label_aware_smoothing" and method.options.shift_bn


def test_mislas_lws_samples_class_aware_for_ceil_n_over_b_plus_one_batches():
    method, _ = make({"train": {"batch_size": 16}, "method": {"name": "mislas_lws"}})
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(COUNTS))
    method.bind_training_set(labels)
    sampler = method.branches()["balanced"]
    assert isinstance(sampler, ClassAwareSampler)
    # MiSLAS breaks its loop after batch index ceil(N/B): ceil(81/16) + 1 = 7 batches of 16
    assert sampler.num_samples == (math.ceil(81 / 16) + 1) * 16 == 112


def test_mislas_lws_with_h2t_draws_its_fusing_branch_as_many_images_from_its_sampler():
    """H2T on MiSLAS's stage 2: a ``fusing`` branch from ``h2t.fusing_sampler``,
    the same ceil(N/B) + 1 batches as the balanced branch (reverse here);
    without H2T no such branch."""
    from tailfuse.data.samplers import ReverseSampler

    options = {"name": "mislas_lws", "h2t": {"ratio": 0.25, "fusing_sampler": "reverse"}}
    method, _ = make({"train": {"batch_size": 16}, "method": options})
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(COUNTS))
    method.bind_training_set(labels)
    branches = method.branches()
    assert sorted(branches) == ["balanced", "fusing"]
    assert isinstance(branches["fusing"], ReverseSampler) and isinstance(
        branches["balanced"], ClassAwareSampler
    )
    assert branches["fusing"].num_samples == branches["balanced"].num_samples == 112
    plain, _ = make({"train": {"batch_size": 16}, "method": {"name": "mislas_lws"}})
    plain.bind_training_set(labels)
    assert list(plain.branches()) == ["balanced"]


def test_mislas_lws_predicts_with_the_learned_scales():
    method, model = make({"method": {"name": "mislas_lws"}})
    with torch.no_grad():
        method.scales.scales.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.allclose(
        method.predict(images), model(images) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    )


# ---------------------------------------------------------- item 14: calibration logits


def test_ece_and_nll_use_the_calibration_scale():
    logits = torch.tensor([[0.1, 0.0]])
    metrics = classification_metrics(
        logits, torch.tensor([0]), {"all": [0, 1]}, calibration_scale=30.0
    )
    confidence = 1.0 / (1.0 + math.exp(-3.0))  # softmax([3, 0])[0] = 0.952574
    assert metrics["nll"] == pytest.approx(-math.log(confidence), abs=1e-6)  # 0.048587
    assert metrics["ece"] == pytest.approx(100.0 * (1.0 - confidence), abs=1e-6)  # 4.7426
    assert metrics["top1"] == 100.0 and metrics["calibration_scale"] == 30.0


@pytest.mark.parametrize(
    ("model", "method", "scale"),
    [
        (
            {"head": "cosine", "cosine_scale": 1.0},
            {"name": "erm", "loss": "ldam", "loss_options": {"s": 30.0}},
            30.0,
        ),
        (
            {"head": "cosine", "cosine_scale": 1.0},
            {"name": "erm", "loss": "kps", "loss_options": {"s": 15.0}},
            15.0,
        ),
        ({"head": "cosine", "cosine_scale": 1.0}, {"name": "ffn"}, 30.0),
        ({"head": "cosine", "cosine_scale": 1.0}, {"name": "dr", "loss": "ldam"}, 30.0),
        ({"head": "linear"}, {"name": "erm"}, 1.0),
        (
            {"head": "cosine", "cosine_scale": 30.0},
            {"name": "erm"},
            1.0,
        ),  # already scaled by the head
    ],
)
def test_methods_name_the_scale_of_their_loss_logits(model, method, scale):
    built, _ = make({"model": model, "method": method})
    assert built.calibration_scale == scale


# ---------------------------------------------------------- item 15: FFN's ce_batchnorm=train


def test_ffn_train_mode_batchnorm_evaluates_in_seeded_shuffled_batches_of_256():
    recipe = {
        "model": {"head": "cosine", "cosine_scale": 1.0},
        "train": {"seed": 5},
        "method": {"name": "ffn", "ce_batchnorm": "train"},
    }
    method, _ = make(recipe)
    size, order = method.evaluation_batching(1000, 512)
    assert (
        size == 256
        and sorted(order.tolist()) == list(range(1000))
        and order.tolist() != list(range(1000))
    )
    again, _ = make(recipe)
    assert torch.equal(
        again.evaluation_batching(1000, 512)[1], order
    )  # seeded: the same order every time
    clean, _ = make({**recipe, "method": {"name": "ffn"}})
    assert clean.evaluation_batching(1000, 512) == (512, None)
    # the order is the run seed's own stream "ffn:evaluation-order", whatever the global RNG did
    from tailfuse.data.randomness import derive_seed

    torch.manual_seed(123)
    stream = torch.Generator().manual_seed(derive_seed(5, 0, "ffn:evaluation-order"))
    assert torch.equal(order, torch.randperm(1000, generator=stream))
    other_seed, _ = make({**recipe, "train": {"seed": 6}})
    assert not torch.equal(other_seed.evaluation_batching(1000, 512)[1], order)


def test_ffn_train_mode_batchnorm_leaves_the_running_statistics_as_they_were():
    method, _ = make(
        {
            "model": {"head": "cosine", "cosine_scale": 1.0},
            "method": {"name": "ffn", "ce_batchnorm": "train"},
        }
    )
    before = {name: buffer.clone() for name, buffer in method.second_backbone.named_buffers()}
    with torch.inference_mode():
        method.predict(torch.randn(8, 3, 32, 32) * 3 + 1)
    after = dict(method.second_backbone.named_buffers())
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_session_prediction_keeps_the_split_order_under_the_shuffled_evaluation(monkeypatch):
    from tailfuse.data.longtail import class_groups
    from tailfuse.data.prepare import LabelledImages, PreparedData, SubsetPlan
    from tailfuse.engine.runtime import make_runtime
    from tailfuse.engine.session import TrainingSession

    config = build_config(
        {
            "model": {"head": "cosine", "cosine_scale": 1.0},
            "train": {"device": "cpu", "channels_last": False, "eval_batch_size": 7},
            "method": {"name": "ffn", "ce_batchnorm": "train", "fusion_weight": 1.0},
        }
    )
    monkeypatch.setattr(
        "tailfuse.methods.ffn.AUTHORS_EVALUATION_BATCH", 8
    )  # 256 in the code: 3 batches here
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator)
    split = LabelledImages(images, torch.arange(20) % 4)
    train_labels = torch.repeat_interleave(torch.arange(4), torch.tensor(COUNTS))
    groups = class_groups(config.data.groups, COUNTS)
    plan = SubsetPlan(
        ["a", "b", "c", "d"],
        COUNTS,
        torch.arange(81).numpy(),
        torch.arange(20).numpy(),
        None,
        groups,
    )
    train = LabelledImages(torch.empty((0, 3, 32, 32), dtype=torch.uint8), train_labels)
    session = TrainingSession(
        config,
        PreparedData(plan=plan, train=train, test=split, validation=None),
        make_runtime(config.train),
    )
    assert session.method.evaluation_batching(20, 7)[0] == 8
    logits = session.predict(split)
    # lambda = 1: only the KPS backbone (eval-mode BN) counts, so each row
    # depends on its image alone
    session.model.eval()
    with torch.inference_mode():
        expected = session.method.predict(session.augmenter.evaluate(images))
    assert torch.allclose(logits, expected, atol=1e-5)


# ---------------------------------------------------------- item 20: options ignored without a word


def test_label_smoothing_options_without_label_aware_smoothing_are_refused():
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_config({"method": {"name": "dr", "label_smoothing": {"head": 0.3}}})
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_config(
            {
                "method": {
                    "name": "mislas",
                    "loss": "cross_entropy",
                    "label_smoothing": {"head": 0.3},
                }
            }
        )
    assert build_config({"method": {"name": "dr"}}).method.loss == "cross_entropy"


def test_h2t_channel_choice_with_soft_mixing_is_refused():
    with pytest.raises(ConfigError, match="h2t.channels"):
        build_config(
            {
                "method": {
                    "name": "dr",
                    "h2t": {"ratio": 0.25, "mixing": "soft", "channels": "per_sample"},
                }
            }
        )


def test_stage2_methods_take_loss_options_and_follow_the_epoch():
    recipe = {
        "model": {"head": "cosine", "cosine_scale": 1.0},
        "method": {
            "name": "dr",
            "loss": "ldam",
            "loss_options": {"max_m": 0.5, "s": 30.0, "drw_epoch": 1},
        },
    }
    method, _ = make(recipe)
    assert method.criterion.from_epoch == 1 and method.criterion.s == 30.0  # DRW wraps LDAM
    batch = {
        "balanced": Batch(
            torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
            torch.tensor([0, 1, 2, 3] * 2),
        )
    }
    method.train_mode()
    losses = []
    for epoch in (0, 1):
        method.loss(
            batch, StepContext(epoch=epoch, total_epochs=2, randomness=EpochRandomness(0, epoch))
        )
        losses.append(method.criterion.active())
    assert losses == [False, True]  # DRW switches its class weights on at epoch 1
