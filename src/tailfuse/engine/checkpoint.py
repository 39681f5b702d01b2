"""Checkpoints: written atomically, loaded without executing code (``weights_only=True``)."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailfuse.errors import CheckpointError

CHECKPOINT_FORMAT = "tailfuse-checkpoint/1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to a temporary file in the same folder, then rename it over ``path``.

    A crash or a full disk mid-write leaves the previous checkpoint intact; a failed write
    is one :class:`CheckpointError` that says so (torch's own message for a full disk is an
    ``inline_container`` assertion).
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except Exception as error:  # noqa: BLE001 - every failed write is the same user-facing error
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        reason = (
            error.strerror
            if isinstance(error, OSError) and error.strerror
            else _write_failure(error, path)
        )
        kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}; {kept}") from None
    except BaseException:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _write_failure(error: Exception, path: Path) -> str:
    """A readable cause for a failed ``torch.save``: usually a full disk or a file-size limit."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        return f"no space left on the device ({free // 2**20} MiB free)"
    first_line = " ".join(str(error).split())[:160]
    return (
        "the write failed, likely a full disk or a file-size limit "
        f"({type(error).__name__}: {first_line})"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a tailfuse checkpoint on the CPU; a missing, corrupt or foreign
    file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every unreadable file is the same user error
        raise CheckpointError(
            f"checkpoint {path} is unreadable or truncated ({type(error).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a tailfuse checkpoint")
    return state


def load_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """:func:`load_checkpoint` of a training run's checkpoint, refusing one that lacks a part.

    A hand-edited or foreign dict without its recipe, weights or data summary is one
    :class:`CheckpointError` naming what is missing, not a ``KeyError`` later.
    """
    state = load_checkpoint(path)
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if not missing and isinstance(state["session"], dict):
        missing = [
            f"session.{key}" for key in ("model", "method_modules") if key not in state["session"]
        ]
    if not missing and isinstance(state["data"], dict):
        missing = [
            f"data.{key}"
            for key in ("class_names", "class_counts", "subset_checksum")
            if key not in state["data"]
        ]
    if missing or not all(isinstance(state[key], dict) for key in ("config", "session", "data")):
        raise CheckpointError(
            f"checkpoint {path} is incomplete (missing {', '.join(missing) or 'sections'})"
        )
    return state


#: Top-level entries every tailfuse checkpoint holds.
REQUIRED_KEYS = ("config", "epoch", "session", "data", "best")


def load_weights(
    module: torch.nn.Module, weights: Any, path: str | Path, what: str = "model"
) -> None:
    """``module.load_state_dict(weights)``; missing keys or other shapes are one
    :class:`CheckpointError`."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path} holds no {what} weights")
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = " ".join(lines[1:3] if len(lines) > 1 else lines)[:240]
        raise CheckpointError(
            f"checkpoint {path} does not fit this recipe's {what}: {detail}"
        ) from None


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states (torch, CUDA, numpy, random) as checkpoint-safe values."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
