"""GLT accuracy and precision on hand-built prediction tables (spec glt_ifl §2)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from tailfuse.errors import TailfuseError
from tailfuse.eval.glt import glt_metrics, glt_scores, protocol_markdown, protocol_text
from tailfuse.eval.glt_table import bench_summary, glt_table_markdown

LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
PREDICTIONS = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 0])  # class 2 is never predicted
ATTRIBUTES = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
GROUPS = {"many": [0], "medium": [1], "few": [2]}


def test_overall_accuracy_precision_and_f1_with_a_class_never_predicted():
    scores = glt_scores(PREDICTIONS, LABELS, 3)
    assert scores["accuracy"] == pytest.approx(100 * 4 / 9)
    # TP/#predicted: class 0 2/5, class 1 2/4, class 2 never predicted -> 0; mean over 3 classes
    assert scores["precision"] == pytest.approx(100 * (2 / 5 + 2 / 4 + 0) / 3)
    a, p = 100 * 4 / 9, 30.0
    assert scores["f1"] == pytest.approx(2 * a * p / (a + p))
    assert scores["count"] == 9


def test_class_splits_use_whole_set_prediction_counts():
    metrics = glt_metrics(PREDICTIONS, LABELS, GROUPS, ATTRIBUTES, num_classes=3)
    splits = metrics["class_splits"]
    assert splits["many"]["accuracy"] == pytest.approx(200 / 3)
    assert splits["many"]["precision"] == pytest.approx(40.0)  # 2 of the 5 predicted as class 0
    assert splits["medium"]["precision"] == pytest.approx(50.0)
    assert splits["few"] == {"accuracy": 0.0, "precision": 0.0, "count": 3}


def test_attribute_splits_are_scored_as_their_own_test_sets():
    attributes = glt_metrics(PREDICTIONS, LABELS, GROUPS, ATTRIBUTES, num_classes=3)[
        "attribute_splits"
    ]
    # attribute 0: labels 0,1,2 predicted 0,1,1 -> counts within the subset:
    # class 0 once, class 1 twice
    assert attributes["many_a"]["accuracy"] == pytest.approx(200 / 3)
    assert attributes["many_a"]["precision"] == pytest.approx(100 * (1 / 1 + 1 / 2 + 0) / 3)
    assert attributes["medium_a"]["precision"] == pytest.approx(100 * (1 / 2 + 1 / 1 + 0) / 3)
    assert attributes["few_a"]["accuracy"] == 0.0 and attributes["few_a"]["precision"] == 0.0


def test_logits_and_predictions_give_the_same_scores():
    logits = torch.nn.functional.one_hot(PREDICTIONS, 3).float() * 5 + 0.1 * torch.randn(9, 3)
    assert glt_metrics(logits, LABELS, GROUPS, ATTRIBUTES) == glt_metrics(
        PREDICTIONS, LABELS, GROUPS, ATTRIBUTES, 3
    )


def test_precision_divides_by_the_classes_present_in_the_test_set():
    # only classes 0 and 1 occur; a wrong prediction of class 2 lowers
    # class-0 recall, not the divisor
    scores = glt_scores(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]), 3)
    assert scores["precision"] == pytest.approx(100 * (1 / 1 + 2 / 2) / 2)


def test_reports_and_seed_table(tmp_path):
    protocols = {
        "test_bl": {
            "protocol": "CLT",
            "metrics": glt_metrics(PREDICTIONS, LABELS, GROUPS, ATTRIBUTES, 3),
        }
    }
    assert "44.44 / 30.00" in protocol_markdown(protocols)
    assert (
        protocol_text(protocols)
        .strip()
        .startswith("CLT [test_bl] (Acc / Prec): overall 44.44 / 30.00")
    )
    runs = {
        "glt": [
            {"glt": {**protocols, "test_bbl": protocols["test_bl"]}, "seed": s, "epochs": 1}
            for s in (0, 1)
        ],
        "cbl": [
            {"glt": {"test_bbl": protocols["test_bl"]}, "seed": s, "epochs": 1} for s in (0, 1)
        ],
    }
    summary = bench_summary("toy", runs)
    assert summary["cells"]["CLT overall"]["accuracy"] == pytest.approx(100 * 4 / 9)
    assert summary["cells"]["ALT tail attr."]["precision"] == 0.0 and summary["seeds"] == [0, 1]
    table = glt_table_markdown([summary])
    assert "| toy | 44.44±0.00 / 30.00±0.00 |" in table and "**ALT**" in table
    json.dumps(summary)


def test_the_printed_protocol_line_and_the_seed_table_in_full():
    """Every split's "Acc / Prec" from the hand values above (many 2/3 right, 2 of 5 predicted
    class 0 right; medium 2/3, 2 of 4; few none; attributes 0 and 1 2/3 right, 50 % precision)."""
    protocols = {
        "test_bl": {
            "protocol": "GLT",
            "metrics": glt_metrics(PREDICTIONS, LABELS, GROUPS, ATTRIBUTES, 3),
        }
    }
    assert protocol_text(protocols) == (
        " GLT [test_bl] (Acc / Prec): overall 44.44 / 30.00, many 66.67 / 40.00, medium 66.67 / "
        "50.00, few 0.00 / 0.00, many_a 66.67 / 50.00, medium_a 66.67 / 50.00, few_a 0.00 / 0.00"
    )
    runs = {
        "glt": [
            {
                "glt": {
                    "test_bl": {**protocols["test_bl"], "protocol": "CLT"},
                    "test_bbl": protocols["test_bl"],
                },
                "seed": s,
                "epochs": 1,
            }
            for s in (0, 1)
        ],
        "cbl": [
            {
                "glt": {"test_bbl": {**protocols["test_bl"], "protocol": "ALT"}},
                "seed": s,
                "epochs": 1,
            }
            for s in (0, 1)
        ],
    }  # ALT: the attribute-balanced model on Test-GBL
    cells = (
        "44.44±0.00 / 30.00±0.00 | 66.67±0.00 / 40.00±0.00 | 66.67±0.00 / "
        "50.00±0.00 | 0.00±0.00 / 0.00±0.00"
    )
    attributes = "66.67±0.00 / 50.00±0.00 | 66.67±0.00 / 50.00±0.00 | 0.00±0.00 / 0.00±0.00"
    assert glt_table_markdown([bench_summary("toy", runs)]).split("\n") == [
        "**CLT** (Acc / Prec, %)",
        "",
        "| method | overall | many | medium | few |",
        "|---|---|---|---|---|",
        f"| toy | {cells} |",
        "",
        "**GLT** (Acc / Prec, %)",
        "",
        "| method | overall | many | medium | few | head attr. | medium attr. | tail attr. |",
        "|---|---|---|---|---|---|---|---|",
        f"| toy | {cells} | {attributes} |",
        "",
        "**ALT** (Acc / Prec, %)",
        "",
        "| method | overall | head attr. | medium attr. | tail attr. |",
        "|---|---|---|---|---|",
        f"| toy | 44.44±0.00 / 30.00±0.00 | {attributes} |",
        "",
    ]


def test_a_sample_with_non_finite_logits_predicts_no_class():
    """NaN ranks highest in argmax: without care the NaN row below would be a correct class 0."""
    nan = float("nan")
    logits = torch.tensor([[nan, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    metrics = glt_metrics(logits, labels, {"many": [0], "few": [1]})
    # predictions: none, 0, 1, 0 -> correct 2 of 4; precision: class 0 1/2, class 1 1/1 -> 75
    assert metrics["overall"]["accuracy"] == pytest.approx(50.0)
    assert metrics["overall"]["precision"] == pytest.approx(75.0)
    assert metrics["class_splits"]["many"]["accuracy"] == pytest.approx(50.0)
    assert metrics["class_splits"]["many"]["precision"] == pytest.approx(50.0)
    assert metrics["non_finite_samples"] == 1
    assert glt_metrics(torch.tensor([0, 0, 1, 0]), labels, {"many": [0]})["non_finite_samples"] == 0


def _glt_run(seed: int, accuracy: float, precision: float, epochs: int = 2) -> dict:
    overall = {"accuracy": accuracy, "precision": precision}
    metrics = {"overall": overall, "class_splits": {"few": overall}, "attribute_splits": {}}
    return {
        "name": f"run{seed}",
        "seed": seed,
        "epochs": epochs,
        "glt": {"test_bl": {"metrics": metrics}},
    }


def test_seed_table_mean_and_sample_std_by_hand():
    """Two seeds at 40 / 30 and 50 / 36: mean 45 / 33, sample std 7.07 / 4.24 (n - 1 = 1)."""
    summary = bench_summary(
        "two seeds", {"glt": [_glt_run(0, 40.0, 30.0), _glt_run(1, 50.0, 36.0)]}
    )
    cell = summary["cells"]["CLT overall"]
    assert cell["accuracy"] == pytest.approx(45.0) and cell["precision"] == pytest.approx(33.0)
    assert cell["accuracy_std"] == pytest.approx(50**0.5) and cell[
        "precision_std"
    ] == pytest.approx(18**0.5)
    assert cell["seeds"] == 2 and summary["seeds"] == [0, 1] and summary["epochs"] == [2]
    assert summary["runs"] == {"glt": 2}
    assert set(summary["cells"]) == {"CLT overall", "CLT few"}  # no test_bbl, no CBL run: no cells
    single = bench_summary("one seed", {"glt": [_glt_run(3, 40.0, 30.0)]})
    assert single["cells"]["CLT overall"]["accuracy_std"] == 0.0
    table = glt_table_markdown([summary, single]).splitlines()
    assert table[0] == "**CLT** (Acc / Prec, %)"
    assert table[2] == "| method | overall | many | medium | few |"
    assert table[3] == "|---|---|---|---|---|"
    assert table[4] == "| two seeds | 45.00±7.07 / 33.00±4.24 | – | – | 45.00±7.07 / 33.00±4.24 |"
    assert table[5] == "| one seed | 40.00 / 30.00 | – | – | 40.00 / 30.00 |"
    with pytest.raises(TailfuseError, match="run 'plain' has no GLT protocols"):
        bench_summary("plain", {"glt": [{"name": "plain", "seed": 0, "epochs": 1}]})


def test_the_protocol_markdown_in_full_with_an_empty_split():
    """One table per test set, in order: title with image count, header, rule, the cells."""
    protocols = {
        "test_bl": {
            "protocol": "CLT",
            "metrics": {
                "overall": {"accuracy": 50.0, "precision": 25.0, "count": 4},
                "class_splits": {"many": {"accuracy": 100.0, "precision": 50.0}, "few": None},
                "attribute_splits": {"head_a": {"accuracy": 0.0, "precision": 0.0}},
            },
        },
        "test_bbl": {
            "protocol": "GLT",
            "metrics": {
                "overall": {"accuracy": 12.5, "precision": 10.0, "count": 8},
                "class_splits": {},
                "attribute_splits": {},
            },
        },
    }
    assert protocol_markdown(protocols) == (
        "### CLT (test_bl, 4 images), Acc / Prec\n"
        "\n"
        "| overall | many (class) | few (class) | head_a (attribute) |\n"
        "|---|---|---|---|\n"
        "| 50.00 / 25.00 | 100.00 / 50.00 | – | 0.00 / 0.00 |\n"
        "\n"
        "### GLT (test_bbl, 8 images), Acc / Prec\n"
        "\n"
        "| overall |\n"
        "|---|\n"
        "| 12.50 / 10.00 |\n"
    )


def test_predicted_labels_of_a_one_class_set_score_without_a_class_count():
    # 1-D predictions: the class count comes from the largest label or prediction (here 1 class)
    metrics = glt_metrics(torch.tensor([0, 0]), torch.tensor([0, 0]), {"many": [0]})
    assert metrics["overall"]["accuracy"] == 100.0 and metrics["overall"]["precision"] == 100.0
    assert metrics["class_splits"]["many"]["precision"] == 100.0


def test_a_split_of_two_classes_divides_by_two_and_an_absent_split_is_skipped_not_the_rest():
    # predicted 0 once, 1 three times, 2 once; per-sample precision 1, 0, 1/3, 1/3, 1
    predictions, labels = torch.tensor([0, 1, 1, 1, 2]), torch.tensor([0, 0, 1, 1, 2])
    groups = {"many": [0, 1], "medium": [3], "few": [2]}  # class 3 has no test image
    splits = glt_metrics(predictions, labels, groups, num_classes=4)["class_splits"]
    assert list(splits) == ["many", "few"]
    assert splits["many"]["precision"] == pytest.approx(100 * (1 + 0 + 1 / 3 + 1 / 3) / 2)
    assert splits["many"]["accuracy"] == 75.0 and splits["many"]["count"] == 4
    assert splits["few"] == {"accuracy": 100.0, "precision": 100.0, "count": 1}


def test_a_set_of_one_image_and_a_set_of_only_non_finite_logits():
    assert glt_scores(torch.tensor([1]), torch.tensor([1]), 2) == {
        "accuracy": 100.0,
        "precision": 100.0,
        "f1": 100.0,
        "count": 1,
    }
    empty = glt_scores(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2)
    assert sorted(empty) == ["accuracy", "count", "f1", "precision"] and empty["count"] == 0
    assert all(math.isnan(empty[key]) for key in ("accuracy", "precision", "f1"))
    logits = torch.full((2, 3), math.nan)  # a diverged model: no sample predicts a class
    metrics = glt_metrics(logits, torch.tensor([0, 2]), {"many": [0], "few": [2]})
    assert metrics["non_finite_samples"] == 2
    assert metrics["overall"]["accuracy"] == 0.0 and metrics["overall"]["precision"] == 0.0


def test_f1_is_the_harmonic_mean_of_accuracy_and_precision_and_zero_when_both_are():
    def f1(predictions, labels):
        return glt_scores(torch.tensor(predictions), torch.tensor(labels), 3)["f1"]

    assert f1([0, 0], [0, 1]) == pytest.approx(2 * 50 * 25 / 75)  # accuracy 50, precision 25
    assert f1([0, 1], [0, 1]) == pytest.approx(100.0)
    assert f1([1], [0]) == 0.0
    # accuracy 1/200 = 0.5 %, precision (1/101) / 2 classes: both below one percent point
    predictions = [0] + [2] * 99 + [0] * 100
    labels = [0] * 100 + [1] * 100
    precision = 100 / 101 / 2
    assert f1(predictions, labels) == pytest.approx(2 * 0.5 * precision / (0.5 + precision))


RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_the_committed_cifar10_glt_expert_table_comes_from_the_committed_runs():
    """README's RIDE / TADE (+ IFL) GLT table is the one recomputed from each run's results.json."""
    folder = RESULTS_DIR / "cifar10_glt_quick_experts"
    labels = {"ride": "RIDE", "ride_ifl": "RIDE + IFL", "tade": "TADE", "tade_ifl": "TADE + IFL"}
    summaries = []
    for name, label in labels.items():
        runs = {
            train_set: [
                json.loads(
                    (
                        folder
                        / "runs"
                        / name
                        / f"train_{train_set}"
                        / f"seed{seed}"
                        / "results.json"
                    ).read_text()
                )
                for seed in (0, 1)
            ]
            for train_set in ("glt", "cbl")
        }
        assert all(r["epochs"] == 16 for rs in runs.values() for r in rs)
        assert all(r["environment"]["precision"] == "bf16" for rs in runs.values() for r in rs)
        summaries.append(bench_summary(label, runs))
    table = glt_table_markdown(summaries)
    assert table == (folder / "glt_table.md").read_text()
    assert summaries == json.loads((folder / "glt_table.json").read_text())
    # the README shows every row of that table, verbatim
    readme = (RESULTS_DIR.parent.parent / "README.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "±" in line]
    assert len(rows) == 12 and all(row in readme.splitlines() for row in rows)
    # and the CLT overall accuracy of RIDE is the mean ± sample std of its two Train-GLT runs on
    # Test-CBL, recomputed here without the table code
    accuracies = [
        json.loads(
            (folder / "runs" / "ride" / "train_glt" / f"seed{seed}" / "results.json").read_text()
        )["glt"]["test_bl"]["metrics"]["overall"]["accuracy"]
        for seed in (0, 1)
    ]
    cell = f"{statistics.mean(accuracies):.2f}±{statistics.stdev(accuracies):.2f}"
    assert f"| RIDE | {cell} / " in readme
