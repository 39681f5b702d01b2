"""Samplers draw the class distribution they promise (fixed seed, stated tolerance)."""

from __future__ import annotations

import pytest
import torch

from tailfuse.data.samplers import build_sampler, rank_share
from tailfuse.errors import ConfigError

COUNTS = [500, 200, 80, 20, 5]
LABELS = torch.cat([torch.full((count,), c) for c, count in enumerate(COUNTS)])


def frequencies(name: str, draws: int = 200_000) -> torch.Tensor:
    sampler = build_sampler(name, LABELS, len(COUNTS), num_samples=draws)
    indices = sampler.epoch_indices(torch.Generator().manual_seed(0))
    assert len(indices) == draws
    return torch.bincount(LABELS[indices], minlength=len(COUNTS)).double() / draws


def assert_binomial_match(observed: torch.Tensor, expected: torch.Tensor, draws: int) -> None:
    """Each class's observed frequency within 5 binomial standard deviations of its expected
    probability: tight enough that a sampler never drawing a 0.6 % class fails (a fixed
    ``atol=0.01`` let it pass)."""
    bound = 5 * (expected * (1 - expected) / draws).sqrt()
    assert ((observed - expected).abs() <= bound).all(), (observed.tolist(), expected.tolist())


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("instance", [float(c) for c in COUNTS]),
        ("class_balanced", [1.0] * 5),
        ("square_root", [c**0.5 for c in COUNTS]),
        ("reverse", [1.0 / c for c in COUNTS]),
        ("class_aware", [1.0] * 5),
    ],
)
def test_class_frequencies_match_their_probabilities(name, weights):
    expected = torch.tensor(weights, dtype=torch.float64)
    expected /= expected.sum()
    assert_binomial_match(frequencies(name), expected, 200_000)


def test_instance_sampler_is_a_permutation():
    sampler = build_sampler("instance", LABELS, 5)
    order = sampler.epoch_indices(torch.Generator().manual_seed(3))
    assert sorted(order.tolist()) == list(range(len(LABELS)))


def test_class_balanced_draws_images_uniformly_within_a_class():
    sampler = build_sampler("class_balanced", LABELS, 5, num_samples=100_000)
    indices = sampler.epoch_indices(torch.Generator().manual_seed(1))
    tail = indices[LABELS[indices] == 4]
    per_image = torch.bincount(tail - 800, minlength=5).double() / len(tail)
    assert torch.allclose(per_image, torch.full((5,), 0.2, dtype=torch.float64), atol=0.015)


def test_class_aware_takes_four_consecutive_images_per_class():
    sampler = build_sampler("class_aware", LABELS, 5)
    indices = sampler.epoch_indices(torch.Generator().manual_seed(2))
    blocks = LABELS[indices][: (len(indices) // 4) * 4].view(-1, 4)
    assert (blocks == blocks[:, :1]).all()
    # a class's images repeat only after all of them were drawn
    tail_draws = indices[LABELS[indices] == 4][:5]
    assert sorted(tail_draws.tolist()) == list(range(800, 805))


def test_same_seed_same_order_different_seed_different_order():
    sampler = build_sampler("class_balanced", LABELS, 5)
    first = sampler.epoch_indices(torch.Generator().manual_seed(7))
    again = sampler.epoch_indices(torch.Generator().manual_seed(7))
    other = sampler.epoch_indices(torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_rank_share_partitions_a_global_batch():
    batch = torch.arange(10)
    shares = [rank_share(batch, rank, 3) for rank in range(3)]
    assert torch.equal(torch.cat(shares), batch)
    assert [len(share) for share in shares] == [4, 3, 3]


def test_unknown_sampler_and_empty_class_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        build_sampler("nope", LABELS, 5)
    with pytest.raises(ConfigError, match=r"classes \[5\] have no training images"):
        build_sampler("instance", LABELS, 6)


def test_class_aware_epoch_length_is_the_largest_class_times_c_capped_at_4n():
    from tailfuse.data.samplers import class_aware_epoch_length

    # the GLT authors' ClassAwareSampler: min(max_c n_c * C, 4 N)
    assert class_aware_epoch_length([50, 20, 8, 3]) == 200  # 50 * 4 = 200 < 4 * 81 = 324
    assert class_aware_epoch_length([100, 5, 5, 5, 5]) == 480  # 100 * 5 = 500 > 4 * 120 = 480
    assert class_aware_epoch_length(COUNTS) == 2500  # 500 * 5 = 2500 < 4 * 805 = 3220


def test_class_aware_visits_classes_in_cycles_and_reshuffles_a_class_after_it_is_used_up():
    counts = [7, 3, 1, 2]
    labels = torch.cat([torch.full((count,), c) for c, count in enumerate(counts)])
    sampler = build_sampler(
        "class_aware", labels, 4, num_samples=4 * 4 * 3
    )  # 3 cycles of the 4 classes
    indices = sampler.epoch_indices(torch.Generator().manual_seed(5))
    visits = labels[indices].view(-1, 4)[:, 0]
    for cycle in visits.view(3, 4):
        assert sorted(cycle.tolist()) == [0, 1, 2, 3]
    # class 1 (3 images) drawn 12 times: every round of 3 is a permutation of its images 7, 8, 9
    draws = indices[labels[indices] == 1].view(4, 3)
    for round_ in draws:
        assert sorted(round_.tolist()) == [7, 8, 9]
    assert (indices[labels[indices] == 2] == 10).all()  # a one-image class repeats its image
