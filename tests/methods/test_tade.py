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
    options = SelfSupervisedAggregationOptions(
        enabled=True, epochs=3, batch_size=8, lr=0.5, stop_below=0.0
    )
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
    assert (
        record["mean_view_similarity_per_epoch"][-1] > record["mean_view_similarity_per_epoch"][0]
    )


def test_early_stop_once_a_weight_falls_below_the_threshold():
    options = SelfSupervisedAggregationOptions(
        enabled=True, epochs=50, batch_size=8, lr=5.0, stop_below=0.05
    )
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


def tiny_adaptation_run(data_root, **overrides):
    """Overrides for a one-step TADE run on 30 test images that learns test-time weights."""
    return tiny_overrides(
        data_root,
        epochs=1,
        **{
            "train.max_steps_per_epoch": 1,
            "train.batch_size": 16,
            "data.test_per_class": 3,
            "method.test_time_aggregation.batch_size": 15,
            "method.test_time_aggregation.epochs": 1,
            # a barely trained model predicts almost the same for both views: a large step
            "method.test_time_aggregation.lr": 500.0,
            **overrides,
        },
    )


def test_learned_weights_through_the_cli_and_eval_ignore_the_labels(
    cifar10_jpeg_root, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    # the final evaluation follows the adaptation anyway
    arguments = tiny_adaptation_run(cifar10_jpeg_root, **{"train.eval_every": 0})
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
        garbage = torch.randint(
            0, 10, data.test.labels.shape, generator=torch.Generator().manual_seed(1)
        )
        return replace(data, test=replace(data.test, labels=garbage))

    monkeypatch.setattr(trainer, "load_data", garbage_labels)
    assert main(["eval", str(run), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["test_time_adaptation"]["expert_weights"] == weights
    assert (
        evaluated["test"]["confusion_matrix"] != results["test"]["confusion_matrix"]
    )  # labels did change


def test_scores_after_an_evaluated_epoch_are_those_of_the_adapted_model(
    cifar10_jpeg_root, tmp_path
):
    # The loop evaluates the final epoch before the adaptation; results.json must report the
    # adapted model, as `tailfuse eval` (which adapts the same way) does.
    run = tmp_path / "run"
    arguments = tiny_adaptation_run(
        cifar10_jpeg_root,
        # otherwise the selected checkpoint is evaluated anew
        **{"train.eval_every": 1, "train.selection": "final"},
    )
    assert main(["train", "cifar10_lt_quick_tade_tta", *arguments, "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["selection"] == {"rule": "final", "epoch": 1}
    assert main(["eval", str(run), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    weights = results["test_time_adaptation"]["expert_weights"]
    assert evaluated["test_time_adaptation"]["expert_weights"] == weights
    assert max(abs(w - 1 / 3) for w in weights) > 1e-3
    for key in ("top1", "ece", "confusion_matrix"):
        assert results["test"][key] == evaluated["test"][key], key


def test_test_time_defaults_are_the_authors_released_config():
    # test_time_cifar100_ir100_tade.json: batch 128, SGD lr 0.1, momentum 0.9,
    # wd 5e-4, Nesterov, 5 passes
    options = SelfSupervisedAggregationOptions()
    assert not options.enabled
    assert (options.batch_size, options.lr, options.momentum, options.weight_decay) == (
        128,
        0.1,
        0.9,
        5.0e-4,
    )
    assert options.nesterov and options.epochs == 5 and options.stop_below == 0.05


@pytest.mark.parametrize("nesterov", [True, False])
def test_one_aggregation_step_is_sgd_with_the_options_momentum_nesterov_and_decay(nesterov):
    """One batch, one epoch: a = 1/3 − lr·(g + wd·a)·(1 + m if Nesterov else 1), w = softmax(a),
    with g the gradient of the (hand-checked) aggregation loss at a = 1/3."""
    lr, momentum, decay = 0.5, 0.9, 0.1
    options = SelfSupervisedAggregationOptions(
        enabled=True,
        epochs=1,
        batch_size=8,
        lr=lr,
        momentum=momentum,
        weight_decay=decay,
        nesterov=nesterov,
        stop_below=0.0,
    )
    views = _FixedViews(batches=1)
    weights, _ = learn_aggregation_weights(_three_experts, views, 3, options)
    start = torch.full((3,), 1 / 3, requires_grad=True)
    ((first, second),) = views.batches(8, 0)
    aggregation_loss(start, _three_experts(first), _three_experts(second)).backward()
    step = start.grad + decay * start.detach()
    moved = start.detach() - lr * step * ((1 + momentum) if nesterov else 1.0)
    assert weights.tolist() == pytest.approx(torch.softmax(moved, 0).tolist(), abs=1e-6)
    assert not torch.allclose(start.grad, torch.zeros(3))  # the step moved the weights


class _RecordingViews:
    """Images (N, 1, 1, 2): pixel 0 the kind (0: the two views agree, 1: they do not), pixel 1
    the view. Records the arguments of every ``batches`` call."""

    def __init__(self, kinds: list[int]):
        self.images = torch.zeros(len(kinds), 1, 1, 2)
        self.images[:, 0, 0, 0] = torch.tensor(kinds, dtype=torch.float32)
        self.calls = []

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size, epoch, distort=False):
        self.calls.append((batch_size, epoch, distort))
        for start in range(0, len(self.images), batch_size):
            first = self.images[start : start + batch_size]
            second = first.clone()
            second[:, 0, 0, 1] = 1.0
            yield first, second


def _twin_experts(images: torch.Tensor) -> list[torch.Tensor]:
    """Two experts with the same logits: (ln 3, 0), or (ln 3, ln 3) on the second view of a kind-1
    image. Any weights mix them to those logits, so the weights get no gradient."""
    disagree = (images[:, 0, 0, 0] == 1) & (images[:, 0, 0, 1] == 1)
    logits = torch.zeros(len(images), 2)
    logits[:, 0] = LN3
    logits[disagree, 1] = LN3
    return [logits, logits.clone()]


def test_the_epoch_similarity_is_the_image_weighted_mean_and_the_arguments_reach_the_views():
    """Batches of 4: [0, 0, 0, 0] (cos 1 each) and [1, 1, 0]: a kind-1 image has views
    (3/4, 1/4) and (1/2, 1/2), cos = (3/8 + 1/8) / (√10/4 · √2/2) = 2/√5. Over the 7 images:
    (5 + 4/√5) / 7 = 0.9698..."""
    views = _RecordingViews([0, 0, 0, 0, 1, 1, 0])
    options = SelfSupervisedAggregationOptions(
        enabled=True, epochs=2, batch_size=4, lr=0.5, stop_below=0.0, colour_distortion=True
    )
    weights, record = learn_aggregation_weights(_twin_experts, views, 2, options)
    expected = (5.0 + 4.0 / math.sqrt(5.0)) / 7.0
    assert record["mean_view_similarity_per_epoch"] == pytest.approx([expected, expected], abs=1e-6)
    assert views.calls == [(4, 0, True), (4, 1, True)]
    assert weights.tolist() == [0.5, 0.5] and record["epochs_run"] == 2 and record["images"] == 7
    assert record["kind"] == "tade_self_supervised_aggregation"
    assert record["options"] == options.model_dump()

    plain = SelfSupervisedAggregationOptions(
        enabled=True, epochs=1, stop_below=0.0, colour_distortion=False
    )
    one_image = _RecordingViews([1])
    _, record = learn_aggregation_weights(_twin_experts, one_image, 2, plain)
    assert record["mean_view_similarity_per_epoch"] == pytest.approx(
        [2.0 / math.sqrt(5.0)], abs=1e-6
    )
    assert one_image.calls == [(128, 0, False)]


def test_the_early_stop_needs_a_weight_strictly_below_the_threshold():
    # the weights stay at exactly (1/2, 1/2): a threshold of 1/2 is not undershot, 0.6 is
    views = _RecordingViews([0, 1])
    at = SelfSupervisedAggregationOptions(enabled=True, epochs=3, batch_size=2, stop_below=0.5)
    assert learn_aggregation_weights(_twin_experts, views, 2, at)[1]["epochs_run"] == 3
    above = SelfSupervisedAggregationOptions(enabled=True, epochs=3, batch_size=2, stop_below=0.6)
    assert learn_aggregation_weights(_twin_experts, views, 2, above)[1]["epochs_run"] == 1


def test_two_plain_sgd_steps_with_weight_decay_by_hand():
    """Two one-image batches, SGD without momentum: a ← a − lr·(g(a) + wd·a) twice, g from the
    hand-checked aggregation loss of each image. The decay of the first step moves both logits
    alike; the second one does not, so leaving the decay out changes the weights."""
    lr, decay = 2.0, 0.5
    options = SelfSupervisedAggregationOptions(
        enabled=True,
        epochs=1,
        batch_size=1,
        lr=lr,
        momentum=0.0,
        weight_decay=decay,
        nesterov=False,
        stop_below=0.0,
    )
    views = _FixedViews(batches=1)
    views.images = views.images[:2]
    weights, _ = learn_aggregation_weights(_three_experts, views, 3, options)
    logits = torch.full((3,), 1 / 3)
    for first, second in views.batches(1, 0):
        current = logits.clone().requires_grad_(True)
        aggregation_loss(current, _three_experts(first), _three_experts(second)).backward()
        logits = logits - lr * (current.grad + decay * logits)
    assert weights.tolist() == pytest.approx(torch.softmax(logits, 0).tolist(), abs=1e-6)
    no_decay = options.model_copy(update={"weight_decay": 0.0})
    undecayed, _ = learn_aggregation_weights(_three_experts, views, 3, no_decay)
    assert (undecayed - weights).abs().max() > 1e-3
