"""BBN's two-branch backbones (Zhou et al., CVPR 2020; spec glt_ifl §4 "BBN").

The early stages are shared; the last block exists twice: the *conventional* branch
(trained on instance-sampled images) and the *re-balancing* branch (trained on
reverse-sampled images). ``forward(x)`` returns both maps ``[conventional, rebalancing]``
of the same images (evaluation: the head concatenates them); ``forward(x, branch=...)``
runs only one branch, so each branch's BatchNorm sees only its own sampler's images.

- :class:`BBNCifarResNet`: official ``bbn_res32_cifar``: ResNet-32 with layer3 cut to 4
  blocks, then one BasicBlock(64, 64) per branch.
- :class:`BBNTorchvisionResNet`: ResNet-50 whose layer4 keeps 2 shared blocks, then one
  Bottleneck(2048→512→2048) per branch (the GLT code uses ResNet-50, not ResNeXt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from tailfuse.models.resnet_cifar import BasicBlock
from tailfuse.models.torchvision_backbones import load_backbone_weights, resnet_trunk

BRANCHES = ("conventional", "rebalancing")


class _TwoBranch(nn.Module):
    conventional: nn.Module
    rebalancing: nn.Module
    num_experts = 2

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, branch: str | None = None
    ) -> list[torch.Tensor] | torch.Tensor:
        """Both branch maps of ``x``, or only ``branch``'s map (a tensor)."""
        shared = self.shared(x)
        if branch is None:
            return [self.conventional(shared), self.rebalancing(shared)]
        if branch not in BRANCHES:
            raise ValueError(f"unknown BBN branch '{branch}' ({', '.join(BRANCHES)})")
        return getattr(self, branch)(shared)


class BBNCifarResNet(_TwoBranch):
    """BBN ResNet-32: 5 + 5 + 4 shared blocks, then one BasicBlock per branch."""

    def __init__(self, blocks_per_stage: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        stage_blocks = (blocks_per_stage, blocks_per_stage, blocks_per_stage - 1)
        for stage_index, (width, blocks) in enumerate(zip((16, 32, 64), stage_blocks, strict=True)):
            layers = []
            for block_index in range(blocks):
                layers.append(
                    BasicBlock(in_channels, width, 2 if stage_index > 0 and block_index == 0 else 1)
                )
                in_channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.conventional = BasicBlock(64, 64)
        self.rebalancing = BasicBlock(64, 64)
        self.out_channels = 64
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer3(self.layer2(self.layer1(x)))


class BBNTorchvisionResNet(_TwoBranch):
    """BBN ResNet-50: torchvision trunk, layer4 = 2 shared blocks, one Bottleneck per branch."""

    def __init__(self, architecture: str = "resnet50", weights_path: str | None = None):
        super().__init__()
        network = getattr(torchvision.models, architecture)(weights=None)
        if weights_path:
            load_backbone_weights(network, weights_path)
        self.trunk = resnet_trunk(network, network.layer4[:-1])
        channels = network.fc.in_features
        self.conventional = network.layer4[-1]
        self.rebalancing = Bottleneck(channels, channels // Bottleneck.expansion)
        for module in self.rebalancing.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.out_channels = channels

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)
