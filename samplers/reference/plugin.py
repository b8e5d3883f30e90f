"""``target-draws``: exact draws from the target, the noise floor of every metric.

Its generated set is independent of the held-out reference set, so each of its
metrics is what a perfect sampler scores at this sample size.
"""

from __future__ import annotations

from bench import hookimpl
from bench.contracts import REFERENCE_SAMPLER, FitContext, SampleFn, Sampler, Target


class TargetDraws(Sampler):
    name = REFERENCE_SAMPLER
    description = "exact draws from the target with an independent seed (the noise floor)"

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        def sample(n, generator):
            return target.sample(n, generator, dtype=ctx.dtype)

        return sample


@hookimpl
def register_samplers(register):
    register(TargetDraws())
