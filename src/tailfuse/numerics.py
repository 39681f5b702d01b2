"""Numerical precision helpers for the models and the losses (bottom layer: torch only)."""

from __future__ import annotations

import torch


def at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """``values`` in float32 when they are half precision (bf16/fp16 autocast outputs),
    unchanged in float32 and float64 (``train.precision=fp64`` parity runs stay float64)."""
    return values if values.dtype in (torch.float32, torch.float64) else values.float()
