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


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise DataError(f"cannot read CIFAR file {path}: {error}") from None


@functools.lru_cache(maxsize=4)
def _read_cifar_pickles(name: str, folder: Path, split: str, modified: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (NHWC), labels and class names of one split; cached per process while files are unchanged."""
    spec = CIFAR_FILES[name]
    arrays, labels = [], []
    for file_name in spec[split]:
        batch = _unpickle(folder / file_name)
        arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[spec["label_key"]])
    images = np.ascontiguousarray(np.concatenate(arrays).transpose(0, 2, 3, 1))
    meta_file, meta_key = spec["meta"]
    class_names = list(_unpickle(folder / meta_file)[meta_key])
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


def _decode_files(paths: list[str], image_size: int) -> np.ndarray:
    """Decode image files to uint8 (N, H, W, 3), resizing when they are not square ``image_size``."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import resize

    output = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for position, path in enumerate(paths):
        try:
            image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as error:
            raise DataError(f"cannot decode image {path}: {error}") from None
        if image.shape[1] != image_size or image.shape[2] != image_size:
            image = resize(image, [image_size, image_size], antialias=True)
        output[position] = image.permute(1, 2, 0).numpy()
    return output


def _cached_decoder(
    paths: list[str], identity: str, image_size: int, cache_dir: Path | None
) -> Callable[[np.ndarray], np.ndarray]:
    def load(indices: np.ndarray) -> np.ndarray:
        chosen = [paths[i] for i in np.asarray(indices, dtype=np.int64)]
        key = hashlib.sha256(
            "\n".join([identity, str(image_size), *chosen]).encode()
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
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(temporary, images)
        os.replace(temporary, cache_path)
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
    """Lines ``relative/path label`` (ImageNet-LT, iNaturalist, Places-LT lists) → paths under ``root``, labels."""
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


def read_inaturalist_json(root: Path, json_path: Path) -> tuple[list[str], np.ndarray, dict[int, str]]:
    """An iNaturalist 2017/2018 annotation file (COCO-style ``images``, ``annotations``,
    ``categories``) → paths under ``root``, ``category_id`` labels, and category names by id."""
    import json

    if not json_path.is_file():
        raise DataError(f"list file {json_path} does not exist")
    try:
        content = json.loads(json_path.read_text())
        files = {image["id"]: image["file_name"] for image in content["images"]}
        pairs = [(files[note["image_id"]], int(note["category_id"])) for note in content["annotations"]]
        names = {int(category["id"]): str(category.get("name", category["id"])) for category in content.get("categories", [])}
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{json_path} is not an iNaturalist annotation file (images, annotations): {error!r}") from None
    if not pairs:
        raise DataError(f"list file {json_path} has no annotated images")
    return [str(root / name) for name, _ in pairs], np.asarray([label for _, label in pairs], dtype=np.int64), names


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
        raise DataError(f"the training list has no images of classes {empty} (labels must be 0..C-1)")
    order = np.argsort(-counts, kind="stable")
    mapping = np.empty_like(order)
    mapping[order] = np.arange(len(order))
    return mapping


def _list_file_source(config: DataConfig, split: str, cache_dir: Path | None) -> ImageSource:
    root = Path(config.root).expanduser()
    train_paths, train_labels, names = read_labelled_list(root, Path(config.train_list).expanduser())
    if train_labels.min() < 0:
        raise DataError(f"{config.train_list} has negative labels")
    num_classes = int(train_labels.max()) + 1
    if split == "train":
        paths, labels = train_paths, train_labels
    else:
        paths, labels, _ = read_labelled_list(root, Path(config.test_list).expanduser())
        if labels.max() >= num_classes or labels.min() < 0:
            raise DataError(f"{config.test_list} has labels outside the {num_classes} training classes")
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
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_class = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        dataset_class(str(root), train=True, download=True)
    except Exception as error:  # noqa: BLE001 - any failure means: no data here
        raise DataError(
            f"{name} is not under {root} (expected {CIFAR_FOLDERS[name]}/ or train/<class>/ "
            f"image folders) and downloading it failed ({type(error).__name__}: {error}). "
            f"Set data.root to a local copy."
        ) from None


def open_source(config: DataConfig, split: str) -> ImageSource:
    """Open the ``split`` ('train' or 'test') of the dataset a recipe names.

    For ``cifar10``/``cifar100`` the root may hold torchvision's pickles or an ImageFolder
    tree (``train/<class>/``, ``test/<class>/``); when it holds neither and
    ``data.download`` is true, torchvision downloads the pickles there.
    """
    root = Path(config.root).expanduser()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else None
    if config.source == "list_file":
        return _list_file_source(config, split, cache_dir)
    if config.source == "image_folder":
        folder = root / split
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
    """The GLT annotation a recipe names, and a name for it (file name, or the CIFAR-10-GLT build)."""
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


def glt_image_source(splits: list, class_names: list[str], identity: str, config: DataConfig, cache_dir: Path | None) -> ImageSource:
    """One image source over the concatenated GLT ``splits``; applies their tint/rotation when loading."""
    from tailfuse.data.glt import apply_attribute_transforms

    paths = [path for split in splits for path in split.paths]
    labels = np.concatenate([split.labels for split in splits])
    attributes = np.concatenate([split.attributes for split in splits])
    transform_names = set.intersection(*(set(split.transforms) for split in splits))
    if any(set(split.transforms) != transform_names for split in splits):
        raise DataError(f"{identity}: splits disagree on their attribute transforms")
    transforms = {name: np.concatenate([split.transforms[name] for split in splits]) for name in transform_names}
    decode = _cached_decoder(paths, identity, config.image_size, cache_dir)
    strength = config.glt.tint_strength

    def load(indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        images = decode(indices)
        if not transforms:
            return images
        return apply_attribute_transforms(images, {name: values[indices] for name, values in transforms.items()}, strength)

    return ImageSource(
        labels=labels,
        class_names=list(class_names),
        load=load,
        identity=identity,
        paths=paths,
        attributes=attributes,
        transforms_images=bool(transforms),
    )
