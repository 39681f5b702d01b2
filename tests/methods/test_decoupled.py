"""Stage-2 methods: what they train, freeze and predict; H2T inside a step."""

from __future__ import annotations

import copy

import pytest
import torch

import tailfuse  # noqa: F401
from tailfuse.config import build_config
from tailfuse.data.randomness import EpochRandomness
from tailfuse.errors import ConfigError
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.models import build_model

COUNTS = [50, 20, 8, 3]


def make(method: dict):
    config = build_config({"method": method, "model": {"backbone": "resnet32"}})
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    return build_method(config, model, COUNTS), model


def batches(h2t: bool = True) -> dict[str, Batch]:
    generator = torch.Generator().manual_seed(0)
    out = {
        "balanced": Batch(
            torch.randn(8, 3, 32, 32, generator=generator), torch.tensor([0, 1, 2, 3] * 2)
        )
    }
    if h2t:
        out["fusing"] = Batch(
            torch.randn(8, 3, 32, 32, generator=generator), torch.zeros(8, dtype=torch.long)
        )
    return out


def context() -> StepContext:
    return StepContext(epoch=0, total_epochs=1, randomness=EpochRandomness(0, 0))


def test_h2t_step_trains_only_the_head_and_no_gradient_reaches_the_backbone():
    method, model = make({"name": "dr", "h2t": {"ratio": 0.25}})
    assert method.branches() == {"balanced": "class_balanced", "fusing": "instance"}
    method.train_mode()
    assert model.backbone.training  # shift-BN
    method.loss(batches(), context()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    trained = [p for group in method.parameter_groups() for p in group["params"]]
    assert {id(p) for p in trained} == {id(p) for p in model.head.parameters()}


def test_shift_bn_updates_running_statistics_with_both_branches():
    method, model = make({"name": "dr", "h2t": {"ratio": 0.25}})
    bn = model.backbone.bn1
    before = bn.running_mean.clone()
    tracked_before = int(bn.num_batches_tracked)
    method.train_mode()
    method.loss(batches(), context())
    assert int(bn.num_batches_tracked) == tracked_before + 2  # the balanced and the fusing batch
    assert not torch.equal(bn.running_mean, before)


def test_without_shift_bn_the_backbone_stays_in_eval_mode():
    method, model = make({"name": "crt"})
    method.train_mode()
    assert not model.backbone.training and model.head.training
    bn = model.backbone.bn1
    before = bn.running_mean.clone()
    method.loss(batches(h2t=False), context())
    assert torch.equal(bn.running_mean, before)


def test_evaluation_is_not_fused():
    method, model = make({"name": "dr", "h2t": {"ratio": 0.5}})
    model.eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(method.predict(images), model(images))


def test_crt_and_lws_epochs_are_the_class_aware_length():
    """cRT / LWS sample min(max_c n_c * C, 4 N) images per epoch, the GLT authors'
    ClassAwareSampler: COUNTS = 50, 20, 8, 3 -> min(50 * 4, 4 * 81) = 200 (N = 81 would be
    2.5x fewer)."""
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(COUNTS))
    for name in ("crt", "lws"):
        method, _ = make({"name": name, "h2t": {"ratio": 0.25}})
        method.bind_training_set(labels)
        branches = method.branches()
        assert (
            branches["balanced"].name == "class_aware" and branches["balanced"].num_samples == 200
        )
        assert branches["fusing"].name == "instance" and branches["fusing"].num_samples == 200
        assert torch.equal(branches["balanced"].labels, labels)
    method, _ = make({"name": "crt", "epoch_length": "dataset"})  # the option: one pass of N
    method.bind_training_set(labels)
    assert method.branches() == {"balanced": "class_aware"}
    method, _ = make({"name": "dr"})  # DR keeps N images per epoch (spec h2t §1.2)
    method.bind_training_set(labels)
    assert method.branches() == {"balanced": "class_balanced"}


def test_crt_reinitialises_the_head():
    config = build_config({"method": {"name": "crt"}})
    torch.manual_seed(0)
    model = build_model(config.model, 4)
    head_before = copy.deepcopy(model.head.fc.weight.data)
    build_method(config, model, COUNTS)
    assert not torch.equal(model.head.fc.weight, head_before)
    assert torch.count_nonzero(model.head.fc.bias) == 0


def test_lws_trains_only_the_scales():
    method, model = make({"name": "lws"})
    trained = [p for group in method.parameter_groups() for p in group["params"]]
    assert len(trained) == 1 and trained[0].shape == (4,)
    method.train_mode()
    method.loss(batches(h2t=False), context()).backward()
    assert model.head.fc.weight.grad is None and trained[0].grad is not None
    assert "scales" in method.modules_to_save()


def test_tau_norm_trains_nothing_and_rescales_weights():
    method, model = make({"name": "tau_norm", "tau": 1.0})
    assert method.parameter_groups() == []
    model.eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = model.features(images).mean(dim=(2, 3))
        weight = model.head.fc.weight
        expected = pooled @ (weight / weight.norm(dim=1, keepdim=True)).t()
        assert torch.allclose(method.predict(images), expected, atol=1e-5)
        untouched, same_model = make({"name": "tau_norm", "tau": 0.0})
        same_model.eval()
        assert torch.allclose(untouched.predict(images), pooled @ weight.t(), atol=1e-5)


def _ride_tau_norm(tau: float):
    """tau_norm on a 2-expert RIDE model with hand-set 2-class layers on
    feature channels 0 and 1."""
    config = build_config(
        {
            "method": {"name": "tau_norm", "tau": tau},
            "model": {
                "backbone": "ride_resnet32",
                "backbone_options": {"num_experts": 2},
                "head": "expert_linear",
            },
        }
    )
    model = build_model(config.model, 2)
    with torch.no_grad():
        for expert, weight in zip(
            model.head.experts, ([[3.0, 4.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, -3.0]]), strict=True
        ):
            expert.fc.weight.zero_()
            expert.fc.weight[:, :2] = torch.tensor(weight)
            expert.fc.bias.fill_(5.0)  # dropped by tau-normalisation
    return build_method(config, model, [5, 3]), model


def test_tau_norm_on_a_multi_expert_model_normalises_each_experts_classifier():
    maps = [
        torch.zeros(1, 64, 2, 2),
        torch.zeros(1, 64, 2, 2),
    ]  # pooled: expert 1 (1, 1), expert 2 (2, 1)
    maps[0][0, :2] = torch.tensor([1.0, 1.0]).view(2, 1, 1)
    maps[1][0, :2] = torch.tensor([2.0, 1.0]).view(2, 1, 1)
    method, model = _ride_tau_norm(1.0)
    assert method.parameter_groups() == []
    # expert 1: rows (3,4)/5, (0,2)/2 on (1,1) -> (1.4, 1.0); expert 2: (2,0)/2,
    # (0,-3)/3 on (2,1) -> (2, -1)
    assert torch.allclose(method.head_logits(maps), torch.tensor([[1.7, 0.0]]), atol=1e-6)
    untouched, _ = _ride_tau_norm(
        0.0
    )  # tau 0: the plain weights: (7, 2) and (4, -3), averaged, no bias
    assert torch.allclose(untouched.head_logits(maps), torch.tensor([[5.5, -0.5]]), atol=1e-6)
    images = torch.randn(3, 3, 32, 32)  # whole-model prediction goes the same way
    model.eval()
    with torch.no_grad():
        assert torch.allclose(method.predict(images), method.head_logits(model.features(images)))


def test_crt_draws_a_fresh_cosine_head_as_the_authors_normed_linear_does():
    """``uniform(−1, 1)`` per weight, then every class column scaled to unit L2 norm."""
    config = build_config(
        {"method": {"name": "crt"}, "model": {"backbone": "resnet32", "head": "cosine"}}
    )
    torch.manual_seed(0)
    model = build_model(config.model, len(COUNTS))
    torch.manual_seed(5)
    build_method(config, model, COUNTS)
    torch.manual_seed(5)
    draws = torch.empty(64, len(COUNTS)).uniform_(-1, 1)
    assert torch.allclose(model.head.weight, draws / draws.norm(dim=0, keepdim=True), atol=1e-6)
    assert model.head.weight.norm(dim=0).tolist() == pytest.approx([1.0] * len(COUNTS), abs=1e-6)


def test_tau_norm_of_one_linear_head_shared_by_several_maps_averages_their_logits():
    """Two maps through one 2-class layer, rows (3, 4) and (0, 2), τ = 1: pooled (1, 1) gives
    (7/5, 1) and pooled (2, 0) gives (6/5, 0); their mean is (1.3, 0.5); the bias is dropped."""
    method, model = make({"name": "tau_norm", "tau": 1.0})
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.weight[:2, :2] = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
        model.head.fc.bias.fill_(5.0)
    maps = [torch.zeros(1, 64, 2, 2), torch.zeros(1, 64, 2, 2)]
    maps[0][0, :2] = 1.0
    maps[1][0, 0] = 2.0
    logits = method.head_logits(maps)
    assert logits[0, :2].tolist() == pytest.approx([1.3, 0.5], abs=1e-6)


def test_tau_norm_refuses_heads_without_linear_weights_when_the_recipe_is_read():
    for head in ("cosine", "expert_cosine"):
        backbone = "ride_resnet32" if head.startswith("expert") else "resnet32"
        with pytest.raises(
            ConfigError, match=f"model.head must be linear or expert_linear \\(it is {head}\\)"
        ):
            build_config(
                {"method": {"name": "tau_norm"}, "model": {"backbone": backbone, "head": head}}
            )


def test_mislas_smoothing_options_reach_its_loss():
    """head 0.3 → tail 0.05 on the exp curve with power 2, counts 50, 20, 8, 3 (span 47):
    ε = 0.05 + 0.25·((n − 3)/47)²."""
    smoothing = {"head": 0.3, "tail": 0.05, "shape": "exp", "power": 2.0}
    method, _ = make({"name": "mislas", "label_smoothing": smoothing})
    expected = [0.3, 0.05 + 0.25 * (17 / 47) ** 2, 0.05 + 0.25 * (5 / 47) ** 2, 0.05]
    assert method.criterion.epsilon.tolist() == pytest.approx(expected, abs=1e-6)


def test_mislas_with_lws_trains_the_head_too():
    method, model = make({"name": "mislas_lws"})
    assert all(parameter.requires_grad for parameter in model.head.parameters())
    assert method.scales.scales.requires_grad
    assert not any(parameter.requires_grad for parameter in model.backbone.parameters())


def test_mislas_uses_label_aware_smoothing():
    method, _ = make({"name": "mislas", "label_smoothing": {"head": 0.4, "tail": 0.1}})
    assert type(method.criterion).__name__ == "LabelAwareSmoothing"
    assert (
        abs(method.criterion.epsilon[0].item() - 0.4) < 1e-6
        and abs(method.criterion.epsilon[-1].item() - 0.1) < 1e-6
    )
