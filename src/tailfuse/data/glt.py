"""Generalized long-tail (GLT) annotations: reading, validating, and the CIFAR-10-GLT builder.

An annotation file follows ImageNet-GLT's schema (spec glt_ifl §1.3 item 7): ``cat2id``,
``id2cat`` and the splits ``train``, ``val``, ``test_lt`` (Test-GLT), ``test_bl``
(Test-CBL) and ``test_bbl`` (Test-GBL), each a dict of ``label``, ``frequency`` and
``attribute`` maps keyed by image path. The authors' MSCOCO-GLT files key them by patch id
and add a ``path`` map (patch id → image path). CIFAR-10-GLT files add a ``tint`` or
``rotation`` map (the synthetic attribute's transform, spec §7.2) and a ``meta`` block.

The CIFAR-10-GLT builder (spec §7.2 and the note at its end) draws everything from seeded
permutations of an ImageFolder tree (``train/<class>/``, ``test/<class>/``): an
exponential class profile ``⌊n_max·ρ^(−c/(C−1))⌋``, 7:2:1 attribute ranks within every
class, Test-GBL / Test-CBL / Test-GLT from disjoint parts of each class's test images.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailfuse.data.randomness import derive_seed
from tailfuse.errors import DataError
from tailfuse.files import write_text_atomically

GLT_SPLITS = ("train", "val", "test_lt", "test_bl", "test_bbl")
TEST_SPLITS = ("test_bl", "test_bbl", "test_lt")
TRANSFORM_MAPS = ("tint", "rotation")
INTRA_CLASS_RATIO = (0.7, 0.2, 0.1)
#: Tint colours (RGB) of spec §7.2 item 1.
TINT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
#: What a test split measures, by the kind of training set (spec §1.2).
PROTOCOL_NAMES = {
    "glt": {"test_bl": "CLT", "test_bbl": "GLT", "test_lt": "Test-GLT (i.i.d.)"},
    "cbl": {"test_bbl": "ALT", "test_bl": "CBL", "test_lt": "Test-GLT (i.i.d.)"},
}


@dataclass
class GltSplit:
    """One split of an annotation: image paths with label, class-frequency group and attribute."""

    paths: list[str]
    labels: np.ndarray
    frequency: np.ndarray
    attributes: np.ndarray
    transforms: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def to_json(self, relative_to: Path | None = None) -> dict:
        keys = [str(Path(p).relative_to(relative_to)) if relative_to else p for p in self.paths]
        split = {
            "label": {k: int(v) for k, v in zip(keys, self.labels, strict=True)},
            "frequency": {k: int(v) for k, v in zip(keys, self.frequency, strict=True)},
            "attribute": {k: int(v) for k, v in zip(keys, self.attributes, strict=True)},
        }
        for name, values in self.transforms.items():
            split[name] = {k: int(v) for k, v in zip(keys, values, strict=True)}
        return split


@dataclass
class GltAnnotation:
    """A whole annotation file: class names (by id) and the splits it holds."""

    class_names: list[str]
    splits: dict[str, GltSplit]
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_kind(self, source_name: str = "") -> str:
        """``glt`` (Train-GLT) or ``cbl`` (Train-CBL): from ``meta``, the file
        name, or the class counts."""
        kind = str(self.meta.get("train_set", "")).lower()
        if kind in ("glt", "cbl"):
            return kind
        if "inter_bl" in source_name:
            return "cbl"
        if "inter_lt" in source_name:
            return "glt"
        counts = np.bincount(self.splits["train"].labels, minlength=self.num_classes)
        return "cbl" if counts.max() <= 1.5 * max(1, counts.min()) else "glt"

    def frequency_groups(self) -> dict[str, list[int]]:
        """Many/medium/few classes from the ``frequency`` field (0/1/2) of the training split."""
        train = self.splits["train"]
        group_of = {}
        for label, frequency in zip(train.labels.tolist(), train.frequency.tolist(), strict=True):
            group_of.setdefault(label, frequency)
        groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
        names = list(groups)
        for label in range(self.num_classes):
            frequency = group_of.get(label, 2)
            if frequency not in (0, 1, 2):
                raise DataError(f"frequency group {frequency} of class {label} is not 0, 1 or 2")
            groups[names[frequency]].append(label)
        return groups

    def to_json(self, relative_to: Path | None = None) -> dict:
        return {
            "cat2id": {name: index for index, name in enumerate(self.class_names)},
            "id2cat": {str(index): name for index, name in enumerate(self.class_names)},
            **{name: split.to_json(relative_to) for name, split in self.splits.items()},
            "meta": self.meta,
        }


# ------------------------------------------------------------------------------ reading


def _rewrite(path: str, root: Path | None, replace_prefix: dict[str, str]) -> str:
    for old, new in replace_prefix.items():
        if path.startswith(old):
            path = new + path[len(old) :]
            break
    if root is not None and not os.path.isabs(path):
        return str(root / path)
    return path


def read_glt_annotation(
    path: str | Path, root: str | Path | None = None, replace_prefix: dict[str, str] | None = None
) -> GltAnnotation:
    """Read and check an annotation JSON (ImageNet-GLT / MSCOCO-GLT / CIFAR-10-GLT schema).

    Relative image keys are joined to ``root``; ``replace_prefix`` rewrites absolute keys
    written on another machine (what ImageNet-GLT's ``4.ChangePath`` notebook does). A
    split with a ``path`` map (the authors' MSCOCO-GLT files, keyed by patch id) takes each
    image's path from it, with the same joining and rewriting.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"GLT annotation {path} does not exist (build one with `tailfuse data build-glt`)"
        )
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"GLT annotation {path} is not readable JSON: {error}") from None
    if not isinstance(content, dict) or "train" not in content:
        raise DataError(
            f"GLT annotation {path} has no 'train' split (expected keys {', '.join(GLT_SPLITS)})"
        )
    root_path = Path(root).expanduser() if root else None
    replace_prefix = replace_prefix or {}
    try:
        class_names = _class_names(content, path)
    except (ValueError, TypeError, AttributeError) as error:
        raise DataError(
            f"{path}: a class id or label is not an integer ({' '.join(str(error).split())[:120]})"
        ) from None
    splits = {}
    for split_name in GLT_SPLITS:
        if split_name not in content:
            continue
        raw = content[split_name]
        for key in ("label", "frequency", "attribute"):
            if key not in raw and not (key == "attribute" and split_name == "train"):
                raise DataError(f"{path}: split '{split_name}' has no '{key}' map")
        labels_map = raw["label"]
        keys = list(labels_map)
        if not keys:
            continue
        image_paths = keys
        if (
            "path" in raw
        ):  # the authors' MSCOCO-GLT files: keys are patch ids, ``path`` names the image
            missing = next((k for k in keys if k not in raw["path"]), None)
            if missing is not None:
                raise DataError(f"{path}: split '{split_name}' has no path for image '{missing}'")
            image_paths = [str(raw["path"][k]) for k in keys]
        try:
            labels = np.asarray([int(labels_map[k]) for k in keys], dtype=np.int64)
            frequency = np.asarray([int(raw["frequency"][k]) for k in keys], dtype=np.int64)
            attribute_map = raw.get("attribute", {})
            attributes = np.asarray([int(attribute_map.get(k, -1)) for k in keys], dtype=np.int64)
            transforms = {
                name: np.asarray([int(raw[name][k]) for k in keys], dtype=np.int64)
                for name in TRANSFORM_MAPS
                if name in raw
            }
        except KeyError as error:
            raise DataError(
                f"{path}: split '{split_name}' lacks an entry for image {error}"
            ) from None
        except (ValueError, TypeError, AttributeError) as error:
            raise DataError(
                f"{path}: split '{split_name}' has an entry that is not an integer "
                f"({' '.join(str(error).split())[:120]})"
            ) from None
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DataError(
                f"{path}: split '{split_name}' has labels outside 0..{len(class_names) - 1}"
            )
        splits[split_name] = GltSplit(
            paths=[_rewrite(p, root_path, replace_prefix) for p in image_paths],
            labels=labels,
            frequency=frequency,
            attributes=attributes,
            transforms=transforms,
        )
    if "train" not in splits:
        raise DataError(f"GLT annotation {path}: the train split is empty")
    if not any(name in splits for name in TEST_SPLITS):
        raise DataError(
            f"GLT annotation {path} has none of the test splits {', '.join(TEST_SPLITS)}"
        )
    return GltAnnotation(class_names, splits, dict(content.get("meta", {})))


def _class_names(content: dict, path: Path) -> list[str]:
    if "id2cat" in content:
        id2cat = {int(k): str(v) for k, v in content["id2cat"].items()}
        return [id2cat.get(i, str(i)) for i in range(max(id2cat) + 1)]
    if "cat2id" in content:
        by_id = {int(v): str(k) for k, v in content["cat2id"].items()}
        return [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]
    highest = max(int(v) for v in content["train"]["label"].values())
    return [str(i) for i in range(highest + 1)]


def write_json_atomically(content: dict, path: Path) -> None:
    """Write JSON to a temporary sibling and rename it into place (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(content))


# ---------------------------------------------------------------------- synthetic attributes


def apply_attribute_transforms(
    images: np.ndarray, transforms: dict[str, np.ndarray], tint_strength: float = 0.4
) -> np.ndarray:
    """Apply CIFAR-10-GLT's attribute to uint8 (N, H, W, 3) images (spec §7.2 item 1, end note).

    ``tint`` id t: ``(1 − λ)·x + λ·colour_t`` (λ = ``tint_strength``; −1 = none);
    ``rotation`` in degrees (0/90/180/270, counter-clockwise).
    """
    output = images
    if "tint" in transforms:
        tints = transforms["tint"]
        output = output.astype(np.float32)
        colours = np.asarray(TINT_COLOURS, dtype=np.float32)
        tinted = tints >= 0
        if tinted.any():
            colour = colours[tints[tinted]][:, None, None, :]
            output[tinted] = (1.0 - tint_strength) * output[tinted] + tint_strength * colour
        output = np.clip(np.rint(output), 0, 255).astype(np.uint8)
    if "rotation" in transforms:
        output = np.array(output, copy=True)
        for degrees in np.unique(transforms["rotation"]):
            if degrees % 90:
                raise DataError(f"rotation {degrees} is not a multiple of 90 degrees")
            chosen = transforms["rotation"] == degrees
            output[chosen] = np.rot90(output[chosen], k=int(degrees) // 90, axes=(1, 2))
    return output


# ------------------------------------------------------------------------ CIFAR-10-GLT


@dataclass
class CifarGltOptions:
    """Parameters of the CIFAR-10-GLT builder (spec §7.2); defaults are the spec's."""

    attribute: str = "tint"  # tint | rotation
    mode: str = "cyclic"  # cyclic: rank r of class c -> value (c + r) mod 3; aligned: r -> r
    rho: float = 100.0
    seed: int = 0
    max_per_class: int | None = None  # n_max; default: the smallest class's train images
    val_fraction: float = 0.1  # i.i.d. val of the GLT file, removed from Train-GLT
    cbl_val_per_class: int = 30  # val of the CBL file, 7:2:1
    gbl_per_rank: int = 100  # Test-GBL images per (class, rank)
    cbl_test_per_class: int = 300  # Test-CBL images per class, 7:2:1
    test_lt_pool_per_class: int = (
        400  # Test-GLT: ⌊pool·ρ^(−c/(C−1))⌋ at 7:2:1 from the rest (0: none)
    )
    frequency_boundaries: tuple[int, int] = (4, 7)  # classes [0,4) many, [4,7) medium, rest few

    def check(self) -> None:
        if self.attribute not in ("tint", "rotation"):
            raise DataError(f"GLT attribute '{self.attribute}' must be tint or rotation")
        if self.mode not in ("cyclic", "aligned"):
            raise DataError(f"GLT attribute mode '{self.mode}' must be cyclic or aligned")
        if self.rho < 1:
            raise DataError(f"GLT rho {self.rho} must be at least 1")
        if not 0 <= self.val_fraction < 1:
            raise DataError(f"GLT val_fraction {self.val_fraction} must be in [0, 1)")


def rank_sizes(total: int) -> list[int]:
    """``⌊total·0.7⌋, ⌊total·0.2⌋, ⌊total·0.1⌋`` (spec §7.2 item 3)."""
    return [int(math.floor(total * share + 1e-9)) for share in INTRA_CLASS_RATIO]


def attribute_value(class_index: int, rank: int, mode: str) -> int:
    """Which of the 3 attribute values is class ``class_index``'s rank-``rank`` attribute."""
    return (class_index + rank) % 3 if mode == "cyclic" else rank


def list_image_folder(folder: Path, resolve: bool = False) -> tuple[list[str], list[list[str]]]:
    """Class names and each class's image paths of an ImageFolder tree
    (torchvision's listing, sorted)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        class_names, class_to_index = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_index, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"cannot read image folder {folder}: {error}") from None
    per_class: list[list[str]] = [[] for _ in class_names]
    for path, label in samples:
        per_class[label].append(str(Path(path).resolve()) if resolve else path)
    return list(class_names), per_class


def build_cifar_glt(
    root: str | Path, options: CifarGltOptions | None = None
) -> dict[str, GltAnnotation]:
    """Build the two CIFAR-10-GLT annotations (``glt``: Train-GLT file, ``cbl``: Train-CBL file).

    Follows spec §7.2 items 3–8; both files share the identical test sets.
    """
    options = options or CifarGltOptions()
    options.check()
    root = Path(root).expanduser().resolve()
    class_names, train_paths = list_image_folder(root / "train")
    test_names, test_paths = list_image_folder(root / "test")
    if test_names != class_names:
        raise DataError(f"{root}/train and {root}/test hold different classes")
    num_classes = len(class_names)
    if num_classes < 2:
        raise DataError(f"{root}/train must hold at least two class folders")
    n_max = options.max_per_class or min(len(paths) for paths in train_paths)
    exponent = 1.0 / (num_classes - 1)
    pool_sizes = [
        int(math.floor(n_max * options.rho ** (-c * exponent) + 1e-9)) for c in range(num_classes)
    ]
    a, b = options.frequency_boundaries
    frequency_of = [0 if c < a else 1 if c < b else 2 for c in range(num_classes)]
    transform_name = options.attribute

    def transform(class_index: int, rank: int) -> int:
        value = attribute_value(class_index, rank, options.mode)
        return value if transform_name == "tint" else 90 * value

    def entries(paths: list[str], class_index: int, sizes: list[int]) -> list[tuple[str, int, int]]:
        out, start = [], 0
        for rank, size in enumerate(sizes):
            out += [(p, class_index, rank) for p in paths[start : start + size]]
            start += size
        return out

    def permuted(paths: list[str], *purpose: object) -> list[str]:
        order = np.random.default_rng(derive_seed(options.seed, "cifar-glt", *purpose)).permutation(
            len(paths)
        )
        return [paths[i] for i in order]

    glt_pool, cbl_train, cbl_val = [], [], []
    tests: dict[str, list] = {"test_bbl": [], "test_bl": [], "test_lt": []}
    cbl_sizes = rank_sizes(sum(sum(rank_sizes(m)) for m in pool_sizes) // num_classes)
    cbl_val_sizes = rank_sizes(options.cbl_val_per_class)
    cbl_test_sizes = rank_sizes(options.cbl_test_per_class)
    for c in range(num_classes):
        glt_sizes = rank_sizes(pool_sizes[c])
        if sum(glt_sizes) > len(train_paths[c]):
            raise DataError(
                f"class {class_names[c]} has {len(train_paths[c])} train images; "
                f"CIFAR-10-GLT needs {sum(glt_sizes)}"
            )
        if sum(cbl_sizes) + sum(cbl_val_sizes) > len(train_paths[c]):
            raise DataError(
                f"class {class_names[c]} has too few train images for "
                f"Train-CBL ({sum(cbl_sizes)} + val)"
            )
        glt_pool += entries(permuted(train_paths[c], "glt", c), c, glt_sizes)
        cbl_order = permuted(train_paths[c], "cbl", c)
        cbl_train += entries(cbl_order, c, cbl_sizes)
        cbl_val += entries(cbl_order[sum(cbl_sizes) :], c, cbl_val_sizes)
        test_order = permuted(test_paths[c], "test", c)
        needed = 3 * options.gbl_per_rank + sum(cbl_test_sizes)
        if needed > len(test_order):
            raise DataError(
                f"class {class_names[c]} has {len(test_order)} test images; "
                f"the GLT test sets need {needed}"
            )
        tests["test_bbl"] += entries(test_order, c, [options.gbl_per_rank] * 3)
        start = 3 * options.gbl_per_rank
        tests["test_bl"] += entries(test_order[start:], c, cbl_test_sizes)
        rest = test_order[needed : needed + options.test_lt_pool_per_class]
        lt_size = int(math.floor(len(rest) * options.rho ** (-c * exponent) + 1e-9))
        tests["test_lt"] += entries(rest, c, rank_sizes(lt_size))

    rng = np.random.default_rng(derive_seed(options.seed, "cifar-glt", "val"))
    val_count = int(math.floor(len(glt_pool) * options.val_fraction))
    val_positions = set(rng.choice(len(glt_pool), size=val_count, replace=False).tolist())
    glt_train = [e for i, e in enumerate(glt_pool) if i not in val_positions]
    glt_val = [e for i, e in enumerate(glt_pool) if i in val_positions]

    def split(rows: list[tuple[str, int, int]]) -> GltSplit:
        labels = np.asarray([r[1] for r in rows], dtype=np.int64)
        ranks = np.asarray([r[2] for r in rows], dtype=np.int64)
        values = np.asarray([transform(r[1], r[2]) for r in rows], dtype=np.int64)
        return GltSplit(
            paths=[r[0] for r in rows],
            labels=labels,
            frequency=np.asarray([frequency_of[c] for c in labels], dtype=np.int64),
            attributes=ranks,
            transforms={transform_name: values},
        )

    shared_tests = {name: split(rows) for name, rows in tests.items() if rows}
    meta = {
        "builder": "cifar10_glt",
        "source_root": str(root),
        "attribute": options.attribute,
        "mode": options.mode,
        "rho": options.rho,
        "seed": options.seed,
        "max_per_class": n_max,
        "class_pool_sizes": pool_sizes,
        "frequency_boundaries": list(options.frequency_boundaries),
        "attribute_meaning": "rank: 0 head, 1 medium, 2 tail attribute within the class (7:2:1)",
    }
    return {
        "glt": GltAnnotation(
            class_names,
            {"train": split(glt_train), "val": split(glt_val), **shared_tests},
            {**meta, "train_set": "glt"},
        ),
        "cbl": GltAnnotation(
            class_names,
            {
                "train": split(cbl_train),
                "val": split(cbl_val),
                **{k: v for k, v in shared_tests.items() if k != "test_lt"},
            },
            {**meta, "train_set": "cbl"},
        ),
    }


def cifar_glt_file_stem(options: CifarGltOptions) -> str:
    rho = f"{options.rho:g}"
    return f"cifar10_glt_{options.attribute}_{options.mode}_rho{rho}_seed{options.seed}"


def write_cifar_glt(
    root: str | Path, out_dir: str | Path, options: CifarGltOptions | None = None
) -> dict[str, Path]:
    """Build CIFAR-10-GLT and write ``<stem>_intra_lt_inter_lt.json`` / ``..._inter_bl.json``.

    Image keys are relative to ``root`` (pass ``data.root`` when reading).
    """
    options = options or CifarGltOptions()
    annotations = build_cifar_glt(root, options)
    return write_annotation_pair(
        annotations, out_dir, cifar_glt_file_stem(options), Path(root).expanduser().resolve()
    )


def write_annotation_pair(
    annotations: dict[str, GltAnnotation],
    out_dir: str | Path,
    stem: str,
    relative_to: Path | None = None,
) -> dict[str, Path]:
    """Write ``<stem>_intra_lt_inter_lt.json`` (Train-GLT) and ``..._inter_bl.json`` (Train-CBL)."""
    written = {}
    for kind, suffix in (("glt", "intra_lt_inter_lt"), ("cbl", "intra_lt_inter_bl")):
        path = Path(out_dir) / f"{stem}_{suffix}.json"
        write_json_atomically(annotations[kind].to_json(relative_to=relative_to), path)
        written[kind] = path
    return written


def annotation_summary(annotation: GltAnnotation) -> dict:
    """Sizes per split, per class and per (class, attribute): what `data build-glt` prints."""
    summary = {
        "classes": annotation.class_names,
        "train_set": annotation.meta.get("train_set"),
        "splits": {},
    }
    for name, split in annotation.splits.items():
        per_class = np.bincount(split.labels, minlength=annotation.num_classes).tolist()
        per_attribute = (
            np.bincount(split.attributes[split.attributes >= 0], minlength=3).tolist()
            if (split.attributes >= 0).any()
            else []
        )
        summary["splits"][name] = {
            "size": len(split),
            "per_class": per_class,
            "per_attribute": per_attribute,
        }
    return summary


def write_preview(
    annotation: GltAnnotation, path: str | Path, tint_strength: float = 0.4, split: str = "test_bbl"
) -> Path:
    """A class × attribute grid of one ``split`` image each, with its tint/rotation applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    chosen = annotation.splits[split]
    figure, axes = plt.subplots(
        3, annotation.num_classes, figsize=(1.1 * annotation.num_classes + 1, 3.6), squeeze=False
    )
    for class_index in range(annotation.num_classes):
        for rank in range(3):
            axis = axes[rank][class_index]
            axis.set_xticks([])
            axis.set_yticks([])
            where = np.nonzero((chosen.labels == class_index) & (chosen.attributes == rank))[0]
            if len(where):
                position = int(where[0])
                with Image.open(chosen.paths[position]) as image:
                    pixels = np.asarray(image.convert("RGB"))[None]
                transforms = {
                    name: values[[position]] for name, values in chosen.transforms.items()
                }
                axis.imshow(apply_attribute_transforms(pixels, transforms, tint_strength)[0])
            if rank == 0:
                axis.set_title(annotation.class_names[class_index], fontsize=7)
            if class_index == 0:
                axis.set_ylabel(["head attr.", "medium attr.", "tail attr."][rank], fontsize=7)
    figure.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_text_atomically(path, buffer.getvalue())  # a failed save leaves an older file whole
    return path
