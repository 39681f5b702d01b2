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
- ``mislas``: fine-tune the head with label-aware smoothing and shift-BN: the H2T authors'
  simplification of MiSLAS (spec h2t §6.1 item 8), what their MisLAS(+H2T) rows ran.
- ``mislas_lws``: MiSLAS's own stage 2 (``train_stage2.py``): label-aware smoothing, the head
  and an LWS layer trained together, the LWS layer at the full learning rate (the head at
  ``lr_factor``·lr), class-aware sampling, ``ceil(N/B) + 1`` batches per epoch.
- ``tau_norm``: no training; logits from ``w_j/‖w_j‖^τ`` without bias (τ-normalisation). On a
  multi-expert model (``model.head: expert_linear``) each expert's classifier is τ-normalised
  and applied to its own feature map, and the experts' logits are averaged, as the expert
  head averages them for every other stage-2 method. Cosine heads (which normalise their
  weights already), BBN and ResLT heads are refused when the recipe is read.

``epoch_length``: ``dataset`` (N images per epoch) or ``max_class``
(``min(max_c n_c · C, 4·N)``, the GLT authors' ClassAwareSampler; default of cRT, LWS and
``ride_stage2``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from tailfuse.config import StrictModel
from tailfuse.data.samplers import build_sampler, class_aware_epoch_length
from tailfuse.errors import ConfigError
from tailfuse.losses import advance_loss, build_loss
from tailfuse.methods.base import Batch, Method, StepContext, register_method
from tailfuse.methods.h2t import H2TOptions, fuse_channels
from tailfuse.models import CosineHead, ExpertHead, LinearHead

Trains = Literal["head", "scales", "head_and_scales", "nothing"]
#: heads τ-normalisation applies to: one linear layer, or one per expert
TAU_NORM_HEADS = ("linear", "expert_linear")
SMOOTHING_KEYS = {"smooth_head", "smooth_tail", "shape", "power"}


class LabelSmoothingOptions(StrictModel):
    """MiSLAS label-aware smoothing strengths ε_head → ε_tail and the curve between them.

    ``shape: exp`` is ``ε_t + (ε_h − ε_t)·r^power`` and needs ``power`` (spec h2t §3.1).
    """

    head: float = Field(0.4, ge=0.0, le=1.0)
    tail: float = Field(0.1, ge=0.0, le=1.0)
    shape: Literal["concave", "linear", "convex", "exp"] = "concave"
    power: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _power_goes_with_exp(self) -> LabelSmoothingOptions:
        if self.shape == "exp" and self.power is None:
            raise ValueError("label_smoothing.shape=exp needs label_smoothing.power")
        if self.shape != "exp" and self.power is not None:
            raise ValueError(
                f"label_smoothing.power applies only to shape=exp (shape is {self.shape})"
            )
        return self


class DecoupledOptions(StrictModel):
    """Options shared by the stage-2 methods; each method below changes the defaults.

    ``loss_options`` go to the loss (LDAM's ``drw_epoch``, margins, focal's ``gamma``);
    ``label_smoothing`` is the label-aware smoothing's (only with that loss).
    ``trains: head_and_scales`` trains the head and an LWS layer together;
    ``scales_at_full_lr`` gives that layer ``lr`` where the schedule gives ``lr_factor``·lr.
    """

    name: str
    loss: str = "cross_entropy"
    loss_options: dict[str, float | int | str | None] = {}
    label_smoothing: LabelSmoothingOptions | None = None
    sampler: str = "class_balanced"
    shift_bn: bool = True
    reinitialize_head: bool = False
    trains: Trains = "head"
    scales_at_full_lr: bool = False
    epoch_length: Literal["dataset", "max_class"] = "dataset"
    h2t: H2TOptions = H2TOptions()

    @model_validator(mode="after")
    def _options_that_apply(self) -> DecoupledOptions:
        if self.loss == "label_aware_smoothing":
            if self.label_smoothing is None:
                self.label_smoothing = LabelSmoothingOptions()
            if SMOOTHING_KEYS & set(self.loss_options):
                raise ValueError(
                    "set the smoothing with method.label_smoothing, not method.loss_options"
                )
        elif self.label_smoothing is not None:
            raise ValueError(
                "method.label_smoothing applies only to loss=label_aware_smoothing "
                f"(loss is {self.loss})"
            )
        if self.scales_at_full_lr and self.trains not in ("scales", "head_and_scales"):
            raise ValueError(
                f"method.scales_at_full_lr needs learned scales (trains is {self.trains})"
            )
        return self


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
    trains: Trains = "scales"
    epoch_length: Literal["dataset", "max_class"] = "max_class"


class MislasOptions(DecoupledOptions):
    name: Literal["mislas"] = "mislas"
    loss: str = "label_aware_smoothing"


class MislasLwsOptions(DecoupledOptions):
    name: Literal["mislas_lws"] = "mislas_lws"
    loss: str = "label_aware_smoothing"
    sampler: str = "class_aware"
    trains: Trains = "head_and_scales"
    scales_at_full_lr: bool = True


class TauNormOptions(DecoupledOptions):
    name: Literal["tau_norm"] = "tau_norm"
    shift_bn: bool = False
    trains: Trains = "nothing"
    tau: float = Field(1.0, ge=0.0)

    def check_run(self, config) -> None:
        """Refuse a head without per-class linear weights to rescale (when the recipe is read)."""
        if config.model.head not in TAU_NORM_HEADS:
            cosine = ""
            if "cosine" in config.model.head:
                cosine = " (a cosine head's logits do not depend on its weights' norms)"
            raise ValueError(
                f"method tau_norm rescales the weights of a linear classifier: model.head must be "
                f"{' or '.join(TAU_NORM_HEADS)} (it is {config.model.head}){cosine}"
            )


class LearnedScales(nn.Module):
    """LWS: one learnable multiplier per class on the logits, starting at 1."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scales


class DecoupledStage2(Method):
    """Classifier re-balancing on a frozen backbone, with the optional H2T fusion."""

    needs_trained_model = True

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
        if options.reinitialize_head:
            _reset_head(model.head)
        if options.trains not in ("head", "head_and_scales"):
            for parameter in model.head.parameters():
                parameter.requires_grad_(False)
        learns_scales = options.trains in ("scales", "head_and_scales")
        self.scales = LearnedScales(len(class_counts)) if learns_scales else None
        self.training_labels: torch.Tensor | None = None
        loss_options = dict(options.loss_options)
        if options.loss == "label_aware_smoothing":
            smoothing = options.label_smoothing
            loss_options.update(
                smooth_head=smoothing.head,
                smooth_tail=smoothing.tail,
                shape=smoothing.shape,
                power=smoothing.power,
            )
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
        groups = []
        if self.options.trains in ("head", "head_and_scales"):
            groups.append({"params": list(self.model.head.parameters())})
        if self.scales is not None:
            scales = {"params": list(self.scales.parameters())}
            if self.options.scales_at_full_lr:  # MiSLAS: head at lr_factor·lr, LWS group at lr
                scales["lr_scale"] = 1.0 / self.config.schedule.lr_factor
            groups.append(scales)
        return groups

    def train_mode(self) -> None:
        self.model.backbone.train(self.options.shift_bn)
        self.model.head.train()

    def modules_to_save(self) -> dict[str, nn.Module]:
        return {"scales": self.scales} if self.scales is not None else {}

    def head_logits(self, feature_map) -> torch.Tensor:
        logits = self.model.head(feature_map)
        return self.scales(logits) if self.scales is not None else logits

    @torch.no_grad()
    def balanced_features(self, batches: dict[str, Batch], context: StepContext):
        """The frozen backbone's maps of the balanced branch, fused with H2T
        when enabled (spec h2t §1.5).

        Multi-expert backbones give one map per expert; the operator fuses each with its own subset.
        """
        features = self.model.features(batches["balanced"].images)
        if self.options.h2t.enabled:
            donor = self.model.features(batches["fusing"].images)
            h2t = self.options.h2t
            features = fuse_channels(
                features,
                donor,
                h2t.ratio,
                context.randomness.stream("h2t"),
                h2t.channels,
                h2t.mixing,
            )
        return features

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        advance_loss(
            self.criterion,
            context.epoch,
            context.randomness.stream("loss"),
            batches["balanced"].global_rows,
        )
        return self.criterion(
            self.head_logits(self.balanced_features(batches, context)), batches["balanced"].labels
        )

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.model.features(images))


class TauNormalization(DecoupledStage2):
    """τ-normalisation: rescale each class weight by ``1/‖w_j‖^τ``, drop the bias; no training.

    A multi-expert head τ-normalises each expert's layer on that expert's map and averages
    the experts' logits.
    """

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        experts = model.head.experts if isinstance(model.head, ExpertHead) else [model.head]
        if not all(isinstance(expert, LinearHead) for expert in experts):
            raise ConfigError(
                f"method tau_norm rescales the weights of a linear classifier: model.head must be "
                f"{' or '.join(TAU_NORM_HEADS)}"
            )

    def head_logits(self, feature_map) -> torch.Tensor:
        head = self.model.head
        if isinstance(head, ExpertHead):  # expert k's layer on expert k's map
            pairs = zip(head.experts, feature_map, strict=True)
            return torch.stack([self._tau_logits(expert, one) for expert, one in pairs]).mean(0)
        if isinstance(feature_map, (list, tuple)):  # one linear head shared by several maps
            return torch.stack([self._tau_logits(head, one) for one in feature_map]).mean(0)
        return self._tau_logits(head, feature_map)

    def _tau_logits(self, head: LinearHead, feature_map: torch.Tensor) -> torch.Tensor:
        """``pool(f) · (w_j/‖w_j‖^τ)`` for every class j, without the bias."""
        weight = head.fc.weight
        normalised = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(
            self.options.tau
        )
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
    """MiSLAS stage 2 as the H2T authors ran it: the head fine-tuned with label-aware smoothing."""


@register_method("mislas_lws", MislasLwsOptions)
class MislasWithLws(DecoupledStage2):
    """MiSLAS's own stage 2: head + LWS layer (full lr), label-aware smoothing, class-aware sampler.

    MiSLAS's loop stops after batch index ``ceil(N/B)`` of its class-aware loader, so an
    epoch is ``ceil(N/B) + 1`` batches; the H2T fusing branch, when on, draws as many.
    """

    def bind_training_set(self, labels: torch.Tensor) -> None:
        batch_size = self.config.train.batch_size
        samples = (math.ceil(len(labels) / batch_size) + 1) * batch_size
        num_classes = len(self.class_counts)
        self.balanced_sampler = build_sampler(self.options.sampler, labels, num_classes, samples)
        fusing = self.options.h2t.fusing_sampler
        self.fusing_sampler = build_sampler(fusing, labels, num_classes, samples)

    def branches(self) -> dict:
        branches = {"balanced": self.balanced_sampler}
        if self.options.h2t.enabled:
            branches["fusing"] = self.fusing_sampler
        return branches


register_method("tau_norm", TauNormOptions)(TauNormalization)
