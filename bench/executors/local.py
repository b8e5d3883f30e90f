"""The in-process executor: every pair in grid order, one after another, models shared in memory."""

from __future__ import annotations

from typing import Sequence

from bench.cache import ModelCache
from bench.registry import Registry
from bench.runner import PairKey, ResultsWriter, RunConfig, pair_row, reference_set, target_floor


class LocalExecutor:
    """Runs the pairs in this process, per target: its floor, then per seed its reference set and samplers.

    One process runs one thing at a time, so a latency measurement never shares the
    machine with the run's other work and no gate is needed.  Models are trained once
    through the run's :class:`~bench.cache.ModelCache` (in memory, and on disk when the
    run has a cache directory).
    """

    name = "local"

    def check(self, config: RunConfig) -> None:
        """Nothing to refuse: without a cache directory models are kept in memory for the run."""

    def execute(self, config: RunConfig, registry: Registry, pairs: Sequence[PairKey], floors: Sequence[str],
                writer: ResultsWriter) -> None:
        """Run ``pairs`` and the floors of ``floors`` in grid order into ``writer``."""
        cache = ModelCache(config.cache_dir)
        todo = set(pairs)
        for target_name in config.targets:
            target = registry.target(target_name)
            if target_name in floors:
                writer.add_floor(target_name, target_floor(target, config))
            for seed in config.seeds:
                samplers = [name for name in config.samplers if (target_name, seed, name) in todo]
                if not samplers:
                    continue
                data = reference_set(target, config, seed)
                for sampler_name in samplers:
                    writer.add_row(*pair_row(sampler_name, target, seed, data, registry, cache, config))
