"""Heads of multi-expert backbones (a list of feature maps in, logits out).

- :class:`ExpertHead`: one linear or cosine layer per expert; logits = mean of the experts'
  logits (spec h2t §3.2 RIDE ``Classifier``: GAP, ``Linear`` or ``NormedLinear·s`` per
  expert, averaged). :meth:`ExpertHead.expert_logits` gives each expert's logits (RIDE's
  and TADE's losses need them).
- :class:`BBNHead`: one linear layer over the concatenated pooled branch features
  (spec glt_ifl §4 "BBN"): ``W·[f_cb; f_rb]`` at test, ``W·2[α f_cb; (1−α) f_rb]`` in training.
- :class:`ResLTHead`: ResLT's ``ResClassifier`` (spec h2t §3.2): three BatchNorms
  (head / medium / tail branch) shared by the experts, GAP, one linear layer per expert,
  expert mean; :meth:`ResLTHead.branch_logits` gives ``[z_H, z_M, z_T]``, ``forward``
  their sum (what the authors' evaluation uses).
- :class:`ResLTChannelSplitHead`: ResLT's ImageNet ``ResClassifier`` (spec h2t §3.2), on
  experts ending in ResLT's 1×1 block: each expert's 3C channels split into three C-wide
  branches, one linear layer per expert, class weights divided by ‖w‖^γ at evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from tailfuse.models.heads import CosineHead, LinearHead


def _as_list(feature_maps) -> list[torch.Tensor]:
    if not isinstance(feature_maps, (list, tuple)):
        raise TypeError(
            "a multi-expert head needs a list of feature maps (a multi-expert backbone)"
        )
    return list(feature_maps)


class ExpertHead(nn.Module):
    """One classifier per expert (``kind``: linear or cosine with ``scale``); averages logits."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_experts: int,
        kind: str = "linear",
        scale: float = 30.0,
        kaiming_init: bool = True,
    ):
        super().__init__()
        if kind == "cosine":
            heads = [CosineHead(in_features, num_classes, scale) for _ in range(num_experts)]
        else:
            heads = [
                LinearHead(in_features, num_classes, kaiming_init=kaiming_init)
                for _ in range(num_experts)
            ]
        self.experts = nn.ModuleList(heads)

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.experts[0].pool(feature_map)

    def expert_logits(self, feature_maps) -> list[torch.Tensor]:
        """Each expert's logits from its own map."""
        maps = _as_list(feature_maps)
        if len(maps) != len(self.experts):
            raise ValueError(f"{len(maps)} feature maps for {len(self.experts)} expert classifiers")
        return [head(one) for head, one in zip(self.experts, maps, strict=True)]

    def forward(self, feature_maps) -> torch.Tensor:
        return torch.stack(self.expert_logits(feature_maps)).mean(0)


class BBNHead(nn.Module):
    """BBN's classifier: ``Linear(2·C, classes)`` on ``[pool(conventional); pool(rebalancing)]``."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(2 * in_features, num_classes, bias=bias)

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3)) if feature_map.dim() == 4 else feature_map

    def mixed_logits(
        self, conventional: torch.Tensor, rebalancing: torch.Tensor, alpha: float
    ) -> torch.Tensor:
        """Training logits ``W·2[α f_cb; (1−α) f_rb]`` (official BBN ``mixed_feature``)."""
        features = torch.cat(
            [alpha * self.pool(conventional), (1.0 - alpha) * self.pool(rebalancing)], dim=1
        )
        return self.fc(2.0 * features)

    def forward(self, feature_maps) -> torch.Tensor:
        conventional, rebalancing = _as_list(feature_maps)
        return self.fc(torch.cat([self.pool(conventional), self.pool(rebalancing)], dim=1))


class _BranchHead(nn.Module):
    """ResLT's heads: ``[z_H, z_M, z_T]`` from every expert's three branches, expert mean.

    Subclasses say how an expert's map becomes its three branches, stacked along the batch
    (:meth:`_branches`), and how its linear layer scores them (:meth:`_score`).
    """

    experts: nn.ModuleList

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3)) if feature_map.dim() == 4 else feature_map

    def _score(self, linear: nn.Linear, features: torch.Tensor) -> torch.Tensor:
        return linear(features)

    def branch_logits(self, feature_maps) -> list[torch.Tensor]:
        """``[z_H, z_M, z_T]``: each expert's linear layer on its three branches, expert mean."""
        maps = _as_list(feature_maps)
        if len(maps) != len(self.experts):
            raise ValueError(f"{len(maps)} feature maps for {len(self.experts)} expert classifiers")
        per_expert = [
            self._score(linear, self._branches(feature_map))
            for linear, feature_map in zip(self.experts, maps, strict=True)
        ]
        return list(torch.stack(per_expert).mean(0).chunk(3, dim=0))

    def forward(self, feature_maps) -> torch.Tensor:
        head, medium, tail = self.branch_logits(feature_maps)
        return head + medium + tail


class ResLTHead(_BranchHead):
    """ResLT's residual-branch classifier on expert maps (H2T ``ResClassifier``)."""

    def __init__(self, in_features: int, num_classes: int, num_experts: int):
        super().__init__()
        self.branch_norms = nn.ModuleList(nn.BatchNorm2d(in_features) for _ in range(3))
        self.experts = nn.ModuleList(
            nn.Linear(in_features, num_classes) for _ in range(num_experts)
        )
        for linear in self.experts:
            nn.init.kaiming_normal_(linear.weight)

    def _branches(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Each branch's BN on the expert's map, then GAP."""
        return self.pool(torch.cat([norm(feature_map) for norm in self.branch_norms], dim=0))


class ResLTChannelSplitHead(_BranchHead):
    """ResLT's ImageNet classifier (H2T ``ride_resnet.py`` ``ResClassifier``, spec h2t §3.2).

    Each expert's pooled 3C features are split into three C-wide chunks (head / medium /
    tail branch), one ``Linear(C, classes)`` per expert scores all three, the experts'
    logits are averaged. In training the linear layer is used as it is; in evaluation, as
    the authors' code, each class's weight row is divided by its norm to the power
    ``eval_weight_power`` (γ, the authors' ``ResLT.gamma`` 0.7) and the bias is left out.
    The authors' cosine variant (``use_norm``) cannot evaluate (its weight is transposed)
    and is not offered.
    """

    def __init__(
        self, in_features: int, num_classes: int, num_experts: int, eval_weight_power: float
    ):
        super().__init__()
        if in_features % 3:
            raise ValueError(f"{in_features} features do not split into three branches")
        self.experts = nn.ModuleList(
            nn.Linear(in_features // 3, num_classes) for _ in range(num_experts)
        )
        self.eval_weight_power = eval_weight_power

    def _branches(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The pooled 3C features split into three C-wide chunks."""
        return torch.cat(self.pool(feature_map).chunk(3, dim=1), dim=0)

    def _score(self, linear: nn.Linear, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            return linear(features)
        norms = linear.weight.norm(p=2, dim=1, keepdim=True)
        return features @ (linear.weight / norms.pow(self.eval_weight_power)).t()
