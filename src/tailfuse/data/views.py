"""Two augmented views of unlabelled images, for test-time self-supervision.

:class:`UnlabelledViews` holds the images of one evaluation split (uint8, on the device)
and nothing else: no labels reach a method that adapts on it. Each batch is a pair of
independently augmented views of the same images, drawn in a seeded shuffled order; the
seed is derived from the recipe seed and the adaptation epoch only, so the views (and
what is learned from them) are the same on every run, every process and after a resume.

:func:`colour_distortion` is the SimCLR-style distortion TADE's test-time views add after
crop and flip (Zhang et al., NeurIPS 2022, authors' ``test_training_cifar.py``):
ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale with p 0.2, Gaussian blur
(σ ∈ [0.1, 2]) with p 0.2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from tailfuse.data.pipeline import BatchAugmenter
from tailfuse.data.randomness import derive_seed
from tailfuse.errors import ConfigError


def colour_distortion(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TADE's view distortion on uint8 (B, 3, H, W) images, one seeded draw per image.

    torchvision's v2 transforms draw from the global generator; it is seeded from
    ``generator`` and restored, as :meth:`BatchAugmenter.rand_augment` does. The blur
    kernel covers ±3σ of the largest σ (2.0), capped at the image size.
    """
    from torchvision.transforms import v2

    side = min(images.shape[-2:])
    kernel = min(13, side if side % 2 else side - 1)
    transform = v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=kernel, sigma=(0.1, 2.0))], p=0.2),
        ]
    )
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(image) for image in images.cpu()]).to(images.device)


class UnlabelledViews:
    """Pairs of augmented views of a split's images, without its labels.

    ``images``: uint8 (N, 3, H, W); ``augmenter``: the recipe's batched training
    augmentation (crop and flip, RandAugment when enabled); ``prepare``: the runtime's
    dtype / memory-format conversion of model inputs.
    """

    def __init__(
        self,
        images: torch.Tensor | None,
        augmenter: BatchAugmenter,
        seed: int,
        prepare: Callable[[torch.Tensor], torch.Tensor] = lambda images: images,
    ):
        self.images = images
        self.augmenter = augmenter
        self.seed = seed
        self.prepare = prepare

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def batches(
        self, batch_size: int, epoch: int, distort: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the images in a seeded random order: ``(view_1, view_2)`` per batch.

        Both views are the recipe's training augmentation of the same images, drawn
        independently; ``distort`` adds :func:`colour_distortion` to each.
        """
        if self.images is None:
            raise ConfigError(
                "test-time adaptation needs the evaluation images on the device "
                "(data.storage: device); streamed splits are not supported"
            )
        device = self.images.device
        order_generator = torch.Generator().manual_seed(
            derive_seed(self.seed, "unlabelled", epoch, "order")
        )
        augment = torch.Generator(device=device).manual_seed(
            derive_seed(self.seed, "unlabelled", epoch, "augment")
        )
        order = torch.randperm(len(self.images), generator=order_generator).to(device)
        for start in range(0, len(order), batch_size):
            chosen = self.images[order[start : start + batch_size]]
            yield self._view(chosen, augment, distort), self._view(chosen, augment, distort)

    def _view(
        self, images: torch.Tensor, generator: torch.Generator, distort: bool
    ) -> torch.Tensor:
        images = self.augmenter.crop_and_flip(images, generator)
        if self.augmenter.config.rand_augment:
            images = self.augmenter.rand_augment(images, generator)
        if distort:
            images = colour_distortion(images, generator)
        return self.prepare(self.augmenter.normalize(images))
