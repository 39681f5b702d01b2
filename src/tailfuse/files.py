"""Atomic file writes shared by every layer: a reader or a crash never sees a half-written file."""

from __future__ import annotations

import os
from pathlib import Path

from tailfuse.errors import TailfuseError


def write_text_atomically(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to a hidden temporary sibling, then rename it over ``path``.

    A reader (or a crash, or a full disk) never sees a half-written file: ``path`` holds the
    old content or the new. Leftover ``.*.tmp`` siblings are removed when a run resumes.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb" if isinstance(text, bytes) else "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise TailfuseError(
            f"cannot write {path}: {error.strerror or type(error).__name__}"
        ) from None
