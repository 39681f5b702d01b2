"""Small stand-ins in published on-disk formats, for code paths whose real data is not here.

The list-file stand-ins (ImageNet-LT, iNaturalist 2018, Places-LT) hold real photographs: CIFAR-10
training images from the shared JPEG copy, of class ``label % 10``, resized to the stand-in's
size (random pixels only where that copy is missing).
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_CIFAR10_JPEG = Path(
    os.environ.get("TAILFUSE_CIFAR10_JPEG", REPOSITORY.parent / "shared" / "data" / "cifar10-jpeg")
)


@functools.cache
def _cifar10_training_files(class_index: int) -> tuple[Path, ...]:
    """The shared JPEG copy's training images of one CIFAR-10 class (none without the copy)."""
    train = SHARED_CIFAR10_JPEG / "train"
    if not train.is_dir():
        return ()
    classes = sorted(path for path in train.iterdir() if path.is_dir())
    return tuple(sorted(classes[class_index].iterdir()))


def stand_in_pixels(rng: np.random.Generator, label: int, index: int, height: int, width: int):
    """``height x width x 3`` uint8 pixels of a stand-in image of class ``label``: the
    ``index``-th CIFAR-10 training photo of class ``label % 10``, resized; random pixels without
    the shared copy. ``rng`` advances the same either way, so a writer's other draws stay put."""
    from PIL import Image

    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    files = _cifar10_training_files(label % 10)
    if not files:
        return noise
    with Image.open(files[index % len(files)]) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR))


def write_cifar_pickles(
    root: Path, dataset: str, train_per_class: int, test_per_class: int, seed: int = 0
) -> Path:
    """torchvision's CIFAR-10/100 pickle layout filled with random images
    (labels in shuffled order)."""
    num_classes = 10 if dataset == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    label_key = "labels" if dataset == "cifar10" else "fine_labels"

    def batch(per_class: int) -> dict:
        labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        return {"data": data, label_key: labels.tolist()}

    if dataset == "cifar10":
        train = batch(train_per_class)
        parts = np.array_split(np.arange(len(train["labels"])), 5)
        for index, part in enumerate(parts, start=1):
            chunk = {"data": train["data"][part], "labels": [train["labels"][i] for i in part]}
            (folder / f"data_batch_{index}").write_bytes(pickle.dumps(chunk))
        (folder / "test_batch").write_bytes(pickle.dumps(batch(test_per_class)))
        (folder / "batches.meta").write_bytes(
            pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
        )
    else:
        (folder / "train").write_bytes(pickle.dumps(batch(train_per_class)))
        (folder / "test").write_bytes(pickle.dumps(batch(test_per_class)))
        (folder / "meta").write_bytes(
            pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]})
        )
    return root


def write_list_file_dataset(
    root: Path,
    num_classes: int = 4,
    train_counts: list[int] | None = None,
    test_per_class: int = 2,
    size: int = 48,
) -> dict:
    """JPEGs under ``root/images`` with ImageNet-LT style lists (``relative/path label``)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    train_counts = train_counts or [6, 4, 3, 2][:num_classes]
    lines = {"train": [], "test": []}
    for split, counts in (("train", train_counts), ("test", [test_per_class] * num_classes)):
        for label, count in enumerate(counts):
            folder = root / "images" / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                photo = index + (0 if split == "train" else 1000)  # test photos differ from train
                pixels = stand_in_pixels(rng, label, photo, size, size + 8 * (index % 2))
                Image.fromarray(pixels).save(folder / f"{index}.JPEG", quality=90)
                lines[split].append(f"{split}/n{label:08d}/{index}.JPEG {label}")
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    return {
        "root": root / "images",
        "train_list": root / "train.txt",
        "test_list": root / "test.txt",
    }


def write_image_folder(
    root: Path, train_per_class: list[int], test_per_class: list[int], size: int = 32, seed: int = 0
) -> Path:
    """``root/{train,test}/c<k>/<i>.jpg`` random JPEGs: a stand-in ImageFolder tree."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, counts in (("train", train_per_class), ("test", test_per_class)):
        for label, count in enumerate(counts):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=90)
    return root


def write_glt_annotation_files(root: Path, num_classes: int = 4, size: int = 40) -> dict:
    """JPEGs and a Train-GLT / Train-CBL pair of annotation files in
    ImageNet-GLT's published schema.

    Keys are absolute image paths; every split holds ``label``, ``frequency`` and ``attribute``.
    """
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = {
        "train": [8, 6, 4, 3][:num_classes],
        "val": [2] * num_classes,
        "test_lt": [3, 2, 1, 1][:num_classes],
        "test_bl": [3] * num_classes,
        "test_bbl": [3] * num_classes,
    }
    balanced = {
        "train": [5] * num_classes,
        "val": [1] * num_classes,
        "test_bl": [3] * num_classes,
        "test_bbl": [3] * num_classes,
    }
    files = {}
    for kind, plan in (("lt", sizes), ("bl", balanced)):
        content = {
            "cat2id": {f"n{c:08d}": c for c in range(num_classes)},
            "id2cat": {str(c): f"n{c:08d}" for c in range(num_classes)},
        }
        for split, counts in plan.items():
            entries = {"label": {}, "frequency": {}, "attribute": {}}
            for label, count in enumerate(counts):
                for index in range(count):
                    path = root / "images" / kind / split / f"n{label:08d}_{index}.JPEG"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(
                        path, quality=90
                    )
                    key = str(path.resolve())
                    entries["label"][key] = label
                    entries["frequency"][key] = min(2, label * 3 // num_classes)
                    entries["attribute"][key] = index % 3
            content[split] = entries
        files[kind] = root / f"toy_intra_lt_inter_{kind}.json"
        files[kind].write_text(json.dumps(content))
    return files


def _write_jpegs(
    root: Path, relative_paths: list[str], labels: list[int], size: int = 40, seed: int = 0
) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for position, (relative, label) in enumerate(zip(relative_paths, labels, strict=True)):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        photo = position + 1000 * seed  # the splits (seeds) draw different photos
        Image.fromarray(stand_in_pixels(rng, label, photo, size, size + 4)).save(path, quality=90)


def write_inaturalist_dataset(root: Path, train_counts: list[int], val_per_class: int = 1) -> dict:
    """iNaturalist 2018's layout: ``train_val2018/<kingdom>/<id>/<hash>.jpg`` with the official
    COCO-style ``train2018.json`` / ``val2018.json`` and MiSLAS-style txt
    lists of the same images."""
    import json

    files: dict = {}
    for split, counts in (("train", train_counts), ("val", [val_per_class] * len(train_counts))):
        images, annotations, lines = [], [], []
        for category, count in enumerate(counts):
            for index in range(count):
                name = f"train_val2018/Plantae/{category}/{split}{index:04d}.jpg"
                image_id = len(images) + (0 if split == "train" else 100_000)
                images.append({"id": image_id, "file_name": name, "width": 44, "height": 40})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": category})
                lines.append(f"{name} {category}")
        categories = [
            {"id": c, "name": f"species_{c}", "supercategory": "Plantae"}
            for c in range(len(train_counts))
        ]
        (root / f"{split}2018.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
        (root / f"iNaturalist18_{split}.txt").write_text("\n".join(lines) + "\n")
        _write_jpegs(
            root / "images",
            [image["file_name"] for image in images],
            [annotation["category_id"] for annotation in annotations],
            seed=0 if split == "train" else 1,
        )
        files[split] = (root / f"{split}2018.json", root / f"iNaturalist18_{split}.txt")
    return {
        "root": root / "images",
        "train_json": files["train"][0],
        "val_json": files["val"][0],
        "train_txt": files["train"][1],
        "val_txt": files["val"][1],
    }


def write_places_lt_dataset(root: Path, train_counts: list[int], test_per_class: int = 1) -> dict:
    """Places-LT's lists: ``data_256/<l>/<scene>/<n>.jpg label`` (train),
    ``val_256/Places365_val_<n>.jpg label`` (test)."""
    lines = {"train": [], "test": []}
    for label, count in enumerate(train_counts):
        scene = f"scene{label}"
        lines["train"] += [
            f"data_256/{scene[0]}/{scene}/{index:08d}.jpg {label}" for index in range(count)
        ]
        lines["test"] += [
            f"val_256/Places365_val_{label:04d}{index:04d}.jpg {label}"
            for index in range(test_per_class)
        ]
    for split in ("train", "test"):
        (root / f"Places_LT_{split}.txt").write_text("\n".join(lines[split]) + "\n")
        _write_jpegs(
            root / "places365",
            [line.split()[0] for line in lines[split]],
            [int(line.split()[1]) for line in lines[split]],
            seed=len(split),
        )
    return {
        "root": root / "places365",
        "train_list": root / "Places_LT_train.txt",
        "test_list": root / "Places_LT_test.txt",
    }


def save_stand_in_checkpoint(path: Path, config, model, method, class_names, class_counts) -> None:
    """A complete training checkpoint of ``model`` and ``method`` (as a finished epoch saves
    it), for prediction and export tests that need no training."""
    from tailfuse.config import config_to_dict
    from tailfuse.engine.checkpoint import save_checkpoint

    modules = method.modules_to_save()
    save_checkpoint(
        {
            "config": config_to_dict(config),
            "epoch": 1,
            "best": {},
            "session": {
                "model": model.state_dict(),
                "method_modules": {name: module.state_dict() for name, module in modules.items()},
            },
            "data": {
                "class_names": list(class_names),
                "class_counts": list(class_counts),
                "subset_checksum": "-",
                "total": sum(class_counts),
            },
        },
        path,
    )
