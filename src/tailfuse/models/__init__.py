"""Backbones (feature map before pooling) and heads, built by name from a recipe."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tailfuse.config import ModelConfig
from tailfuse.errors import ConfigError, did_you_mean
from tailfuse.models.bbn import BBNCifarResNet, BBNTorchvisionResNet
from tailfuse.models.expert_heads import (
    BBNHead,
    ExpertHead,
    ResLTChannelSplitHead,
    ResLTHead,
)
from tailfuse.models.heads import CosineHead, Head, LinearHead
from tailfuse.models.resnet_cifar import CifarResNet, resnet32
from tailfuse.models.ride import PlacesExpertBackbone, RideCifarResNet, RideTorchvisionResNet
from tailfuse.models.torchvision_backbones import PlacesResNet152Backbone, TorchvisionResNetBackbone

#: Backbone name -> factory(weights_path, **backbone_options) returning a module with
#: ``out_channels`` (multi-expert backbones also ``num_experts``, and return a list of maps).
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet32": lambda weights: resnet32(),
    "resnet50": lambda weights: TorchvisionResNetBackbone("resnet50", weights),
    "resnext50_32x4d": lambda weights: TorchvisionResNetBackbone("resnext50_32x4d", weights),
    "resnet152": lambda weights: TorchvisionResNetBackbone("resnet152", weights),
    "resnet152_places": lambda weights: PlacesResNet152Backbone(weights),
    "ride_resnet32": lambda weights, **options: RideCifarResNet(**options),
    "ride_resnet50": lambda weights, **options: RideTorchvisionResNet(
        "resnet50", weights_path=weights, **options
    ),
    "ride_resnext50_32x4d": lambda weights, **options: RideTorchvisionResNet(
        "resnext50_32x4d", weights_path=weights, **options
    ),
    "ride_places_resnet152": lambda weights, **options: PlacesExpertBackbone(
        weights_path=weights, **options
    ),
    "bbn_resnet32": lambda weights: BBNCifarResNet(),
    "bbn_resnet50": lambda weights: BBNTorchvisionResNet("resnet50", weights),
}

SMALL_IMAGE_BACKBONES = {"resnet32", "ride_resnet32", "bbn_resnet32"}
#: Backbones whose ImageNet trunk never trains (Places-LT): without model.weights, a random one.
FROZEN_TRUNK_BACKBONES = {"resnet152_places", "ride_places_resnet152"}
MULTI_EXPERT_HEADS = {"expert_linear", "expert_cosine", "bbn", "reslt", "reslt_channel_split"}


class Classifier(nn.Module):
    """``head(backbone(x))``; ``features(x)`` gives the map before pooling (where H2T fuses)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def check_backbone(config: ModelConfig, pretrained: bool = True) -> None:
    """Raise a ConfigError when ``model.backbone`` names no backbone (with a suggestion),
    ``model.weights`` is given for one of the CIFAR backbones, which have none, or (with
    ``pretrained``) a frozen-trunk backbone has no ``model.weights`` to freeze."""
    if config.backbone not in BACKBONES:
        raise ConfigError(
            "unknown model.backbone "
            f"'{config.backbone}'{did_you_mean(config.backbone, BACKBONES)}; "
            f"choose from {', '.join(sorted(BACKBONES))}"
        )
    if config.weights and config.backbone in SMALL_IMAGE_BACKBONES:
        raise ConfigError("model.weights is only supported for torchvision backbones")
    if pretrained and not config.weights and config.backbone in FROZEN_TRUNK_BACKBONES:
        raise ConfigError(
            f"model.backbone={config.backbone} trains only its last block(s) on a frozen "
            "ImageNet ResNet-152 and needs model.weights: torchvision's ImageNet ResNet-152 "
            "state dict (resnet152-b121ed2d.pth from download.pytorch.org/models)"
        )


def build_model(config: ModelConfig, num_classes: int, pretrained: bool = True) -> Classifier:
    """Create the backbone and head a recipe names. ``pretrained=False`` builds the
    architecture without reading ``model.weights``: for weights that come from a checkpoint."""
    check_backbone(config, pretrained)
    weights = config.weights if pretrained else None
    try:
        backbone = BACKBONES[config.backbone](weights, **config.backbone_options)
    except TypeError as error:
        raise ConfigError(
            f"model.backbone_options {sorted(config.backbone_options)} do not fit "
            f"'{config.backbone}': {error}"
        ) from None
    num_experts = getattr(backbone, "num_experts", None)
    if (num_experts is None) != (config.head not in MULTI_EXPERT_HEADS):
        kind = "a single-map" if num_experts is None else "a multi-expert"
        raise ConfigError(
            f"model.head '{config.head}' does not fit {kind} backbone '{config.backbone}'"
        )
    if config.head == "bbn" and num_experts != 2:
        raise ConfigError("model.head 'bbn' needs a BBN backbone (bbn_resnet32, bbn_resnet50)")
    reslt_block = getattr(backbone, "reslt_block", False)
    if reslt_block != (config.head == "reslt_channel_split"):
        raise ConfigError(
            "model.head 'reslt_channel_split' goes with model.backbone_options.reslt_block: "
            "true (ResLT's ImageNet block on ride_resnet50 / ride_resnext50_32x4d), and only "
            f"with it; got head '{config.head}' with reslt_block {str(reslt_block).lower()}"
        )
    small = config.backbone in SMALL_IMAGE_BACKBONES
    if config.head in ("expert_linear", "expert_cosine"):
        kind = config.head.removeprefix("expert_")
        head: nn.Module = ExpertHead(
            backbone.out_channels, num_classes, num_experts, kind, config.cosine_scale, small
        )
    elif config.head == "bbn":
        head = BBNHead(backbone.out_channels, num_classes, bias=config.head_bias)
    elif config.head == "reslt":
        head = ResLTHead(backbone.out_channels, num_classes, num_experts)
    elif config.head == "reslt_channel_split":
        head = ResLTChannelSplitHead(
            backbone.out_channels, num_classes, num_experts, config.reslt_eval_weight_power
        )
    elif config.head == "cosine":
        head = CosineHead(backbone.out_channels, num_classes, config.cosine_scale)
    else:
        head = LinearHead(
            backbone.out_channels,
            num_classes,
            kaiming_init=config.backbone in SMALL_IMAGE_BACKBONES,
            bias=config.head_bias,
        )
    return Classifier(backbone, head)


__all__ = [
    "BACKBONES",
    "BBNHead",
    "ExpertHead",
    "ResLTChannelSplitHead",
    "ResLTHead",
    "Classifier",
    "CifarResNet",
    "CosineHead",
    "Head",
    "LinearHead",
    "build_model",
    "check_backbone",
]
