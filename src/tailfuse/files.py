"""File reads and atomic writes shared by every layer: a reader or a crash never sees a
half-written file, and a file a user got wrong is named in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from tailfuse.errors import ConfigError, TailfuseError


def read_yaml(path: str | Path, what: str):
    """The content of the YAML file ``path`` (``None`` when empty), or a one-line
    ``ConfigError`` naming ``what`` it is: unreadable, not UTF-8, or not valid YAML."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        reason = "not valid YAML: " + " ".join(str(error).split())
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text (byte {error.start}: {error.reason})"
    except OSError as error:
        reason = error.strerror or type(error).__name__
    raise ConfigError(f"cannot read {what} {path}: {reason}")


def read_json(path: str | Path, what: str):
    """The content of the JSON file ``path``, or a one-line ``ConfigError`` naming ``what``
    it is: unreadable, not UTF-8, or not valid JSON (a damaged or half-copied file)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        reason = f"not valid JSON: {error}"
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text (byte {error.start}: {error.reason})"
    except OSError as error:
        reason = error.strerror or type(error).__name__
    raise ConfigError(f"cannot read {what} {path}: {reason}")


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
