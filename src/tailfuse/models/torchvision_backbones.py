"""torchvision ResNet-50 / ResNeXt-50 (32×4d) / ResNet-152 as feature-map backbones.

The stem and the four stages of torchvision's models, without average pooling and the
fully connected layer, so they return the layer4 map (B, 2048, 7, 7) at 224×224.
Pretrained weights come from a local file (``model.weights``), never from the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from tailfuse.errors import CheckpointError


class TorchvisionResNetBackbone(nn.Module):
    """A torchvision ResNet trunk that stops before global pooling."""

    def __init__(self, architecture: str, weights_path: str | None = None):
        super().__init__()
        network = getattr(torchvision.models, architecture)(weights=None)
        if weights_path:
            load_backbone_weights(network, weights_path)
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
        self.layer1, self.layer2 = network.layer1, network.layer2
        self.layer3, self.layer4 = network.layer3, network.layer4
        self.out_channels = network.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_backbone_weights(
    network: nn.Module, weights_path: str, drop_prefixes: tuple[str, ...] = ("fc.",)
) -> None:
    """Load a torchvision state dict from a local file; keys under ``drop_prefixes`` (the
    classifier) are ignored."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"backbone weights file {path} does not exist (model.weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"cannot read backbone weights {path}: {error}") from None
    state = {key: value for key, value in state.items() if not key.startswith(drop_prefixes)}
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith(drop_prefixes)]
    if missing or unexpected:
        raise CheckpointError(
            f"backbone weights {path} do not fit: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def resnet_trunk(network: torchvision.models.ResNet, layer4: nn.Module) -> nn.Sequential:
    """A torchvision ResNet's stem and layer1-3, then ``layer4`` (the whole stage or some of
    its blocks): the trunk the Places-LT and BBN backbones put their own blocks on."""
    return nn.Sequential(
        network.conv1,
        network.bn1,
        network.relu,
        network.maxpool,
        network.layer1,
        network.layer2,
        network.layer3,
        layer4,
    )


def freeze(module: nn.Module) -> None:
    """No gradients for ``module``'s parameters (a trunk that never trains)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


class PlacesResNet152Backbone(nn.Module):
    """Places-LT model of H2T/OLTR (spec h2t §3.2): frozen ImageNet ResNet-152 + one trained block.

    The trunk is torchvision's ResNet-152 with layer4 cut to its first 2 blocks (layers
    [3, 8, 36, 2]), loaded from a local ImageNet weights file (``resnet152-b121ed2d.pth``:
    ``fc.*`` and ``layer4.2.*`` keys dropped) and frozen: no gradients, and eval mode
    whatever mode the model is put in. On top, one randomly initialised Bottleneck
    (2048→512→2048, stride 1, no downsample) is trained: "just train the last block".
    """

    def __init__(self, weights_path: str | None):
        super().__init__()
        from torchvision.models.resnet import Bottleneck

        network = torchvision.models.resnet152(weights=None)
        network.layer4 = network.layer4[:2]
        if weights_path:  # build_model refuses a training run without them
            load_backbone_weights(network, weights_path, drop_prefixes=("fc.", "layer4.2."))
        self.trunk = resnet_trunk(network, network.layer4)
        freeze(self.trunk)
        self.block = Bottleneck(2048, 512)
        self.out_channels = 2048
        self.trunk.eval()

    def train(self, mode: bool = True) -> PlacesResNet152Backbone:
        super().train(mode)
        self.trunk.eval()  # frozen: BatchNorm keeps its ImageNet statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.trunk(x)
        return self.block(features)
