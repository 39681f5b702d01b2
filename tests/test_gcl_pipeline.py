"""GCL's two stages and GCL + H2T end to end through the CLI on a small real subset of CIFAR-10."""

from __future__ import annotations

import json

import torch

from tailfuse.cli import main
from tailfuse.engine.checkpoint import load_checkpoint

from .engine.test_stages import stage2_overrides


def test_gcl_stage1_then_stage2_and_gcl_h2t_through_the_cli(cifar10_jpeg_root, tmp_path, capsys):
    overrides = stage2_overrides(cifar10_jpeg_root)
    assert main(["train", "cifar10_lt_quick_gcl", *overrides, "--out", str(tmp_path / "gcl")]) == 0
    assert "cifar10_lt_quick_gcl: test top-1" in capsys.readouterr().out
    stage1 = tmp_path / "cifar10_lt_quick_gcl_stage1"
    stage1_results = json.loads((stage1 / "results.json").read_text())
    assert stage1_results["method"] == "erm" and stage1_results["test"]["num_samples"] == 100
    first = load_checkpoint(stage1 / "checkpoints" / "last.pt")["session"]["model"]
    second = load_checkpoint(tmp_path / "gcl" / "checkpoints" / "last.pt")["session"]["model"]
    assert (
        set(first) == set(second) and "head.weight" in first
    )  # the cosine classifier, carried over
    for key, value in first.items():
        if key.startswith("backbone."):
            assert torch.equal(value, second[key]), (
                key
            )  # frozen, BatchNorm statistics included (eval mode)
    assert not torch.equal(first["head.weight"], second["head.weight"])

    modified = (stage1 / "results.json").stat().st_mtime_ns
    assert (
        main(["train", "cifar10_lt_quick_gcl_h2t", *overrides, "--out", str(tmp_path / "gcl_h2t")])
        == 0
    )
    assert (stage1 / "results.json").stat().st_mtime_ns == modified  # stage 1 reused
    results = json.loads((tmp_path / "gcl_h2t" / "results.json").read_text())
    assert results["method"] == "gcl" and set(results["test"]["group_accuracy"]) == {
        "many",
        "medium",
        "few",
    }
    saved = load_checkpoint(tmp_path / "gcl_h2t" / "checkpoints" / "last.pt")
    assert (
        saved["config"]["method"]["h2t"]["ratio"] == 0.25
        and saved["config"]["method"]["shift_bn"] is False
    )
    # GCL + H2T differs from GCL only by the fusion: same start, different classifier
    assert not torch.equal(saved["session"]["model"]["head.weight"], second["head.weight"])
