"""TADE (Zhang et al., NeurIPS 2022) as the GLT code trains it (spec glt_ifl §4 "TADE").

A RIDE backbone and expert classifiers; the three experts learn with CE, Balanced-Softmax
CE and inverse-prior CE (τ = 2; :class:`~tailfuse.losses.experts.TADELoss`). Prediction:
a weighted mean of the experts' logits, by default the plain mean (the GLT code, which
has no test-time aggregation: spec glt_ifl §8.9); ``aggregation_weights`` fixes other
weights.

``test_time_aggregation.enabled: true`` adds the paper's test-time self-supervised
aggregation (authors' ``test_training_cifar.py``, SADE-AgnosticLT): the trained model is
frozen (eval mode) and only K aggregation weights learn, w = softmax(a) with a initialised
equal. On the UNLABELLED images of the test split, two augmented views x¹, x² of each image
give ŷⁱ = softmax(Σ_k w_k z_k(xⁱ)) -- the weights mix the experts' logits, as the authors'
code and this method's ``predict`` do -- and SGD minimises −mean_b cos(ŷ¹_b, ŷ²_b). The
final prediction is Σ_k w_k z_k with the learned w (which replace ``aggregation_weights``).
Labels are never passed to it (:class:`~tailfuse.data.views.UnlabelledViews`).

Option defaults are the authors' released config (``test_time_cifar100_ir100_tade.json``):
batch 128, SGD lr 0.1, momentum 0.9, weight decay 5e-4, Nesterov, 5 passes. The paper's own
statement of its test-time schedule could not be checked here; set the options to change it. As the
authors' code, a pass stops early once a weight falls below ``stop_below`` (0.05), and the
views use crop + flip followed by a colour distortion (``colour_distortion``; the authors'
views: RandomCrop(32, 4), ColorJitter p 0.8, grayscale p 0.2, blur p 0.2, flip). The
weights are learned on the recipe's test split, once for the final (or selected) model, and
used for every split the run scores (validation, GLT protocols). They are recorded in
``results.json`` (``test_time_adaptation``) and the report, not in the checkpoints:
``tailfuse eval`` learns them again (same seed: the same weights), while ``predict`` and
``export`` use ``aggregation_weights`` (pass the learned ones there to reuse them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from tailfuse.config import StrictModel
from tailfuse.losses.experts import TADELoss
from tailfuse.methods.base import register_method
from tailfuse.methods.ride import ExpertTraining


class SelfSupervisedAggregationOptions(StrictModel):
    """``method.test_time_aggregation``: TADE's self-supervised expert weights (off by default)."""

    enabled: bool = False
    # defaults: the authors' released test-time config (test_time_cifar100_ir100_tade.json)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)
    weight_decay: float = Field(5.0e-4, ge=0.0)
    nesterov: bool = True
    #: the authors' early stop: no further pass once a weight is below this (0: never)
    stop_below: float = Field(0.05, ge=0.0, lt=1.0)
    #: the authors' colour jitter / grayscale / blur on top of the recipe's crop and flip
    colour_distortion: bool = True


class TadeOptions(StrictModel):
    """Options of ``method.name: tade``: τ of the inverse-prior expert; test-time weights."""

    name: Literal["tade"] = "tade"
    loss: Literal["tade"] = "tade"
    tau: float = Field(2.0, ge=0.0)
    sampler: str = "instance"
    mixup_alpha: float = Field(0.0, ge=0.0)
    aggregation_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    test_time_aggregation: SelfSupervisedAggregationOptions = SelfSupervisedAggregationOptions()

    @field_validator("aggregation_weights")
    @classmethod
    def _positive(cls, value):
        if min(value) < 0 or sum(value) <= 0:
            raise ValueError("method.aggregation_weights must be non-negative with a positive sum")
        return value

    def check_run(self, config) -> None:
        """The views are built from images held on the device; streamed splits are refused."""
        if self.test_time_aggregation.enabled and config.data.storage != "device":
            raise ValueError(
                "method.test_time_aggregation needs data.storage: device (the test images on "
                "the device); streamed (ImageNet-scale) splits are not supported"
            )


def aggregate(weights: torch.Tensor, expert_logits: list[torch.Tensor]) -> torch.Tensor:
    """``Σ_k w_k z_k``: the experts' logits mixed by ``weights`` (K,)."""
    return sum(weight * logits for weight, logits in zip(weights, expert_logits, strict=True))


def aggregation_loss(
    weight_logits: torch.Tensor,
    view_1_logits: list[torch.Tensor],
    view_2_logits: list[torch.Tensor],
) -> torch.Tensor:
    """TADE's test-time loss: −mean_b cos(ŷ¹_b, ŷ²_b), ŷⁱ = softmax(Σ_k w_k z_k(xⁱ)).

    ``weight_logits`` a (K,): w = softmax(a); ``view_i_logits``: the K experts' (B, C)
    logits of view i. Cosine with eps 1e-6, as the authors' ``CosineSimilarity``.
    """
    weights = torch.softmax(weight_logits, dim=0)
    first = torch.softmax(aggregate(weights, [z.float() for z in view_1_logits]), dim=1)
    second = torch.softmax(aggregate(weights, [z.float() for z in view_2_logits]), dim=1)
    return -F.cosine_similarity(first, second, dim=1, eps=1e-6).mean()


def learn_aggregation_weights(
    expert_logits: Callable[[torch.Tensor], list[torch.Tensor]],
    views,
    num_experts: int,
    options: SelfSupervisedAggregationOptions,
) -> tuple[torch.Tensor, dict]:
    """SGD on the aggregation weights over ``views`` (frozen experts); returns w and a record.

    ``expert_logits`` maps a batch of images to the K experts' logits (evaluated without
    gradient: only the weights learn); ``views``: :class:`~tailfuse.data.views.UnlabelledViews`.
    """
    device = views.images.device if views.images is not None else "cpu"
    weight_logits = torch.full((num_experts,), 1.0 / num_experts, device=device, requires_grad=True)
    optimizer = torch.optim.SGD(
        [weight_logits],
        lr=options.lr,
        momentum=options.momentum,
        weight_decay=options.weight_decay,
        nesterov=options.nesterov,
    )
    similarities = []
    for epoch in range(options.epochs):
        total, images = torch.zeros((), device=device), 0
        for first, second in views.batches(options.batch_size, epoch, options.colour_distortion):
            with torch.no_grad():
                first_logits, second_logits = expert_logits(first), expert_logits(second)
            loss = aggregation_loss(weight_logits, first_logits, second_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total -= loss.detach() * len(first)
            images += len(first)
        similarities.append(float(total / max(images, 1)))
        if torch.softmax(weight_logits.detach(), 0).min() < options.stop_below:
            break
    weights = torch.softmax(weight_logits.detach(), dim=0)
    record = {
        "kind": "tade_self_supervised_aggregation",
        "expert_weights": [float(w) for w in weights],
        "epochs_run": len(similarities),
        "images": len(views),
        "mean_view_similarity_per_epoch": similarities,
        "options": options.model_dump(),
    }
    return weights, record


@register_method("tade", TadeOptions)
class Tade(ExpertTraining):
    """TADE: three skill-diverse experts, one loss each; at test the experts' weighted mean."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        #: weights learned at test time (None: ``aggregation_weights``)
        self.learned_weights: torch.Tensor | None = None

    def build_criterion(self):
        return TADELoss(self.class_counts, tau=self.options.tau)

    def expert_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model.head.expert_logits(self.model.features(images))

    def adapt_to_unlabelled(self, views) -> dict | None:
        """Learn the aggregation weights on ``views`` when ``test_time_aggregation.enabled``."""
        options = self.options.test_time_aggregation
        if not options.enabled:
            return None
        self.learned_weights = None
        num_experts = len(self.options.aggregation_weights)
        self.learned_weights, record = learn_aggregation_weights(
            self.expert_logits, views, num_experts, options
        )
        return record

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        expert_logits = self.expert_logits(images)
        if self.learned_weights is not None:
            weights = self.learned_weights.to(expert_logits[0].device)
        else:
            weights = torch.tensor(self.options.aggregation_weights, device=expert_logits[0].device)
            weights = weights / weights.sum()
        return aggregate(weights, expert_logits)
