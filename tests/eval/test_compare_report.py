"""The comparison report: table cells, published figures and files, from hand-built results."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest

from tailfuse.errors import ConfigError
from tailfuse.eval.compare_report import published_for, read_published, write_compare_report


def results(top1, many, medium, few, precision, ece):
    groups = {"many": many, "medium": medium, "few": few}
    test = {"top1": top1, "group_accuracy": groups, "macro_precision": precision, "ece": ece}
    test["per_class_accuracy"] = [many, 50.0, few if few is not None else 0.0]
    return {"test": test, "data": {"class_counts": [100, 10, 1]}}


ROWS = [
    SimpleNamespace(label="CE", recipe="cifar10_lt_quick_ce", overrides=[]),
    SimpleNamespace(
        label="DR + H2T", recipe="recipes/mine/cifar10_lt_quick_dr_h2t.yaml", overrides=["a=1"]
    ),
]
RESULTS = {
    ("CE", 0): results(40.0, 80.0, 30.0, 10.0, 50.0, 5.0),
    ("CE", 1): results(44.0, 82.0, 34.0, 14.0, 52.0, 7.0),
    ("DR + H2T", 0): results(60.0, 70.0, None, 50.0, 55.0, 3.0),  # no medium class in this split
    ("DR + H2T", 1): results(62.0, 72.0, None, 52.0, 57.0, 4.0),
}
RUN_DIRS = {key: f"runs/{key[0]}-{key[1]}" for key in RESULTS}


def test_published_figures_match_by_label_then_recipe_then_its_stem(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(
        "- {label: CE, paper: 70.70, source: FFN Table 5}\n"
        "- {recipe: cifar10_lt_quick_dr_h2t, paper: '60', source: H2T Table 2}\n"
        "- {label: LWS, paper: 61.5}\n"
    )
    figures = read_published(path)
    assert figures == {
        "CE": {"paper": 70.7, "source": "FFN Table 5"},
        "cifar10_lt_quick_dr_h2t": {"paper": 60.0, "source": "H2T Table 2"},
        "LWS": {"paper": 61.5, "source": ""},  # no source: an empty one, not "None"
    }
    assert published_for(ROWS[0], figures)["paper"] == 70.7
    assert published_for(ROWS[1], figures)["paper"] == 60.0  # by the recipe file's stem
    assert published_for(SimpleNamespace(label="x", recipe="y"), figures) is None
    for text, message in [
        ("{label: CE}", "must be a YAML list"),
        ("- {label: CE}", "every entry needs 'paper'"),
        ("- {paper: 3}", "every entry needs 'paper' and a 'label' or 'recipe'"),
        ("- {label: CE, paper: high}", "paper figure 'high' is not a number"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_published(path)
    with pytest.raises(ConfigError, match="cannot read published figures"):
        read_published(tmp_path / "missing.yaml")


def test_table_csv_and_json_hold_mean_and_sample_std_by_hand(tmp_path):
    published = {
        "CE": {"paper": 70.7, "source": "FFN Table 5"},
        "cifar10_lt_quick_dr_h2t": {"paper": 60.0, "source": "mine"},
    }
    out = tmp_path / "nested" / "compare"
    summary = write_compare_report(
        out, ROWS, [0, 1], RESULTS, RUN_DIRS, published, "tailfuse compare ..."
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "compare.csv",
        "compare.json",
        "compare.md",
        "compare.png",
    ]
    lines = (out / "compare.md").read_text().splitlines()
    assert lines[0] == "# Comparison" and lines[2] == "Command: `tailfuse compare ...`"
    assert lines[4].endswith("Paper figures (all, top-1 %) are the papers': FFN Table 5; mine.")
    assert lines[6] == (
        "| method | runs | all | many | medium | few | macro precision | "
        "ECE | paper (all) | Δ all |"
    )
    assert lines[7] == "|---|---|---|---|---|---|---|---|---|---|"
    # CE: all 40, 44 -> 42 ± 2.83; many 80, 82 -> 81 ± 1.41; ECE 5, 7 -> 6 ± 1.41; 42 − 70.7 = −28.7
    assert lines[8] == (
        "| CE | 2 | 42.00 ± 2.83 | 81.00 ± 1.41 | 32.00 ± 2.83 | 12.00 ± 2.83 | 51.00 ± 1.41 | "
        "6.00 ± 1.41 | 70.70 | -28.70 |"
    )
    assert lines[9] == (
        "| DR + H2T | 2 | 61.00 ± 1.41 | 71.00 ± 1.41 | – | 51.00 ± 1.41 | 56.00 ± 1.41 | "
        "3.50 ± 0.71 | 60.00 | +1.00 |"
    )
    assert lines[-1] == "![per-class accuracy](compare.png)"
    assert summary[1]["medium_mean"] is None and summary[1]["difference"] == pytest.approx(1.0)
    with open(out / "compare.csv", newline="") as stream:
        assert stream.readline().strip() == (
            "method,recipe,runs,all_mean,all_std,many_mean,many_std,medium_mean,"
            "medium_std,few_mean,few_std,macro_precision_mean,macro_precision_std,"
            "ece_mean,ece_std,paper,difference"
        )
        stream.seek(0)
        table = list(csv.DictReader(stream))
    assert [row["method"] for row in table] == ["CE", "DR + H2T"]
    assert float(table[0]["all_mean"]) == 42.0 and float(table[0]["all_std"]) == pytest.approx(
        8**0.5
    )
    assert float(table[0]["difference"]) == pytest.approx(-28.7) and table[1]["medium_mean"] == ""
    written = json.loads((out / "compare.json").read_text())
    assert written["seeds"] == [0, 1] and written["command"] == "tailfuse compare ..."
    assert [run["run_dir"] for run in written["runs"]] == [
        "runs/CE-0",
        "runs/CE-1",
        "runs/DR + H2T-0",
        "runs/DR + H2T-1",
    ]
    assert written["runs"][3]["recipe"] == "recipes/mine/cifar10_lt_quick_dr_h2t.yaml"
    assert (
        written["summary"][1]["overrides"] == ["a=1"]
        and written["summary"][0]["paper_source"] == "FFN Table 5"
    )
    assert written["summary"][1]["recipe"] == "recipes/mine/cifar10_lt_quick_dr_h2t.yaml"


def test_a_row_without_a_paper_figure_shows_dashes_beside_one_with(tmp_path):
    write_compare_report(
        tmp_path, ROWS, [0, 1], RESULTS, RUN_DIRS, {"CE": {"paper": 70.7, "source": ""}}, "c"
    )
    lines = (tmp_path / "compare.md").read_text().splitlines()
    assert lines[9].startswith("| DR + H2T | 2 | 61.00 ± 1.41 |") and lines[9].endswith(
        " | – | – |"
    )
    assert "Paper figures" not in lines[4]  # no source named, no sentence naming none


def test_one_seed_shows_the_mean_alone_and_no_paper_column_without_figures(tmp_path):
    write_compare_report(tmp_path, ROWS[:1], [0], RESULTS, RUN_DIRS, {}, "c")
    lines = (tmp_path / "compare.md").read_text().splitlines()
    assert lines[6] == "| method | runs | all | many | medium | few | macro precision | ECE |"
    assert lines[8] == "| CE | 1 | 40.00 | 80.00 | 30.00 | 10.00 | 50.00 | 5.00 |"


def test_one_seed_of_a_row_without_medium_classes_has_zero_spread_and_its_seed(tmp_path):
    """The path for a group with no classes, with one seed: std 0 (not an error), medium empty."""
    summary = write_compare_report(tmp_path, ROWS[1:], [1], RESULTS, RUN_DIRS, {}, "c")
    entry = summary[0]
    assert entry["runs"] == 1 and entry["seeds"] == [1]
    assert entry["all_mean"] == 62.0 and entry["all_std"] == 0.0 and entry["ece_std"] == 0.0
    assert entry["medium_mean"] is None and entry["medium_std"] == 0.0
    lines = (tmp_path / "compare.md").read_text().splitlines()
    assert lines[8] == "| DR + H2T | 1 | 62.00 | 72.00 | – | 52.00 | 57.00 | 4.00 |"


def test_twenty_rows_get_twenty_distinct_lines_and_a_legend_beside_the_axes(tmp_path, monkeypatch):
    from tailfuse.eval import compare_report

    drawn = {}

    def keep(figure, path):
        axis = figure.axes[0]
        drawn["styles"] = [(line.get_color(), line.get_linestyle()) for line in axis.lines]
        drawn["legend_right_of_axes"] = axis.get_legend().get_bbox_to_anchor().x0 > (
            axis.get_window_extent().x1
        )
        drawn["labels"] = [text.get_text() for text in axis.get_legend().get_texts()]

    monkeypatch.setattr(compare_report, "save_figure", keep)
    rows = [SimpleNamespace(label=f"method {index}") for index in range(20)]
    results = {(row.label, 0): RESULTS[("CE", 0)] for row in rows}
    compare_report.plot_per_class(tmp_path / "compare.png", rows, [0], results, "title")
    assert len(drawn["styles"]) == 20 == len(set(drawn["styles"]))
    assert drawn["styles"][10][1] == "--" and drawn["styles"][0][0] == drawn["styles"][10][0]
    assert drawn["legend_right_of_axes"] and drawn["labels"] == [row.label for row in rows]

    compare_report.plot_per_class(tmp_path / "compare.png", rows[:2], [0], results, "title")
    assert len(set(drawn["styles"])) == 2 and not drawn["legend_right_of_axes"]
