"""Ctrl-C and ``train --resume`` through the command line, in a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tailfuse.engine.checkpoint import load_checkpoint

from .conftest import tiny_overrides

REPOSITORY = Path(__file__).resolve().parents[1]


def cli(log: Path, *arguments: str) -> subprocess.Popen:
    """Start the CLI in its own process; its output goes to files (a full pipe would block it)."""
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY / "src"))
    command = [sys.executable, "-m", "tailfuse.cli", *arguments]
    return subprocess.Popen(
        command,
        stdout=log.with_suffix(".out").open("w"),
        stderr=log.with_suffix(".err").open("w"),
        env=environment,
    )


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_checkpoint_and_resume_finishes_the_same_run(
    cifar10_jpeg_root, tmp_path
):
    overrides = tiny_overrides(
        cifar10_jpeg_root, epochs=4, **{"data.max_per_class": 20, "data.test_per_class": 5}
    )
    whole = cli(
        tmp_path / "whole",
        "train",
        "cifar10_lt_quick",
        *overrides,
        "--out",
        str(tmp_path / "whole"),
    )
    assert whole.wait(timeout=1800) == 0, (tmp_path / "whole.err").read_text()

    run = tmp_path / "interrupted"
    process = cli(tmp_path / "first", "train", "cifar10_lt_quick", *overrides, "--out", str(run))
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 1800
    while not (log.is_file() and log.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # Ctrl-C during epoch 2 (or 3)
    assert process.wait(timeout=600) == 130
    last_line = (tmp_path / "first.err").read_text().strip().splitlines()[-1]
    assert last_line == "interrupted; the last complete checkpoint is intact (use --resume)"
    interrupted_at = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
    assert 1 <= interrupted_at < 4

    resumed = cli(
        tmp_path / "second", "train", "cifar10_lt_quick", *overrides, "--out", str(run), "--resume"
    )
    assert resumed.wait(timeout=1800) == 0, (tmp_path / "second.err").read_text()
    assert "test top-1" in (tmp_path / "second.out").read_text()
    straight = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["session"]["model"]
    finished = load_checkpoint(run / "checkpoints" / "last.pt")["session"]["model"]
    for key, value in straight.items():
        assert torch.equal(value, finished[key]), key
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    results = json.loads((run / "results.json").read_text())
    assert results["test"] == json.loads((tmp_path / "whole" / "results.json").read_text())["test"]
