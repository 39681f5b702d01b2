"""Run reports: ``results.json``, a short ``report.md`` and a per-class accuracy plot."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from tailfuse.files import write_text_atomically

GROUP_ORDER = ("many", "medium", "few")


def strict_json(value):
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_text(value, indent: int | None = None) -> str:
    """Strictly valid JSON (NaN -> null) for results, summaries and metrics.jsonl lines."""
    return json.dumps(strict_json(value), indent=indent, allow_nan=False)


def csv_text(fields: list[str], rows: list[dict], **options) -> str:
    """``rows`` as CSV text with a header of ``fields`` (``options`` go to ``csv.DictWriter``)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, **options)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically (:func:`write_text_atomically`)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    write_text_atomically(path, buffer.getvalue())


def _number(value: float) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
    )


#: Widest per-class accuracy figure, in inches (at 120 dpi); 0.12 inch a class up to it.
WIDEST_FIGURE = 16.0
#: Most classes drawn as one bar each; more are one filled step curve.
MOST_BARS = 200


def plot_per_class_accuracy(
    path: Path,
    per_class_accuracy: list[float],
    class_counts: list[int],
    class_names: list[str],
    title: str,
) -> None:
    """Per-class test accuracy, classes ordered by training count, with the counts as a line:
    a bar per class up to :data:`MOST_BARS` classes, a filled step curve beyond (ImageNet-LT's
    1,000, iNaturalist's 8,142), in a figure at most :data:`WIDEST_FIGURE` inches wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(class_counts)), key=lambda c: -class_counts[c])
    width = min(WIDEST_FIGURE, max(6.0, 0.12 * len(order) + 4))
    figure, accuracy_axis = plt.subplots(figsize=(width, 4))
    positions = list(range(len(order)))
    accuracy = [per_class_accuracy[c] for c in order]
    if len(order) <= MOST_BARS:
        accuracy_axis.bar(positions, accuracy, color="#4C72B0")
    else:
        accuracy_axis.fill_between(
            positions, accuracy, step="mid", color="#A1B6D8", linewidth=0, label="per class"
        )
        window = max(2, len(order) // 50)  # mean over 2 % of the classes, centred
        cumulative = [0.0]
        for value in accuracy:
            cumulative.append(cumulative[-1] + value)
        running = [
            (cumulative[min(len(order), c + window // 2 + 1)] - cumulative[max(0, c - window // 2)])
            / (min(len(order), c + window // 2 + 1) - max(0, c - window // 2))
            for c in positions
        ]
        accuracy_axis.plot(
            positions, running, color="#1F3F73", linewidth=1.2, label=f"mean of {window} classes"
        )
        accuracy_axis.legend(loc="upper right", fontsize=8)
        accuracy_axis.set_xlim(-0.5, len(order) - 0.5)
    accuracy_axis.set_ylabel("test accuracy (%)")
    accuracy_axis.set_ylim(0, 100)
    accuracy_axis.set_xlabel("class (sorted by training count)")
    if len(order) <= 20:
        accuracy_axis.set_xticks(
            positions, [class_names[c] for c in order], rotation=45, ha="right"
        )
    count_axis = accuracy_axis.twinx()
    marker = {"marker": "o", "markersize": 3} if len(order) <= MOST_BARS else {}
    count_axis.plot(positions, [class_counts[c] for c in order], color="#DD8452", **marker)
    count_axis.set_yscale("log")
    count_axis.set_ylabel("training images (log)", color="#DD8452")
    accuracy_axis.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def plot_reliability_diagram(path: Path, calibration: dict, title: str) -> None:
    """Reliability diagram: accuracy against mean confidence per confidence bin, with the diagonal.

    Bars are the bins' accuracies at their confidence ranges; the gap to the diagonal, weighted
    by the bins' sizes (the lower panel), is what ECE sums.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = len(calibration["count"])
    width = 1.0 / bins
    lefts = [b * width for b in range(bins)]
    accuracy = [a if a is not None and a == a else 0.0 for a in calibration["accuracy"]]
    confidence = [c if c is not None and c == c else 0.0 for c in calibration["confidence"]]
    figure, (axis, count_axis) = plt.subplots(
        2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True
    )
    axis.bar(
        lefts,
        accuracy,
        width=width,
        align="edge",
        color="#4C72B0",
        edgecolor="white",
        label="accuracy",
    )
    axis.bar(
        lefts,
        [c - a for a, c in zip(accuracy, confidence, strict=True)],
        bottom=accuracy,
        width=width,
        align="edge",
        color="#C44E52",
        alpha=0.35,
        label="gap to mean confidence",
    )
    axis.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1)
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(loc="upper left")
    axis.set_title(title)
    count_axis.bar(lefts, calibration["count"], width=width, align="edge", color="#8C8C8C")
    count_axis.set_xlabel("confidence (max softmax probability)")
    count_axis.set_ylabel("images")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def markdown_report(results: dict) -> str:
    """A short human-readable summary of ``results.json``."""
    test = results["test"]
    lines = [
        f"# {results['name']}",
        "",
        f"- model selection: {results['selection']['rule']} (epoch "
        f"{results['selection']['epoch']} of {results['epochs']})",
        f"- training images: {results['data']['total']} in {len(results['data']['class_counts'])} "
        f"classes, imbalance ratio {results['data']['imbalance_ratio']}, subset checksum "
        f"`{results['data']['subset_checksum']}`",
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
            classes = "class" if size == 1 else "classes"
            lines.append(
                f"| {group} accuracy ({size} {classes}) | "
                f"{_number(test['group_accuracy'][group])} |"
            )
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
    adaptation = results.get("test_time_adaptation")
    if adaptation:  # weights learned on the unlabelled test images (TADE)
        weights = ", ".join(f"{w:.4f}" for w in adaptation["expert_weights"])
        lines.append(
            f"| test-time expert weights ({adaptation['epochs_run']} pass(es) over "
            f"{adaptation['images']} unlabelled test images) | {weights} |"
        )
    if results.get("glt"):
        from tailfuse.eval.glt import protocol_markdown

        lines += [
            "",
            "## GLT protocols (spec glt_ifl §2: accuracy / macro precision)",
            "",
            protocol_markdown(results["glt"]),
        ]
    lines += ["", "| class | train images | accuracy | precision |", "|---|---|---|---|"]
    names = results["data"]["class_names"]
    for c, count in enumerate(results["data"]["class_counts"]):
        lines.append(
            f"| {names[c]} | {count} | {_number(test['per_class_accuracy'][c])} | "
            f"{_number(test['per_class_precision'][c])} |"
        )
    lines += ["", "![per-class accuracy](per_class_accuracy.png)", ""]
    if test.get("calibration"):
        lines += ["![reliability diagram](reliability.png)", ""]
    return "\n".join(lines)


def write_report(directory: Path, results: dict) -> None:
    """Write ``report.md``, ``per_class_accuracy.png`` (and the reliability diagram), then
    ``results.json`` into ``directory``: last, since its presence marks a run as finished
    (resume, ``compare``), so a finished run's folder always holds its report and plots."""
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomically(directory / "report.md", markdown_report(results))
    plot_per_class_accuracy(
        directory / "per_class_accuracy.png",
        results["test"]["per_class_accuracy"],
        results["data"]["class_counts"],
        results["data"]["class_names"],
        f"{results['name']}: top-1 {results['test']['top1']:.2f}%",
    )
    if results["test"].get("calibration"):
        plot_reliability_diagram(
            directory / "reliability.png",
            results["test"]["calibration"],
            f"{results['name']}: ECE {results['test']['ece']:.2f}%",
        )
    write_text_atomically(directory / "results.json", json_text(results, indent=2))
