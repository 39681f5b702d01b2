"""Long-tail subsets: exact counts and indices of the LDAM-DRW protocol, groups, checksums."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tailfuse.config import DataConfig, GroupsConfig
from tailfuse.data.longtail import (
    balanced_indices,
    class_groups,
    indices_checksum,
    longtail_indices,
    profile_class_counts,
)
from tailfuse.data.prepare import plan_subset
from tailfuse.errors import DataError


@pytest.mark.parametrize(
    ("num_classes", "max_per_class", "imbalance_factor", "total", "smallest"),
    [
        (100, 500, 200, 9502, 2),
        (100, 500, 100, 10847, 5),
        (100, 500, 50, 12608, 10),
        (10, 5000, 100, 12406, 50),
        (10, 5000, 50, 13996, 100),
    ],
)
def test_exponential_profile_totals_match_the_spec(
    num_classes, max_per_class, imbalance_factor, total, smallest
):
    counts = profile_class_counts("exponential", max_per_class, num_classes, imbalance_factor)
    assert sum(counts) == total
    assert counts[0] == max_per_class and counts[-1] == smallest
    assert counts == sorted(counts, reverse=True)


def test_cifar10_if100_counts_exactly():
    assert profile_class_counts("exponential", 5000, 10, 100) == [
        5000,
        2997,
        1796,
        1077,
        645,
        387,
        232,
        139,
        83,
        50,
    ]


def test_step_profile_halves():
    assert profile_class_counts("step", 500, 10, 10) == [500] * 5 + [50] * 5
    assert profile_class_counts("step", 500, 5, 100) == [500, 500, 5, 5, 5]


def test_longtail_indices_follow_the_seeded_per_class_shuffle():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    chosen = longtail_indices(labels, [3, 1], seed=0)
    # the protocol as LDAM-DRW runs it: seed numpy's global RNG once, shuffle each class in turn
    np.random.seed(0)
    first, second = np.array([0, 2, 4, 6]), np.array([1, 3, 5, 7])
    np.random.shuffle(first)
    np.random.shuffle(second)
    assert chosen.tolist() == [*first[:3].tolist(), second[0]]
    assert chosen.tolist() == [4, 6, 2, 1]


def test_longtail_indices_refuse_a_class_that_is_too_small():
    with pytest.raises(DataError, match="class 1 has 1 images"):
        longtail_indices(np.array([0, 0, 1]), [2, 2], seed=0)


def test_checksum_is_order_sensitive_and_stable():
    assert indices_checksum(np.array([1, 2, 3])) == indices_checksum([1, 2, 3])
    assert indices_checksum(np.array([1, 2, 3])) != indices_checksum(np.array([3, 2, 1]))
    assert len(indices_checksum(np.arange(10))) == 16


def test_balanced_indices_avoid_excluded_images():
    labels = np.repeat(np.arange(3), 10)
    excluded = np.arange(0, 30, 2)
    chosen = balanced_indices(labels, 4, seed=1, exclude=excluded)
    assert np.bincount(labels[chosen]).tolist() == [4, 4, 4]
    assert not set(chosen.tolist()) & set(excluded.tolist())


def test_index_groups_cifar100():
    groups = class_groups(GroupsConfig(by="index", boundaries=(36, 71)), [1] * 100)
    assert [len(groups[name]) for name in ("many", "medium", "few")] == [36, 35, 29]
    assert groups["medium"][0] == 36 and groups["few"][0] == 71


def test_count_groups_cifar100_if100_match_the_spec_note():
    # spec h2t §4.3: under >100 / <20 the IF=100 CIFAR-100 split is 35/35/30
    counts = profile_class_counts("exponential", 500, 100, 100)
    groups = class_groups(GroupsConfig(by="count"), counts)
    assert [len(groups[name]) for name in ("many", "medium", "few")] == [35, 35, 30]
    assert counts[34] > 100 and counts[35] <= 100 and counts[70] < 20


def test_count_group_edges():
    groups = class_groups(GroupsConfig(by="count"), [101, 100, 20, 19])
    assert groups == {"many": [0], "medium": [1, 2], "few": [3]}


def test_plan_on_the_real_jpeg_copy(cifar10_jpeg_root):
    plan = plan_subset(
        DataConfig(source="cifar10", root=str(cifar10_jpeg_root), imbalance_factor=100)
    )
    assert plan.class_counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(plan.train_indices) == 12406 and len(set(plan.train_indices.tolist())) == 12406
    labels = plan.sources["train"].labels[plan.train_indices]
    assert np.bincount(labels).tolist() == plan.class_counts
    assert len(plan.test_indices) == 10000
    # the protocol rebuilt here from the copy's own labels, as LDAM-DRW's gen_imbalanced_data
    # does it: seed numpy's global RNG with 0, shuffle each class's indices in turn, keep n_c
    all_labels = np.asarray(plan.sources["train"].labels)
    np.random.seed(0)
    rebuilt = []
    for label, count in enumerate(plan.class_counts):
        members = np.where(all_labels == label)[0]
        np.random.shuffle(members)
        rebuilt.extend(members[:count].tolist())
    assert plan.train_indices.tolist() == rebuilt
    digest = hashlib.sha256(np.asarray(rebuilt, dtype="<i8").tobytes()).hexdigest()[:16]
    # the checksum recorded with every run on the shared copy is that subset's
    assert plan.subset_checksum == digest == "f5a6ab138b23b845"


def test_validation_is_balanced_and_disjoint_from_training(cifar10_jpeg_root):
    plan = plan_subset(
        DataConfig(
            source="cifar10",
            root=str(cifar10_jpeg_root),
            imbalance_factor=100,
            max_per_class=4980,
            validation_per_class=20,
        )
    )
    assert len(plan.validation_indices) == 200
    assert not set(plan.validation_indices.tolist()) & set(plan.train_indices.tolist())


def test_validation_needs_images_outside_the_subset(cifar10_jpeg_root):
    with pytest.raises(DataError, match="lower data.max_per_class"):
        plan_subset(
            DataConfig(source="cifar10", root=str(cifar10_jpeg_root), validation_per_class=20)
        )
