"""Every multi-expert full-protocol recipe loads, validates and runs its first steps on the CPU.

Stand-in data as in test_recipes_full_protocol.py: CIFAR pickles of random images (n_max 200),
GLT annotation files and Places-LT list files in the published formats with tiny JPEGs, a
1-2 step budget and small crops. Stage 1 runs once per recipe family and is shared by its
stage-2 recipe. By default the CIFAR-100-LT IF 100 rows (every family), ImageNet-GLT
RIDE + IFL and Places-LT RIDE + H2T run; the other rows (the same code paths on other
factors, datasets and losses) are marked slow.
"""

from __future__ import annotations

import pytest
import torch

import tailfuse
from tailfuse.config import builtin_recipe_dir, load_recipe

from .fakes import write_cifar_pickles, write_glt_annotation_files, write_list_file_dataset

FAMILIES = ("ride", "ride_h2t", "reslt", "reslt_h2t", "bbn")
CIFAR = [
    f"{ds}_lt_if{f}_{family}"
    for ds in ("cifar100", "cifar10")
    for f in (200, 100, 50)
    for family in FAMILIES
]
GLT = [
    f"{bench}_{kind}"
    for bench in ("imagenet_glt", "mscoco_glt")
    for kind in ("ride", "ride_ifl", "tade", "tade_ifl", "bbn", "ride_stage2")
]
PLACES = ["places_lt_ride_stage1", "places_lt_ride_h2t"]
IMAGENET_LT = [
    f"imagenet_lt_{arch}_{family}"
    for arch in ("resnet50", "resnext50")
    for family in ("ride", "ride_h2t", "reslt", "reslt_h2t")
]
QUICK = [
    "cifar10_lt_quick_" + kind
    for kind in ("ride", "ride_h2t", "reslt", "reslt_h2t", "bbn", "tade", "tade_tta")
] + [
    f"cifar10_glt_quick_{kind}{alt}"
    for kind in ("ride", "ride_ifl", "tade", "tade_ifl")
    for alt in ("", "_alt")
]
BUDGET = [
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.progress=false",
    "data.max_per_class=200",
    "data.test_per_class=2",
    "train.batch_size=32",
    "train.precision=fp32",
]


def _slow_unless(condition: bool):
    return () if condition else (pytest.mark.slow,)


def test_every_multi_expert_recipe_is_shipped_and_validates():
    shipped = {path.stem for path in builtin_recipe_dir().glob("*.yaml")}
    for recipe in CIFAR + GLT + PLACES + IMAGENET_LT + QUICK:
        assert recipe in shipped, recipe
        load_recipe(recipe)


def test_recipe_settings_named_in_their_comments():
    ride = load_recipe("cifar100_lt_if100_ride")
    assert ride.model.backbone == "ride_resnet32" and ride.model.backbone_options == {
        "num_experts": 3,
        "reduce_dimension": False,
    }
    assert (
        ride.method.loss_options["drw_epoch"] == 160
        and ride.method.loss_options["diversity_factor"] == -0.2
    )
    ride_h2t = load_recipe("cifar100_lt_if100_ride_h2t")
    assert (
        ride_h2t.method.name == "dr"
        and ride_h2t.method.h2t.ratio == 0.25
        and ride_h2t.init.recipe == "cifar100_lt_if100_ride"
    )
    assert ride_h2t.optimizer.lr * ride_h2t.schedule.lr_factor == pytest.approx(0.02)
    reslt_h2t = load_recipe("cifar10_lt_if100_reslt_h2t")
    assert (reslt_h2t.method.beta, reslt_h2t.method.h2t.ratio, reslt_h2t.train.batch_size) == (
        0.3,
        0.4,
        512,
    )
    assert (
        reslt_h2t.method.groups == "cifar10"
        and load_recipe("cifar100_lt_if50_reslt").method.groups == "cifar100"
    )
    glt = load_recipe("imagenet_glt_ride_ifl")
    assert (
        glt.method.loss == "ride"
        and glt.method.center_loss == "cosine"
        and glt.schedule.milestones == [60, 80]
    )
    assert glt.model.backbone_options["reduce_dimension"] is True
    tade_ifl = load_recipe("mscoco_glt_tade_ifl")
    assert tade_ifl.method.loss == "tade" and tade_ifl.method.center_loss == "l2"
    assert load_recipe("imagenet_glt_bbn").method.alpha_epoch == "glt"
    imagenet_ride = load_recipe("imagenet_lt_resnet50_ride")
    assert imagenet_ride.model.backbone_options == {"num_experts": 3, "reduce_dimension": False}
    assert imagenet_ride.method.loss_options["drw_epoch"] == 144 == 0.8 * imagenet_ride.train.epochs
    imagenet_reslt = load_recipe("imagenet_lt_resnext50_reslt")
    assert imagenet_reslt.model.backbone == "ride_resnext50_32x4d"
    assert imagenet_reslt.model.backbone_options["reslt_block"] is True
    assert (imagenet_reslt.model.head, imagenet_reslt.model.reslt_eval_weight_power) == (
        "reslt_channel_split",
        0.7,
    )
    assert (imagenet_reslt.method.beta, imagenet_reslt.method.groups) == (0.99, "imagenet_lt")
    assert (imagenet_reslt.train.batch_size, imagenet_reslt.optimizer.lr) == (128, 0.05)
    assert imagenet_reslt.schedule.warmup_epochs == 5 and imagenet_reslt.train.epochs == 180
    imagenet_reslt_h2t = load_recipe("imagenet_lt_resnext50_reslt_h2t")
    assert (imagenet_reslt_h2t.method.beta, imagenet_reslt_h2t.method.h2t.ratio) == (0.3, 0.25)
    assert imagenet_reslt_h2t.init.recipe == "imagenet_lt_resnext50_reslt"


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_experts")
    return {
        "cifar10": write_cifar_pickles(root / "c10", "cifar10", 200, 2),
        "cifar100": write_cifar_pickles(root / "c100", "cifar100", 200, 2),
    }


def _stage1_overrides(config, budget, shared):
    quoted = f"{budget!r}".replace("'", '"')
    return [f"init.run_dir={shared / config.init.recipe}", f"init.overrides={quoted}"]


@pytest.mark.parametrize(
    "recipe",
    [pytest.param(r, marks=_slow_unless(r.startswith("cifar100_lt_if100_"))) for r in CIFAR],
)
def test_cifar_multi_expert_recipe_runs_its_first_steps(recipe, fake_roots, tmp_path_factory):
    config = load_recipe(recipe)
    budget = [*BUDGET, f"data.root={fake_roots[config.data.source]}"]
    overrides = list(budget)
    if config.init is not None:
        overrides += _stage1_overrides(
            config, budget, tmp_path_factory.getbasetemp() / "experts_stage1"
        )
    out = tmp_path_factory.mktemp(recipe)
    results = tailfuse.train(recipe, out, overrides)
    assert results["epochs"] == 1 and "few" in results["test"]["group_accuracy"]
    if config.init is not None:  # stage 2 (RIDE + H2T, ResLT + H2T) keeps stage 1's backbone
        _assert_backbone_kept(
            tmp_path_factory.getbasetemp() / "experts_stage1" / config.init.recipe, out
        )


def _assert_backbone_kept(stage1_dir, stage2_dir) -> None:
    """Stage 2 left every backbone convolution as stage 1 trained it and changed the head."""
    from tailfuse.engine.checkpoint import load_checkpoint

    before = load_checkpoint(stage1_dir / "checkpoints" / "last.pt")["session"]["model"]
    after = load_checkpoint(stage2_dir / "checkpoints" / "last.pt")["session"]["model"]
    convolutions = [key for key in before if key.startswith("backbone.") and "conv" in key]
    assert convolutions and all(torch.equal(before[key], after[key]) for key in convolutions)
    heads = [key for key in before if key.startswith("head.") and key.endswith("weight")]
    assert heads and not all(torch.equal(before[key], after[key]) for key in heads)


@pytest.fixture(scope="module")
def glt_files(tmp_path_factory):
    return write_glt_annotation_files(tmp_path_factory.mktemp("glt_experts"))


@pytest.mark.parametrize(
    "recipe", [pytest.param(r, marks=_slow_unless(r == "imagenet_glt_ride_ifl")) for r in GLT]
)
def test_glt_multi_expert_recipe_runs_its_first_steps(recipe, glt_files, tmp_path_factory):
    config = load_recipe(recipe)
    budget = [
        "train.epochs=1",
        "train.max_steps_per_epoch=1",
        "train.batch_size=6",
        "train.progress=false",
        "train.precision=fp32",
        "data.num_workers=0",
        "data.augment.crop_size=32",
        "data.augment.resize=36",
        f"data.annotation={glt_files['lt']}",
        f"data.annotation_cbl={glt_files['bl']}",
    ]
    if config.method.name == "ifl":  # one epoch: IFL's milestones (60, 80) would be refused
        budget += [
            "method.update_milestones=[0]",
            "method.center_milestones=[0]",
            "method.center_weights=[0.005]",
        ]
    overrides = list(budget)
    if config.init is not None:
        overrides += _stage1_overrides(
            config, budget, tmp_path_factory.getbasetemp() / "experts_glt_stage1"
        )
    results = tailfuse.train(recipe, tmp_path_factory.mktemp(recipe), overrides)
    assert list(results["glt"]) == ["test_bl", "test_bbl", "test_lt"]


def _list_file_budget(files: dict) -> list[str]:
    """One 1-step epoch of 4 images, 32 px crops, on a 4-class list-file stand-in."""
    return [
        "train.epochs=1",
        "train.max_steps_per_epoch=1",
        "train.batch_size=4",
        "train.progress=false",
        "train.precision=fp32",
        "data.num_workers=0",
        "data.augment.crop_size=32",
        "data.augment.resize=36",
        f"data.root={files['root']}",
        f"data.train_list={files['train_list']}",
        f"data.test_list={files['test_list']}",
        "data.groups.boundaries=[1,2]",
    ]


def test_places_lt_ride_h2t_runs_its_first_steps_after_its_stage1(tmp_path):
    """Places-LT lists in the ImageNet-LT list-file format; a random ResNet-152 state dict
    stands in for torchvision's ImageNet file, which the frozen trunk loads and keeps."""
    import torchvision

    files = write_list_file_dataset(tmp_path / "places", num_classes=4)
    weights = tmp_path / "resnet152-b121ed2d.pth"
    reference = torchvision.models.resnet152(weights=None)
    torch.save(reference.state_dict(), weights)
    budget = [*_list_file_budget(files), f"model.weights={weights}"]
    quoted = f"{budget!r}".replace("'", '"')
    results = tailfuse.train(
        "places_lt_ride_h2t", tmp_path / "run", [*budget, f"init.overrides={quoted}"]
    )
    assert results["epochs"] == 1 and results["test"]["num_samples"] == 8
    assert (tmp_path / "places_lt_ride_stage1" / "results.json").is_file()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    trunk_conv = saved["session"]["model"]["backbone.trunk.0.weight"]
    assert torch.equal(trunk_conv.float(), reference.conv1.weight)  # loaded, never trained


@pytest.mark.parametrize(
    "recipe",
    [
        pytest.param(r, marks=_slow_unless(r.startswith("imagenet_lt_resnet50_") and "h2t" in r))
        for r in IMAGENET_LT
    ],
)
def test_imagenet_lt_multi_expert_recipe_runs_its_first_steps(recipe, tmp_path):
    """RIDE (+ H2T) and ResLT (+ H2T) on an ImageNet-LT stand-in in the published list format;
    a stage-2 recipe trains its stage 1 first and keeps its backbone."""
    files = write_list_file_dataset(tmp_path / "imagenet", num_classes=4)
    budget = _list_file_budget(files)
    quoted = f"{budget!r}".replace("'", '"')
    config = load_recipe(recipe)
    overrides = [*budget, f"init.overrides={quoted}"] if config.init else budget
    results = tailfuse.train(recipe, tmp_path / "run", overrides)
    assert results["epochs"] == 1 and results["test"]["num_samples"] == 8
    if config.init is not None:
        _assert_backbone_kept(tmp_path / config.init.recipe, tmp_path / "run")
