"""Stage 2 from stage 1: one command trains both; mismatched checkpoints are refused."""

from __future__ import annotations

import json

import pytest
import torch

import tailfuse
from tailfuse.engine.checkpoint import load_checkpoint
from tailfuse.errors import CheckpointError

from ..conftest import tiny_overrides

STAGE1_TINY = (
    'init.overrides=["train.epochs=1","train.batch_size=32",'
    '"train.eval_every=0","train.precision=fp32"]'
)


def stage2_overrides(root, epochs=1, **extra):
    return [*tiny_overrides(root, epochs=epochs, **extra), STAGE1_TINY]


def test_one_command_trains_stage1_then_stage2(cifar10_jpeg_root, tmp_path):
    results = tailfuse.train(
        "cifar10_lt_quick_dr_h2t", tmp_path / "h2t", stage2_overrides(cifar10_jpeg_root)
    )
    stage1 = tmp_path / "cifar10_lt_quick"
    assert (stage1 / "results.json").is_file() and (stage1 / "checkpoints" / "last.pt").is_file()
    stage1_state = load_checkpoint(stage1 / "checkpoints" / "last.pt")
    assert (
        stage1_state["config"]["data"]["max_per_class"] == 40
    )  # stage 1 trained on the stage-2 data
    stage2_state = load_checkpoint(tmp_path / "h2t" / "checkpoints" / "last.pt")
    for key, value in stage1_state["session"]["model"].items():
        if key.startswith("backbone.") and "running" not in key and "num_batches" not in key:
            assert torch.equal(value, stage2_state["session"]["model"][key]), key  # frozen backbone
    assert not torch.equal(
        stage1_state["session"]["model"]["head.fc.weight"],
        stage2_state["session"]["model"]["head.fc.weight"],
    )
    assert results["method"] == "dr" and results["test"]["num_samples"] == 100

    # a second stage-2 recipe reuses the existing stage-1 run instead of training it again
    modified = (stage1 / "results.json").stat().st_mtime_ns
    tailfuse.train("cifar10_lt_quick_dr", tmp_path / "dr", stage2_overrides(cifar10_jpeg_root))
    assert (stage1 / "results.json").stat().st_mtime_ns == modified


def test_h2t_with_ratio_zero_equals_dr_exactly(cifar10_jpeg_root, tmp_path):
    overrides = stage2_overrides(
        cifar10_jpeg_root, epochs=2, **{"init.run_dir": str(tmp_path / "stage1")}
    )
    tailfuse.train("cifar10_lt_quick_dr", tmp_path / "dr", overrides)
    tailfuse.train("cifar10_lt_quick_dr_h2t", tmp_path / "p0", [*overrides, "method.h2t.ratio=0"])
    dr = load_checkpoint(tmp_path / "dr" / "checkpoints" / "last.pt")["session"]["model"]
    p0 = load_checkpoint(tmp_path / "p0" / "checkpoints" / "last.pt")["session"]["model"]
    assert all(torch.equal(dr[key], p0[key]) for key in dr)
    tailfuse.train("cifar10_lt_quick_dr_h2t", tmp_path / "p25", overrides)
    p25 = load_checkpoint(tmp_path / "p25" / "checkpoints" / "last.pt")["session"]["model"]
    assert not torch.equal(dr["head.fc.weight"], p25["head.fc.weight"])


def test_mismatched_stage1_checkpoints_are_refused(cifar10_jpeg_root, tmp_path):
    tailfuse.train(
        "cifar10_lt_quick",
        tmp_path / "cosine",
        [*tiny_overrides(cifar10_jpeg_root, epochs=1), "model.head=cosine"],
    )
    checkpoint = tmp_path / "cosine" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="head cosine .recipe: linear"):
        tailfuse.train(
            "cifar10_lt_quick_dr",
            tmp_path / "a",
            [*tiny_overrides(cifar10_jpeg_root), f"init.checkpoint={checkpoint}"],
        )
    with pytest.raises(CheckpointError, match="training subset"):
        tailfuse.train(
            "cifar10_lt_quick_dr",
            tmp_path / "b",
            [
                *tiny_overrides(cifar10_jpeg_root),
                f"init.checkpoint={checkpoint}",
                "model.head=cosine",
                "data.max_per_class=50",
            ],
        )
    # loading only the backbone into a new head is allowed when asked for
    tailfuse.train(
        "cifar10_lt_quick_dr",
        tmp_path / "c",
        [*tiny_overrides(cifar10_jpeg_root), f"init.checkpoint={checkpoint}", "init.load=backbone"],
    )
    assert json.loads((tmp_path / "c" / "results.json").read_text())["method"] == "dr"


def test_tau_norm_evaluates_without_training(cifar10_jpeg_root, tmp_path):
    overrides = stage2_overrides(cifar10_jpeg_root, **{"init.run_dir": str(tmp_path / "stage1")})
    results = tailfuse.train(
        "cifar10_lt_quick_dr", tmp_path / "tau", [*overrides, "method={name: tau_norm, tau: 1.0}"]
    )
    line = (tmp_path / "tau" / "metrics.jsonl").read_text().splitlines()[0]
    record = json.loads(
        line, parse_constant=lambda constant: pytest.fail(f"not strict JSON: {constant}")
    )
    assert record["train_loss"] is None  # no step was taken: null, not a bare NaN
    assert results["method"] == "tau_norm"
    # the reported top-1 is that of the stage-1 network with rows w_j / ||w_j|| and no bias
    from tailfuse.config import load_recipe
    from tailfuse.data.pipeline import BatchAugmenter
    from tailfuse.data.prepare import load_data
    from tailfuse.models import build_model

    config = load_recipe("cifar10_lt_quick_dr", overrides)
    test = load_data(config.data, "cpu").test
    model = build_model(config.model, 10)
    model.load_state_dict(
        load_checkpoint(tmp_path / "stage1" / "checkpoints" / "last.pt")["session"]["model"]
    )
    model.eval()
    with torch.no_grad():
        pooled = model.backbone(BatchAugmenter(config.data.augment).evaluate(test.images)).mean(
            dim=(2, 3)
        )
        weight = model.head.fc.weight
        normalised = pooled @ (weight / weight.norm(dim=1, keepdim=True)).t()
    expected = 100.0 * (normalised.argmax(1) == test.labels).double().mean().item()
    assert results["test"]["top1"] == pytest.approx(expected)
    # tau = 1 makes each class row a unit vector: scaling row j by j + 1 must not move a prediction
    from tailfuse.engine.trainer import evaluate_checkpoint

    saved = load_checkpoint(tmp_path / "tau" / "checkpoints" / "last.pt")
    saved["session"]["model"]["head.fc.weight"] *= torch.arange(1.0, 11.0).view(10, 1)
    torch.save(saved, tmp_path / "scaled.pt")
    rescaled = evaluate_checkpoint(tmp_path / "scaled.pt", tmp_path / "scaled")
    assert rescaled["test"]["confusion_matrix"] == results["test"]["confusion_matrix"]


@pytest.mark.parametrize(
    "recipe",
    [
        "cifar10_lt_quick_crt",
        "cifar10_lt_quick_lws",
        "cifar10_lt_quick_mislas",
        "cifar10_lt_quick_tau_norm",
    ],
)
def test_quick_stage2_baselines_run_through_the_cli(recipe, cifar10_jpeg_root, tmp_path_factory):
    from tailfuse.cli import main

    shared = tmp_path_factory.getbasetemp() / "quick-stage1"
    out = tmp_path_factory.mktemp(recipe)
    assert (
        main(
            [
                "train",
                recipe,
                *stage2_overrides(cifar10_jpeg_root, **{"init.run_dir": str(shared)}),
                "--out",
                str(out / "run"),
            ]
        )
        == 0
    )
    results = json.loads((out / "run" / "results.json").read_text())
    assert results["method"] == recipe.removeprefix("cifar10_lt_quick_")
    stage2 = load_checkpoint(out / "run" / "checkpoints" / "last.pt")
    stage1 = load_checkpoint(shared / "checkpoints" / "last.pt")
    same_head = torch.equal(
        stage1["session"]["model"]["head.fc.weight"], stage2["session"]["model"]["head.fc.weight"]
    )
    # cRT re-initialises and trains the head, MiSLAS fine-tunes it; LWS and tau-norm
    # leave it as stage 1 left it
    assert same_head == (recipe.endswith(("lws", "tau_norm")))
    if recipe.endswith("lws"):
        assert not torch.equal(
            stage2["session"]["method_modules"]["scales"]["scales"], torch.ones(10)
        )


def test_validation_selected_lws_reports_the_selected_scales(cifar10_jpeg_root, tmp_path):
    from tailfuse.config import load_recipe
    from tailfuse.data.prepare import load_data
    from tailfuse.engine.checkpoint import save_checkpoint
    from tailfuse.engine.runtime import make_runtime
    from tailfuse.engine.session import TrainingSession
    from tailfuse.engine.trainer import finish_run

    overrides = stage2_overrides(cifar10_jpeg_root, epochs=1, **{"data.validation_per_class": 5})
    run = tmp_path / "lws"
    tailfuse.train("cifar10_lt_quick_lws", run, overrides)
    # give the selected checkpoint distinctive scales; the report must use them, not the session's
    selected_path = run / "checkpoints" / "best_validation.pt"
    selected = load_checkpoint(selected_path)
    selected["session"]["method_modules"]["scales"]["scales"] = torch.linspace(0.2, 3.0, 10)
    save_checkpoint(selected, selected_path)
    config = load_recipe("cifar10_lt_quick_lws", overrides)
    runtime = make_runtime(config.train)
    session = TrainingSession(config, load_data(config.data, runtime.device), runtime)
    results = finish_run(config, session, run, "best_validation", selected["best"])
    evaluated = tailfuse.evaluate(selected_path, tmp_path / "eval")
    assert results["test"]["nll"] == pytest.approx(evaluated["test"]["nll"], rel=1e-6)
    assert torch.equal(session.method.scales.scales.detach(), torch.linspace(0.2, 3.0, 10))
