"""What produced a result: tailfuse and torch versions, git commit, device,
precision, command line."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import tailfuse


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the tailfuse source tree when it is a git checkout (``+dirty`` with
    local edits), else None."""
    source = Path(tailfuse.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "."],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit or None


def provenance(device: str, precision: str) -> dict:
    """The ``environment`` record of ``results.json``."""
    return {
        "tailfuse": tailfuse.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "cuda_device": torch.cuda.get_device_name(torch.device(device))
        if device.startswith("cuda")
        else None,
        "precision": precision,
        "command": " ".join(sys.argv),
    }


def start_record(start_epoch: int) -> dict:
    """One line of a run's ``starts.jsonl``: when this process started (or resumed) the run,
    from which epoch, with which commit and command.

    A run resumed across sessions can be trained by several commits; ``results.json`` lists
    every start (``environment.starts``).
    """
    return {
        "epoch": start_epoch,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
    }
