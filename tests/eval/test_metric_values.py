"""Metric values a binning or averaging error would change, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.eval.glt import glt_metrics
from tailfuse.eval.metrics import (
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)


def two_class_logits(confidence: float, predicted: int) -> list[float]:
    """Logits whose softmax gives ``confidence`` to class ``predicted``
    (1.0: a saturated softmax)."""
    gap = 1000.0 if confidence == 1.0 else math.log(confidence / (1 - confidence))
    row = [0.0, 0.0]
    row[predicted] = gap
    return row


def test_ece_top_bin_holds_confidences_above_14_15_and_exactly_one():
    # bin 15 (14/15, 1]: 0.96 right, 0.96 wrong, 1.0 wrong ->
    # |acc - conf| = |1/3 - 2.92/3|, weight 3/4
    # bin 14 (13/15, 14/15]: 0.9 right -> |1 - 0.9| = 0.1, weight 1/4
    # ECE = |1 - 2.92| / 4 + 0.1 / 4 = 0.48 + 0.025 = 50.5 %
    logits = torch.tensor(
        [
            two_class_logits(0.96, 0),
            two_class_logits(0.96, 0),
            two_class_logits(1.0, 1),
            two_class_logits(0.9, 1),
        ]
    )
    labels = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(logits, labels, 15) == pytest.approx(50.5, abs=1e-6)
    # merging the top two bins would give |2 - 3.82| / 4 = 45.5 %; dropping the 1.0 sample 25.5 %


def test_ece_with_unequal_gaps_weights_each_bin_by_its_share_of_samples():
    # bin (0.5, 0.5333]: 0.52 right, 0.52 right, 0.52 right -> |1 - 0.52| = 0.48, weight 3/5
    # bin (0.6667, 0.7333]: 0.7 wrong, 0.7 right -> |0.5 - 0.7| = 0.2, weight 2/5
    logits = torch.tensor([two_class_logits(0.52, 0)] * 3 + [two_class_logits(0.7, 1)] * 2)
    labels = torch.tensor([0, 0, 0, 0, 1])
    assert expected_calibration_error(logits, labels, 15) == pytest.approx(
        100 * (0.6 * 0.48 + 0.4 * 0.2), abs=1e-6
    )


def test_nll_is_the_mean_negative_log_probability_of_the_label():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 1])
    # -log softmax: row 1 label 0: log(e^2 + 2) - 2; row 2 label 2: log(e + 2); row 3: log 3
    expected = (math.log(math.e**2 + 2) - 2 + math.log(math.e + 2) + math.log(3)) / 3
    assert expected == pytest.approx((0.2395 + 1.5514 + 1.0986) / 3, abs=1e-4)  # 0.9632
    assert negative_log_likelihood(logits, labels) == pytest.approx(expected, rel=1e-9)
    metrics = classification_metrics(logits, labels, {"many": [0], "medium": [1], "few": [2]})
    assert metrics["nll"] == pytest.approx(expected, rel=1e-6)
    # a 100 %-confident correct sample contributes 0, a uniform one log 3
    assert negative_log_likelihood(
        torch.tensor([[1000.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 2])
    ) == pytest.approx(math.log(3) / 2)


def test_classification_metrics_report_the_ece_of_the_table():
    logits = torch.tensor(
        [
            two_class_logits(0.96, 0),
            two_class_logits(0.96, 0),
            two_class_logits(1.0, 1),
            two_class_logits(0.9, 1),
        ]
    )
    metrics = classification_metrics(logits, torch.tensor([0, 1, 0, 1]), {"many": [0], "few": [1]})
    assert metrics["ece"] == pytest.approx(50.5, abs=1e-6)


def test_glt_class_split_precision_with_a_class_of_the_group_absent_from_the_test_set():
    # the few group is classes 2 and 3; class 3 has no test image (as in
    # Test-GLT's tail) but is predicted
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([0, 3, 1, 0, 2, 3])
    groups = {"many": [0], "medium": [1], "few": [2, 3]}
    splits = glt_metrics(predictions, labels, groups, num_classes=4)["class_splits"]
    # predicted counts over the whole set: class 0 twice, 1 once, 2 once, 3 twice
    # P_i of the correct samples: sample 0 -> 1/2, sample 2 -> 1/1, sample 4 -> 1/1
    assert splits["many"] == {"accuracy": 50.0, "precision": 50.0, "count": 2}
    assert splits["medium"] == {"accuracy": 50.0, "precision": 100.0, "count": 2}
    # few: 1 / (classes of the group present in the test set = 1), not 1 / 2
    assert splits["few"] == {"accuracy": 50.0, "precision": 100.0, "count": 2}
    overall = glt_metrics(predictions, labels, groups, num_classes=4)["overall"]
    assert overall["precision"] == pytest.approx(100 * 2.5 / 3)  # three classes occur in the labels
    assert overall["accuracy"] == pytest.approx(50.0)


def test_glt_group_with_no_class_in_the_test_set_is_left_out():
    labels = torch.tensor([0, 1])
    splits = glt_metrics(
        torch.tensor([0, 2]), labels, {"many": [0], "medium": [1], "few": [2]}, num_classes=3
    )["class_splits"]
    assert set(splits) == {"many", "medium"}
    assert splits["medium"] == {"accuracy": 0.0, "precision": 0.0, "count": 1}
