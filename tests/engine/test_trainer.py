"""Training on real images: resume equals an uninterrupted run; selection; run-directory safety."""

from __future__ import annotations

import json
import re

import pytest
import torch

import tailfuse
from tailfuse.engine.checkpoint import load_checkpoint
from tailfuse.errors import CheckpointError, TailfuseError

from ..conftest import stop_training_at_epoch, tiny_overrides


def test_config_differences_name_every_changed_added_and_removed_nested_key():
    """What a resume compares: dotted keys, nested values, keys on one side only."""
    from tailfuse.engine.trainer import config_differences

    saved = {
        "train": {"epochs": 40, "lr": 0.1},
        "method": {"name": "dr", "h2t": {"ratio": 0.25}},
        "seed": 0,
    }
    current = {
        "train": {"epochs": 40, "lr": 0.2},
        "method": {"name": "dr", "h2t": {"ratio": 0.5, "mixing": "soft"}},
    }
    assert config_differences(saved, current) == [
        "method.h2t.mixing",
        "method.h2t.ratio",
        "seed",
        "train.lr",
    ]
    assert config_differences(saved, saved) == []


def test_class_checks_say_which_label_differs_or_how_many_classes():
    from tailfuse.engine.trainer import check_same_classes

    check_same_classes(["cat", "dog"], ["cat", "dog"], "resume")
    with pytest.raises(
        CheckpointError,
        match=r"^resume: the class folders differ from the ones it was trained on "
        r"\(label 1 is 'fox' here but was 'dog'\)$",
    ):
        check_same_classes(["cat", "dog", "eel"], ["cat", "fox", "eel"], "resume")
    with pytest.raises(CheckpointError, match=r"\(3 classes here, 2 in training\)$"):
        check_same_classes(["cat", "dog"], ["cat", "dog", "eel"], "init")


def test_a_stage2_method_without_a_trained_model_is_refused():
    from tailfuse.config import build_config
    from tailfuse.engine.trainer import check_starting_point
    from tailfuse.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"^method dr re-trains the classifier on a frozen, already trained "
        r"backbone: set init.recipe or init.checkpoint \(the stage-1 run\) or model.weights$",
    ):
        check_starting_point(build_config({"method": {"name": "dr"}}))
    check_starting_point(build_config({"method": {"name": "dr"}, "model": {"weights": "w.pth"}}))
    check_starting_point(build_config({"method": {"name": "erm"}}))  # stage 1 starts from scratch


def test_resumed_run_equals_uninterrupted_run(cifar10_jpeg_root, tmp_path, monkeypatch):
    overrides = tiny_overrides(cifar10_jpeg_root, epochs=2)
    tailfuse.train("cifar10_lt_quick", tmp_path / "straight", overrides)

    # the same recipe, interrupted during epoch 2, then resumed from the epoch-1 checkpoint
    partial = tmp_path / "partial"
    train_normally = stop_training_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        tailfuse.train("cifar10_lt_quick", partial, overrides)
    train_normally()
    assert load_checkpoint(partial / "checkpoints" / "last.pt")["epoch"] == 1
    tailfuse.train("cifar10_lt_quick", partial, overrides, resume=True)

    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["session"]
    resumed = load_checkpoint(partial / "checkpoints" / "last.pt")["session"]
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    lines = (partial / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]

    # each start is recorded, with the epoch it started from and the code that ran it
    from tailfuse.engine.provenance import git_commit

    starts = json.loads((partial / "results.json").read_text())["environment"]["starts"]
    assert [start["epoch"] for start in starts] == [0, 1]
    assert all(start["git_commit"] == git_commit() for start in starts)
    assert all(start["command"] and start["started"][:2] == "20" for start in starts)
    straight_results = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert [start["epoch"] for start in straight_results["environment"]["starts"]] == [0]


def test_resume_refuses_a_changed_recipe_and_a_reused_directory(cifar10_jpeg_root, tmp_path):
    overrides = tiny_overrides(cifar10_jpeg_root, epochs=1)
    tailfuse.train("cifar10_lt_quick", tmp_path / "run", overrides)
    with pytest.raises(TailfuseError, match="already holds a run"):
        tailfuse.train("cifar10_lt_quick", tmp_path / "run", overrides)
    with pytest.raises(CheckpointError, match="differs from the saved run in optimizer.lr"):
        tailfuse.train(
            "cifar10_lt_quick", tmp_path / "run", [*overrides, "optimizer.lr=0.5"], resume=True
        )


def test_results_hold_every_metric_and_selection_uses_validation(cifar10_jpeg_root, tmp_path):
    overrides = tiny_overrides(cifar10_jpeg_root, epochs=2, **{"data.validation_per_class": 5})
    results = tailfuse.train("cifar10_lt_quick", tmp_path / "run", overrides)
    assert results["selection"]["rule"] == "best_validation"
    assert results["validation"]["num_samples"] == 50
    assert (tmp_path / "run" / "checkpoints" / "best_validation.pt").is_file()
    test = results["test"]
    for key in (
        "top1",
        "top5",
        "per_class_accuracy",
        "group_accuracy",
        "macro_precision",
        "ece",
        "confusion_matrix",
    ):
        assert key in test
    assert set(test["group_accuracy"]) == {"many", "medium", "few"}
    assert test["num_samples"] == 100
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"]["top1"] == test["top1"]
    assert (tmp_path / "run" / "per_class_accuracy.png").stat().st_size > 1000
    assert "many accuracy" in (tmp_path / "run" / "report.md").read_text()
    # what a run records beside its metrics (compare, provenance, the report read these keys)
    assert results["method"] == "erm" and results["seed"] == 123 and results["epochs"] == 2
    final_epoch = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert results["final_epoch_test"]["top1"] == final_epoch["test_top1"]
    environment = results["environment"]
    assert environment["device"] == "cpu" and environment["precision"] == "fp32"
    assert environment["processes"] == 1 and environment["threads"] >= 1
    assert environment["machine"] and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", environment["finished"]
    )


def test_the_progress_line_of_an_epoch_without_steps_shows_no_nan_loss():
    """τ-norm trains nothing: its epoch line says so instead of printing "loss nan"."""
    from tailfuse.engine.trainer import _format_record

    trained = {
        "epoch": 3,
        "train_loss": 0.5,
        "lr": 0.1,
        "images_per_second": 250.0,
        "test_top1": 61.25,
    }
    trained["test_group_accuracy"] = {"many": 80.0, "few": 40.0}
    assert (
        _format_record(trained)
        == "epoch 3: loss 0.5000 lr 0.10000 (250 img/s) test 61.25 (many 80.0, few 40.0)"
    )
    idle = {**trained, "epoch": 1, "train_loss": float("nan"), "images_per_second": float("nan")}
    assert _format_record(idle) == "epoch 1: no training steps test 61.25 (many 80.0, few 40.0)"
    validated = {**trained, "validation_top1": 55.0}
    assert _format_record(validated) == (
        "epoch 3: loss 0.5000 lr 0.10000 (250 img/s) val 55.00 test 61.25 (many 80.0, few 40.0)"
    )


def test_a_glt_test_set_with_non_finite_logits_is_scored_wrong_and_warned_about(capsys):
    """Stub session and data: 1 of 3 images gets NaN logits; it counts wrong and the run says so."""
    from types import SimpleNamespace

    from tailfuse.engine.trainer import glt_protocols

    split = SimpleNamespace(labels=torch.tensor([0, 1, 1]), attributes=None)
    logits = torch.tensor([[2.0, 0.0], [float("nan"), 1.0], [0.0, 1.0]])
    session = SimpleNamespace(predict=lambda _: logits, world=SimpleNamespace(is_main=True))
    plan = SimpleNamespace(glt_train_set="glt", groups={"many": [0], "few": [1]})
    data = SimpleNamespace(named_tests={"test_bbl": split}, plan=plan, num_classes=2)
    protocols = glt_protocols(session, data)
    metrics = protocols["test_bbl"]["metrics"]
    assert protocols["test_bbl"]["protocol"] == "GLT" and metrics["non_finite_samples"] == 1
    assert metrics["overall"]["accuracy"] == pytest.approx(200.0 / 3.0)  # 2 of 3 right
    assert capsys.readouterr().err == (
        "warning: 1 of 3 images of GLT test set test_bbl got NaN or infinite logits "
        "(a diverged model?); they count as wrong\n"
    )
    session.world.is_main = False  # the other processes of a distributed run stay quiet
    glt_protocols(session, data)
    assert capsys.readouterr().err == ""


def test_the_non_finite_warning_names_the_count_and_only_rank_0_prints_it(capsys):
    from tailfuse.engine.session import warn_non_finite

    warn_non_finite(2, 50, "evaluated images", is_main=True)
    assert capsys.readouterr().err == (
        "warning: 2 of 50 evaluated images got NaN or infinite logits "
        "(a diverged model?); they count as wrong\n"
    )
    warn_non_finite(0, 50, "evaluated images", is_main=True)  # nothing wrong: nothing said
    warn_non_finite(2, 50, "evaluated images", is_main=False)  # another rank says it
    assert capsys.readouterr().err == ""


def test_eval_needs_no_pretrained_file_the_checkpoint_started_from(cifar10_jpeg_root, tmp_path):
    """model.weights (the ImageNet file training started from) is not read by ``eval``: the
    checkpoint holds every weight, so the evaluation equals the training run's own."""
    import torchvision

    from tailfuse.engine.trainer import evaluate_checkpoint

    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1, **{"data.max_per_class": 10}),
        "model.backbone=resnet50",
        f"model.weights={weights}",
    ]
    trained = tailfuse.train("cifar10_lt_quick", tmp_path / "run", overrides)
    weights.unlink()
    evaluated = evaluate_checkpoint(tmp_path / "run", tmp_path / "eval")
    assert evaluated["test"]["confusion_matrix"] == trained["test"]["confusion_matrix"]
    assert evaluated["test"]["top1"] == trained["test"]["top1"]
