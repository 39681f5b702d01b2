"""ImageNet-GLT and MSCOCO-GLT builders on tiny synthetic inputs in the published
formats (spec §1.3, §1.4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tailfuse.config import load_recipe
from tailfuse.data import glt_builders
from tailfuse.data.glt import read_glt_annotation
from tailfuse.data.glt_builders import (
    CocoGltSizes,
    CocoObject,
    ImagenetGltSizes,
    attribute_frequency_labels,
    build_imagenet_glt_files,
    build_mscoco_glt_files,
    crop_box,
    greedy_balanced_selection,
    imagenet_glt_splits,
    merge_clusters,
)
from tailfuse.data.prepare import plan_subset
from tailfuse.errors import DataError

from ..fakes import write_image_folder

SMALL_IMAGENET = ImagenetGltSizes(
    gbl_per_attribute=3, cbl_test=(4, 2, 1), cbl_pool=10, test_lt_per_class=2, val_per_class=2
)


def test_merge_clusters_ranks_by_size_and_merges_pairs():
    # cluster sizes: 0 -> 1, 1 -> 5, 2 -> 2, 3 -> 4, 4 -> 3, 5 -> 6 ; ranking 5,1,3,4,2,0
    ids = np.array([0] + [1] * 5 + [2] * 2 + [3] * 4 + [4] * 3 + [5] * 6)
    attributes = merge_clusters(ids)
    assert {int(c): int(attributes[ids == c][0]) for c in range(6)} == {
        5: 0,
        1: 0,
        3: 1,
        4: 1,
        2: 2,
        0: 2,
    }


def test_equal_cluster_sizes_rank_by_first_appearance():
    # all six clusters hold 2 images; in listing order they first appear as 4, 1, 0, 2, 3, 5
    # (the authors' dict of clusters in insertion order, then a stable sort by size)
    ids = np.array([4, 1, 4, 0, 2, 1, 3, 0, 5, 2, 3, 5])
    attributes = merge_clusters(ids)
    assert {int(c): int(attributes[ids == c][0]) for c in range(6)} == {
        4: 0,
        1: 0,
        0: 1,
        2: 1,
        3: 2,
        5: 2,
    }


def test_attribute_lists_hold_the_larger_cluster_first():
    """Spec §1.3 item 4 as the authors build it: attribute a = the images of the cluster ranked
    2a (listing order), then those of the cluster ranked 2a + 1, so the tests, carved from the
    list fronts, come from the larger cluster of each merged pair."""
    sizes = {3: 30, 0: 26, 5: 20, 1: 18, 2: 14, 4: 12}  # ranks 0..5: clusters 3, 0, 5, 1, 2, 4
    ids = np.concatenate([np.full(count, cluster) for cluster, count in sizes.items()])
    ids = ids[np.random.default_rng(0).permutation(len(ids))]  # clusters interleaved in the listing
    paths = [f"/a/{i:03d}.JPEG" for i in range(len(ids))]
    in_listing = {c: [p for p, i in zip(paths, ids.tolist(), strict=True) if i == c] for c in sizes}
    glt = imagenet_glt_splits(["a"], [paths], [ids], [20], SMALL_IMAGENET)["glt"]
    gbl, cbl = glt.splits["test_bbl"], glt.splits["test_bl"]
    # Test-GBL: s = min(3, 56 // 4, 38 // 4, 26 // 4) = 3 per attribute, from clusters 3, 5, 2
    assert gbl.paths == in_listing[3][:3] + in_listing[5][:3] + in_listing[2][:3]
    assert gbl.attributes.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # Test-CBL 4 / 2 / 1: the next images of the same (larger) clusters
    assert cbl.paths == in_listing[3][3:7] + in_listing[5][3:5] + in_listing[2][3:4]
    # Train-GLT pool, profile 20 -> 14 / 4 / 2, still the larger clusters' next images
    pool = set(glt.splits["train"].paths + glt.splits["val"].paths + glt.splits["test_lt"].paths)
    assert pool == set(in_listing[3][7:21] + in_listing[5][5:9] + in_listing[2][4:6])
    with pytest.raises(DataError, match="7 clusters"):
        imagenet_glt_splits(
            ["a"], [paths + ["/a/x.JPEG"]], [np.append(ids, 6)], [20], SMALL_IMAGENET
        )


def test_imagenet_glt_split_sizes_follow_the_procedure():
    def images(prefix, cluster_sizes):
        paths = [f"/{prefix}/{i}.JPEG" for i in range(sum(cluster_sizes))]
        return paths, np.repeat(np.arange(6), cluster_sizes)

    # six clusters, listed largest first; merged pairs give attributes
    # of 30 / 20 / 10 and 50 / 30 / 20
    small_paths, small_attrs = images(
        "b", [16, 14, 11, 9, 6, 4]
    )  # listed first, but smaller: class id 1
    large_paths, large_attrs = images("a", [26, 24, 16, 14, 11, 9])
    built = imagenet_glt_splits(
        ["b", "a"], [small_paths, large_paths], [small_attrs, large_attrs], [20, 8], SMALL_IMAGENET
    )
    glt, cbl = built["glt"], built["cbl"]
    assert glt.class_names == ["a", "b"]
    # Test-GBL: class a min(3, 50//4, 30//4, 20//4) = 3 per attribute; class b min(3, 7, 5, 2) = 2
    assert np.bincount(glt.splits["test_bbl"].labels).tolist() == [9, 6]
    assert glt.splits["test_bbl"].paths[:3] == [
        "/a/0.JPEG",
        "/a/1.JPEG",
        "/a/2.JPEG",
    ]  # the list front
    assert len(glt.splits["test_bl"]) == 14  # 4 + 2 + 1 per class
    # pool: profile 20 -> 14/4/2, profile 8 -> 5/1/0 = 26; Test-GLT 2 x 2,
    # val 2 x 2, the rest trains
    assert (len(glt.splits["test_lt"]), len(glt.splits["val"]), len(glt.splits["train"])) == (
        4,
        4,
        18,
    )
    # Train-CBL: min(10, available) = 10 -> 7/2/1, val floor(2 * .7/.2/.1) = 1/0/0 -> 9 per class
    assert (
        np.bincount(cbl.splits["train"].labels).tolist() == [9, 9] and len(cbl.splits["val"]) == 2
    )
    assert glt.splits["test_bl"].paths == cbl.splits["test_bl"].paths
    everything = [p for split in glt.splits.values() for p in split.paths]
    assert len(everything) == len(set(everything))
    assert glt.frequency_groups() == {"many": [0], "medium": [1], "few": []}
    with pytest.raises(DataError, match="non-increasing"):
        imagenet_glt_splits(
            ["b", "a"],
            [small_paths, large_paths],
            [small_attrs, large_attrs],
            [8, 20],
            SMALL_IMAGENET,
        )


def test_build_imagenet_glt_end_to_end_with_user_weights(tmp_path, monkeypatch):
    import torch
    import torchvision

    train_dir = write_image_folder(tmp_path / "ilsvrc", [60, 48, 40], [0, 0, 0])
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    (tmp_path / "profile.json").write_text(json.dumps([20, 12, 8]))
    extracted = []  # images per feature extraction: one class at a time, never all 1.28 M at once
    real_extract = glt_builders.extract_features

    def extract_one_call(paths, *args, **kwargs):
        extracted.append(len(paths))
        return real_extract(paths, *args, **kwargs)

    monkeypatch.setattr(glt_builders, "extract_features", extract_one_call)
    written = build_imagenet_glt_files(
        train_dir / "train",
        weights,
        tmp_path / "profile.json",
        tmp_path / "out",
        sizes=SMALL_IMAGENET,
        architecture="resnet18",
        resize=32,
        crop=32,
        batch_size=32,
        num_workers=0,
        device="cpu",
    )
    assert extracted == [60, 48, 40]
    assert sorted(p.name for p in written.values()) == [
        "imagenet_sup_intra_lt_inter_bl.json",
        "imagenet_sup_intra_lt_inter_lt.json",
    ]
    glt = read_glt_annotation(written["glt"])
    assert all(
        path.startswith(str(tmp_path)) for path in glt.splits["train"].paths
    )  # absolute keys
    assert len(glt.splits["test_lt"]) == 6 and len(glt.splits["val"]) == 6
    assert set(glt.splits["test_bbl"].attributes.tolist()) <= {0, 1, 2}
    # the ImageNet-GLT recipe plans from these files (Train-CBL through annotation_cbl)
    recipe = load_recipe(
        "imagenet_glt_baseline",
        [
            f"data.annotation={written['glt']}",
            f"data.annotation_cbl={written['cbl']}",
            "data.glt.train_set=cbl",
        ],
    )
    plan = plan_subset(recipe.data)
    assert plan.glt_train_set == "cbl" and len(set(plan.class_counts)) == 1
    with pytest.raises(DataError, match="do not exist"):
        build_imagenet_glt_files(
            train_dir / "train", tmp_path / "missing.pth", [20, 12, 8], tmp_path / "out2"
        )


def test_greedy_selection_keeps_the_attribute_histogram_flat():
    vectors = np.array([[1, 0], [0, 1], [1, 0], [1, 1], [0, 0]])
    # first [1,1] (already flat), then the first of the tied [1,0]/[0,1]; [0,0] is never a candidate
    assert greedy_balanced_selection(vectors, 2) == [3, 0]
    assert 4 not in greedy_balanced_selection(vectors, 5)


def test_crop_box_grows_clips_and_squares():
    # w 50 < 100: grow 50 px; h 200: grow 20 % (40 px); clipped to 300 x 400; padded to 260 x 260
    assert crop_box((10, 20, 50, 200), 300, 400) == (-75, 0, 185, 260)


def test_attribute_frequency_labels_split_scores_into_tertiles():
    objects = [
        CocoObject(i, "", (0, 0, 1, 1), "x", np.array(v, dtype=bool))
        for i, v in enumerate([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0], [1, 1, 0]])
    ]
    labels = np.array([0, 0, 0, 1, 1, 0])
    counts = np.array([[3, 1, 0], [0, 0, 2]])
    # scores .75, .25, 0, 1, 0, .5 -> sorted 1, .75, .5, .25, 0, 0: > .5 head, > 0 medium, rest tail
    assert attribute_frequency_labels(objects, labels, counts).tolist() == [0, 1, 2, 0, 2, 1]


def _coco_fixture(root):
    import joblib

    rng = np.random.default_rng(0)
    images_dir = root / "train2014"
    images_dir.mkdir(parents=True)
    counts = {"person": 30, "dog": 20, "cat": 14}
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(counts)]
    images, annotations, vectors, patch_to_annotation = [], [], {}, {}
    annotation_id = 100
    for category_id, (_name, count) in enumerate(counts.items(), start=1):
        for _ in range(count):
            image_id = annotation_id
            file_name = f"COCO_train2014_{image_id:012d}.jpg"
            Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(
                images_dir / file_name
            )
            images.append({"id": image_id, "file_name": file_name, "width": 160, "height": 120})
            annotations.append(
                {
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [20, 10, 60, 40],
                }
            )
            scores = rng.random(6)
            scores[rng.integers(6)] = 0.9  # at least one attribute present
            vectors[annotation_id + 5000] = scores
            patch_to_annotation[annotation_id + 5000] = annotation_id
            annotation_id += 1
    (root / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    joblib.dump(
        {"ann_vecs": vectors, "patch_id_to_ann_id": patch_to_annotation},
        root / "cocottributes_py3.jbl",
    )


def test_build_mscoco_glt_end_to_end(tmp_path):
    _coco_fixture(tmp_path / "coco")
    sizes = CocoGltSizes(
        gbl_per_class=(4, 2),
        cbl_test_per_class=(3, 2),
        test_lt_per_class=2,
        val_per_class=(2, 1),
        tail_ratio=0.5,
        frequency_boundaries=(1, 2),
    )
    written = build_mscoco_glt_files(
        tmp_path / "coco" / "cocottributes_py3.jbl",
        [tmp_path / "coco" / "instances_train2014.json"],
        [tmp_path / "coco" / "train2014"],
        tmp_path / "out",
        sizes=sizes,
    )
    glt, cbl = read_glt_annotation(written["glt"]), read_glt_annotation(written["cbl"])
    assert glt.class_names == ["person", "dog", "cat"]
    # LT: after tests 23 / 13 / 7 remain; targets min(floor(23 * 0.5^(i/2)), m_i) = 23, 13, 7 -> 43
    assert (len(glt.splits["test_lt"]), len(glt.splits["val"]), len(glt.splits["train"])) == (
        6,
        6,
        31,
    )
    assert np.bincount(glt.splits["test_bbl"].labels).tolist() == [4, 4, 4]
    # BL: after tests 26 / 16 / 10 remain -> 10 per class, val 1 per class
    assert len(cbl.splits["train"]) == 27 and len(cbl.splits["val"]) == 3
    assert np.bincount(cbl.splits["test_bl"].labels).tolist() == [2, 2, 2]

    with Image.open(glt.splits["train"].paths[0]) as crop:
        assert (
            crop.width == crop.height == 130
        )  # 60 x 40 box grown by 50 px a side, clipped to 130 x 100, squared
    recipe = load_recipe(
        "mscoco_glt_ifl",
        [f"data.annotation={written['glt']}", f"data.annotation_cbl={written['cbl']}"],
    )
    assert plan_subset(recipe.data).glt_train_set == "glt"


@pytest.mark.parametrize("workers", [0, 1])
def test_feature_extraction_names_an_undecodable_image_in_one_line(tmp_path, workers):
    import torch

    from tailfuse.data.glt_builders import extract_features

    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    features = extract_features([str(good)], model, "cpu", 36, 32, 2, workers)
    assert features.shape == (1, 3) and features[0, 0] == pytest.approx(200 / 255, abs=1e-2)
    with pytest.raises(DataError) as raised:
        extract_features([str(good), str(broken)], model, "cpu", 36, 32, 2, workers)
    message = str(raised.value)
    assert f"cannot decode image {broken}" in message and "\n" not in message


def test_clustering_without_scikit_learn_names_the_extra(monkeypatch):
    import sys

    from tailfuse.data.glt_builders import cluster_images

    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)  # as if not installed
    with pytest.raises(DataError, match=r"needs scikit-learn: pip install 'tailfuse\[glt\]'"):
        cluster_images(np.zeros((8, 4), dtype=np.float32))
