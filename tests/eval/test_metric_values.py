"""Metric values a binning or averaging error would change, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tailfuse.eval.glt import glt_metrics
from tailfuse.eval.metrics import (
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    topk_accuracy,
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
    # 0.2395, 1.5514 and 1.0986: 0.9632
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


def test_classification_metrics_bin_by_fifteen_and_keep_the_labels_in_calibration():
    # 0.87 (right) and 0.93 (wrong) share bin 13 of 15 (13/15 < c <= 14/15): ECE = |0.5 - 0.9|;
    # with 16 bins they would fall apart (0.87 <= 14/16 < 0.93) and ECE would be 53
    logits = torch.tensor([two_class_logits(0.87, 0), two_class_logits(0.93, 1)])
    metrics = classification_metrics(logits, torch.tensor([0, 0]), {"many": [0], "few": [1]})
    assert metrics["ece"] == pytest.approx(40.0, abs=1e-6)
    assert expected_calibration_error(logits, torch.tensor([0, 0])) == pytest.approx(40.0)
    calibration = metrics["calibration"]
    assert calibration["count"] == [0] * 13 + [2, 0]
    assert calibration["accuracy"][13] == 0.5
    assert calibration["confidence"][13] == pytest.approx(0.9)


def test_top5_is_the_five_highest_logits():
    # 7 classes ranked 0 (highest) to 6: label 4 is fifth (a hit), label 5 sixth (a miss)
    logits = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]] * 2)
    metrics = classification_metrics(logits, torch.tensor([4, 5]), {"many": list(range(7))})
    assert metrics["top5"] == 50.0 and metrics["top1"] == 0.0
    # topk_accuracy's default is top-1: label 0 is the highest logit of the first row only
    assert topk_accuracy(logits, torch.tensor([0, 1])) == 50.0


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


def test_calibration_bins_worked_example():
    # 2 classes; logits (0, 0) give confidence 0.5 (bin 7 of 15: 7/15 < 0.5 <= 8/15);
    # (ln 9, 0) gives 0.9 (bin 13: 13/15 < 0.9 <= 14/15); a NaN row falls in no bin
    logits = torch.tensor(
        [
            [0.0, 0.0],
            [math.log(9.0), 0.0],
            [math.log(9.0), 0.0],
            [0.0, math.log(9.0)],
            [math.nan, 0.0],
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 0])
    bins = calibration_bins(logits, labels)  # the default is ECE's 15 bins
    assert bins["count"] == [0] * 7 + [1] + [0] * 5 + [3, 0]
    assert bins["accuracy"][7] == 1.0 and bins["accuracy"][13] == pytest.approx(2 / 3)
    assert bins["confidence"][7] == pytest.approx(0.5)
    assert bins["confidence"][13] == pytest.approx(0.9)
    empty = [b for b in range(15) if b not in (7, 13)]
    assert all(math.isnan(bins["accuracy"][b]) for b in empty)
    assert all(math.isnan(bins["confidence"][b]) for b in empty)


def test_calibration_bins_take_the_bin_count_they_are_given():
    # 4 bins: 0.5 lies in bin 1 (1/4 < 0.5 <= 2/4), 0.9 in bin 3 (3/4 < 0.9 <= 1)
    logits = torch.tensor([[0.0, 0.0], [math.log(9.0), 0.0], [0.0, math.log(9.0)]])
    bins = calibration_bins(logits, torch.tensor([1, 0, 0]), 4)
    assert bins["count"] == [0, 1, 0, 2]
    assert bins["accuracy"][1] == 0.0 and bins["accuracy"][3] == 0.5
    assert bins["confidence"][3] == pytest.approx(0.9)
