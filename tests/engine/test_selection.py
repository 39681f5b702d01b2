"""Model selection on a run whose validation and test curves disagree.

Training is replaced by a marker: after epoch e the head's first bias holds e, so every
saved model says which epoch it is. Evaluation is the real one, except that top-1 is read
from a scripted table per split and marker. Validation peaks at epoch 2 (tied at 3), test
at epoch 3: ``best_validation`` must report epoch 2 and the test score of epoch 2's model.
"""

from __future__ import annotations

import json

import pytest
import torch

import tailfuse
from tailfuse.engine import session as session_module
from tailfuse.engine.tsne import selected_checkpoint
from tailfuse.errors import ConfigError

from ..conftest import tiny_overrides

VALIDATION_TOP1 = {1: 10.0, 2: 30.0, 3: 30.0}
TEST_TOP1 = {1: 50.0, 2: 10.0, 3: 90.0}


@pytest.fixture
def scripted_training(monkeypatch):
    original_evaluate = session_module.TrainingSession.evaluate

    def train_epoch(self, epoch, progress=False, max_steps=None):
        with torch.no_grad():
            self.model.head.fc.bias[0] = float(epoch + 1)
        return {
            "epoch": epoch + 1,
            "lr": 0.1,
            "train_loss": 1.0,
            "seconds": 1.0,
            "images_per_second": 1.0,
        }

    def evaluate(self, split):
        metrics = original_evaluate(self, split)
        marker = round(float(self.model.head.fc.bias[0].detach()))
        table = VALIDATION_TOP1 if split is self.data.validation else TEST_TOP1
        metrics["top1"] = table[marker]
        return metrics

    monkeypatch.setattr(session_module.TrainingSession, "train_epoch", train_epoch)
    monkeypatch.setattr(session_module.TrainingSession, "evaluate", evaluate)


@pytest.mark.parametrize(
    ("selection", "rule", "epoch", "test_top1"),
    [
        ("best_validation", "best_validation", 2, 10.0),
        ("best_test", "best_test", 3, 90.0),
        ("auto", "best_validation", 2, 10.0),
    ],  # auto with a validation split: its best epoch
)
def test_the_selected_epoch_and_its_test_score(
    cifar10_jpeg_root, tmp_path, scripted_training, selection, rule, epoch, test_top1
):
    overrides = tiny_overrides(
        cifar10_jpeg_root,
        epochs=3,
        **{"data.validation_per_class": 2, "data.test_per_class": 2, "train.selection": selection},
    )
    results = tailfuse.train("cifar10_lt_quick", tmp_path / "run", overrides)
    assert results["selection"] == {"rule": rule, "epoch": epoch}
    assert results["test"]["top1"] == test_top1  # the selected model's own test score
    assert results["validation"]["top1"] == 30.0  # the last epoch's validation
    assert results["final_epoch_test"]["top1"] == 90.0
    saved = torch.load(tmp_path / "run" / "checkpoints" / f"{rule}.pt", weights_only=False)
    assert saved["epoch"] == epoch and float(saved["session"]["model"]["head.fc.bias"][0]) == epoch
    log = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [(r["validation_top1"], r["test_top1"]) for r in log] == [
        (10.0, 50.0),
        (30.0, 10.0),
        (30.0, 90.0),
    ]


def test_the_selection_rule_of_each_setting():
    """auto: best validation epoch when there is a validation split, else the final epoch;
    best_validation without a validation split is an error; the others are taken as written."""
    from tailfuse.config import build_config
    from tailfuse.engine.trainer import selection_rule
    from tailfuse.errors import TailfuseError

    def rule(selection, has_validation):
        return selection_rule(build_config({"train": {"selection": selection}}), has_validation)

    assert rule("auto", True) == "best_validation" and rule("auto", False) == "final"
    assert rule("best_validation", True) == "best_validation"
    assert rule("final", True) == "final" and rule("final", False) == "final"
    assert rule("best_test", False) == "best_test"
    with pytest.raises(
        TailfuseError,
        match=r"^train.selection=best_validation needs data.validation_per_class > 0$",
    ):
        rule("best_validation", False)


def test_which_epochs_are_evaluated():
    """1-based epoch numbers of a 10-epoch run: every ``eval_every``-th and the last; every one
    under best_test (the authors' best-of-all-epochs); only the last with eval_every 0."""
    from tailfuse.config import build_config
    from tailfuse.engine.trainer import _is_eval_epoch

    def evaluated(every, rule):
        config = build_config({"train": {"epochs": 10, "eval_every": every}})
        return [epoch for epoch in range(1, 11) if _is_eval_epoch(config, epoch, rule)]

    assert evaluated(4, "best_validation") == [4, 8, 10]
    assert evaluated(1, "final") == list(range(1, 11))
    assert evaluated(0, "final") == [10]
    assert evaluated(0, "best_test") == list(range(1, 11))


def test_tsne_picks_the_reported_checkpoint_and_names_a_damaged_results_file(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for name in ("last.pt", "best_validation.pt"):
        (checkpoints / name).write_bytes(b"")
    assert selected_checkpoint(tmp_path) == checkpoints / "last.pt"  # no results yet
    results = tmp_path / "results.json"
    results.write_text('{"selection": {"rule": "best_validation"}}')
    assert selected_checkpoint(tmp_path) == checkpoints / "best_validation.pt"
    results.write_text('{"selection": {"rule": "best_test"}}')  # its file is not there
    assert selected_checkpoint(tmp_path) == checkpoints / "last.pt"
    results.write_text('{"selection": "final"}')
    assert selected_checkpoint(tmp_path) == checkpoints / "last.pt"
    results.write_text('{"selection": {"rule": "best_val')
    with pytest.raises(ConfigError, match="cannot read the run's results .*not valid JSON"):
        selected_checkpoint(tmp_path)


def test_plot_tsne_without_scikit_learn_names_the_extra(monkeypatch, tmp_path):
    import sys

    from tailfuse.engine.tsne import plot_run_tsne
    from tailfuse.errors import TailfuseError

    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # as if not installed
    with pytest.raises(TailfuseError, match=r"needs scikit-learn: pip install 'tailfuse\[plots\]'"):
        plot_run_tsne(tmp_path)
