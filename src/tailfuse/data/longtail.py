"""Long-tailed subsets, class groups and subset checksums (spec h2t §4.1, §4.3).

The subset follows the LDAM-DRW protocol: class ``c`` keeps
``n_c = int(n_max · (1/IF)^(c/(C−1)))`` images (exponential profile), chosen by seeding
numpy once with the subset seed, then, for each class in ascending label order,
shuffling that class's indices (in the source's order) and keeping the first ``n_c``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from tailfuse.config import GroupsConfig
from tailfuse.errors import DataError

GROUP_NAMES = ("many", "medium", "few")


def profile_class_counts(
    profile: str, max_per_class: int, num_classes: int, imbalance_factor: float
) -> list[int]:
    """Per-class image counts of a long-tail profile; class 0 is the largest.

    ``exponential``: ``int(n_max · (1/IF)^(c/(C−1)))`` (LDAM-DRW). ``step``: the first
    ``C//2`` classes keep ``n_max``, the rest ``int(n_max / IF)``. ``none``: ``n_max`` each.
    """
    if profile == "exponential":
        if num_classes == 1:
            return [max_per_class]
        ratio = 1.0 / imbalance_factor
        return [int(max_per_class * ratio ** (c / (num_classes - 1.0))) for c in range(num_classes)]
    if profile == "step":
        head = num_classes // 2
        return [max_per_class] * head + [int(max_per_class / imbalance_factor)] * (
            num_classes - head
        )
    if profile == "none":
        return [max_per_class] * num_classes
    raise DataError(f"unknown long-tail profile '{profile}' (exponential, step, none)")


def longtail_indices(labels: np.ndarray, class_counts: list[int], seed: int) -> np.ndarray:
    """Indices of the long-tailed subset: per-class seeded shuffle, first ``n_c`` kept."""
    labels = np.asarray(labels)
    random_state = np.random.RandomState(seed)
    chosen = []
    for class_index, wanted in enumerate(class_counts):
        class_positions = np.where(labels == class_index)[0]
        if len(class_positions) < wanted:
            raise DataError(
                f"class {class_index} has {len(class_positions)} images but the long-tail "
                f"profile asks for {wanted} (lower data.max_per_class)"
            )
        random_state.shuffle(class_positions)
        chosen.append(class_positions[:wanted])
    return np.concatenate(chosen).astype(np.int64)


def balanced_indices(
    labels: np.ndarray, per_class: int, seed: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """``per_class`` indices of every class, seeded, avoiding ``exclude``
    (validation, small test sets)."""
    labels = np.asarray(labels)
    excluded = np.zeros(len(labels), dtype=bool)
    if exclude is not None and len(exclude):
        excluded[np.asarray(exclude)] = True
    random_state = np.random.RandomState(seed)
    chosen = []
    for class_index in range(int(labels.max()) + 1):
        positions = np.where((labels == class_index) & ~excluded)[0]
        if len(positions) < per_class:
            raise DataError(
                f"class {class_index} has only {len(positions)} images left for a balanced "
                f"set of {per_class} per class"
            )
        random_state.shuffle(positions)
        chosen.append(np.sort(positions[:per_class]))
    return np.concatenate(chosen).astype(np.int64)


def indices_checksum(indices: np.ndarray) -> str:
    """A short, order-sensitive checksum of subset indices (recorded with every run)."""
    data = np.ascontiguousarray(np.asarray(indices, dtype="<i8")).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def class_groups(config: GroupsConfig, class_counts: list[int]) -> dict[str, list[int]]:
    """Split classes into many/medium/few by index ranges or by training-count thresholds."""
    num_classes = len(class_counts)
    if config.by == "index":
        first, second = config.boundaries
        if second > num_classes:
            raise DataError(
                f"groups.boundaries {list(config.boundaries)} exceed the {num_classes} classes"
            )
        return {
            "many": list(range(0, first)),
            "medium": list(range(first, second)),
            "few": list(range(second, num_classes)),
        }
    groups: dict[str, list[int]] = {name: [] for name in GROUP_NAMES}
    for class_index, count in enumerate(class_counts):
        if count > config.many_above:
            groups["many"].append(class_index)
        elif count < config.few_below:
            groups["few"].append(class_index)
        else:
            groups["medium"].append(class_index)
    return groups


def stratified_split(
    labels: np.ndarray, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into (train, validation, test), per class, seeded (``data.split``).

    Numpy is seeded once with ``seed``; for each class in label order its indices are
    shuffled, the first ``round(n·test)`` go to test, the next ``round(n·validation)`` to
    validation, the rest to training. Each part is returned sorted.
    """
    labels = np.asarray(labels)
    random_state = np.random.RandomState(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for class_index in range(int(labels.max()) + 1 if len(labels) else 0):
        positions = np.where(labels == class_index)[0]
        random_state.shuffle(positions)
        test_size = int(round(len(positions) * test_fraction))
        validation_size = int(round(len(positions) * validation_fraction))
        if len(positions) - test_size - validation_size < 1:
            raise DataError(
                f"class {class_index} has {len(positions)} images: too few to keep "
                f"one for training after data.split takes test {test_fraction} and "
                f"validation {validation_fraction}"
            )
        parts[2].append(positions[:test_size])
        parts[1].append(positions[test_size : test_size + validation_size])
        parts[0].append(positions[test_size + validation_size :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in parts)


def frequency_order(class_counts: list[int]) -> list[int]:
    """Old class indices from most to fewest training images; ties keep their order (stable)."""
    return sorted(range(len(class_counts)), key=lambda c: -class_counts[c])
