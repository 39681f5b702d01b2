"""Issue 9 items 9, 11, 12, 16, 21: stage-2 init, selection, CIFAR-10 MiSLAS recipes, data roots."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import tailfuse
from tailfuse.config import build_config, load_recipe
from tailfuse.data.prepare import with_absolute_paths
from tailfuse.engine.checkpoint import load_checkpoint
from tailfuse.errors import CheckpointError, DataError

from ..conftest import tiny_overrides
from ..fakes import write_cifar_pickles

STAGE1_BEST_TEST = (
    'init.overrides=["train.epochs=2","train.batch_size=32","train.eval_every=0",'
    '"train.selection=best_test"]'
)


# ---------------------------------------------------------- item 9: MiSLAS's CIFAR-10 settings


@pytest.mark.parametrize(
    # MiSLAS config/cifar10/cifar10_imb0{01,02}_stage2_mislas.yaml; IF 200 has none: IF 100's values
    ("factor", "head", "tail", "lr_factor"),
    [(200, 0.3, 0.0, 0.5), (100, 0.3, 0.0, 0.5), (50, 0.2, 0.0, 0.2)],
)
@pytest.mark.parametrize("variant", ["mislas", "mislas_h2t", "mislas_lws"])
def test_cifar10_mislas_recipes_use_mislas_cifar10_settings(factor, head, tail, lr_factor, variant):
    config = load_recipe(f"cifar10_lt_if{factor}_{variant}")
    smoothing = config.method.label_smoothing
    assert (smoothing.head, smoothing.tail, smoothing.shape) == (head, tail, "concave")
    assert config.schedule.lr_factor == lr_factor and config.optimizer.lr == 0.1
    assert (
        config.optimizer.weight_decay == 2e-4
        and config.train.epochs == 10
        and config.train.batch_size == 128
    )
    assert config.method.shift_bn is False
    assert config.method.name == ("mislas_lws" if variant == "mislas_lws" else "mislas")
    assert (config.method.h2t.ratio == 0.25) == variant.endswith("h2t")


# ---------------------------------------------------------- items 11 and 16: init.select, best_test


def test_init_select_and_best_test_from_the_initial_model(cifar10_jpeg_root, tmp_path):
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        STAGE1_BEST_TEST,
        f"init.run_dir={tmp_path / 'stage1'}",
    ]
    tailfuse.train(
        "cifar10_lt_quick_tau_norm", tmp_path / "tau", [*overrides, "init.select=best_test"]
    )
    stage1 = tmp_path / "stage1" / "checkpoints"
    # best_test evaluates every epoch, whatever eval_every says (item 16)
    records = [
        json.loads(line)
        for line in (tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [("test_top1" in record) for record in records] == [True, True]
    best = load_checkpoint(stage1 / "best_test.pt")["session"]["model"]
    stage2 = load_checkpoint(tmp_path / "tau" / "checkpoints" / "last.pt")["session"]["model"]
    assert all(
        torch.equal(best[key], stage2[key]) for key in best
    )  # tau_norm trains nothing (item 11)
    # the seeded stage 1 scores best at its first epoch, so best_test and last differ: a stage 2
    # that ignored init.select=best_test (started from last.pt) would fail here
    assert load_checkpoint(stage1 / "best_test.pt")["epoch"] == 1
    last = load_checkpoint(stage1 / "last.pt")["session"]["model"]
    assert not torch.equal(last["head.fc.weight"], stage2["head.fc.weight"])
    assert (
        yaml.safe_load((tmp_path / "tau" / "config.yaml").read_text())["init"]["select"]
        == "best_test"
    )

    # item 16: the H2T/MiSLAS recipes (init.inherit_best) let the initial model compete as epoch 0;
    # tau_norm does not train, so epoch 1 scores what epoch 0 scored and
    # the initial model stays best
    selected = [*overrides, "train.selection=best_test", "train.eval_every=0"]
    results = tailfuse.train("cifar10_lt_quick_tau_norm", tmp_path / "best", selected)
    assert results["selection"] == {"rule": "best_test", "epoch": 0}
    assert load_checkpoint(tmp_path / "best" / "checkpoints" / "best_test.pt")["epoch"] == 0

    # a run that never kept a best-on-validation checkpoint cannot give one
    with pytest.raises(CheckpointError, match="best_validation.pt"):
        tailfuse.train(
            "cifar10_lt_quick_tau_norm",
            tmp_path / "missing",
            [*overrides, "init.select=best_validation"],
        )


# ---------------------------------------------------------- item 12: FFN's subset-seed quirk


def test_stage1_on_another_subset_seed_only_when_asked(cifar10_jpeg_root, tmp_path):
    stage1 = 'init.overrides=["train.epochs=1","train.batch_size=32","train.eval_every=0"]'
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        stage1,
        f"init.run_dir={tmp_path / 'stage1'}",
    ]
    tailfuse.train(
        "cifar10_lt_quick_tau_norm", tmp_path / "quirk", [*overrides, "init.subset_seed=666"]
    )
    first = load_checkpoint(tmp_path / "stage1" / "checkpoints" / "last.pt")
    second = load_checkpoint(tmp_path / "quirk" / "checkpoints" / "last.pt")
    assert (
        first["config"]["data"]["subset_seed"] == 666
        and second["config"]["data"]["subset_seed"] == 0
    )
    assert first["data"]["class_counts"] == second["data"]["class_counts"]
    assert first["data"]["subset_checksum"] != second["data"]["subset_checksum"]
    # without the option the same stage-1 run is refused, as before
    with pytest.raises(CheckpointError, match="training subset|differs in data.subset_seed"):
        tailfuse.train("cifar10_lt_quick_tau_norm", tmp_path / "clean", overrides)


# ---------------------------------------------------------- item 21: data roots


def test_relative_data_root_is_stored_absolute(cifar10_jpeg_root, tmp_path, monkeypatch):
    monkeypatch.chdir(cifar10_jpeg_root.parent)
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        f"data.root={cifar10_jpeg_root.name}",
        "train.eval_every=0",
    ]
    tailfuse.train("cifar10_lt_quick", tmp_path / "run", overrides)
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["root"]
    assert stored == str(cifar10_jpeg_root.resolve())
    monkeypatch.chdir(tmp_path)  # evaluating from elsewhere finds the same data
    results = tailfuse.evaluate(tmp_path / "run" / "checkpoints" / "last.pt")
    assert results["test"]["num_samples"] == 100


def test_relative_pretrained_weights_are_made_absolute_data_roots_too(tmp_path, monkeypatch):
    """Places-LT's recipes name ./pretrained/...: a run stores the file it read, so eval,
    predict and --resume from another folder find it."""
    monkeypatch.chdir(tmp_path)
    recipe = {
        "model": {"weights": "./pretrained/resnet152.pth"},
        "data": {"root": "data/cifar10", "cache_dir": "/abs/cache"},
    }
    config = with_absolute_paths(build_config(recipe))
    assert config.model.weights == str(tmp_path / "pretrained" / "resnet152.pth")
    assert config.data.root == str(tmp_path / "data" / "cifar10")
    assert config.data.cache_dir == "/abs/cache"
    unchanged = build_config({"data": {"root": "/abs/data"}})
    assert with_absolute_paths(unchanged) is unchanged and unchanged.model.weights is None


class _OfflineCifar10:
    """Behaves as torchvision's CIFAR10 when the download fails: it creates the root first."""

    def __init__(self, root, train=True, download=False):
        import os

        os.makedirs(root, exist_ok=True)
        raise OSError("network unreachable")


class _DownloadingCifar10:
    """Writes torchvision's pickle layout under ``root`` as a successful download would."""

    def __init__(self, root, train=True, download=False):
        from pathlib import Path

        write_cifar_pickles(Path(root), "cifar10", 12, 2)


def test_a_failed_download_creates_no_folder(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _OfflineCifar10)
    root = tmp_path / "not" / "here"
    with pytest.raises(DataError, match="downloading it failed"):
        tailfuse.data_summary("cifar10_lt_quick", [f"data.root={root}", "data.download=true"])
    assert not (tmp_path / "not").exists()


def test_a_successful_download_lands_under_the_root(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _DownloadingCifar10)
    root = tmp_path / "data"
    summary = tailfuse.data_summary(
        "cifar10_lt_quick",
        [
            f"data.root={root}",
            "data.download=true",
            "data.max_per_class=12",
            "data.imbalance_factor=10",
        ],
    )
    assert (root / "cifar-10-batches-py" / "data_batch_1").is_file() and summary["class_counts"][
        0
    ] == 12
