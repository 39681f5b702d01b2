"""Data-parallel training with PyTorch's own engine: torchrun + DistributedDataParallel.

One process per device. ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; :func:`world` joins the process group on first use (gloo for CPU
tensors, NCCL for CUDA tensors: the ``cpu:gloo,cuda:nccl`` backend when CUDA is present)
and returns a :class:`World` that the trainer, the session and the methods use for the few
collectives they need. Without those variables, :func:`world` is a one-process
:class:`World` whose collectives return their input, so nothing changes for a plain run.

What is split and what is shared (docs/architecture.md, "Distributed training"):

- every rank draws the same sampler orders from the same seeded generators and trains on
  its :func:`share_bounds` slice of every *global* batch (the recipe's ``batch_size``);
- on device storage (CIFAR-scale) every rank augments the whole global batch with the
  shared generator and keeps its slice, so augmentation and mixup partners are what one
  process draws;
- gradients are averaged by DistributedDataParallel; the session scales each rank's loss
  by its share so that unequal shares still give the global-batch mean;
- BatchNorm is per process by default (as the authors' DataParallel: statistics of each
  device's chunk; DDP broadcasts rank 0's running statistics each step, as DataParallel
  kept replica 0's); ``train.sync_batchnorm`` uses the global batch's statistics
  (torch's SyncBatchNorm on CUDA, :class:`CrossProcessBatchNorm` on the CPU, where
  torch's has no kernel);
- evaluation splits the evaluation batches between ranks and gathers the logits in order,
  so metrics equal a one-process run's; only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from tailfuse.errors import ConfigError

_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class World:
    """This process's place in the job, and the collectives the training code uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``tensor`` reduced over all ranks (``sum``, ``max`` or ``min``),
        in place and returned."""
        if self.distributed:
            dist.all_reduce(
                tensor,
                op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[
                    op
                ],
            )
        return tensor

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 in rank order (row counts may differ).

        Shorter tensors are padded to the longest for the collective and the padding is
        dropped again, so the result holds exactly the rows the ranks contributed.
        """
        if not self.distributed:
            return tensor
        count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        longest = max(sizes)
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(gathered, sizes, strict=True)])

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank (a small picklable object)."""
        if not self.distributed:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


_WORLD: World | None = None


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) set the process-group environment."""
    return (
        all(name in os.environ for name in ("RANK", "WORLD_SIZE"))
        and int(os.environ["WORLD_SIZE"]) > 1
    )


def world() -> World:
    """This process's :class:`World`; joins the process group on first call under torchrun."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    if not launched_by_torchrun():
        _WORLD = World()
        return _WORLD
    missing = [name for name in _ENVIRONMENT if name not in os.environ]
    if missing:
        raise ConfigError(f"distributed launch without {', '.join(missing)}; start with torchrun")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        minutes = float(os.environ.get("TAILFUSE_DIST_TIMEOUT_MINUTES", 30))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))
    _WORLD = World(rank=rank, world_size=world_size, local_rank=local_rank)
    return _WORLD


def shutdown() -> None:
    """Leave the process group (end of a torchrun job)."""
    global _WORLD
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None


def rank_device(device: torch.device, current: World) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun."""
    if device.type == "cuda" and current.distributed:
        return torch.device("cuda", current.local_rank % torch.cuda.device_count())
    return device


def share_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank``'s part of ``total`` items (``tensor_split``'s division)."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


# ---------------------------------------------------------------------------- BatchNorm


class _SummedOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` with its gradient (the gradients of every rank's use, summed)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        total = gradient.clone()
        dist.all_reduce(total)
        return total


class CrossProcessBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch on every rank.

    torch's ``SyncBatchNorm`` has no CPU kernel; this is the same computation on top of a
    differentiable ``all_reduce``: per-channel sum, sum of squares
    and count are summed over ranks (in float64), the batch is normalised with the global
    mean and biased variance, and the running statistics take the unbiased variance, as
    ``BatchNorm2d`` does on one process with the whole batch.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(input)
        channels = input.shape[1]
        values = input.double()
        count = torch.tensor([input.numel() / channels], dtype=torch.float64, device=input.device)
        local = torch.cat([values.sum(dim=(0, 2, 3)), values.pow(2).sum(dim=(0, 2, 3)), count])
        total = _SummedOverRanks.apply(local)
        n = total[-1]
        mean = total[:channels] / n
        variance = (total[channels : 2 * channels] / n - mean.pow(2)).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = variance * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - momentum).add_(
                    momentum * mean.to(self.running_mean.dtype)
                )
                self.running_var.mul_(1 - momentum).add_(
                    momentum * unbiased.to(self.running_var.dtype)
                )
        shape = (1, channels, 1, 1)
        scale = torch.rsqrt(variance + self.eps).view(shape)
        output = (values - mean.view(shape)) * scale
        if self.affine:
            output = output * self.weight.double().view(shape) + self.bias.double().view(shape)
        return output.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a cross-process one (parameters and buffers are kept)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CrossProcessBatchNorm):
        converted = CrossProcessBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


# ------------------------------------------------------------------------- DDP wrapper


class MethodStep(nn.Module):
    """The method's loss as a module, so that DistributedDataParallel sees every step.

    A method computes its loss from submodules (``model.features``, ``model.head``) and
    its own trained modules (LWS scales); DDP all-reduces gradients of whatever
    parameters were used when its ``forward`` ran, so the step goes through this wrapper.
    """

    def __init__(self, method, extra_modules: dict[str, nn.Module]):
        super().__init__()
        self.model = method.model
        self.extras = nn.ModuleDict(extra_modules)
        self._method = [method]  # not a submodule: the method is not an nn.Module

    def forward(self, batches, context):
        return self._method[0].loss(batches, context)


def wrap_for_ddp(method, trained: list[nn.Parameter], device: torch.device) -> nn.Module:
    """A :class:`MethodStep` in DistributedDataParallel that all-reduces the ``trained`` gradients.

    Parameters that need gradients but are not trained (none in the shipped methods) are
    left out of the reduction instead of stalling it.
    """
    from torch.nn.parallel import DistributedDataParallel

    extras = {
        name: module
        for name, module in method.modules_to_save().items()
        if any(parameter.requires_grad for parameter in module.parameters())
    }
    step = MethodStep(method, extras)
    trained_ids = {id(parameter) for parameter in trained}
    ignored = [
        name
        for name, parameter in step.named_parameters()
        if parameter.requires_grad and id(parameter) not in trained_ids
    ]
    if ignored:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, ignored)
    return DistributedDataParallel(step, device_ids=None)  # buffers: rank 0's each step
