"""Invariant Feature Learning (IFL; Tang et al., ECCV 2022), as the authors' code runs it.

Spec glt_ifl §3. Each step concatenates one batch per environment (weighted sampling
with replacement; with ``batch_split`` each environment gets ``B/E`` images and an epoch
draws N images per environment, so an epoch has E× the steps of a baseline epoch, spec
§8.6). The loss is ``L_cls + α·L_center`` with class centers shared by all
environments; α follows ``center_milestones``/``center_weights``. Per-sample confidence
``p(y|x)`` is recorded from the training-mode forward pass, and at the end of the epochs
in ``update_milestones`` environment 2 (and 3) is rebuilt with the intra-class rule of
:func:`intra_class_environment_weights`; environment 1 stays instance-uniform.

Differences from the paper, kept as the code's defaults (spec §8): centers start at a
random N(0, 1) draw and stay there while α = 0 (``center_init: class_mean`` gives the
paper's Algorithm 1 initialisation from the class means of the last warm-up epoch); the
authors' ``center_dual`` trains with Balanced Softmax unless told CE (recipes name the
loss); their SGD has no momentum (recipes: ``optimizer.momentum``).

On multi-expert models (``center_ride`` / ``center_tade``, spec glt_ifl §3.5) the loss is
an expert loss (``ride``, ``tade``) over the experts' logits, the center loss acts on the
concatenated pooled expert features, and confidences come from the expert mean.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from tailfuse.config import StrictModel
from tailfuse.data.pipeline import mixup
from tailfuse.data.samplers import IndexSampler
from tailfuse.errors import ConfigError
from tailfuse.losses import build_loss
from tailfuse.losses.logit_adjustment import log_prior, posthoc_adjust
from tailfuse.methods.base import Batch, Method, StepContext, register_method


class IflOptions(StrictModel):
    """Options of ``method.name: ifl`` (defaults: the authors' ``center_dual``, spec §3.2–§3.4, §5).

    ``environments``: 1 (``center_single``: baseline + center loss, never updated), 2
    (``center_dual``) or 3 (``center_triple``: env 2 uses T/2, env 3 uses T).
    ``update_milestones``: 0-based epochs at whose end environments are rebuilt;
    ``center_milestones``/``center_weights``: α from that epoch on.
    ``epoch_images``: ``per_environment`` (authors: every environment draws N images per
    epoch, so E× the images and steps of a baseline epoch) or ``shared`` (the
    environments draw N together: a baseline's compute, for fair comparisons).
    """

    name: Literal["ifl"] = "ifl"
    loss: str = "cross_entropy"
    loss_options: dict[str, float | int | str | None] = {}
    environments: int = Field(2, ge=1, le=3)
    batch_split: bool = True
    epoch_images: Literal["per_environment", "shared"] = "per_environment"
    sample_scale: float = Field(4.0, gt=1.0)
    update_milestones: list[int] = [60, 80]
    always_update: bool = False
    center_loss: Literal["l2", "cosine"] = "l2"
    center_milestones: list[int] = [0, 60, 80]
    center_weights: list[float] = [0.0, 0.001, 0.005]
    center_lr: float = Field(0.5, gt=0.0)
    center_init: Literal["random", "class_mean"] = "random"
    mixup_alpha: float = Field(0.0, ge=0.0)
    posthoc_tau: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> IflOptions:
        if len(self.center_milestones) != len(self.center_weights):
            raise ValueError(
                "method.center_milestones and method.center_weights need the same length"
            )
        if sorted(self.center_milestones) != self.center_milestones or self.center_milestones[
            :1
        ] != [0]:
            raise ValueError("method.center_milestones must be increasing and start at 0")
        return self

    def check_run(self, config) -> None:
        """Refuse milestones at or past ``train.epochs``: they would never take effect, and a
        run meant as IFL would silently train as a baseline (issue 9 item 3)."""
        epochs = config.train.epochs
        checked = [("center_milestones", self.center_milestones)]
        if self.environments > 1 and not self.always_update:
            checked.insert(0, ("update_milestones", self.update_milestones))
        for key, milestones in checked:
            late = [m for m in milestones if m >= epochs]
            if late:
                raise ValueError(
                    f"method.{key} {milestones} has epochs {late} that a run "
                    f"of train.epochs={epochs} never reaches (0-based epochs); "
                    "scale the milestones with the epochs"
                )


def center_weight(options: IflOptions, epoch: int) -> float:
    """α of 0-based ``epoch``: the weight of the last center milestone ≤ epoch (spec §3.3)."""
    alpha = 0.0
    for milestone, weight in zip(options.center_milestones, options.center_weights, strict=True):
        if epoch >= milestone:
            alpha = weight
    return alpha


def center_distance(
    features: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, kind: str
) -> torch.Tensor:
    """Per-sample distance to the own class center: squared L2 (clamped) or ``1 − cos``."""
    chosen = centers[labels]
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(features, chosen, dim=1)
    return (features - chosen).pow(2).sum(dim=1).clamp(1e-12, 1e12)


def confidence_beta(u: torch.Tensor, sample_scale: float) -> float:
    """β of one class (spec §3.2 "Pareto" rule): h = mean of the ⌊0.8n⌋ smallest u, t = mean of
    the ⌊0.2n⌋ largest (the authors' two top-k calls; for n not a multiple of 5 one value is
    in neither), r = t/h + 1e-5, β = clamp(log T / log r, 1, 10), so that (t/h)^β ≈ T."""
    ordered = torch.sort(u.double()).values
    head_count = int(0.8 * len(ordered))
    tail_count = int(0.2 * len(ordered))
    ratio = float(ordered[len(ordered) - tail_count :].mean() / ordered[:head_count].mean()) + 1e-5
    return min(max(math.log(sample_scale) / math.log(ratio), 1.0), 10.0)


def record_last(target: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> None:
    """``target[indices] = values`` where, for a repeated index, the last record wins (spec §3.2).

    A plain indexed write with repeated indices lets any record win on CUDA (and in
    multi-threaded CPU writes); a stable sort finds each index's last position first.
    """
    indices = indices.to(target.device)
    values = values.to(target.device, target.dtype)
    order = torch.argsort(indices, stable=True)
    ordered = indices[order]
    is_last = torch.ones_like(ordered, dtype=torch.bool)
    is_last[:-1] = ordered[1:] != ordered[:-1]
    target[ordered[is_last]] = values[order[is_last]]


def intra_class_environment_weights(
    labels: torch.Tensor, confidence: torch.Tensor, num_classes: int, sample_scale: float
) -> torch.Tensor:
    """Environment sampling weights from per-sample confidence (spec §3.2, ``env_type: intra``).

    ``confidence`` holds p(y_i|x_i) or NaN for samples not seen this epoch (weight 0).
    Per class c over its seen samples S_c: fewer than 5 → 1/|S_c| each; otherwise
    s = min–max normalised p, u = |1 − s| + 1e-5, h = mean of the ⌊0.8|S_c|⌋ smallest u,
    t = mean of the ⌊0.2|S_c|⌋ largest, r = t/h + 1e-5, β_c = clamp(log T / log r, 1, 10),
    w = (u^β_c + 1e-12) normalised to sum 1 within the class. So every class sums to 1
    (env is class-balanced) and, inside it, low-confidence samples are favoured.
    """
    labels = labels.detach().cpu().long()
    confidence = confidence.detach().cpu().double()
    weights = torch.zeros(len(labels), dtype=torch.float64)
    seen = torch.nonzero(~torch.isnan(confidence)).flatten()
    if len(seen) == 0:
        return weights
    # every class at once (iNaturalist: 8,142 classes): per-class reductions by scatter,
    # the within-class order of u by one stable sort
    classes, p = labels[seen], confidence[seen]
    count = torch.bincount(classes, minlength=num_classes).double()
    low = torch.full((num_classes,), float("inf"), dtype=torch.float64).scatter_reduce(
        0, classes, p, "amin"
    )
    high = torch.full((num_classes,), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, classes, p, "amax"
    )
    scaled = (p - low[classes]) / (high[classes] - low[classes] + 1e-9)
    u = (1.0 - scaled).abs() + 1e-5
    by_u = torch.argsort(u, stable=True)
    ordered = by_u[torch.argsort(classes[by_u], stable=True)]
    first = torch.cumsum(count, 0) - count
    rank = torch.empty(len(seen), dtype=torch.float64)
    rank[ordered] = torch.arange(len(seen), dtype=torch.float64) - first[classes[ordered]]
    # the authors' two top-k calls: for a class size not a multiple of 5, one u is in neither
    head_count = torch.floor(0.8 * count)
    tail_count = torch.floor(0.2 * count)
    in_head = rank < head_count[classes]
    in_tail = rank >= (count - tail_count)[classes]
    head_sum = torch.zeros(num_classes, dtype=torch.float64).index_add_(
        0, classes, torch.where(in_head, u, 0.0)
    )
    tail_sum = torch.zeros(num_classes, dtype=torch.float64).index_add_(
        0, classes, torch.where(in_tail, u, 0.0)
    )
    ratio = (tail_sum / tail_count) / (head_sum / head_count) + 1e-5
    beta = (math.log(sample_scale) / torch.log(ratio)).clamp(1.0, 10.0)
    raw = u.pow(beta[classes]) + 1e-12
    total = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, classes, raw)
    few = count[classes] < 5
    weights[seen] = torch.where(few, 1.0 / count[classes], raw / total[classes])
    return weights


class EnvironmentSampler(IndexSampler):
    """Draw ``num_samples`` indices with replacement from per-sample weights
    (authors' DistributionSampler)."""

    def __init__(
        self, labels: torch.Tensor, num_classes: int, weights_of, num_samples: int | None = None
    ):
        super().__init__(labels, num_classes, num_samples)
        self.weights_of = weights_of

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        weights = self.weights_of().detach().to("cpu", torch.float64)
        if not weights.sum() > 0:
            weights = torch.ones_like(weights)
        return torch.multinomial(weights, self.num_samples, replacement=True, generator=generator)

    def class_probabilities(self) -> torch.Tensor:
        weights = self.weights_of().detach().to("cpu", torch.float64)
        per_class = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(
            0, self.labels, weights
        )
        return per_class / per_class.sum()


class IflState(nn.Module):
    """What IFL carries across epochs and checkpoints: environment weights and class centers."""

    def __init__(self, environments: int, num_samples: int, num_classes: int, feature_dim: int):
        super().__init__()
        self.register_buffer(
            "environment_weights", torch.ones(environments, num_samples, dtype=torch.float64)
        )
        self.register_buffer("centers", torch.randn(num_classes, feature_dim))


@register_method("ifl", IflOptions)
class InvariantFeatureLearning(Method):
    """IFL: multi-environment batches, confidence-built environments, center loss (spec §3)."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        self.criterion = build_loss(options.loss, class_counts, **options.loss_options)
        self.log_prior = log_prior(class_counts)
        self.num_classes = len(class_counts)
        self.num_samples = int(sum(class_counts))
        feature_dim = getattr(model.backbone, "out_channels", None)
        if feature_dim is None:
            raise ConfigError("method ifl needs a backbone that reports out_channels")
        # multi-expert models (RIDE + IFL, TADE + IFL): centers live on the concatenated
        # pooled expert features (3 x 1536 = 4608 for the GLT code's RIDE ResNeXt-50)
        self.multi_expert = hasattr(model.head, "expert_logits")
        if self.multi_expert:
            feature_dim *= model.backbone.num_experts
        if getattr(self.criterion, "takes_expert_logits", False) != self.multi_expert:
            raise ConfigError(
                f"ifl: loss '{options.loss}' and the model do not fit: expert losses (ride, tade, "
                "expert_cross_entropy) need a multi-expert model (model.head expert_*), "
                "other losses a single head"
            )
        if hasattr(self.criterion, "set_generator"):
            # its noise would come from the global random state: not seeded by the epoch's
            # streams (a resumed run would differ), and not drawn for the whole global batch
            # of the concatenated environments under DDP
            raise ConfigError(
                f"ifl: loss '{options.loss}' draws random noise every step, which ifl does "
                "not seed; train it with method erm (or gcl for stage 2)"
            )
        self.state = IflState(options.environments, self.num_samples, self.num_classes, feature_dim)
        self.training_labels: torch.Tensor | None = None
        self.confidence_slots: torch.Tensor | None = None
        self.record_order: torch.Tensor | None = None
        self.mean_sums: torch.Tensor | None = None
        self.mean_counts: torch.Tensor | None = None

    # -------------------------------------------------------------- data side

    def bind_training_set(self, labels: torch.Tensor) -> None:
        if len(labels) != self.num_samples:
            raise ConfigError(
                f"ifl: {len(labels)} training labels for {self.num_samples} counted images"
            )
        self.training_labels = labels.detach().cpu()
        # one slot per training image, plus one that absorbs superseded records (no host sync)
        self.confidence_slots = torch.full(
            (self.num_samples + 1,), float("nan"), device=labels.device
        )
        # when each confidence was recorded (step, environment, position): the latest wins
        self.record_order = torch.full(
            (self.num_samples,), -1, dtype=torch.int64, device=labels.device
        )

    @property
    def confidence(self) -> torch.Tensor:
        """p(y_i|x_i) of each training image this epoch (NaN: not drawn yet)."""
        return self.confidence_slots[: self.num_samples]

    def branches(self) -> dict[str, IndexSampler]:
        labels = self.training_labels
        draws = self.num_samples
        if self.options.epoch_images == "shared":
            draws = math.ceil(self.num_samples / self.options.environments)
        return {
            f"env{k + 1}": EnvironmentSampler(
                labels, self.num_classes, lambda k=k: self.state.environment_weights[k], draws
            )
            for k in range(self.options.environments)
        }

    def branch_batch_size(self, branch: str, batch_size: int) -> int:
        if not self.options.batch_split:
            return batch_size
        return max(1, batch_size // self.options.environments)

    def modules_to_save(self) -> dict[str, nn.Module]:
        return {"ifl": self.state}

    # -------------------------------------------------------------- training

    def _classification(self, logits, labels, partner_labels, lam) -> torch.Tensor:
        if partner_labels is None:
            return self.criterion(logits, labels)
        return lam * self.criterion(logits, labels) + (1.0 - lam) * self.criterion(
            logits, partner_labels
        )

    def _center_term(self, features, centers, labels, partner_labels, lam) -> torch.Tensor:
        kind = self.options.center_loss
        term = center_distance(features, centers, labels, kind).mean()
        if partner_labels is not None:
            term = (
                lam * term
                + (1.0 - lam) * center_distance(features, centers, partner_labels, kind).mean()
            )
        return term

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        ordered = [batches[f"env{k + 1}"] for k in range(self.options.environments)]
        images = torch.cat([batch.images for batch in ordered])
        labels = torch.cat([batch.labels for batch in ordered])
        indices = torch.cat([batch.indices for batch in ordered])
        partner_labels, lam = None, 1.0
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(context.epoch)
        if self.options.mixup_alpha > 0:
            pool, rows, pool_labels = None, None, labels
            if any(batch.whole is not None for batch in ordered):
                # under DDP: partners from the environments' whole global batches, concatenated
                wholes = [batch.whole or batch for batch in ordered]
                offsets = [0]
                for whole in wholes[:-1]:
                    offsets.append(offsets[-1] + len(whole.labels))
                rows = torch.cat(
                    [
                        offset + batch.start + torch.arange(len(batch.labels), device=labels.device)
                        for offset, batch in zip(offsets, ordered, strict=True)
                    ]
                )
                pool = torch.cat([whole.images for whole in wholes])
                pool_labels = torch.cat([whole.labels for whole in wholes])
            images, partner, lam = mixup(
                images,
                self.options.mixup_alpha,
                context.randomness.numpy,
                context.randomness.augment,
                pool=pool,
                rows=rows,
            )
            partner_labels = pool_labels[partner]
        feature_map = self.model.features(images)
        if self.multi_expert:
            expert_logits = self.model.head.expert_logits(feature_map)
            logits = torch.stack(expert_logits).mean(0)
            pooled = torch.cat([self.model.head.pool(one) for one in feature_map], dim=1)
            loss = self._classification(expert_logits, labels, partner_labels, lam)
        else:
            pooled = self.model.head.pool(feature_map)
            logits = self.model.head.logits_from_features(pooled)
            loss = self._classification(logits, labels, partner_labels, lam)
        features = pooled.float()
        with (
            torch.no_grad()
        ):  # confidence of the (un-mixed) label; the last record of a sample wins
            probabilities = (
                torch.softmax(logits.detach().float(), dim=1)
                .gather(1, labels.view(-1, 1))
                .squeeze(1)
            )
            self._record_confidence(indices, self._record_stamps(ordered), probabilities)
        alpha = center_weight(self.options, context.epoch)
        if (
            self.options.center_init == "class_mean"
            and context.epoch + 1 == self._first_center_epoch()
        ):
            self._accumulate_class_means(features.detach(), labels)
        if alpha > 0:
            centers = self.state.centers
            loss = loss + alpha * self._center_term(
                features, centers.detach().clone(), labels, partner_labels, lam
            )
            self._update_centers(features.detach(), labels, partner_labels, lam, context.world)
        return loss

    def _record_stamps(self, ordered: list[Batch]) -> torch.Tensor:
        """The order in which one process would record these samples: (step, environment, position).

        ``Batch.positions`` are draw numbers in each environment's epoch order, so the
        stamps are the same whichever process of a torchrun job trained on the sample.
        """
        size = self.branch_batch_size("env1", self.config.train.batch_size)
        stamps = []
        for environment, batch in enumerate(ordered):
            positions = batch.positions
            if positions is None:
                positions = torch.arange(len(batch.labels), device=batch.labels.device)
            step, within = positions // size, positions % size
            stamps.append((step * self.options.environments + environment) * size + within)
        return torch.cat(stamps)

    def _record_confidence(
        self, indices: torch.Tensor, stamps: torch.Tensor, probabilities: torch.Tensor
    ) -> None:
        """Keep each sample's latest confidence (a sample drawn twice keeps the later draw's)."""
        device = self.confidence_slots.device
        indices, stamps = indices.to(device), stamps.to(device)
        self.record_order.scatter_reduce_(0, indices, stamps, reduce="amax")
        latest = self.record_order[indices] == stamps
        target = torch.where(latest, indices, torch.full_like(indices, self.num_samples))
        record_last(
            self.confidence_slots, target, probabilities
        )  # one write per slot, also on CUDA

    def _gather_confidence(self, world) -> None:
        """Every process's records combined (the latest per sample),
        before environments are rebuilt."""
        if world.world_size == 1:
            return
        local_order = self.record_order.clone()
        world.all_reduce(self.record_order, "max")
        mine = (local_order == self.record_order) & (local_order >= 0)
        values = torch.where(
            mine, self.confidence.nan_to_num(0.0), torch.zeros_like(self.confidence)
        )
        world.all_reduce(values)
        self.confidence.copy_(
            torch.where(self.record_order >= 0, values, torch.full_like(values, float("nan")))
        )

    def _update_centers(self, features, labels, partner_labels, lam, world=None) -> None:
        """One SGD step (lr ``center_lr``) on the α-free center loss (spec §3.3).

        For the squared L2 loss this is the moving average
        ``C_c ← (1 − n_c/B)·C_c + (n_c/B)·mean_{i: y_i = c} f_i`` (lr 0.5). Under torchrun
        the gradient is that of the mean over the global batch (each process's mean
        gradient weighted by its share), so every process keeps the same centers.
        """
        with torch.enable_grad():
            centers = self.state.centers.detach().clone().requires_grad_(True)
            term = self._center_term(features, centers, labels, partner_labels, lam)
            (gradient,) = torch.autograd.grad(term, centers)
        if world is not None and world.world_size > 1:
            count = float(len(labels))
            packed = torch.cat([gradient.flatten() * count, gradient.new_full((1,), count)])
            world.all_reduce(packed)
            gradient = (packed[:-1] / packed[-1]).view_as(gradient)
        self.state.centers.sub_(self.options.center_lr * gradient)

    def _first_center_epoch(self) -> int:
        for milestone, weight in zip(
            self.options.center_milestones, self.options.center_weights, strict=True
        ):
            if weight > 0:
                return milestone
        return -1

    def _accumulate_class_means(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if self.mean_sums is None:
            self.mean_sums = torch.zeros(
                self.num_classes, features.shape[1], device=features.device, dtype=torch.float64
            )
            self.mean_counts = torch.zeros(
                self.num_classes, device=features.device, dtype=torch.float64
            )
        self.mean_sums.index_add_(0, labels, features.double())
        self.mean_counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))

    def end_epoch(self, context: StepContext) -> None:
        """Rebuild the environments at the update milestones; set centers to
        class means (paper init)."""
        epoch = context.epoch
        self._gather_confidence(context.world)
        if self.mean_sums is not None and epoch + 1 == self._first_center_epoch():
            context.world.all_reduce(self.mean_sums)
            context.world.all_reduce(self.mean_counts)
            seen = self.mean_counts > 0
            means = (self.mean_sums[seen] / self.mean_counts[seen].unsqueeze(1)).float()
            self.state.centers[seen] = means.to(self.state.centers.device)
            self.mean_sums = self.mean_counts = None
        if self.options.environments > 1 and (
            self.options.always_update or epoch in self.options.update_milestones
        ):
            scales = (
                [self.options.sample_scale]
                if self.options.environments == 2
                else [self.options.sample_scale // 2, self.options.sample_scale]
            )
            for position, scale in enumerate(scales, start=1):
                weights = intra_class_environment_weights(
                    self.training_labels, self.confidence, self.num_classes, scale
                )
                self.state.environment_weights[position] = weights.to(
                    self.state.environment_weights.device
                )
        self.confidence.fill_(float("nan"))
        self.record_order.fill_(-1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return posthoc_adjust(logits, self.log_prior, self.options.posthoc_tau)
