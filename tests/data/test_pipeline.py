"""Batched augmentation: exact crops and flips, normalisation, seeded determinism, mixup."""

from __future__ import annotations

import numpy as np
import torch

from tailfuse.config import AugmentConfig
from tailfuse.data.pipeline import BatchAugmenter, mixup


def images(batch: int = 8) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )


def test_each_output_is_a_padded_crop_of_its_input_possibly_flipped():
    augmenter = BatchAugmenter(AugmentConfig(crop_padding=4, horizontal_flip=True))
    source = images(16)
    output = augmenter.crop_and_flip(source, torch.Generator().manual_seed(1))
    assert output.shape == source.shape and output.dtype == torch.uint8
    padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
    for index in range(len(source)):
        candidates = [
            window
            for top in range(9)
            for left in range(9)
            for window in (padded[index, :, top : top + 32, left : left + 32],)
            for window in (window, window.flip(2))
        ]
        assert any(torch.equal(output[index], candidate) for candidate in candidates)


def test_crops_and_flips_vary_across_the_batch():
    augmenter = BatchAugmenter(AugmentConfig())
    source = images(1).expand(64, -1, -1, -1).contiguous()
    output = augmenter.crop_and_flip(source, torch.Generator().manual_seed(2))
    distinct = {output[i].numpy().tobytes() for i in range(64)}
    assert len(distinct) > 30


def test_no_padding_no_flip_is_identity():
    augmenter = BatchAugmenter(AugmentConfig(crop_padding=0, horizontal_flip=False))
    source = images()
    assert torch.equal(augmenter.crop_and_flip(source, torch.Generator()), source)


def test_normalisation_matches_to_tensor_then_normalize():
    config = AugmentConfig()
    source = images(2)
    expected = (source.float() / 255 - torch.tensor(config.mean).view(1, 3, 1, 1)) / torch.tensor(
        config.std
    ).view(1, 3, 1, 1)
    assert torch.allclose(BatchAugmenter(config).evaluate(source), expected, atol=1e-5)


def test_same_seed_gives_the_same_batch():
    augmenter = BatchAugmenter(AugmentConfig())
    first = augmenter.train(images(), torch.Generator().manual_seed(5))
    second = augmenter.train(images(), torch.Generator().manual_seed(5))
    third = augmenter.train(images(), torch.Generator().manual_seed(6))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_mixup_mixes_with_a_permutation():
    batch = torch.randn(6, 3, 4, 4)
    mixed, permutation, lam = mixup(
        batch, 1.0, np.random.default_rng(0), torch.Generator().manual_seed(0)
    )
    assert 0.0 <= lam <= 1.0
    assert sorted(permutation.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * batch + (1 - lam) * batch[permutation])
    expected_lam = float(np.random.default_rng(0).beta(1.0, 1.0))
    assert lam == expected_lam


def test_rand_augment_is_seeded_per_batch_and_changes_images():
    from tailfuse.config import AugmentConfig
    from tailfuse.data.pipeline import BatchAugmenter

    images = torch.randint(
        0, 256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    plain = BatchAugmenter(AugmentConfig(crop_padding=0, horizontal_flip=False))
    augmented = BatchAugmenter(
        AugmentConfig(
            crop_padding=0, horizontal_flip=False, rand_augment=True, rand_augment_magnitude=15
        )
    )

    def run(augmenter, seed):
        return augmenter.train(images, torch.Generator().manual_seed(seed))

    assert torch.equal(run(augmented, 1), run(augmented, 1))  # same stream, same policy
    assert not torch.equal(run(augmented, 1), run(plain, 1))
    assert not torch.equal(run(augmented, 1), run(augmented, 2))
    assert run(augmented, 1).shape == (6, 3, 32, 32)
    # with no crop or flip, the stream's first draw seeds torchvision's RandAugment for the batch
    from torchvision.transforms import v2

    seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(1)).item())
    torch.manual_seed(seed)
    reference = v2.RandAugment(num_ops=2, magnitude=15)
    expected = torch.stack([reference(image) for image in images])
    assert torch.equal(run(augmented, 1), plain.normalize(expected))
