"""The plugin manager: built-ins first, then third-party entry points.

Built-in samplers and targets are ordinary plugin modules registered exactly
as a third-party package's would be; the only difference is that they are
listed here instead of being found through the ``pingsbench`` entry-point
group.  Nothing happens at import time: call :func:`get_plugin_manager`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os

import pluggy

from bench import hookspecs

ENTRY_POINT_GROUP = "pingsbench"
#: Set to a non-empty value other than ``0`` to skip third-party plugins (built-ins still load).
DISABLE_AUTOLOAD_ENV = "PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_SOURCE = "pingsbench (built-in)"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "targets.gmm",
    "targets.dho",
    "samplers.reference",
    "samplers.diffusion.plugin",
    "samplers.pings",
    "samplers.flow",
    "samplers.onestep",
)


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution provided each plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}

    def register_from(self, plugin: object, name: str, source: str) -> None:
        self.register(plugin, name=name)
        self.sources[name] = source

    def source_of(self, plugin: object) -> str:
        """Where ``plugin`` came from: ``"<distribution> <version>"`` or the built-in marker."""
        name = self.get_name(plugin)
        return self.sources.get(name, name or repr(plugin))


class PluginLoadError(RuntimeError):
    """A third-party plugin's entry point could not be imported."""


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("", "0")


def get_plugin_manager(load_entry_points: bool | None = None) -> PluginManager:
    """Create a plugin manager with the built-ins and (unless disabled) installed plugins.

    Args:
        load_entry_points: Load the ``pingsbench`` entry-point group; default:
            yes unless ``$PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set.

    Raises:
        PluginLoadError: An entry point failed to import (names the distribution).
        pluggy.PluginValidationError: A plugin implements a hook that does not
            exist (usually a misspelling).
    """
    pm = PluginManager()
    for module_name in DEFAULT_PLUGINS:
        pm.register_from(importlib.import_module(module_name), module_name, BUILTIN_SOURCE)
    if load_entry_points is None:
        load_entry_points = not autoload_disabled()
    if load_entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:
                dist = entry_point.dist.name if entry_point.dist else "?"
                raise PluginLoadError(
                    f"plugin {entry_point.name!r} ({entry_point.value}) from distribution {dist!r} "
                    f"failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            dist = entry_point.dist
            pm.register_from(plugin, entry_point.name, f"{dist.name} {dist.version}" if dist else entry_point.value)
    pm.check_pending()
    return pm
