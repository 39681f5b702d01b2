"""Plugins: methods, backbones, losses and samplers registered from outside tailfuse.

A plugin is a Python module that registers into the registries where tailfuse's own
parts are defined (``methods.base.register_method``, ``models.BACKBONES``,
``losses.LOSSES``, ``data.samplers.register_sampler``). It is loaded

- from an installed distribution's entry point in the ``tailfuse.plugins`` group
  (``[project.entry-points."tailfuse.plugins"] mine = "my_package.tailfuse_plugin"``);
  a value naming a callable (``module:function``) is called once after import; or
- from a recipe's ``imports:`` list: module names, or ``.py`` files (relative paths are
  resolved against the recipe's folder, like ``base:``).

:func:`load_plugins` runs before every recipe is validated (``config.build_config``), so
``tailfuse train``, ``eval``, ``predict`` and ``export`` all know the plugin's names.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tailfuse.errors import ConfigError

ENTRY_POINT_GROUP = "tailfuse.plugins"

_entry_points_loaded = False
_imported: set[str] = set()


def load_entry_point_plugins() -> list[str]:
    """Import every ``tailfuse.plugins`` entry point once per process; returns their names."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    names = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:  # noqa: BLE001
            # a broken plugin is the user's to fix, named here
            raise ConfigError(
                f"plugin '{entry_point.name}' ({entry_point.value}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from None
        if callable(loaded):
            loaded()
        names.append(entry_point.name)
    return names


def import_plugin(reference: str) -> None:
    """Import one ``imports:`` entry: a module name, or the path of a ``.py`` file."""
    if reference in _imported:
        return
    path = Path(reference).expanduser()
    try:
        if reference.endswith(".py"):
            if not path.is_file():
                where = "" if path.is_absolute() else f" next to the recipe or in {Path.cwd()}"
                raise ConfigError(f"imports: plugin file {reference} does not exist{where}")
            module_name = (
                f"tailfuse_plugin_{path.stem}_"
                f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
            )
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(reference)
    except ConfigError:
        raise
    except ModuleNotFoundError as error:
        raise ConfigError(f"imports: cannot import plugin '{reference}': {error}") from None
    except Exception as error:  # noqa: BLE001 - an error inside the plugin, named with it
        raise ConfigError(
            f"imports: plugin '{reference}' failed: {type(error).__name__}: {error}"
        ) from None
    _imported.add(reference)


def load_plugins(imports: list[str] | tuple[str, ...] = ()) -> None:
    """Fill the registries: tailfuse's own methods, entry-point plugins, then ``imports``."""
    importlib.import_module("tailfuse.methods")  # the built-in methods register themselves
    load_entry_point_plugins()
    for reference in imports:
        import_plugin(str(reference))
