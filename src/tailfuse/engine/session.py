"""One training session: model, method, optimiser, samplers and the data.

:meth:`TrainingSession.train_epoch` is the hot loop, shared by the trainer and the
benchmark: per step it slices each branch's seeded epoch order, gathers the uint8
images on the device and augments them batched (CIFAR-scale data), or lets DataLoader
workers decode and transform them (streamed, ImageNet-scale data), and lets the method
compute the loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tailfuse.config import RunConfig
from tailfuse.data.pipeline import (
    BatchAugmenter,
    StreamedImageDataset,
    loader_batches,
    streamed_transforms,
)
from tailfuse.data.prepare import LabelledImages, PreparedData, StreamedImages
from tailfuse.data.randomness import EpochRandomness, derive_seed
from tailfuse.data.samplers import IndexSampler, build_sampler, rank_share
from tailfuse.engine.runtime import Runtime
from tailfuse.engine.schedules import learning_rate
from tailfuse.errors import TrainingError
from tailfuse.eval.metrics import classification_metrics
from tailfuse.methods import Batch, Method, StepContext, build_method
from tailfuse.models import Classifier, build_model


class TrainingSession:
    """Everything needed to run training steps and evaluations for one recipe."""

    def __init__(
        self,
        config: RunConfig,
        data: PreparedData,
        runtime: Runtime,
        initialize: Callable[[Classifier], None] | None = None,
        auxiliary: dict[str, dict] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.config = config
        self.data = data
        self.runtime = runtime
        self.rank, self.world_size = rank, world_size
        self.model: Classifier = build_model(config.model, data.num_classes).to(runtime.device)
        if runtime.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if initialize is not None:  # e.g. load the stage-1 weights, before the method sees the model
            initialize(self.model)
        self.method: Method = build_method(config, self.model, data.class_counts, auxiliary)
        for module in self.method.modules_to_save().values():
            module.to(runtime.device)
            if runtime.channels_last:
                module.to(memory_format=torch.channels_last)
        optimizer_config = config.optimizer
        groups = [group for group in self.method.parameter_groups() if group["params"]]
        self.optimizer = None if not groups else torch.optim.SGD(
            groups,
            lr=optimizer_config.lr,
            momentum=optimizer_config.momentum,
            weight_decay=optimizer_config.weight_decay,
            nesterov=optimizer_config.nesterov,
        )
        self.scaler = runtime.grad_scaler()
        self.augmenter = BatchAugmenter(config.data.augment, runtime.device)
        if isinstance(data.train, StreamedImages):
            self.streamed_transforms = streamed_transforms(config.data.augment)
            self.streamed_train = StreamedImageDataset(data.train.paths, data.train.labels, self.streamed_transforms[0])
        train_labels = data.train.labels
        self.method.bind_training_set(train_labels)
        self.samplers = {
            branch: sampler if isinstance(sampler, IndexSampler) else build_sampler(sampler, train_labels, data.num_classes)
            for branch, sampler in self.method.branches().items()
        }
        self.batch_sizes = {
            branch: self.method.branch_batch_size(branch, config.train.batch_size) for branch in self.samplers
        }
        # each branch's sampler draws one epoch of indices; the longest sets the step count
        self.steps_per_epoch = max(
            math.ceil(sampler.num_samples / self.batch_sizes[branch]) for branch, sampler in self.samplers.items()
        )
        if self.optimizer is None:  # a post-hoc method (tau_norm): nothing to train
            self.steps_per_epoch = 0
        if config.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.train.max_steps_per_epoch)

    # ------------------------------------------------------------------ training

    def set_learning_rate(self, epoch: int) -> float:
        rate = learning_rate(self.config.schedule, self.config.optimizer.lr, epoch, self.config.train.epochs)
        for group in self.optimizer.param_groups if self.optimizer else []:
            group["lr"] = rate * group.get("lr_scale", 1.0)
        return rate

    def _branch_batches(self, order: torch.Tensor, steps: int, randomness: EpochRandomness, branch: str) -> Iterator[Batch]:
        """The ``steps`` augmented batches of one branch, in the order of ``order``."""
        size = self.batch_sizes[branch]
        shares = [rank_share(order[step * size : (step + 1) * size], self.rank, self.world_size) for step in range(steps)]
        device = self.runtime.device
        if isinstance(self.data.train, StreamedImages):
            # workers get seeds from the loader's generator; with no workers, the transforms
            # draw from the global generator, seeded here per epoch and branch
            torch.manual_seed(derive_seed(self.config.train.seed, randomness.epoch, f"stream:{branch}"))
            loader = DataLoader(
                self.streamed_train,
                batch_sampler=[share.tolist() for share in shares],
                num_workers=self.config.data.num_workers,
                generator=randomness.torch_generator(f"loader:{branch}"),
                pin_memory=device.type == "cuda",
            )
            for (images, labels), share in zip(loader_batches(loader), shares, strict=True):
                yield Batch(
                    self.runtime.prepare_images(images.to(device, non_blocking=True)), labels.to(device), share.to(device)
                )
            return
        for share in shares:
            indices = share.to(device, non_blocking=True)
            images = self.augmenter.train(self.data.train.images[indices], randomness.augment)
            yield Batch(self.runtime.prepare_images(images), self.data.train.labels[indices], indices)

    def train_epoch(self, epoch: int, progress: bool = False, max_steps: int | None = None) -> dict:
        """Run one epoch of training steps; returns loss, learning rate, time and throughput."""
        rate = self.set_learning_rate(epoch)
        self.method.train_mode()
        randomness = EpochRandomness(self.config.train.seed, epoch, self.runtime.device)
        for sampler in self.samplers.values():
            if hasattr(sampler, "set_epoch"):  # samplers whose distribution follows the epoch
                sampler.set_epoch(epoch, self.config.train.epochs)
        orders = {
            branch: sampler.epoch_indices(randomness.torch_generator(f"sampler:{branch}"))
            for branch, sampler in self.samplers.items()
        }
        context = StepContext(epoch=epoch, total_epochs=self.config.train.epochs, randomness=randomness)
        steps = min(self.steps_per_epoch, max_steps or self.steps_per_epoch)
        loss_sum = torch.zeros((), device=self.runtime.device)
        images_seen = 0
        start = time.perf_counter()
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch + 1}/{self.config.train.epochs}",
            disable=not progress,
            leave=False,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        streams = {branch: self._branch_batches(order, steps, randomness, branch) for branch, order in orders.items()}
        for step in bar:
            batches = {branch: next(stream) for branch, stream in streams.items()}
            with self.runtime.autocast():
                loss = self.method.loss(batches, context)
            if not torch.isfinite(loss.detach()).all():
                raise TrainingError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach()
            images_seen += sum(len(batch.labels) for batch in batches.values())
        self.method.end_epoch(context)
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch + 1,
            "lr": rate,
            "train_loss": (loss_sum / steps).item() if steps else float("nan"),
            "seconds": seconds,
            "images_per_second": images_seen / seconds if seconds > 0 else float("nan"),
        }

    # ---------------------------------------------------------------- evaluation

    def _evaluation_batches(
        self, split: LabelledImages | StreamedImages, size: int, order: torch.Tensor | None
    ) -> Iterator[torch.Tensor]:
        if isinstance(split, StreamedImages):
            dataset = StreamedImageDataset(split.paths, split.labels, self.streamed_transforms[1])
            sampler = None if order is None else order.tolist()
            workers = self.config.data.num_workers
            loader = DataLoader(dataset, batch_size=size, sampler=sampler, num_workers=workers)
            for images, _ in loader_batches(loader):
                yield images.to(self.runtime.device, non_blocking=True)
            return
        for start in range(0, len(split), size):
            if order is None:
                yield self.augmenter.evaluate(split.images[start : start + size])
            else:
                chosen = order[start : start + size].to(split.images.device)
                yield self.augmenter.evaluate(split.images[chosen])

    @torch.inference_mode()
    def predict(self, split: LabelledImages | StreamedImages) -> torch.Tensor:
        """Evaluation logits (float32, CPU) for a split, in its order, with the model in eval mode.

        The method may ask for its own batch size and image order (FFN's train-mode BN quirk).
        """
        self.model.eval()
        size, order = self.method.evaluation_batching(len(split), self.config.train.eval_batch_size)
        outputs = []
        for images in self._evaluation_batches(split, size, order):
            with self.runtime.autocast():
                outputs.append(self.method.predict(self.runtime.prepare_images(images)).float().cpu())
        logits = torch.cat(outputs)
        if order is None:
            return logits
        in_split_order = torch.empty_like(logits)
        in_split_order[order] = logits
        return in_split_order

    def evaluate(self, split: LabelledImages) -> dict:
        """All metrics of :func:`classification_metrics` on one split (ECE, NLL: loss scale)."""
        return classification_metrics(
            self.predict(split), split.labels, self.data.plan.groups, self.method.calibration_scale
        )

    # -------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scaler": self.scaler.state_dict(),
            "method_modules": {name: module.state_dict() for name, module in self.method.modules_to_save().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for name, module in self.method.modules_to_save().items():
            module.load_state_dict(state["method_modules"][name])
