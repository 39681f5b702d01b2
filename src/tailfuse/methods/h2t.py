"""H2T: head-to-tail feature fusion (Li et al., AAAI 2024; spec h2t §1.3–§1.5).

In the classifier re-training stage, a class-balanced ("fused") batch and an
instance-sampled ("fusing", head-heavy) batch go through the frozen backbone; then
``floor(p·C)`` channels of each fused sample's last-stage feature map are overwritten by
the same channels of the index-aligned fusing sample. The channels are one random
permutation per step, shared by the whole batch; multi-expert backbones (a list of maps)
get an independent subset per expert. Only the fused branch's labels are used, and
nothing is fused at evaluation.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from tailfuse.config import StrictModel


class H2TOptions(StrictModel):
    """``method.h2t``: the fusion plug-in of every stage-2 method (off when ratio is 0).

    ``channels: per_sample`` and ``mixing: soft`` are variants, off by default: a channel
    subset per sample instead of per batch, and a convex mix ``(1−p)·fused + p·fusing``
    of all channels instead of the hard replacement of ``floor(p·C)`` of them.
    """

    ratio: float = Field(0.0, ge=0.0, le=1.0)
    channels: Literal["shared", "per_sample"] = "shared"
    mixing: Literal["hard", "soft"] = "hard"
    fusing_sampler: str = "instance"

    @model_validator(mode="after")
    def _channels_apply_to_hard_mixing(self) -> H2TOptions:
        if self.mixing == "soft" and self.channels != "shared":
            raise ValueError(
                "h2t.channels chooses replaced channels; mixing=soft mixes all of them "
                "(drop h2t.channels)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.ratio > 0


def fused_channel_count(num_channels: int, ratio: float) -> int:
    """``floor(p·C)``, as the authors' ``int(rho * C)`` (16 of 64 channels at p = 0.25)."""
    return int(ratio * num_channels)


def fuse_channels(
    fused: torch.Tensor | list[torch.Tensor],
    fusing: torch.Tensor | list[torch.Tensor],
    ratio: float,
    generator: torch.Generator,
    channels: str = "shared",
    mixing: str = "hard",
) -> torch.Tensor | list[torch.Tensor]:
    """Head-to-tail fusion of feature maps (B, C, H, W); returns a new tensor (inputs untouched).

    ``shared`` (the authors' code): one ``randperm(C)[:floor(p·C)]`` per call, the same
    channels for every sample, hard-copied from ``fusing[k]`` into ``fused[k]``.
    """
    if isinstance(fused, (list, tuple)):
        return [
            fuse_channels(f, d, ratio, generator, channels, mixing)
            for f, d in zip(fused, fusing, strict=True)
        ]
    if fused.shape != fusing.shape:
        raise ValueError(
            f"fused {tuple(fused.shape)} and fusing {tuple(fusing.shape)} maps differ in shape"
        )
    if mixing == "soft":
        return (1.0 - ratio) * fused + ratio * fusing
    batch, num_channels = fused.shape[:2]
    count = fused_channel_count(num_channels, ratio)
    if count == 0:
        return fused
    if channels == "shared":
        chosen = torch.randperm(num_channels, generator=generator, device=fused.device)[:count]
        mask = torch.zeros(num_channels, dtype=torch.bool, device=fused.device)
        mask[chosen] = True
        mask = mask.view(1, num_channels, *([1] * (fused.dim() - 2)))
    else:
        ranks = torch.rand(batch, num_channels, generator=generator, device=fused.device).argsort(
            dim=1
        )
        mask = torch.zeros(batch, num_channels, dtype=torch.bool, device=fused.device)
        mask.scatter_(1, ranks[:, :count], True)
        mask = mask.view(batch, num_channels, *([1] * (fused.dim() - 2)))
    return torch.where(mask, fusing, fused)
