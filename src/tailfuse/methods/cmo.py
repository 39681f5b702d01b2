"""CMO: context-rich minority oversampling (Park et al., CVPR 2022).

Two branches per step: the ordinary instance batch (the "context") and a batch drawn with
per-image weight ``1/n_c`` (the authors' ``weighted_alpha = 1``, i.e. class-balanced:
``minority_sampler``). With probability ``mix_prob``, and only in epochs
``start_epoch < e < E − end_epochs`` (0-based, as the authors' loop), one box is cut with
CutMix's rule (λ ~ Beta(β, β), side ``⌊W·√(1−λ)⌋``, centre uniform, clipped) and the
minority images are pasted into it, sample k onto sample k; the label mix is by the area
kept: ``λ' = 1 − box area / image area``, loss ``λ'·L(z, y) + (1−λ')·L(z, y_minority)``.
Any loss works: CE, Balanced Softmax, LDAM-DRW (the CE+CMO, BSCE+CMO rows).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from tailfuse.config import StrictModel
from tailfuse.losses import advance_loss, build_loss
from tailfuse.losses.cross_entropy import mixup_loss
from tailfuse.methods.base import Batch, Method, StepContext, register_method


class CmoOptions(StrictModel):
    """Options of ``method.name: cmo`` (defaults: the authors' ``opts.py``)."""

    name: Literal["cmo"] = "cmo"
    loss: str = "cross_entropy"
    loss_options: dict[str, float | int | str | None] = {}
    sampler: str = "instance"
    minority_sampler: str = "class_balanced"
    mix_prob: float = Field(0.5, ge=0.0, le=1.0)
    beta: float = Field(1.0, gt=0.0)
    start_epoch: int = Field(3, ge=-1)
    end_epochs: int = Field(3, ge=0)


def cutmix_box(
    height: int, width: int, lam: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """CutMix's box for λ: rows [r1, r2), columns [c1, c2) (Yun et al. 2019 ``rand_bbox``)."""
    cut_ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    centre_r, centre_c = int(rng.integers(height)), int(rng.integers(width))
    r1, r2 = np.clip(centre_r - cut_h // 2, 0, height), np.clip(centre_r + cut_h // 2, 0, height)
    c1, c2 = np.clip(centre_c - cut_w // 2, 0, width), np.clip(centre_c + cut_w // 2, 0, width)
    return int(r1), int(r2), int(c1), int(c2)


def paste_box(
    images: torch.Tensor, donors: torch.Tensor, box: tuple[int, int, int, int]
) -> tuple[torch.Tensor, float]:
    """``images`` with ``donors``' box pasted in (k onto k), and the kept-area
    weight ``1 − box/image``."""
    r1, r2, c1, c2 = box
    mixed = images.clone()
    mixed[:, :, r1:r2, c1:c2] = donors[:, :, r1:r2, c1:c2]
    height, width = images.shape[-2:]
    return mixed, 1.0 - (r2 - r1) * (c2 - c1) / (height * width)


@register_method("cmo", CmoOptions)
class ContextRichMinorityOversampling(Method):
    """Train the whole model on instance batches with minority images pasted in by CutMix."""

    def __init__(self, options, model, class_counts, config, auxiliary=None):
        super().__init__(options, model, class_counts, config, auxiliary)
        self.criterion = build_loss(options.loss, class_counts, **options.loss_options)

    def branches(self) -> dict[str, str]:
        return {"main": self.options.sampler, "minority": self.options.minority_sampler}

    def mixing(self, epoch: int, total_epochs: int) -> bool:
        """Whether CutMix may happen in 0-based ``epoch`` (the authors' epoch window)."""
        return self.options.start_epoch < epoch < total_epochs - self.options.end_epochs

    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        batch, minority = batches["main"], batches["minority"]
        advance_loss(
            self.criterion, context.epoch, context.randomness.stream("loss"), batch.global_rows
        )
        rng = context.randomness.numpy
        draw = float(rng.random())  # drawn every step, so the stream does not depend on the window
        if self.mixing(context.epoch, context.total_epochs) and draw < self.options.mix_prob:
            lam = float(rng.beta(self.options.beta, self.options.beta))
            box = cutmix_box(batch.images.shape[-2], batch.images.shape[-1], lam, rng)
            images, kept = paste_box(batch.images, minority.images, box)
            return mixup_loss(
                self.criterion, self.model(images), batch.labels, minority.labels, kept
            )
        return self.criterion(self.model(batch.images), batch.labels)
