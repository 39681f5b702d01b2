"""CIFAR-10-GLT builder, GLT annotation files and the GLT data plan (spec glt_ifl §1.3, §7.2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailfuse.config import DataConfig
from tailfuse.data.glt import (
    CifarGltOptions,
    apply_attribute_transforms,
    build_cifar_glt,
    read_glt_annotation,
    write_cifar_glt,
)
from tailfuse.data.prepare import load_data, plan_subset
from tailfuse.errors import DataError

from ..fakes import write_image_folder

SMALL = CifarGltOptions(
    rho=10, gbl_per_rank=3, cbl_test_per_class=10, cbl_val_per_class=10, test_lt_pool_per_class=10
)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("folder"), [60, 70, 65, 80], [40] * 4)


def _per_class_and_rank(split, num_classes=4):
    table = np.zeros((num_classes, 3), dtype=int)
    np.add.at(table, (split.labels, split.attributes), 1)
    return table.tolist()


def test_small_build_has_exact_split_sizes(image_folder):
    built = build_cifar_glt(image_folder, SMALL)
    glt, cbl = built["glt"].splits, built["cbl"].splits
    # pools floor(60 * 10^(-c/3)) = 60, 27, 12, 6 -> 7:2:1 floors 42/12/6, 18/5/2,
    # 8/2/1, 4/1/0 = 101 images
    pool = np.array(_per_class_and_rank(glt["train"])) + np.array(_per_class_and_rank(glt["val"]))
    assert pool.tolist() == [[42, 12, 6], [18, 5, 2], [8, 2, 1], [4, 1, 0]]
    assert len(glt["val"]) == 10 and len(glt["train"]) == 91  # 10 % i.i.d. val, removed from train
    # Train-CBL: n = 101 // 4 = 25 -> 17/5/2 per class; val 10 per class at 7:2:1
    assert _per_class_and_rank(cbl["train"]) == [[17, 5, 2]] * 4
    assert _per_class_and_rank(cbl["val"]) == [[7, 2, 1]] * 4
    assert _per_class_and_rank(glt["test_bbl"]) == [[3, 3, 3]] * 4
    assert _per_class_and_rank(glt["test_bl"]) == [[7, 2, 1]] * 4
    # Test-GLT from the next 10 test images: floor(10 * 10^(-c/3)) = 10, 4, 2, 1 at 7:2:1
    assert _per_class_and_rank(glt["test_lt"]) == [[7, 2, 1], [2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert set(built["glt"].frequency_groups()) == {"many", "medium", "few"}


def test_splits_are_disjoint_and_both_files_share_the_test_sets(image_folder):
    built = build_cifar_glt(image_folder, SMALL)
    for annotation in built.values():
        seen = set()
        for split in annotation.splits.values():
            assert not seen & set(split.paths)
            seen |= set(split.paths)
    for name in ("test_bl", "test_bbl"):
        assert built["glt"].splits[name].paths == built["cbl"].splits[name].paths
    assert all("/test/" in p for p in built["glt"].splits["test_bbl"].paths)
    assert all("/train/" in p for p in built["cbl"].splits["train"].paths)
    assert "test_lt" not in built["cbl"].splits


def test_attribute_values_cyclic_and_aligned(image_folder):
    cyclic = build_cifar_glt(image_folder, SMALL)["glt"].splits["test_bbl"]
    tint = cyclic.transforms["tint"]
    assert np.array_equal(
        tint, (cyclic.labels + cyclic.attributes) % 3
    )  # rank r of class c -> tint (c + r) mod 3
    aligned = build_cifar_glt(
        image_folder,
        CifarGltOptions(**{**SMALL.__dict__, "attribute": "rotation", "mode": "aligned"}),
    )
    split = aligned["glt"].splits["test_bbl"]
    assert np.array_equal(split.transforms["rotation"], 90 * split.attributes)


def test_same_seed_same_build_other_seed_other_draw(image_folder):
    first, again = build_cifar_glt(image_folder, SMALL), build_cifar_glt(image_folder, SMALL)
    assert first["glt"].splits["train"].paths == again["glt"].splits["train"].paths
    other = build_cifar_glt(image_folder, CifarGltOptions(**{**SMALL.__dict__, "seed": 1}))
    assert other["glt"].splits["train"].paths != first["glt"].splits["train"].paths


def test_tint_and_rotation_transforms_are_exact():
    images = np.full((2, 2, 2, 3), 100, dtype=np.uint8)
    tinted = apply_attribute_transforms(images, {"tint": np.array([0, -1])}, 0.4)
    assert tinted[0, 0, 0].tolist() == [162, 60, 60]  # 0.6*100 + 0.4*255, 0.6*100, 0.6*100
    assert tinted[1].tolist() == images[1].tolist()
    pattern = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    rotated = apply_attribute_transforms(pattern, {"rotation": np.array([90])})
    assert rotated[0].tolist() == np.rot90(pattern[0], 1, axes=(0, 1)).tolist()


def test_written_files_read_back_and_plan_as_the_built_source(image_folder, tmp_path):
    written = write_cifar_glt(image_folder, tmp_path, SMALL)
    assert written["glt"].name.endswith("_intra_lt_inter_lt.json") and written["cbl"].name.endswith(
        "_intra_lt_inter_bl.json"
    )
    content = json.loads(written["glt"].read_text())
    assert set(content) >= {"cat2id", "id2cat", "train", "val", "test_lt", "test_bl", "test_bbl"}
    assert set(content["train"]) == {"label", "frequency", "attribute", "tint"}
    assert all(not key.startswith("/") for key in content["train"]["label"])  # relative to the root
    annotation = read_glt_annotation(written["cbl"], image_folder)
    assert annotation.train_kind() == "cbl" and len(annotation.splits["train"]) == 96

    options = {
        k: v
        for k, v in SMALL.__dict__.items()
        if k not in ("attribute", "mode", "frequency_boundaries", "max_per_class")
    }
    built = plan_subset(DataConfig(source="cifar10_glt", root=str(image_folder), glt=options))
    from_file = plan_subset(
        DataConfig(
            source="glt",
            root=str(image_folder),
            annotation=str(written["glt"]),
            annotation_cbl=str(written["cbl"]),
        )
    )
    assert built.subset_checksum == from_file.subset_checksum
    assert built.class_counts == from_file.class_counts and sum(built.class_counts) == 91
    assert (
        list(built.named_tests) == ["test_bl", "test_bbl", "test_lt"]
        and built.glt_train_set == "glt"
    )
    assert built.summary()["glt_test_sizes"] == {"test_bl": 40, "test_bbl": 36, "test_lt": 13}


def test_loaded_test_sets_carry_attributes_and_tinted_pixels(image_folder):
    options = {
        k: v
        for k, v in SMALL.__dict__.items()
        if k not in ("attribute", "mode", "frequency_boundaries", "max_per_class")
    }
    config = DataConfig(
        source="cifar10_glt", root=str(image_folder), glt={**options, "train_set": "cbl"}
    )
    data = load_data(config)
    assert data.plan.glt_train_set == "cbl" and data.test is data.named_tests["test_bbl"]
    assert (
        data.test.attributes.tolist()
        == data.plan.sources["test"].attributes[data.plan.named_tests["test_bbl"]].tolist()
    )
    assert data.validation is not None and len(data.validation) == 40
    untinted = DataConfig(
        source="cifar10_glt",
        root=str(image_folder),
        glt={**options, "train_set": "cbl", "tint_strength": 0.0},
    )
    difference = load_data(untinted).test.images.float() - data.test.images.float()
    assert difference.abs().max() > 20  # the tint changed the pixels


def test_bad_annotations_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_glt_annotation(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "id2cat": {"0": "a"},
                "train": {"label": {"x.jpg": 3}, "frequency": {"x.jpg": 0}},
                "test_bl": {"label": {}, "frequency": {}, "attribute": {}},
            }
        )
    )
    with pytest.raises(DataError, match="labels outside"):
        read_glt_annotation(bad)
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        read_glt_annotation(bad)


def test_mscoco_glt_files_map_patch_ids_to_image_paths(tmp_path):
    """The authors' MSCOCO-GLT files key every map by patch id; a ``path`` map names the image."""
    content = {
        "id2cat": {"0": "person", "1": "dog"},
        "train": {
            "label": {"101": 0, "102": 1},
            "frequency": {"101": 0, "102": 2},
            "path": {"101": "./data/coco_lt/images/101.jpg", "102": "/elsewhere/102.jpg"},
        },
        "test_bl": {
            "label": {"201": 1},
            "frequency": {"201": 2},
            "attribute": {"201": 0},
            "path": {"201": "crops/201.jpg"},
        },
    }
    annotation_file = tmp_path / "coco_intra_lt_inter_lt.json"
    annotation_file.write_text(json.dumps(content))
    root = tmp_path / "root"
    annotation = read_glt_annotation(annotation_file, root, {"./data/coco_lt/": "/mnt/coco/"})
    assert annotation.splits["train"].paths == ["/mnt/coco/images/101.jpg", "/elsewhere/102.jpg"]
    assert annotation.splits["train"].labels.tolist() == [0, 1]
    assert annotation.splits["test_bl"].paths == [str(root / "crops" / "201.jpg")]
    del content["test_bl"]["path"]["201"]
    annotation_file.write_text(json.dumps(content))
    with pytest.raises(DataError, match="'test_bl' has no path for image '201'"):
        read_glt_annotation(annotation_file, root)


IGNORED_BY_GLT = [
    "data.profile=step",
    "data.imbalance_factor=50",
    "data.max_per_class=40",
    "data.validation_per_class=5",
    "data.test_per_class=10",
    "data.groups={by: index, boundaries: [3, 7]}",
    "data.subset_seed=3",
    "data.class_order=frequency",
    "data.label_order=frequency",
]


@pytest.mark.parametrize("recipe", ["cifar10_glt_quick_baseline", "imagenet_glt_baseline"])
@pytest.mark.parametrize("override", IGNORED_BY_GLT)
def test_glt_sources_refuse_the_long_tail_keys_they_ignore(recipe, override):
    from tailfuse.config import load_recipe
    from tailfuse.errors import ConfigError

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"does not use {key}="):
        load_recipe(recipe, [override])
    assert (
        load_recipe(recipe, ["data.profile=none"]).data.profile == "none"
    )  # "no profile" is what GLT does


def test_cifar10_glt_on_the_real_images_matches_the_spec_sizes(cifar10_jpeg_root):
    built = build_cifar_glt(cifar10_jpeg_root)  # rho 100, tint, cyclic: spec glt_ifl §7.2 items 4-6
    glt, cbl = built["glt"].splits, built["cbl"].splits
    pool = np.bincount(np.concatenate([glt["train"].labels, glt["val"].labels]), minlength=10)
    assert pool.sum() == 12394 and len(glt["val"]) == 1239 and len(glt["train"]) == 11155
    assert pool[-1] == 35 + 10 + 5
    assert len(cbl["train"]) == 12370 and len(cbl["val"]) == 300
    assert len(glt["test_bbl"]) == 3000 and len(glt["test_bl"]) == 3000
    assert np.bincount(glt["test_bl"].attributes).tolist() == [2100, 600, 300]
