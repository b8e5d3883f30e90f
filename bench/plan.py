"""What a run would do, without doing it (``pingsbench run --dry-run``).

Every selected sampler is fitted on every selected target through a
plan-mode :class:`~bench.cache.ModelCache`: modules are built, nothing is
trained or written, and each model the sampler asks for is reported as reused
from memory (another sampler of the run obtains it first), loaded from the
cache directory, or trained.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from bench.cache import ModelCache
from bench.contracts import UnsupportedTarget
from bench.registry import Registry
from bench.runner import PairKey, PairSession, RunConfig, error_text, run_settings


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


@dataclasses.dataclass
class TrainingPlan:
    """Which pair trains each model, and which models each pair must wait for.

    A model is trained by a *fit* of its trainer pair (the first pair of the run, in
    grid order, that uses it and is to run); every other pair that uses it, and the
    trainer's own measured run, start after that fit.  A fit waits for the fits that
    train the models it builds on (a distilled student's teacher).

    Attributes:
        trainer: Model id → the pair whose fit trains it.
        waits_for: Pair → ids of the models it uses that are trained in this run (none: the pair
            uses no model, or only models already in the cache).
    """

    trainer: dict[str, PairKey]
    waits_for: dict[PairKey, list[str]]

    def fits(self) -> list[PairKey]:
        """The trainer pairs, each once, in grid order (so every fit comes after those it waits for)."""
        return list(dict.fromkeys(self.trainer.values()))

    def fit_waits_for(self, pair: PairKey) -> list[PairKey]:
        """The other trainer pairs whose fits the fit of ``pair`` must wait for."""
        return list(dict.fromkeys(self.trainer[m] for m in self.waits_for.get(pair, []) if self.trainer[m] != pair))


def training_plan(plan: Sequence[dict[str, Any]], pairs: Sequence[PairKey]) -> TrainingPlan:
    """The trainings of the pairs ``pairs`` of a :func:`plan_run` plan (computed with the run's cache directory).

    Models the plan loads from disk need no training.  A model the plan trains or reuses
    from memory is trained by the first of ``pairs`` (in plan order) that uses it: a pair
    left out of ``pairs`` (a resumed run's kept row) trains nothing.  Model ids of models
    built on untrained ones (a student keyed by its teacher's weights) may differ from the
    run's, but consistently for every pair of the plan, which is all the schedule needs.

    Args:
        plan: :func:`plan_run`'s entries.
        pairs: The ``(target, seed, sampler)`` pairs that will run.

    Returns:
        The :class:`TrainingPlan`.
    """
    todo = set(pairs)
    trainer: dict[str, PairKey] = {}
    waits_for: dict[PairKey, list[str]] = {}
    for entry in plan:
        key = (entry["target"], entry["seed"], entry["sampler"])
        if key not in todo or entry["status"] != "run":
            continue
        models = [model["id"] for model in entry["models"] if model["source"] != "disk"]
        for model_id in models:
            trainer.setdefault(model_id, key)
        if models:
            waits_for[key] = list(dict.fromkeys(models))
    return TrainingPlan(trainer, waits_for)
