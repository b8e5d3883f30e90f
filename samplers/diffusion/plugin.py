"""Sampler families ``ddim-<steps>``, ``dpm-solver-heun-<steps>``, ``dpm-solver-2-<nfe>``, ``dpm-solver++-2m-<nfe>``,
``dpm-solver++-3m-<nfe>``, ``unipc-<nfe>``, ``ipndm-<nfe>`` and ``edm-heun-<nfe>``.

A name is ``<prefix>-<number>[+<schedule>][@<ε>]``, the schedule before the ε:

* ``+<schedule>`` chooses the solver's time nodes: ``+uniform`` (uniform in ``t``),
  ``+logsnr`` (uniform in log-SNR), ``+karras`` (Karras et al.'s ρ = 7 levels) or ``+ld3``
  (learned: the ``N - 1`` interior nodes fitted so the ``N``-step solve matches a
  many-step teacher on the same ε, LD3 / Align-Your-Steps in spirit; trained in ``fit``,
  cached, its training calls not counted).  Without it, the family's own spacing (its
  description in ``pingsbench list`` says which), so every name without a ``+`` means what it
  always did;
* ``@<ε>`` chooses the ε-predictor: none for the learned denoiser
  (:data:`~.train.DEFAULT_DENOISER`: v-prediction, EDM preconditioning, standardised data, SiLU,
  6 × 128), ``@paper-eps`` for the paper's tanh ε-net (PINGS §5.4.1, the historical baseline),
  ``@silu`` for that ε-net with SiLU, and ``@exact`` for the target's closed-form ε (separates
  solver error from score-learning error).

E.g. ``ddim-8+ld3@exact``, ``dpm-solver++-3m-6+karras``, ``unipc-5+logsnr@paper-eps``.  The
number keeps its family's meaning (steps or NFE) and the counted NFE whatever the schedule.
Sampling draws ``x_T ~ N(0, I)`` and solves the probability-flow ODE from ``t = 1`` to
``t = 1/T``.

The default denoiser was chosen by a measured comparison (``python -m samplers.diffusion.compare``,
``reports/parametrizations/``): the paper's tanh ε-net does not learn ``dho`` (manifold MSE ~90)
and sends ~0.5–0.8% of ``gmm3d``'s prior-tail starts to ``|x| ≈ 10–100`` (kurtosis MSE ~5e3);
the default has neither.  Names without ``@`` kept their spelling but now run the new model
(their cache keys changed); ``@paper-eps`` is the old meaning.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target, UnsupportedTarget

from .model import DenoiserConfig, ExactEps
from .sample import (
    Solver,
    ddim,
    dpm_solver_2,
    dpm_solver_heun,
    dpm_solver_pp_2m,
    dpm_solver_pp_3m,
    edm_heun,
    ipndm,
    unipc,
)
from .schedule import LEARNED, SCHEDULES, timesteps
from .train import DEFAULT_DENOISER, denoiser_config, epsnet_config, get_denoiser, get_epsnet, get_learned_schedule

#: Suffix → ε-predictor: ``""`` the learned denoiser (:data:`~.train.DEFAULT_DENOISER`), ``paper-eps`` the
#: paper's tanh ε-net (PINGS §5.4.1), ``silu`` that net with SiLU, ``exact`` the target's closed-form ε.
VARIANTS = {"": f"denoiser-{DEFAULT_DENOISER.label}", "paper-eps": "epsnet-tanh", "silu": "epsnet-silu",
            "exact": "exact"}
#: The ``@<ε>`` part of a family's pattern.
VARIANT_PATTERN = "[" + "|".join(f"@{suffix}" for suffix in ("exact", "paper-eps", "silu")) + "]"
#: Schedule suffixes (``+<schedule>``): the fixed spacings of :data:`~.schedule.SCHEDULES` and the learned one.
SCHEDULE_SUFFIXES = (*SCHEDULES, LEARNED)
#: NFE grid of ``pingsbench sweep``: every family runs those of these NFEs its number can express.
SWEEP_NFE = (3, 4, 5, 6, 8, 10, 15, 20)


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
    """

    prefix: str
    solver: Solver
    calls_per_step: int
    counts_nfe: bool
    spacing: str
    description: str
    defaults: tuple[int, ...]

    def number_for_nfe(self, nfe: int) -> int | None:
        """The number in a name whose NFE is ``nfe``; ``None`` when the family cannot make that many calls.

        A family of ``k`` calls per step takes only multiples of ``k`` (odd NFEs are skipped by the
        two-call solvers' sweeps).
        """
        if nfe < self.calls_per_step or nfe % self.calls_per_step:
            return None
        return nfe if self.counts_nfe else nfe // self.calls_per_step

    @property
    def sweep(self) -> tuple[int, ...]:
        """Numbers run by ``pingsbench sweep`` (each also with ``@exact``): those of :data:`SWEEP_NFE` it can take."""
        return tuple(number for number in map(self.number_for_nfe, SWEEP_NFE) if number is not None)

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

    def plan(self, number: int) -> tuple[Solver, int, int]:
        """``(solver, steps, NFE)`` for the number in a name.

        Raises:
            ValueError: As :meth:`steps`.
        """
        steps = self.steps(number)
        return self.solver, steps, steps * self.calls_per_step


@dataclasses.dataclass(frozen=True)
class EDMHeunSpec(SolverSpec):
    """EDM's Heun sampler, whose number is any NFE ≥ 2.

    An odd NFE ``2S - 1`` is Karras et al.'s Alg. 1 with ``S`` steps (:func:`~.sample.edm_heun`):
    ``S`` Karras levels from ``t = 1`` to ``t = 1/T``, ``S - 1`` Heun steps between them and a last
    Euler step to σ = 0.  An even NFE ``2S`` is ``S`` Heun steps between ``S + 1`` Karras levels,
    stopping at ``t = 1/T`` like the other solvers (:func:`~.sample.dpm_solver_heun` on Karras nodes).
    """

    def steps(self, number: int) -> int:
        """Heun steps for an NFE: ``(NFE - 1)//2`` when odd, ``NFE/2`` when even.

        Raises:
            ValueError: NFE < 2.
        """
        if number < 2:
            raise ValueError(f"{self.prefix}-<nfe> takes nfe ≥ 2, got {number}")
        return number // 2

    def plan(self, number: int) -> tuple[Solver, int, int]:
        steps = self.steps(number)
        return (edm_heun if number % 2 else dpm_solver_heun), steps, number

    def number_for_nfe(self, nfe: int) -> int | None:
        """Any NFE ≥ 2 (odd ones are Alg. 1 proper)."""
        return nfe if nfe >= 2 else None


SPECS = (
    SolverSpec("ddim", ddim, 1, False, "time_uniform",
               "deterministic DDIM (η = 0), steps uniform in t as in PINGS §5.4.1; NFE = steps",
               defaults=(50,)),
    SolverSpec("dpm-solver-heun", dpm_solver_heun, 2, False, "logSNR",
               "Heun (2nd order) on the probability-flow ODE in y = x/α, ρ = σ/α, nodes uniform in "
               "log-SNR (the paper's 'DPM-Solver'); NFE = 2 × steps (its sweep skips odd NFE)",
               defaults=(10, 20)),
    SolverSpec("dpm-solver-2", dpm_solver_2, 2, True, "logSNR",
               "singlestep DPM-Solver-2 (r = ½), nodes uniform in log-SNR; the number is the NFE (even; its sweep "
               "skips odd NFE)",
               defaults=()),  # at NFE 20 behind DPM-Solver++(2M) on every default target: run it by name
    SolverSpec("dpm-solver++-2m", dpm_solver_pp_2m, 1, True, "logSNR",
               "multistep DPM-Solver++(2M), data prediction, nodes uniform in log-SNR; the number is the NFE",
               defaults=(20,)),
    SolverSpec("dpm-solver++-3m", dpm_solver_pp_3m, 1, True, "logSNR",
               "multistep DPM-Solver++(3M), data prediction, nodes uniform in log-SNR; the number is the NFE",
               defaults=()),
    SolverSpec("unipc", unipc, 1, True, "logSNR",
               "UniPC-bh2: 2nd-order predictor and corrector (3rd order), data prediction, nodes uniform in "
               "log-SNR; the number is the NFE",
               defaults=()),
    SolverSpec("ipndm", ipndm, 1, True, "karras",
               "iPNDM: Adams–Bashforth up to 4th order with lower-order warm start, EDM's Karras nodes (ρ = 7); "
               "the number is the NFE",
               defaults=()),
)

#: EDM's Heun sampler; kept apart from :data:`SPECS`, whose NFE must be a multiple of the calls per step.
EDM_HEUN = EDMHeunSpec(
    "edm-heun", edm_heun, 2, True, "karras",
    "EDM's Heun sampler on Karras noise levels (ρ = 7); the number is the NFE: odd = 2·steps - 1 "
    "(Karras et al. Alg. 1, last step Euler to σ = 0), even = 2·steps (Heun steps only, ends at t = 1/T)",
    defaults=(),
)


class DiffusionSampler(Sampler):
    """One solver at a fixed step count on one ε-predictor and one time schedule.

    Args:
        name: Registry name, e.g. ``"ddim-50@exact"``.
        spec: The solver.
        n_steps: Number of solver steps.
        variant: Key of :data:`VARIANTS`.
        solver: The solver function (default ``spec.solver``).
        nfe: Network calls per sample (default ``n_steps × spec.calls_per_step``).
        schedule: ``""`` (the family's ``spec.spacing``) or one of :data:`SCHEDULE_SUFFIXES`.
        denoiser: The learned model's options for ``variant == ""`` (default :data:`~.train.DEFAULT_DENOISER`;
            ``python -m samplers.diffusion.compare`` runs others).

    Raises:
        ValueError: Unknown ``schedule`` (the message lists the allowed ones).
    """

    def __init__(
        self, name: str, spec: SolverSpec, n_steps: int, variant: str, solver: Solver | None = None,
        nfe: int | None = None, schedule: str = "", denoiser: DenoiserConfig = DEFAULT_DENOISER,
    ) -> None:
        if schedule and schedule not in SCHEDULE_SUFFIXES:
            raise ValueError(
                f"unknown schedule '+{schedule}'; a solver name takes +" + ", +".join(SCHEDULE_SUFFIXES)
                + " or none (the family's own spacing)"
            )
        self.name = name
        self.spec = spec
        self.n_steps = n_steps
        self.variant = variant
        self.solver = solver or spec.solver
        self.nfe = n_steps * spec.calls_per_step if nfe is None else nfe
        self.schedule = schedule
        self.denoiser = denoiser
        #: The fixed spacing, or where the learned schedule starts from.
        self.spacing = SCHEDULES.get(schedule, spec.spacing)
        nodes = f"nodes learned from {self.spacing}" if schedule == LEARNED else f"{self.spacing} nodes"
        eps_name = f"denoiser-{denoiser.label}" if variant == "" else VARIANTS[variant]
        self.description = f"{spec.description}; {n_steps} steps on ε = {eps_name}, {nodes}"
        self.eps_name = eps_name

    def check(self, target: Target) -> None:
        if self.variant == "exact" and not target.has("noised_score"):
            raise UnsupportedTarget(f"{self.name} needs the closed-form noised score, which {target.name} lacks")

    def expected_nfe(self, target: Target) -> float:
        return float(self.nfe)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        if self.variant == "exact":
            eps_model, eps_key = ExactEps(target), {"kind": "exact"}
        elif self.variant == "":
            eps_model = get_denoiser(target, ctx, self.denoiser)
            eps_key = {"kind": "denoiser", **denoiser_config(ctx, self.denoiser)}
        else:
            activation = "tanh" if self.variant == "paper-eps" else self.variant
            eps_model = get_epsnet(target, ctx, activation=activation)
            eps_key = {"kind": "epsnet", **epsnet_config(ctx, activation)}
        if self.schedule == LEARNED:
            learned = get_learned_schedule(target, ctx, eps_model, eps_key, self.solver, self.n_steps, self.spacing)
            with torch.no_grad():
                ts = learned().to(ctx.device)
        else:
            ts = timesteps(eps_model.schedule, self.n_steps, self.spacing).to(ctx.device)
        ctx.artifacts.update(
            {"eps": self.eps_name, "solver": self.spec.prefix, "steps": self.n_steps,
             "spacing": self.spacing, "schedule": self.schedule or "default", "nodes": ts.tolist()}
        )
        solver = self.solver

        @torch.no_grad()
        def sample(n: int, generator: torch.Generator) -> torch.Tensor:
            x_T = torch.randn(n, target.dim, generator=generator, device=generator.device, dtype=ctx.dtype)
            return solver(eps_model, x_T, ts)

        return sample


class DiffusionSolverFamily(SamplerFamily):
    """``<prefix>-<number>[+<schedule>][@exact|@paper-eps|@silu]`` for one :class:`SolverSpec` (module docstring)."""

    def __init__(self, spec: SolverSpec) -> None:
        self.spec = spec
        number = "nfe" if spec.counts_nfe else "steps"
        schedules = "|".join(f"+{suffix}" for suffix in SCHEDULE_SUFFIXES)
        self.pattern = f"{spec.prefix}-<{number}>[{schedules}]{VARIANT_PATTERN}"
        # Any "+…" is captured so that a misspelt schedule gets its own message, not "unknown sampler".
        self.regex = re.compile(
            rf"{re.escape(spec.prefix)}-(?P<number>\d+)(?:\+(?P<schedule>[^@]*))?"
            rf"(?:@(?P<variant>exact|paper-eps|silu))?"
        )
        default = next(suffix for suffix, spacing in SCHEDULES.items() if spacing == spec.spacing)
        self.description = f"{spec.description}; +<schedule> picks the nodes (default +{default})"
        self.defaults = tuple(f"{spec.prefix}-{k}{s}" for k in spec.defaults for s in ("", "@exact"))
        self.sweep = tuple(f"{spec.prefix}-{k}{s}" for s in ("", "@exact") for k in spec.sweep)

    def build(self, name: str, match: re.Match[str]) -> Sampler:
        solver, steps, nfe = self.spec.plan(int(match["number"]))
        schedule = match["schedule"]
        if schedule == "":
            raise ValueError(f"'+' needs a schedule: +{', +'.join(SCHEDULE_SUFFIXES)}")
        return DiffusionSampler(name, self.spec, steps, match["variant"] or "", solver, nfe, schedule or "")


@hookimpl
def register_samplers(register):
    for spec in (*SPECS, EDM_HEUN):
        register(DiffusionSolverFamily(spec))
