"""One training session: model, method, optimiser, samplers and the data.

:meth:`TrainingSession.train_epoch` is the hot loop, shared by the trainer and the
benchmark: per step it slices each branch's seeded epoch order, gathers the uint8
images on the device and augments them batched (CIFAR-scale data), or lets DataLoader
workers decode and transform them (streamed, ImageNet-scale data), and lets the method
compute the loss.

Under torchrun (engine/distributed.py) every process draws the same epoch orders, takes
its share of every global batch, computes the method's loss through
DistributedDataParallel and evaluates its part of each split; the logits are gathered so
every process computes the same metrics.
"""

from __future__ import annotations

import math
import sys
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
from tailfuse.data.randomness import EpochRandomness
from tailfuse.data.samplers import IndexSampler, build_sampler
from tailfuse.engine.distributed import (
    World,
    convert_sync_batchnorm,
    share_bounds,
    world,
    wrap_for_ddp,
)
from tailfuse.engine.runtime import Runtime
from tailfuse.engine.schedules import learning_rate
from tailfuse.errors import ConfigError, TrainingError
from tailfuse.eval.metrics import classification_metrics
from tailfuse.losses.reduction import global_batch
from tailfuse.methods import Batch, Method, StepContext, build_method
from tailfuse.models import Classifier, build_model


class _EpochBatches:
    """The batch sampler of a persistent DataLoader: the session sets each epoch's batches."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def warn_non_finite(non_finite: int, total: int, images: str, is_main: bool) -> None:
    """Say on stderr (rank 0 only) how many of ``total`` scored images had NaN or infinite
    logits: ``warning: N of T {images} got NaN or infinite logits ...``."""
    if non_finite and is_main:
        print(
            f"warning: {non_finite} of {total} {images} got NaN or infinite logits "
            "(a diverged model?); they count as wrong",
            file=sys.stderr,
        )


class TrainingSession:
    """Everything needed to run training steps and evaluations for one recipe."""

    def __init__(
        self,
        config: RunConfig,
        data: PreparedData,
        runtime: Runtime,
        initialize: Callable[[Classifier], None] | None = None,
        auxiliary: dict[str, dict] | None = None,
        process_world: World | None = None,
        pretrained: bool = True,
    ):
        """``pretrained=False`` builds the model without reading ``model.weights`` (the
        pretrained file training started from): for weights that come from a checkpoint."""
        self.config = config
        self.data = data
        self.runtime = runtime
        self.world = process_world or world()
        self.rank, self.world_size = self.world.rank, self.world.world_size
        if config.train.batch_size < self.world_size:
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} is the global batch: "
                f"it needs at least one image for each of the {self.world_size} processes"
            )
        sync_batchnorm = config.train.sync_batchnorm and self.world.distributed
        self.model: Classifier = build_model(config.model, data.num_classes, pretrained).to(
            runtime.device, runtime.parameter_dtype
        )
        if runtime.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if (
            initialize is not None
        ):  # e.g. load the stage-1 weights, before the method sees the model
            initialize(self.model)
        if sync_batchnorm:
            self.model = convert_sync_batchnorm(self.model, runtime.device)
        self.method: Method = build_method(config, self.model, data.class_counts, auxiliary)
        for module in self.method.modules_to_save().values():
            module.to(runtime.device)
            if runtime.precision == "fp64":
                module.to(torch.float64)
            if runtime.channels_last:
                module.to(memory_format=torch.channels_last)
            if sync_batchnorm:
                convert_sync_batchnorm(module, runtime.device)
        if config.train.compile:  # in place: parameter names and checkpoints stay the same
            self.model.backbone.compile()
            self.model.head.compile()
        optimizer_config = config.optimizer
        groups = [group for group in self.method.parameter_groups() if group["params"]]
        self.optimizer = (
            None
            if not groups
            else torch.optim.SGD(
                groups,
                lr=optimizer_config.lr,
                momentum=optimizer_config.momentum,
                weight_decay=optimizer_config.weight_decay,
                nesterov=optimizer_config.nesterov,
            )
        )
        self.scaler = runtime.grad_scaler()
        # under torchrun the method's loss runs through DDP, which all-reduces the gradients
        self.ddp = None
        if self.optimizer is not None and self.world.distributed:
            trained = [parameter for group in groups for parameter in group["params"]]
            self.ddp = wrap_for_ddp(self.method, trained, runtime.device)
        self._loaders: dict = {}
        self.augmenter = BatchAugmenter(config.data.augment, runtime.device)
        if isinstance(data.train, StreamedImages):
            self.streamed_transforms = streamed_transforms(config.data.augment)
            self.streamed_train = StreamedImageDataset(
                data.train.paths, data.train.labels, self.streamed_transforms[0]
            )
        train_labels = data.train.labels
        self.method.bind_training_set(train_labels)
        self.samplers = {
            branch: sampler
            if isinstance(sampler, IndexSampler)
            else build_sampler(sampler, train_labels, data.num_classes)
            for branch, sampler in self.method.branches().items()
        }
        self.batch_sizes = {
            branch: self.method.branch_batch_size(branch, config.train.batch_size)
            for branch in self.samplers
        }
        # each branch's sampler draws one epoch of indices; the longest sets the step count
        self.steps_per_epoch = max(
            math.ceil(sampler.num_samples / self.batch_sizes[branch])
            for branch, sampler in self.samplers.items()
        )
        if self.optimizer is None:  # a post-hoc method (tau_norm): nothing to train
            self.steps_per_epoch = 0
        if config.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.train.max_steps_per_epoch)

    # ------------------------------------------------------------------ training

    def set_learning_rate(self, epoch: int) -> float:
        rate = learning_rate(
            self.config.schedule, self.config.optimizer.lr, epoch, self.config.train.epochs
        )
        for group in self.optimizer.param_groups if self.optimizer else []:
            group["lr"] = rate * group.get("lr_scale", 1.0)
        return rate

    def _share(self, step: int, size: int, total: int) -> tuple[int, int]:
        """``[start, end)`` of this process's share of global batch ``step``
        within the epoch order."""
        first = step * size
        start, end = share_bounds(min(size, max(total - first, 0)), self.rank, self.world_size)
        return first + start, first + end

    def _branch_batches(
        self, order: torch.Tensor, steps: int, randomness: EpochRandomness, branch: str
    ) -> Iterator[Batch]:
        """The ``steps`` augmented batches of one branch (this process's shares),
        in the order of ``order``."""
        size = self.batch_sizes[branch]
        device = self.runtime.device
        if isinstance(self.data.train, StreamedImages):
            yield from self._streamed_batches(order, steps, randomness, branch)
            return
        order = order.to(device, non_blocking=True)  # one copy per epoch, then slices on the device
        for step in range(steps):
            first = step * size
            start, end = self._share(step, size, len(order))
            if not self.world.distributed:
                indices = order[first : first + size]
                images = self.augmenter.train(self.data.train.images[indices], randomness.augment)
                positions = torch.arange(first, first + len(indices), device=device)
                yield Batch(
                    self.runtime.prepare_images(images),
                    self.data.train.labels[indices],
                    indices,
                    positions,
                )
                continue
            # every process augments the whole global batch with the shared generator and keeps
            # its rows: the same crops, flips and mixup partners as one process
            indices = order[first : first + size]
            images = self.runtime.prepare_images(
                self.augmenter.train(self.data.train.images[indices], randomness.augment)
            )
            whole = Batch(images, self.data.train.labels[indices], indices)
            rows = slice(start - first, end - first)
            yield Batch(
                images[rows],
                whole.labels[rows],
                indices[rows],
                torch.arange(start, end, device=device),
                whole=whole,
                start=start - first,
            )

    def _streamed_batches(
        self, order: torch.Tensor, steps: int, randomness: EpochRandomness, branch: str
    ) -> Iterator[Batch]:
        """Streamed images: DataLoader workers decode this process's shares (persistent workers).

        Every drawn image carries its own augmentation seed, drawn for the whole epoch
        order from the epoch's generator, so the crops do not depend on the number of
        workers or processes, and a resumed run draws what an uninterrupted one does.
        """
        size = self.batch_sizes[branch]
        device = self.runtime.device
        seeds = torch.randint(
            2**62, (len(order),), generator=randomness.torch_generator(f"stream:{branch}")
        )
        bounds = [self._share(step, size, len(order)) for step in range(steps)]
        plan = [list(zip(order[a:b].tolist(), seeds[a:b].tolist(), strict=True)) for a, b in bounds]
        loader = self._loaders.get(branch)
        if loader is None:
            workers = self.config.data.num_workers
            batch_plan = _EpochBatches()
            loader = DataLoader(
                self.streamed_train,
                batch_sampler=batch_plan,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                persistent_workers=workers > 0,
            )
            self._loaders[branch] = loader
        loader.batch_sampler.batches = plan
        for (images, labels), (a, b) in zip(loader_batches(loader), bounds, strict=True):
            yield Batch(
                self.runtime.prepare_images(images.to(device, non_blocking=True)),
                labels.to(device, non_blocking=True),
                order[a:b].to(device),
                torch.arange(a, b, device=device),
            )

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
        context = StepContext(
            epoch=epoch,
            total_epochs=self.config.train.epochs,
            randomness=randomness,
            world=self.world,
        )
        steps = min(self.steps_per_epoch, max_steps or self.steps_per_epoch)
        loss_sum = torch.zeros((), device=self.runtime.device)
        # first step whose loss was not finite (-1: none); checked every few steps, not every step
        bad_step = torch.full((), -1, dtype=torch.int64, device=self.runtime.device)
        bad_value = torch.zeros((), device=self.runtime.device)
        check_every = self.config.train.check_finite_every
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
        streams = {
            branch: self._branch_batches(order, steps, randomness, branch)
            for branch, order in orders.items()
        }
        for step in bar:
            batches = {branch: next(stream) for branch, stream in streams.items()}
            local = sum(len(batch.labels) for batch in batches.values())
            step_loss = self.method.loss if self.ddp is None else self.ddp
            if not self.world.distributed:
                with self.runtime.autocast():
                    loss = step_loss(batches, context)
            else:
                # DDP averages gradients over processes; weighting each process's mean loss by its
                # share makes that the mean over the global batch even when shares differ in size
                # (weighted means take their denominator from the global batch: losses.reduction)
                total = sum(
                    min(self.batch_sizes[b], len(orders[b]) - step * self.batch_sizes[b])
                    for b in orders
                )
                with self.runtime.autocast(), global_batch(self.world.all_reduce, local / total):
                    loss = step_loss(batches, context)
                if local:
                    loss = loss * (local * self.world_size / total)
                else:  # a last global batch smaller than the process count left this one none:
                    # the mean over no images is nan; it adds nothing (zero gradients, still
                    # all-reduced so that every process steps together)
                    loss = loss.nan_to_num(0.0) * 0.0
            not_finite = ~torch.isfinite(loss.detach()) & (bad_step < 0)
            bad_value = torch.where(not_finite, loss.detach().float(), bad_value)
            bad_step.masked_fill_(not_finite, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach()
            images_seen += local
            if check_every and (step + 1) % check_every == 0:
                self._raise_if_not_finite(bad_step, bad_value, epoch)
        self._raise_if_not_finite(bad_step, bad_value, epoch)
        self.method.end_epoch(context)
        seconds = time.perf_counter() - start
        totals = self.world.all_reduce(
            torch.stack(
                [
                    loss_sum.double(),
                    torch.tensor(float(images_seen), device=loss_sum.device, dtype=torch.float64),
                ]
            )
        )
        return {
            "epoch": epoch + 1,
            "lr": rate,
            "train_loss": (totals[0] / (steps * self.world_size)).item() if steps else float("nan"),
            "seconds": seconds,
            "images_per_second": float(totals[1]) / seconds if seconds > 0 else float("nan"),
        }

    def _raise_if_not_finite(
        self, bad_step: torch.Tensor, bad_value: torch.Tensor, epoch: int
    ) -> None:
        """One host synchronisation: stop every process when any loss so far was nan or inf."""
        first = bad_step.clone()
        first.masked_fill_(first < 0, 2**62)
        step = int(self.world.all_reduce(first, "min").item())
        if step < 2**62:
            value = f"{bad_value.item()}" if int(bad_step.item()) == step else "nan or inf"
            raise TrainingError(f"the loss became {value} at epoch {epoch + 1}, step {step + 1}")

    # ---------------------------------------------------------------- evaluation

    def _evaluation_batches(
        self, split: LabelledImages | StreamedImages, size: int, order: torch.Tensor | None
    ) -> Iterator[torch.Tensor]:
        """This process's evaluation batches: a contiguous run of the one-process batches.

        ``order`` (a permutation of the split, or None for its own order) is the method's
        evaluation order (FFN's train-mode BN quirk); processes share its batches.
        """
        first_batch, end_batch = share_bounds(
            math.ceil(len(split) / size), self.rank, self.world_size
        )
        low, high = first_batch * size, min(end_batch * size, len(split))
        chosen = None if order is None else order[low:high]
        if isinstance(split, StreamedImages):
            key = (id(split), low, high, None if chosen is None else tuple(chosen.tolist()))
            if key not in self._loaders:
                workers = self.config.data.num_workers
                dataset = StreamedImageDataset(
                    split.paths, split.labels, self.streamed_transforms[1]
                )
                rows = range(low, high) if chosen is None else chosen.tolist()
                self._loaders[key] = DataLoader(
                    torch.utils.data.Subset(dataset, rows),
                    batch_size=size,
                    num_workers=workers,
                    pin_memory=self.runtime.device.type == "cuda",
                    persistent_workers=workers > 0 and high > low,
                )
            for images, _ in loader_batches(self._loaders[key]):
                yield images.to(self.runtime.device, non_blocking=True)
            return
        for start in range(low, high, size):
            if chosen is None:
                yield self.augmenter.evaluate(split.images[start : start + size])
            else:
                rows = chosen[start - low : start - low + size].to(split.images.device)
                yield self.augmenter.evaluate(split.images[rows])

    @torch.inference_mode()
    def predict(self, split: LabelledImages | StreamedImages) -> torch.Tensor:
        """Evaluation logits (float32, CPU) for a split, in its order, with the model in eval mode.

        The method may ask for its own batch size and image order (FFN's train-mode BN quirk).
        Under torchrun each process predicts its batches and every process receives all
        logits, in the split's order.
        """
        self.model.eval()
        size, order = self.method.evaluation_batching(len(split), self.config.train.eval_batch_size)
        outputs = []
        for images in self._evaluation_batches(split, size, order):
            with self.runtime.autocast():
                outputs.append(
                    self.method.predict(self.runtime.prepare_images(images)).float().cpu()
                )
        logits = torch.cat(outputs) if outputs else torch.empty((0, self.data.num_classes))
        logits = self.world.all_gather_rows(logits)
        if order is None:
            return logits
        in_split_order = torch.empty_like(logits)
        in_split_order[order] = logits
        return in_split_order

    def adapt_to_unlabelled(self, split: LabelledImages | StreamedImages) -> dict | None:
        """Let the method adapt on ``split``'s images (never its labels) before it is scored.

        Returns the method's record of what it learned (``results.json``
        ``test_time_adaptation``), or None when the method does not adapt (the default).
        Every process adapts on the whole split with the same seeded views.
        """
        from tailfuse.data.views import UnlabelledViews

        images = split.images if isinstance(split, LabelledImages) else None
        views = UnlabelledViews(
            images, self.augmenter, self.config.train.seed, self.runtime.prepare_images
        )
        self.model.eval()
        with self.runtime.autocast():
            return self.method.adapt_to_unlabelled(views)

    def evaluate(self, split: LabelledImages) -> dict:
        """All metrics of :func:`classification_metrics` on one split (ECE, NLL: loss scale).

        Samples with NaN or infinite logits count as wrong, and the run says how many.
        """
        metrics = classification_metrics(
            self.predict(split), split.labels, self.data.plan.groups, self.method.calibration_scale
        )
        warn_non_finite(
            metrics["non_finite_samples"],
            metrics["num_samples"],
            "evaluated images",
            self.world.is_main,
        )
        return metrics

    # -------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scaler": self.scaler.state_dict(),
            "method_modules": {
                name: module.state_dict() for name, module in self.method.modules_to_save().items()
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for name, module in self.method.modules_to_save().items():
            module.load_state_dict(state["method_modules"][name])
