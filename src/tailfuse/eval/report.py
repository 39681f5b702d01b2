"""Run reports: ``results.json``, a short ``report.md`` and a per-class accuracy plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

GROUP_ORDER = ("many", "medium", "few")


def _number(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def plot_per_class_accuracy(
    path: Path, per_class_accuracy: list[float], class_counts: list[int], class_names: list[str], title: str
) -> None:
    """Bars of per-class test accuracy, classes ordered by training count, with the counts as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(class_counts)), key=lambda c: -class_counts[c])
    figure, accuracy_axis = plt.subplots(figsize=(max(6.0, 0.12 * len(order) + 4), 4))
    positions = list(range(len(order)))
    accuracy_axis.bar(positions, [per_class_accuracy[c] for c in order], color="#4C72B0")
    accuracy_axis.set_ylabel("test accuracy (%)")
    accuracy_axis.set_ylim(0, 100)
    accuracy_axis.set_xlabel("class (sorted by training count)")
    if len(order) <= 20:
        accuracy_axis.set_xticks(positions, [class_names[c] for c in order], rotation=45, ha="right")
    count_axis = accuracy_axis.twinx()
    count_axis.plot(positions, [class_counts[c] for c in order], color="#DD8452", marker="o", markersize=3)
    count_axis.set_yscale("log")
    count_axis.set_ylabel("training images (log)", color="#DD8452")
    accuracy_axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown_report(results: dict) -> str:
    """A short human-readable summary of ``results.json``."""
    test = results["test"]
    lines = [
        f"# {results['name']}",
        "",
        f"- model selection: {results['selection']['rule']} (epoch {results['selection']['epoch']} of {results['epochs']})",
        f"- training images: {results['data']['total']} in {len(results['data']['class_counts'])} classes, "
        f"imbalance ratio {results['data']['imbalance_ratio']}, subset checksum `{results['data']['subset_checksum']}`",
        f"- test images: {test['num_samples']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 | {_number(test['top1'])} |",
        f"| top-5 | {_number(test['top5'])} |",
    ]
    for group in GROUP_ORDER:
        if group in test["group_accuracy"]:
            size = len(results["data"]["groups"][group])
            lines.append(f"| {group} accuracy ({size} classes) | {_number(test['group_accuracy'][group])} |")
    lines += [
        f"| macro precision | {_number(test['macro_precision'])} |",
        f"| ECE (15 bins) | {_number(test['ece'])} |",
        f"| NLL | {test['nll']:.4f} |",
    ]
    scale = test.get("calibration_scale", 1.0)
    if scale != 1.0:  # cosine models trained with LDAM/KPS predict raw cosines
        lines.append(f"| ECE and NLL measured on | {scale:g} × the logits (the loss's scale) |")
    if results.get("validation"):
        lines.append(f"| validation top-1 | {_number(results['validation']['top1'])} |")
    if results.get("glt"):
        from tailfuse.eval.glt import protocol_markdown

        lines += ["", "## GLT protocols (spec glt_ifl §2: accuracy / macro precision)", "", protocol_markdown(results["glt"])]
    lines += ["", "| class | train images | accuracy | precision |", "|---|---|---|---|"]
    names = results["data"]["class_names"]
    for c, count in enumerate(results["data"]["class_counts"]):
        lines.append(
            f"| {names[c]} | {count} | {_number(test['per_class_accuracy'][c])} | {_number(test['per_class_precision'][c])} |"
        )
    lines += ["", "![per-class accuracy](per_class_accuracy.png)", ""]
    return "\n".join(lines)


def write_report(directory: Path, results: dict) -> None:
    """Write ``results.json``, ``report.md`` and ``per_class_accuracy.png`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / ".results.json.tmp"
    temporary.write_text(json.dumps(results, indent=2, allow_nan=True))
    temporary.replace(directory / "results.json")
    (directory / "report.md").write_text(markdown_report(results))
    plot_per_class_accuracy(
        directory / "per_class_accuracy.png",
        results["test"]["per_class_accuracy"],
        results["data"]["class_counts"],
        results["data"]["class_names"],
        f"{results['name']}: top-1 {results['test']['top1']:.2f}%",
    )
