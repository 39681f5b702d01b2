"""BBN: bilateral-branch network with cumulative learning (Zhou et al., CVPR 2020).

Spec glt_ifl §4 "BBN" (and the official BBN code for CIFAR). Each step draws an
instance-sampled batch (conventional branch) and a reverse-sampled batch (class
probability ∝ 1/n_c; re-balancing branch), each of the full batch size. With
``α = 1 − (t/T)²`` the head sees ``W·2[α f_cb(x_1); (1−α) f_rb(x_2)]`` and the loss is
``α·CE(·, y_1) + (1−α)·CE(·, y_2)``; at test ``W·[f_cb(x); f_rb(x)]``.

``t``: official BBN uses the 1-based epoch e and ``t = e − 1``, i.e. the 0-based epoch
(α = 1 in the first epoch; ``alpha_epoch: zero_based``, the default). The GLT code feeds
its 0-based epoch into the same formula, so ``t`` is one less (α = 1 − (1/T)² in the first
epoch; ``alpha_epoch: glt``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from tailfuse.config import StrictModel
from tailfuse.errors import ConfigError
from tailfuse.methods.base import Batch, Method, StepContext, register_method


class BbnOptions(StrictModel):
    """Options of ``method.name: bbn``: the two samplers and the α epoch convention."""

    name: Literal["bbn"] = "bbn"
    conventional_sampler: str = "instance"
    rebalancing_sampler: str = "reverse"
    alpha_epoch: Literal["zero_based", "glt"] = "zero_based"


def cumulative_alpha(epoch: int, total_epochs: int, convention: str = "zero_based") -> float:
    """BBN's adaptor ``α = 1 − (t/T)²``, 0-based ``epoch``: ``t = epoch``
    (``glt``: ``epoch − 1``)."""
    t = epoch if convention == "zero_based" else epoch - 1
    return 1.0 - (t / total_epochs) ** 2


@register_method("bbn", BbnOptions)
class BilateralBranch(Method):
    """Cumulative learning over BBN's conventional and re-balancing branches."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        if not hasattr(model.head, "mixed_logits"):
            raise ConfigError(
                "method bbn needs a BBN model: model.backbone "
                "bbn_resnet32/bbn_resnet50, model.head bbn"
            )

    def branches(self) -> dict[str, str]:
        return {
            "conventional": self.options.conventional_sampler,
            "rebalancing": self.options.rebalancing_sampler,
        }

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        conventional, rebalancing = batches["conventional"], batches["rebalancing"]
        alpha = cumulative_alpha(context.epoch, context.total_epochs, self.options.alpha_epoch)
        backbone = self.model.backbone
        logits = self.model.head.mixed_logits(
            backbone(conventional.images, branch="conventional"),
            backbone(rebalancing.images, branch="rebalancing"),
            alpha,
        )
        logits = logits.float()
        return alpha * F.cross_entropy(logits, conventional.labels) + (
            1.0 - alpha
        ) * F.cross_entropy(logits, rebalancing.labels)
