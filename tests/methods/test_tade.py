"""TADE's test-time self-supervised aggregation: the loss, the learned weights, the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from tailfuse.cli import main
from tailfuse.config import load_recipe
from tailfuse.data.pipeline import BatchAugmenter
from tailfuse.data.views import UnlabelledViews
from tailfuse.errors import ConfigError
from tailfuse.methods.tade import (
    SelfSupervisedAggregationOptions,
    aggregation_loss,
    learn_aggregation_weights,
)

from ..conftest import tiny_overrides

LN3 = math.log(3.0)


def _hand_case():
    """Two experts, two classes, one image; the expected values by hand:

    Expert A gives the same logits for both views; expert B changes its mind. With
    w = (3/4, 1/4): view 1 mixes to (ln 3, 0) → ŷ¹ = (3/4, 1/4); view 2 to (ln 3, ln 3)
    → ŷ² = (1/2, 1/2). cos = (3/8 + 1/8) / (√10/4 · √2/2) = 2/√5.
    """
    expert_a = torch.tensor([[4.0 / 3.0 * LN3, 0.0]])
    view_1 = [expert_a, torch.tensor([[0.0, 0.0]])]
    view_2 = [expert_a, torch.tensor([[0.0, 4.0 * LN3]])]
    return view_1, view_2


def test_aggregation_loss_on_a_hand_computed_case():
    view_1, view_2 = _hand_case()
    weight_logits = torch.tensor([LN3, 0.0], requires_grad=True)  # softmax → (3/4, 1/4)
    loss = aggregation_loss(weight_logits, view_1, view_2)
    assert loss.item() == pytest.approx(-2.0 / math.sqrt(5.0), abs=1e-6)
    loss.backward()
    # more weight on A (whose views agree) raises the similarity: the loss falls along a_A
    assert weight_logits.grad[0] < 0 < weight_logits.grad[1]
    with torch.no_grad():
        weight_logits -= 0.5 * weight_logits.grad
    assert torch.softmax(weight_logits, 0)[0] > 0.75
    # the mean over a batch: a second image whose two views agree exactly adds cos = 1
    both_1 = [torch.cat([z, torch.tensor([[1.0, 2.0]])]) for z in view_1]
    both_2 = [torch.cat([z, torch.tensor([[1.0, 2.0]])]) for z in view_2]
    batch_loss = aggregation_loss(torch.tensor([LN3, 0.0]), both_1, both_2)
    assert batch_loss.item() == pytest.approx(-(2.0 / math.sqrt(5.0) + 1.0) / 2.0, abs=1e-6)


class _FixedViews:
    """Views whose second view is the first one shifted; holds images only."""

    def __init__(self, batches: int = 4):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(batches * 8, 3, 4, 4, generator=generator)
        self.count = batches

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size, epoch, distort=False):
        for start in range(0, len(self.images), batch_size):
            first = self.images[start : start + batch_size]
            yield first, first.flip(-1) + 0.5


def _three_experts(images: torch.Tensor) -> list[torch.Tensor]:
    """A ignores the view (agrees with itself); B and C read pixels that the views change."""
    flat = images.flatten(1)
    constant = torch.tensor([2.0, 0.0, -1.0]).expand(len(images), 3)
    return [constant, 8.0 * flat[:, :3], -8.0 * flat[:, 3:6] ** 2]


def test_weights_start_equal_sum_to_one_and_move_toward_the_consistent_expert():
    options = SelfSupervisedAggregationOptions(enabled=True, epochs=3, batch_size=8, lr=0.5, stop_below=0.0)
    nothing = UnlabelledViews(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), _augmenter(), seed=0)
    start, record = learn_aggregation_weights(_three_experts, nothing, 3, options)
    assert start.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3]) and record["images"] == 0

    weights, record = learn_aggregation_weights(_three_experts, _FixedViews(), 3, options)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (weights > 0).all()
    assert weights[0] > 0.5 and weights[0] > weights[1] and weights[0] > weights[2]
    assert record["expert_weights"] == pytest.approx(weights.tolist())
    assert record["epochs_run"] == 3 and record["images"] == 32
    # the mean view similarity rises as the weights learn
    assert record["mean_view_similarity_per_epoch"][-1] > record["mean_view_similarity_per_epoch"][0]


def test_early_stop_once_a_weight_falls_below_the_threshold():
    options = SelfSupervisedAggregationOptions(enabled=True, epochs=50, batch_size=8, lr=5.0, stop_below=0.05)
    weights, record = learn_aggregation_weights(_three_experts, _FixedViews(), 3, options)
    assert record["epochs_run"] < 50 and weights.min() < 0.05


def test_prediction_mixes_the_expert_logits_with_the_learned_weights():
    from tailfuse.methods import build_method
    from tailfuse.models import build_model

    config = load_recipe("cifar10_lt_quick_tade_tta")
    torch.manual_seed(0)
    model = build_model(config.model, 3).eval()
    method = build_method(config, model, [6, 3, 1])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        experts = method.expert_logits(images)
        assert torch.allclose(method.predict(images), sum(experts) / 3, atol=1e-5)  # plain mean
        method.learned_weights = torch.tensor([0.5, 0.0, 0.5])
        assert torch.allclose(method.predict(images), (experts[0] + experts[2]) / 2, atol=1e-5)


def _augmenter() -> BatchAugmenter:
    return BatchAugmenter(load_recipe("cifar10_lt_quick_tade_tta").data.augment)


def test_views_are_seeded_and_differ_between_the_two_views():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    views = UnlabelledViews(images, _augmenter(), seed=3)
    first = [torch.cat(pair) for pair in views.batches(2, epoch=0, distort=True)]
    again = [torch.cat(pair) for pair in views.batches(2, epoch=0, distort=True)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert sum(len(batch) for batch in first) == 2 * 5
    view_1, view_2 = next(views.batches(5, epoch=0))
    assert not torch.equal(view_1, view_2)


def test_the_option_is_off_by_default_and_refuses_streamed_splits():
    assert not load_recipe("cifar10_lt_quick_tade").method.test_time_aggregation.enabled
    assert load_recipe("cifar10_lt_quick_tade_tta").method.test_time_aggregation.enabled
    with pytest.raises(ConfigError, match="storage: device"):
        load_recipe("imagenet_glt_tade", ["method.test_time_aggregation.enabled=true"])


def test_learned_weights_through_the_cli_and_eval_ignore_the_labels(
    cifar10_jpeg_root, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    arguments = tiny_overrides(
        cifar10_jpeg_root,
        epochs=1,
        **{
            "train.max_steps_per_epoch": 1,
            "train.batch_size": 16,
            "train.eval_every": 0,  # the final evaluation follows the adaptation anyway
            "data.test_per_class": 3,
            "method.test_time_aggregation.batch_size": 15,
            "method.test_time_aggregation.epochs": 1,
            # a barely trained model predicts almost the same for both views: a large step
            "method.test_time_aggregation.lr": 500.0,
        },
    )
    assert main(["train", "cifar10_lt_quick_tade_tta", *arguments, "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    learned = results["test_time_adaptation"]
    weights = learned["expert_weights"]
    assert learned["images"] == 30 and learned["epochs_run"] == 1
    assert sum(weights) == pytest.approx(1.0, abs=1e-6)
    assert max(abs(w - 1 / 3) for w in weights) > 1e-3  # learned, not the starting mean
    assert "test-time expert weights" in (run / "report.md").read_text()

    # `tailfuse eval` learns them again; test labels replaced by garbage give the same weights
    from tailfuse.engine import trainer

    real_load_data = trainer.load_data

    def garbage_labels(*args, **kwargs):
        data = real_load_data(*args, **kwargs)
        garbage = torch.randint(0, 10, data.test.labels.shape, generator=torch.Generator().manual_seed(1))
        return replace(data, test=replace(data.test, labels=garbage))

    monkeypatch.setattr(trainer, "load_data", garbage_labels)
    assert main(["eval", str(run), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["test_time_adaptation"]["expert_weights"] == weights
    assert evaluated["test"]["confusion_matrix"] != results["test"]["confusion_matrix"]  # labels did change


def test_test_time_defaults_are_the_authors_released_config():
    # test_time_cifar100_ir100_tade.json: batch 128, SGD lr 0.1, momentum 0.9, wd 5e-4, Nesterov, 5 passes
    options = SelfSupervisedAggregationOptions()
    assert not options.enabled
    assert (options.batch_size, options.lr, options.momentum, options.weight_decay) == (128, 0.1, 0.9, 5.0e-4)
    assert options.nesterov and options.epochs == 5 and options.stop_below == 0.05


@pytest.mark.parametrize("nesterov", [True, False])
def test_one_aggregation_step_is_sgd_with_the_options_momentum_nesterov_and_decay(nesterov):
    """One batch, one epoch: a = 1/3 − lr·(g + wd·a)·(1 + m if Nesterov else 1), w = softmax(a),
    with g the gradient of the (hand-checked) aggregation loss at a = 1/3."""
    lr, momentum, decay = 0.5, 0.9, 0.1
    options = SelfSupervisedAggregationOptions(
        enabled=True, epochs=1, batch_size=8, lr=lr, momentum=momentum, weight_decay=decay,
        nesterov=nesterov, stop_below=0.0,
    )
    views = _FixedViews(batches=1)
    weights, _ = learn_aggregation_weights(_three_experts, views, 3, options)
    start = torch.full((3,), 1 / 3, requires_grad=True)
    (first, second), = views.batches(8, 0)
    aggregation_loss(start, _three_experts(first), _three_experts(second)).backward()
    step = start.grad + decay * start.detach()
    moved = start.detach() - lr * step * ((1 + momentum) if nesterov else 1.0)
    assert weights.tolist() == pytest.approx(torch.softmax(moved, 0).tolist(), abs=1e-6)
    assert not torch.allclose(start.grad, torch.zeros(3))  # the step moved the weights
