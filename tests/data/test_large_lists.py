"""iNaturalist 2018 (JSON and txt lists) and Places-LT lists: parsing, frequency
order, groups, verify."""

from __future__ import annotations

import hashlib
import json

import pytest

from tailfuse.cli import main
from tailfuse.config import AugmentConfig, DataConfig, GroupsConfig
from tailfuse.data.prepare import plan_subset
from tailfuse.data.sources import open_source
from tailfuse.data.verify import verify_list
from tailfuse.errors import DataError

from ..fakes import write_inaturalist_dataset, write_places_lt_dataset

# listed class sizes 2, 6, 3, 3, 1: by training frequency the classes become 1, 2, 3, 0, 4
# (classes 2 and 3 tie at 3 images and keep their listed order)
TRAIN_COUNTS = [2, 6, 3, 3, 1]


def list_config(root, train_list, test_list, **extra) -> DataConfig:
    return DataConfig(
        source="list_file",
        root=str(root),
        train_list=str(train_list),
        test_list=str(test_list),
        storage="stream",
        profile="none",
        augment=AugmentConfig(kind="imagenet", crop_size=32, resize=36),
        **extra,
    )


@pytest.fixture(scope="module")
def inaturalist(tmp_path_factory):
    return write_inaturalist_dataset(tmp_path_factory.mktemp("inat"), TRAIN_COUNTS)


def test_inaturalist_json_and_txt_lists_give_the_same_frequency_ordered_classes(inaturalist):
    plans = {
        kind: plan_subset(
            list_config(
                inaturalist["root"],
                inaturalist[f"train_{kind}"],
                inaturalist[f"val_{kind}"],
                label_order="frequency",
            )
        )
        for kind in ("json", "txt")
    }
    assert plans["json"].class_counts == plans["txt"].class_counts == [6, 3, 3, 2, 1]
    assert plans["json"].class_names == [
        "species_1",
        "species_2",
        "species_3",
        "species_0",
        "species_4",
    ]
    assert plans["txt"].class_names == ["1", "2", "3", "0", "4"]
    config = list_config(
        inaturalist["root"],
        inaturalist["train_json"],
        inaturalist["val_json"],
        label_order="frequency",
    )
    train, test = open_source(config, "train"), open_source(config, "test")
    first_of_class_1 = train.paths.index(
        str(inaturalist["root"] / "train_val2018/Plantae/1/train0000.jpg")
    )
    assert train.labels[first_of_class_1] == 0
    assert test.labels.tolist() == [
        3,
        0,
        1,
        2,
        4,
    ]  # val lists one image of species 0..4, remapped with the train map


def test_listed_order_keeps_the_labels(inaturalist):
    plan = plan_subset(
        list_config(inaturalist["root"], inaturalist["train_json"], inaturalist["val_json"])
    )
    assert plan.class_counts == TRAIN_COUNTS


def test_places_lists_with_index_ranges_and_count_thresholds(tmp_path):
    files = write_places_lt_dataset(tmp_path, [1, 4, 2, 3])
    by_index = list_config(
        files["root"],
        files["train_list"],
        files["test_list"],
        label_order="frequency",
        groups=GroupsConfig(by="index", boundaries=(1, 3)),
    )
    plan = plan_subset(by_index)
    assert plan.class_counts == [4, 3, 2, 1]
    assert plan.groups == {"many": [0], "medium": [1, 2], "few": [3]}
    by_count = by_index.model_copy(
        update={"groups": GroupsConfig(by="count", many_above=3, few_below=2)}
    )
    assert plan_subset(by_count).groups == {"many": [0], "medium": [1, 2], "few": [3]}
    assert open_source(by_index, "test").paths[0].endswith("val_256/Places365_val_00000000.jpg")


def test_a_training_list_without_some_class_is_a_clear_error(tmp_path):
    (tmp_path / "train.txt").write_text("a.jpg 0\nb.jpg 2\n")
    config = list_config(
        tmp_path, tmp_path / "train.txt", tmp_path / "train.txt", label_order="frequency"
    )
    with pytest.raises(DataError, match=r"no images of classes \[1\]"):
        plan_subset(config)


def test_verify_lists_the_missing_and_the_corrupt_image_and_records_the_checksum(
    inaturalist, tmp_path, capsys
):
    import shutil

    root = tmp_path / "images"
    shutil.copytree(inaturalist["root"], root)
    (root / "train_val2018/Plantae/1/train0003.jpg").unlink()
    (root / "train_val2018/Plantae/2/train0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    report = verify_list(inaturalist["train_txt"], root)
    assert report["images"] == 15 and report["ok"] == 13 and report["classes"] == 5
    assert [item["path"] for item in report["missing"]] == [
        str(root / "train_val2018/Plantae/1/train0003.jpg")
    ]
    assert [item["path"] for item in report["corrupt"]] == [
        str(root / "train_val2018/Plantae/2/train0001.jpg")
    ]
    assert report["unreadable"] == []
    assert (
        report["list_sha256"] == hashlib.sha256(inaturalist["train_txt"].read_bytes()).hexdigest()
    )

    saved = tmp_path / "verify.json"
    status = main(
        [
            "data",
            "verify",
            str(inaturalist["train_json"]),
            "--root",
            str(root),
            "--report",
            str(saved),
        ]
    )
    assert status == 1
    printed = capsys.readouterr().out
    assert "1 missing" in printed and "1 corrupt" in printed and "train0003.jpg" in printed
    assert json.loads(saved.read_text())[0]["missing"][0]["path"].endswith(
        "Plantae/1/train0003.jpg"
    )
    assert main(["data", "verify", str(inaturalist["val_txt"]), "--root", str(root)]) == 0


def test_a_verify_report_that_cannot_be_written_keeps_the_old_one(
    inaturalist, tmp_path, capsys, monkeypatch
):
    """A full disk while the report is written: one error line, the previous report intact,
    no temporary file left (the write is synced before it replaces the old file)."""
    import errno

    import tailfuse.files

    saved = tmp_path / "verify.json"
    saved.write_text('[{"old": true}]')

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tailfuse.files.os, "fsync", full_disk)
    command = ["data", "verify", str(inaturalist["val_txt"]), "--root", str(inaturalist["root"])]
    assert main([*command, "--report", str(saved)]) == 2
    error = capsys.readouterr().err
    assert error == f"error: cannot write {saved}: No space left on device\n"
    assert saved.read_text() == '[{"old": true}]'
    assert [path.name for path in tmp_path.iterdir()] == ["verify.json"]


def test_streamed_crops_depend_on_the_draw_not_on_workers_or_epoch_loaders(tmp_path):
    """Per-image augmentation seeds: 0 workers and 2 persistent workers give the same batches."""
    import torch

    from tailfuse.config import load_recipe
    from tailfuse.data.prepare import load_data
    from tailfuse.data.randomness import EpochRandomness
    from tailfuse.engine.runtime import make_runtime
    from tailfuse.engine.session import TrainingSession

    from ..fakes import write_list_file_dataset

    files = write_list_file_dataset(tmp_path)
    batches = {}
    for workers in (0, 2):
        config = load_recipe(
            "imagenet_lt_ffn_ce_stage1",
            [
                f"data.root={files['root']}",
                f"data.train_list={files['train_list']}",
                f"data.test_list={files['test_list']}",
                f"data.num_workers={workers}",
                "data.augment.crop_size=32",
                "data.augment.resize=36",
                "model.backbone=resnet32",
                "train.batch_size=4",
                "train.precision=fp32",
            ],
        )
        runtime = make_runtime(config.train)
        session = TrainingSession(config, load_data(config.data, runtime.device), runtime)
        for epoch in (0, 1):  # the second epoch reuses the persistent workers
            randomness = EpochRandomness(0, epoch)
            order = session.samplers["main"].epoch_indices(
                randomness.torch_generator("sampler:main")
            )
            batches[workers, epoch] = [
                b.images for b in session._branch_batches(order, 2, randomness, "main")
            ]
    for epoch in (0, 1):
        for zero, two in zip(batches[0, epoch], batches[2, epoch], strict=True):
            assert torch.equal(zero, two)
    assert not torch.equal(batches[0, 0][0], batches[0, 1][0])
