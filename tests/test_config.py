"""Recipes: loading, inheritance, overrides, and one clear error per mistake."""

from __future__ import annotations

import pytest

import tailfuse  # noqa: F401  (registers methods)
from tailfuse.config import apply_overrides, builtin_recipe_dir, load_recipe, read_recipe_dict
from tailfuse.errors import ConfigError


def test_every_shipped_recipe_validates():
    names = [path.stem for path in builtin_recipe_dir().glob("[!_]*.yaml")]
    assert len(names) >= 7
    for name in names:
        config = load_recipe(name)
        assert config.name == name


def test_stage1_recipe_matches_the_spec_protocol():
    config = load_recipe("cifar100_lt_if100_stage1")
    assert config.data.source == "cifar100" and config.data.imbalance_factor == 100
    assert config.model.backbone == "resnet32"
    assert config.method.name == "erm" and config.method.mixup_alpha == 1.0
    assert (config.train.epochs, config.train.batch_size) == (200, 128)
    assert (config.optimizer.lr, config.optimizer.weight_decay, config.optimizer.momentum) == (
        0.1,
        2e-4,
        0.9,
    )
    assert config.schedule.name == "multistep" and config.schedule.milestones == [160, 180]
    assert config.schedule.warmup_epochs == 5
    assert config.data.groups.boundaries == (36, 71)


def test_overrides_parse_yaml_values_and_nested_keys():
    recipe = apply_overrides(
        {"train": {"epochs": 3}},
        ["train.epochs=5", "optimizer.lr=1e-3", "schedule.milestones=[1,2]"],
    )
    assert recipe == {
        "train": {"epochs": 5},
        "optimizer": {"lr": 1e-3},
        "schedule": {"milestones": [1, 2]},
    }


def test_base_inheritance_merges_sections(tmp_path):
    (tmp_path / "parent.yaml").write_text("train: {epochs: 7, batch_size: 64}\nname: parent\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nname: child\ntrain: {epochs: 3}\n")
    recipe = read_recipe_dict(tmp_path / "child.yaml")
    assert recipe["train"] == {"epochs": 3, "batch_size": 64} and recipe["name"] == "child"


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"data\.imbalance_factr: unknown key"):
        load_recipe("cifar10_lt_quick", ["data.imbalance_factr=10"])


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        load_recipe("cifar10_lt_quick", ["optimizer.lr=-1"])
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_recipe("cifar10_lt_quick", ["train.precision=fp8"])


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*erm"):
        load_recipe("cifar10_lt_quick", ["method={name: nope}"])


def test_method_options_are_validated_by_the_method_schema():
    with pytest.raises(ConfigError, match=r"method\.mixup_alpah: unknown key"):
        load_recipe("cifar10_lt_quick", ["method.mixup_alpah=0.2"])


def test_missing_recipe_is_a_clear_error():
    with pytest.raises(ConfigError, match="not found"):
        load_recipe("no_such_recipe")


def test_index_groups_need_boundaries():
    with pytest.raises(ConfigError, match="boundaries"):
        load_recipe("cifar10_lt_quick", ["data.groups.boundaries=null"])


def test_changing_a_method_name_starts_its_options_afresh(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "method: {name: dr, sampler: class_balanced, shift_bn: true}\n"
    )
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmethod: {name: crt}\n")
    config = load_recipe(tmp_path / "child.yaml")
    assert (
        config.method.sampler == "class_aware" and config.method.shift_bn is False
    )  # crt's own defaults
    config = load_recipe(tmp_path / "parent.yaml", ["method.name=crt"])
    assert config.method.sampler == "class_aware"
    config = load_recipe(tmp_path / "parent.yaml", ["method.h2t.ratio=0.25"])
    assert config.method.sampler == "class_balanced" and config.method.h2t.ratio == 0.25
