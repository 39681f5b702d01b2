"""RIDE multi-expert backbones (Wang et al., ICLR 2021): shared early stages, one copy of the
later stages per expert; ``forward`` returns one feature map per expert (before pooling).

- :class:`RideCifarResNet` (spec h2t §3.2 "RIDE CIFAR"): ResNet-32 stem and layer1 shared,
  each expert has its own layer2 and layer3 (32/64 channels, or 24/48 with
  ``reduce_dimension``, official RIDE's CIFAR setting; the H2T code keeps 32/64).
- :class:`RideTorchvisionResNet` (spec h2t §3.2 "RIDE/ResLT ImageNet", glt_ifl §4 "RIDE"):
  torchvision ResNet-50 / ResNeXt-50 stem, layer1 and layer2 shared, each expert its own
  layer3 and layer4 (planes 256/512, or 192/384 with ``reduce_dimension``: 1536-d experts).
  ``reslt_block`` ends each expert in ResLT's ImageNet block (:class:`ResltExpertBlock`).
- :class:`PlacesExpertBackbone` (spec h2t §3.2 "Places-LT model"): a frozen ResNet-152 trunk
  whose layer4 keeps 2 blocks (ImageNet weights from ``model.weights``), then one trainable
  Bottleneck (2048→512→2048) per expert.

The expert router and distillation of official RIDE are not built (spec glt_ifl §4: the
GLT code has neither either).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from tailfuse.models.resnet_cifar import BasicBlock
from tailfuse.models.torchvision_backbones import freeze, load_backbone_weights, resnet_trunk


def _cifar_stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, width, stride)]
    layers += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class RideCifarResNet(nn.Module):
    """RIDE ResNet-32: shared stem + layer1, ``num_experts`` copies of layer2 + layer3."""

    def __init__(
        self, num_experts: int = 3, reduce_dimension: bool = False, blocks_per_stage: int = 5
    ):
        super().__init__()
        widths = (24, 48) if reduce_dimension else (32, 64)
        self.num_experts = num_experts
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _cifar_stage(16, 16, blocks_per_stage, 1)
        self.experts = nn.ModuleList(
            nn.Sequential(
                _cifar_stage(16, widths[0], blocks_per_stage, 2),
                _cifar_stage(widths[0], widths[1], blocks_per_stage, 2),
            )
            for _ in range(num_experts)
        )
        self.out_channels = widths[1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        shared = self.layer1(F.relu(self.bn1(self.conv1(x)), inplace=True))
        return [expert(shared) for expert in self.experts]


def _torchvision_expert_stage(network, block, planes: int, blocks: int) -> nn.Sequential:
    """A fresh stage built with torchvision's own ``_make_layer`` (same groups / width)."""
    stage = network._make_layer(block, planes, blocks, stride=2)
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return stage


class ResltExpertBlock(nn.Module):
    """ResLT's per-expert ImageNet block and the global average pool (spec h2t §3.2).

    A 1×1 convolution C → 3C (no bias), BatchNorm and ReLU, whose 3C channels the head
    splits into the head / medium / tail branches (:class:`~tailfuse.models.expert_heads.
    ResLTChannelSplitHead`). The authors' ``ride_resnet.py`` applies it before the pool in
    training and after the pool in evaluation, a train/test mismatch (spec h2t §3.2,
    §6.1.16): ``pool_first_in_eval`` (default, the code) keeps it; False applies the block
    before the pool in both modes. The output is a 1×1 map (the authors' AvgPool2d(7) on
    the 7×7 map of a 224 image; here the mean over the whole map, the same there).
    """

    def __init__(self, channels: int, pool_first_in_eval: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, 3 * channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(3 * channels)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.pool_first_in_eval = pool_first_in_eval

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.training or not self.pool_first_in_eval:
            block = F.relu(self.norm(self.conv(feature_map)))
            return block.mean(dim=(2, 3), keepdim=True)
        pooled = feature_map.mean(dim=(2, 3), keepdim=True)
        return F.relu(self.norm(self.conv(pooled)))


class RideTorchvisionResNet(nn.Module):
    """RIDE ResNet-50 / ResNeXt-50: shared stem, layer1, layer2; per-expert layer3 and layer4.

    With ``reslt_block`` each expert ends in :class:`ResltExpertBlock` (ResLT on ImageNet:
    the experts return 1×1 maps of 3 × 2048 channels, for ``model.head: reslt_channel_split``).
    """

    def __init__(
        self,
        architecture: str,
        num_experts: int = 3,
        reduce_dimension: bool = False,
        weights_path: str | None = None,
        reslt_block: bool = False,
        reslt_pool_first_in_eval: bool = True,
    ):
        super().__init__()
        network = getattr(torchvision.models, architecture)(weights=None)
        if weights_path:
            load_backbone_weights(network, weights_path)
        self.num_experts = num_experts
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
        self.layer1, self.layer2 = network.layer1, network.layer2
        planes = (192, 384) if reduce_dimension else (256, 512)
        block_counts = (len(network.layer3), len(network.layer4))
        layer2_channels = self.layer2[-1].conv3.out_channels
        experts = []
        for _ in range(num_experts):
            network.inplanes = layer2_channels
            layer3 = _torchvision_expert_stage(network, Bottleneck, planes[0], block_counts[0])
            layer4 = _torchvision_expert_stage(network, Bottleneck, planes[1], block_counts[1])
            stages = [layer3, layer4]
            if reslt_block:
                expert_channels = planes[1] * Bottleneck.expansion
                stages.append(ResltExpertBlock(expert_channels, reslt_pool_first_in_eval))
            experts.append(nn.Sequential(*stages))
        self.experts = nn.ModuleList(experts)
        self.reslt_block = reslt_block
        self.out_channels = planes[1] * Bottleneck.expansion * (3 if reslt_block else 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        shared = self.layer2(self.layer1(self.stem(x)))
        return [expert(shared) for expert in self.experts]


class PlacesExpertBackbone(nn.Module):
    """Frozen ResNet-152 trunk (layer4 cut to 2 blocks) + one trainable Bottleneck per expert.

    The trunk never trains and always runs in eval mode under no_grad (spec h2t §3.2: "just
    train the last block", after OLTR); pass its ImageNet weights in ``model.weights``.
    """

    def __init__(self, num_experts: int = 3, weights_path: str | None = None):
        super().__init__()
        network = torchvision.models.resnet152(weights=None)
        if weights_path:
            load_backbone_weights(network, weights_path)
        network.layer4 = network.layer4[:2]
        self.trunk = resnet_trunk(network, network.layer4)
        freeze(self.trunk)
        self.num_experts = num_experts
        self.experts = nn.ModuleList(Bottleneck(2048, 512) for _ in range(num_experts))
        for module in self.experts.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.out_channels = 2048

    def train(self, mode: bool = True) -> PlacesExpertBackbone:
        super().train(mode)
        self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            shared = self.trunk(x)
        return [expert(shared) for expert in self.experts]
