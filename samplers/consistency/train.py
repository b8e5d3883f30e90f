"""Consistency distillation (Song et al. 2023, Alg. 2) from a diffusion teacher, and the cached model."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.contracts import FitContext, Target
from samplers.diffusion import DEFAULT_DENOISER, DiscreteVPSchedule, ExactEps, denoiser_config, get_denoiser
from samplers.diffusion.schedule import KARRAS_RHO
from samplers.nets import STANDARDIZATION, fit_standardization, standardization_draws

from .model import ConsistencyNet


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every choice of consistency distillation (all part of the cache key).

    Attributes:
        intervals: ``N - 1`` ODE intervals between ``N`` Karras noise levels (ρ = 7) from
            ``t = 1/T`` to ``t = 1``; Song et al. use ``N = 18`` for consistency distillation on
            CIFAR-10, 36 levels did better on gmm3d here (README, "Consistency models").
        intervals_end: With a curriculum, the number at the last step (doubling ``N(k)`` as in
            Song & Dhariwal 2023's improved training); equal to ``intervals`` for a fixed ``N``.
        target_ema: EMA rate ``μ`` of the target network ``θ⁻ ← μθ⁻ + (1 - μ)θ`` (0: ``θ⁻`` is ``θ``
            without gradient, as in improved consistency training).
        loss: ``"pseudo-huber"`` (``√(‖Δ‖² + c²) - c``, ``c = 0.00054 √d``; Song & Dhariwal 2023)
            or ``"l2"``.
        skip: Use the skip parametrization (:class:`~.model.ConsistencyNet`).
        teacher_solver: ``"heun"`` (two teacher calls per step, as Song et al.) or ``"euler"`` (DDIM: one).
        lr: Peak Adam learning rate (cosine decay to 1%).
    """

    intervals: int = 35
    intervals_end: int = 35
    target_ema: float = 0.95
    loss: str = "pseudo-huber"
    skip: bool = True
    teacher_solver: str = "heun"
    lr: float = 1e-3

    def intervals_at(self, step: int, steps: int) -> int:
        """``N(k) - 1`` at optimiser step ``k`` of ``steps``: doubling from ``intervals`` up to ``intervals_end``.

        The stages are equally long; the last is capped at ``intervals_end``.
        """
        if self.intervals_end == self.intervals:
            return self.intervals
        doublings = math.log2(self.intervals_end / self.intervals)
        stage = math.floor((step - 1) / steps * (math.floor(doublings) + 1))
        return min(self.intervals_end, self.intervals * 2**stage)


#: The recipe of the ``consistency-*`` rows.
RECIPE = Recipe()
#: Steps and batch per profile (each step makes one or two teacher calls and two network calls on the batch).
CONSISTENCY_BUDGETS: Mapping[str, Mapping[str, int]] = {
    "smoke": {"steps": 100, "batch": 128},
    "quick": {"steps": 3000, "batch": 512},
    "paper": {"steps": 20_000, "batch": 2048},
}
VERSION = 1


def noise_levels(schedule: DiscreteVPSchedule, intervals: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Karras levels ``σ̃_0 = σ̃(1/T) < … < σ̃_N = σ̃(1)`` (ρ = 7, N = ``intervals``) and their times."""
    ends = torch.exp(-schedule.lambda_(torch.tensor([schedule.t_min, schedule.t_max], dtype=torch.float64)))
    ramp = torch.linspace(0, 1, intervals + 1, dtype=torch.float64)
    low, high = ends ** (1 / KARRAS_RHO)
    rho = (low + ramp * (high - low)) ** KARRAS_RHO
    t = schedule.t_from_lambda(-rho.log())
    t[0], t[-1] = schedule.t_min, schedule.t_max
    return rho.to(like.device), t.to(device=like.device, dtype=like.dtype)


def teacher_step(teacher: nn.Module, x: Tensor, t_from: Tensor, t_to: Tensor, solver: str) -> Tensor:
    """One ODE step per row from ``t_from`` to ``t_to`` (``(n,)`` each), in ``y = x/α``, ``ρ = σ/α``.

    ``dy/dρ = ε(x, t)``: Euler (DDIM) or Heun (Karras et al. Alg. 1's step); one or two teacher calls.
    """
    schedule = teacher.schedule
    alpha_from, alpha_to = (schedule.alpha(t)[:, None] for t in (t_from, t_to))
    step = (schedule.sigma(t_to)[:, None] / alpha_to - schedule.sigma(t_from)[:, None] / alpha_from)
    y = x / alpha_from
    slope = teacher(x, t_from)
    y_euler = y + step * slope
    if solver == "euler":
        return alpha_to * y_euler
    if solver != "heun":
        raise ValueError(f"unknown teacher solver {solver!r}; choose 'heun' or 'euler'")
    return alpha_to * (y + step * 0.5 * (slope + teacher(alpha_to * y_euler, t_to)))


def consistency_loss(
    model: nn.Module, target_model: nn.Module, teacher: nn.Module, x0: Tensor, noise: Tensor, index: Tensor,
    times: Tensor, recipe: Recipe,
) -> Tensor:
    """The consistency-distillation loss on a batch (0-d).

    ``x_{n+1} = α x_0 + σ ε`` at ``times[index + 1]``; the teacher's step gives ``x̂_n`` at
    ``times[index]``; the loss is the distance, in units of the data std, between
    ``f_θ(x_{n+1})`` and ``f_θ⁻(x̂_n)`` (no gradient through the target).

    Args:
        model: ``f_θ``.
        target_model: ``f_θ⁻``.
        teacher: ε-predictor with a ``schedule``.
        x0: Data, ``(n, d)``.
        noise: ``ε``, ``(n, d)``.
        index: ``n`` per row, ``(n,)`` in ``[0, N - 1)``.
        times: The discretisation's times ``(N,)`` (increasing).
        recipe: Loss metric and teacher solver.
    """
    schedule = teacher.schedule
    t_next, t_now = times[index + 1], times[index]
    x_next = schedule.alpha(t_next)[:, None] * x0 + schedule.sigma(t_next)[:, None] * noise
    with torch.no_grad():
        x_now = teacher_step(teacher, x_next, t_next, t_now, recipe.teacher_solver)
        anchor = target_model(x_now, t_now)
    scale = getattr(model, "data_std", torch.ones(()))
    difference = (model(x_next, t_next) - anchor) / scale
    squared = difference.square().sum(1)
    if recipe.loss == "l2":
        return squared.mean()
    c = 0.00054 * math.sqrt(x0.shape[1])
    return (torch.sqrt(squared + c * c) - c).mean()


def train_consistency(
    model: ConsistencyNet, teacher: nn.Module, target: Target, ctx: FitContext, recipe: Recipe, steps: int,
    batch: int, labels: tuple[str, ...],
) -> dict[str, Any]:
    """Distil ``teacher`` into ``model`` in place; returns ``history`` (step, loss)."""
    fit_standardization(model, standardization_draws(target, ctx, "consistency"))
    target_model = copy.deepcopy(model).requires_grad_(False)
    generator = ctx.generator("consistency", *labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps, eta_min=0.01 * recipe.lr)
    window = max(1, math.ceil(steps / 500))
    history: dict[str, list[float]] = {"step": [], "loss": [], "intervals": []}
    running, count = 0.0, 0
    cached: dict[int, Tensor] = {}
    for step in tqdm(range(1, steps + 1), desc=f"consistency {target.name}", disable=not ctx.progress, leave=False):
        intervals = recipe.intervals_at(step, steps)
        if intervals not in cached:
            cached[intervals] = noise_levels(model.schedule, intervals, torch.empty((), dtype=ctx.dtype,
                                                                                    device=ctx.device))[1]
        times = cached[intervals]
        x0 = target.sample(batch, generator, ctx.dtype)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=ctx.dtype)
        index = torch.randint(0, intervals, (batch,), generator=generator, device=generator.device)
        loss = consistency_loss(model, target_model, teacher, x0, noise, index, times, recipe)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay.step()
        with torch.no_grad():
            for online, ema in zip(model.parameters(), target_model.parameters()):
                ema.lerp_(online, 1 - recipe.target_ema)
        running += float(loss.detach())
        count += 1
        if step % window == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(running / count)
            history["intervals"].append(intervals)
            running, count = 0.0, 0
    return {"history": history}


def consistency_model(
    target: Target, ctx: FitContext, teacher: str = "denoiser", recipe: Recipe = RECIPE
) -> nn.Module:
    """The consistency model of ``target`` distilled from ``teacher``, trained once and cached.

    Args:
        target: The target.
        ctx: Device, seed, budget and cache.
        teacher: ``"denoiser"`` (the shared learned diffusion model) or ``"exact"`` (closed-form ε).
        recipe: The distillation's choices.

    Raises:
        ValueError: Unknown ``teacher``.
    """
    if teacher == "denoiser":
        teacher_model = get_denoiser(target, ctx)
        teacher_key: dict[str, Any] = {"kind": "denoiser", **denoiser_config(ctx, DEFAULT_DENOISER)}
    elif teacher == "exact":
        teacher_model, teacher_key = ExactEps(target), {"kind": "exact"}
    else:
        raise ValueError(f"unknown teacher {teacher!r}; choose 'denoiser' or 'exact'")
    budget = ctx.profile.pick(CONSISTENCY_BUDGETS)
    config = {"version": VERSION, "teacher": teacher_key, "recipe": dataclasses.asdict(recipe),
              "arch": {"hidden": 128, "depth": 6, "emb_dim": 64, "activation": "silu"},
              "standardization": dict(STANDARDIZATION), **budget}
    schedule = DiscreteVPSchedule()
    return ctx.cached_model(
        "consistency" + ("-exact" if teacher == "exact" else ""),
        target,
        config,
        build=lambda: ConsistencyNet(target.dim, schedule, skip=recipe.skip),
        train=lambda model: train_consistency(model, teacher_model, target, ctx, recipe,
                                              labels=(target.name, teacher), **budget),
    )
