"""Decoupled stage 2: re-balance the classifier on a frozen backbone (Kang et al. 2020).

Every method here starts from a stage-1 model (``init``), freezes the backbone (no
gradients; ``shift_bn`` keeps it in train mode so BatchNorm normalises with batch
statistics and updates its running statistics, as MiSLAS and H2T do), samples a
re-balanced branch, and trains only what it names. Each takes the H2T plug-in
(``method.h2t.ratio > 0``): a second, instance-sampled branch whose feature maps are
fused into the balanced branch's before the head (spec h2t §1.5).

- ``dr``: fine-tune the stage-1 head with class-balanced CE (+ shift-BN): the "DR" rows.
- ``crt``: re-initialise the head and train it with class-aware sampling (cRT).
- ``lws``: keep the head, learn one scale per class on its logits (LWS), class-aware sampling.
- ``mislas``: fine-tune the head with label-aware smoothing and shift-BN (MiSLAS).
- ``tau_norm``: no training; logits from ``w_j/‖w_j‖^τ`` without bias (τ-normalisation).

``epoch_length``: ``dataset`` (N images per epoch) or ``max_class``
(``min(max_c n_c · C, 4·N)``, the GLT authors' ClassAwareSampler; default of cRT and LWS).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tailfuse.config import StrictModel
from tailfuse.data.samplers import build_sampler, class_aware_epoch_length
from tailfuse.losses import advance_loss, build_loss
from tailfuse.methods.base import Batch, Method, StepContext, register_method
from tailfuse.methods.h2t import H2TOptions, fuse_channels
from tailfuse.models import CosineHead, LinearHead


class LabelSmoothingOptions(StrictModel):
    """MiSLAS label-aware smoothing strengths ε_head → ε_tail and the curve between them."""

    head: float = Field(0.4, ge=0.0, le=1.0)
    tail: float = Field(0.1, ge=0.0, le=1.0)
    shape: Literal["concave", "linear", "convex"] = "concave"


class DecoupledOptions(StrictModel):
    """Options shared by the stage-2 methods; each method below changes the defaults."""

    name: str
    loss: str = "cross_entropy"
    loss_options: dict[str, float | int | str | None] = {}
    label_smoothing: LabelSmoothingOptions = LabelSmoothingOptions()
    sampler: str = "class_balanced"
    shift_bn: bool = True
    reinitialize_head: bool = False
    trains: Literal["head", "scales", "nothing"] = "head"
    epoch_length: Literal["dataset", "max_class"] = "dataset"
    h2t: H2TOptions = H2TOptions()


class DrOptions(DecoupledOptions):
    name: Literal["dr"] = "dr"


class CrtOptions(DecoupledOptions):
    name: Literal["crt"] = "crt"
    sampler: str = "class_aware"
    shift_bn: bool = False
    reinitialize_head: bool = True
    epoch_length: Literal["dataset", "max_class"] = "max_class"


class LwsOptions(DecoupledOptions):
    name: Literal["lws"] = "lws"
    sampler: str = "class_aware"
    shift_bn: bool = False
    trains: Literal["head", "scales", "nothing"] = "scales"
    epoch_length: Literal["dataset", "max_class"] = "max_class"


class MislasOptions(DecoupledOptions):
    name: Literal["mislas"] = "mislas"
    loss: str = "label_aware_smoothing"


class TauNormOptions(DecoupledOptions):
    name: Literal["tau_norm"] = "tau_norm"
    shift_bn: bool = False
    trains: Literal["head", "scales", "nothing"] = "nothing"
    tau: float = Field(1.0, ge=0.0)


class LearnedScales(nn.Module):
    """LWS: one learnable multiplier per class on the logits, starting at 1."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scales


class DecoupledStage2(Method):
    """Classifier re-balancing on a frozen backbone, with the optional H2T fusion."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
        if options.reinitialize_head:
            _reset_head(model.head)
        if options.trains != "head":
            for parameter in model.head.parameters():
                parameter.requires_grad_(False)
        self.scales = LearnedScales(len(class_counts)) if options.trains == "scales" else None
        self.training_labels: torch.Tensor | None = None
        loss_options = dict(options.loss_options)
        if options.loss == "label_aware_smoothing":
            smoothing = options.label_smoothing
            loss_options.update(smooth_head=smoothing.head, smooth_tail=smoothing.tail, shape=smoothing.shape)
        self.criterion = build_loss(options.loss, class_counts, **loss_options)

    def bind_training_set(self, labels: torch.Tensor) -> None:
        self.training_labels = labels

    def branches(self):
        branches = {"balanced": self.options.sampler}
        if self.options.h2t.enabled:
            branches["fusing"] = self.options.h2t.fusing_sampler
        if self.options.epoch_length == "dataset":
            return branches
        if self.training_labels is None:
            raise RuntimeError("epoch_length=max_class builds its samplers after bind_training_set")
        # every branch draws the class-aware length, so the fusing branch covers each step
        length = class_aware_epoch_length(self.class_counts)
        return {
            branch: build_sampler(name, self.training_labels, len(self.class_counts), length)
            for branch, name in branches.items()
        }

    def parameter_groups(self):
        if self.options.trains == "head":
            return [{"params": list(self.model.head.parameters())}]
        if self.options.trains == "scales":
            return [{"params": list(self.scales.parameters())}]
        return []

    def train_mode(self) -> None:
        self.model.backbone.train(self.options.shift_bn)
        self.model.head.train()

    def modules_to_save(self) -> dict[str, nn.Module]:
        return {"scales": self.scales} if self.scales is not None else {}

    def head_logits(self, feature_map) -> torch.Tensor:
        logits = self.model.head(feature_map)
        return self.scales(logits) if self.scales is not None else logits

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        balanced = batches["balanced"]
        advance_loss(self.criterion, context.epoch, context.randomness.stream("loss"))
        with torch.no_grad():
            features = self.model.features(balanced.images)
            if self.options.h2t.enabled:
                donor = self.model.features(batches["fusing"].images)
                h2t = self.options.h2t
                features = fuse_channels(features, donor, h2t.ratio, context.randomness.stream("h2t"), h2t.channels, h2t.mixing)
        return self.criterion(self.head_logits(features), balanced.labels)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.model.features(images))


class TauNormalization(DecoupledStage2):
    """τ-normalisation: rescale each class weight by ``1/‖w_j‖^τ``, drop the bias; no training."""

    def head_logits(self, feature_map) -> torch.Tensor:
        head = self.model.head
        if isinstance(feature_map, (list, tuple)):
            return torch.stack([self.head_logits(one) for one in feature_map]).mean(0)
        if not isinstance(head, LinearHead):
            raise TypeError("tau_norm needs a linear head")
        weight = head.fc.weight
        normalised = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(self.options.tau)
        return head.pool(feature_map) @ normalised.t()


def _reset_head(head: nn.Module) -> None:
    """Fresh classifier weights (cRT); multi-expert heads get every expert's layer reset."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, CosineHead):
            module.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)


@register_method("dr", DrOptions)
class DecoupledRetraining(DecoupledStage2):
    """DR: fine-tune the stage-1 head with class-balanced sampling (the H2T paper's DR rows)."""


@register_method("crt", CrtOptions)
class ClassifierRetraining(DecoupledStage2):
    """cRT: re-initialise the head and train it with class-aware sampling."""


@register_method("lws", LwsOptions)
class LearnableWeightScaling(DecoupledStage2):
    """LWS: keep the head, learn a per-class scale of its logits."""


@register_method("mislas", MislasOptions)
class Mislas(DecoupledStage2):
    """MiSLAS stage 2: fine-tune the head with label-aware smoothing and shift-BN."""


register_method("tau_norm", TauNormOptions)(TauNormalization)
