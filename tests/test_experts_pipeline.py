"""Multi-expert methods end to end through the CLI on small real subsets of CIFAR-10, and resume."""

from __future__ import annotations

import json

import pytest
import torch

from tailfuse.cli import main
from tailfuse.config import load_recipe

from .conftest import stop_training_at_epoch, tiny_overrides
from .test_glt_pipeline import glt_tiny

STAGE1_TINY = (
    'init.overrides=["train.epochs=1","train.batch_size=32","train.eval_every=0",'
    '"train.precision=fp32","train.max_steps_per_epoch=2"]'
)


@pytest.mark.parametrize(
    ("recipe", "stage1", "method"),
    [
        ("cifar10_lt_quick_ride_h2t", "cifar10_lt_quick_ride", "ride"),
        ("cifar10_lt_quick_reslt_h2t", "cifar10_lt_quick_reslt", "reslt"),
        ("cifar10_lt_quick_bbn", None, "bbn"),
        ("cifar10_lt_quick_tade", None, "tade"),
    ],
)
def test_cifar10_lt_multi_expert_families_through_the_cli(
    cifar10_jpeg_root, tmp_path, recipe, stage1, method
):
    out = tmp_path / "run"
    extra = [STAGE1_TINY] if stage1 else []
    arguments = tiny_overrides(cifar10_jpeg_root, epochs=1, **{"train.max_steps_per_epoch": 2})
    assert main(["train", recipe, *arguments, *extra, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["num_samples"] == 100 and 0.0 <= results["test"]["top1"] <= 100.0
    if stage1:
        assert json.loads((tmp_path / stage1 / "results.json").read_text())["method"] == method
    else:
        assert results["method"] == method


@pytest.mark.parametrize("recipe", ["cifar10_glt_quick_ride_ifl", "cifar10_glt_quick_tade_ifl_alt"])
def test_ifl_on_experts_through_the_cli(cifar10_jpeg_root, tmp_path, recipe):
    early = {
        "method.update_milestones": "[0]",
        "method.center_milestones": "[0,1]",
        "method.center_weights": "[0.0,0.005]",
        "train.max_steps_per_epoch": 3,
    }
    assert (
        main(
            [
                "train",
                recipe,
                *glt_tiny(cifar10_jpeg_root, epochs=2, **early),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["method"] == "ifl"
    assert list(results["glt"]) == ["test_bl", "test_bbl"] + (
        [] if recipe.endswith("_alt") else ["test_lt"]
    )
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["session"][
        "method_modules"
    ]["ifl"]
    assert state["centers"].shape == (
        10,
        3 * 48,
    )  # centers on the concatenated features of 3 experts (48-d each)


def test_resumed_multi_expert_run_equals_an_uninterrupted_one(cifar10_jpeg_root, tmp_path):
    from tailfuse.engine.checkpoint import load_checkpoint
    from tailfuse.engine.trainer import train

    def overrides(epochs):
        # DRW and the class temperatures switch on in the second epoch
        return tiny_overrides(
            cifar10_jpeg_root,
            epochs=epochs,
            **{"train.max_steps_per_epoch": 2, "method.loss_options.drw_epoch": 1},
        )

    two_epochs = load_recipe("cifar10_lt_quick_ride", overrides(2))
    train(two_epochs, tmp_path / "whole")
    # interrupted after epoch 1 (its warm-up lr does not depend on the length): relabel and resume
    train(load_recipe("cifar10_lt_quick_ride", overrides(1)), tmp_path / "resumed")
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    saved["config"]["train"]["epochs"] = 2
    torch.save(saved, tmp_path / "resumed" / "checkpoints" / "last.pt")
    train(two_epochs, tmp_path / "resumed", resume=True)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["session"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["session"]
    assert any(key.startswith("backbone.experts.2.") for key in whole["model"])
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


@pytest.mark.parametrize(
    "recipe", ["cifar10_lt_quick_bbn", "cifar10_lt_quick_reslt", "cifar10_lt_quick_tade"]
)
def test_a_multi_expert_run_interrupted_in_epoch_2_resumes_to_the_uninterrupted_weights(
    recipe, cifar10_jpeg_root, tmp_path, monkeypatch
):
    """BBN (its α follows epoch / total epochs and draws two branches), ResLT (mixup) and TADE
    stopped by Ctrl-C in their second epoch and resumed equal the run that was not stopped."""
    import tailfuse
    from tailfuse.engine.checkpoint import load_checkpoint

    overrides = tiny_overrides(cifar10_jpeg_root, epochs=2, **{"train.max_steps_per_epoch": 2})
    tailfuse.train(recipe, tmp_path / "whole", overrides)
    train_normally = stop_training_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        tailfuse.train(recipe, tmp_path / "stopped", overrides)
    train_normally()
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["epoch"] == 1
    tailfuse.train(recipe, tmp_path / "stopped", overrides, resume=True)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["session"]["model"]
    resumed = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["session"]["model"]
    expert_parts = (".experts.", "branch_norms", ".rebalancing.")  # RIDE / ResLT / BBN modules
    assert len(whole) == len(resumed)
    assert any(part in key for key in whole for part in expert_parts)
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key
    first = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    assert first["epoch"] == 2
