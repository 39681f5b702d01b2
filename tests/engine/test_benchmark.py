"""`tailfuse bench` counts the images each loop puts through the model, on real images.

A fake clock (one second between any two readings of the benchmark's timer) turns each rate
into the number of images the loop counted, so the counts are checked exactly.
"""

import itertools

import pytest

from tailfuse import api
from tailfuse.engine import benchmark

from ..conftest import tiny_overrides


@pytest.fixture
def one_second_per_reading(monkeypatch):
    clock = itertools.count()

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return float(next(clock))

    monkeypatch.setattr(benchmark, "time", FakeTime)


@pytest.mark.parametrize(
    ("recipe", "batches_per_step"),
    [("cifar10_lt_quick_ce", 1), ("cifar10_lt_quick_bbn", 2)],
)
def test_end_to_end_counts_every_batch_a_step_draws(
    cifar10_jpeg_root, one_second_per_reading, recipe, batches_per_step
):
    """BBN draws an instance and a reverse batch a step: twice the images of a CE step."""
    overrides = tiny_overrides(cifar10_jpeg_root, **{"train.batch_size": 16})
    result = api.bench(recipe, overrides, steps=2, rounds=1)
    assert result["model_only_images_per_second"] == [2 * 16]
    assert result["end_to_end_images_per_second"] == [2 * 16 * batches_per_step]


def test_a_whole_epoch_counts_its_short_last_batch(cifar10_jpeg_root, one_second_per_reading):
    overrides = tiny_overrides(cifar10_jpeg_root, **{"train.batch_size": 16})
    training_images = api.data_summary("cifar10_lt_quick_ce", overrides)["total"]
    assert training_images % 16, "the subset should leave a short last batch"
    result = api.bench("cifar10_lt_quick_ce", overrides, rounds=1)
    assert result["steps_per_round"] == -(-training_images // 16)
    assert result["end_to_end_images_per_second"] == [training_images]
