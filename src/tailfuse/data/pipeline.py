"""Batched augmentation on the device holding the images (uint8 in, float out).

Pad-and-crop and horizontal flip are one gather per batch (the flip folds into the
column index), then conversion and normalisation; mixup mixes a normalised batch with a
permutation of itself. Equivalent to torchvision's RandomCrop(32, padding=4, fill=0) →
RandomHorizontalFlip → ToTensor → Normalize, drawn per image from a seeded generator.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tailfuse.config import AugmentConfig


class BatchAugmenter:
    """Training and evaluation transforms for uint8 (B, 3, H, W) batches on one device."""

    def __init__(self, config: AugmentConfig, device: torch.device | str = "cpu"):
        self.config = config
        device = torch.device(device)
        self.mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inverse_std = 1.0 / (torch.tensor(config.std, device=device).view(1, 3, 1, 1) * 255.0)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 → float32, ``(x/255 − mean) / std``."""
        return (images.float() - self.mean) * self.inverse_std

    def crop_and_flip(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop after zero padding, and a random horizontal flip, per image."""
        batch, channels, height, width = images.shape
        padding = self.config.crop_padding
        device = images.device
        if padding == 0 and not self.config.horizontal_flip:
            return images
        if padding:
            images = F.pad(images, (padding, padding, padding, padding))
        span = 2 * padding + 1
        row_offset = torch.randint(span, (batch, 1), generator=generator, device=device)
        col_offset = torch.randint(span, (batch, 1), generator=generator, device=device)
        rows = row_offset + torch.arange(height, device=device)
        columns = torch.arange(width, device=device).expand(batch, width)
        if self.config.horizontal_flip:
            flip = torch.rand((batch, 1), generator=generator, device=device) < 0.5
            columns = torch.where(flip, width - 1 - columns, columns)
        columns = columns + col_offset
        batch_index = torch.arange(batch, device=device).view(batch, 1, 1, 1)
        channel_index = torch.arange(channels, device=device).view(1, channels, 1, 1)
        return images[
            batch_index,
            channel_index,
            rows.view(batch, 1, height, 1),
            columns.view(batch, 1, 1, width),
        ]

    def rand_augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """torchvision's RandAugment on each uint8 image, seeded from
        ``generator`` (resume-safe)."""
        from torchvision.transforms import v2

        transform = v2.RandAugment(
            num_ops=self.config.rand_augment_ops, magnitude=self.config.rand_augment_magnitude
        )
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([transform(image) for image in images.cpu()]).to(images.device)

    def train(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training transform of one batch: crop and flip, RandAugment
        when enabled, normalise."""
        images = self.crop_and_flip(images, generator)
        if self.config.rand_augment:
            images = self.rand_augment(images, generator)
        return self.normalize(images)

    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluation transform: normalisation only."""
        return self.normalize(images)


def mixup(
    images: torch.Tensor,
    alpha: float,
    numpy_rng: np.random.Generator,
    generator: torch.Generator,
    pool: torch.Tensor | None = None,
    start: int = 0,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Input mixup (Zhang et al. 2018): one λ ~ Beta(α, α) per batch, a random partner each.

    Returns the mixed images, the partners' positions and λ; the loss is
    ``λ·L(y) + (1−λ)·L(y[partner])``. Under DDP ``images`` are rows ``start:`` of the
    global batch ``pool`` (or the rows ``rows`` of it, when they are not contiguous): the
    permutation is drawn over the whole global batch and the partners come from it, so
    each process mixes exactly as one process would; the partners' labels are then
    ``pool_labels[partner]``.
    """
    lam = float(numpy_rng.beta(alpha, alpha)) if alpha > 0 else 1.0
    pool = images if pool is None else pool
    permutation = torch.randperm(pool.shape[0], generator=generator, device=images.device)
    if rows is None:
        partner = permutation[start : start + images.shape[0]]
    else:
        partner = permutation[rows.to(permutation.device)]
    mixed = lam * images + (1.0 - lam) * pool[partner]
    return mixed, partner, lam


# ----------------------------------------------------------------- streamed (large) images


def streamed_transforms(config: AugmentConfig):
    """torchvision transforms of the ``imagenet`` kind: (training, evaluation)."""
    from torchvision.transforms import v2

    normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)]
    training = [
        v2.RandomResizedCrop(config.crop_size, scale=tuple(config.crop_scale), antialias=True)
    ]
    if config.horizontal_flip:
        training.append(v2.RandomHorizontalFlip())
    if config.rand_augment:
        training.append(
            v2.RandAugment(num_ops=config.rand_augment_ops, magnitude=config.rand_augment_magnitude)
        )
    if config.color_jitter > 0:
        jitter = config.color_jitter
        training.append(
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0)
        )
    evaluation = [v2.Resize(config.resize, antialias=True), v2.CenterCrop(config.crop_size)]
    return v2.Compose([*training, *normalize]), v2.Compose([*evaluation, *normalize])


class StreamedImageDataset(torch.utils.data.Dataset):
    """Images decoded from files on demand (DataLoader workers), with a torchvision transform.

    An item is an index, or ``(index, seed)``: the random transform of that draw then uses
    the global generator seeded with ``seed`` (restored afterwards), so the augmentation
    of a drawn image depends on its seed only, not on which worker or process decodes it.
    """

    def __init__(self, paths: list[str], labels: torch.Tensor, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]):
        from torchvision.io import ImageReadMode, decode_image, read_file

        from tailfuse.errors import DataError

        index, seed = item if isinstance(item, tuple) else (item, None)
        try:
            image = decode_image(read_file(self.paths[index]), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as error:
            raise DataError(f"cannot decode image {self.paths[index]}: {error}") from None
        if seed is None:
            return self.transform(image), self.labels[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), self.labels[index]


def loader_batches(loader: torch.utils.data.DataLoader):
    """Iterate ``loader``; a failure inside a worker becomes one :class:`DataError` line.

    PyTorch re-raises a worker's exception with the worker's whole traceback as its
    message; the last line (``DataError: cannot decode image PATH: ...``) is what a user
    needs, and a worker killed by the system is a data-loading failure too.
    """
    from tailfuse.errors import DataError

    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - only worker failures are rewritten
            message = str(error)
            if message.startswith("Caught ") and "DataLoader worker" in message:
                last = [line for line in message.splitlines() if line.strip()][-1].strip()
                last = last.removeprefix("tailfuse.errors.DataError: ")
                raise DataError(f"a data-loading worker failed: {last}") from None
            if isinstance(error, RuntimeError) and message.startswith("DataLoader worker"):
                raise DataError(
                    f"{' '.join(message.split())} (out of memory? lower data.num_workers)"
                ) from None
            raise
        yield batch
