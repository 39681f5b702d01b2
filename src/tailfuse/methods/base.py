"""What one training step does, behind the small interface the trainer knows.

A method names the sampler of each batch branch it needs per step, the parameter
groups it trains, how it sets train/eval modes, and the loss of one step. Adding a
method is a new module that subclasses :class:`Method` and registers it: the trainer
does not change.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from tailfuse.config import RunConfig, register_method_options
from tailfuse.data.randomness import EpochRandomness
from tailfuse.errors import ConfigError, did_you_mean
from tailfuse.models import Classifier


@dataclass
class Batch:
    """One augmented batch of a branch: float images on the device, and labels."""

    images: torch.Tensor
    labels: torch.Tensor
    #: positions of the batch's images in the training set (IFL records per-sample confidence)
    indices: torch.Tensor | None = None
    #: positions of the images in the branch's epoch order (draw numbers; IFL orders its records)
    positions: torch.Tensor | None = None
    #: under DDP with images on the device: the whole global batch this process's share is
    #: rows ``start:start+len`` of (mixup draws partners from it, as one process would)
    whole: Batch | None = None
    start: int = 0

    @property
    def global_rows(self) -> tuple[int, int] | None:
        """``(first row, rows)`` of this share in the global batch under DDP (images on the
        device), else ``None`` (the batch is the whole batch)."""
        return None if self.whole is None else (self.start, len(self.whole.labels))


class OneProcess:
    """The collectives of a one-process run (identities); the engine's ``World`` under torchrun."""

    rank = 0
    world_size = 1

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return tensor


@dataclass
class StepContext:
    """What a step may need besides its batches.

    ``world``: collectives over the processes of a torchrun job (``all_reduce``), for
    method state that must see the global batch (IFL's confidences and centers).
    """

    epoch: int
    total_epochs: int
    randomness: EpochRandomness
    world: Any = field(default_factory=OneProcess)


class Method(abc.ABC):
    """Base class of training methods (one stage of training)."""

    name: ClassVar[str] = "method"
    #: whether the method only re-trains part of an already trained model (stage 2): the
    #: trainer refuses it without ``init`` or ``model.weights``
    needs_trained_model: ClassVar[bool] = False
    options_class: ClassVar[type[BaseModel]]

    def __init__(
        self,
        options: BaseModel,
        model: Classifier,
        class_counts: list[int],
        config: RunConfig,
        auxiliary: dict[str, dict] | None = None,
    ):
        """``auxiliary``: model state dicts named in ``init.auxiliary`` (absent when
        evaluating a checkpoint)."""
        self.options = options
        self.model = model
        self.class_counts = list(class_counts)
        self.config = config
        self.auxiliary = auxiliary or {}

    def branches(self) -> dict[str, Any]:
        """Branch name -> sampler name (or a sampler object), one batch of each per step.

        Default: one instance-sampled batch. A method that keeps its own samplers (IFL's
        environments) returns :class:`~tailfuse.data.samplers.IndexSampler` objects.
        """
        return {"main": "instance"}

    def branch_batch_size(self, branch: str, batch_size: int) -> int:
        """The batch size of ``branch`` given the recipe's (default: all of it)."""
        return batch_size

    def bind_training_set(self, labels: torch.Tensor) -> None:
        """Called once with the training labels, before samplers are built (default: nothing)."""
        return None

    def end_epoch(self, context: StepContext) -> None:
        """Called after the last step of every epoch (IFL rebuilds its environments here)."""
        return None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; a group may carry ``lr_scale`` (default: the whole model)."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def train_mode(self) -> None:
        """Put modules in the mode this method trains in (default: everything in train mode)."""
        self.model.train()

    def modules_to_save(self) -> dict[str, nn.Module]:
        """Extra modules with state to checkpoint besides the model (e.g. LWS scales, centers)."""
        return {}

    @abc.abstractmethod
    def loss(self, batches: dict[str, Batch], context: StepContext) -> torch.Tensor:
        """The loss of one step on ``batches`` (one per branch)."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation logits for normalised images (default: the model's)."""
        return self.model(images)

    def adapt_to_unlabelled(self, views) -> dict | None:
        """Adapt to an evaluation split's images, without labels, before it is scored.

        ``views``: a :class:`~tailfuse.data.views.UnlabelledViews` (pairs of augmented views
        of the split's images; it holds no labels); the model is in eval mode. Returns what
        was learned, recorded in ``results.json`` as ``test_time_adaptation``; default: no
        adaptation (None). TADE's test-time aggregation (methods/tade.py) uses it.
        """
        return None

    @property
    def prediction_uses_batch_statistics(self) -> bool:
        """Whether a prediction depends on the other images of its batch (train-mode
        BatchNorm at evaluation, FFN's ``ce_batchnorm: train``); default: no."""
        return False

    @property
    def calibration_scale(self) -> float:
        """The loss's scale of the predicted logits (LDAM, KPS: s); ECE and NLL use logits×it."""
        return float(getattr(getattr(self, "criterion", None), "logit_scale", 1.0))

    def evaluation_batching(
        self, num_samples: int, batch_size: int
    ) -> tuple[int, torch.Tensor | None]:
        """Evaluation batch size and image order (None: the split's order); default: unchanged."""
        return batch_size, None


#: Method name -> class. Filled by :func:`register_method` where each method is defined.
METHODS: dict[str, type[Method]] = {}


def register_method(name: str, options_class: type[BaseModel]):
    """Class decorator: make ``name`` usable as ``method.name`` in recipes."""

    def decorator(method_class: type[Method]) -> type[Method]:
        method_class.name = name
        method_class.options_class = options_class
        METHODS[name] = method_class
        register_method_options(name)(options_class)
        return method_class

    return decorator


def build_method(
    config: RunConfig,
    model: Classifier,
    class_counts: list[int],
    auxiliary: dict[str, dict] | None = None,
) -> Method:
    """Create the method a recipe names, with its validated options."""
    name = config.method.name
    if name not in METHODS:
        raise ConfigError(
            f"unknown method '{name}'{did_you_mean(name, METHODS)}; choose from "
            f"{', '.join(sorted(METHODS))}"
        )
    return METHODS[name](config.method, model, class_counts, config, auxiliary)
