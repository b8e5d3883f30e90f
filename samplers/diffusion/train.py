"""Training of the ε-net (PINGS §5.4.1, the DDPM objective) and the cached ε-net every solver shares."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.contracts import FitContext, Target

from .model import EpsNet, ExactEps
from .schedule import DiscreteVPSchedule

#: Training budgets per profile (PINGS §5.4.1: 20 000 steps at batch 2048 for ``paper``).
EPSNET_BUDGETS: Mapping[str, Mapping[str, int]] = {
    "smoke": {"steps": 200, "batch": 256},
    "quick": {"steps": 3000, "batch": 1024},
    "paper": {"steps": 20_000, "batch": 2048},
}
#: Optimiser of §5.4.1: Adam 1e-3, learning rate × 0.999 every 1000 steps, no EMA.
OPTIMISER = {"lr": 1e-3, "lr_decay": 0.999, "lr_decay_every": 1000}
#: Held-out (x_0, i, ε) triples for the final ε error; enough for ~1% precision.
EVAL_POINTS = 20_000
MAX_LOGGED_POINTS = 500


def _noised_batch(
    target: Target, schedule: DiscreteVPSchedule, n: int, generator: torch.Generator, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh DDPM training triples (eq. 24): ``x_t = √ᾱ_i x_0 + √(1-ᾱ_i) ε``, ``i ~ U{1..T}``, ``t = i/T``."""
    device = generator.device
    x0 = target.sample(n, generator, dtype=dtype)
    i = torch.randint(1, schedule.T + 1, (n,), generator=generator, device=device)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    log_alpha = schedule.grid_log_alpha(x0)[i - 1, None]
    x_t = torch.exp(log_alpha) * x0 + torch.sqrt(-torch.expm1(2 * log_alpha)) * noise
    # One rounding of i/T into ``dtype`` (in bfloat16, i itself would already round).
    return x_t, (i.to(torch.float64) / schedule.T).to(dtype), noise


def train_epsnet(model: EpsNet, target: Target, ctx: FitContext, steps: int, batch: int) -> dict[str, Any]:
    """Train ``model`` in place with the DDPM objective (PINGS eq. 25) on fresh target draws each step.

    Returns:
        ``{"history": {"step", "loss"}}`` (per-coordinate MSE averaged over logging
        intervals, at most 500 points) and, when the target has a noised score,
        ``eps_rmse`` (RMSE of ``ε̂ - ε*`` per coordinate over ``i ~ U{1..T}``) and
        ``loss_floor`` (the DDPM loss of ``ε*``, the best any network can reach).
    """
    schedule = model.schedule
    generator = ctx.generator("epsnet", target.name)
    optimiser = torch.optim.Adam(model.parameters(), lr=OPTIMISER["lr"])
    decay = torch.optim.lr_scheduler.StepLR(optimiser, OPTIMISER["lr_decay_every"], OPTIMISER["lr_decay"])
    log_every = max(1, math.ceil(steps / MAX_LOGGED_POINTS))
    history: dict[str, list[float]] = {"step": [], "loss": []}
    running, count = torch.zeros((), device=ctx.device, dtype=ctx.dtype), 0  # summed on device: one sync per log
    for step in tqdm(range(1, steps + 1), desc=f"ε-net {target.name}", disable=not ctx.progress, leave=False):
        x_t, t, noise = _noised_batch(target, schedule, batch, generator, ctx.dtype)
        loss = (model(x_t, t) - noise).square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay.step()
        running += loss.detach()
        count += 1
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(float(running) / count)
            running, count = running.zero_(), 0
    info: dict[str, Any] = {"history": history}
    if target.has("noised_score"):
        info.update(epsnet_error(model, target, ctx.generator("epsnet-eval", target.name), ctx.dtype))
    return info


@torch.no_grad()
def epsnet_error(
    model: nn.Module, target: Target, generator: torch.Generator, dtype: torch.dtype, n: int = EVAL_POINTS
) -> dict[str, float]:
    """``eps_rmse`` of ``model`` against :class:`ExactEps` and the DDPM ``loss_floor`` on ``n`` fresh triples."""
    x_t, t, noise = _noised_batch(target, model.schedule, n, generator, dtype)
    exact = ExactEps(target, model.schedule)(x_t, t)
    return {
        "eps_rmse": float((model(x_t, t) - exact).square().mean().sqrt()),
        "loss_floor": float((exact - noise).square().mean()),
    }


def get_epsnet(target: Target, ctx: FitContext, activation: str = "tanh") -> EpsNet:
    """The ε-net for ``target``, trained once per (target, profile, seed, activation) and cached.

    Every solver (and any other sampler needing an ε-net) calling this with the
    same context gets the same trained module.
    """
    schedule = DiscreteVPSchedule()
    budget = ctx.profile.pick(EPSNET_BUDGETS)
    architecture = {"hidden": 128, "depth": 6, "emb_dim": 64, "activation": activation}
    config = {"version": 1, "schedule": schedule.config(), **architecture, **OPTIMISER, **budget}
    return ctx.cached_model(
        "epsnet",
        target,
        config,
        build=lambda: EpsNet(target.dim, schedule, **architecture),
        train=lambda model: train_epsnet(model, target, ctx, **budget),
    )
