"""Sweep tables and plots: accuracy (all/many/medium/few) per value, mean ± std over seeds."""

from __future__ import annotations

import statistics
from pathlib import Path

from tailfuse.eval.report import csv_text, json_text, save_figure
from tailfuse.files import write_text_atomically

COLUMNS = ("all", "many", "medium", "few")


def run_row(value: str, seed: int, results: dict) -> dict:
    """One run's numbers as a sweep row."""
    groups = results["test"]["group_accuracy"]
    return {
        "value": value,
        "seed": seed,
        "all": results["test"]["top1"],
        "many": groups.get("many"),
        "medium": groups.get("medium"),
        "few": groups.get("few"),
        "macro_precision": results["test"]["macro_precision"],
        "ece": results["test"]["ece"],
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds of each value, in the
    order values first appear."""
    values = list(dict.fromkeys(row["value"] for row in rows))
    summary = []
    for value in values:
        runs = [row for row in rows if row["value"] == value]
        entry = {"value": value, "runs": len(runs), "seeds": [row["seed"] for row in runs]}
        for column in (*COLUMNS, "macro_precision", "ece"):
            numbers = [row[column] for row in runs]
            entry[f"{column}_mean"] = statistics.fmean(numbers)
            entry[f"{column}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        summary.append(entry)
    return summary


def markdown_table(parameter: str, summary: list[dict]) -> str:
    """The sweep as a Markdown table, ``mean ± std`` per cell."""
    lines = [
        f"| {parameter} | runs | all | many | medium | few | macro precision | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        cells = [
            f"{entry[f'{c}_mean']:.2f} ± {entry[f'{c}_std']:.2f}"
            for c in (*COLUMNS, "macro_precision", "ece")
        ]
        lines.append(f"| {entry['value']} | {entry['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(path: Path, parameter: str, summary: list[dict], title: str) -> None:
    """Accuracy of each group against the swept value, with ±std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        positions = [float(entry["value"]) for entry in summary]
        labels = None
    except ValueError:
        positions, labels = list(range(len(summary))), [entry["value"] for entry in summary]
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for column, marker in zip(COLUMNS, "osD^", strict=True):
        axis.errorbar(
            positions,
            [entry[f"{column}_mean"] for entry in summary],
            yerr=[entry[f"{column}_std"] for entry in summary],
            marker=marker,
            capsize=3,
            label=column,
        )
    if labels:
        axis.set_xticks(positions, labels)
    axis.set_xlabel(parameter)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def write_sweep_report(
    out_dir: Path, recipe: str, parameter: str, rows: list[dict], command: str
) -> list[dict]:
    """Write ``sweep.json``, ``sweep.csv``, ``sweep.md`` and ``sweep.png``; returns the summary."""
    summary = summarise(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(
        out_dir / "sweep.json",
        json_text(
            {
                "recipe": recipe,
                "parameter": parameter,
                "command": command,
                "runs": rows,
                "summary": summary,
            },
            indent=2,
        ),
    )
    write_text_atomically(out_dir / "sweep.csv", csv_text(list(rows[0]), rows))
    seeds = sorted({row["seed"] for row in rows})
    write_text_atomically(
        out_dir / "sweep.md",
        f"# Sweep of {parameter} on {recipe}\n\nCommand: `{command}`\n\nSeeds: {seeds}; "
        "mean ± sample std over seeds; test-set accuracy (%) of the final epoch.\n\n"
        f"{markdown_table(parameter, summary)}\n\n![sweep](sweep.png)\n",
    )
    plot_sweep(
        out_dir / "sweep.png", parameter, summary, f"{recipe}: {parameter} ({len(seeds)} seeds)"
    )
    return summary
