"""Device, precision, threads and determinism settings of a run."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import torch

from tailfuse.config import TrainConfig
from tailfuse.errors import ConfigError


@dataclass
class Runtime:
    """Where and how tensors are computed."""

    device: torch.device
    precision: str
    channels_last: bool

    def autocast(self):
        """The autocast context of a forward pass (a no-op in fp32)."""
        if self.precision in ("fp32", "fp64"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Put a float batch in the memory format the model runs fastest in
        (float64 for ``fp64``)."""
        if self.precision == "fp64":
            images = images.double()
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    @property
    def parameter_dtype(self) -> torch.dtype:
        """The dtype of weights: float64 for ``fp64`` parity runs, float32 otherwise."""
        return torch.float64 if self.precision == "fp64" else torch.float32

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, needed only for float16 on CUDA."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here (use cpu or auto)")
    return device


def make_runtime(config: TrainConfig) -> Runtime:
    """Apply threads and determinism settings and return the run's :class:`Runtime`."""
    from tailfuse.engine.distributed import rank_device, world

    device = rank_device(resolve_device(config.device), world())  # cuda:LOCAL_RANK under torchrun
    precision = resolve_precision(config.precision, device)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    if config.threads:
        torch.set_num_threads(config.threads)
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        if world().is_main:
            print(
                "warning: this CPU has no native bfloat16 (no AVX512-BF16 or AMX), so bf16 "
                "autocast is emulated and can be 10x slower than fp32 here: set "
                "train.precision=fp32 (check with `tailfuse bench RECIPE train.precision=fp32`)",
                file=sys.stderr,
            )
    torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = config.deterministic
    torch.backends.cudnn.benchmark = not config.deterministic
    return Runtime(device=device, precision=precision, channels_last=config.channels_last)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on a CUDA device that supports it or a CPU with native bfloat16, else fp32.

    Any other value is returned as it is. The resolved value is what the run records
    (``results.json`` ``environment.precision``).
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX).

    Without it bf16 autocast is emulated: measured here on an AVX2-only AMD EPYC, a ResNet-32
    training step in bf16 took over 10x longer than in fp32 (README, "Benchmark").
    """
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
