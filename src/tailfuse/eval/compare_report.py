"""Comparison tables and plots: one row per method, mean ± std over seeds, beside published figures.

The numbers are the runs' ``results.json`` (test set, the selected epoch); the summary
reuses the sweep's (:func:`tailfuse.eval.sweep_report.summarise`). Published figures come
from a small YAML list (``recipe`` or ``label``, ``paper``, optional ``source``) and are
printed in their own column with the difference measured − paper.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from tailfuse.errors import ConfigError
from tailfuse.eval.report import csv_text, json_text, save_figure
from tailfuse.eval.sweep_report import COLUMNS, run_row, summarise
from tailfuse.files import read_yaml, write_text_atomically

METRICS = (*COLUMNS, "macro_precision", "ece")


def read_published(path: str | Path) -> dict[str, dict]:
    """``label or recipe -> {paper, source}`` from a YAML list of published figures."""
    content = read_yaml(path, "published figures")
    if not isinstance(content, list):
        raise ConfigError(
            f"published figures {path} must be a YAML list of {{recipe or label, paper, source}}"
        )
    figures = {}
    for item in content:
        if (
            not isinstance(item, dict)
            or "paper" not in item
            or not (item.get("label") or item.get("recipe"))
        ):
            raise ConfigError(
                f"published figures {path}: every entry needs 'paper' and a "
                f"'label' or 'recipe' ({item!r})"
            )
        try:
            figure = float(item["paper"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"published figures {path}: paper figure {item['paper']!r} is not a number"
            ) from None
        figures[str(item.get("label") or item["recipe"])] = {
            "paper": figure,
            "source": str(item.get("source", "")),
        }
    return figures


def published_for(row, figures: dict[str, dict]) -> dict | None:
    """The published figure of a row: matched by label first, then by recipe."""
    return figures.get(row.label) or figures.get(row.recipe) or figures.get(Path(row.recipe).stem)


def _cell(entry: dict, column: str) -> str:
    """``mean ± std`` over seeds; the mean alone for one run (one run has no spread to show)."""
    mean, std = entry[f"{column}_mean"], entry[f"{column}_std"]
    if mean is None:
        return "–"
    return f"{mean:.2f}" if entry["runs"] < 2 else f"{mean:.2f} ± {std:.2f}"


def markdown_table(summary: list[dict]) -> str:
    """The comparison as Markdown: all / many / medium / few, macro precision, ECE, paper, Δ."""
    with_paper = any(entry.get("paper") is not None for entry in summary)
    header = "| method | runs | all | many | medium | few | macro precision | ECE |"
    rule = "|---|---|---|---|---|---|---|---|"
    if with_paper:
        header += " paper (all) | Δ all |"
        rule += "---|---|"
    lines = [header, rule]
    for entry in summary:
        line = (
            f"| {entry['value']} | {entry['runs']} | "
            + " | ".join(_cell(entry, c) for c in METRICS)
            + " |"
        )
        if with_paper:
            paper = entry.get("paper")
            line += (
                " – | – |"
                if paper is None
                else f" {paper:.2f} | {entry['all_mean'] - paper:+.2f} |"
            )
        lines.append(line)
    return "\n".join(lines)


def _summarise_rows(rows: list[dict]) -> list[dict]:
    """:func:`summarise`, tolerant of a group with no classes (None accuracy)."""
    complete = [row for row in rows if all(row[c] is not None for c in METRICS)]
    if len(complete) == len(rows):
        return summarise(rows)
    summary = []
    for label in dict.fromkeys(row["value"] for row in rows):
        runs = [row for row in rows if row["value"] == label]
        entry = {"value": label, "runs": len(runs), "seeds": [row["seed"] for row in runs]}
        for column in METRICS:
            numbers = [row[column] for row in runs if row[column] is not None]
            entry[f"{column}_mean"] = statistics.fmean(numbers) if numbers else None
            entry[f"{column}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        summary.append(entry)
    return summary


def plot_per_class(path: Path, rows, seeds: list[int], results: dict, title: str) -> None:
    """Per-class test accuracy (mean over seeds) against training-class size,
    one series per method: ten colours, then the same colours dashed (then dotted), so no two
    series look alike; beyond six series the legend stands beside the axes, off the lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legend_outside = len(rows) > 6
    figure, axis = plt.subplots(figsize=(9.6 if legend_outside else 7.0, 4.4))
    markers = "osD^v<>pPX*h"
    colours = plt.get_cmap("tab10").colors
    line_styles = ("-", "--", ":")
    for index, row in enumerate(rows):
        runs = [results[(row.label, seed)] for seed in seeds]
        counts = runs[0]["data"]["class_counts"]
        accuracy = [
            statistics.fmean(run["test"]["per_class_accuracy"][c] for run in runs)
            for c in range(len(counts))
        ]
        order = sorted(range(len(counts)), key=lambda c: counts[c])
        axis.plot(
            [counts[c] for c in order],
            [accuracy[c] for c in order],
            marker=markers[index % len(markers)],
            color=colours[index % len(colours)],
            linestyle=line_styles[index // len(colours) % len(line_styles)],
            markersize=4,
            linewidth=1,
            label=row.label,
        )
    axis.set_xscale("log")
    axis.set_xlabel("training images of the class (log)")
    axis.set_ylabel("test accuracy of the class (%)")
    axis.set_ylim(0, 100)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if legend_outside:
        axis.legend(
            fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(rows) // 16
        )
    else:
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def write_compare_report(
    out_dir: Path,
    rows,
    seeds: list[int],
    results: dict,
    run_dirs: dict,
    published: dict,
    command: str,
    unfinished_rows: Sequence[str] = (),
) -> list[dict]:
    """Write ``compare.md``, ``compare.csv``, ``compare.json`` and
    ``compare.png``; returns the summary. ``unfinished_rows``: labels of rows left out because
    their runs have not finished (named in the Markdown and the JSON)."""
    run_rows = [
        run_row(row.label, seed, results[(row.label, seed)]) for row in rows for seed in seeds
    ]
    for entry, (row, seed) in zip(
        run_rows, [(row, seed) for row in rows for seed in seeds], strict=True
    ):
        entry["run_dir"] = str(run_dirs[(row.label, seed)])
        entry["recipe"] = row.recipe
    summary = _summarise_rows(run_rows)
    for entry, row in zip(summary, rows, strict=True):
        entry["recipe"], entry["overrides"] = row.recipe, row.overrides
        figure = published_for(row, published)
        entry["paper"] = figure["paper"] if figure else None
        entry["paper_source"] = figure["source"] if figure else None
        entry["difference"] = (
            None
            if figure is None or entry["all_mean"] is None
            else entry["all_mean"] - figure["paper"]
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(
        out_dir / "compare.json",
        json_text(
            {
                "command": command,
                "seeds": seeds,
                "runs": run_rows,
                "summary": summary,
                "unfinished_rows": list(unfinished_rows),
            },
            indent=2,
        ),
    )
    fields = (
        ["method", "recipe", "runs"]
        + [f"{c}_{s}" for c in METRICS for s in ("mean", "std")]
        + ["paper", "difference"]
    )
    table_rows = [{**entry, "method": entry["value"]} for entry in summary]
    write_text_atomically(
        out_dir / "compare.csv", csv_text(fields, table_rows, extrasaction="ignore")
    )
    sources = sorted({entry["paper_source"] for entry in summary if entry.get("paper_source")})
    paper_note = (
        f" Paper figures (all, top-1 %) are the papers': {'; '.join(sources)}." if sources else ""
    )
    if unfinished_rows:
        paper_note += f" Not finished yet, left out: {', '.join(unfinished_rows)}."
    write_text_atomically(
        out_dir / "compare.md",
        f"# Comparison\n\nCommand: `{command}`\n\nSeeds: {seeds}; mean ± sample std over seeds; "
        f"test-set accuracy (%) of each run's selected epoch; ECE in %, 15 bins.{paper_note}\n\n"
        f"{markdown_table(summary)}\n\n![per-class accuracy](compare.png)\n",
    )
    plot_per_class(
        out_dir / "compare.png", rows, seeds, results, f"per-class accuracy ({len(seeds)} seeds)"
    )
    return summary
