"""Image sources: CIFAR-10/100 in torchvision's pickle format, and ImageFolder trees.

A source describes one split (train or test) before any subsetting: its labels, class
names, and a function that returns the decoded uint8 images (N, H, W, 3) of chosen
indices. Decoding is done only for the indices a run uses, and cached on disk.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailfuse.config import DataConfig
from tailfuse.errors import DataError

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_FILES = {
    "cifar10": {
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "label_key": "labels",
    },
    "cifar100": {
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "label_key": "fine_labels",
    },
}


@dataclass
class ImageSource:
    """One split of a dataset: labels, class names and a decoder for chosen indices."""

    labels: np.ndarray
    class_names: list[str]
    load: Callable[[np.ndarray], np.ndarray]
    identity: str
    paths: list[str] | None = None
    #: GLT splits: the attribute (0 head, 1 medium, 2 tail) of every image; None elsewhere
    attributes: np.ndarray | None = None
    #: whether ``load`` applies a synthetic attribute transform (CIFAR-10-GLT tint/rotation)
    transforms_images: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def default_cache_dir() -> Path:
    """Where decoded images are cached: ``$TAILFUSE_CACHE`` or ``~/.cache/tailfuse``."""
    return Path(os.environ.get("TAILFUSE_CACHE", Path.home() / ".cache" / "tailfuse"))


#: The only globals a CIFAR batch pickle may name: what rebuilds a numpy array (old and
#: new numpy module names) and the bytes codec Python 3's protocol-2 pickles use.
CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, lists, dicts, strings and numbers.

    A plain ``pickle.load`` of a crafted ``data_batch_1`` runs arbitrary code; this one
    refuses every global outside :data:`CIFAR_PICKLE_GLOBALS` (issue 10 item 11).
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR batch never holds; refused"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            content = CifarUnpickler(handle, encoding="latin1").load()
    except (
        OSError,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
    ) as error:
        raise DataError(f"cannot read CIFAR file {path}: {error}") from None
    if not isinstance(content, dict):
        raise DataError(
            f"cannot read CIFAR file {path}: it holds a {type(content).__name__}, not a dict"
        )
    return content


@functools.lru_cache(maxsize=4)
def _read_cifar_pickles(
    name: str, folder: Path, split: str, modified: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (NHWC), labels and class names of one split; cached per process
    while files are unchanged."""
    spec = CIFAR_FILES[name]
    arrays, labels = [], []
    for file_name in spec[split]:
        batch = _unpickle(folder / file_name)
        try:
            arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(label) for label in batch[spec["label_key"]])
        except (KeyError, ValueError, TypeError) as error:
            raise DataError(
                f"CIFAR file {folder / file_name} is not a CIFAR batch "
                f"({type(error).__name__}: {error})"
            ) from None
        if len(labels) != sum(len(array) for array in arrays):
            raise DataError(
                f"CIFAR file {folder / file_name} has a different number of labels and images"
            )
    images = np.ascontiguousarray(np.concatenate(arrays).transpose(0, 2, 3, 1))
    meta_file, meta_key = spec["meta"]
    meta = _unpickle(folder / meta_file)
    if meta_key not in meta:
        raise DataError(f"CIFAR file {folder / meta_file} has no '{meta_key}'")
    class_names = [str(name) for name in meta[meta_key]]
    images.setflags(write=False)
    return images, np.asarray(labels, dtype=np.int64), class_names


def _cifar_pickle_source(name: str, folder: Path, split: str) -> ImageSource:
    files = [folder / file_name for file_name in CIFAR_FILES[name][split]]
    try:
        modified = tuple(path.stat().st_mtime_ns for path in files)
    except OSError as error:
        raise DataError(f"cannot read CIFAR file: {error}") from None
    images, labels, class_names = _read_cifar_pickles(name, folder.resolve(), split, modified)
    return ImageSource(
        labels=labels,
        class_names=class_names,
        load=lambda indices: images[np.asarray(indices, dtype=np.int64)],
        identity=f"{name}-pickle:{folder.resolve()}:{split}",
    )


def _decode_files(paths: list[str], image_size: int, warn: bool = True) -> np.ndarray:
    """Decode image files to uint8 (N, H, W, 3), resizing when they are not square ``image_size``.

    With ``warn``, resized images are reported on stderr (:func:`warn_resized`).
    """
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import resize

    output = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    resized: dict[tuple[int, int], int] = {}
    for position, path in enumerate(paths):
        try:
            image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as error:
            raise DataError(f"cannot decode image {path}: {error}") from None
        if image.shape[1] != image_size or image.shape[2] != image_size:
            size = (int(image.shape[2]), int(image.shape[1]))
            resized[size] = resized.get(size, 0) + 1
            image = resize(image, [image_size, image_size], antialias=True)
        output[position] = image.permute(1, 2, 0).numpy()
    if resized and warn:
        warn_resized(resized, len(paths), image_size)
    return output


def file_fingerprints(paths: list[str]) -> list[str]:
    """Size, modification and change time of each file: what changes when its pixels change.

    Replacing a file under the same name (a copy, a move, an edit) always sets a new
    change time (``st_ctime_ns``, which no tool can set back), so a decode cache keyed on
    these is never served for other pixels (issue 10 item 3).
    """
    fingerprints = []
    for path in paths:
        try:
            status = os.stat(path)
        except OSError as error:
            raise DataError(f"cannot read image {path}: {error.strerror}") from None
        fingerprints.append(f"{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}")
    return fingerprints


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


decode_image_files = _decode_files


def warn_resized(sizes: dict[tuple[int, int], int], total: int, image_size: int) -> None:
    """Say, on stderr, that images were resized to ``image_size`` squares (and
    which sizes they had)."""
    import sys

    count = sum(sizes.values())
    common = ", ".join(
        f"{width}x{height} ({number})"
        for (width, height), number in sorted(sizes.items(), key=lambda item: -item[1])[:3]
    )
    print(
        f"warning: resized {count} of {total} images to {image_size}x{image_size} "
        f"(data.image_size); they were {common}{', ...' if len(sizes) > 3 else ''}"
        f"{'; the aspect ratio is not kept' if any(w != h for w, h in sizes) else ''}",
        file=sys.stderr,
    )


def _cached_decoder(
    paths: list[str], identity: str, image_size: int, cache_dir: Path | None
) -> Callable[[np.ndarray], np.ndarray]:
    def load(indices: np.ndarray) -> np.ndarray:
        chosen = [paths[i] for i in np.asarray(indices, dtype=np.int64)]
        key = hashlib.sha256(
            "\n".join([identity, str(image_size), *chosen, *file_fingerprints(chosen)]).encode()
        ).hexdigest()[:24]
        cache_path = (cache_dir or default_cache_dir()) / f"images-{key}.npy"
        if cache_path.is_file():
            try:
                cached = np.load(cache_path)
                if cached.shape == (len(chosen), image_size, image_size, 3):
                    return cached
            except (OSError, ValueError):
                pass  # a damaged cache entry is rebuilt below
        images = _decode_files(chosen, image_size)
        temporary = cache_path.with_suffix(f".tmp{os.getpid()}.npy")
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(temporary, images)
            os.replace(temporary, cache_path)
        except OSError as error:  # a full or read-only cache only costs the next run a decode
            _warn(
                f"decoded images not cached in {cache_path.parent} "
                f"({error.strerror or error}); continuing"
            )
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass
        return images

    return load


def _image_folder_source(folder: Path, image_size: int, cache_dir: Path | None) -> ImageSource:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        class_names, class_to_index = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_index, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as error:
        raise DataError(f"cannot read image folder {folder}: {error}") from None
    paths = [path for path, _ in samples]
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    identity = f"image-folder:{folder.resolve()}"
    return ImageSource(
        labels=labels,
        class_names=list(class_names),
        load=_cached_decoder(paths, identity, image_size, cache_dir),
        identity=identity,
        paths=paths,
    )


def read_list_file(root: Path, list_path: Path) -> tuple[list[str], np.ndarray]:
    """Lines ``relative/path label`` (ImageNet-LT, iNaturalist, Places-LT lists)
    → paths under ``root``, labels."""
    if not list_path.is_file():
        raise DataError(f"list file {list_path} does not exist")
    paths, labels = [], []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{list_path}:{number}: expected 'relative/path label', got {line!r}")
        paths.append(str(root / parts[0]))
        labels.append(int(parts[1]))
    if not paths:
        raise DataError(f"list file {list_path} is empty")
    return paths, np.asarray(labels, dtype=np.int64)


def read_inaturalist_json(
    root: Path, json_path: Path
) -> tuple[list[str], np.ndarray, dict[int, str]]:
    """An iNaturalist 2017/2018 annotation file (COCO-style ``images``, ``annotations``,
    ``categories``) → paths under ``root``, ``category_id`` labels, and category names by id."""
    import json

    if not json_path.is_file():
        raise DataError(f"list file {json_path} does not exist")
    try:
        content = json.loads(json_path.read_text())
        files = {image["id"]: image["file_name"] for image in content["images"]}
        pairs = [
            (files[note["image_id"]], int(note["category_id"])) for note in content["annotations"]
        ]
        names = {
            int(category["id"]): str(category.get("name", category["id"]))
            for category in content.get("categories", [])
        }
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{json_path} is not an iNaturalist annotation file (images, annotations): {error!r}"
        ) from None
    if not pairs:
        raise DataError(f"list file {json_path} has no annotated images")
    return (
        [str(root / name) for name, _ in pairs],
        np.asarray([label for _, label in pairs], dtype=np.int64),
        names,
    )


def read_labelled_list(root: Path, list_path: Path) -> tuple[list[str], np.ndarray, dict[int, str]]:
    """A txt list (``relative/path label`` lines) or an iNaturalist JSON file; names by label."""
    if list_path.suffix.lower() == ".json":
        return read_inaturalist_json(root, list_path)
    paths, labels = read_list_file(root, list_path)
    return paths, labels, {}


def frequency_order(train_labels: np.ndarray) -> np.ndarray:
    """``mapping[old] = new``: classes renumbered by descending training count, ties by old label.

    The authors use numpy's unstable ``argsort(−counts)`` (spec h2t §4.2), whose tie order
    is unspecified; here ties keep ascending label order, so the mapping is reproducible.
    """
    counts = np.bincount(train_labels)
    if (counts == 0).any():
        empty = np.nonzero(counts == 0)[0][:5].tolist()
        raise DataError(
            f"the training list has no images of classes {empty} (labels must be 0..C-1)"
        )
    order = np.argsort(-counts, kind="stable")
    mapping = np.empty_like(order)
    mapping[order] = np.arange(len(order))
    return mapping


def _list_file_source(config: DataConfig, split: str, cache_dir: Path | None) -> ImageSource:
    root = Path(config.root).expanduser()
    train_paths, train_labels, names = read_labelled_list(
        root, Path(config.train_list).expanduser()
    )
    if train_labels.min() < 0:
        raise DataError(f"{config.train_list} has negative labels")
    num_classes = int(train_labels.max()) + 1
    if split == "train":
        paths, labels = train_paths, train_labels
    else:
        paths, labels, _ = read_labelled_list(root, Path(config.test_list).expanduser())
        if labels.max() >= num_classes or labels.min() < 0:
            raise DataError(
                f"{config.test_list} has labels outside the {num_classes} training classes"
            )
    class_names = [names.get(index, str(index)) for index in range(num_classes)]
    if config.label_order == "frequency":
        mapping = frequency_order(train_labels)
        labels = mapping[labels]
        renamed = [""] * num_classes
        for old, new in enumerate(mapping):
            renamed[new] = class_names[old]
        class_names = renamed
    identity = f"list-file:{root.resolve()}:{split}"
    return ImageSource(
        labels=labels,
        class_names=class_names,
        load=_cached_decoder(paths, identity, config.image_size, cache_dir),
        identity=identity,
        paths=paths,
    )


def _download_cifar(name: str, root: Path) -> None:
    """Download torchvision's pickles into a temporary folder, then move them under ``root``.

    A failed download leaves nothing behind: torchvision creates its root before it
    downloads, so downloading there directly would leave empty folders.
    """
    import shutil
    import tempfile

    import torchvision.datasets

    datasets = torchvision.datasets
    dataset_class = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    with tempfile.TemporaryDirectory(prefix="tailfuse-download-") as staging:
        try:
            dataset_class(staging, train=True, download=True)
            if not (Path(staging) / CIFAR_FOLDERS[name]).is_dir():
                raise FileNotFoundError(f"the download holds no {CIFAR_FOLDERS[name]}/")
        except Exception as error:  # noqa: BLE001 - any failure means: no data here
            raise DataError(
                f"{name} is not under {root} (expected {CIFAR_FOLDERS[name]}/ or train/<class>/ "
                f"image folders) and downloading it failed ({type(error).__name__}: {error}). "
                f"Set data.root to a local copy."
            ) from None
        root.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(staging) / CIFAR_FOLDERS[name]), str(root / CIFAR_FOLDERS[name]))


def open_source(config: DataConfig, split: str) -> ImageSource:
    """Open the ``split`` ('train', 'test', 'val', or 'all' for a tree to split)
    of the dataset a recipe names.

    For ``cifar10``/``cifar100`` the root may hold torchvision's pickles or an ImageFolder
    tree (``train/<class>/``, ``test/<class>/``); when it holds neither and
    ``data.download`` is true, torchvision downloads the pickles there.
    """
    root = Path(config.root).expanduser()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else None
    if config.source == "list_file":
        return _list_file_source(config, split, cache_dir)
    if config.source == "image_folder":
        folder = root if split == "all" else root / split  # "all": one tree that data.split divides
        if not folder.is_dir():
            raise DataError(f"image folder {folder} does not exist (data.root={config.root})")
        return _image_folder_source(folder, config.image_size, cache_dir)

    name = config.source
    pickle_folder = root / CIFAR_FOLDERS[name]
    if (root / split).is_dir() and not pickle_folder.is_dir():
        source = _image_folder_source(root / split, config.image_size, cache_dir)
    else:
        if not pickle_folder.is_dir():
            if not config.download:
                raise DataError(
                    f"{name} not found under {root}: expected {CIFAR_FOLDERS[name]}/ or "
                    f"{split}/<class>/ (set data.root, or data.download=true when online)"
                )
            _download_cifar(name, root)
        source = _cifar_pickle_source(name, pickle_folder, split)
    if source.num_classes != CIFAR_NUM_CLASSES[name]:
        raise DataError(
            f"{root} holds {source.num_classes} classes but data.source={name} has "
            f"{CIFAR_NUM_CLASSES[name]}"
        )
    return source


# ----------------------------------------------------------------------------- GLT


@functools.lru_cache(maxsize=8)
def _built_cifar_glt(root: str, options_items: tuple) -> dict:
    from tailfuse.data.glt import CifarGltOptions, build_cifar_glt

    return build_cifar_glt(root, CifarGltOptions(**dict(options_items)))


def open_glt_annotation(config: DataConfig):
    """The GLT annotation a recipe names, and a name for it (file name,
    or the CIFAR-10-GLT build)."""
    from tailfuse.data.glt import CifarGltOptions, cifar_glt_file_stem, read_glt_annotation

    if config.source == "glt":
        path = config.annotation_cbl if config.glt.train_set == "cbl" else config.annotation
        annotation = read_glt_annotation(path, config.root, config.replace_prefix)
        return annotation, Path(path).name
    glt = config.glt
    options = {
        "attribute": glt.attribute,
        "mode": glt.mode,
        "rho": glt.rho,
        "seed": glt.seed,
        "max_per_class": glt.max_per_class,
        "val_fraction": glt.val_fraction,
        "cbl_val_per_class": glt.cbl_val_per_class,
        "gbl_per_rank": glt.gbl_per_rank,
        "cbl_test_per_class": glt.cbl_test_per_class,
        "test_lt_pool_per_class": glt.test_lt_pool_per_class,
    }
    root = str(Path(config.root).expanduser().resolve())
    annotations = _built_cifar_glt(root, tuple(sorted(options.items())))
    stem = cifar_glt_file_stem(CifarGltOptions(**options))
    return annotations[glt.train_set], f"{stem}_{glt.train_set}"


def glt_image_source(
    splits: list, class_names: list[str], identity: str, config: DataConfig, cache_dir: Path | None
) -> ImageSource:
    """One image source over the concatenated GLT ``splits``; applies their
    tint/rotation when loading."""
    from tailfuse.data.glt import apply_attribute_transforms

    paths = [path for split in splits for path in split.paths]
    labels = np.concatenate([split.labels for split in splits])
    attributes = np.concatenate([split.attributes for split in splits])
    transform_names = set.intersection(*(set(split.transforms) for split in splits))
    if any(set(split.transforms) != transform_names for split in splits):
        raise DataError(f"{identity}: splits disagree on their attribute transforms")
    transforms = {
        name: np.concatenate([split.transforms[name] for split in splits])
        for name in transform_names
    }
    decode = _cached_decoder(paths, identity, config.image_size, cache_dir)
    strength = config.glt.tint_strength

    def load(indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        images = decode(indices)
        if not transforms:
            return images
        return apply_attribute_transforms(
            images, {name: values[indices] for name, values in transforms.items()}, strength
        )

    return ImageSource(
        labels=labels,
        class_names=list(class_names),
        load=load,
        identity=identity,
        paths=paths,
        attributes=attributes,
        transforms_images=bool(transforms),
    )
