"""Classification metrics on predictions and class statistics (spec h2t §4.4, glt_ifl §2).

All functions take logits (N, C) or predictions (N,) and labels (N,) as tensors and
return plain Python numbers, in percent where the field reports percent.
"""

from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of samples whose label is among the ``k`` highest logits.

    A sample with a NaN or infinite logit counts as wrong: ``topk`` ranks NaN highest, so a
    diverged model would otherwise score the frequency of whichever class it lands on.
    """
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = (top == labels.view(-1, 1)).any(dim=1) & torch.isfinite(logits).all(dim=1)
    return 100.0 * hits.float().mean().item()


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``matrix[true, predicted]`` counts."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor, totals: torch.Tensor | None = None) -> list[float]:
    """Recall of each class in percent; a class absent from the labels gets NaN.

    ``totals``: test samples per class when some are not in ``confusion`` (non-finite logits,
    which predict no class); default: the confusion matrix's row sums.
    """
    totals = (confusion.sum(dim=1) if totals is None else totals).double()
    correct = confusion.diagonal().double()
    return [
        100.0 * c / t if t > 0 else float("nan")
        for c, t in zip(correct.tolist(), totals.tolist(), strict=True)
    ]


def per_class_precision(confusion: torch.Tensor) -> list[float]:
    """TP_c / (number predicted as c) in percent; a class never predicted contributes 0."""
    predicted = confusion.sum(dim=0).double()
    correct = confusion.diagonal().double()
    return [
        100.0 * c / p if p > 0 else 0.0
        for c, p in zip(correct.tolist(), predicted.tolist(), strict=True)
    ]


def _mean(values: list[float]) -> float:
    present = [value for value in values if value == value]  # drop NaN
    return sum(present) / len(present) if present else float("nan")


def group_means(per_class: list[float], groups: dict[str, list[int]]) -> dict[str, float]:
    """Unweighted mean of a per-class metric over each group (many/medium/few)."""
    return {name: _mean([per_class[c] for c in members]) for name, members in groups.items()}


def confidence_bins(confidence: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """0-based bin of each confidence: bin b holds ``b/B < c ≤ (b+1)/B`` (right-closed)."""
    return (torch.ceil(confidence * bins) - 1).clamp(0, bins - 1).long()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE in percent: ``Σ_b (n_b/N)·|acc_b − conf_b|`` over equal-width confidence bins.

    Bin b (1-based) holds ``(b−1)/B < confidence ≤ b/B``, as ``np.digitize(right=True)``.
    """
    probabilities = torch.softmax(logits.double(), dim=1)
    confidence, predictions = probabilities.max(dim=1)
    correct = (predictions == labels).double()
    bin_index = confidence_bins(confidence, bins)
    total = 0.0
    for b in range(bins):
        in_bin = bin_index == b
        count = int(in_bin.sum())
        if count:
            gap = correct[in_bin].mean() - confidence[in_bin].mean()
            total += count / len(labels) * abs(float(gap))
    return 100.0 * total


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Per confidence bin (the bins of :func:`expected_calibration_error`): image count, accuracy
    and mean confidence, as fractions (NaN for an empty bin). The data of a reliability diagram."""
    probabilities = torch.softmax(logits.double(), dim=1)
    confidence, predictions = probabilities.max(dim=1)
    correct = (predictions == labels).double()
    finite = torch.isfinite(confidence)  # a diverged model's NaN logits fall in no bin
    confidence, correct = confidence[finite], correct[finite]
    bin_index = confidence_bins(confidence, bins)
    counts = torch.bincount(bin_index, minlength=bins)
    correct_sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, bin_index, correct)
    confidence_sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, bin_index, confidence)
    safe = counts.clamp_min(1).double()
    empty = counts == 0
    return {
        "count": counts.tolist(),
        "accuracy": torch.where(empty, float("nan"), correct_sums / safe).tolist(),
        "confidence": torch.where(empty, float("nan"), confidence_sums / safe).tolist(),
    }


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of the predictions (nats)."""
    return torch.nn.functional.cross_entropy(logits.double(), labels).item()


def classification_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: dict[str, list[int]],
    calibration_scale: float = 1.0,
) -> dict:
    """Every metric tailfuse reports for one test set, as JSON-ready data.

    ECE and NLL are computed on ``calibration_scale × logits``: a cosine model trained with
    LDAM or KPS predicts raw cosines, whose softmax means nothing; its loss's logits are
    ``s·cos`` (the scale is reported as ``calibration_scale``).

    A sample with a NaN or infinite logit predicts no class: it counts as wrong in every
    accuracy, is left out of the confusion matrix and precision, and is counted in
    ``non_finite_samples`` (its NLL is NaN, so ``nll`` says so too).
    """
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    num_classes = logits.shape[1]
    finite_rows = torch.isfinite(logits).all(dim=1)
    predictions = logits.argmax(dim=1)
    confusion = confusion_matrix(predictions[finite_rows], labels[finite_rows], num_classes)
    class_totals = torch.bincount(labels, minlength=num_classes)
    accuracy_by_class = per_class_accuracy(confusion, class_totals)
    precision_by_class = per_class_precision(confusion)
    return {
        "num_samples": int(labels.numel()),
        "non_finite_samples": int((~finite_rows).sum()),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "mean_class_accuracy": _mean(accuracy_by_class),
        "group_accuracy": group_means(accuracy_by_class, groups),
        "macro_precision": _mean(precision_by_class),
        "group_precision": group_means(precision_by_class, groups),
        "ece": expected_calibration_error(calibration_scale * logits, labels, 15),
        "calibration": calibration_bins(calibration_scale * logits, labels, 15),
        "nll": negative_log_likelihood(calibration_scale * logits, labels),
        "calibration_scale": float(calibration_scale),
        "per_class_accuracy": accuracy_by_class,
        "per_class_precision": precision_by_class,
        "confusion_matrix": confusion.tolist(),
    }
