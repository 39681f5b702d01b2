"""GCL: Gaussian clouded logit adjustment (Li et al., CVPR 2022; spec h2t §3.1).

On cosine logits ``c_j`` (a cosine head with ``model.cosine_scale: 1``), every class of
every sample gets its own noise ``δ_j = |clip(N(0, (1/3)²), −1, 1)|``, scaled by how rare the
class is:

    c̃_j = c_j − noise_mul·δ_j·(log n_max − log n_j)/(log n_max − log n_min) − m·1[j = y]

then ``CE(s·c̃, y)`` (stage 1: m = 0, s = 30, noise_mul 0.5) or, with ``gamma`` > 0, the
focal form ``mean (1−p_y)^γ·CE`` (stage 2: m = 0.1, s = 20, γ = 1). The head class gets no
noise and the rarest class up to ``noise_mul``. Prediction uses the clean ``s·c_j``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tailfuse.losses.logit_adjustment import focal_mean
from tailfuse.losses.reduction import weighted_cross_entropy
from tailfuse.numerics import at_least_float32


def gcl_noise_scale(class_counts: list[int]) -> list[float]:
    """``(log n_max − log n_j)/(log n_max − log n_min)`` per class (0 for every class if
    all counts are equal)."""
    logs = [math.log(count) for count in class_counts]
    span = max(logs) - min(logs)
    if span == 0:
        return [0.0] * len(class_counts)
    return [(max(logs) - value) / span for value in logs]


def clouded_noise(
    shape: torch.Size, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``|clip(N(0, (1/3)²), −1, 1)|`` of ``shape``, drawn from ``generator``."""
    standard = torch.randn(
        shape, generator=generator, device=device if generator is None else generator.device
    )
    return (standard.to(device) / 3.0).clamp(-1.0, 1.0).abs()


class GaussianCloudedLogitLoss(nn.Module):
    """GCL on raw cosines; ``set_generator`` gives it the seeded stream its noise draws from."""

    def __init__(
        self,
        class_counts: list[int],
        m: float = 0.0,
        s: float = 30.0,
        noise_mul: float = 0.5,
        gamma: float = 0.0,
    ):
        super().__init__()
        self.register_buffer(
            "noise_scale",
            torch.tensor(gcl_noise_scale(class_counts), dtype=torch.float32),
            persistent=False,
        )
        self.m, self.s, self.noise_mul, self.gamma = m, s, noise_mul, gamma
        #: whether any class gets noise (not with noise_mul 0, nor with equal counts)
        self.draws_noise = noise_mul != 0 and any(gcl_noise_scale(class_counts))
        self.generator: torch.Generator | None = None
        self.rows: tuple[int, int] | None = None

    def set_generator(self, generator: torch.Generator) -> None:
        """The random stream of the noise (the method hands it the step's seeded stream)."""
        self.generator = generator

    def set_rows(self, rows: tuple[int, int] | None) -> None:
        """Under DDP ``(first row, rows)`` of this process's share in the global batch: the
        noise is drawn for the whole global batch and the share's rows kept, as one process
        draws it; ``None``: the batch is the whole batch."""
        self.rows = rows

    def training_logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """``s·cos θ_j``: the clean logits (no noise, no margin), used for prediction."""
        return self.s * at_least_float32(cosine)

    def clouded_logits(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``s·c̃``: cosines minus the count-scaled noise and the target margin, times s.

        Raises RuntimeError when there is noise to draw (``noise_mul`` ≠ 0 and unequal counts)
        but no stream was set: the global RNG would make a resumed run and a DDP run differ
        from the uninterrupted one-process run.
        """
        cosine = at_least_float32(cosine)
        clouded = cosine
        if self.draws_noise:
            if self.generator is None:
                raise RuntimeError(
                    "GCL's noise needs a seeded stream: call set_generator before the loss "
                    "(tailfuse.losses.advance_loss does it every step)"
                )
            if self.rows is None:
                noise = clouded_noise(cosine.shape, self.generator, cosine.device)
            else:
                first, total = self.rows
                noise = clouded_noise((total, cosine.shape[1]), self.generator, cosine.device)
                noise = noise[first : first + cosine.shape[0]]
            clouded = cosine - self.noise_mul * noise * self.noise_scale.to(cosine.device)
        clouded = clouded - self.m * F.one_hot(labels, cosine.shape[1])
        return self.s * clouded

    def forward(
        self, cosine: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.clouded_logits(cosine, labels)
        if self.gamma > 0:
            return focal_mean(F.log_softmax(logits, dim=1), labels, self.gamma, class_weights)
        return weighted_cross_entropy(logits, labels, class_weights)
