"""Metrics on hand-computed prediction tables."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.eval.metrics import (
    classification_metrics,
    confidence_bins,
    confusion_matrix,
    expected_calibration_error,
    group_means,
    per_class_accuracy,
    per_class_precision,
    topk_accuracy,
)


def one_hot_logits(predictions: list[int], num_classes: int) -> torch.Tensor:
    logits = torch.zeros(len(predictions), num_classes)
    logits[torch.arange(len(predictions)), torch.tensor(predictions)] = 5.0
    return logits


# labels:      0 0 0 0 1 1 2 2
# predictions: 0 0 0 1 1 0 0 1   -> class 2 never predicted
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
PREDICTIONS = [0, 0, 0, 1, 1, 0, 0, 1]


def test_confusion_per_class_accuracy_and_precision():
    confusion = confusion_matrix(torch.tensor(PREDICTIONS), LABELS, 3)
    assert confusion.tolist() == [[3, 1, 0], [1, 1, 0], [1, 1, 0]]
    assert per_class_accuracy(confusion) == [75.0, 50.0, 0.0]
    # precision: class 0: 3 of 5 predicted; class 1: 1 of 3; class 2: never predicted -> 0
    assert per_class_precision(confusion) == pytest.approx([60.0, 100.0 / 3, 0.0])


def test_group_means_are_unweighted_over_classes():
    assert group_means([75.0, 50.0, 0.0], {"many": [0, 1], "few": [2]}) == {
        "many": 62.5,
        "few": 0.0,
    }


def test_topk():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 2])
    assert topk_accuracy(logits, labels, 1) == 50.0
    assert topk_accuracy(logits, labels, 2) == 100.0
    assert topk_accuracy(logits, labels, 5) == 100.0  # k larger than classes


def test_ece_by_hand():
    # two samples at confidence 0.9 (bin 14: (13/15, 14/15]), one right one wrong: |0.5-0.9| = 0.4
    # one sample at confidence 0.6 (bin 9), right: |1-0.6| = 0.4 ; ECE = 2/3*0.4 + 1/3*0.4 = 0.4
    def logits_for(confidence: float, predicted: int) -> list[float]:
        other = math.log((1 - confidence) / confidence)
        row = [other, other]
        row[predicted] = 0.0
        # two classes: p(predicted) = 1 / (1 + e^other) = confidence
        return row

    logits = torch.tensor([logits_for(0.9, 0), logits_for(0.9, 0), logits_for(0.6, 1)])
    labels = torch.tensor([0, 1, 1])
    assert expected_calibration_error(logits, labels, 15) == pytest.approx(40.0, abs=1e-5)


def test_confidence_bins_are_right_closed():
    # np.digitize(right=True) convention: 9/15 belongs to the 9th bin (index 8),
    # just above to the 10th
    confidence = torch.tensor([9 / 15, 9 / 15 + 1e-9, 1.0, 1 / 15, 1e-6], dtype=torch.float64)
    assert confidence_bins(confidence, 15).tolist() == [8, 9, 14, 0, 0]


def test_confidence_bins_stay_in_range_and_default_to_fifteen():
    # 0 would be bin -1 and a rounding error above 1 bin B without the clamp; 0.5 is
    # bin 7 of 15 (7/15 < 0.5 <= 8/15), bin 7 of 16 too, but 0.95 is bin 14 of 15, 15 of 16
    confidence = torch.tensor([0.0, 1.0 + 1e-12, 0.5, 0.95], dtype=torch.float64)
    assert confidence_bins(confidence).tolist() == [0, 14, 7, 14]
    assert confidence_bins(confidence, 4).tolist() == [0, 3, 1, 3]


def test_ece_uses_the_bin_count_it_is_given():
    # confidence 0.5 (wrong: ties predict class 0) and 0.9 (right): in one bin the gap is
    # |0.5 - 0.7|; in 15 bins each sample has its own, 0.5 and 0.1, weight 1/2 each
    logits = torch.tensor([[0.0, 0.0], [math.log(9.0), 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    assert expected_calibration_error(logits, labels, 1) == pytest.approx(20.0)
    assert expected_calibration_error(logits, labels, 15) == pytest.approx(30.0)


def test_classification_metrics_bundle():
    metrics = classification_metrics(
        one_hot_logits(PREDICTIONS, 3), LABELS, {"many": [0], "medium": [1], "few": [2]}
    )
    assert metrics["top1"] == pytest.approx(50.0)
    assert metrics["mean_class_accuracy"] == pytest.approx(125.0 / 3)
    assert metrics["group_accuracy"] == {"many": 75.0, "medium": 50.0, "few": 0.0}
    assert metrics["macro_precision"] == pytest.approx((60.0 + 100.0 / 3 + 0.0) / 3)
    assert metrics["group_precision"]["few"] == 0.0
    assert metrics["confusion_matrix"][2] == [1, 1, 0]
    assert metrics["num_samples"] == 8 and metrics["top5"] == 100.0
    assert set(metrics) >= {"ece", "nll", "per_class_accuracy", "per_class_precision"}


def test_non_finite_logits_count_as_wrong_and_are_reported():
    """A NaN row predicts nothing: torch ranks NaN highest, so argmax alone
    would call it class 0."""
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor(
        [
            [nan, 0.0, 0.0],  # label 0: argmax says 0 (NaN ranks first), but it predicts nothing
            [2.0, 1.0, 0.0],  # label 0: right
            [0.0, inf, 0.0],  # label 1: infinite logit, predicts nothing
            [0.0, 3.0, 1.0],  # label 1: right
            [0.0, 1.0, 0.0],  # label 2: wrong (predicted 1)
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2])
    metrics = classification_metrics(logits, labels, {"many": [0], "medium": [1], "few": [2]})
    assert metrics["non_finite_samples"] == 2
    assert metrics["top1"] == pytest.approx(100.0 * 2 / 5)
    assert metrics["top5"] == pytest.approx(100.0 * 3 / 5)  # k = 3 classes: every finite row hits
    assert metrics["per_class_accuracy"] == pytest.approx([50.0, 50.0, 0.0])
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert metrics["per_class_precision"] == pytest.approx([100.0, 50.0, 0.0])
    assert metrics["num_samples"] == 5 and math.isnan(metrics["nll"])
