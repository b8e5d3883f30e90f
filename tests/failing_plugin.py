"""A plugin whose sampler always fails in ``fit``: one failing task among working ones (tests of executors).

A module of its own so that Ray workers can import it (``RayExecutor(plugin_modules=[...])``).
"""

from __future__ import annotations

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, Target

MESSAGE = "this sampler always fails while fitting"


class FailsInFit(Sampler):
    name = "fails-in-fit"
    description = "raises in fit (test plugin)"

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        raise RuntimeError(MESSAGE)


@hookimpl
def register_samplers(register):
    register(FailsInFit())
