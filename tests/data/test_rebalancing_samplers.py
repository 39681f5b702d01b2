"""Progressive, effective-number and CBEN samplers: class frequencies over many
draws, epochs, resume."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.data.randomness import EpochRandomness
from tailfuse.data.samplers import build_sampler, rank_share

from ..conftest import stop_training_at_epoch
from .test_samplers import assert_binomial_match

COUNTS = [500, 200, 80, 20, 5]
LABELS = torch.cat([torch.full((count,), c) for c, count in enumerate(COUNTS)])
DRAWS = 200_000


def frequencies(sampler) -> torch.Tensor:
    indices = sampler.epoch_indices(torch.Generator().manual_seed(0))
    assert len(indices) == DRAWS
    return torch.bincount(LABELS[indices], minlength=len(COUNTS)).double() / DRAWS


def test_progressive_moves_from_instance_to_balanced():
    sampler = build_sampler("progressive", LABELS, 5, num_samples=DRAWS)
    sampler.set_epoch(0, 4)  # t/T = 0: the instance distribution n_c / 805
    instance = torch.tensor([c / 805 for c in COUNTS], dtype=torch.float64)
    assert_binomial_match(frequencies(sampler), instance, DRAWS)
    sampler.set_epoch(2, 4)  # t/T = 1/2: half instance, half uniform (0.1 each)
    expected = [0.5 * c / 805 + 0.1 for c in COUNTS]  # 0.4106, 0.2242, 0.1497, 0.1124, 0.1031
    assert_binomial_match(frequencies(sampler), torch.tensor(expected, dtype=torch.float64), DRAWS)


def test_progressive_power_goes_from_power_one_to_zero():
    sampler = build_sampler("progressive_power", LABELS, 5, num_samples=DRAWS)
    sampler.set_epoch(0, 5)
    assert sampler.power() == 1.0
    sampler.set_epoch(2, 5)  # q = 1 - 2/4 = 0.5: square-root sampling
    roots = [math.sqrt(c) for c in COUNTS]  # 22.36, 14.14, 8.94, 4.47, 2.24 of 52.15
    square_root = torch.tensor([r / sum(roots) for r in roots], dtype=torch.float64)
    assert_binomial_match(frequencies(sampler), square_root, DRAWS)
    sampler.set_epoch(4, 5)  # the last epoch: class-balanced
    assert_binomial_match(frequencies(sampler), torch.full((5,), 0.2, dtype=torch.float64), DRAWS)
    sampler.set_epoch(0, 1)  # a one-epoch run: its only epoch is the last, class-balanced
    assert sampler.power() == 0.0


def test_effective_number_sampler_frequencies():
    # image weight (1-b)/(1-b^n), b = 0.9999; class mass n*(1-b)/(1-b^n) = 1.0252,
    # 1.0100, 1.0040, 1.0010, 1.0002: within 0.4 % of uniform, which the draws cannot tell apart
    mass = [c * 1e-4 / (1 - 0.9999**c) for c in COUNTS]
    sampler = build_sampler("effective_number", LABELS, 5, num_samples=DRAWS)
    expected = torch.tensor([m / sum(mass) for m in mass], dtype=torch.float64)
    assert torch.allclose(sampler.class_probabilities(), expected)
    assert_binomial_match(frequencies(sampler), expected, DRAWS)
    # so the draws are checked at b = 0.99, where the masses are 5.033, 2.309, 1.448, 1.098,
    # 1.020 (of 10.909): far from uniform
    sampler.beta = 0.99
    sharp = [c * 0.01 / (1 - 0.99**c) for c in COUNTS]
    expected = torch.tensor([m / sum(sharp) for m in sharp], dtype=torch.float64)
    assert torch.allclose(sampler.class_probabilities(), expected)
    assert_binomial_match(frequencies(sampler), expected, DRAWS)


def test_cben_uses_a_per_class_beta():
    from tailfuse.data.rebalancing_samplers import cben_betas

    betas = cben_betas(COUNTS)
    # delta = (log 500 - log n)/(log 500 - log 5): 0, 0.199, 0.398, 0.699, 1
    assert betas[0] == pytest.approx(0.9999) and betas[-1] == pytest.approx(0.99991)
    assert betas[3] == pytest.approx(0.9999 + 1e-5 * math.log(25) / math.log(100))
    cben = build_sampler("cben", LABELS, 5, num_samples=DRAWS)
    plain = build_sampler("effective_number", LABELS, 5)
    assert not torch.equal(cben.class_probabilities(), plain.class_probabilities())
    mass = [c * (1 - b) / (1 - b**c) for c, b in zip(COUNTS, betas, strict=True)]
    expected = torch.tensor([m / sum(mass) for m in mass], dtype=torch.float64)
    assert torch.allclose(cben.class_probabilities(), expected)
    # its draws follow class_probabilities as effective_number's do (checked at b = 0.99 above)
    assert_binomial_match(frequencies(cben), expected, DRAWS)


@pytest.mark.parametrize("name", ["progressive", "progressive_power", "effective_number", "cben"])
def test_an_epoch_is_the_same_when_drawn_again_after_a_resume(name):
    """A resumed run rebuilds its samplers and re-derives the epoch's
    generator: the same indices."""

    def epoch_order(epoch: int) -> torch.Tensor:
        sampler = build_sampler(name, LABELS, 5)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, 10)
        return sampler.epoch_indices(EpochRandomness(3, epoch).torch_generator("sampler:main"))

    first = epoch_order(6)
    assert torch.equal(first, epoch_order(6))
    assert not torch.equal(first, epoch_order(7))
    two_ranks = [rank_share(first[:64], rank, 2) for rank in (0, 1)]
    assert torch.equal(torch.cat(two_ranks), first[:64]) and len(two_ranks[0]) == 32


def test_the_training_session_sets_the_epoch_before_drawing(tmp_path):
    """A progressive sampler in a real session: epoch E-1 of E draws class-balanced (q = 0)."""
    import tailfuse  # noqa: F401
    from tailfuse.config import load_recipe
    from tailfuse.data.prepare import load_data
    from tailfuse.engine.runtime import make_runtime
    from tailfuse.engine.session import TrainingSession

    from ..fakes import write_cifar_pickles

    root = write_cifar_pickles(tmp_path, "cifar10", 20, 1)
    config = load_recipe(
        "cifar10_lt_quick_ce",
        [
            f"data.root={root}",
            "data.max_per_class=20",
            "data.imbalance_factor=10",
            "method.sampler=progressive_power",
            "train.epochs=3",
            "train.batch_size=8",
            "train.precision=fp32",
            "train.progress=false",
        ],
    )
    runtime = make_runtime(config.train)
    session = TrainingSession(config, load_data(config.data, runtime.device), runtime)
    sampler = session.samplers["main"]
    session.train_epoch(1, max_steps=1)
    assert (sampler.epoch, sampler.total_epochs, sampler.power()) == (1, 3, 0.5)
    session.train_epoch(2, max_steps=1)
    assert sampler.power() == 0.0


def test_a_run_with_a_progressive_sampler_stopped_in_epoch_2_resumes_exactly(tmp_path, monkeypatch):
    """The sampler's power depends on epoch / total epochs: a run stopped by Ctrl-C and
    resumed draws what the uninterrupted run drew and ends with the same weights."""
    import tailfuse
    from tailfuse.engine.checkpoint import load_checkpoint

    from ..fakes import write_cifar_pickles

    root = write_cifar_pickles(tmp_path / "data", "cifar10", 20, 1)
    overrides = [
        f"data.root={root}",
        "data.max_per_class=20",
        "data.imbalance_factor=10",
        "method.sampler=progressive_power",
        "train.epochs=3",
        "train.batch_size=8",
        "train.max_steps_per_epoch=3",
        "train.precision=fp32",
        "train.progress=false",
        "train.eval_every=0",
    ]
    tailfuse.train("cifar10_lt_quick_ce", tmp_path / "whole", overrides)
    train_normally = stop_training_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        tailfuse.train("cifar10_lt_quick_ce", tmp_path / "stopped", overrides)
    train_normally()
    tailfuse.train("cifar10_lt_quick_ce", tmp_path / "stopped", overrides, resume=True)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert whole["epoch"] == resumed["epoch"] == 3
    for key, value in whole["session"]["model"].items():
        assert torch.equal(value, resumed["session"]["model"][key]), key
