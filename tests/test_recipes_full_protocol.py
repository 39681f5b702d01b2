"""Every full-protocol CIFAR recipe loads, validates and runs its first steps on the CPU.

The recipes run unchanged except for four things: the data location (a stand-in in
torchvision's CIFAR pickle format, since CIFAR-100 is not on this machine), a smaller
n_max (200 per class, so the stand-in stays small; every imbalance factor keeps ≥ 1 tail
image), a 2-step budget per epoch and a 1-epoch schedule. Stage 1 runs once per dataset
and imbalance factor and is shared by its stage-2 recipes.
"""

from __future__ import annotations

import pytest
import torch

import tailfuse
from tailfuse.config import builtin_recipe_dir, load_recipe

from .fakes import write_cifar_pickles

MULTI_EXPERT = ("ride", "reslt", "bbn", "tade")  # tested in test_recipes_experts.py


def _single_model(stem: str) -> bool:
    return not any(part in MULTI_EXPERT for part in stem.split("_"))


RECIPES = sorted(
    path.stem
    for path in builtin_recipe_dir().glob("cifar*_lt_if*.yaml")
    if not path.stem.endswith("stage1") and _single_model(path.stem)
)
GCL = [name for name in RECIPES if "_gcl" in name]
CMO = [name for name in RECIPES if name.endswith("_cmo")]
STAGE2_METHODS = ("dr", "h2t", "mislas", "lws", "crt", "norm")
STAGE2 = [name for name in RECIPES if name.split("_")[-1] in STAGE2_METHODS and name not in GCL]
BASELINES = [
    name for name in RECIPES if name.endswith(("_if100_ce", "_cb_ce"))
]  # FFN Table 5's CE, CBL
OTHERS = [
    name
    for name in RECIPES
    if name not in STAGE2 and name not in GCL and name not in BASELINES and name not in CMO
]


def _default_run_for(recipes: list[str], keep) -> list:
    """Every recipe as a test; those ``keep`` rejects are marked slow (`-m slow` runs them).

    The default suite runs one imbalance factor per family (they differ only in constants,
    which each test asserts on its own), so it stays within its time budget.
    """
    return [pytest.param(r, marks=() if keep(r) else (pytest.mark.slow,)) for r in recipes]


def _is_if100(recipe: str) -> bool:
    return "_if100_" in recipe


BUDGET = [
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.progress=false",
    "data.max_per_class=200",
    "data.test_per_class=2",
]


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return {
        "cifar10": write_cifar_pickles(root / "c10", "cifar10", 200, 2),
        "cifar100": write_cifar_pickles(root / "c100", "cifar100", 200, 2),
    }


def test_every_recipe_is_there():
    # {cifar10, cifar100} x IF {200, 100, 50} x {dr, dr_h2t, mislas, mislas_h2t, mislas_lws}
    # + cifar10 IF 100 x {crt, lws, tau_norm}
    assert len(STAGE2) == 33
    assert len(OTHERS) == 20  # {cifar10, cifar100} x IF {200, 100, 50, 20, 10} x {ffn, ldam_drw}
    assert BASELINES == ["cifar10_lt_if100_cb_ce", "cifar10_lt_if100_ce"]
    # {cifar10, cifar100} x IF {200, 100, 50} x {gcl, gcl_h2t}; their six stage-1 recipes below
    assert len(GCL) == 12
    stage1 = {
        f"{dataset}_lt_if{factor}_gcl_stage1"
        for dataset in ("cifar10", "cifar100")
        for factor in (200, 100, 50)
    }
    assert {load_recipe(name).init.recipe for name in GCL} == stage1
    assert CMO == sorted(
        f"{dataset}_lt_if{factor}_{loss}cmo"
        for dataset in ("cifar10", "cifar100")
        for factor in (100, 50)
        for loss in ("", "bsm_", "ldam_drw_")
    )


def _expected_stage2(recipe: str) -> dict:
    """Peak lr, shift-BN and sampler of each stage-2 recipe (spec h2t §2.3, §2.5)."""
    method = recipe.split("_if")[1].split("_", 1)[1]
    mislas = method.startswith("mislas")
    cifar10 = recipe.startswith("cifar10_")
    peak = 0.02
    if (
        mislas and cifar10
    ):  # MiSLAS's CIFAR-10 configs: lr_factor 0.5 (IF 100; IF 200 uses it), 0.2 (IF 50)
        peak = 0.02 if "_if50_" in recipe else 0.05
    elif mislas and "_if50_" in recipe:  # MiSLAS's CIFAR-100 IF 50: lr_factor 0.1
        peak = 0.01
    shift_bn = method in ("dr", "dr_h2t") or (mislas and not cifar10)
    sampler = {"mislas_lws": "class_aware", "crt": "class_aware"}.get(method, "class_balanced")
    return {
        "peak": peak,
        "shift_bn": shift_bn,
        "sampler": sampler,
        "epochs": 1 if method == "tau_norm" else 10,
    }


def _run_with_budget(recipe, config, fake_roots, tmp_path_factory):
    overrides = [*BUDGET, f"data.root={fake_roots[config.data.source]}"]
    if config.init is not None:
        budget = f"{BUDGET!r}".replace("'", '"')
        shared = tmp_path_factory.getbasetemp() / "stage1"
        overrides += [f"init.run_dir={shared / config.init.recipe}", f"init.overrides={budget}"]
        for name, source in config.init.auxiliary.items():
            overrides += [
                f"init.auxiliary.{name}.run_dir={shared / source.recipe}",
                f"init.auxiliary.{name}.overrides={budget}",
            ]
    out = tmp_path_factory.mktemp(recipe)
    return tailfuse.train(recipe, out, overrides), out


def _imbalance_factor(recipe: str) -> int:
    return int(next(part for part in recipe.split("_") if part.startswith("if"))[2:])


def _images_seen(out) -> float:
    import json

    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return record["images_per_second"] * record["seconds"]


@pytest.mark.parametrize("recipe", _default_run_for(STAGE2, _is_if100))
def test_stage2_recipe_runs_its_first_steps(recipe, fake_roots, tmp_path_factory):
    config = load_recipe(recipe)
    expected = _expected_stage2(recipe)
    assert config.train.epochs == expected["epochs"] and config.schedule.name == "cosine"
    assert config.optimizer.lr * config.schedule.lr_factor == pytest.approx(expected["peak"])
    assert config.method.shift_bn == expected["shift_bn"]
    if recipe.split("_")[-1] != "lws" or "mislas" in recipe:  # LWS: the method's default sampler
        assert config.method.sampler == expected["sampler"]
    assert (config.method.h2t.ratio == 0.25) == recipe.endswith("h2t")
    results, out = _run_with_budget(recipe, config, fake_roots, tmp_path_factory)
    assert results["epochs"] == 1 and "few" in results["test"]["group_accuracy"]
    counts = results["data"]["class_counts"]  # n_max 200, exponential profile down to 200 / IF
    assert counts[0] == 200 and counts[-1] == 200 // _imbalance_factor(recipe)
    # two steps of the recipe's batch, twice the images when H2T draws its fusing branch
    branches = 2 if recipe.endswith("h2t") else 1
    steps = 0 if config.method.name == "tau_norm" else 2  # tau-norm is post-hoc: no steps
    assert _images_seen(out) == pytest.approx(steps * config.train.batch_size * branches)
    from tailfuse.engine.checkpoint import load_checkpoint

    stage1 = load_checkpoint(
        tmp_path_factory.getbasetemp() / "stage1" / config.init.recipe / "checkpoints" / "last.pt"
    )
    stage2 = load_checkpoint(out / "checkpoints" / "last.pt")
    for key, value in stage1["session"]["model"].items():  # the backbone's weights stay stage 1's
        if key.startswith("backbone.") and key.endswith(("conv1.weight", "conv2.weight")):
            assert torch.equal(value, stage2["session"]["model"][key]), key
    # LWS learns only per-class scales and tau-norm rescales at prediction:
    # both keep the head's weights
    keeps_head = config.method.name in ("lws", "tau_norm")
    same_head = torch.equal(
        stage1["session"]["model"]["head.fc.weight"], stage2["session"]["model"]["head.fc.weight"]
    )
    assert same_head == keeps_head


@pytest.mark.parametrize("recipe", _default_run_for(OTHERS, _is_if100))
def test_ffn_and_ldam_drw_recipes_run_their_first_steps(recipe, fake_roots, tmp_path_factory):
    config = load_recipe(recipe)
    if recipe.endswith("_ffn"):
        assert config.train.epochs == 30 and config.train.batch_size == 64
        assert config.optimizer.lr * config.schedule.lr_factor == pytest.approx(0.002)
        assert config.method.fusion_weight == (0.5 if recipe.startswith("cifar10_") else 0.9)
        assert set(config.init.auxiliary) == {"ce"}
    else:
        assert config.method.loss == "ldam" and config.method.loss_options["drw_epoch"] == 160
    results, out = _run_with_budget(recipe, config, fake_roots, tmp_path_factory)
    assert results["epochs"] == 1
    counts = results["data"]["class_counts"]
    assert counts[0] == 200 and counts[-1] == 200 // _imbalance_factor(recipe)
    assert _images_seen(out) == pytest.approx(2 * config.train.batch_size)


@pytest.mark.parametrize("recipe", BASELINES)
def test_ce_and_cb_ce_recipes_run_their_first_steps(recipe, fake_roots, tmp_path_factory):
    """FFN Table 5's CE and CBL rows on the H2T / MiSLAS stage-1 protocol, without mixup."""
    config = load_recipe(recipe)
    assert config.method.loss == "cross_entropy" and config.method.mixup_alpha == 0.0
    expected_options = (
        {"reweight_from_epoch": 0, "beta": 0.9999, "class_weight_divisor": "batch_size"}
        if "_cb_" in recipe
        else {}
    )
    assert config.method.loss_options == expected_options
    assert config.train.epochs == 200 and config.train.batch_size == 128
    assert config.schedule.milestones == [160, 180] and config.schedule.warmup_epochs == 5
    results, out = _run_with_budget(recipe, config, fake_roots, tmp_path_factory)
    assert results["epochs"] == 1
    assert results["data"]["class_counts"][-1] == 2  # 200 per class at IF 100
    assert _images_seen(out) == pytest.approx(2 * config.train.batch_size)


@pytest.mark.parametrize("recipe", _default_run_for(GCL, _is_if100))
def test_gcl_recipes_run_their_first_steps(recipe, fake_roots, tmp_path_factory):
    """GCL and GCL + H2T (spec h2t §3.1): stage 2 trains the stage-1 GCL model of the same data."""
    config = load_recipe(recipe)
    assert (
        config.method.name == "gcl"
        and not config.method.shift_bn
        and config.method.sampler == "class_balanced"
    )
    assert config.method.loss_options == {"m": 0.1, "s": 20.0, "noise_mul": 0.5, "gamma": 1.0}
    assert (
        config.train.epochs == 30
        and config.train.batch_size == 64
        and config.schedule.name == "cosine"
    )
    assert config.optimizer.lr * config.schedule.lr_factor == pytest.approx(0.002)
    assert (config.method.h2t.ratio == 0.25) == recipe.endswith("h2t")
    stage1 = load_recipe(config.init.recipe)
    assert stage1.method.loss == "gcl" and stage1.method.loss_options == {
        "m": 0.0,
        "s": 30.0,
        "noise_mul": 0.5,
    }
    assert (
        stage1.model.head == "cosine"
        and stage1.train.batch_size == 64
        and stage1.train.epochs == 200
    )
    results, _ = _run_with_budget(recipe, config, fake_roots, tmp_path_factory)
    assert results["epochs"] == 1 and results["method"] == "gcl"


@pytest.mark.parametrize("recipe", _default_run_for(CMO, _is_if100))
def test_cmo_recipes_run_their_first_steps(recipe, fake_roots, tmp_path_factory):
    """CE + CMO, BSCE + CMO and LDAM-DRW + CMO at the authors' CIFAR protocol (cifar_train.py)."""
    config = load_recipe(recipe)
    method = config.method
    assert (method.name, method.mix_prob, method.beta) == ("cmo", 0.5, 1.0)
    assert (method.start_epoch, method.end_epochs) == (3, 3)
    assert (method.sampler, method.minority_sampler) == ("instance", "class_balanced")
    assert config.train.epochs == 200 and config.train.batch_size == 128
    assert config.schedule.milestones == [160, 180] and config.schedule.gamma == 0.01
    assert config.schedule.warmup_epochs == 5 and config.optimizer.weight_decay == 2.0e-4
    expected_loss, expected_options, expected_head = {
        "ldam": ("ldam", {"max_m": 0.5, "s": 30.0, "drw_epoch": 160}, "cosine"),
        "bsm": ("balanced_softmax", {}, "linear"),
    }.get(recipe.split("_if")[1].split("_")[1], ("cross_entropy", {}, "linear"))
    assert (method.loss, method.loss_options) == (expected_loss, expected_options)
    assert config.model.head == expected_head
    results, out = _run_with_budget(recipe, config, fake_roots, tmp_path_factory)
    assert results["epochs"] == 1 and results["method"] == "cmo"
    counts = results["data"]["class_counts"]
    assert counts[0] == 200 and counts[-1] == 200 // _imbalance_factor(recipe)
    # two steps, each drawing the instance batch and the minority batch
    assert _images_seen(out) == pytest.approx(2 * 2 * config.train.batch_size)


IMAGENET = ["imagenet_lt_ffn"]


@pytest.mark.parametrize("recipe", IMAGENET)
def test_imagenet_lt_recipes_run_their_first_steps(recipe, tmp_path):
    """ImageNet-LT recipes on a tiny stand-in in the published list format
    (ResNet-50, 32 px crops)."""
    from .fakes import write_list_file_dataset

    files = write_list_file_dataset(tmp_path / "imagenet")
    config = load_recipe(recipe)
    assert config.model.backbone == "resnet50" and config.data.storage == "stream"
    budget = [
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.batch_size=4",
        "train.progress=false",
        "train.precision=fp32",
        "data.num_workers=0",
        "data.augment.crop_size=32",
        "data.augment.resize=36",
        f"data.root={files['root']}",
        f"data.train_list={files['train_list']}",
        f"data.test_list={files['test_list']}",
    ]
    quoted = f"{budget!r}".replace("'", '"')
    overrides = [*budget, f"init.overrides={quoted}", f"init.auxiliary.ce.overrides={quoted}"]
    results = tailfuse.train(recipe, tmp_path / "run", overrides)
    assert results["epochs"] == 1 and results["test"]["num_samples"] == 8
    assert (tmp_path / "imagenet_lt_ffn_kps_stage1" / "results.json").is_file()
    assert (tmp_path / "imagenet_lt_ffn_ce_stage1" / "results.json").is_file()


GLT_RECIPES = sorted(
    path.stem
    for path in builtin_recipe_dir().glob("*_glt_*.yaml")
    if path.stem.startswith(("imagenet_glt", "mscoco_glt")) and _single_model(path.stem)
)


def test_every_glt_recipe_is_there():
    rows = {
        "baseline",
        "bsm",
        "la",
        "focal",
        "mixup",
        "randaug",
        "ldam",
        "ifl",
        "bsm_ifl",
        "la_ifl",
        "mixup_ifl",
        "randaug_ifl",
        "ifl_1env",
        "ifl_3env",
        "crt",
        "lws",
        "crt_ifl",
        "lws_ifl",
        "baseline_momentum0",
        "ifl_momentum0",
    }
    for benchmark in ("imagenet_glt", "mscoco_glt"):
        assert {
            name[len(benchmark) + 1 :] for name in GLT_RECIPES if name.startswith(benchmark)
        } == rows


@pytest.fixture(scope="module")
def glt_files(tmp_path_factory):
    from .fakes import write_glt_annotation_files

    return write_glt_annotation_files(tmp_path_factory.mktemp("glt"))


@pytest.mark.parametrize(
    "recipe", _default_run_for(GLT_RECIPES, lambda recipe: recipe.startswith("imagenet_glt_"))
)
def test_glt_recipes_run_their_first_steps(recipe, glt_files, tmp_path_factory):
    """ImageNet-GLT / MSCOCO-GLT recipes on tiny annotation files in the published
    schema (ResNeXt-50, 32 px)."""
    config = load_recipe(recipe)
    assert config.model.backbone == "resnext50_32x4d" and not config.model.head_bias
    assert config.optimizer.momentum == (0.0 if recipe.endswith("momentum0") else 0.9)
    if config.method.name == "ifl":
        assert (
            config.method.update_milestones == [60, 80]
            and config.method.epoch_images == "per_environment"
        )
    train_set = (
        "cbl" if recipe.endswith(("ifl", "crt", "lws")) else "glt"
    )  # both kinds, half the cost
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
        f"data.glt.train_set={train_set}",
    ]
    # one epoch: IFL's milestones (epochs 60 and 80) would be refused, so they move to epoch 0
    ifl_early = [
        "method.update_milestones=[0]",
        "method.center_milestones=[0]",
        "method.center_weights=[0.005]",
    ]
    overrides = list(budget) + (ifl_early if config.method.name == "ifl" else [])
    if config.init is not None:
        stage1 = budget + (
            ifl_early if load_recipe(config.init.recipe).method.name == "ifl" else []
        )
        quoted = f"{stage1!r}".replace("'", '"')
        shared = tmp_path_factory.getbasetemp() / f"glt_stage1_{train_set}"
        overrides += [f"init.run_dir={shared / config.init.recipe}", f"init.overrides={quoted}"]
    results = tailfuse.train(recipe, tmp_path_factory.mktemp(recipe), overrides)
    expected = {"glt": ["test_bl", "test_bbl", "test_lt"], "cbl": ["test_bl", "test_bbl"]}[
        train_set
    ]
    assert list(results["glt"]) == expected
    assert results["glt"]["test_bbl"]["metrics"]["overall"]["count"] == 12
