"""Shared test configuration.

* The latency benchmarks' options (``--pingsbench-profile``, ``--pingsbench-n``,
  ``--pingsbench-device``, used by tests/test_latency.py), and skipping every
  test that uses the ``benchmark`` fixture unless pytest runs with
  ``--benchmark-only``.
* Fixtures: ``single_thread`` (one torch thread per module), an isolated plugin
  manager, and in-process plugin registration (from bench.testing).
"""

from __future__ import annotations

from typing import ContextManager

import pytest
import torch

from bench import testing
from bench.plugins import PluginManager
from bench.registry import Registry


def pytest_addoption(parser):
    group = parser.getgroup("pingsbench", "pingsbench latency benchmarks (pytest --benchmark-only)")
    group.addoption("--pingsbench-profile", default="quick", help="training profile of benchmarked samplers")
    group.addoption("--pingsbench-n", type=int, default=10_000, help="points per sampling call")
    group.addoption("--pingsbench-device", default="auto",
                    help="auto, cpu, cuda, cuda:N or mps (a device this machine has)")


def pytest_collection_modifyitems(config, items):
    # Benchmarks train models and time them: they run only when asked for with --benchmark-only.
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark-only`")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests on one torch thread and restore the setting afterwards.

    Tiny MLPs gain nothing from intra-op threads, and on a shared 2-core machine
    two OpenMP threads spin against each other (training steps measured 6× slower).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def plugin_manager(pingsbench_plugin_manager) -> PluginManager:
    """Built-in plugins only: installed third-party plugins are not autoloaded (bench.testing's fixture)."""
    return pingsbench_plugin_manager


def registered(pm: PluginManager, plugin: object, name: str) -> ContextManager[Registry]:
    """Register ``plugin`` into ``pm`` in-process, yield the resulting registry, always unregister."""
    return testing.registered(plugin, name, plugin_manager=pm)
