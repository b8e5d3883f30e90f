"""One-step generators: MeanFlow and PIDDM-style distillation of a diffusion teacher.

* ``meanflow-<N>`` (Geng et al., 2025, "Mean Flows for One-step Generative
  Modeling"): a network ``u_θ(x, r, t)`` learns the *average* velocity
  ``u(x_t, r, t) = 1/(t - r) ∫_r^t v(x_τ, τ) dτ`` of the straight-path flow
  (:mod:`samplers.flow`) from scratch, through the MeanFlow identity
  ``u = v - (t - r) d/dt u`` (their eq. 6).  One step ``x_0 = z - u(z, 0, 1)``
  jumps from the prior to the data; ``N`` steps chain ``N`` jumps.  Chosen over
  consistency distillation because it needs no teacher (so it is not capped by
  the ε-net's accuracy, which ``distilled-1`` already measures), no EMA target
  network and no discretisation curriculum.
* ``distilled-1`` (PIDDM, Zhang et al., 2025, arXiv:2505.22391, §4.2): a
  student ``x = d_θ(z)`` regresses pairs ``(z, ODE(z))`` solved once with a
  high-accuracy solver (DPM-Solver++(2M), many steps) on the shared ε-net
  teacher of the diffusion baselines; ``distilled-1@exact`` uses the target's
  closed-form ε instead, the information PINGS trains on.  ``distilled-ode-1`` (``dho`` only) adds
  PIDDM's physics term: the squared residual of ``x'' + 2ξx' + x = 0`` of the
  generated trajectory, with ``ξ`` fitted per trajectory.

All networks have the ε-net's size (:data:`samplers.flow.ARCH`).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target, UnsupportedTarget
from samplers.diffusion import ExactEps, dpm_solver_pp_2m, get_epsnet, timesteps
from samplers.flow import (
    ARCH,
    STANDARDIZATION,
    TimeMLP,
    build_mlp,
    fit_standardization,
    prior_draws,
    standardization_draws,
    straight_path,
    time_grid,
    train_steps,
)

# --------------------------------------------------------------------------- MeanFlow


def average_velocity(net: nn.Module, x: Tensor, r: Tensor | float, t: Tensor | float) -> Tensor:
    """``u_θ(x, r, t)``: the network sees ``(t, t - r)``, the conditioning MeanFlow found best (§4.3).

    Args:
        net: A :class:`~samplers.flow.TimeMLP` with two time inputs.
        x: State at time ``t``, shape ``(n, d)``.
        r: Earlier (data-side) time, float or ``(n, 1)``.
        t: Current time, float or ``(n, 1)``.
    """
    return net(x, t, t - r)


def meanflow_target(net: nn.Module, x_t: Tensor, v: Tensor, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``u_θ(x_t, r, t)`` and its MeanFlow regression target (Geng et al., 2025, eq. 6).

    ``u_tgt = v - (t - r) (v ∂_x u_θ + ∂_t u_θ)``: the total derivative of
    ``u_θ`` along the flow is one forward-mode JVP with tangent ``(v, 0, 1)`` in
    ``(x, r, t)``.  The exact average velocity is the fixed point ``u_tgt = u``
    when ``v`` is the marginal velocity.

    Args:
        net: Average-velocity network (see :func:`average_velocity`).
        x_t: Points at time ``t``, shape ``(n, d)``.
        v: Velocity at ``(x_t, t)``, shape ``(n, d)``.
        r: Times, shape ``(n, 1)``, with ``r <= t``.
        t: Times, shape ``(n, 1)``.

    Returns:
        ``u`` (differentiable in ``θ``) and the target (detached), both ``(n, d)``.
    """
    u, du_dt = torch.func.jvp(
        lambda x, r_, t_: average_velocity(net, x, r_, t_), (x_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t))
    )
    return u, (v - (t - r) * du_dt).detach()


def meanflow_loss(net: nn.Module, x_0: Tensor, z: Tensor, r: Tensor, t: Tensor, power: float, eps: float) -> Tensor:
    """The MeanFlow objective with adaptive weighting (Geng et al., 2025, eqs. 9–10, Alg. 1).

    On the straight path ``x_t = (1 - t) x_0 + t z`` the conditional velocity
    ``v = z - x_0`` stands in for the marginal one (:func:`meanflow_target`);
    each point's squared error ``Δ`` is weighted by ``sg(1 / (Δ + eps)^power)``.

    Args:
        net: Average-velocity network (see :func:`average_velocity`).
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws, shape ``(n, d)``.
        r: Times, shape ``(n, 1)``, with ``r <= t``.
        t: Times, shape ``(n, 1)``.
        power: Adaptive-weight exponent ``p`` (0: plain squared error).
        eps: Adaptive-weight offset ``c``.

    Returns:
        Scalar loss.
    """
    x_t, v = straight_path(x_0, z, t)
    u, target = meanflow_target(net, x_t, v, r, t)
    error = (u - target).square().sum(1)
    return (error * (error.detach() + eps).pow(-power)).mean()


def sample_time_pairs(
    n: int, generator: torch.Generator, dtype: torch.dtype, mean: float, std: float, distinct_fraction: float
) -> tuple[Tensor, Tensor]:
    """``(r, t)`` with ``r <= t`` from a logit-normal, ``r = t`` for all but ``distinct_fraction`` of them.

    MeanFlow §4.1: both times logit-normal, sorted; pairs with ``r = t`` reduce
    the objective to flow matching and anchor the instantaneous velocity.

    Returns:
        ``r`` and ``t``, each ``(n, 1)`` on the generator's device.
    """
    device = generator.device
    times = torch.sigmoid(mean + std * torch.randn(n, 2, generator=generator, device=device, dtype=dtype))
    r, t = times.min(1, keepdim=True).values, times.max(1, keepdim=True).values
    equal = torch.rand(n, 1, generator=generator, device=device, dtype=dtype) >= distinct_fraction
    return torch.where(equal, t, r), t


#: MeanFlow training budgets.
MEANFLOW_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 150, "batch": 256, "lr": 1e-3},
    "quick": {"steps": 3_000, "batch": 1024, "lr": 1e-3},
    "paper": {"steps": 20_000, "batch": 2048, "lr": 1e-3},
}
#: The paper's 1-NFE recipe (logit-normal(-0.4, 1) times, 25% of pairs with r ≠ t; Table 1) with plain
#: squared error (p = 0): in 3D a point's error fluctuates too much for the 1/(Δ + c) weighting, which
#: fits a robust location instead of the conditional mean and was worse in every paired comparison here.
MEANFLOW_RECIPE = {"time_mean": -0.4, "time_std": 1.0, "distinct_fraction": 0.25, "power": 0.0, "eps": 1e-3}
MEANFLOW_VERSION = 2


def meanflow_model(target: Target, ctx: FitContext) -> nn.Module:
    """The target's MeanFlow average-velocity net, trained once and cached."""
    config = {
        "version": MEANFLOW_VERSION,
        "arch": ARCH,
        "standardization": STANDARDIZATION,
        **MEANFLOW_RECIPE,
        **ctx.profile.pick(MEANFLOW_BUDGETS),
    }

    def train(net: TimeMLP) -> Mapping[str, Any]:
        fit_standardization(net, standardization_draws(target, ctx, "meanflow"))
        generator = ctx.generator("meanflow", target.name, "train")

        def loss_at() -> Tensor:
            x_0 = net.standardize(target.sample(config["batch"], generator, ctx.dtype))
            z = prior_draws(config["batch"], target.dim, generator, ctx.dtype)
            r, t = sample_time_pairs(
                config["batch"], generator, ctx.dtype,
                config["time_mean"], config["time_std"], config["distinct_fraction"],
            )
            return meanflow_loss(net, x_0, z, r, t, config["power"], config["eps"])

        return train_steps(net, loss_at, config["steps"], config["lr"], ctx, f"meanflow {target.name}")

    return ctx.cached_model("meanflow", target, config, lambda: build_mlp(target.dim, 2), train)


def meanflow_jumps(net: nn.Module, z: Tensor, steps: int) -> Tensor:
    """``steps`` jumps ``x_r = x_t - (t - r) u_θ(x_t, r, t)`` on a uniform grid from ``t = 1`` to ``0``.

    Args:
        net: Average-velocity network (see :func:`average_velocity`).
        z: Prior draws, shape ``(n, d)``.
        steps: Number of jumps (= network calls).

    Returns:
        Samples, shape ``(n, d)``.
    """
    ts = time_grid(steps).tolist()
    x = z
    for t, r in zip(ts[:-1], ts[1:]):
        x = x - (t - r) * average_velocity(net, x, r, t)
    return x


class MeanFlowSampler(Sampler):
    """``N`` MeanFlow jumps ``x_r = x_t - (t - r) u_θ(x_t, r, t)`` on a uniform grid from 1 to 0.

    Args:
        name: Registry name, e.g. ``meanflow-1``.
        steps: Number of jumps (= network evaluations).
    """

    def __init__(self, name: str, steps: int) -> None:
        self.name = name
        self.steps = steps
        self.description = f"MeanFlow average-velocity model, {steps} jump(s)"

    def expected_nfe(self, target: Target) -> float:
        return float(self.steps)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        net = meanflow_model(target, ctx)
        ctx.artifacts.update({"steps": self.steps})

        @torch.no_grad()
        def sample(n: int, generator: torch.Generator) -> Tensor:
            return net.unstandardize(meanflow_jumps(net, prior_draws(n, target.dim, generator, ctx.dtype), self.steps))

        return sample


class MeanFlowFamily(SamplerFamily):
    """``meanflow-<steps>``: one MeanFlow model per target, any number of jumps."""

    pattern = "meanflow-<steps>"
    regex = re.compile(r"meanflow-(?P<steps>[1-9][0-9]*)")
    description = "MeanFlow (average-velocity flow, trained from scratch), 1 or more jumps"
    defaults = ("meanflow-1", "meanflow-2")
    sweep = ("meanflow-1", "meanflow-2", "meanflow-4")

    def build(self, name: str, match: re.Match[str]) -> Sampler:
        return MeanFlowSampler(name, int(match["steps"]))


# --------------------------------------------------------------------------- PIDDM-style distillation

#: Student budgets: ``pairs`` teacher solutions with ``teacher_steps`` DPM-Solver++(2M) steps, then
#: ``steps`` optimiser steps on minibatches of those pairs.
DISTILL_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"pairs": 2_000, "teacher_steps": 10, "steps": 150, "batch": 256, "lr": 1e-3},
    "quick": {"pairs": 50_000, "teacher_steps": 100, "steps": 4_000, "batch": 1024, "lr": 1e-3},
    "paper": {"pairs": 200_000, "teacher_steps": 200, "steps": 20_000, "batch": 2048, "lr": 1e-3},
}
#: Weight of the ODE-residual term of ``distilled-ode-1`` against the data term (squared error in
#: standardised units, summed over the D coordinates).  PIDDM finds that large weights trade
#: fidelity for residual (its ablation of λ); this is a moderate value, not tuned per target.
ODE_RESIDUAL_WEIGHT = 1e-2
DISTILL_VERSION = 2


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers: identifies a trained teacher in a cache key."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        # Raw bytes through a uint8 view: numpy has no bfloat16.
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def teacher_pairs(teacher: nn.Module, z: Tensor, steps: int) -> Tensor:
    """The teacher's deterministic map ``z ↦ x_0``: DPM-Solver++(2M) then one denoising step.

    The probability-flow ODE is solved with ``steps`` DPM-Solver++(2M) steps,
    nodes uniform in log-SNR from ``t = 1`` to ``t = 1/T``; the state there
    still carries noise of scale ``σ(1/T)``, which the data prediction
    ``(x - σ ε̂)/α`` at that node removes (DPM-Solver's "denoise to zero").

    Args:
        teacher: ε-predictor with a ``schedule`` attribute.
        z: Prior draws ``x_T``, shape ``(n, d)``.
        steps: Solver steps (= teacher calls, plus one for the denoising).

    Returns:
        ``x_0``, shape ``(n, d)``.
    """
    schedule = teacher.schedule
    ts = timesteps(schedule, steps, "logSNR").to(z.device)
    x = dpm_solver_pp_2m(teacher, z, ts)
    t_end = ts[-1:].to(z.dtype).expand(len(z))
    alpha, sigma = schedule.alpha(t_end)[:, None], schedule.sigma(t_end)[:, None]
    return (x - sigma * teacher(x, t_end)) / alpha


def distillation_pairs(
    target: Target, ctx: FitContext, teacher: nn.Module, n: int, steps: int
) -> tuple[Tensor, Tensor]:
    """The student's training set: ``n`` seeded prior draws and the teacher's ODE solutions.

    Drawn once per student from a seed reserved for this purpose, so the
    pairs (and the student) are reproducible.

    Returns:
        ``z`` and ``x_0 = teacher_pairs(teacher, z, steps)``, each ``(n, d)`` on ``ctx.device``.
    """
    z = prior_draws(n, target.dim, ctx.generator("distilled", target.name, "pairs"), ctx.dtype)
    return z, teacher_pairs(teacher, z, steps)


def oscillator_residual_loss(target: Target, x: Tensor) -> Tensor:
    """Mean squared residual of ``x'' + 2ξx' + x = 0`` of trajectories ``x`` (shape ``(n, D)``).

    ``ξ`` is fitted per trajectory (:func:`targets.dho.fit_damping`) and held
    fixed; the residual uses the target's exact three-point stencil.
    """
    from targets.dho import fit_damping, ode_residual

    xi, _ = fit_damping(x.detach(), target.grid())
    return ode_residual(x, xi.to(x.dtype), target.step).square().mean()


#: Teachers a student can be distilled from: the shared ε-net, or the target's exact ε (where it has one).
TEACHERS = ("epsnet", "exact")


def distillation_teacher(target: Target, ctx: FitContext, teacher: str) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher ε-predictor and the JSON-able facts that identify it in the student's cache key."""
    if teacher == "epsnet":
        epsnet = get_epsnet(target, ctx)
        return epsnet, {"kind": "epsnet", "weights": weights_digest(epsnet)}
    if teacher == "exact":
        return ExactEps(target), {"kind": "exact"}
    raise ValueError(f"unknown teacher {teacher!r}; choose one of {TEACHERS}")


def distilled_model(
    target: Target, ctx: FitContext, teacher: str = "epsnet", residual_weight: float = 0.0
) -> nn.Module:
    """The one-step student ``x = d_θ(z)``, distilled from a diffusion teacher and cached.

    Args:
        target: Supplies the teacher and, with ``residual_weight``, the physics.
        ctx: Device, seed, budget and cache.
        teacher: ``"epsnet"`` (the shared ε-net of the diffusion baselines) or
            ``"exact"`` (the target's closed-form ε: the information PINGS trains on).
        residual_weight: Weight of :func:`oscillator_residual_loss` (0: plain distillation).
    """
    teacher_model, teacher_key = distillation_teacher(target, ctx, teacher)
    config = {
        "version": DISTILL_VERSION,
        "teacher": teacher_key,
        "teacher_solver": "dpm-solver++-2m+denoise",
        "arch": ARCH,
        "residual_weight": residual_weight,
        "standardization": {"of": "teacher outputs", "min_std_ratio": STANDARDIZATION["min_std_ratio"]},
        **ctx.profile.pick(DISTILL_BUDGETS),
    }
    kind = "distilled" + ("-ode" if residual_weight else "") + ("-exact" if teacher == "exact" else "")

    def train(student: TimeMLP) -> Mapping[str, Any]:
        start = time.perf_counter()
        z_pairs, x_pairs = distillation_pairs(target, ctx, teacher_model, config["pairs"], config["teacher_steps"])
        pair_seconds = time.perf_counter() - start
        # The student works in the standardised space of what it regresses: the teacher's outputs.
        fit_standardization(student, x_pairs)
        y_pairs = student.standardize(x_pairs)
        generator = ctx.generator(kind, target.name, "train")

        def loss_at() -> Tensor:
            index = torch.randint(config["pairs"], (config["batch"],), generator=generator, device=generator.device)
            y = student(z_pairs[index])
            loss = (y - y_pairs[index]).square().sum(1).mean()
            if residual_weight:
                loss = loss + residual_weight * oscillator_residual_loss(target, student.unstandardize(y))
            return loss

        info = train_steps(student, loss_at, config["steps"], config["lr"], ctx, f"{kind} {target.name}")
        return {**info, "pair_seconds": pair_seconds}

    return ctx.cached_model(kind, target, config, lambda: build_mlp(target.dim, 0), train)


def one_step_sampler(student: TimeMLP, dim: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function ``z ~ N(0, I) ↦ d_θ(z)`` (one network call)."""

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> Tensor:
        return student.unstandardize(student(prior_draws(n, dim, generator, dtype)))

    return sample


class DistilledSampler(Sampler):
    """``distilled-1[@exact]``: PIDDM-style one-step student of a probability-flow ODE.

    Args:
        name: Registry name.
        teacher: ``"epsnet"`` (``distilled-1``) or ``"exact"`` (``distilled-1@exact``).
    """

    def __init__(self, name: str = "distilled-1", teacher: str = "epsnet") -> None:
        self.name = name
        self.teacher = teacher
        source = "the shared ε-net" if teacher == "epsnet" else "the target's exact ε"
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
    register(MeanFlowFamily())
    register(DistilledSampler("distilled-1", "epsnet"))
    register(DistilledSampler("distilled-1@exact", "exact"))
    register(OdeDistilledSampler())
