"""Name → plugin object, built by calling every plugin's registration hooks.

Conflicts are caught when a plugin registers, not when a name is first used:
a name registered twice, a concrete sampler name that a family's regex also
matches, and two families where either one's ``defaults``/``sweep`` names are
matched by the other's regex.  The plugin registering second is the one at
fault.  A name that two families match only at resolution (``ddim-7`` beside
a plugin family ``dd.*``) is the same error, raised by :meth:`Registry.sampler`.

Target families (``gmm-<d>``) follow the same rules, with one difference: a
concrete target whose name a target family also matches is one target, not a
duplicate, as long as the family builds the same distribution for that name
(equal fingerprints); the concrete registration then answers for it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

from bench.contracts import Sampler, SamplerFamily, Target, TargetFamily
from bench.errors import PluginError, UsageError
from bench.identity import target_identity
from bench.plugins import DISABLE_PLUGINS_ENV, BrokenPlugin, PluginManager, one_line

T = TypeVar("T")


class UnknownNameError(UsageError, LookupError):
    """A requested sampler or target is not registered; the message lists what is."""

    def __init__(self, kind: str, name: str, available: Iterable[str], examples: Iterable[str] = ()) -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        # Suggest from the names and from family members (``ddim-10@exat`` → ``ddim-10@exact``), ignoring case.
        candidates = {c.lower(): c for c in [*examples, *self.available]}
        close = [candidates[c] for c in difflib.get_close_matches(name.lower(), list(candidates), n=3)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Available {kind}s: {', '.join(self.available)}")


class DuplicateNameError(PluginError):
    """Two plugins claim one name: registered twice, or matched by two families (names both)."""


class PluginContractError(PluginError, TypeError):
    """A plugin registered something that breaks a contract (not a Target or Sampler, no name, bad family)."""


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and where it came from.

    Attributes:
        obj: The target, sampler or sampler family.
        source: ``"<distribution> <version>"`` or the built-in marker (shown by ``pingsbench list``).
        plugin: Name of the plugin that registered it.
        distribution: Distribution providing the plugin (what ``PINGSBENCH_DISABLE_PLUGINS`` takes).
    """

    obj: T
    source: str
    plugin: str = ""
    distribution: str = ""


def _check_name(kind: str, obj: object, source: str) -> str:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginContractError(f"{source} registered the {kind} {obj!r}, which has no name")
    return name


def _family_names(family: SamplerFamily | TargetFamily) -> tuple[str, ...]:
    return (*family.defaults, *getattr(family, "sweep", ()))


#: ``--targets all`` runs every concrete target and every target family's defaults.
ALL_TARGETS = "all"


def _switch_off(entry: Entry[Any], which: str = "it") -> str:
    return f"switch {which} off with {DISABLE_PLUGINS_ENV}={entry.distribution} or uninstall it"

def _matching_family(families: Mapping[str, Entry[Any]], kind: str, name: str) -> Entry[Any] | None:
    """The one family (sampler or target) whose regex matches ``name``, if any.

    Raises:
        DuplicateNameError: Two families match ``name`` (names both distributions).
    """
    matches = [entry for entry in families.values() if entry.obj.regex.fullmatch(name)]
    if len(matches) > 1:
        first, second = matches[:2]
        raise DuplicateNameError(
            f"{kind} {name!r} is matched by two families: {first.obj.pattern!r} from {first.source} and "
            f"{second.obj.pattern!r} from {second.source}; {_switch_off(second, 'one')}",
            [first.distribution, second.distribution],
        )
    return matches[0] if matches else None



class Registry:
    """All registered targets, samplers and sampler families, with their sources.

    Attributes:
        targets: Concrete target name → entry.
        target_families: Target family pattern (``"gmm-<d>"``) → entry.
        samplers: Concrete sampler name → entry.
        families: Sampler family pattern (``"ddim-<steps>[+uniform|+logsnr|+karras|+ld3][@exact|@paper-eps|@silu]"``) → entry.
        broken: Plugins left out by a non-strict build (see :meth:`from_plugin_manager`).
        disabled: Distributions switched off by ``$PINGSBENCH_DISABLE_PLUGINS``.
    """

    def __init__(self) -> None:
        self.targets: dict[str, Entry[Target]] = {}
        self.target_families: dict[str, Entry[TargetFamily]] = {}
        # family members built so far: one object per name, so every caller sees the same target
        self._members: dict[str, Target] = {}
        self.samplers: dict[str, Entry[Sampler]] = {}
        self.families: dict[str, Entry[SamplerFamily]] = {}
        self.broken: list[BrokenPlugin] = []
        self.disabled: list[str] = []

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager, *, strict: bool = True) -> "Registry":
        """Call each plugin's hooks with a ``register`` callback that knows the plugin's source.

        A hook implementation may take the spec's ``register`` argument or no
        argument at all (pluggy allows any subset); one without ``register``
        returns an iterable of the objects to register (or one object).

        Args:
            pm: The plugin manager (its :attr:`~bench.plugins.PluginManager.broken` plugins are carried over).
            strict: Raise the first plugin's error; otherwise record the plugin in
                :attr:`broken`, remove everything it registered and go on.

        Raises:
            DuplicateNameError: (strict) A name is claimed twice (names both sources).
            PluginContractError: (strict) A plugin registered something that is not a target or sampler.
            pluggy.PluginValidationError: (strict) A plugin implements a hook that does not exist.
            Exception: (strict) Whatever a plugin's hook raised.
        """
        registry = cls()
        if strict:
            pm.check_pending()
        else:
            pm.drop_invalid()
        registry.broken = list(pm.broken)
        registry.disabled = list(pm.disabled)
        failed: set[str] = set()
        for hook, add in ((pm.hook.register_targets, registry.add_target),
                          (pm.hook.register_samplers, registry.add_sampler)):
            for impl in hook.get_hookimpls():
                if impl.plugin_name in failed:
                    continue
                distribution = pm.distribution_of(impl.plugin)
                register = functools.partial(
                    add, source=pm.source_of(impl.plugin), plugin=impl.plugin_name, distribution=distribution
                )
                try:
                    _call_hookimpl(impl, register)
                except Exception as exc:
                    if strict:
                        raise
                    registry.remove_plugin(impl.plugin_name)
                    failed.add(impl.plugin_name)
                    registry.broken.append(BrokenPlugin(impl.plugin_name, distribution, one_line(exc), exc))
        return registry

    def raise_if_broken(self) -> None:
        """Raise the first broken plugin's one-line :class:`PluginError` (what ``run`` and friends do).

        Raises:
            PluginError: Names the distribution and how to switch it off.
        """
        if not self.broken:
            return
        first = self.broken[0]
        error = first.to_error()
        if len(self.broken) > 1:
            error = PluginError(f"{error} ({len(self.broken) - 1} more: see pingsbench list)",
                                [b.distribution for b in self.broken])
        raise error from first.error

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` registered."""
        for table in (self.targets, self.target_families, self.samplers, self.families):
            for key in [key for key, entry in table.items() if entry.plugin == plugin]:
                del table[key]
        self._members.clear()

    def add_target(
        self, target: Target | TargetFamily, source: str, *, plugin: str = "", distribution: str = ""
    ) -> None:
        """Register a concrete target or a target family.

        Raises:
            PluginContractError: Neither a :class:`~bench.contracts.Target` nor a
                :class:`~bench.contracts.TargetFamily`, no name, the reserved name
                ``all``, or a family whose ``regex`` is not compiled or does not match
                (or refuses) its own ``defaults``.
            DuplicateNameError: The name is taken, two families overlap, or a family
                builds another distribution under a concrete target's name (names both sources).
            PluginError: The target's cache identity cannot be computed.
        """
        entry = Entry(target, source, plugin, distribution or source)
        if isinstance(target, TargetFamily):
            self._check_target_family(entry)
            self.target_families[target.pattern] = entry
            return
        if not isinstance(target, Target):
            raise PluginContractError(f"{source} registered {target!r}, which is not a bench.contracts.Target",
                                      [entry.distribution])
        name = _check_name("target", target, source)
        if name == ALL_TARGETS:
            raise PluginContractError(f"{source} registered a target named {ALL_TARGETS!r}, which --targets "
                                      f"reserves for every target; rename it", [entry.distribution])
        if name in self.targets:
            raise DuplicateNameError(
                f"target {name!r} is registered twice: by {self.targets[name].source} and by {source}",
                [self.targets[name].distribution, entry.distribution],
            )
        # a target whose cache identity cannot be computed stops start-up, naming its distribution
        identity = target_identity(target, source, [entry.distribution])
        for family in self.target_families.values():
            self._check_same_member(family, name, identity, entry)
        self.targets[name] = entry

    def _check_same_member(self, family: Entry[TargetFamily], name: str, identity: dict[str, Any],
                           concrete: Entry[Target]) -> None:
        """A concrete target that ``family`` also builds must be the same distribution."""
        try:
            member = self._build_target(family, name)
        except UsageError:  # the family refuses the value: the name is not one of its members
            return
        if member is not None and target_identity(member, family.source, [family.distribution]) != identity:
            raise DuplicateNameError(
                f"target {name!r} from {concrete.source} is also a member of the family {family.obj.pattern!r} "
                f"from {family.source}, which builds another distribution under that name",
                [family.distribution, concrete.distribution],
            )

    def _check_target_family(self, entry: Entry[TargetFamily]) -> None:
        family, source = entry.obj, entry.source
        pattern = getattr(family, "pattern", None)
        if not isinstance(pattern, str) or not pattern:
            raise PluginContractError(f"{source} registered the target family {family!r}, which has no pattern",
                                      [entry.distribution])
        if not isinstance(getattr(family, "regex", None), re.Pattern):
            raise PluginContractError(f"target family {pattern!r} from {source}: regex must be a compiled "
                                      f"re.Pattern, got {type(getattr(family, 'regex', None)).__name__}",
                                      [entry.distribution])
        stray = next((n for n in family.defaults if not isinstance(n, str) or not family.regex.fullmatch(n)), None)
        if stray is not None:
            raise PluginContractError(f"target family {pattern!r} from {source} lists {stray!r} in its defaults, "
                                      f"which its own regex does not match", [entry.distribution])
        if pattern in self.target_families:
            previous = self.target_families[pattern]
            raise DuplicateNameError(
                f"target family {pattern!r} is registered twice: by {previous.source} and by {source}",
                [previous.distribution, entry.distribution],
            )
        for other in self.target_families.values():
            shared = next((n for n in family.defaults if other.obj.regex.fullmatch(n)), None) or next(
                (n for n in other.obj.defaults if family.regex.fullmatch(n)), None
            )
            if shared is not None:
                raise DuplicateNameError(
                    f"target families {pattern!r} from {source} and {other.obj.pattern!r} from {other.source} "
                    f"overlap: both match {shared!r}",
                    [other.distribution, entry.distribution],
                )
        for name in family.defaults:  # a default that its own family refuses would break every `--targets all`
            try:
                self._build_target(entry, name)
            except PluginError:
                raise
            except UsageError as exc:
                raise PluginContractError(f"target family {pattern!r} from {source} lists {name!r} in its "
                                          f"defaults but refuses it ({exc})", [entry.distribution]) from exc
        for name, concrete in self.targets.items():
            if family.regex.fullmatch(name):
                self._check_same_member(entry, name, target_identity(concrete.obj), concrete)

    def add_sampler(
        self, sampler: Sampler | SamplerFamily, source: str, *, plugin: str = "", distribution: str = ""
    ) -> None:
        """Register a concrete sampler or a sampler family.

        Raises:
            PluginContractError: Neither a :class:`~bench.contracts.Sampler` nor a
                :class:`~bench.contracts.SamplerFamily`, no name, or a family whose
                ``regex`` is not compiled or does not match its own ``defaults``/``sweep``.
            DuplicateNameError: The name is taken, a family matches it, or two
                families overlap (names both sources).
        """
        entry = Entry(sampler, source, plugin, distribution or source)
        if isinstance(sampler, SamplerFamily):
            self._check_family(entry)
            self.families[sampler.pattern] = entry
            return
        if not isinstance(sampler, Sampler):
            raise PluginContractError(f"{source} registered {sampler!r}, which is not a bench.contracts.Sampler",
                                      [entry.distribution])
        name = _check_name("sampler", sampler, source)
        previous = self.samplers.get(name)
        if previous is not None:
            raise DuplicateNameError(f"sampler {name!r} is registered twice: by {previous.source} and by {source}",
                                     [previous.distribution, entry.distribution])
        family = next((e for e in self.families.values() if e.obj.regex.fullmatch(name)), None)
        if family is not None:
            raise DuplicateNameError(
                f"sampler {name!r} from {source} is also a name of the family {family.obj.pattern!r} "
                f"from {family.source}",
                [family.distribution, entry.distribution],
            )
        self.samplers[name] = entry

    def _check_family(self, entry: Entry[SamplerFamily]) -> None:
        family, source = entry.obj, entry.source
        pattern = getattr(family, "pattern", None)
        if not isinstance(pattern, str) or not pattern:
            raise PluginContractError(f"{source} registered the sampler family {family!r}, which has no pattern",
                                      [entry.distribution])
        if not isinstance(getattr(family, "regex", None), re.Pattern):
            raise PluginContractError(f"sampler family {pattern!r} from {source}: regex must be a compiled "
                                      f"re.Pattern, got {type(getattr(family, 'regex', None)).__name__}",
                                      [entry.distribution])
        names = _family_names(family)
        stray = next((n for n in names if not isinstance(n, str) or not family.regex.fullmatch(n)), None)
        if stray is not None:
            raise PluginContractError(f"sampler family {pattern!r} from {source} lists {stray!r} in its "
                                      f"defaults or sweep, which its own regex does not match", [entry.distribution])
        for name in names:  # a default that its own family refuses would break every plain run
            try:
                self._build(entry, name)
            except PluginError:
                raise
            except UsageError as exc:
                raise PluginContractError(f"sampler family {pattern!r} from {source} lists {name!r} in its "
                                          f"defaults or sweep but refuses it ({exc})", [entry.distribution]) from exc
        if pattern in self.families:
            previous = self.families[pattern]
            raise DuplicateNameError(
                f"sampler family {pattern!r} is registered twice: by {previous.source} and by {source}",
                [previous.distribution, entry.distribution],
            )
        taken = next((n for n in self.samplers if family.regex.fullmatch(n)), None)
        if taken is not None:
            raise DuplicateNameError(
                f"sampler family {pattern!r} from {source} matches {taken!r}, a sampler from "
                f"{self.samplers[taken].source}",
                [self.samplers[taken].distribution, entry.distribution],
            )
        for other in self.families.values():
            shared = next((n for n in names if other.obj.regex.fullmatch(n)), None) or next(
                (n for n in _family_names(other.obj) if family.regex.fullmatch(n)), None
            )
            if shared is not None:
                raise DuplicateNameError(
                    f"sampler families {pattern!r} from {source} and {other.obj.pattern!r} from {other.source} "
                    f"overlap: both match {shared!r}",
                    [other.distribution, entry.distribution],
                )

    def target(self, name: str) -> Target:
        """The target called ``name``: a concrete one first, then the one family whose pattern matches (``gmm-16``).

        Family members are built once; later calls return the same object.

        Raises:
            UnknownNameError: No target or family has this name (the message lists those registered).
            UsageError: The family does not take this value (``manywell-7``); the message is the family's rule.
            DuplicateNameError: Two families match the name.
            PluginError: The family's ``build`` failed otherwise, or built something that is not a
                target of that name.
        """
        if name in self.targets:
            return self.targets[name].obj
        if name in self._members:
            return self._members[name]
        entry = self.target_family_of(name)
        target = None if entry is None else self._build_target(entry, name)
        if target is None:
            members = [n for e in self.target_families.values() for n in e.obj.defaults]
            raise UnknownNameError("target", name, [*self.targets, *self.target_families], examples=members)
        return target

    def target_family_of(self, name: str) -> Entry[TargetFamily] | None:
        """The target family whose regex matches ``name``, if any.

        Raises:
            DuplicateNameError: Two families match ``name`` (names both distributions).
        """
        return _matching_family(self.target_families, "target", name)

    def _build_target(self, entry: Entry[TargetFamily], name: str) -> Target | None:
        if name in self._members:
            return self._members[name]
        family = entry.obj
        try:
            target = family.resolve(name)
        except PluginError:
            raise
        except ValueError as exc:  # the family's rule for its values (TargetFamily.build)
            raise UsageError(f"target {name!r} is not available: {str(exc).strip()}") from exc
        except Exception as exc:
            raise PluginError(
                f"target family {family.pattern!r} from {entry.source} failed to build {name!r}: {one_line(exc)}; "
                f"{_switch_off(entry)}",
                [entry.distribution],
            ) from exc
        if target is None:
            return None
        if not isinstance(target, Target) or getattr(target, "name", None) != name:
            raise PluginContractError(
                f"target family {family.pattern!r} from {entry.source} built {target!r} for {name!r}, which is "
                f"not a bench.contracts.Target named {name!r}; {_switch_off(entry)}",
                [entry.distribution],
            )
        target_identity(target, entry.source, [entry.distribution])
        self._members[name] = target
        return target

    def default_targets(self) -> list[str]:
        """What a run without ``--targets`` runs: the concrete targets with ``in_default_run`` set."""
        return [name for name, entry in self.targets.items() if getattr(entry.obj, "in_default_run", True)]

    def all_targets(self) -> list[str]:
        """What ``--targets all`` runs: every concrete target, then every target family's defaults."""
        names = list(self.targets)
        for entry in self.target_families.values():
            names.extend(n for n in entry.obj.defaults if n not in names)
        return names

    def family_of(self, name: str) -> Entry[SamplerFamily] | None:
        """The family whose regex matches ``name``, if any.

        Raises:
            DuplicateNameError: Two families match ``name`` (names both distributions).
        """
        return _matching_family(self.families, "sampler", name)

    def sampler(self, name: str) -> Sampler:
        """Resolve a concrete name first, then the one family whose pattern matches (``ddim-7``).

        Raises:
            UnknownNameError: No sampler or family has this name.
            UsageError: The family does not take this value (``ddim-0``); the message
                is the family's rule.
            DuplicateNameError: Two families match the name.
            PluginError: The family's ``build`` failed otherwise or returned no sampler.
        """
        if name in self.samplers:
            return self.samplers[name].obj
        entry = self.family_of(name)
        sampler = None if entry is None else self._build(entry, name)
        if sampler is None:
            raise self._unknown_sampler(name)
        return sampler

    def _unknown_sampler(self, name: str) -> UnknownNameError:
        members = [n for entry in self.families.values() for n in _family_names(entry.obj)]
        return UnknownNameError("sampler", name, [*self.samplers, *self.families], examples=members)

    @staticmethod
    def _build(entry: Entry[SamplerFamily], name: str) -> Sampler | None:
        family = entry.obj
        try:
            sampler = family.resolve(name)
        except PluginError:
            raise
        except ValueError as exc:  # the family's rule for its values (SamplerFamily.build)
            raise UsageError(f"sampler {name!r} is not available: {str(exc).strip()}") from exc
        except Exception as exc:
            raise PluginError(
                f"sampler family {family.pattern!r} from {entry.source} failed to build {name!r}: {one_line(exc)}; "
                f"{_switch_off(entry)}",
                [entry.distribution],
            ) from exc
        if sampler is not None and not isinstance(sampler, Sampler):
            raise PluginContractError(
                f"sampler family {family.pattern!r} from {entry.source} built {sampler!r} for {name!r}, "
                f"which is not a bench.contracts.Sampler; {_switch_off(entry)}",
                [entry.distribution],
            )
        return sampler

    def sampler_source(self, name: str) -> str:
        if name in self.samplers:
            return self.samplers[name].source
        entry = self.family_of(name)
        if entry is None:
            raise self._unknown_sampler(name)
        return entry.source

    def default_samplers(self) -> list[str]:
        """Concrete samplers with ``in_default_run`` set, plus every family's defaults, in registration order."""
        names = [name for name, entry in self.samplers.items() if getattr(entry.obj, "in_default_run", True)]
        for entry in self.families.values():
            names.extend(n for n in entry.obj.defaults if n not in names)
        return names

    def sweep_samplers(self) -> list[str]:
        """Every family's sweep names plus the concrete samplers (one point each)."""
        names = list(self.samplers)
        for entry in self.families.values():
            names.extend(n for n in entry.obj.sweep if n not in names)
        return names


def _call_hookimpl(impl: Any, register: Callable[[Any], None]) -> None:
    """Call one hook implementation with the arguments it asks for (a subset of the spec's)."""
    if "register" in impl.argnames:
        if impl.function(register=register) is not None:
            raise PluginContractError(
                f"{impl.function.__qualname__}(register) returned a value, which would be ignored; call "
                f"register(...) for each plugin, or drop the 'register' argument and return them"
            )
        return
    returned = impl.function()
    if returned is None:
        return
    if isinstance(returned, (Target, TargetFamily, Sampler, SamplerFamily)):
        returned = [returned]
    try:
        objects = list(returned)
    except TypeError:
        raise PluginContractError(
            f"{impl.function.__qualname__}() takes no 'register' argument, so it must return an iterable of "
            f"targets or samplers, got {type(returned).__name__}"
        ) from None
    for obj in objects:
        register(obj)
