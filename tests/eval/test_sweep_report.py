"""Sweep summaries: mean and sample std over seeds, by hand."""

from __future__ import annotations

import pytest

from tailfuse.eval.sweep_report import markdown_table, summarise


def row(value, seed, top1, many, medium, few):
    return {"value": value, "seed": seed, "all": top1, "many": many, "medium": medium, "few": few, "macro_precision": 50.0, "ece": 5.0}


def test_mean_and_sample_std_per_value():
    rows = [row("0", 0, 40, 80, 30, 10), row("0", 1, 44, 82, 34, 14), row("0.25", 0, 50, 70, 50, 30)]
    summary = summarise(rows)
    assert [entry["value"] for entry in summary] == ["0", "0.25"]
    assert summary[0]["all_mean"] == 42 and summary[0]["all_std"] == pytest.approx(2 ** 0.5 * 2)
    assert summary[0]["few_mean"] == 12 and summary[1]["runs"] == 1 and summary[1]["all_std"] == 0
    table = markdown_table("p", summary)
    assert "| 0 | 2 | 42.00 ± 2.83 | 81.00 ± 1.41 | 32.00 ± 2.83 | 12.00 ± 2.83 |" in table
