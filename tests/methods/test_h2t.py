"""The H2T operator replaces exactly the channels it says, and only in training."""

from __future__ import annotations

import pytest
import torch

from tailfuse.methods.h2t import fuse_channels, fused_channel_count


def maps(batch: int = 4, channels: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    fused = torch.randn(batch, channels, 8, 8, generator=generator)
    fusing = torch.randn(batch, channels, 8, 8, generator=generator) + 100.0  # never equal to fused
    return fused, fusing


def replaced_channels(
    output: torch.Tensor, fused: torch.Tensor, fusing: torch.Tensor
) -> torch.Tensor:
    """(B, C) bool: channel taken whole from the donor; asserts every other channel is untouched."""
    from_donor = (output == fusing).flatten(2).all(dim=2)
    untouched = (output == fused).flatten(2).all(dim=2)
    assert bool((from_donor ^ untouched).all()), "a channel is neither the donor's nor the original"
    return from_donor


@pytest.mark.parametrize(
    ("ratio", "channels", "expected"),
    [
        (0.25, 64, 16),
        (0.25, 2048, 512),
        (0.4, 64, 25),
        (0.29, 100, 28),
        (0.0, 64, 0),
        (1.0, 64, 64),
    ],
)
def test_channel_count_is_floor_of_p_times_c(ratio, channels, expected):
    assert fused_channel_count(channels, ratio) == expected


def test_exactly_floor_p_c_channels_replaced_shared_across_the_batch():
    fused, fusing = maps()
    output = fuse_channels(fused, fusing, 0.25, torch.Generator().manual_seed(1))
    chosen = replaced_channels(output, fused, fusing)
    assert chosen.sum(dim=1).tolist() == [16, 16, 16, 16]
    assert (chosen == chosen[:1]).all()  # the same channels for every sample


def test_values_come_from_the_index_aligned_donor_and_inputs_are_untouched():
    fused, fusing = maps()
    fused_before, fusing_before = fused.clone(), fusing.clone()
    output = fuse_channels(fused, fusing, 0.5, torch.Generator().manual_seed(2))
    chosen = replaced_channels(output, fused, fusing)[0]
    for sample in range(4):
        assert torch.equal(output[sample, chosen], fusing[sample, chosen])
        assert torch.equal(output[sample, ~chosen], fused[sample, ~chosen])
    assert torch.equal(fused, fused_before) and torch.equal(fusing, fusing_before)


def test_a_fresh_subset_each_call():
    fused, fusing = maps()
    generator = torch.Generator().manual_seed(3)
    first = replaced_channels(fuse_channels(fused, fusing, 0.25, generator), fused, fusing)[0]
    second = replaced_channels(fuse_channels(fused, fusing, 0.25, generator), fused, fusing)[0]
    assert not torch.equal(first, second)


def test_ratio_zero_is_identity():
    fused, fusing = maps()
    assert torch.equal(fuse_channels(fused, fusing, 0.0, torch.Generator()), fused)


def test_per_sample_variant_draws_a_subset_per_sample():
    fused, fusing = maps(batch=8)
    output = fuse_channels(
        fused, fusing, 0.25, torch.Generator().manual_seed(4), channels="per_sample"
    )
    chosen = replaced_channels(output, fused, fusing)
    assert chosen.sum(dim=1).tolist() == [16] * 8
    assert len({tuple(row.tolist()) for row in chosen}) > 1


def test_soft_variant_is_a_convex_mix():
    fused, fusing = maps()
    output = fuse_channels(fused, fusing, 0.3, torch.Generator(), mixing="soft")
    assert torch.allclose(output, 0.7 * fused + 0.3 * fusing)


def test_multi_expert_maps_get_independent_subsets():
    experts = [maps() for _ in range(3)]
    fused = [pair[0] for pair in experts]
    fusing = [pair[1] for pair in experts]
    output = fuse_channels(fused, fusing, 0.25, torch.Generator().manual_seed(5))
    subsets = [replaced_channels(o, f, d)[0] for o, f, d in zip(output, fused, fusing, strict=True)]
    assert all(int(s.sum()) == 16 for s in subsets)
    assert not (torch.equal(subsets[0], subsets[1]) and torch.equal(subsets[1], subsets[2]))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_channels(torch.zeros(2, 4, 2, 2), torch.zeros(3, 4, 2, 2), 0.5, torch.Generator())


def test_a_ratio_that_gives_one_channel_replaces_exactly_one():
    """p = 0.25 of C = 4: floor(1.0) = 1 channel from the donor (not none)."""
    fused, fusing = maps(channels=4)
    chosen = replaced_channels(
        fuse_channels(fused, fusing, 0.25, torch.Generator().manual_seed(1)), fused, fusing
    )
    assert chosen.sum(dim=1).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("channels", ["shared", "per_sample"])
def test_the_subsets_come_from_the_given_generator_alone(channels):
    """Two generators seeded alike give the same subsets, whatever the global RNG does between
    them; list inputs (experts) draw from that generator too, one expert after another."""
    fused, fusing = maps()
    torch.manual_seed(11)
    first = fuse_channels(fused, fusing, 0.25, torch.Generator().manual_seed(6), channels=channels)
    torch.manual_seed(12)
    second = fuse_channels(fused, fusing, 0.25, torch.Generator().manual_seed(6), channels=channels)
    assert torch.equal(first, second)
    generator = torch.Generator().manual_seed(6)
    expected = [fuse_channels(fused, fusing, 0.25, generator, channels=channels) for _ in range(2)]
    torch.manual_seed(13)
    listed = fuse_channels(
        [fused, fused], [fusing, fusing], 0.25, torch.Generator().manual_seed(6), channels=channels
    )
    assert all(torch.equal(a, b) for a, b in zip(listed, expected, strict=True))


def test_soft_mixing_reaches_every_expert_map():
    experts = [maps() for _ in range(2)]
    output = fuse_channels(
        [e[0] for e in experts], [e[1] for e in experts], 0.3, torch.Generator(), mixing="soft"
    )
    for (fused, fusing), mixed in zip(experts, output, strict=True):
        assert torch.allclose(mixed, 0.7 * fused + 0.3 * fusing)
