"""Plugin discovery: built-ins, in-process plugins, entry points, the installed example package."""

from __future__ import annotations

import importlib.util
import os
import types

import pluggy
import pytest

from bench import hookimpl
from bench.contracts import Sampler
from bench.plugins import BUILTIN_SOURCE, DISABLE_AUTOLOAD_ENV, PluginLoadError, get_plugin_manager
from bench.registry import DuplicateNameError, Registry, UnknownNameError
from samplers.reference import TargetDraws
from targets.gmm import gmm3d
from tests.conftest import registered


class Named(TargetDraws):
    def __init__(self, name: str) -> None:
        self.name = name


def test_builtins_registered_with_their_source(plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)
    assert registry.targets["gmm3d"].source == BUILTIN_SOURCE
    assert registry.samplers["target-draws"].source == BUILTIN_SOURCE
    assert "target-draws" in registry.default_samplers()


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
