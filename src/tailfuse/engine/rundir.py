"""A run directory's safety: one process at a time, no silent overwrite, a log that matches.

:func:`open_run_directory` creates ``--out`` before any data is read (so an unwritable
folder fails at once), takes an exclusive lock held for the run's lifetime (two runs on
one ``--out`` would interleave), refuses to replace an earlier run's results unless asked,
and removes temporary files a killed run left behind. :func:`write_metrics_log` rewrites
``metrics.jsonl`` atomically, so a kill never leaves a torn line (issue 10 items 7-9).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from pathlib import Path

from tailfuse.errors import TailfuseError
from tailfuse.eval.report import json_text
from tailfuse.files import write_text_atomically

LOCK_NAME = ".tailfuse.lock"
#: Files and folders a training run writes into its directory.
RUN_FILES = (
    "config.yaml",
    "data_summary.json",
    "metrics.jsonl",
    "starts.jsonl",
    "results.json",
    "report.md",
    "per_class_accuracy.png",
    "checkpoints",
)
#: Keys of a metrics.jsonl record that measure the machine, not the run (not checkpointed).
TIMING_KEYS = ("seconds", "images_per_second")


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def make_output_folder(path: Path, what: str = "--out") -> None:
    """Create ``path`` (and parents); an unwritable place or a file in the way is one error."""
    if path.exists() and not path.is_dir():
        raise TailfuseError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TailfuseError(f"cannot create {what} folder {path}: {_reason(error)}") from None


def check_output_folder(path: Path, what: str = "--out") -> None:
    """Refuse, creating nothing, an output folder :func:`make_output_folder` could not make.

    For commands that read their inputs first (``eval``): a file in the way (``path`` or a
    parent) or an unwritable nearest existing folder is one error before any work, and a
    mistake in the inputs then leaves no empty folder behind.
    """
    target = Path(os.path.abspath(path))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == target and not target.is_dir():
        raise TailfuseError(f"{what} {path} is a file, not a folder")
    if not existing.is_dir():
        raise TailfuseError(f"cannot create {what} folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TailfuseError(f"cannot create {what} folder {path}: {existing} is not writable")


class RunLock:
    """An exclusive ``flock`` on ``DIR/.tailfuse.lock``, held until :meth:`release`.

    The kernel drops it when the process dies, so a killed run never leaves it behind.
    """

    def __init__(self, directory: Path):
        self.path = directory / LOCK_NAME
        try:
            self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise TailfuseError(f"cannot write to {directory}: {_reason(error)}") from None
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.descriptor)
            raise TailfuseError(
                f"{directory} is in use by another tailfuse run (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.descriptor is not None:
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def training_process(directory: Path) -> int | None:
    """The pid of the process that holds ``directory``'s run lock, else None.

    Found without taking the lock (a run starting at that moment must not find it taken): on
    Linux from ``/proc/locks``, the kernel's list of held locks by file; elsewhere from the pid
    the holder wrote into the lock file, if that process is alive.
    """
    path = directory / LOCK_NAME
    try:
        status = path.stat()
    except OSError:
        return None
    try:
        held = Path("/proc/locks").read_text()
    except OSError:
        held = None
    if held is not None:
        file_id = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
        for line in held.splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == file_id:
                return int(fields[4])
        return None
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def holds_results(directory: Path) -> list[str]:
    """The files of an earlier run in ``directory`` that starting afresh would destroy.

    A run that died before its first checkpoint (only its config, data summary and an
    empty log) holds nothing to lose and is not listed.
    """
    found = []
    checkpoints = directory / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("*.pt")):
        found.append("checkpoints/")
    for name in ("results.json", "report.md"):
        if (directory / name).exists():
            found.append(name)
    log = directory / "metrics.jsonl"
    if log.is_file() and log.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def remove_orphan_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files a killed writer left (``.NAME.*.tmp``); only call under the lock."""
    removed = []
    for folder in (directory, directory / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def open_run_directory(directory: Path, resume: bool, overwrite: bool = False) -> RunLock:
    """Create and lock ``directory`` for a training run; returns the held lock.

    Without ``resume``, a directory holding an earlier run's checkpoints, log or results
    is refused unless ``overwrite``, which deletes that run's files first.
    """
    if resume and not directory.is_dir():
        raise TailfuseError(f"nothing to resume: {directory} does not exist")
    make_output_folder(directory)
    lock = RunLock(directory)
    try:
        if not resume:
            earlier = holds_results(directory)
            if earlier and not overwrite:
                raise TailfuseError(
                    f"{directory} already holds a run ({', '.join(earlier)}); pass --resume to "
                    "continue it, --overwrite to replace it, or choose another --out"
                )
            if overwrite:
                for name in RUN_FILES:
                    path = directory / name
                    if path.is_dir():
                        shutil.rmtree(path)
                    elif path.exists():
                        path.unlink()
        remove_orphan_temporaries(directory)
    except BaseException:
        lock.release()
        raise
    return lock


def write_metrics_log(path: Path, records: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` (one JSON record per epoch) in one atomic step."""
    write_text_atomically(path, "".join(json_text(record) + "\n" for record in records))


def checkpoint_record(record: dict) -> dict:
    """A log record without its timing, as kept in checkpoints (so equal runs save equal bytes)."""
    return {key: value for key, value in record.items() if key not in TIMING_KEYS}


def _same_values(first: dict, second: dict) -> bool:
    if first.keys() != second.keys():
        return False
    for key, value in first.items():
        other = second[key]
        both_nan = (
            isinstance(value, float)
            and isinstance(other, float)
            and math.isnan(value)
            and math.isnan(other)
        )
        if value != other and not both_nan:
            return False
    return True


def restored_log(path: Path, history: list[dict]) -> list[dict]:
    """The log of a resumed run: the checkpoint's ``history``, with the timing of surviving lines.

    Lines of the old ``metrics.jsonl`` that are torn, missing or from epochs after the
    checkpoint are dropped; the checkpoint's records are the truth.
    """
    surviving = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if isinstance(record, dict) and "epoch" in record:
                surviving[record["epoch"]] = record
    restored = []
    for record in history:
        old = surviving.get(record["epoch"])
        if old is not None and _same_values(checkpoint_record(old), record):
            restored.append(old)
        else:
            restored.append(dict(record))
    return restored


def legacy_log(path: Path, completed_epochs: int) -> list[dict]:
    """The parseable lines of ``metrics.jsonl`` up to ``completed_epochs``
    (checkpoints without history)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("epoch"), int)
            and record["epoch"] <= completed_epochs
        ):
            kept.append(record)
    return kept
