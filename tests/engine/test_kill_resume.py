"""A run killed (SIGKILL) in the middle of a checkpoint write, or just after
its rename, resumes exactly.

The kill happens in a child process at the named moment of epoch 2's ``last.pt``; the run
is then resumed with ``--resume`` and compared with an uninterrupted run: weights,
results.json and every line of metrics.jsonl (timings aside) must be equal, and no
temporary file may be left behind (issue 10 item 9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tailfuse
from tailfuse.engine.checkpoint import load_checkpoint

from ..test_reliability import tree_overrides, trees  # noqa: F401 - the fixture

REPOSITORY = Path(__file__).resolve().parents[2]
TIMING = ("seconds", "images_per_second")

#: Runs the CLI in a child process that SIGKILLs itself at one moment of epoch 2's last.pt write.
KILLING_DRIVER = """
import os, signal, sys
import torch
from tailfuse.engine import checkpoint

moment = sys.argv[1]
real_save, real_replace = torch.save, os.replace

def is_epoch2_last(state_or_path):
    return isinstance(state_or_path, dict) and state_or_path.get("epoch") == 2

def save(state, stream):
    if moment == "during-write" and is_epoch2_last(state):  # (no best_*.pt: selection is final)
        real_save(state, stream)
        stream.truncate(stream.tell() // 2)  # half of the bytes reached the disk
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(state, stream)

def replace(source, target):
    real_replace(source, target)
    last = str(target).endswith("last.pt")
    if moment == "after-rename" and last and checkpoint.load_checkpoint(target)["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)

checkpoint.torch.save = save
checkpoint.os.replace = replace
from tailfuse.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _overrides(trees) -> list[str]:  # noqa: F811
    return tree_overrides(trees["a"], epochs=3)


@pytest.fixture(scope="module")
def straight(trees, tmp_path_factory) -> Path:  # noqa: F811
    """The uninterrupted run both kills are compared with."""
    run = tmp_path_factory.mktemp("straight") / "run"
    tailfuse.train("cifar10_lt_quick", run, _overrides(trees))
    return run


@pytest.mark.parametrize("moment", ["during-write", "after-rename"])
def test_a_run_killed_at_a_checkpoint_resumes_exactly(
    trees,  # noqa: F811
    straight,
    tmp_path,
    moment,
):
    overrides = _overrides(trees)

    run = tmp_path / "killed"
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY / "src")}
    command = [
        sys.executable,
        "-c",
        KILLING_DRIVER,
        moment,
        "train",
        "cifar10_lt_quick",
        *overrides,
        "--out",
        str(run),
    ]
    killed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert killed.returncode == -9, killed.stderr
    expected_epoch = 1 if moment == "during-write" else 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == expected_epoch
    if moment == "during-write":
        assert list((run / "checkpoints").glob(".last.pt.*.tmp"))  # what the kill left
    else:
        with (run / "metrics.jsonl").open("a") as log:
            log.write('{"epoch": 2, "lr": 0.0')  # and a line torn by a kill during the log write

    tailfuse.train("cifar10_lt_quick", run, overrides, resume=True)

    expected = load_checkpoint(straight / "checkpoints" / "last.pt")["session"]["model"]
    resumed = load_checkpoint(run / "checkpoints" / "last.pt")["session"]["model"]
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)
    straight_results = json.loads((straight / "results.json").read_text())
    resumed_results = json.loads((run / "results.json").read_text())
    assert resumed_results["test"] == straight_results["test"]
    assert resumed_results["selection"] == straight_results["selection"]
    assert [record["epoch"] for record in _records(run)] == [1, 2, 3]
    assert _records(run) == _records(straight)
    assert all(
        set(TIMING) <= json.loads(line).keys()
        for line in (run / "metrics.jsonl").read_text().splitlines()[-1:]
    )
    assert not [p for p in run.rglob("*.tmp")]
