"""List-file datasets (ImageNet-LT format) streamed through DataLoader workers."""

from __future__ import annotations

import pytest
import torch

from tailfuse.config import AugmentConfig, DataConfig
from tailfuse.data.pipeline import StreamedImageDataset, streamed_transforms
from tailfuse.data.prepare import StreamedImages, load_data, plan_subset
from tailfuse.data.sources import read_list_file
from tailfuse.errors import ConfigError, DataError

from ..fakes import write_list_file_dataset


def stream_config(files, **extra) -> DataConfig:
    return DataConfig(
        source="list_file",
        root=str(files["root"]),
        train_list=str(files["train_list"]),
        test_list=str(files["test_list"]),
        storage="stream",
        profile="none",
        augment=AugmentConfig(kind="imagenet", crop_size=32, resize=36),
        **extra,
    )


def test_list_file_counts_and_paths(tmp_path):
    files = write_list_file_dataset(tmp_path)
    plan = plan_subset(stream_config(files))
    assert plan.class_counts == [6, 4, 3, 2] and len(plan.test_indices) == 8
    data = load_data(stream_config(files))
    assert isinstance(data.train, StreamedImages) and len(data.train) == 15
    assert data.train.paths[0].endswith("train/n00000000/0.JPEG")


def test_streamed_transforms_give_fixed_size_normalised_tensors(tmp_path):
    files = write_list_file_dataset(tmp_path)
    data = load_data(stream_config(files))
    training, evaluation = streamed_transforms(
        AugmentConfig(kind="imagenet", crop_size=32, resize=36)
    )
    image, label = StreamedImageDataset(data.train.paths, data.train.labels, training)[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and int(label) == 0
    image, _ = StreamedImageDataset(data.test.paths, data.test.labels, evaluation)[1]
    assert image.shape == (3, 32, 32)


def test_malformed_lines_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.txt").write_text("a.jpg 0\nb.jpg\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected 'relative/path label'"):
        read_list_file(tmp_path, tmp_path / "bad.txt")
    with pytest.raises(DataError, match="does not exist"):
        read_list_file(tmp_path, tmp_path / "missing.txt")


def test_stream_storage_needs_imagenet_augmentation():
    with pytest.raises(ValueError, match="augment.kind=imagenet goes with data.storage=stream"):
        DataConfig(source="image_folder", storage="stream")
    from tailfuse.config import build_config

    with pytest.raises(ConfigError, match="needs data.train_list"):
        build_config(
            {"data": {"source": "list_file", "storage": "stream", "augment": {"kind": "imagenet"}}}
        )
