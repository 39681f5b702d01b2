"""Classifier heads: global average pooling, then a linear or a cosine (normalised) layer.

A head accepts one feature map (B, C, H, W), or a list of maps (one per expert of a
multi-expert backbone), whose logits are averaged.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.numerics import at_least_float32


class Head(nn.Module, abc.ABC):
    """Pool the feature map(s) and map the pooled features to logits."""

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3)) if feature_map.dim() == 4 else feature_map

    @abc.abstractmethod
    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features (B, C)."""

    def forward(self, feature_map: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(feature_map, (list, tuple)):
            return torch.stack([self.forward(one) for one in feature_map]).mean(0)
        return self.logits_from_features(self.pool(feature_map))


class LinearHead(Head):
    """GAP + Linear(C → classes); Kaiming-normal weights for the CIFAR models (spec h2t §3.2).

    ``bias=False``: the GLT code's classifier (spec glt_ifl §4).
    """

    def __init__(
        self, in_features: int, num_classes: int, kaiming_init: bool = False, bias: bool = True
    ):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        if kaiming_init:
            nn.init.kaiming_normal_(self.fc.weight)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class CosineHead(Head):
    """GAP + ``s · cos(f, w_j)``: normalised features times normalised class weights, no bias.

    The cosines are computed in float32 even under bf16/fp16 autocast: in bf16 they are off
    by up to ~1.5e-3, about 0.05 logits at s = 30.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, num_classes))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        self.scale = scale

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each feature with each class weight, in [−1, 1] (float32, or
        float64 in a float64 run)."""
        with torch.autocast(features.device.type, enabled=False):
            return F.normalize(at_least_float32(features), dim=1) @ F.normalize(
                at_least_float32(self.weight), dim=0
            )

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(features)
