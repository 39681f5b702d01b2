"""The CUDA path (marker ``gpu``: run with ``-m gpu`` where CUDA exists; skipped elsewhere).

Written without a GPU at hand (see README, "GPU"): these tests have not been run yet.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tailfuse
from tailfuse.config import load_recipe
from tailfuse.data.prepare import load_data
from tailfuse.engine.runtime import make_runtime
from tailfuse.engine.session import TrainingSession

from ..conftest import tiny_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _session(root, **extra) -> TrainingSession:
    overrides = tiny_overrides(
        root, epochs=1, **{"train.device": "cuda", "train.precision": "bf16", **extra}
    )
    config = load_recipe("cifar10_lt_quick", overrides)
    runtime = make_runtime(config.train)
    data = load_data(config.data, runtime.device)
    torch.manual_seed(0)
    return TrainingSession(config, data, runtime)


def _synchronisations(session: TrainingSession, steps: int) -> int:
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            session.train_epoch(0, max_steps=steps)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(item.message) for item in caught)


def test_images_and_augmentation_live_on_the_gpu(cifar10_jpeg_root):
    session = _session(cifar10_jpeg_root)
    assert session.data.train.images.is_cuda and session.data.train.images.dtype == torch.uint8
    batch = next(session._branch_batches(torch.arange(32), 1, _randomness(session), "main"))
    assert batch.images.is_cuda and batch.images.is_contiguous(memory_format=torch.channels_last)


def _randomness(session):
    from tailfuse.data.randomness import EpochRandomness

    return EpochRandomness(0, 0, session.runtime.device)


def test_host_synchronisations_do_not_grow_with_the_steps(cifar10_jpeg_root):
    """bf16 has no loss scaler; with the finite-loss check at epoch end only, the step loop never
    waits for the GPU: an epoch of 2 steps and one of 5 synchronise equally often."""
    session = _session(
        cifar10_jpeg_root, **{"train.check_finite_every": 0, "data.max_per_class": 80}
    )
    assert session.steps_per_epoch >= 5
    _synchronisations(session, 1)  # warm-up: cuDNN autotuning, allocations
    assert _synchronisations(session, 2) == _synchronisations(session, 5)
    # positive control: the capture does see synchronisations (a check every step waits for
    # the GPU each step, so 5 steps synchronise more often than 2); without it, a capture that
    # recorded nothing would pass the equality above as 0 == 0
    checked = _session(
        cifar10_jpeg_root, **{"train.check_finite_every": 1, "data.max_per_class": 80}
    )
    _synchronisations(checked, 1)
    assert _synchronisations(checked, 5) > _synchronisations(checked, 2) > 0


def test_fp16_with_the_grad_scaler_trains_and_stays_finite(cifar10_jpeg_root, tmp_path):
    results = tailfuse.train(
        "cifar10_lt_quick",
        tmp_path / "run",
        tiny_overrides(
            cifar10_jpeg_root, epochs=1, **{"train.device": "cuda", "train.precision": "fp16"}
        ),
    )
    assert results["environment"]["precision"] == "fp16" and results["test"]["num_samples"] == 100


def test_compiled_model_gives_the_eager_losses(cifar10_jpeg_root):
    eager = _session(cifar10_jpeg_root, **{"train.precision": "fp32"})
    compiled = _session(cifar10_jpeg_root, **{"train.precision": "fp32", "train.compile": "true"})
    first, second = eager.train_epoch(0, max_steps=2), compiled.train_epoch(0, max_steps=2)
    assert abs(first["train_loss"] - second["train_loss"]) < 1e-3 * abs(first["train_loss"])
    assert set(eager.model.state_dict()) == set(
        compiled.model.state_dict()
    )  # checkpoints keep their keys


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices for NCCL")
def test_two_gpus_with_nccl_equal_one_gpu_with_sync_batchnorm(cifar10_jpeg_root, tmp_path):
    from .test_distributed import _largest_difference, _model, _torchrun

    overrides = tiny_overrides(
        cifar10_jpeg_root,
        epochs=1,
        **{
            "train.device": "cuda",
            "train.precision": "fp64",
            "train.sync_batchnorm": "true",
            "train.max_steps_per_epoch": 2,
            "train.deterministic": "true",
        },
    )
    tailfuse.train("cifar10_lt_quick", tmp_path / "one", overrides)
    _torchrun(
        [{"recipe": "cifar10_lt_quick", "overrides": overrides, "out": str(tmp_path / "two")}],
        tmp_path,
    )
    assert (
        _largest_difference(_model(tmp_path / "one")["model"], _model(tmp_path / "two")["model"])
        < 1e-6
    )
