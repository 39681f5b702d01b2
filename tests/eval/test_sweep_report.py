"""Sweep summaries: mean and sample std over seeds, by hand."""

from __future__ import annotations

import pytest

from tailfuse.eval.sweep_report import markdown_table, summarise


def row(value, seed, top1, many, medium, few):
    return {
        "value": value,
        "seed": seed,
        "all": top1,
        "many": many,
        "medium": medium,
        "few": few,
        "macro_precision": 50.0,
        "ece": 5.0,
    }


def test_mean_and_sample_std_per_value():
    rows = [
        row("0", 0, 40, 80, 30, 10),
        row("0", 1, 44, 82, 34, 14),
        row("0.25", 0, 50, 70, 50, 30),
    ]
    summary = summarise(rows)
    assert [entry["value"] for entry in summary] == ["0", "0.25"]
    assert summary[0]["all_mean"] == 42 and summary[0]["all_std"] == pytest.approx(2**0.5 * 2)
    assert summary[0]["few_mean"] == 12 and summary[1]["runs"] == 1 and summary[1]["all_std"] == 0
    table = markdown_table("p", summary)
    assert "| 0 | 2 | 42.00 ± 2.83 | 81.00 ± 1.41 | 32.00 ± 2.83 | 12.00 ± 2.83 |" in table


def test_the_written_report_files_and_their_contents(tmp_path):
    """sweep.json / .csv / .md / .png in a new nested folder, with the rows and summary by hand."""
    import csv
    import json

    from tailfuse.eval.sweep_report import write_sweep_report

    rows = [row("0", 0, 40, 80, 30, 10), row("0", 1, 44, 82, 34, 14)]
    out = tmp_path / "nested" / "sweep"
    write_sweep_report(
        out, "cifar10_lt_quick_dr_h2t", "method.h2t.ratio", rows, "tailfuse sweep ..."
    )
    assert sorted(path.name for path in out.iterdir()) == [
        "sweep.csv",
        "sweep.json",
        "sweep.md",
        "sweep.png",
    ]
    written = json.loads((out / "sweep.json").read_text())
    assert set(written) == {"recipe", "parameter", "command", "runs", "summary"}
    assert (
        written["recipe"] == "cifar10_lt_quick_dr_h2t"
        and written["parameter"] == "method.h2t.ratio"
    )
    assert written["runs"] == rows and written["summary"][0]["seeds"] == [0, 1]
    assert (out / "sweep.json").read_text().startswith('{\n  "recipe"')  # indented for people
    with open(out / "sweep.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [line["seed"] for line in table] == ["0", "1"] and table[1]["all"] == "44"
    markdown = (out / "sweep.md").read_text().splitlines()
    assert markdown[0] == "# Sweep of method.h2t.ratio on cifar10_lt_quick_dr_h2t"
    header, rule, first = markdown[6:9]
    assert (
        header == "| method.h2t.ratio | runs | all | many | medium | few | macro precision | ECE |"
    )
    assert rule == "|---|---|---|---|---|---|---|---|"
    assert first == (
        "| 0 | 2 | 42.00 ± 2.83 | 81.00 ± 1.41 | 32.00 ± 2.83 | 12.00 ± 2.83 | "
        "50.00 ± 0.00 | 5.00 ± 0.00 |"
    )
    assert markdown[-1] == "![sweep](sweep.png)"
