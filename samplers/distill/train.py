"""Distilling a diffusion teacher into a one-step student (PIDDM, Zhang et al., 2025, §4.2)."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from bench.contracts import FitContext, Target
from samplers.diffusion import ExactEps, dpm_solver_pp_2m, get_denoiser, timesteps
from samplers.flow import prior_draws, train_steps
from samplers.nets import ARCH, STANDARDIZATION, TimeMLP, fit_standardization

from .model import student_net


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


#: Teachers a student can be distilled from: the shared learned diffusion model (``"epsnet"``, the name kept
#: from when it was the paper's ε-net), or the target's exact ε (where it has one).
TEACHERS = ("epsnet", "exact")


def distillation_teacher(target: Target, ctx: FitContext, teacher: str) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher ε-predictor and the JSON-able facts that identify it in the student's cache key."""
    if teacher == "epsnet":
        denoiser = get_denoiser(target, ctx)
        return denoiser, {"kind": "denoiser", "weights": weights_digest(denoiser)}
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
        teacher: ``"epsnet"`` (the shared learned diffusion model, :func:`~samplers.diffusion.get_denoiser`) or
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

    return ctx.cached_model(kind, target, config, lambda: student_net(target.dim), train)
