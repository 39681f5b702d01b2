"""GLT metrics and protocol tables (spec glt_ifl §1.2, §2).

Accuracy is the fraction of correct samples. Precision is macro precision by sample
redistribution: sample i contributes ``1[ŷ_i = y_i] / #{j: ŷ_j = ŷ_i}`` and the sum is
divided by the number of distinct labels in the test set, i.e. the mean over classes of
``TP_c / #predicted as c`` (a class never predicted contributes 0). Class splits keep
the prediction counts of the whole test set; attribute splits are evaluated as if they
were their own test sets. Values are percent.
"""

from __future__ import annotations

import math

import torch

CLASS_SPLITS = ("many", "medium", "few")
ATTRIBUTE_SPLITS = ("many_a", "medium_a", "few_a")


def _sample_precision(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``P_i = 1[ŷ_i = y_i] / #{j: ŷ_j = ŷ_i}`` over this set (ŷ = -1: no prediction, 0)."""
    predicted_counts = torch.bincount(predictions[predictions >= 0], minlength=num_classes).double()
    counts = predicted_counts[predictions.clamp(min=0)].clamp(min=1)
    return torch.where(predictions == labels, 1.0 / counts, torch.zeros_like(counts))


def glt_scores(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Overall accuracy, macro precision and F1 = 2AP/(A+P) of one test set (percent)."""
    predictions, labels = predictions.long().cpu(), labels.long().cpu()
    if labels.numel() == 0:
        return {"accuracy": math.nan, "precision": math.nan, "f1": math.nan, "count": 0}
    accuracy = 100.0 * (predictions == labels).double().mean().item()
    distinct = int(torch.unique(labels).numel())
    precision = 100.0 * _sample_precision(predictions, labels, num_classes).sum().item() / distinct
    f1 = 2 * accuracy * precision / (accuracy + precision) if accuracy + precision > 0 else 0.0
    return {"accuracy": accuracy, "precision": precision, "f1": f1, "count": int(labels.numel())}


def glt_metrics(
    logits_or_predictions: torch.Tensor,
    labels: torch.Tensor,
    class_groups: dict[str, list[int]],
    attributes: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> dict:
    """Overall, class-split (many/medium/few) and attribute-split scores of one GLT test set.

    Rows of NaN or infinite logits predict no class (they count as wrong); ``non_finite_samples``
    says how many there were.
    """
    values = logits_or_predictions.detach().cpu()
    non_finite = 0
    if values.dim() == 2:
        num_classes = num_classes or values.shape[1]
        finite_rows = torch.isfinite(values).all(dim=1)  # NaN or inf logits predict no class (-1)
        predictions = values.argmax(dim=1).masked_fill(~finite_rows, -1)
        non_finite = int((~finite_rows).sum())
    else:
        predictions = values.long()
        num_classes = num_classes or int(max(predictions.max(), labels.max())) + 1
    labels = labels.detach().long().cpu()
    result = {
        "overall": glt_scores(predictions, labels, num_classes),
        "class_splits": {},
        "attribute_splits": {},
    }
    result["non_finite_samples"] = non_finite
    sample_precision = _sample_precision(predictions, labels, num_classes)
    present = set(torch.unique(labels).tolist())
    for name in CLASS_SPLITS:
        members = [c for c in class_groups.get(name, []) if c in present]
        if not members:
            continue
        in_group = torch.isin(labels, torch.tensor(members))
        result["class_splits"][name] = {
            "accuracy": 100.0 * (predictions[in_group] == labels[in_group]).double().mean().item(),
            "precision": 100.0 * sample_precision[in_group].sum().item() / len(members),
            "count": int(in_group.sum()),
        }
    if attributes is not None:
        attributes = attributes.detach().long().cpu()
        for value, name in enumerate(ATTRIBUTE_SPLITS):
            chosen = attributes == value
            if chosen.any():
                result["attribute_splits"][name] = glt_scores(
                    predictions[chosen], labels[chosen], num_classes
                )
    return result


def cell(scores: dict | None) -> str:
    """One split's "Acc / Prec" as the paper prints it; "–" for a split with no images."""
    if not scores:
        return "–"
    return f"{scores['accuracy']:.2f} / {scores['precision']:.2f}"


def protocol_markdown(protocols: dict) -> str:
    """A table per test set: overall, class splits and attribute splits, "Acc / Prec"."""
    lines = []
    for split_name, entry in protocols.items():
        metrics = entry["metrics"]
        columns = [("overall", metrics["overall"])]
        columns += [(f"{n} (class)", v) for n, v in metrics["class_splits"].items()]
        columns += [(f"{n} (attribute)", v) for n, v in metrics["attribute_splits"].items()]
        lines += [
            f"### {entry['protocol']} ({split_name}, "
            f"{metrics['overall']['count']} images), Acc / Prec",
            "",
            "| " + " | ".join(name for name, _ in columns) + " |",
            "|" + "---|" * len(columns),
            "| " + " | ".join(cell(value) for _, value in columns) + " |",
            "",
        ]
    return "\n".join(lines)


def protocol_text(protocols: dict) -> str:
    """The plain-text block `tailfuse eval` prints: one line per protocol and split."""
    lines = []
    for split_name, entry in protocols.items():
        metrics = entry["metrics"]
        parts = [f"overall {cell(metrics['overall'])}"]
        parts += [f"{n} {cell(v)}" for n, v in metrics["class_splits"].items()]
        parts += [f"{n} {cell(v)}" for n, v in metrics["attribute_splits"].items()]
        lines.append(f"{entry['protocol']:>4} [{split_name}] (Acc / Prec): " + ", ".join(parts))
    return "\n".join(lines)
