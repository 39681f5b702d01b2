"""Layers import downward only, as docs/architecture.md's layer table says: every
``import tailfuse.X`` in the package, at module level or inside a function, is checked."""

from __future__ import annotations

import ast
from pathlib import Path

import tailfuse

#: package -> the tailfuse packages it may import (besides itself); api/cli/commands and
#: engine may import anything (engine: everything above it and eval)
ALLOWED = {
    "numerics": set(),
    "errors": set(),
    "files": {"errors"},
    "config": {"errors", "files", "plugins"},  # plugins at run time, to fill the registry
    "data": {"config", "errors", "files"},
    "models": {"config", "errors", "numerics"},
    "losses": {"config", "errors", "numerics"},
    "methods": {"config", "data", "models", "losses", "errors", "files", "numerics"},
    "eval": {"errors", "files"},
    "plugins": {"config", "errors", "methods"},
    "engine": {
        "config",
        "data",
        "models",
        "losses",
        "methods",
        "eval",
        "errors",
        "files",
        "numerics",
    },
}


def imports_by_layer() -> list[tuple[str, str, str]]:
    """(file, its layer, the imported tailfuse layer) for every tailfuse import."""
    root = Path(tailfuse.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        layer = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "tailfuse" and len(parts) > 1:
                    found.append((str(path.relative_to(root)), layer, parts[1]))
    return found


def test_layers_import_downward_only():
    upward = [
        (path, imported)
        for path, layer, imported in imports_by_layer()
        if layer in ALLOWED and imported != layer and imported not in ALLOWED[layer]
    ]
    assert upward == []


def test_the_check_sees_the_imports_it_judges():
    seen = {(layer, imported) for _, layer, imported in imports_by_layer()}
    # one known import per kind: module level, inside a function, from a subpackage
    assert ("engine", "methods") in seen and ("config", "plugins") in seen
    assert ("methods", "losses") in seen and ("data", "config") in seen
