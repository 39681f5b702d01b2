"""Backbones (feature map before pooling) and heads, built by name from a recipe."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tailfuse.config import ModelConfig
from tailfuse.errors import ConfigError, did_you_mean
from tailfuse.models.heads import CosineHead, Head, LinearHead
from tailfuse.models.resnet_cifar import CifarResNet, resnet32
from tailfuse.models.torchvision_backbones import PlacesResNet152Backbone, TorchvisionResNetBackbone

#: Backbone name -> factory(weights_path) returning a module with ``out_channels``.
BACKBONES: dict[str, Callable[[str | None], nn.Module]] = {
    "resnet32": lambda weights: resnet32(),
    "resnet50": lambda weights: TorchvisionResNetBackbone("resnet50", weights),
    "resnext50_32x4d": lambda weights: TorchvisionResNetBackbone("resnext50_32x4d", weights),
    "resnet152": lambda weights: TorchvisionResNetBackbone("resnet152", weights),
    "resnet152_places": lambda weights: PlacesResNet152Backbone(weights),
}

SMALL_IMAGE_BACKBONES = {"resnet32"}


class Classifier(nn.Module):
    """``head(backbone(x))``; ``features(x)`` gives the map before pooling (where H2T fuses)."""

    def __init__(self, backbone: nn.Module, head: Head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def build_model(config: ModelConfig, num_classes: int) -> Classifier:
    """Create the backbone and head a recipe names."""
    if config.backbone not in BACKBONES:
        raise ConfigError(
            f"unknown model.backbone '{config.backbone}'{did_you_mean(config.backbone, BACKBONES)}; "
            f"choose from {', '.join(sorted(BACKBONES))}"
        )
    if config.weights and config.backbone in SMALL_IMAGE_BACKBONES:
        raise ConfigError("model.weights is only supported for torchvision backbones")
    backbone = BACKBONES[config.backbone](config.weights)
    if config.head == "cosine":
        head: Head = CosineHead(backbone.out_channels, num_classes, config.cosine_scale)
    else:
        head = LinearHead(
            backbone.out_channels, num_classes, kaiming_init=config.backbone in SMALL_IMAGE_BACKBONES, bias=config.head_bias
        )
    return Classifier(backbone, head)


__all__ = [
    "BACKBONES",
    "Classifier",
    "CifarResNet",
    "CosineHead",
    "Head",
    "LinearHead",
    "build_model",
]
