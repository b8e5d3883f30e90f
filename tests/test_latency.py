"""pytest-benchmark latency benchmarks: every discovered sampler × target pair.

Run with ``pytest --benchmark-only`` (skipped otherwise: they train models).
Options: ``--pingsbench-profile`` (default quick), ``--pingsbench-n`` (10⁴),
``--pingsbench-device``.  Each benchmark is grouped by target and carries the
measured NFE and the fidelity metrics in ``extra_info``, so
``--benchmark-json`` / ``--benchmark-compare`` work as usual.
"""

from __future__ import annotations

import pytest
import torch

from bench.cache import ModelCache, default_cache_dir
from bench.contracts import FitContext, UnsupportedTarget
from bench.environment import resolve_device
from bench.metrics import compute_metrics
from bench.plugins import get_plugin_manager
from bench.profiles import get_profile
from bench.registry import Registry
from bench.runner import RunConfig, check_samples, prepare_target, sample_counted, seeded_generator
from bench.seeding import derive_seed
from bench.timing import synchronize

REGISTRY = Registry.from_plugin_manager(get_plugin_manager())
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
    target, sampler = REGISTRY.target(target_name), REGISTRY.sampler(sampler_name)
    try:
        sampler.check(target)
    except UnsupportedTarget as exc:
        pytest.skip(str(exc))
    cfg = run_config
    ctx = FitContext(cfg.device, cfg.dtype, cfg.seed, cfg.profile, model_cache)
    sample_fn = sampler.fit(target, ctx)
    with torch.inference_mode():
        samples, nfe = sample_counted(sample_fn, cfg, derive_seed(cfg.seed, "sample", sampler_name, target_name))
    samples = check_samples(samples, cfg.n, target.dim)
    reference = prepare_target(target, cfg)
    benchmark.group = target_name
    benchmark.extra_info.update(
        nfe=nfe, n=cfg.n, device=str(cfg.device), profile=cfg.profile.name,
        metrics={**compute_metrics(samples, reference.reference, seed=cfg.seed), "mmd2_floor": reference.mmd2_floor},
    )
    generator = seeded_generator(cfg.device, derive_seed(cfg.seed, "timing", sampler_name, target_name))

    def synchronized_call():
        with torch.inference_mode():
            sample_fn(cfg.n, generator)
        synchronize(cfg.device)  # the clock stops after the device finished, not after the launch

    benchmark.pedantic(synchronized_call, setup=lambda: synchronize(cfg.device), rounds=5, warmup_rounds=3,
                       iterations=1)
