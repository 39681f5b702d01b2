"""Sources: torchvision's CIFAR pickles, ImageFolder trees, the decode cache, downloads."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tailfuse.config import DataConfig
from tailfuse.data import sources
from tailfuse.data.prepare import load_data
from tailfuse.data.sources import open_source
from tailfuse.errors import DataError


def write_fake_cifar10(root: Path, per_batch: int = 6) -> np.ndarray:
    """Write torchvision's CIFAR-10 pickle layout with random images; returns
    all train images (NHWC)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        if name != "test_batch":
            train_images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    return np.concatenate(train_images)


def test_cifar_pickles_are_read_in_torchvision_order(tmp_path):
    expected = write_fake_cifar10(tmp_path)
    source = open_source(DataConfig(source="cifar10", root=str(tmp_path), download=False), "train")
    assert len(source.labels) == 30 and source.num_classes == 10
    assert np.array_equal(source.load(np.array([0, 7, 29])), expected[[0, 7, 29]])


def test_missing_data_without_download_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="cifar10 not found under"):
        open_source(DataConfig(source="cifar10", root=str(tmp_path), download=False), "train")


def test_download_uses_torchvision_and_then_reads_local_files(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, download))
            write_fake_cifar10(Path(root))

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    source = open_source(DataConfig(source="cifar10", root=str(tmp_path), download=True), "train")
    # torchvision downloads into a temporary folder; the pickles are then moved under the root
    assert len(calls) == 1 and calls[0][1] is True and calls[0][0] != str(tmp_path)
    assert (tmp_path / "cifar-10-batches-py").is_dir() and len(source.labels) == 30


def test_failed_download_names_the_fix(tmp_path, monkeypatch):
    class OfflineCIFAR10:
        def __init__(self, root, train, download):
            raise OSError("network unreachable")

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    with pytest.raises(DataError, match="downloading it failed.*Set data.root"):
        open_source(
            DataConfig(source="cifar10", root=str(tmp_path / "none"), download=True), "train"
        )


def _write_folder(root: Path, images_per_class: int = 3, size: int = 32) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for class_name in ("a", "b"):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for index in range(images_per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


def test_image_folder_decodes_exactly_and_caches(tmp_path, monkeypatch):
    _write_folder(tmp_path / "set")
    config = DataConfig(
        source="image_folder", root=str(tmp_path / "set"), cache_dir=str(tmp_path / "cache")
    )
    source = open_source(config, "train")
    assert source.class_names == ["a", "b"] and source.labels.tolist() == [0, 0, 0, 1, 1, 1]
    images = source.load(np.array([4, 1]))
    expected = np.asarray(Image.open(tmp_path / "set" / "train" / "b" / "1.png"))
    assert np.array_equal(images[0], expected)
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached images should have been used")

    monkeypatch.setattr(sources, "_decode_files", no_decoding)
    assert np.array_equal(open_source(config, "train").load(np.array([4, 1])), images)


def test_images_of_another_size_are_resized(tmp_path):
    _write_folder(tmp_path / "set", size=40)
    config = DataConfig(
        source="image_folder", root=str(tmp_path / "set"), cache_dir=str(tmp_path / "cache")
    )
    assert open_source(config, "train").load(np.array([0])).shape == (1, 32, 32, 3)


def test_corrupt_image_is_reported_by_path(tmp_path):
    _write_folder(tmp_path / "set")
    broken = tmp_path / "set" / "train" / "a" / "0.png"
    broken.write_bytes(b"not an image")
    config = DataConfig(
        source="image_folder",
        root=str(tmp_path / "set"),
        cache_dir=str(tmp_path / "cache"),
        profile="none",
    )
    with pytest.raises(DataError, match=r"cannot decode image .*0\.png"):
        load_data(config)


def test_wrong_number_of_classes_is_refused(tmp_path):
    _write_folder(tmp_path / "set")
    with pytest.raises(DataError, match="holds 2 classes but data.source=cifar10 has 10"):
        open_source(DataConfig(source="cifar10", root=str(tmp_path / "set")), "train")


def test_real_jpeg_images_reach_the_device_as_uint8(cifar10_jpeg_root):
    config = DataConfig(
        source="cifar10",
        root=str(cifar10_jpeg_root),
        max_per_class=20,
        imbalance_factor=10,
        test_per_class=5,
    )
    data = load_data(config)
    assert data.train.images.dtype.is_floating_point is False and data.train.images.shape == (
        sum(data.class_counts),
        3,
        32,
        32,
    )
    assert data.test.images.shape == (50, 3, 32, 32)
    assert data.train.images.float().std() > 10  # real pictures, not blanks
