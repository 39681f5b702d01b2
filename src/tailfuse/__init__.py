"""tailfuse: long-tailed visual recognition, reproducible from one recipe file.

The package imports lazily: ``import tailfuse`` (and ``tailfuse --help``) does not load
torch; the first use of an API function does, and recipes register the methods (and
plugins) when they are validated (``config.build_config``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "train": "tailfuse.api",
    "evaluate": "tailfuse.api",
    "data_summary": "tailfuse.api",
    "bench": "tailfuse.api",
    "sweep": "tailfuse.api",
    "compare": "tailfuse.api",
    "predict": "tailfuse.api",
    "export": "tailfuse.api",
    "RunConfig": "tailfuse.config",
    "load_recipe": "tailfuse.config",
    "TailfuseError": "tailfuse.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "methods":  # ``tailfuse.methods`` as an attribute, as before
        return importlib.import_module("tailfuse.methods")
    raise AttributeError(f"module 'tailfuse' has no attribute {name!r}")
