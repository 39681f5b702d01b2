"""A run's report.md and results.json say exactly what the run measured (eval/report.py)."""

from __future__ import annotations

import json
import math

import pytest

from tailfuse.eval.report import json_text, markdown_report, strict_json, write_report

from .test_atomic_reports import results


def three_class_results() -> dict:
    """Three classes (many, medium, few), a medium class never predicted (precision NaN)."""
    report = results(61.234)
    report["data"].update(
        total=35,
        class_counts=[20, 10, 5],
        class_names=["cat", "dog", "fox"],
        imbalance_ratio=4.0,
        groups={"many": [0], "medium": [1], "few": [2]},
    )
    report["test"].update(
        group_accuracy={"many": 90.0, "medium": 45.5, "few": 10.0},
        per_class_accuracy=[90.0, 45.5, 10.0],
        per_class_precision=[66.666, float("nan"), 100.0],
        nll=0.123456,
    )
    return report


def test_report_lists_metrics_groups_and_classes_in_order():
    lines = markdown_report(three_class_results()).splitlines()

    assert lines[0] == "# tiny"
    assert "- model selection: final (epoch 2 of 2)" in lines
    assert (
        "- training images: 35 in 3 classes, imbalance ratio 4.0, subset checksum "
        "`0123456789abcdef`" in lines
    )
    table = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert table[:9] == [
        "| metric | value |",
        "| top-1 | 61.23 |",
        "| top-5 | 100.00 |",
        "| many accuracy (1 class) | 90.00 |",
        "| medium accuracy (1 class) | 45.50 |",
        "| few accuracy (1 class) | 10.00 |",
        "| macro precision | 60.00 |",
        "| ECE (15 bins) | 5.00 |",
        "| NLL | 0.1235 |",
    ]
    assert table[-4:] == [
        "| class | train images | accuracy | precision |",
        "| cat | 20 | 90.00 | 66.67 |",
        "| dog | 10 | 45.50 | – |",  # never predicted: no precision, not 0 or nan
        "| fox | 5 | 10.00 | 100.00 |",
    ]
    assert "![per-class accuracy](per_class_accuracy.png)" in lines
    assert not any("measured on" in line or "reliability" in line for line in lines)


def test_report_names_the_logit_scale_of_a_cosine_model_and_shows_the_reliability_diagram():
    report = three_class_results()
    report["test"]["calibration_scale"] = 30.0
    report["test"]["calibration"] = {"count": [1], "accuracy": [1.0], "confidence": [0.9]}
    report["validation"] = {"top1": 58.0}
    lines = markdown_report(report).splitlines()
    assert "| ECE and NLL measured on | 30 × the logits (the loss's scale) |" in lines
    assert "| validation top-1 | 58.00 |" in lines
    assert "![reliability diagram](reliability.png)" in lines


def test_results_json_is_strict_json_with_nan_and_infinity_as_null(tmp_path):
    value = {"a": [1.5, float("nan"), (float("inf"), -float("inf"))], "b": {"c": 2}, "d": "x"}
    assert strict_json(value) == {"a": [1.5, None, [None, None]], "b": {"c": 2}, "d": "x"}
    assert json.loads(json_text(value)) == strict_json(value)

    write_report(tmp_path, three_class_results())
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text
    saved = json.loads(text)
    assert saved["test"]["per_class_precision"] == [66.666, None, 100.0]
    assert saved["test"]["top1"] == pytest.approx(61.234)
    assert not math.isnan(saved["test"]["ece"])
    assert (tmp_path / "per_class_accuracy.png").stat().st_size > 5000
    assert not (tmp_path / "reliability.png").exists()  # no calibration bins in these results


@pytest.mark.parametrize(("classes", "width"), [(10, 720), (100, 1920), (8142, 1920)])
def test_per_class_accuracy_figure_stays_readable_for_many_classes(tmp_path, classes, width):
    """0.12 inch a class (at least 6) up to 16 inches at 120 dpi: iNaturalist's 8,142 classes
    made a 117,724-pixel-wide image (24 s to draw) before the cap."""
    from PIL import Image

    from tailfuse.eval.report import plot_per_class_accuracy

    path = tmp_path / "per_class_accuracy.png"
    counts = [1000 - c // 10 for c in range(classes)]
    accuracy = [float(c % 101) for c in range(classes)]
    plot_per_class_accuracy(path, accuracy, counts, [f"c{c}" for c in range(classes)], "t")
    assert Image.open(path).size == (width, 480)
