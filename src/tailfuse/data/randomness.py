"""Seeded random streams. Every random choice of a run draws from one of these.

Streams are re-derived from (recipe seed, epoch, purpose) at the start of each epoch, so
a run resumed at an epoch boundary draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *purpose: object) -> int:
    """A 63-bit seed for one purpose, stable across machines and Python versions."""
    text = ":".join(str(part) for part in (seed, *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class EpochRandomness:
    """The random streams of one epoch: index sampling, augmentation, mixup, fusion."""

    def __init__(self, seed: int, epoch: int, device: torch.device | str = "cpu"):
        self.seed = seed
        self.epoch = epoch
        self.device = torch.device(device)
        self.augment = self.torch_generator("augment", device=self.device)
        self.numpy = np.random.default_rng(derive_seed(seed, epoch, "numpy"))
        self._streams: dict[str, torch.Generator] = {}

    def torch_generator(self, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh generator for ``purpose`` (e.g. one per sampler branch)."""
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(self.seed, self.epoch, purpose))
        return generator

    def stream(self, purpose: str) -> torch.Generator:
        """The epoch's one generator for ``purpose`` on the run's device (created on first use)."""
        if purpose not in self._streams:
            self._streams[purpose] = self.torch_generator(purpose, device=self.device)
        return self._streams[purpose]
