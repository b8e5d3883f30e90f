"""Samplers ``distilled-1``, ``distilled-1@exact``, ``distilled-ode-1`` and their registration."""

from __future__ import annotations

from typing import Any, Callable

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, Target, UnsupportedTarget

from .sample import one_step_sampler
from .train import ODE_RESIDUAL_WEIGHT, distilled_model


class DistilledSampler(Sampler):
    """``distilled-1[@exact]``: PIDDM-style one-step student of a probability-flow ODE.

    Args:
        name: Registry name.
        teacher: ``"epsnet"`` (``distilled-1``) or ``"exact"`` (``distilled-1@exact``).
    """

    def __init__(self, name: str = "distilled-1", teacher: str = "epsnet") -> None:
        self.name = name
        self.teacher = teacher
        source = "the shared learned diffusion model" if teacher == "epsnet" else "the target's exact ε"
        self.description = f"one-step student regressing (z, DPM-Solver++(2M) ODE solution) pairs of {source}"

    def check(self, target: Target) -> None:
        if self.teacher == "exact" and not target.has("noised_score"):
            raise UnsupportedTarget(f"{self.name} needs the closed-form noised score, which {target.name} lacks")

    def expected_nfe(self, target: Target) -> float:
        return 1.0

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        student = distilled_model(target, ctx, self.teacher)
        ctx.artifacts.update({"teacher": self.teacher, "teacher_solver": "dpm-solver++-2m"})
        return one_step_sampler(student, target.dim, ctx.dtype)


class OdeDistilledSampler(Sampler):
    """``distilled-ode-1``: ``distilled-1`` plus PIDDM's residual loss of the oscillator ODE (``dho`` only)."""

    name = "distilled-ode-1"
    description = "distilled-1 with the ODE residual of the generated trajectory as an extra loss (PIDDM eq. 8)"
    # An ablation of distilled-1 (equal fidelity on dho in reports/dho/), and the default run's costliest training.
    in_default_run = False

    def check(self, target: Target) -> None:
        from targets.dho import DampedOscillator

        if not isinstance(target, DampedOscillator):
            raise UnsupportedTarget(f"{self.name} needs the oscillator ODE; {target.name} is not a damped oscillator")

    def expected_nfe(self, target: Target) -> float:
        return 1.0

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        student = distilled_model(target, ctx, "epsnet", residual_weight=ODE_RESIDUAL_WEIGHT)
        ctx.artifacts.update(
            {"teacher": "epsnet", "teacher_solver": "dpm-solver++-2m", "residual_weight": ODE_RESIDUAL_WEIGHT}
        )
        return one_step_sampler(student, target.dim, ctx.dtype)


@hookimpl
def register_samplers(register: Callable[[Any], None]) -> None:
    register(DistilledSampler("distilled-1", "epsnet"))
    register(DistilledSampler("distilled-1@exact", "exact"))
    register(OdeDistilledSampler())
