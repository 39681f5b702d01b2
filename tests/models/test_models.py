"""Backbones return pre-pooling feature maps; heads pool and classify."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailfuse.config import ModelConfig
from tailfuse.errors import CheckpointError, ConfigError
from tailfuse.models import CosineHead, LinearHead, build_model
from tailfuse.models.resnet_cifar import ZeroPadShortcut, resnet32


def test_resnet32_shape_and_size():
    backbone = resnet32()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)
    parameters = sum(p.numel() for p in backbone.parameters())
    assert 460_000 < parameters < 470_000  # ResNet-32 has 0.46M parameters (He et al. 2016)
    convolutions = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convolutions) == 31  # 1 stem + 15 blocks x 2, plus the linear layer = 32


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(1, 16, 8, 8)
    out = ZeroPadShortcut(16)(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_classifier_equals_head_of_features():
    model = build_model(ModelConfig(), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    features = model.features(x)
    assert torch.allclose(model(x), model.head(features))
    assert torch.allclose(model(x), model.head.fc(features.mean(dim=(2, 3))), atol=1e-6)


def test_cosine_head_gives_scaled_cosine():
    head = CosineHead(4, 3, scale=30.0)
    feature_map = torch.randn(2, 4, 2, 2)
    pooled = feature_map.mean(dim=(2, 3))
    expected = 30.0 * F.cosine_similarity(pooled.unsqueeze(2), head.weight.unsqueeze(0), dim=1)
    assert torch.allclose(head(feature_map), expected, atol=1e-5)
    assert head(feature_map).abs().max() <= 30.0 + 1e-4


def test_head_averages_logits_over_experts():
    head = LinearHead(4, 3)
    maps = [torch.randn(2, 4, 2, 2) for _ in range(3)]
    assert torch.allclose(head(maps), torch.stack([head(m) for m in maps]).mean(0))


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_torchvision_backbones_return_layer4_maps(name):
    model = build_model(ModelConfig(backbone=name), 5).eval()
    with torch.no_grad():
        features = model.features(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 2048, 2, 2)
    assert model.head.fc.in_features == 2048


def test_torchvision_weights_load_from_a_local_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    model = build_model(ModelConfig(backbone="resnet50", weights=str(tmp_path / "resnet50.pth")), 5)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model(ModelConfig(backbone="resnet50", weights=str(tmp_path / "missing.pth")), 5)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model.backbone 'resnet9000'"):
        build_model(ModelConfig(backbone="resnet9000"), 10)
