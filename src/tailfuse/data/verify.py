"""``tailfuse data verify``: check every image a list file names, before a long run finds out.

Each listed image is opened and fully decoded with the decoder training uses; the report
lists the missing (no such file), unreadable (exists, cannot be read) and corrupt (read,
cannot be decoded) images with their paths, and records the SHA-256 of the list file so a
run can be tied to the exact list it verified. Nothing is trained or written besides the
report.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tailfuse.data.sources import read_labelled_list
from tailfuse.errors import DataError
from tailfuse.files import write_text_atomically

PROBLEM_KINDS = ("missing", "unreadable", "corrupt")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_image(path: str) -> tuple[str, str] | None:
    """``None`` for a decodable image, else ``(kind, reason)`` with kind in
    :data:`PROBLEM_KINDS`."""
    from torchvision.io import ImageReadMode, decode_image

    file = Path(path)
    if not file.exists():
        return "missing", "no such file"
    try:
        data = file.read_bytes()
    except OSError as error:
        return "unreadable", f"{type(error).__name__}: {error.strerror or error}"
    if not data:
        return "corrupt", "empty file"
    try:
        import torch

        decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        return "corrupt", str(error).splitlines()[0][:200]
    return None


def _check_chunk(paths: list[str]) -> list[tuple[str, str] | None]:
    return [check_image(path) for path in paths]


def verify_list(list_path: str | Path, root: str | Path, workers: int = 0) -> dict:
    """Check every image of ``list_path`` (txt or iNaturalist JSON)
    under ``root``; returns the report."""
    list_path, root = Path(list_path).expanduser(), Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    paths, labels, _ = read_labelled_list(root, list_path)
    chunks = [paths[start : start + 256] for start in range(0, len(paths), 256)]
    if workers > 0:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = [result for chunk in pool.map(_check_chunk, chunks) for result in chunk]
    else:
        results = [result for chunk in chunks for result in _check_chunk(chunk)]
    problems: dict[str, list[dict]] = {kind: [] for kind in PROBLEM_KINDS}
    for path, result in zip(paths, results, strict=True):
        if result is not None:
            kind, reason = result
            problems[kind].append({"path": path, "reason": reason})
    return {
        "list": str(list_path),
        "list_sha256": file_sha256(list_path),
        "root": str(root),
        "images": len(paths),
        "classes": int(labels.max()) + 1,
        "ok": len(paths) - sum(len(items) for items in problems.values()),
        **problems,
    }


def format_report(report: dict) -> str:
    """A short text version of a report: counts, then every problem with its path."""
    lines = [
        f"{report['list']} (sha256 {report['list_sha256'][:16]}): {report['images']} images, "
        f"{report['classes']} classes, {report['ok']} ok, "
        + ", ".join(f"{len(report[kind])} {kind}" for kind in PROBLEM_KINDS)
    ]
    for kind in PROBLEM_KINDS:
        lines.extend(f"  {kind}: {item['path']} ({item['reason']})" for item in report[kind])
    return "\n".join(lines)


def write_report(reports: list[dict], path: str | Path) -> None:
    """Save the reports as JSON, atomically (:func:`~tailfuse.files.write_text_atomically`:
    synced to disk, then renamed; a failed write leaves the old report and a clear error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(reports, indent=2))
