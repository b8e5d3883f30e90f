"""Sampler families ``ddim-<steps>``, ``dpm-solver-heun-<steps>``, ``dpm-solver-2-<nfe>``, ``dpm-solver++-2m-<nfe>``.

Each name takes an optional suffix choosing the ε-predictor: none for the
trained tanh ε-net (PINGS §5.4.1), ``@silu`` for the same net with SiLU, and
``@exact`` for the target's closed-form ε (separates solver error from
score-learning error).  Sampling draws ``x_T ~ N(0, I)`` and solves the
probability-flow ODE from ``t = 1`` to ``t = 1/T``.

The paper's tanh saturates on the rare large ``|x_T|`` it saw little of in
training: on ``gmm3d`` (quick budget) about 0.5–0.8% of DDIM-50 trajectories
that start in the prior's tails drift outward to ``|x| ≈ 10–100``, which the
moment columns show and the bounded-kernel MMD² hardly does; the SiLU net
trained identically has none at a similar MMD².  The default keeps the paper's
choice; ``@silu`` is there to check it.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target, UnsupportedTarget

from .model import ExactEps
from .sample import Solver, ddim, dpm_solver_2, dpm_solver_heun, dpm_solver_pp_2m
from .schedule import timesteps
from .train import get_epsnet

#: Suffix → ε-predictor; ``""`` is the paper's tanh ε-net.
VARIANTS = {"": "epsnet-tanh", "silu": "epsnet-silu", "exact": "exact"}


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """How one solver is exposed as a family.

    Attributes:
        prefix: Name prefix, e.g. ``"ddim"``.
        solver: The solver function.
        calls_per_step: Network calls per step.
        counts_nfe: Whether the name's number is the NFE (else the number of steps).
        spacing: Node spacing passed to :func:`~.schedule.timesteps`.
        description: One line for ``pingsbench list``.
        defaults: Numbers run by default (each also with ``@exact``).
        sweep: Numbers run by ``pingsbench sweep`` (each also with ``@exact``).
    """

    prefix: str
    solver: Solver
    calls_per_step: int
    counts_nfe: bool
    spacing: str
    description: str
    defaults: tuple[int, ...]
    sweep: tuple[int, ...]

    def steps(self, number: int) -> int:
        """Solver steps for the number in a name (``ddim-50`` → 50, ``dpm-solver-2-20`` → 10).

        Raises:
            ValueError: The number breaks the family's rule (the message states the rule).
        """
        unit = "nfe" if self.counts_nfe else "steps"
        smallest = self.calls_per_step if self.counts_nfe else 1
        if number < smallest:
            raise ValueError(f"{self.prefix}-<{unit}> takes {unit} ≥ {smallest}, got {number}")
        if self.counts_nfe and number % self.calls_per_step:
            raise ValueError(
                f"{self.prefix}-<nfe> makes {self.calls_per_step} network calls per step, so the NFE must be a "
                f"multiple of {self.calls_per_step}, got {number}"
            )
        return number // self.calls_per_step if self.counts_nfe else number


SPECS = (
    SolverSpec("ddim", ddim, 1, False, "time_uniform",
               "deterministic DDIM (η = 0), steps uniform in t as in PINGS §5.4.1; NFE = steps",
               defaults=(50,), sweep=(5, 10, 20, 50)),
    SolverSpec("dpm-solver-heun", dpm_solver_heun, 2, False, "logSNR",
               "Heun (2nd order) on the probability-flow ODE in y = x/α, ρ = σ/α, nodes uniform in "
               "log-SNR (the paper's 'DPM-Solver'); NFE = 2 × steps",
               defaults=(10, 20), sweep=(3, 5, 10, 25)),
    SolverSpec("dpm-solver-2", dpm_solver_2, 2, True, "logSNR",
               "singlestep DPM-Solver-2 (r = ½), nodes uniform in log-SNR; the number is the NFE (even)",
               defaults=(20,), sweep=(6, 10, 20, 50)),
    SolverSpec("dpm-solver++-2m", dpm_solver_pp_2m, 1, True, "logSNR",
               "multistep DPM-Solver++(2M), data prediction, nodes uniform in log-SNR; the number is the NFE",
               defaults=(20,), sweep=(5, 10, 20, 50)),
)


class DiffusionSampler(Sampler):
    """One solver at a fixed step count on one ε-predictor.

    Args:
        name: Registry name, e.g. ``"ddim-50@exact"``.
        spec: The solver.
        n_steps: Number of solver steps.
        variant: Key of :data:`VARIANTS`.
    """

    def __init__(self, name: str, spec: SolverSpec, n_steps: int, variant: str) -> None:
        self.name = name
        self.spec = spec
        self.n_steps = n_steps
        self.variant = variant
        self.description = f"{spec.description}; {n_steps} steps on ε = {VARIANTS[variant]}"

    def check(self, target: Target) -> None:
        if self.variant == "exact" and not target.has("noised_score"):
            raise UnsupportedTarget(f"{self.name} needs the closed-form noised score, which {target.name} lacks")

    def expected_nfe(self, target: Target) -> float:
        return float(self.n_steps * self.spec.calls_per_step)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        if self.variant == "exact":
            eps_model = ExactEps(target)
        else:
            eps_model = get_epsnet(target, ctx, activation=self.variant or "tanh")
        ts = timesteps(eps_model.schedule, self.n_steps, self.spec.spacing).to(ctx.device)
        ctx.artifacts.update(
            {"eps": VARIANTS[self.variant], "solver": self.spec.prefix, "steps": self.n_steps,
             "spacing": self.spec.spacing}
        )
        solver = self.spec.solver

        @torch.no_grad()
        def sample(n: int, generator: torch.Generator) -> torch.Tensor:
            x_T = torch.randn(n, target.dim, generator=generator, device=generator.device, dtype=ctx.dtype)
            return solver(eps_model, x_T, ts)

        return sample


class DiffusionSolverFamily(SamplerFamily):
    """``<prefix>-<number>[@exact|@silu]`` for one :class:`SolverSpec`."""

    def __init__(self, spec: SolverSpec) -> None:
        self.spec = spec
        number = "nfe" if spec.counts_nfe else "steps"
        self.pattern = f"{spec.prefix}-<{number}>[@exact|@silu]"
        self.regex = re.compile(rf"{re.escape(spec.prefix)}-(?P<number>\d+)(?:@(?P<variant>exact|silu))?")
        self.description = spec.description
        self.defaults = tuple(f"{spec.prefix}-{k}{s}" for k in spec.defaults for s in ("", "@exact"))
        self.sweep = tuple(f"{spec.prefix}-{k}{s}" for s in ("", "@exact") for k in spec.sweep)

    def build(self, name: str, match: re.Match[str]) -> Sampler:
        steps = self.spec.steps(int(match["number"]))
        return DiffusionSampler(name, self.spec, steps, match["variant"] or "")


@hookimpl
def register_samplers(register):
    for spec in SPECS:
        register(DiffusionSolverFamily(spec))
