"""Your own ImageFolder tree through the CLI: the README's "Your own dataset" commands, end to end.

The tree (tests/own_data.py) is imbalanced with class counts out of alphabetical order and
40x40 images; expected orders, groups and counts are written down in own_data.py by hand.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from tailfuse.cli import main
from tailfuse.config import load_recipe, read_recipe_dict
from tailfuse.data.longtail import stratified_split
from tailfuse.data.prepare import plan_subset

from .conftest import REPOSITORY
from .own_data import FREQUENCY_ORDER, GROUPS, TRAIN_COUNTS, make_image_folder, make_new_images

#: what the test adds to the README's two `train` commands, so they take seconds
FAST = [
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=32",
    "train.eval_every=0",
]


def readme_commands() -> list[list[str]]:
    """The `tailfuse ...` lines of the README's "Your own dataset" bash block, as argument lists."""
    text = (REPOSITORY / "README.md").read_text()
    section = text.split("## Your own dataset", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("tailfuse "):
            commands.append(shlex.split(line)[1:])
    return commands


def strict_json_load(text: str):
    """json.loads that refuses NaN/Infinity (which Python's json accepts by default)."""

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def photos(cifar10_jpeg_root, tmp_path_factory) -> Path:
    return make_image_folder(cifar10_jpeg_root, tmp_path_factory.mktemp("own") / "photos")


def test_readme_own_dataset_commands_end_to_end(
    photos, cifar10_jpeg_root, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "work"
    work.mkdir()
    (work / "photos").symlink_to(photos)
    new_images = make_new_images(cifar10_jpeg_root, work / "new_photos")
    monkeypatch.chdir(work)
    commands = readme_commands()
    assert [c[0] for c in commands] == [
        "init",
        "config",
        "train",
        "train",
        "predict",
        "export",
        "export",
        "plot",
    ]
    outputs = []
    for arguments in commands:
        if arguments[0] == "train":
            arguments = [*arguments[:2], *FAST, *arguments[2:]]  # after the recipe
        monkeypatch.setattr("sys.argv", ["tailfuse", *arguments])  # what the console script sees
        assert main(arguments) == 0, arguments
        captured = capsys.readouterr()
        outputs.append(captured)

    init, show, stage1, stage2, predicted, onnx, torchscript, tsne = outputs
    # init: classes from most to fewest training images, groups by count, the resizing named
    assert "ship 150, automobile 130, frog 60, deer 25, cat 12, truck 8" in init.out
    assert "groups: many 2; medium 2; few 2" in init.out and "resized to 32x32" in init.out
    assert (
        "init:\n  recipe: " + str(work / "my_photos.yaml") in show.out
    )  # resolved against the recipe folder
    # stage 1: resize warning, one line per epoch with group names though progress bars are on
    assert (
        "warning: resized 385 of 385 images to 32x32" in stage1.err and "40x40 (385)" in stage1.err
    )
    assert re.search(
        r"epoch 1: .* test \d+\.\d+ \(many \d+\.\d, medium \d+\.\d, few \d+\.\d\)", stage1.out
    )
    summary = json.loads((work / "runs/my_photos/data_summary.json").read_text())
    assert summary["class_names"] == FREQUENCY_ORDER
    assert summary["class_counts"] == [TRAIN_COUNTS[name] for name in FREQUENCY_ORDER]
    assert summary["groups"] == GROUPS and summary["test_size"] == 90
    # stage 2 reused that stage 1 (the overrides reached it, so it is the same run)
    assert "training my_photos" not in stage2.out
    stage2_config = load_recipe(work / "runs/my_photos_h2t/config.yaml")
    assert stage2_config.init.overrides[:2] == FAST[:2] and stage2_config.method.h2t.ratio == 0.25
    results = strict_json_load((work / "runs/my_photos_h2t/results.json").read_text())
    environment = results["environment"]
    assert environment["tailfuse"] == "0.1.0" and environment["device"] == "cpu"
    assert environment["precision"] == "fp32" and "my_photos_h2t.yaml" in environment["command"]
    assert environment["torch"].split(".")[0] == "2"
    for line in (work / "runs/my_photos_h2t/metrics.jsonl").read_text().splitlines():
        strict_json_load(line)
    assert (work / "runs/my_photos_h2t/reliability.png").stat().st_size > 5000
    # predict: every new image, 3 classes each, names of the tree, probabilities descending
    rows = list(csv.DictReader((work / "predictions.csv").open()))
    assert [row["path"] for row in rows] == sorted(
        str(Path("new_photos") / p.name) for p in new_images
    )
    for row in rows:
        probabilities = [float(row[f"probability_{k}"]) for k in (1, 2, 3)]
        assert (
            probabilities == sorted(probabilities, reverse=True)
            and 0 < sum(probabilities) <= 1.0 + 1e-6
        )
        assert {row["class_1"], row["class_2"], row["class_3"]} <= set(TRAIN_COUNTS)
    # export: parity printed and within 1e-4, preprocessing beside the model
    for captured, model_file in ((onnx, "my_photos.onnx"), (torchscript, "my_photos.pt")):
        difference = float(
            re.search(r"max \|logit difference\| (\S+) over 32 images", captured.out).group(1)
        )
        assert difference <= 1e-4
        metadata = json.loads((work / f"{model_file}.json").read_text())
        assert metadata["class_names"] == FREQUENCY_ORDER and metadata["image_size"] == 32
        assert metadata["mean"] == [0.4914, 0.4822, 0.4465] and metadata["std"] == [
            0.2023,
            0.1994,
            0.2010,
        ]
    assert (work / "runs/my_photos_h2t/tsne.png").stat().st_size > 5000 and "tsne.png" in tsne.out


def test_frequency_order_renumbers_every_split(photos):
    config = load_recipe("image_folder", [f"data.root={photos}"])
    plan = plan_subset(config.data)
    assert plan.class_names == FREQUENCY_ORDER and plan.groups == GROUPS
    train, test = plan.sources["train"], plan.sources["test"]
    for source in (train, test):  # a file's label is its folder's position in FREQUENCY_ORDER
        for path, label in zip(source.paths[::17], source.labels[::17], strict=True):
            assert FREQUENCY_ORDER[label] == Path(path).parent.name
    # name order is still available, and stays alphabetical
    by_name = plan_subset(
        load_recipe("image_folder", [f"data.root={photos}", "data.class_order=name"]).data
    )
    assert by_name.class_names == sorted(TRAIN_COUNTS) and by_name.class_counts == [
        130,
        12,
        25,
        60,
        150,
        8,
    ]


def test_ties_keep_folder_order_and_thresholds_are_configurable(photos, tmp_path):
    config = load_recipe(
        "image_folder",
        [f"data.root={photos}", "data.groups.many_above=59", "data.groups.few_below=13"],
    )
    plan = plan_subset(config.data)
    assert plan.groups == {"many": [0, 1, 2], "medium": [3], "few": [4, 5]}
    from tailfuse.data.longtail import frequency_order

    assert frequency_order([5, 9, 5, 9, 1]) == [1, 3, 0, 2, 4]


def test_a_val_folder_is_the_validation_set(cifar10_jpeg_root, tmp_path):
    root = make_image_folder(
        cifar10_jpeg_root, tmp_path / "with_val", test_per_class=3, validation_per_class=2
    )
    plan = plan_subset(load_recipe("image_folder", [f"data.root={root}"]).data)
    assert plan.summary()["validation_size"] == 12
    validation = plan.sources["validation"]
    assert all("/val/" in path for path in validation.paths)
    assert [FREQUENCY_ORDER[label] for label in validation.labels[::2]] == sorted(TRAIN_COUNTS)


def test_stratified_split_worked_example():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 3)
    train, validation, test = stratified_split(labels, 0.1, 0.2, seed=0)
    # per class round(n*0.2) test, round(n*0.1) validation: class 0: 2 + 1,
    # class 1: 1 + 0 (0.5 rounds to 0),
    # class 2: 1 (0.6) + 0 (0.3)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 1]
    assert np.bincount(labels[validation], minlength=3).tolist() == [1, 0, 0]
    assert np.bincount(labels[train], minlength=3).tolist() == [7, 4, 2]
    assert sorted([*train, *validation, *test]) == list(range(18))
    again = stratified_split(labels, 0.1, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, validation, test), again, strict=True))
    other = stratified_split(labels, 0.1, 0.2, seed=1)
    assert not np.array_equal(test, other[2])


def test_one_tree_is_split_and_the_split_recorded(photos):
    overrides = [
        f"data.root={photos / 'train'}",
        "data.split={validation: 0.1, test: 0.2, seed: 3}",
    ]
    plan = plan_subset(load_recipe("image_folder", overrides).data)
    split = plan.summary()["split"]
    # by hand, per class (150, 130, 60, 25, 12, 8): test 30+26+12+5+2+2 = 77,
    # validation 15+13+6+2+1+1 = 38
    assert split["sizes"] == {"train": 270, "validation": 38, "test": 77}
    assert split["seed"] == 3 and plan.class_counts == [105, 91, 42, 18, 9, 5]
    assert plan.groups == {"many": [0], "medium": [1, 2], "few": [3, 4, 5]}
    assert not set(plan.train_indices) & set(plan.test_indices)
    assert not set(plan.validation_indices) & (set(plan.test_indices) | set(plan.train_indices))
    same = plan_subset(load_recipe("image_folder", overrides).data).summary()["split"]
    assert same["test_checksum"] == split["test_checksum"]


def test_init_recipe_resolves_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "first.yaml").write_text("base: image_folder\nname: first\n")
    (folder / "second.yaml").write_text("base: image_folder_dr_h2t\ninit: {recipe: first.yaml}\n")
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    assert read_recipe_dict("recipes/second.yaml")["init"]["recipe"] == str(
        (folder / "first.yaml").resolve()
    )
    assert (
        read_recipe_dict("image_folder_dr_h2t")["init"]["recipe"] == "image_folder"
    )  # a shipped name stays


def test_init_refuses_to_replace_recipes(photos, tmp_path, capsys):
    assert main(["init", str(photos), "--out", str(tmp_path), "--name", "mine"]) == 0
    assert main(["init", str(photos), "--out", str(tmp_path), "--name", "mine"]) == 2
    assert "mine.yaml exists; pass --force" in capsys.readouterr().err


def test_a_stage1_run_directory_is_never_resumed_unasked(photos, tmp_path):
    from tailfuse.config import config_to_dict
    from tailfuse.engine.checkpoint import save_checkpoint
    from tailfuse.engine.stages import ensure_stage1_checkpoint, stage1_config
    from tailfuse.errors import CheckpointError

    stage2 = load_recipe(
        "image_folder_dr_h2t", [f"data.root={photos}", "train.epochs=4"], reach_earlier_stages=True
    )
    first = stage1_config(stage2, stage2.init)
    assert first.train.epochs == 4  # the stage-2 override reached stage 1
    last = tmp_path / "image_folder" / "checkpoints" / "last.pt"
    sections = {
        "session": {"model": {}, "method_modules": {}},
        "data": {"class_names": [], "class_counts": [], "subset_checksum": ""},
        "best": {},
    }  # what a complete checkpoint holds besides these
    save_checkpoint(
        {"config": config_to_dict(first), "epoch": 2, **sections}, last
    )  # stopped early
    with pytest.raises(
        CheckpointError,
        match=r"stopped at epoch 2 of 4; continue it with `tailfuse train "
        r".*config.yaml --out .* --resume`",
    ):
        ensure_stage1_checkpoint(stage2, stage2.init, tmp_path / "h2t")
    other = config_to_dict(first)
    other["train"]["seed"] = 5
    save_checkpoint({"config": other, "epoch": 4, **sections}, last)  # another run in its place
    with pytest.raises(
        CheckpointError, match="holds another run than the stage 1 this recipe needs .*train.seed"
    ):
        ensure_stage1_checkpoint(stage2, stage2.init, tmp_path / "h2t")
    save_checkpoint(
        {"config": config_to_dict(first), "epoch": 4, **sections}, last
    )  # the finished run: used as it is
    assert ensure_stage1_checkpoint(stage2, stage2.init, tmp_path / "h2t") == last


def test_validation_per_class_on_own_data_does_not_advise_balancing(photos):
    from tailfuse.errors import DataError

    with pytest.raises(
        DataError, match="put a val/ folder beside train/, or use data.split"
    ) as error:
        plan_subset(
            load_recipe("image_folder", [f"data.root={photos}", "data.validation_per_class=5"]).data
        )
    assert "max_per_class" not in str(error.value)
