"""The ``consistency-<steps>[@exact]`` family (1 or 2 steps) and its registration."""

from __future__ import annotations

import re
from typing import Any, Callable

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target, UnsupportedTarget

from .sample import consistency_sampler
from .train import RECIPE, consistency_model


class ConsistencySampler(Sampler):
    """``consistency-<steps>[@exact]``: a distilled consistency model sampled with ``steps`` calls.

    Args:
        name: Registry name.
        steps: Network calls (1 or 2).
        teacher: ``"denoiser"`` (the shared learned diffusion model) or ``"exact"``.
    """

    def __init__(self, name: str, steps: int, teacher: str) -> None:
        self.name = name
        self.steps = steps
        self.teacher = teacher
        source = "the shared learned diffusion model" if teacher == "denoiser" else "the target's exact ε"
        self.description = (f"consistency model distilled from {source} (Song et al. 2023, Heun teacher steps), "
                            f"{steps} step{'s' if steps > 1 else ''}")

    def check(self, target: Target) -> None:
        if self.teacher == "exact" and not target.has("noised_score"):
            raise UnsupportedTarget(f"{self.name} needs the closed-form noised score, which {target.name} lacks")

    def expected_nfe(self, target: Target) -> float:
        return float(self.steps)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        model = consistency_model(target, ctx, self.teacher, RECIPE)
        ctx.artifacts.update({"teacher": self.teacher, "steps": self.steps})
        return consistency_sampler(model, target.dim, self.steps, ctx.dtype)


class ConsistencyFamily(SamplerFamily):
    """``consistency-<steps>[@exact]``: one model per target and teacher, shared by both step counts."""

    pattern = "consistency-<steps>[@exact]"
    regex = re.compile(r"consistency-(?P<steps>\d+)(?:@(?P<variant>exact))?")
    description = ("consistency distillation (Song et al. 2023) of the shared learned diffusion model, or with "
                   "@exact of the closed-form ε; steps 1 or 2 (the second re-noises to unit SNR)")
    defaults = ()  # no default or sweep rows until a measured run shows they are competitive (README)
    sweep = ()

    def build(self, name: str, match: re.Match[str]) -> Sampler:
        steps = int(match["steps"])
        if steps not in (1, 2):
            raise ValueError(f"consistency-<steps> takes 1 or 2 steps, got {steps}")
        return ConsistencySampler(name, steps, "exact" if match["variant"] else "denoiser")


@hookimpl
def register_samplers(register: Callable[[Any], None]) -> None:
    register(ConsistencyFamily())
