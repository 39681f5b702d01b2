"""FFN stage 2: one cosine classifier on two frozen backbones (Zhou et al., PR 2023; spec ffn §1.2).

The model (``init``) is the KPS stage-1 network: its backbone stays frozen and its cosine
head is the classifier being trained (so it starts equal to the KPS head). The CE
stage-1 backbone comes from ``init.auxiliary.ce``. Logits are
``λ·cos(f_KPS, W) + (1−λ)·cos(f_CE, W)``, i.e. the L2-normalised features fused with
weight λ and scored by the weight-normalised W; the loss is LDAM (s = 30, max_m 0.5) on
class-balanced batches.

The authors' code leaves the CE backbone's BatchNorm in train mode, in training and at
test time (spec ffn §1.2, §6.8, §8: about −25 points at small scale); eval-mode is the
default and ``ce_batchnorm: train`` reproduces the quirk: evaluation then runs in batches of
256 (the authors' test loader) in a seeded shuffled order (a class-sorted test list would
give label-correlated batch statistics), and the CE backbone's running statistics are put
back after every evaluation batch, so evaluating does not change the checkpointed model.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tailfuse.config import StrictModel
from tailfuse.data.randomness import derive_seed
from tailfuse.errors import ConfigError
from tailfuse.losses import advance_loss, build_loss
from tailfuse.methods.base import Batch, Method, StepContext, register_method
from tailfuse.models import BACKBONES, CosineHead

#: The authors' test loader batch (spec ffn §1.2), which train-mode BN statistics depend on.
AUTHORS_EVALUATION_BATCH = 256


class FfnOptions(StrictModel):
    """``method.name: ffn``; ``fusion_weight`` is λ, the weight of the KPS
    branch (w1 in the paper)."""

    name: Literal["ffn"] = "ffn"
    fusion_weight: float = Field(0.5, ge=0.0, le=1.0)
    loss: str = "ldam"
    loss_options: dict[str, float | int | str | None] = {"max_m": 0.5, "s": 30.0}
    sampler: str = "class_balanced"
    ce_batchnorm: Literal["eval", "train"] = "eval"
    second_backbone: str = "ce"


@register_method("ffn", FfnOptions)
class FeatureFusionNetwork(Method):
    """Train the shared cosine classifier on the λ-fusion of the KPS and CE features."""

    needs_trained_model = True

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        if not isinstance(model.head, CosineHead):
            raise ConfigError("ffn needs model.head=cosine (the KPS network's head)")
        self.second_backbone: nn.Module = BACKBONES[config.model.backbone](None)
        if options.second_backbone in self.auxiliary:  # absent when a saved FFN run is evaluated
            state = self.auxiliary[options.second_backbone]
            self.second_backbone.load_state_dict(
                {
                    key.removeprefix("backbone."): value
                    for key, value in state.items()
                    if key.startswith("backbone.")
                }
            )
        elif config.init is not None and options.second_backbone not in config.init.auxiliary:
            raise ConfigError(
                f"ffn needs init.auxiliary.{options.second_backbone}: the CE stage-1 run"
            )
        for parameter in [*model.backbone.parameters(), *self.second_backbone.parameters()]:
            parameter.requires_grad_(False)
        self.criterion = build_loss(options.loss, class_counts, **options.loss_options)

    def branches(self) -> dict[str, str]:
        return {"balanced": self.options.sampler}

    def parameter_groups(self):
        return [{"params": list(self.model.head.parameters())}]

    def train_mode(self) -> None:
        self.model.backbone.eval()
        self.second_backbone.train(self.options.ce_batchnorm == "train")
        self.model.head.train()

    def modules_to_save(self) -> dict[str, nn.Module]:
        return {"second_backbone": self.second_backbone}

    def fused_cosine(self, images: torch.Tensor) -> torch.Tensor:
        """``λ·cos(f_KPS, W) + (1−λ)·cos(f_CE, W)`` for a batch of images
        (raw cosines, no scale)."""
        head: CosineHead = self.model.head
        weight = self.options.fusion_weight
        with torch.no_grad():
            kps_features = head.pool(self.model.backbone(images))
            ce_features = head.pool(self.second_backbone(images))
        return weight * head.cosine(kps_features) + (1.0 - weight) * head.cosine(ce_features)

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        batch = batches["balanced"]
        advance_loss(
            self.criterion, context.epoch, context.randomness.stream("loss"), batch.global_rows
        )
        return self.criterion(self.fused_cosine(batch.images), batch.labels)

    @property
    def prediction_uses_batch_statistics(self) -> bool:
        return self.options.ce_batchnorm == "train"

    def evaluation_batching(
        self, num_samples: int, batch_size: int
    ) -> tuple[int, torch.Tensor | None]:
        """With ``ce_batchnorm: train``: batches of 256, one seeded shuffled order."""
        if self.options.ce_batchnorm != "train":
            return batch_size, None
        seed = derive_seed(self.config.train.seed, 0, "ffn:evaluation-order")
        generator = torch.Generator().manual_seed(seed)
        return AUTHORS_EVALUATION_BATCH, torch.randperm(num_samples, generator=generator)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        if self.options.ce_batchnorm != "train":
            self.second_backbone.eval()
            return self.fused_cosine(images)
        self.second_backbone.train()
        saved = [buffer.clone() for buffer in self.second_backbone.buffers()]
        try:
            return self.fused_cosine(images)
        finally:  # train-mode BN updated its running statistics: put them back
            for buffer, value in zip(self.second_backbone.buffers(), saved, strict=True):
                buffer.copy_(value)
