"""The plugin manager: built-ins first, then third-party entry points.

Built-in samplers and targets are ordinary plugin modules registered exactly
as a third-party package's would be; the only difference is that they are
listed here instead of being found through the ``pingsbench`` entry-point
group.  Nothing happens at import time: call :func:`get_plugin_manager`.

A plugin that cannot be used (it fails to import, implements a hook that does
not exist, reuses another distribution's entry-point name) either raises
(``strict=True``, the default for the Python API) or is recorded in
:attr:`PluginManager.broken` and left out (``strict=False``, what the CLI
uses so that ``pingsbench list`` can still show everything else).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import re

import pluggy

from bench import hookspecs
from bench.errors import PluginError

ENTRY_POINT_GROUP = "pingsbench"
#: Set to a non-empty value other than ``0`` to skip third-party plugins (built-ins still load).
DISABLE_AUTOLOAD_ENV = "PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated distribution names whose plugins are not loaded (``pingsbench-example,other``).
DISABLE_PLUGINS_ENV = "PINGSBENCH_DISABLE_PLUGINS"
BUILTIN_SOURCE = "pingsbench (built-in)"
BUILTIN_DISTRIBUTION = "pingsbench"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "targets.mixtures",
    "targets.funnel",
    "targets.manywell",
    "targets.dho",
    "samplers.reference.plugin",
    "samplers.diffusion.plugin",
    "samplers.pings.plugin",
    "samplers.flow.plugin",
    "samplers.meanflow.plugin",
    "samplers.distill.plugin",
    "samplers.consistency.plugin",
)


def normalize_distribution(name: str) -> str:
    """PEP 503 normal form (``Pingsbench_Example`` → ``pingsbench-example``), as pip compares names."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclasses.dataclass(frozen=True)
class BrokenPlugin:
    """A plugin left out because it cannot be used.

    Attributes:
        plugin: The plugin's name (its entry-point name, or the built-in module).
        distribution: The distribution to switch off or uninstall.
        reason: One line saying what is wrong.
        error: The exception behind it, for ``-v`` tracebacks.
    """

    plugin: str
    distribution: str
    reason: str
    error: BaseException | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def remedy(self) -> str:
        """What the user can do: switch the distribution off or uninstall it (reinstall for a built-in)."""
        if self.distribution == BUILTIN_DISTRIBUTION:
            return "reinstall pingsbench"
        return f"switch it off with {DISABLE_PLUGINS_ENV}={self.distribution} or uninstall it"

    def to_error(self) -> PluginError:
        """The one-line error the CLI prints for ``run``/``sweep``/``report``/``validate``."""
        return PluginError(
            f"plugin {self.plugin!r} from distribution {self.distribution!r} is broken: {self.reason}; {self.remedy}",
            [self.distribution],
        )


#: Longest reason kept from an exception's message (``pingsbench list`` shows it in a table cell).
MAX_REASON = 400


def one_line(exc: BaseException) -> str:
    """``"<Type>: <message>"`` on one line (the message alone for pingsbench's own errors)."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(message) > MAX_REASON:
        message = message[: MAX_REASON - 1] + "…"
    return message if isinstance(exc, PluginError) else f"{type(exc).__name__}: {message}".rstrip(": ")


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution provided each plugin.

    Attributes:
        sources: Plugin name → ``"<distribution> <version>"`` (or :data:`BUILTIN_SOURCE`).
        distributions: Plugin name → distribution name (what ``PINGSBENCH_DISABLE_PLUGINS`` takes).
        broken: Plugins left out by a non-strict load, in the order they were found.
        disabled: Distributions skipped because of ``PINGSBENCH_DISABLE_PLUGINS``.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.distributions: dict[str, str] = {}
        self.broken: list[BrokenPlugin] = []
        self.disabled: list[str] = []

    def register_from(self, plugin: object, name: str, source: str, distribution: str | None = None) -> None:
        """Register ``plugin`` under ``name``, remembering where it came from.

        Raises:
            pluggy.PluginValidationError: A hook implementation takes an argument its spec does not offer.
        """
        self.register(plugin, name=name)
        self.sources[name] = source
        self.distributions[name] = distribution or source

    def source_of(self, plugin: object) -> str:
        """Where ``plugin`` came from: ``"<distribution> <version>"`` or the built-in marker."""
        name = self.get_name(plugin)
        return self.sources.get(name, name or repr(plugin))

    def distribution_of(self, plugin: object) -> str:
        """The distribution that provides ``plugin`` (falls back to its source)."""
        name = self.get_name(plugin)
        return self.distributions.get(name, self.source_of(plugin))

    def unknown_hooks(self, plugin: object) -> list[str]:
        """Names of the hooks ``plugin`` implements that have no specification."""
        return [
            name
            for name, caller in vars(self.hook).items()
            if not name.startswith("_") and not caller.has_spec()
            and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
        ]

    def drop_invalid(self) -> None:
        """Unregister every plugin that implements a hook with no spec (usually a misspelling).

        Uses pluggy's own :meth:`check_pending`, one offending plugin at a time; each
        plugin dropped is appended to :attr:`broken`.
        """
        while True:
            try:
                self.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                unknown = ", ".join(repr(hook) for hook in self.unknown_hooks(exc.plugin))
                known = ", ".join(sorted(name for name, caller in vars(self.hook).items()
                                         if not name.startswith("_") and caller.has_spec()))
                reason = f"implements {unknown}, which is not a pingsbench hook (hooks: {known})"
                name = self.get_name(exc.plugin) or repr(exc.plugin)
                self.broken.append(BrokenPlugin(name, self.distribution_of(exc.plugin), reason, exc))
                self.unregister(exc.plugin)


class PluginLoadError(PluginError, RuntimeError):
    """A third-party plugin's entry point could not be imported or registered (names the distribution).

    Args:
        broken: What is wrong, with the distribution and the remedy.
    """

    def __init__(self, broken: BrokenPlugin) -> None:
        super().__init__(str(broken.to_error()), [broken.distribution])
        self.broken = broken


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("", "0")


def disabled_distributions() -> set[str]:
    """Normalised distribution names listed in ``$PINGSBENCH_DISABLE_PLUGINS``."""
    names = os.environ.get(DISABLE_PLUGINS_ENV, "").split(",")
    return {normalize_distribution(name.strip()) for name in names if name.strip()}


def get_plugin_manager(load_entry_points: bool | None = None, *, strict: bool = True) -> PluginManager:
    """Create a plugin manager with the built-ins and (unless disabled) installed plugins.

    Entry points of distributions listed in ``$PINGSBENCH_DISABLE_PLUGINS`` are
    not imported (recorded in :attr:`PluginManager.disabled`).  Entry-point names
    are global: a second distribution using a name already taken is broken
    (the message names both).

    Args:
        load_entry_points: Load the ``pingsbench`` entry-point group; default:
            yes unless ``$PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set.
        strict: Raise on the first unusable plugin; otherwise record it in
            :attr:`PluginManager.broken`, leave it out and go on.

    Raises:
        PluginLoadError: (strict) An entry point failed to import or register, or its
            name is taken by another distribution's (names both).
        pluggy.PluginValidationError: (strict) A plugin implements a hook that does
            not exist (usually a misspelling).
    """
    pm = PluginManager()
    for module_name in DEFAULT_PLUGINS:
        pm.register_from(importlib.import_module(module_name), module_name, BUILTIN_SOURCE, BUILTIN_DISTRIBUTION)
    if load_entry_points is None:
        load_entry_points = not autoload_disabled()
    if load_entry_points:
        disabled = disabled_distributions()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            dist_name = dist.name if dist else entry_point.value
            if normalize_distribution(dist_name) in disabled:
                pm.disabled.append(dist_name)
                continue
            if pm.is_blocked(entry_point.name):
                continue
            try:
                _load_entry_point(pm, entry_point, dist_name)
            except PluginLoadError as exc:
                if strict:
                    raise
                pm.broken.append(exc.broken)
    if strict:
        pm.check_pending()
    else:
        pm.drop_invalid()
    return pm


def _load_entry_point(pm: PluginManager, entry_point: importlib.metadata.EntryPoint, dist_name: str) -> None:
    def fail(reason: str, cause: BaseException | None = None) -> PluginLoadError:
        return PluginLoadError(BrokenPlugin(entry_point.name, dist_name, reason, cause))

    if pm.get_plugin(entry_point.name) is not None:
        other = pm.distributions.get(entry_point.name, "?")
        raise fail(f"its entry-point name {entry_point.name!r} is already used by distribution {other!r} "
                   f"(entry-point names are global: rename one)")
    try:
        plugin = entry_point.load()
    except Exception as exc:
        raise fail(f"failed to load {entry_point.value}: {one_line(exc)}", exc) from exc
    source = f"{dist_name} {entry_point.dist.version}" if entry_point.dist else entry_point.value
    try:
        pm.register_from(plugin, entry_point.name, source, dist_name)
    except Exception as exc:  # pluggy.PluginValidationError: a hookimpl asks for an argument no spec offers
        raise fail(f"cannot be registered: {one_line(exc)}", exc) from exc
