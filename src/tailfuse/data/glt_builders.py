"""Builders of the published GLT benchmarks from their raw sources (spec glt_ifl §1.3, §1.4).

- ImageNet-GLT: an ILSVRC-2012 train folder → ResNet-50 features (weights the user
  supplies; Resize(260), CenterCrop(256), no normalisation) → per-class K-Means (K = 6),
  one class at a time → clusters ranked by size (ties: first appearance) and merged in
  pairs, each attribute list holding the larger cluster's images first → the splits of §1.3.
- MSCOCO-GLT: cocottributes (joblib) + COCO 2014 instance annotations → 29 object
  classes by instance count → greedy minimum-std Test-GBL, random Test-CBL, exponential
  or balanced training pools → object crops (§1.4 item 8) → attribute tertiles (item 9).

Both write the two annotation files (``*_intra_lt_inter_lt.json``,
``*_intra_lt_inter_bl.json``) in the ImageNet-GLT schema with absolute image paths. Split
logic is separate from feature extraction and image I/O, and every size is a parameter
(defaults: the spec's), so the logic is testable on small synthetic inputs. Nothing here
touches the network.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailfuse.data.glt import (
    GltAnnotation,
    GltSplit,
    list_image_folder,
    rank_sizes,
    write_annotation_pair,
    write_json_atomically,
)
from tailfuse.data.sources import CIFAR_PICKLE_GLOBALS
from tailfuse.errors import DataError


def _split_from_rows(rows: list[tuple[str, int, int]], frequency_of: Sequence[int]) -> GltSplit:
    """GltSplit from (path, label, attribute) rows."""
    labels = np.asarray([r[1] for r in rows], dtype=np.int64)
    return GltSplit(
        paths=[r[0] for r in rows],
        labels=labels,
        frequency=np.asarray([frequency_of[c] for c in labels.tolist()], dtype=np.int64),
        attributes=np.asarray([r[2] for r in rows], dtype=np.int64),
    )


# =============================================================================== ImageNet-GLT


@dataclass
class ImagenetGltSizes:
    """Split sizes of spec §1.3 item 6 (defaults: the published ones for 1000 classes)."""

    gbl_per_attribute: int = 20  # Test-GBL: at most this many per attribute (a)
    cbl_test: tuple[int, int, int] = (42, 12, 6)  # Test-CBL per class (b)
    cbl_pool: int = 145  # Train-CBL pool per class before 7:2:1 (c)
    test_lt_per_class: int = 60  # Test-GLT size = this × classes (d)
    val_per_class: int = 30  # GLT-file val size = this × classes (d); CBL-file val per class
    many_fraction: float = 0.4  # class id < 0.4·C → Many (400 of 1000)
    few_fraction: float = 0.85  # class id ≥ 0.85·C → Few (850 of 1000)


def rank_clusters(cluster_ids: np.ndarray) -> np.ndarray:
    """Size rank of each image's cluster within its class (0 = largest), spec §1.3 item 4.

    Equal sizes rank by first appearance in the listing, as the authors' ``cluster_ranking``
    (a dict of clusters in insertion order, then a stable sort by size) does.
    """
    ids = np.asarray(cluster_ids)
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))  # by size descending, then by first appearance
    rank_of_value = np.empty(len(values), dtype=np.int64)
    rank_of_value[order] = np.arange(len(values))
    return rank_of_value[np.searchsorted(values, ids)]


def merge_clusters(cluster_ids: np.ndarray) -> np.ndarray:
    """Attribute of each image: clusters ranked by size (descending), pairs merged
    (1+2→0, 3+4→1, 5+6→2)."""
    return rank_clusters(cluster_ids) // 2


def attribute_lists(images: Sequence[str], cluster_ids: np.ndarray) -> list[list[str]]:
    """One class's three attribute lists as the authors build them (spec §1.3 item 4).

    Attribute a holds the images of the cluster ranked 2a, in listing order, followed by
    those of the cluster ranked 2a + 1; the test sets are then cut from the list fronts,
    so they come from the larger cluster of each merged pair.
    """
    ranks = rank_clusters(cluster_ids)
    if len(ranks) != len(images):
        raise DataError(f"{len(images)} images but {len(ranks)} cluster ids")
    if len(ranks) and ranks.max() > 5:
        raise DataError(
            f"a class has {int(ranks.max()) + 1} clusters; ImageNet-GLT merges 6 into 3 attributes"
        )
    by_rank: list[list[str]] = [[] for _ in range(6)]
    for path, rank in zip(images, ranks.tolist(), strict=True):
        by_rank[rank].append(path)
    return [by_rank[2 * a] + by_rank[2 * a + 1] for a in range(3)]


def imagenet_glt_splits(
    class_names: list[str],
    class_images: list[list[str]],
    class_clusters: list[np.ndarray],
    profile: Sequence[int],
    sizes: ImagenetGltSizes | None = None,
    seed: int = 25,
) -> dict[str, GltAnnotation]:
    """The Train-GLT and Train-CBL annotations from per-image clusters (spec §1.3 items 4–7).

    ``class_images[k]`` lists class k's images in listing order and ``class_clusters[k]``
    their K-Means cluster ids (6 clusters, merged into 3 attributes by
    :func:`attribute_lists`). Class ids are assigned by image count (descending, ties in
    the given order); ``profile`` holds the Train-GLT pool target per class id.
    """
    sizes = sizes or ImagenetGltSizes()
    num_classes = len(class_names)
    if len(profile) != num_classes:
        raise DataError(
            f"the long-tail profile has {len(profile)} entries for {num_classes} classes"
        )
    if any(a < b for a, b in zip(profile, profile[1:], strict=False)):
        raise DataError("the long-tail profile must be non-increasing (class id 0 = largest)")
    order = sorted(
        range(num_classes), key=lambda k: -len(class_images[k])
    )  # stable: ties keep listing order
    many_until = int(round(sizes.many_fraction * num_classes))
    few_from = int(round(sizes.few_fraction * num_classes))
    frequency_of = [0 if i < many_until else 1 if i < few_from else 2 for i in range(num_classes)]
    rows = {name: [] for name in ("test_bbl", "test_bl", "glt_pool", "cbl_train", "cbl_val")}
    for class_id, source in enumerate(order):
        lists = attribute_lists(class_images[source], class_clusters[source])
        gbl = min(sizes.gbl_per_attribute, min(len(lst) // 4 for lst in lists))
        for value in range(3):
            rows["test_bbl"] += [(p, class_id, value) for p in lists[value][:gbl]]
            lists[value] = lists[value][gbl:]
        for value in range(3):
            take = min(sizes.cbl_test[value], len(lists[value]))
            rows["test_bl"] += [(p, class_id, value) for p in lists[value][:take]]
            lists[value] = lists[value][take:]
        for value, keep in enumerate(rank_sizes(int(profile[class_id]))):
            rows["glt_pool"] += [(p, class_id, value) for p in lists[value][:keep]]
        available = sum(len(lst) for lst in lists)
        cbl_keep = rank_sizes(min(sizes.cbl_pool, available))
        cbl_val = rank_sizes(sizes.val_per_class)
        for value in range(3):
            kept = lists[value][: cbl_keep[value]]
            rows["cbl_val"] += [(p, class_id, value) for p in kept[: cbl_val[value]]]
            rows["cbl_train"] += [(p, class_id, value) for p in kept[cbl_val[value] :]]
    pool = rows["glt_pool"]
    test_lt_size = sizes.test_lt_per_class * num_classes
    val_size = sizes.val_per_class * num_classes
    if test_lt_size + val_size > len(pool):
        raise DataError(
            f"the long-tailed pool holds {len(pool)} images; Test-GLT and val need "
            f"{test_lt_size + val_size}"
        )
    generator = random.Random(seed)
    positions = list(range(len(pool)))
    test_lt_positions = set(generator.sample(positions, test_lt_size))
    rest = [i for i in positions if i not in test_lt_positions]
    val_positions = set(generator.sample(rest, val_size))
    train_positions = [i for i in rest if i not in val_positions]
    names = [class_names[source] for source in order]

    def split(selected_rows):
        return _split_from_rows(selected_rows, frequency_of)

    tests = {"test_bl": split(rows["test_bl"]), "test_bbl": split(rows["test_bbl"])}
    meta = {"builder": "imagenet_glt", "seed": seed, "class_sources": names}
    return {
        "glt": GltAnnotation(
            names,
            {
                "train": split([pool[i] for i in train_positions]),
                "val": split([pool[i] for i in sorted(val_positions)]),
                "test_lt": split([pool[i] for i in sorted(test_lt_positions)]),
                **tests,
            },
            {**meta, "train_set": "glt"},
        ),
        "cbl": GltAnnotation(
            names,
            {"train": split(rows["cbl_train"]), "val": split(rows["cbl_val"]), **tests},
            {**meta, "train_set": "cbl"},
        ),
    }


def load_feature_model(weights: str | Path, architecture: str = "resnet50", device: str = "auto"):
    """A torchvision ResNet with the user's weights and ``fc`` → ReLU,
    in eval mode (spec §1.3 item 2).

    Returns the model and the device it sits on.
    """
    import torch
    import torchvision

    weights = Path(weights)
    if not weights.is_file():
        raise DataError(
            f"feature weights {weights} do not exist (a torchvision {architecture} state dict)"
        )
    model = getattr(torchvision.models, architecture)(weights=None)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except (RuntimeError, KeyError, ValueError) as error:
        raise DataError(f"{weights} is not a {architecture} state dict: {error}") from None
    model.fc = torch.nn.ReLU()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    return model.eval().to(resolved), resolved


def extract_features(
    paths: list[str],
    model,
    device,
    resize: int = 260,
    crop: int = 256,
    batch_size: int = 128,
    num_workers: int = 4,
) -> np.ndarray:
    """Pooled features of ``paths`` (one class) from :func:`load_feature_model`'s
    model (spec §1.3 item 2).

    Preprocessing: Resize(resize) → CenterCrop(crop) → ToTensor, no normalisation. The
    output array is allocated once and filled batch by batch (no list to concatenate).
    """
    import torch
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from tailfuse.data.pipeline import loader_batches

    transform = v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(crop),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )

    class Images(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, index):
            from torchvision.io import ImageReadMode, decode_image, read_file

            try:
                image = decode_image(read_file(paths[index]), mode=ImageReadMode.RGB)
            except (RuntimeError, ValueError) as error:
                raise DataError(f"cannot decode image {paths[index]}: {error}") from None
            return transform(image)

    loader = DataLoader(Images(), batch_size=batch_size, num_workers=num_workers)
    features, start = None, 0
    with torch.inference_mode():
        for batch in loader_batches(loader):
            output = model(batch.to(device)).float().cpu().numpy()
            if features is None:
                features = np.empty((len(paths), output.shape[1]), dtype=np.float32)
            features[start : start + len(output)] = output
            start += len(output)
    return features if features is not None else np.zeros((0, 0), dtype=np.float32)


def cluster_images(features: np.ndarray, num_clusters: int = 6, seed: int = 25) -> np.ndarray:
    """K-Means (K = 6) cluster id of each image of one class (spec §1.3 item 3).

    The authors ran scikit-learn's KMeans unseeded; here ``random_state`` = ``seed``.
    :func:`attribute_lists` ranks and merges the clusters.
    """
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise DataError(
            "building ImageNet-GLT needs scikit-learn: pip install 'tailfuse[glt]'"
        ) from None

    if len(features) < num_clusters:
        raise DataError(
            f"a class has {len(features)} images, fewer than the {num_clusters} clusters"
        )
    return KMeans(n_clusters=num_clusters, random_state=seed, n_init=10).fit_predict(features)


def build_imagenet_glt_files(
    train_dir: str | Path,
    weights: str | Path,
    profile: str | Path | Sequence[int],
    out_dir: str | Path,
    sizes: ImagenetGltSizes | None = None,
    architecture: str = "resnet50",
    resize: int = 260,
    crop: int = 256,
    batch_size: int = 128,
    num_workers: int = 4,
    device: str = "auto",
    seed: int = 25,
) -> dict[str, Path]:
    """Build ``imagenet_sup_intra_lt_inter_{lt,bl}.json`` from an ILSVRC-2012
    train folder (spec §1.3).

    Features are extracted and clustered one class at a time (as the authors' script does),
    so memory holds one class's features (≤ 1,300 × 2048 floats), not all 1.28 M images'.
    """
    from tqdm.auto import tqdm

    class_names, class_images = list_image_folder(Path(train_dir).expanduser(), resolve=True)
    if not isinstance(profile, (list, tuple)):
        profile_path = Path(profile).expanduser()
        if not profile_path.is_file():
            raise DataError(
                f"long-tail profile {profile_path} does not exist (a JSON list of per-class counts)"
            )
        profile = [int(v) for v in json.loads(profile_path.read_text())]
    too_small = [
        name for name, images in zip(class_names, class_images, strict=True) if len(images) < 6
    ]
    if too_small:
        raise DataError(
            f"classes {too_small[:5]} have fewer than 6 images, the K-Means clusters of a class"
        )
    model, resolved = load_feature_model(weights, architecture, device)
    class_clusters = []
    for images in tqdm(class_images, desc="features and clusters per class", leave=False):
        features = extract_features(images, model, resolved, resize, crop, batch_size, num_workers)
        class_clusters.append(cluster_images(features, seed=seed))
        del features
    annotations = imagenet_glt_splits(
        class_names, class_images, class_clusters, profile, sizes, seed
    )
    return write_annotation_pair(annotations, out_dir, "imagenet_sup")


# =============================================================================== MSCOCO-GLT


@dataclass
class CocoGltSizes:
    """Sizes of spec §1.4 (defaults: the published ones)."""

    gbl_per_class: tuple[int, int] = (200, 100)  # Test-GBL per class: LT file, BL file
    cbl_test_per_class: tuple[int, int] = (200, 100)  # Test-CBL per class: LT file, BL file
    test_lt_per_class: int = 200  # LT file: Test-GLT = this × classes, from the train pool
    val_per_class: tuple[int, int] = (100, 50)  # val = this × classes: LT file, BL file
    tail_ratio: float = 0.005  # LT profile n_i = min(⌊m_max·ratio^(i/(C−1))⌋, m_i)
    frequency_boundaries: tuple[int, int] = (11, 23)  # rank < 11 Many, < 23 Medium, rest Few


@dataclass
class CocoObject:
    """One annotated object: where its crop comes from and its binary attributes."""

    object_id: int
    image_path: str
    bbox: tuple[float, float, float, float]  # x, y, w, h (COCO)
    class_name: str
    attributes: np.ndarray  # bool, one per attribute


def greedy_balanced_selection(attribute_vectors: np.ndarray, count: int) -> list[int]:
    """Test-GBL selection (spec §1.4 item 3): repeatedly add the object that keeps the summed
    attribute histogram flattest, i.e. minimises std(normalise(z_dist + z)); objects with no
    positive attribute are never chosen. Returns positions into ``attribute_vectors``."""
    vectors = attribute_vectors.astype(np.float64)
    candidates = np.nonzero(vectors.sum(axis=1) > 0)[0].tolist()
    distribution = np.zeros(vectors.shape[1])
    chosen = []
    for _ in range(min(count, len(candidates))):
        trial = distribution[None, :] + vectors[candidates]
        trial = trial / trial.sum(axis=1, keepdims=True)
        best = int(np.argmin(trial.std(axis=1)))
        position = candidates.pop(best)
        distribution += vectors[position]
        chosen.append(position)
    return chosen


def attribute_frequency_labels(
    objects: list[CocoObject], labels: np.ndarray, class_attribute_counts: np.ndarray
) -> np.ndarray:
    """Head/medium/tail attribute label per object (spec §1.4 item 9), thresholds from this split.

    score = Σ_a norm(count_train[class, a])·norm(1[z_a]) (both L1-normalised); sorted
    descending, > the score at ⌊n/3⌋ → 0, > the score at 2⌊n/3⌋ → 1, else 2.
    """
    scores = np.zeros(len(objects))
    for i, (obj, label) in enumerate(zip(objects, labels.tolist(), strict=True)):
        present = obj.attributes.astype(np.float64)
        if present.sum() == 0:
            continue
        counts = class_attribute_counts[label].astype(np.float64)
        counts = counts / counts.sum() if counts.sum() > 0 else counts
        scores[i] = float(counts @ (present / present.sum()))
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    ordered = np.sort(scores)[::-1]
    third = len(ordered) // 3
    head_threshold, medium_threshold = ordered[third], ordered[min(2 * third, len(ordered) - 1)]
    return np.where(scores > head_threshold, 0, np.where(scores > medium_threshold, 1, 2)).astype(
        np.int64
    )


def mscoco_glt_splits(
    objects: list[CocoObject], sizes: CocoGltSizes | None = None, seed: int = 25
) -> dict[str, dict]:
    """Object lists per split for the LT and BL files (spec §1.4 items 2–7).

    Returns ``{"glt"|"cbl": {"class_names", "splits": {name: [(object, label), ...]}}}``.
    """
    sizes = sizes or CocoGltSizes()
    generator = random.Random(seed)
    by_class: dict[str, list[CocoObject]] = {}
    for obj in objects:
        by_class.setdefault(obj.class_name, []).append(obj)
    class_names = sorted(
        by_class, key=lambda name: -len(by_class[name])
    )  # stable by first appearance for ties
    num_classes = len(class_names)
    results = {}
    for kind, file_index in (("glt", 0), ("cbl", 1)):
        gbl_count, cbl_count = sizes.gbl_per_class[file_index], sizes.cbl_test_per_class[file_index]
        splits: dict[str, list] = {"test_bbl": [], "test_bl": [], "pool": []}
        remaining_per_class = []
        for label, name in enumerate(class_names):
            members = list(by_class[name])
            vectors = np.stack([m.attributes for m in members])
            chosen = greedy_balanced_selection(vectors, gbl_count)
            if len(chosen) < gbl_count:
                raise DataError(
                    f"class {name} has only {len(chosen)} objects with attributes; "
                    f"Test-GBL needs {gbl_count}"
                )
            chosen_set = set(chosen)
            splits["test_bbl"] += [(members[i], label) for i in chosen]
            rest = [m for i, m in enumerate(members) if i not in chosen_set]
            if len(rest) < cbl_count:
                raise DataError(
                    f"class {name} has too few objects left for Test-CBL "
                    f"({len(rest)} < {cbl_count})"
                )
            generator.shuffle(rest)
            splits["test_bl"] += [(m, label) for m in rest[:cbl_count]]
            remaining_per_class.append(rest[cbl_count:])
        available = [len(r) for r in remaining_per_class]
        if kind == "glt":
            top = max(available)
            exponent = 1.0 / max(1, num_classes - 1)
            targets = [
                min(int(math.floor(top * sizes.tail_ratio ** (i * exponent) + 1e-9)), available[i])
                for i in range(num_classes)
            ]
        else:
            targets = [min(available)] * num_classes
        for label, rest in enumerate(remaining_per_class):
            splits["pool"] += [
                (m, label) for m in rest[: targets[label]]
            ]  # already shuffled: a random draw
        pool = splits.pop("pool")
        generator.shuffle(pool)
        val_size = sizes.val_per_class[file_index] * num_classes
        if kind == "glt":
            test_lt_size = sizes.test_lt_per_class * num_classes
            splits["test_lt"], splits["val"], splits["train"] = (
                pool[:test_lt_size],
                pool[test_lt_size : test_lt_size + val_size],
                pool[test_lt_size + val_size :],
            )
        else:
            splits["val"], splits["train"] = pool[:val_size], pool[val_size:]
        results[kind] = {"class_names": class_names, "splits": splits, "targets": targets}
    return results


#: Globals a cocottributes joblib file may name: numpy arrays (also joblib's wrapper of
#: them) and plain Python containers and numbers; anything else would run code from data.
JOBLIB_SAFE_GLOBALS = CIFAR_PICKLE_GLOBALS | {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    *{
        ("builtins", name)
        for name in ("set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bytes")
    },
}


def restricted_joblib_load(path: Path):
    """``joblib.load`` that admits only :data:`JOBLIB_SAFE_GLOBALS` (no code run from a data file).

    Uses joblib's own unpickler (which reads its array wrappers and compressed files)
    with a whitelist in ``find_class``; joblib's module layout is private, so a joblib
    that moved it is one clear error rather than an unrestricted load.
    """
    import pickle

    try:
        from joblib.numpy_pickle import NumpyUnpickler, _validate_fileobject_and_memmap
    except ImportError as error:
        raise DataError(
            f"this joblib cannot be read safely here ({error}); pin joblib 1.x"
        ) from None

    class RestrictedUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in JOBLIB_SAFE_GLOBALS:
                raise pickle.UnpicklingError(
                    f"it names {module}.{name}, which cocottributes never holds; refused"
                )
            return super().find_class(module, name)

    with (
        open(path, "rb") as stream,
        _validate_fileobject_and_memmap(stream, str(path), None) as (handle, _),
    ):
        if isinstance(handle, str):
            raise DataError(f"{path} is in a joblib format older than 0.10")
        return RestrictedUnpickler(str(path), handle, True).load()


def load_cocottributes(path: str | Path) -> dict[int, np.ndarray]:
    """COCO annotation id → binary attribute vector (score > 0.5) from ``cocottributes_py3.jbl``.

    Reads the keys the cocottributes release uses: ``ann_vecs`` (patch id → 204 scores)
    and ``patch_id_to_ann_id``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"cocottributes file {path} does not exist")
    try:
        content = restricted_joblib_load(path)
        vectors, patch_to_annotation = content["ann_vecs"], content["patch_id_to_ann_id"]
    except (KeyError, TypeError) as error:
        raise DataError(
            f"{path} lacks the cocottributes keys ann_vecs / patch_id_to_ann_id: {error}"
        ) from None
    except Exception as error:  # noqa: BLE001 - joblib raises many types for a bad file
        raise DataError(f"cannot read cocottributes file {path}: {error}") from None
    return {
        int(patch_to_annotation[patch]): np.asarray(vector) > 0.5
        for patch, vector in vectors.items()
    }


def load_coco_objects(
    attributes: dict[int, np.ndarray],
    annotation_files: Sequence[str | Path],
    image_folders: Sequence[str | Path],
) -> list[CocoObject]:
    """Join attribute vectors with COCO instance annotations (box, class name, image file)."""
    located: dict[str, str] = {}
    for folder in image_folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"COCO image folder {folder} does not exist")
        for file in folder.iterdir():
            located.setdefault(file.name, str(file.resolve()))
    objects = []
    for file in annotation_files:
        try:
            content = json.loads(Path(file).expanduser().read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"cannot read COCO annotations {file}: {error}") from None
        categories = {c["id"]: c["name"] for c in content["categories"]}
        images = {i["id"]: i["file_name"] for i in content["images"]}
        for annotation in content["annotations"]:
            if annotation["id"] not in attributes:
                continue
            file_name = images[annotation["image_id"]]
            if file_name not in located:
                raise DataError(
                    f"image {file_name} of annotation {annotation['id']} is in none of "
                    f"{list(map(str, image_folders))}"
                )
            objects.append(
                CocoObject(
                    object_id=int(annotation["id"]),
                    image_path=located[file_name],
                    bbox=tuple(float(v) for v in annotation["bbox"]),
                    class_name=categories[annotation["category_id"]],
                    attributes=attributes[annotation["id"]],
                )
            )
    if not objects:
        raise DataError("no COCO annotation matched a cocottributes entry")
    return objects


def crop_box(
    bbox: tuple[float, float, float, float], image_width: int, image_height: int
) -> tuple[int, int, int, int]:
    """Square crop around an object (spec §1.4 item 8): grow each side by 50 px when that box side
    is under 100 px, else by 20 % of it; clip to the image; pad the shorter side symmetrically.

    Returns (left, top, right, bottom); it may reach outside the image (PIL fills black)."""
    x, y, w, h = bbox
    grow_x = 50.0 if w < 100 else 0.2 * w
    grow_y = 50.0 if h < 100 else 0.2 * h
    left, right = max(0.0, x - grow_x), min(float(image_width), x + w + grow_x)
    top, bottom = max(0.0, y - grow_y), min(float(image_height), y + h + grow_y)
    width, height = right - left, bottom - top
    if width > height:
        pad = (width - height) / 2
        top, bottom = top - pad, bottom + pad
    else:
        pad = (height - width) / 2
        left, right = left - pad, right + pad
    return int(round(left)), int(round(top)), int(round(right)), int(round(bottom))


def build_mscoco_glt_files(
    attributes_file: str | Path,
    annotation_files: Sequence[str | Path],
    image_folders: Sequence[str | Path],
    out_dir: str | Path,
    sizes: CocoGltSizes | None = None,
    seed: int = 25,
) -> dict[str, Path]:
    """Build MSCOCO-GLT: object crops under ``out/images`` and
    ``coco_intra_lt_inter_{lt,bl}.json``."""
    from PIL import Image
    from tqdm.auto import tqdm

    sizes = sizes or CocoGltSizes()
    objects = load_coco_objects(
        load_cocottributes(attributes_file), annotation_files, image_folders
    )
    plans = mscoco_glt_splits(objects, sizes, seed)
    out_dir = Path(out_dir).expanduser().resolve()
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    crops: dict[int, str] = {}
    needed = {
        obj.object_id: obj
        for plan in plans.values()
        for rows in plan["splits"].values()
        for obj, _ in rows
    }
    for obj in tqdm(needed.values(), desc="crops", leave=False):
        target = image_dir / f"{obj.object_id}.jpg"
        if not target.is_file():
            with Image.open(obj.image_path) as image:
                image = image.convert("RGB")
                image.crop(crop_box(obj.bbox, image.width, image.height)).save(target, quality=95)
        crops[obj.object_id] = str(target)
    written = {}
    for kind, suffix in (("glt", "intra_lt_inter_lt"), ("cbl", "intra_lt_inter_bl")):
        plan = plans[kind]
        class_names, num_classes = plan["class_names"], len(plan["class_names"])
        a, b = sizes.frequency_boundaries
        frequency_of = [0 if c < a else 1 if c < b else 2 for c in range(num_classes)]
        train_rows = plan["splits"]["train"]
        attribute_count = len(objects[0].attributes)
        class_attribute_counts = np.zeros((num_classes, attribute_count))
        for obj, label in train_rows:
            class_attribute_counts[label] += obj.attributes
        splits = {}
        for name, rows in plan["splits"].items():
            labels = np.asarray([label for _, label in rows], dtype=np.int64)
            attribute_labels = attribute_frequency_labels(
                [obj for obj, _ in rows], labels, class_attribute_counts
            )
            splits[name] = _split_from_rows(
                [
                    (crops[obj.object_id], label, int(attr))
                    for (obj, label), attr in zip(rows, attribute_labels, strict=True)
                ],
                frequency_of,
            )
        meta = {
            "builder": "mscoco_glt",
            "seed": seed,
            "train_set": kind,
            "train_targets": plan["targets"],
        }
        path = out_dir / f"coco_{suffix}.json"
        write_json_atomically(GltAnnotation(class_names, splits, meta).to_json(), path)
        written[kind] = path
    return written
