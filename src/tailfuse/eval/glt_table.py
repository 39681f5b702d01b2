"""The GLT benchmark table: CLT / GLT / ALT, "Acc / Prec", mean ± std over
seeds (spec glt_ifl §6)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from tailfuse.errors import TailfuseError
from tailfuse.eval.report import json_text
from tailfuse.files import write_text_atomically

#: (column title, training set, test split, part, split name): the paper's Tables 1–2 layout
COLUMNS = [
    ("CLT overall", "glt", "test_bl", "overall", None),
    ("CLT many", "glt", "test_bl", "class_splits", "many"),
    ("CLT medium", "glt", "test_bl", "class_splits", "medium"),
    ("CLT few", "glt", "test_bl", "class_splits", "few"),
    ("GLT overall", "glt", "test_bbl", "overall", None),
    ("GLT many", "glt", "test_bbl", "class_splits", "many"),
    ("GLT medium", "glt", "test_bbl", "class_splits", "medium"),
    ("GLT few", "glt", "test_bbl", "class_splits", "few"),
    ("GLT head attr.", "glt", "test_bbl", "attribute_splits", "many_a"),
    ("GLT medium attr.", "glt", "test_bbl", "attribute_splits", "medium_a"),
    ("GLT tail attr.", "glt", "test_bbl", "attribute_splits", "few_a"),
    ("ALT overall", "cbl", "test_bbl", "overall", None),
    ("ALT head attr.", "cbl", "test_bbl", "attribute_splits", "many_a"),
    ("ALT medium attr.", "cbl", "test_bbl", "attribute_splits", "medium_a"),
    ("ALT tail attr.", "cbl", "test_bbl", "attribute_splits", "few_a"),
]


def _scores(results: dict, split: str, part: str, name: str | None) -> dict | None:
    protocols = results.get("glt")
    if not protocols:
        raise TailfuseError(f"run '{results.get('name')}' has no GLT protocols (not a GLT dataset)")
    if split not in protocols:
        return None
    block = protocols[split]["metrics"][part]
    return block if name is None else block.get(name)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def bench_summary(label: str, runs: dict[str, list[dict]]) -> dict:
    """Mean and std over seeds of every table cell, from ``results.json`` of each run."""
    cells = {}
    for title, train_set, split, part, name in COLUMNS:
        found = [_scores(r, split, part, name) for r in runs.get(train_set, [])]
        found = [f for f in found if f]
        if not found:
            continue
        accuracy = _mean_std([f["accuracy"] for f in found])
        precision = _mean_std([f["precision"] for f in found])
        cells[title] = {
            "accuracy": accuracy[0],
            "accuracy_std": accuracy[1],
            "precision": precision[0],
            "precision_std": precision[1],
            "seeds": len(found),
        }
    seeds = sorted({r.get("seed", -1) for rs in runs.values() for r in rs})
    epochs = sorted({r["epochs"] for rs in runs.values() for r in rs})
    return {
        "label": label,
        "cells": cells,
        "epochs": epochs,
        "runs": {k: len(v) for k, v in runs.items()},
        "seeds": seeds,
    }


def _cell(entry: dict | None) -> str:
    if not entry:
        return "–"
    if entry["seeds"] > 1:
        return (
            f"{entry['accuracy']:.2f}±{entry['accuracy_std']:.2f} / "
            f"{entry['precision']:.2f}±{entry['precision_std']:.2f}"
        )
    return f"{entry['accuracy']:.2f} / {entry['precision']:.2f}"


def glt_table_markdown(summaries: list[dict]) -> str:
    """Three tables (CLT, GLT, ALT), one row per summary; cells "Acc / Prec" (± std over seeds)."""
    lines = []
    for protocol in ("CLT", "GLT", "ALT"):
        titles = [c[0] for c in COLUMNS if c[0].startswith(protocol)]
        lines += [
            f"**{protocol}** (Acc / Prec, %)",
            "",
            "| method | " + " | ".join(t[len(protocol) + 1 :] for t in titles) + " |",
            "|---" * (len(titles) + 1) + "|",
        ]
        for summary in summaries:
            lines.append(
                f"| {summary['label']} | "
                + " | ".join(_cell(summary["cells"].get(t)) for t in titles)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def write_glt_table(summaries: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, glt_table_markdown(summaries))
    write_text_atomically(path.with_suffix(".json"), json_text(summaries, indent=2))


def combine_bench_dirs(
    directories: list[str | Path], labels: list[str] | None = None
) -> list[dict]:
    """Summaries of several ``glt-bench`` output folders, for one table."""
    summaries = []
    for position, directory in enumerate(directories):
        path = Path(directory) / "glt_summary.json"
        if not path.is_file():
            raise TailfuseError(
                f"{directory} holds no glt_summary.json (run `tailfuse glt-bench` there first)"
            )
        summary = json.loads(path.read_text())
        if labels:
            summary["label"] = labels[position]
        summaries.append(summary)
    return summaries
