"""pytest-benchmark latency benchmarks: every discovered sampler × target pair.

Run with ``pytest --benchmark-only`` (skipped otherwise: they train models).
Options: ``--pingsbench-profile`` (default quick), ``--pingsbench-n`` (10⁴),
``--pingsbench-device``.  Each benchmark is grouped by target and carries the
counted NFE (``nfe``, ``nfe_split``, ``warnings``) and the fidelity metrics in
``extra_info``, so ``--benchmark-json`` / ``--benchmark-compare`` work as usual.
Fitting, counting, metrics and the timed call are the runner's own
(:class:`bench.runner.PairSession`), so the two cannot diverge.
"""

from __future__ import annotations

import pytest

from bench.cache import ModelCache, default_cache_dir
from bench.contracts import UnsupportedTarget
from bench.environment import resolve_device
from bench.plugins import get_plugin_manager
from bench.profiles import get_profile
from bench.registry import Registry
from bench.runner import PairSession, RunConfig, prepare_target
from bench.timing import synchronize

# Non-strict: a broken installed plugin is left out of the benchmarks instead of breaking collection.
REGISTRY = Registry.from_plugin_manager(get_plugin_manager(strict=False), strict=False)
PAIRS = [(s, t) for t in REGISTRY.targets for s in REGISTRY.default_samplers()]


@pytest.fixture(scope="session")
def run_config(pytestconfig) -> RunConfig:
    profile = get_profile(pytestconfig.getoption("pingsbench_profile"))
    return RunConfig([], [], profile, resolve_device(pytestconfig.getoption("pingsbench_device")),
                     n=pytestconfig.getoption("pingsbench_n"), cache_dir=default_cache_dir())


@pytest.fixture(scope="session")
def model_cache(run_config) -> ModelCache:
    return ModelCache(run_config.cache_dir)


@pytest.mark.parametrize("sampler_name, target_name", PAIRS, ids=[f"{t}/{s}" for s, t in PAIRS])
def test_sampling_latency(benchmark, sampler_name, target_name, run_config, model_cache):
    # The runner's own code path (bench.runner.PairSession): same fit, counted NFE, metrics and timed call.
    target, sampler = REGISTRY.target(target_name), REGISTRY.sampler(sampler_name)
    try:
        sampler.check(target)
    except UnsupportedTarget as exc:
        pytest.skip(str(exc))
    cfg = run_config
    session = PairSession.fit(sampler, target, cfg, model_cache)
    samples, nfe_fields = session.sample_counted()
    benchmark.group = target_name
    benchmark.extra_info.update(
        **nfe_fields, n=cfg.n, device=str(cfg.device), profile=cfg.profile.name,
        metrics=session.metrics(samples, prepare_target(target, cfg)),
    )
    timed_call = session.timed_call()

    def synchronized_call():
        timed_call()
        synchronize(cfg.device)  # the clock stops after the device finished, not after the launch

    benchmark.pedantic(synchronized_call, setup=lambda: synchronize(cfg.device), rounds=5, warmup_rounds=3,
                       iterations=1)
