"""Shared fixtures: the real CIFAR-10 JPEG copy, a per-session decode cache, tiny recipes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from .fakes import REPOSITORY, SHARED_CIFAR10_JPEG  # noqa: F401 (REPOSITORY: for the tests)


def pytest_configure(config) -> None:
    """Under pytest-xdist, divide the CPU threads between the workers (and the commands they
    start), so two workers on two cores do not each spin two threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (len(os.sched_getaffinity(0)) or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cifar10_jpeg_root() -> Path:
    """The shared ImageFolder copy of CIFAR-10 (real images). CI must have it."""
    if not (SHARED_CIFAR10_JPEG / "train").is_dir():
        message = (
            f"real CIFAR-10 JPEG copy not found at {SHARED_CIFAR10_JPEG} "
            "(set TAILFUSE_CIFAR10_JPEG)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_CIFAR10_JPEG


@pytest.fixture(scope="session", autouse=True)
def decode_cache(tmp_path_factory) -> Path:
    """A fresh decode cache per test session, so the tests exercise decoding too."""
    cache = tmp_path_factory.mktemp("decode-cache")
    previous = os.environ.get("TAILFUSE_CACHE")
    os.environ["TAILFUSE_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("TAILFUSE_CACHE", None)
    else:
        os.environ["TAILFUSE_CACHE"] = previous


def tiny_overrides(root: Path, epochs: int = 2, **extra: object) -> list[str]:
    """Overrides that turn a CIFAR-10-LT recipe into a seconds-long run on real images."""
    values = {
        "data.root": str(root),
        "data.max_per_class": 40,
        "data.imbalance_factor": 10,
        "data.test_per_class": 10,
        "train.epochs": epochs,
        "train.batch_size": 32,
        "train.progress": "false",
        "train.eval_every": 1,
        "train.precision": "fp32",
        "schedule.warmup_epochs": 1,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def stop_training_at_epoch(monkeypatch, epoch: int = 1):
    """Make training raise KeyboardInterrupt (a Ctrl-C) when 0-based ``epoch`` starts, after
    the previous epoch's checkpoint; call the returned function to train normally again."""
    from tailfuse.engine import session as session_module

    original = session_module.TrainingSession.train_epoch

    def stopped(self, current, **kwargs):
        if current == epoch:
            raise KeyboardInterrupt
        return original(self, current, **kwargs)

    monkeypatch.setattr(session_module.TrainingSession, "train_epoch", stopped)
    return lambda: monkeypatch.setattr(session_module.TrainingSession, "train_epoch", original)
