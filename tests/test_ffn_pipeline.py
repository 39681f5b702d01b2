"""FFN end to end through the CLI on a small real subset: both stage-1 runs, then stage 2."""

from __future__ import annotations

import json

import torch

from tailfuse.cli import main
from tailfuse.engine.checkpoint import load_checkpoint

from .conftest import tiny_overrides

STAGE1_TINY = '["train.epochs=1","train.batch_size=32","train.eval_every=0","train.precision=fp32"]'


def test_quick_ffn_recipe_runs_the_whole_pipeline(cifar10_jpeg_root, tmp_path):
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        f"init.overrides={STAGE1_TINY}",
        f"init.auxiliary.ce.overrides={STAGE1_TINY}",
    ]
    assert main(["train", "cifar10_lt_quick_ffn", *overrides, "--out", str(tmp_path / "ffn")]) == 0
    kps = load_checkpoint(tmp_path / "cifar10_lt_quick_ffn_kps" / "checkpoints" / "last.pt")
    ce = load_checkpoint(tmp_path / "cifar10_lt_quick_ffn_ce" / "checkpoints" / "last.pt")
    ffn = load_checkpoint(tmp_path / "ffn" / "checkpoints" / "last.pt")
    assert (
        kps["config"]["method"]["loss"] == "kps"
        and ce["config"]["method"]["loss"] == "cross_entropy"
    )
    # both backbones are frozen and, by default (ce_batchnorm: eval), their BatchNorm statistics too
    for key, value in ce["session"]["model"].items():
        if key.startswith("backbone."):
            assert torch.equal(
                value,
                ffn["session"]["method_modules"]["second_backbone"][key.removeprefix("backbone.")],
            ), key
    for key, value in kps["session"]["model"].items():
        if key.startswith("backbone."):
            assert torch.equal(value, ffn["session"]["model"][key]), key
    assert not torch.equal(
        kps["session"]["model"]["head.weight"], ffn["session"]["model"]["head.weight"]
    )
    results = json.loads((tmp_path / "ffn" / "results.json").read_text())
    assert results["method"] == "ffn" and set(results["test"]["group_accuracy"]) == {
        "many",
        "medium",
        "few",
    }
    # a saved FFN run evaluates on its own (the CE backbone travels in the checkpoint)
    assert (
        main(
            [
                "eval",
                str(tmp_path / "ffn" / "checkpoints" / "last.pt"),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert abs(evaluated["test"]["top1"] - results["test"]["top1"]) < 1e-6


def test_lambda_sweep_shares_both_stage1_runs(cifar10_jpeg_root, tmp_path):
    overrides = [
        *tiny_overrides(cifar10_jpeg_root, epochs=1),
        f"init.overrides={STAGE1_TINY}",
        f"init.auxiliary.ce.overrides={STAGE1_TINY}",
    ]
    out = tmp_path / "sweep"
    arguments = [
        "sweep",
        "cifar10_lt_quick_ffn",
        *overrides,
        "--param",
        "method.fusion_weight",
        "--values",
        "0",
        "1",
    ]
    assert main([*arguments, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "method.fusion_weight=0",
        "method.fusion_weight=1",
        "stage1",
        "stage1_ce",
    ]
    rows = json.loads((out / "sweep.json").read_text())["runs"]
    assert [row["value"] for row in rows] == ["0", "1"]
