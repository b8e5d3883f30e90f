"""Name → plugin object, built by calling every plugin's registration hooks."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Generic, Iterable, TypeVar

from bench.contracts import Sampler, SamplerFamily, Target
from bench.identity import target_identity
from bench.plugins import PluginManager

T = TypeVar("T")


class UnknownNameError(LookupError):
    """A requested sampler or target is not registered; the message lists what is."""

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        close = difflib.get_close_matches(name, self.available, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Available {kind}s: {', '.join(self.available)}")


class DuplicateNameError(ValueError):
    """Two plugins registered the same name."""


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    obj: T
    source: str


def _check_name(kind: str, obj: object) -> str:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{kind} {obj!r} has no name")
    return name


class Registry:
    """All registered targets, samplers and sampler families, with their sources."""

    def __init__(self) -> None:
        self.targets: dict[str, Entry[Target]] = {}
        self.samplers: dict[str, Entry[Sampler]] = {}
        self.families: dict[str, Entry[SamplerFamily]] = {}

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager) -> "Registry":
        """Call each plugin's hooks with a ``register`` callback that knows the plugin's source."""
        pm.check_pending()
        registry = cls()
        for impl in pm.hook.register_targets.get_hookimpls():
            source = pm.source_of(impl.plugin)
            impl.function(register=lambda target, source=source: registry.add_target(target, source))
        for impl in pm.hook.register_samplers.get_hookimpls():
            source = pm.source_of(impl.plugin)
            impl.function(register=lambda sampler, source=source: registry.add_sampler(sampler, source))
        return registry

    def add_target(self, target: Target, source: str) -> None:
        if not isinstance(target, Target):
            raise TypeError(f"{source} registered {target!r}, which is not a bench.contracts.Target")
        name = _check_name("target", target)
        if name in self.targets:
            raise DuplicateNameError(
                f"target {name!r} is registered twice: by {self.targets[name].source} and by {source}"
            )
        target_identity(target, source)  # a target whose cache identity cannot be computed stops start-up
        self.targets[name] = Entry(target, source)

    def add_sampler(self, sampler: Sampler | SamplerFamily, source: str) -> None:
        if isinstance(sampler, SamplerFamily):
            pattern = sampler.pattern
            clash = self.families.get(pattern) or next(
                (self.samplers[n] for n in sampler.defaults if n in self.samplers), None
            )
            if clash is not None:
                raise DuplicateNameError(
                    f"sampler family {pattern!r} is registered twice: by {clash.source} and by {source}"
                )
            self.families[pattern] = Entry(sampler, source)
            return
        if not isinstance(sampler, Sampler):
            raise TypeError(f"{source} registered {sampler!r}, which is not a bench.contracts.Sampler")
        name = _check_name("sampler", sampler)
        previous = self.samplers.get(name) or next(
            (entry for entry in self.families.values() if entry.obj.regex.fullmatch(name)), None
        )
        if previous is not None:
            raise DuplicateNameError(f"sampler {name!r} is registered twice: by {previous.source} and by {source}")
        self.samplers[name] = Entry(sampler, source)

    def target(self, name: str) -> Target:
        try:
            return self.targets[name].obj
        except KeyError:
            raise UnknownNameError("target", name, self.targets) from None

    def sampler(self, name: str) -> Sampler:
        """Resolve a concrete name first, then each family's pattern (``ddim-7``)."""
        if name in self.samplers:
            return self.samplers[name].obj
        for entry in self.families.values():
            sampler = entry.obj.resolve(name)
            if sampler is not None:
                return sampler
        raise UnknownNameError("sampler", name, [*self.samplers, *self.families])

    def sampler_source(self, name: str) -> str:
        if name in self.samplers:
            return self.samplers[name].source
        for entry in self.families.values():
            if entry.obj.regex.fullmatch(name):
                return entry.source
        raise UnknownNameError("sampler", name, [*self.samplers, *self.families])

    def default_samplers(self) -> list[str]:
        """Concrete samplers plus every family's defaults, in registration order."""
        names = list(self.samplers)
        for entry in self.families.values():
            names.extend(n for n in entry.obj.defaults if n not in names)
        return names

    def sweep_samplers(self) -> list[str]:
        """Every family's sweep names plus the concrete samplers (one point each)."""
        names = list(self.samplers)
        for entry in self.families.values():
            names.extend(n for n in entry.obj.sweep if n not in names)
        return names
