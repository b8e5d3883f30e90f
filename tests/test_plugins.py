"""Plugin discovery: built-ins, in-process plugins, entry points, the installed example package."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import types

import pluggy
import pytest

from bench import hookimpl
from bench.cli import main
from bench.contracts import Sampler, SamplerFamily
from bench.errors import PluginError, UsageError
from bench.plugins import (
    BUILTIN_SOURCE,
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    PluginLoadError,
    get_plugin_manager,
)
from bench.registry import DuplicateNameError, PluginContractError, Registry, UnknownNameError
from samplers.reference import TargetDraws
from targets.mixtures import gmm3d
from tests.conftest import registered


class Named(TargetDraws):
    def __init__(self, name: str) -> None:
        self.name = name


def test_builtins_registered_with_their_source(plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)
    assert registry.targets["gmm3d"].source == BUILTIN_SOURCE
    assert registry.samplers["target-draws"].source == BUILTIN_SOURCE
    assert "target-draws" in registry.default_samplers()


def test_a_sampler_out_of_the_default_run_runs_only_when_named(plugin_manager, capsys):
    named_only = Named("named-only")
    named_only.in_default_run = False

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(named_only)
            register(Named("by-default"))

    with registered(plugin_manager, Plugin(), "defaults-plugin") as registry:
        assert "by-default" in registry.default_samplers()
        assert "named-only" not in registry.default_samplers()
        assert registry.sampler("named-only") is named_only  # still resolvable by name
    assert main(["list", "--json"]) == 0  # the installed plugins: the built-ins' flags
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)["samplers"]}
    assert listed["pings-pf"]["in_default_run"] is False and listed["pings"]["in_default_run"] is True
    # A family runs by default through its defaults; one with none runs only when named.
    assert listed["meanflow-<steps>"]["in_default_run"] is False and listed["meanflow-<steps>"]["defaults"] == []
    assert next(s for s in listed.values() if s["name"].startswith("ddim-"))["in_default_run"] is True
    assert main(["list"]) == 0
    table = capsys.readouterr().out
    assert next(line for line in table.splitlines() if line.startswith("meanflow-<steps>")).endswith(
        "(runs when named)")


def test_builtin_ablations_run_only_when_named(plugin_manager):
    defaults = Registry.from_plugin_manager(plugin_manager).default_samplers()
    assert {"pings", "pings-pf-distill", "dpm-solver++-2m-20", "distilled-1"} <= set(defaults)
    assert not {"pings-pf", "distilled-ode-1", "dpm-solver-2-20", "dpm-solver-2-20@exact", "meanflow-1"} & set(defaults)


def test_in_process_plugin_is_registered_and_removed(plugin_manager):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(Named("in-process"))

    with registered(plugin_manager, Plugin(), "in-process-plugin") as registry:
        assert registry.samplers["in-process"].source == "test plugin in-process-plugin"
    assert "in-process" not in Registry.from_plugin_manager(plugin_manager).samplers


def test_duplicate_name_names_both_sources(plugin_manager):
    class Plugin:
        @hookimpl
        def register_targets(self, register):
            register(gmm3d())

    with pytest.raises(DuplicateNameError, match=r"'gmm3d'.*pingsbench \(built-in\).*test plugin dup"):
        with registered(plugin_manager, Plugin(), "dup"):
            pass


def test_misspelled_hook_is_caught(plugin_manager):
    class Plugin:
        @hookimpl
        def register_sampler(self, register):  # missing "s"
            register(Named("never"))

    with pytest.raises(pluggy.PluginValidationError, match="register_sampler"):
        with registered(plugin_manager, Plugin(), "typo"):
            pass


def test_registering_a_non_sampler_is_a_type_error(plugin_manager):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(object())

    with pytest.raises(TypeError, match="not a bench.contracts.Sampler"):
        with registered(plugin_manager, Plugin(), "bad-type"):
            pass


def test_unknown_name_lists_available_and_suggests(plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)
    with pytest.raises(UnknownNameError) as info:
        registry.sampler("target-draw")
    assert "Did you mean target-draws" in str(info.value)
    assert "Available samplers:" in str(info.value) and "target-draws" in info.value.available
    with pytest.raises(UnknownNameError, match="gmm3d"):
        registry.target("gmm4d")


def _fake_entry_point(module: types.ModuleType, name: str):
    dist = types.SimpleNamespace(name="fake-dist", version="9.9")
    return types.SimpleNamespace(name=name, value=f"{module.__name__}", dist=dist, load=lambda: module)


def test_entry_point_plugin_is_discovered_with_its_distribution(monkeypatch):
    module = types.ModuleType("fake_pingsbench_plugin")

    @hookimpl
    def register_samplers(register):
        register(Named("from-entry-point"))

    module.register_samplers = register_samplers
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [_fake_entry_point(module, "fake")])
    registry = Registry.from_plugin_manager(get_plugin_manager(load_entry_points=True))
    assert registry.samplers["from-entry-point"].source == "fake-dist 9.9"


def test_autoload_can_be_disabled_by_environment(monkeypatch):
    module = types.ModuleType("fake_pingsbench_plugin")
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [_fake_entry_point(module, "fake")])
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    assert get_plugin_manager().get_plugin("fake") is None
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "0")
    assert get_plugin_manager().get_plugin("fake") is module


def test_broken_entry_point_names_its_distribution(monkeypatch):
    def boom():
        raise ImportError("no module named 'missing_dep'")

    entry_point = types.SimpleNamespace(name="broken", value="broken_mod", load=boom,
                                        dist=types.SimpleNamespace(name="broken-dist", version="1"))
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [entry_point])
    with pytest.raises(PluginLoadError, match="broken-dist.*missing_dep"):
        get_plugin_manager(load_entry_points=True)


def test_plugin_manager_has_no_import_side_effects():
    # Two managers are independent: registering into one does not leak into the other.
    first, second = get_plugin_manager(False), get_plugin_manager(False)
    first.register_from(types.ModuleType("x"), "x", "test")
    assert second.get_plugin("x") is None


@pytest.mark.skipif(
    importlib.util.find_spec("pingsbench_example") is None and not os.environ.get("CI"),
    reason="example plugin not installed (pip install -e examples/pingsbench-example); required in CI",
)
def test_installed_example_package_is_discovered(monkeypatch):
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    registry = Registry.from_plugin_manager(get_plugin_manager())
    assert registry.targets["ring2d"].source.startswith("pingsbench-example ")
    sampler = registry.samplers["gaussian-fit"]
    assert sampler.source.startswith("pingsbench-example ") and isinstance(sampler.obj, Sampler)


# --------------------------------------------------------------------------- start-up integrity (issue 11)


class NamedFamily(SamplerFamily):
    """A plugin family: ``regex`` is a string here, compiled once."""

    def __init__(self, pattern: str, regex: str, defaults=(), sweep=()) -> None:
        self.pattern, self.regex = pattern, re.compile(regex)
        self.defaults, self.sweep = tuple(defaults), tuple(sweep)

    def build(self, name, match):
        return Named(name)


def _entry_point(name: str, dist: str, load, value: str = "plugin_module"):
    return types.SimpleNamespace(name=name, value=value, load=load,
                                 dist=types.SimpleNamespace(name=dist, version="1.0"))


def _module_registering(*samplers) -> types.ModuleType:
    module = types.ModuleType("plugin_module")

    @hookimpl
    def register_samplers(register):
        for sampler in samplers:
            register(sampler)

    module.register_samplers = register_samplers
    return module


@pytest.fixture
def entry_points(monkeypatch):
    """Install fake ``pingsbench`` entry points (``[(name, dist, module_or_loader), ...]``) for autoloading."""
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(DISABLE_PLUGINS_ENV, raising=False)

    def install(*specs):
        points = [_entry_point(name, dist, item if callable(item) else (lambda item=item: item))
                  for name, dist, item in specs]
        monkeypatch.setattr("importlib.metadata.entry_points", lambda group: points)

    return install


SMOKE_RUN = ["run", "--samplers", "target-draws", "--targets", "gmm3d", "--profile", "smoke", "--n", "50",
             "--repeats", "1", "--warmup", "0", "--no-progress"]


@pytest.mark.parametrize("family, shared", [
    # The case: a plugin family ddim-<n> whose default ddim-12 the built-in ddim-<steps> also matches.
    (NamedFamily("ddim-<n>", r"ddim-(?P<n>\d+)", defaults=["ddim-12"]), "ddim-12"),
    # The other direction: the plugin's regex matches the built-in family's default ddim-50.
    (NamedFamily("dd<anything>", r"dd.*", defaults=["ddx"]), "ddim-50"),
])
def test_overlapping_families_exit_2_naming_both(family, shared, entry_points, capsys, tmp_path):
    entry_points(("overlap", "overlap-dist", _module_registering(family)))
    with pytest.raises(DuplicateNameError, match=rf"overlap-dist 1\.0.*pingsbench \(built-in\).*'{shared}'"):
        Registry.from_plugin_manager(get_plugin_manager())

    assert main([*SMOKE_RUN, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "overlap-dist" in err and "pingsbench (built-in)" in err and repr(shared) in err
    assert f"{DISABLE_PLUGINS_ENV}=overlap-dist" in err
    assert not (tmp_path / "out").exists()


def test_concrete_name_inside_a_family_is_refused(entry_points):
    entry_points(("shadow", "shadow-dist", _module_registering(Named("ddim-7"))))
    with pytest.raises(DuplicateNameError, match=r"'ddim-7' from shadow-dist 1\.0.*"
                       r"'ddim-<steps>\[\+uniform\|\+logsnr\|\+karras\|\+ld3\]\[@exact\|@paper-eps\|@silu\]'"):
        Registry.from_plugin_manager(get_plugin_manager())


def test_name_two_families_match_at_resolution_names_both(entry_points):
    # No default or sweep name overlaps, so start-up passes; resolving ddim-7 finds two families.
    entry_points(("seven", "seven-dist", _module_registering(NamedFamily("seven", r"ddim-7|seven", ["seven"]))))
    registry = Registry.from_plugin_manager(get_plugin_manager())
    assert registry.sampler("seven").name == "seven"
    with pytest.raises(DuplicateNameError, match=r"'ddim-7' is matched by two families.*built-in.*seven-dist") as info:
        registry.sampler("ddim-7")
    assert isinstance(info.value, PluginError) and set(info.value.distributions) == {"pingsbench", "seven-dist"}


def test_entry_point_name_collision_is_reported_not_dropped(entry_points, capsys, tmp_path):
    first, second = _module_registering(Named("first")), _module_registering(Named("second"))
    entry_points(("example", "first-dist", first), ("example", "second-dist", second))
    with pytest.raises(PluginLoadError, match=r"'second-dist'.*'example' is already used by distribution 'first-dist'"):
        get_plugin_manager()

    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "first" in {s["name"] for s in listing["samplers"]}
    (broken,) = listing["broken"]
    assert broken["distribution"] == "second-dist" and "'first-dist'" in broken["reason"]
    assert main([*SMOKE_RUN, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'second-dist'" in err and "'first-dist'" in err and f"{DISABLE_PLUGINS_ENV}=second-dist" in err


def test_subset_argument_hookimpls_register():
    class ZeroArgs:
        @hookimpl
        def register_samplers(self):
            return [Named("from-list"), Named("from-list-2")]

        @hookimpl
        def register_targets(self):
            return (target for target in [gmm3d()])  # a generator is an iterable too

    pm = get_plugin_manager(load_entry_points=False)
    pm.unregister(name="targets.mixtures")  # so the zero-argument hook's gmm3d is not a duplicate
    with registered(pm, ZeroArgs(), "zero-args") as registry:
        assert registry.samplers["from-list"].source == "test plugin zero-args"
        assert "from-list-2" in registry.samplers
        assert registry.targets["gmm3d"].source == "test plugin zero-args"


def test_zero_argument_hookimpl_must_return_an_iterable(plugin_manager):
    class ReturnsNumber:
        @hookimpl
        def register_samplers(self):
            return 3

    with pytest.raises(PluginContractError, match="must return an iterable"):
        with registered(plugin_manager, ReturnsNumber(), "number"):
            pass


def test_disabled_distribution_is_absent(entry_points, monkeypatch):
    entry_points(("fake", "fake-dist", _module_registering(Named("from-fake"))))
    assert "from-fake" in Registry.from_plugin_manager(get_plugin_manager()).samplers
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "other, Fake_Dist")  # names compare as pip does
    pm = get_plugin_manager()
    assert pm.get_plugin("fake") is None and pm.disabled == ["fake-dist"]
    assert "from-fake" not in Registry.from_plugin_manager(pm).samplers
    assert "target-draws" in Registry.from_plugin_manager(pm).samplers


class RaisesInHook:
    @hookimpl
    def register_samplers(self, register):
        register(Named("registered-before-the-error"))
        raise RuntimeError("hook exploded")


class Misspelled:
    @hookimpl
    def register_sampler(self, register):
        register(Named("never"))


class WrongType:
    @hookimpl
    def register_targets(self, register):
        register("gmm9d")


class UnknownArgument:
    @hookimpl
    def register_samplers(self, register, device):
        register(Named("never"))


class Duplicate:
    @hookimpl
    def register_targets(self, register):
        register(gmm3d())


class RegistersAndReturns:
    @hookimpl
    def register_samplers(self, register):
        register(Named("registered"))
        return [Named("returned-and-lost")]


class RefusesItsDefault(NamedFamily):
    def build(self, name, match):
        raise ValueError(f"{self.pattern} takes n ≥ 1, got 0")


def _import_error():
    raise ImportError("No module named 'missing_dependency'")


BROKEN_PLUGINS = {
    "import error": (_import_error, "missing_dependency"),
    "misspelled hook": (Misspelled(), "'register_sampler', which is not a pingsbench hook"),
    "hook raises": (RaisesInHook(), "RuntimeError: hook exploded"),
    "wrong type": (WrongType(), "not a bench.contracts.Target"),
    "argument the spec lacks": (UnknownArgument(), "device"),
    "duplicate name": (Duplicate(), "'gmm3d' is registered twice"),
    "overlapping family": (NamedFamily("ddim-<n>", r"ddim-(?P<n>\d+)", ["ddim-12"]), "overlap"),
    "returns beside register": (RegistersAndReturns(), "returned a value, which would be ignored"),
    "family refuses its default": (RefusesItsDefault("bd-<n>", r"bd-(?P<n>\d+)", ["bd-0"]),
                                   "lists 'bd-0' in its defaults or sweep but refuses it"),
}


@pytest.mark.parametrize("kind", list(BROKEN_PLUGINS))
def test_list_survives_a_broken_plugin_and_run_refuses_in_one_line(kind, entry_points, capsys, tmp_path):
    plugin, reason = BROKEN_PLUGINS[kind]
    if isinstance(plugin, NamedFamily):
        plugin = _module_registering(plugin)
    entry_points(("good", "good-dist", _module_registering(Named("good-sampler"))),
                 ("bad", "bad-dist", plugin))

    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (broken,) = listing["broken"]
    assert broken["plugin"] == "bad" and broken["distribution"] == "bad-dist" and reason in broken["reason"]
    names = {s["name"] for s in listing["samplers"]}
    assert {"good-sampler", "target-draws"} <= names
    assert "registered-before-the-error" not in names  # a broken plugin is left out entirely
    assert main(["list"]) == 0
    assert "broken: " in capsys.readouterr().out

    for command in ([*SMOKE_RUN, "--out", str(tmp_path / "out")], ["report", str(tmp_path / "results.json")],
                    ["validate", "dho", "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "plugin 'bad' from distribution 'bad-dist' is broken" in err and reason in err
        assert f"{DISABLE_PLUGINS_ENV}=bad-dist" in err
    assert not (tmp_path / "out").exists()

    assert main(["-v", *SMOKE_RUN, "--out", str(tmp_path / "out")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_family_rule_surfaces_as_a_usage_error_naming_the_sampler(plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)
    with pytest.raises(UsageError, match=r"sampler 'dpm-solver-2-3' .*dpm-solver-2-<nfe>.* multiple of 2, got 3"):
        registry.sampler("dpm-solver-2-3")


def test_errors_are_usage_and_plugin_errors():
    assert issubclass(UnknownNameError, UsageError) and issubclass(UnknownNameError, LookupError)
    assert issubclass(DuplicateNameError, PluginError) and issubclass(PluginLoadError, PluginError)


@pytest.mark.parametrize("typo, suggestion", [("ddim-10@exat", "ddim-10@exact"), ("DDIM-10", "ddim-10"),
                                              ("target-draw", "target-draws")])
def test_unknown_sampler_suggests_family_members_ignoring_case(typo, suggestion, plugin_manager):
    with pytest.raises(UnknownNameError, match=f"Did you mean [^?]*\\b{re.escape(suggestion)}\\b"):
        Registry.from_plugin_manager(plugin_manager).sampler(typo)
