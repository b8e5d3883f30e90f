"""What a run would do, without doing it (``pingsbench run --dry-run``).

Every selected sampler is fitted on every selected target through a
plan-mode :class:`~bench.cache.ModelCache`: modules are built, nothing is
trained or written, and each model the sampler asks for is reported as reused
from memory (another sampler of the run obtains it first), loaded from the
cache directory, or trained.
"""

from __future__ import annotations

from typing import Any

from bench.cache import ModelCache
from bench.contracts import UnsupportedTarget
from bench.registry import Registry
from bench.runner import PairSession, RunConfig, error_text, run_settings


def plan_run(config: RunConfig, registry: Registry) -> list[dict[str, Any]]:
    """One entry per (target, sampler, seed), in the order a run visits them (per target: seed, then sampler).

    Fits run through :meth:`bench.runner.PairSession.fit`, as in a run (same
    context, so the same cache keys), but against a plan-mode cache: no model
    is trained, no file is written, and sampling is never called.

    Args:
        config: What would run; ``config.cache_dir`` is where entries are looked up
            (``None``: no disk cache, every model would be trained).
        registry: Where names are resolved (unknown names must be rejected before).

    Returns:
        Dicts with ``sampler``, ``target``, ``seed`` (the replicate, whose models are its own),
        ``status`` (``"run"``; ``"skipped"`` when
        :meth:`~bench.contracts.Sampler.check` refuses the target; ``"failed"`` when the
        check or the fit raised otherwise, as the run's row would), ``reason`` (``None`` for ``"run"``)
        and ``models``: one ``{"id", "kind", "source"}`` per model the sampler uses, with
        ``source`` ``"memory"``, ``"disk"`` or ``"train"``.
    """
    cache = ModelCache(config.cache_dir, plan_only=True)
    with run_settings(config):  # the run's thread count is part of every cache key
        return _plan_pairs(config, registry, cache)


def _plan_pairs(config: RunConfig, registry: Registry, cache: ModelCache) -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = []
    for target_name in config.targets:
        target = registry.target(target_name)
        for seed in config.seeds:
            for sampler_name in config.samplers:
                sampler = registry.sampler(sampler_name)
                entry: dict[str, Any] = {"sampler": sampler_name, "target": target_name, "seed": seed,
                                         "status": "run", "reason": None, "models": []}
                plan.append(entry)
                try:
                    sampler.check(target)
                    entry["models"] = PairSession.fit(sampler, target, config, cache, seed).ctx.models
                except UnsupportedTarget as exc:
                    entry.update(status="skipped", reason=str(exc))
                except Exception as exc:  # the run would record this pair as failed; the plan goes on
                    entry.update(status="failed", reason=error_text(exc))
    return plan
