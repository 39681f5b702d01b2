"""FFN stage 2: fused logits, frozen backbones, classifier initialised from the KPS head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tailfuse  # noqa: F401
from tailfuse.config import build_config
from tailfuse.data.randomness import EpochRandomness
from tailfuse.methods import Batch, StepContext, build_method
from tailfuse.models import build_model

COUNTS = [40, 10, 3]


def make(fusion_weight=0.3, ce_batchnorm="eval"):
    config = build_config(
        {
            "model": {"head": "cosine", "cosine_scale": 1.0},
            "method": {"name": "ffn", "fusion_weight": fusion_weight, "ce_batchnorm": ce_batchnorm},
        }
    )
    torch.manual_seed(0)
    kps_model = build_model(config.model, 3)
    ce_model = build_model(build_config({}).model, 3)
    head_before = kps_model.head.weight.detach().clone()
    method = build_method(config, kps_model, COUNTS, auxiliary={"ce": ce_model.state_dict()})
    return method, kps_model, ce_model, head_before


def test_classifier_starts_as_the_kps_head_and_ce_backbone_is_loaded():
    method, kps_model, ce_model, head_before = make()
    assert torch.equal(kps_model.head.weight, head_before)
    for (name, value), (_, loaded) in zip(
        ce_model.backbone.state_dict().items(),
        method.second_backbone.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(value, loaded), name


def test_fused_logits_equal_fused_normalised_features_times_normalised_w():
    method, kps_model, ce_model, _ = make(fusion_weight=0.3)
    kps_model.eval()
    method.second_backbone.eval()
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        f_kps = kps_model.backbone(images).mean(dim=(2, 3))
        f_ce = ce_model.backbone.eval()(images).mean(dim=(2, 3))
        fused_feature = 0.3 * F.normalize(f_kps, dim=1) + 0.7 * F.normalize(f_ce, dim=1)
        expected = fused_feature @ F.normalize(kps_model.head.weight, dim=0)
        assert torch.allclose(method.predict(images), expected, atol=1e-5)


def test_only_the_shared_classifier_learns():
    method, kps_model, _, _ = make()
    method.train_mode()
    assert not kps_model.backbone.training and not method.second_backbone.training
    batch = {"balanced": Batch(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))}
    loss = method.loss(batch, StepContext(0, 1, EpochRandomness(0, 0)))
    loss.backward()
    assert kps_model.head.weight.grad is not None
    assert all(p.grad is None for p in kps_model.backbone.parameters())
    assert all(p.grad is None for p in method.second_backbone.parameters())
    trained = [p for group in method.parameter_groups() for p in group["params"]]
    assert len(trained) == 1 and trained[0] is kps_model.head.weight


def test_the_authors_batchnorm_quirk_is_available():
    method, *_ = make(ce_batchnorm="train")
    method.train_mode()
    assert method.second_backbone.training
    method.predict(torch.randn(2, 3, 32, 32))
    assert method.second_backbone.training  # also at test time, as the code


def test_the_loss_options_reach_the_ldam_loss():
    """LDAM on counts 40, 10, 3 with max_m 0.3 and s 10: the rarest class gets the whole 0.3."""
    config = build_config(
        {
            "model": {"head": "cosine", "cosine_scale": 1.0},
            "method": {"name": "ffn", "loss_options": {"max_m": 0.3, "s": 10.0}},
        }
    )
    torch.manual_seed(0)
    kps_model, ce_model = build_model(config.model, 3), build_model(build_config({}).model, 3)
    method = build_method(config, kps_model, COUNTS, auxiliary={"ce": ce_model.state_dict()})
    assert (
        method.criterion.margins.tolist()[-1] == pytest.approx(0.3) and method.criterion.s == 10.0
    )


def test_the_loss_gets_the_steps_random_stream_and_epoch():
    """A loss with noise (GCL) draws from the step's seeded stream, not the global generator:
    the same step gives the same loss whatever the global state (exact resume)."""
    config = build_config(
        {
            "model": {"head": "cosine", "cosine_scale": 1.0},
            "method": {"name": "ffn", "loss": "gcl", "loss_options": {"drw_epoch": 1}},
        }
    )
    torch.manual_seed(0)
    kps_model, ce_model = build_model(config.model, 3), build_model(build_config({}).model, 3)
    method = build_method(config, kps_model, COUNTS, auxiliary={"ce": ce_model.state_dict()})
    method.train_mode()
    batch = {"balanced": Batch(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2] * 2))}
    losses = []
    for global_seed, epoch in [(1, 0), (2, 0), (3, 1)]:
        torch.manual_seed(global_seed)
        randomness = EpochRandomness(0, epoch, torch.device("cpu"))
        context = StepContext(epoch=epoch, total_epochs=2, randomness=randomness)
        losses.append(float(method.loss(batch, context).detach()))
        assert method.criterion.active() == (epoch >= 1)  # DRW from epoch 1
    assert losses[0] == losses[1] and losses[2] != losses[0]
