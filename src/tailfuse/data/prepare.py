"""From a recipe's ``data`` section to tensors on the training device.

:func:`plan_subset` chooses indices from labels alone (cheap: ``tailfuse data summary``
uses it); :func:`load_data` decodes only the chosen images, once, into uint8 tensors
that live on the device for the whole run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tailfuse.config import DataConfig, RunConfig
from tailfuse.data.glt import TEST_SPLITS
from tailfuse.data.longtail import (
    balanced_indices,
    class_groups,
    frequency_order,
    indices_checksum,
    longtail_indices,
    profile_class_counts,
    stratified_split,
)
from tailfuse.data.sources import ImageSource, glt_image_source, open_glt_annotation, open_source
from tailfuse.errors import DataError


@dataclass
class SubsetPlan:
    """Which images of each split a run uses, and the class statistics that follow."""

    class_names: list[str]
    class_counts: list[int]
    train_indices: np.ndarray
    test_indices: np.ndarray
    validation_indices: np.ndarray | None
    groups: dict[str, list[int]]
    sources: dict[str, ImageSource] = field(repr=False, default_factory=dict)
    #: GLT test sets: split name -> indices into ``sources["test"]``
    #: (``test_indices`` is one of them)
    named_tests: dict[str, np.ndarray] = field(default_factory=dict)
    #: GLT: ``glt`` (Train-GLT) or ``cbl`` (Train-CBL); None for other datasets
    glt_train_set: str | None = None
    #: ``data.split``: seed, fractions, sizes and the test checksum of the split; None otherwise
    split: dict | None = None

    @property
    def subset_checksum(self) -> str:
        return indices_checksum(self.train_indices)

    def summary(self) -> dict:
        """The JSON printed by ``tailfuse data summary`` and saved in every run directory."""
        return {
            "class_names": self.class_names,
            "class_counts": self.class_counts,
            "total": int(sum(self.class_counts)),
            "imbalance_ratio": round(max(self.class_counts) / max(1, min(self.class_counts)), 3),
            "groups": self.groups,
            "group_sizes": {name: len(members) for name, members in self.groups.items()},
            "subset_checksum": self.subset_checksum,
            "test_size": int(len(self.test_indices)),
            "validation_size": 0
            if self.validation_indices is None
            else int(len(self.validation_indices)),
            **({"split": self.split} if self.split else {}),
            **(
                {
                    "glt_train_set": self.glt_train_set,
                    "glt_test_sizes": {
                        name: int(len(indices)) for name, indices in self.named_tests.items()
                    },
                }
                if self.glt_train_set
                else {}
            ),
        }


#: ``data`` keys that name files or folders, resolved against the launch folder once.
DATA_PATH_KEYS = ("root", "annotation", "annotation_cbl", "train_list", "test_list", "cache_dir")


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with relative data paths and ``model.weights`` made absolute against the
    current folder.

    A run stores the result in its ``config.yaml``, so evaluating, resuming or predicting
    from another folder reads the same data and pretrained weights. Empty values
    (``root: ""``: absolute keys) stay as they are.
    """
    updates = {}
    for key in DATA_PATH_KEYS:
        value = getattr(config.data, key)
        if value:
            absolute = os.path.abspath(os.path.expanduser(value))
            if absolute != value:
                updates[key] = absolute
    changes = {"data": config.data.model_copy(update=updates)} if updates else {}
    weights = config.model.weights
    if weights and os.path.abspath(os.path.expanduser(weights)) != weights:
        absolute_weights = os.path.abspath(os.path.expanduser(weights))
        changes["model"] = config.model.model_copy(update={"weights": absolute_weights})
    return config.model_copy(update=changes) if changes else config


def plan_subset(config: DataConfig) -> SubsetPlan:
    """Choose the long-tailed training subset, the validation and the test indices.

    ImageFolder data: a ``val/`` folder beside ``train/`` is the validation set;
    ``data.split`` divides one tree ``root/<class>/`` (stratified, seeded, recorded in the
    summary); ``data.class_order: frequency`` renumbers classes from most to fewest
    training images (ties keep folder order).
    """
    if config.source in ("glt", "cifar10_glt"):
        return _plan_glt(config)
    split = config.split
    train_source = open_source(config, "all" if split else "train")
    test_source = train_source if split else open_source(config, "test")
    if train_source.class_names != test_source.class_names:
        raise DataError(f"train and test splits under {config.root} have different classes")
    validation_source = train_source
    val_folder = Path(config.root).expanduser() / "val"
    if config.source == "image_folder" and not split and val_folder.is_dir():
        validation_source = open_source(config, "val")
        if validation_source.class_names != train_source.class_names:
            raise DataError(f"{val_folder} has other classes than {Path(config.root) / 'train'}")
    labels = train_source.labels
    num_classes = train_source.num_classes
    split_record = None
    validation_indices = None
    if split:
        pool, validation_indices, test_indices = stratified_split(
            labels, split.validation, split.test, split.seed
        )
        if not len(validation_indices):
            validation_indices = None
        split_record = {
            "seed": split.seed,
            "validation": split.validation,
            "test": split.test,
            "sizes": {
                "train": int(len(pool)),
                "validation": 0 if validation_indices is None else int(len(validation_indices)),
                "test": int(len(test_indices)),
            },
            "test_checksum": indices_checksum(test_indices),
        }
    else:
        pool = np.arange(len(labels), dtype=np.int64)
        test_indices = np.arange(len(test_source.labels), dtype=np.int64)
    available = np.bincount(labels[pool], minlength=num_classes)
    if config.profile == "none" and config.max_per_class is None:
        train_indices = pool
        class_counts = [int(count) for count in available]
    else:
        max_per_class = config.max_per_class or int(available.min())
        class_counts = profile_class_counts(
            config.profile, max_per_class, num_classes, config.imbalance_factor
        )
        if min(class_counts) < 1:
            raise DataError(
                f"the profile leaves a class with no images (n_max={max_per_class}, "
                f"imbalance factor {config.imbalance_factor}); data.profile=none "
                "keeps the data's own counts"
            )
        train_indices = pool[longtail_indices(labels[pool], class_counts, config.subset_seed)]

    if validation_source is not train_source:
        validation_indices = np.arange(len(validation_source.labels), dtype=np.int64)
    elif config.validation_per_class and validation_indices is None:
        try:
            validation_indices = balanced_indices(
                labels,
                config.validation_per_class,
                config.subset_seed + 1,
                exclude=np.concatenate([train_indices, test_indices]) if split else train_indices,
            )
        except DataError as error:
            advice = (  # with profile none, a lower max_per_class would balance the training set
                "put a val/ folder beside train/, or use data.split"
                if config.profile == "none"
                else "lower data.max_per_class to leave some (own data: "
                "a val/ folder or data.split)"
            )
            raise DataError(
                f"data.validation_per_class={config.validation_per_class} is drawn from training "
                f"images outside the long-tailed subset, and there are too few: {error}; {advice}"
            ) from None
    if config.test_per_class:
        chosen = balanced_indices(
            test_source.labels[test_indices], config.test_per_class, config.subset_seed
        )
        test_indices = test_indices[chosen]
    sources = {"train": train_source, "test": test_source, "validation": validation_source}
    class_names = train_source.class_names
    if config.class_order == "frequency":
        order = frequency_order(class_counts)
        class_counts = [class_counts[c] for c in order]
        class_names = [class_names[c] for c in order]
        sources = _renumbered(sources, order)
    return SubsetPlan(
        class_names=class_names,
        class_counts=class_counts,
        train_indices=train_indices,
        test_indices=test_indices,
        validation_indices=validation_indices,
        groups=class_groups(config.groups, class_counts),
        sources=sources,
        split=split_record,
    )


def _renumbered(sources: dict[str, ImageSource], order: list[int]) -> dict[str, ImageSource]:
    """The sources with class ``order[i]`` renamed to class ``i`` (labels and class names)."""
    new_label = np.empty(len(order), dtype=np.int64)
    new_label[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    renumbered: dict[int, ImageSource] = {}
    for source in sources.values():
        if id(source) not in renumbered:
            renumbered[id(source)] = dataclasses.replace(
                source,
                labels=new_label[source.labels],
                class_names=[source.class_names[c] for c in order],
            )
    return {name: renumbered[id(source)] for name, source in sources.items()}


def _plan_glt(config: DataConfig) -> SubsetPlan:
    """A GLT annotation's splits: train, val, and the test sets as named
    tests (spec glt_ifl §1.2)."""
    annotation, source_name = open_glt_annotation(config)
    train_kind = annotation.train_kind(source_name)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else None
    identity = f"glt:{source_name}"
    train_splits = [annotation.splits["train"]] + (
        [annotation.splits["val"]] if "val" in annotation.splits else []
    )
    test_names = [name for name in TEST_SPLITS if name in annotation.splits]
    train_source = glt_image_source(
        train_splits, annotation.class_names, f"{identity}:train", config, cache_dir
    )
    test_source = glt_image_source(
        [annotation.splits[n] for n in test_names],
        annotation.class_names,
        f"{identity}:test",
        config,
        cache_dir,
    )
    train_size = len(annotation.splits["train"])
    train_indices = np.arange(train_size, dtype=np.int64)
    validation_indices = (
        np.arange(train_size, len(train_source.labels), dtype=np.int64)
        if len(train_splits) > 1
        else None
    )
    named_tests, start = {}, 0
    for name in test_names:
        size = len(annotation.splits[name])
        named_tests[name] = np.arange(start, start + size, dtype=np.int64)
        start += size
    primary = "test_bbl" if train_kind == "cbl" else "test_bl"
    if primary not in named_tests:
        primary = test_names[0]
    class_counts = np.bincount(
        annotation.splits["train"].labels, minlength=annotation.num_classes
    ).tolist()
    return SubsetPlan(
        class_names=annotation.class_names,
        class_counts=[int(c) for c in class_counts],
        train_indices=train_indices,
        test_indices=named_tests[primary],
        validation_indices=validation_indices,
        groups=annotation.frequency_groups(),
        sources={"train": train_source, "test": test_source},
        named_tests=named_tests,
        glt_train_set=train_kind,
    )


@dataclass
class LabelledImages:
    """Decoded images as uint8 (N, 3, H, W) and int64 labels, both on one device.

    ``attributes`` (GLT test sets): the attribute of each image, 0/1/2 = head/medium/tail.
    """

    images: torch.Tensor
    labels: torch.Tensor
    attributes: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])  # labels are always complete, images may be absent


@dataclass
class StreamedImages:
    """A split whose images stay on disk and are decoded per batch (large-image datasets)."""

    paths: list[str]
    labels: torch.Tensor
    attributes: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class PreparedData:
    """Everything the trainer and evaluator need from the data section."""

    plan: SubsetPlan
    train: LabelledImages | StreamedImages
    test: LabelledImages | StreamedImages
    validation: LabelledImages | StreamedImages | None
    #: GLT test sets by split name (``test_bl``, ``test_bbl``, ``test_lt``); empty otherwise
    named_tests: dict[str, LabelledImages | StreamedImages] = field(default_factory=dict)

    @property
    def class_counts(self) -> list[int]:
        return self.plan.class_counts

    def content_checksum(self) -> str | None:
        """A checksum of what the training subset holds, not only which indices it uses.

        Decoded pixels and labels (device storage) or file sizes and labels (streamed
        storage, where decoding everything up front would cost an epoch). Another dataset
        of the same layout has the same ``subset_checksum`` but not this one (issue 10
        item 3). None when the training images were not loaded (evaluation).
        """
        split = self.train
        digest = hashlib.sha256(split.labels.cpu().numpy().astype(np.int64).tobytes())
        if isinstance(split, StreamedImages):
            for path in split.paths:
                try:
                    digest.update(os.stat(path).st_size.to_bytes(8, "little"))
                except OSError as error:
                    raise DataError(f"cannot read image {path}: {error.strerror}") from None
        elif split.images.shape[0] == len(split):
            digest.update(np.ascontiguousarray(split.images.cpu().numpy()))
        else:
            return None
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        """The plan's summary plus :meth:`content_checksum` (saved as ``data_summary.json``)."""
        return {**self.plan.summary(), "content_checksum": self.content_checksum()}

    @property
    def num_classes(self) -> int:
        return len(self.plan.class_counts)


def _attributes(source: ImageSource, indices: np.ndarray) -> torch.Tensor | None:
    if source.attributes is None:
        return None
    return torch.from_numpy(source.attributes[indices].astype(np.int64))


def _to_device(source: ImageSource, indices: np.ndarray, device: torch.device) -> LabelledImages:
    """Decode the chosen images once into a uint8 tensor on ``device``."""
    images = torch.from_numpy(np.ascontiguousarray(source.load(indices))).permute(0, 3, 1, 2)
    labels = torch.from_numpy(source.labels[indices].astype(np.int64))
    return LabelledImages(
        images.contiguous().to(device), labels.to(device), _attributes(source, indices)
    )


def _named_tests(plan: SubsetPlan, make) -> dict:
    """The GLT test sets, sharing the primary test set's tensors instead of decoding it twice."""
    return {name: make(plan.sources["test"], indices) for name, indices in plan.named_tests.items()}


def load_data(
    config: DataConfig, device: torch.device | str = "cpu", include_train: bool = True
) -> PreparedData:
    """Plan the subset and decode its images once onto ``device``.

    With ``include_train=False`` (evaluation only) the training split keeps its labels,
    which class statistics and samplers need, but no images are decoded for it.
    """
    device = torch.device(device)
    plan = plan_subset(config)
    if config.storage == "stream":

        def streamed(source: ImageSource, indices: np.ndarray) -> StreamedImages:
            if source.transforms_images:
                raise DataError("synthetic GLT attributes (tint/rotation) need data.storage=device")
            labels = torch.from_numpy(source.labels[indices].astype(np.int64))
            return StreamedImages(
                [source.paths[i] for i in indices], labels, _attributes(source, indices)
            )

        validation = None
        if plan.validation_indices is not None:
            validation = streamed(
                plan.sources.get("validation", plan.sources["train"]), plan.validation_indices
            )
        return PreparedData(
            plan=plan,
            train=streamed(plan.sources["train"], plan.train_indices),
            test=streamed(plan.sources["test"], plan.test_indices),
            validation=validation,
            named_tests=_named_tests(plan, streamed),
        )
    if include_train:
        train = _to_device(plan.sources["train"], plan.train_indices, device)
    else:
        size = config.image_size
        labels = torch.from_numpy(plan.sources["train"].labels[plan.train_indices].astype(np.int64))
        train = LabelledImages(
            torch.empty((0, 3, size, size), dtype=torch.uint8, device=device), labels.to(device)
        )
    validation = None
    if plan.validation_indices is not None:
        validation = _to_device(
            plan.sources.get("validation", plan.sources["train"]), plan.validation_indices, device
        )
    if plan.named_tests:
        named_tests = _named_tests(
            plan, lambda source, indices: _to_device(source, indices, device)
        )
        test = next(
            split
            for name, split in named_tests.items()
            if plan.named_tests[name] is plan.test_indices
        )
    else:
        named_tests, test = {}, _to_device(plan.sources["test"], plan.test_indices, device)
    return PreparedData(
        plan=plan, train=train, test=test, validation=validation, named_tests=named_tests
    )
