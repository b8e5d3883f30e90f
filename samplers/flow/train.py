"""Training flow matching and its reflow (rectified flow): straight path, loss, couplings, loop, cached models."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.contracts import FitContext, Target
from samplers.nets import ARCH, STANDARDIZATION, TimeMLP, fit_standardization, standardization_draws

from .model import velocity_net
from .sample import heun, prior_draws, time_grid


def straight_path(x_0: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Point and conditional velocity on the straight path.

    Args:
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws, shape ``(n, d)``.
        t: Times in ``[0, 1]``, shape ``(n, 1)``.

    Returns:
        ``x_t = (1 - t) x_0 + t z`` and ``dx_t/dt = z - x_0``, both ``(n, d)``.
    """
    return (1 - t) * x_0 + t * z, z - x_0


def flow_matching_loss(velocity: nn.Module, x_0: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """Conditional flow-matching loss ``E‖v(x_t, t) - (z - x_0)‖²`` (Lipman et al., 2023, eq. 9).

    Its gradient equals that of ``E‖v(x_t, t) - u_t(x_t)‖²`` with the marginal
    velocity ``u_t(x) = E[z - x_0 | x_t = x]``, so the loss is minimised by ``u_t``.

    Args:
        velocity: ``v(x, t)`` taking ``(n, d)`` and ``(n, 1)``.
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws coupled with ``x_0``, shape ``(n, d)``.
        t: Times, shape ``(n, 1)``.

    Returns:
        Scalar: the squared error summed over dimensions, averaged over points.
    """
    x_t, target = straight_path(x_0, z, t)
    return (velocity(x_t, t) - target).square().sum(1).mean()


def minibatch_ot_coupling(x_0: Tensor, z: Tensor, block: int) -> Tensor:
    """Re-order ``z`` so that ``(x_0[i], z[i])`` is an exact squared-Euclidean OT plan within blocks.

    Minibatch OT-CFM (Tong et al., 2024, §3.2) with the exact assignment solved
    on consecutive blocks of ``block`` points, which keeps the cubic cost of the
    assignment bounded at large batches.

    Args:
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws, shape ``(n, d)``.
        block: Points per exact assignment problem.

    Returns:
        A permutation of the rows of ``z`` within each block, shape ``(n, d)``.
    """
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as exc:  # scipy is an optional dependency of pingsbench
        raise ImportError("minibatch-OT couplings (ot-flow-matching-<N>) need scipy: pip install scipy") from exc

    paired = torch.empty_like(z)
    for start in range(0, len(z), block):
        rows = slice(start, start + block)
        cost = torch.cdist(x_0[rows].double(), z[rows].double()).square().cpu().numpy()
        _, columns = linear_sum_assignment(cost)
        paired[rows] = z[rows][torch.as_tensor(columns, device=z.device)]
    return paired


def train_steps(
    module: nn.Module,
    loss_at: Callable[[], Tensor],
    steps: int,
    lr: float,
    ctx: FitContext,
    desc: str,
) -> dict[str, Any]:
    """Adam with a cosine-decayed learning rate: the loop of flow matching, reflow, MeanFlow and the students.

    The learning rate decays to 1% of ``lr`` so that short CPU budgets still
    end in a low-noise regime (a constant rate leaves the final iterate
    fluctuating around the optimum).

    Args:
        module: The model, trained in place.
        loss_at: Draws a fresh minibatch and returns its scalar loss.
        steps: Number of optimiser steps.
        lr: Peak learning rate.
        ctx: Supplies the progress-bar switch.
        desc: Progress-bar label.

    Returns:
        ``{"history": {"step": [...], "loss": [...]}}``, the loss averaged over
        at most 500 equal windows.
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.01 * lr)
    window = max(1, math.ceil(steps / 500))
    history: dict[str, list[float]] = {"step": [], "loss": []}
    running = torch.zeros((), device=next(module.parameters()).device)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not ctx.progress, leave=False):
        loss = loss_at()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.detach()
        if step % window == 0 or step == steps:
            count = window if step % window == 0 else step % window
            history["step"].append(step)
            history["loss"].append(float(running) / count)
            running.zero_()
    return {"history": history}


def uniform_times(n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``t ~ U(0, 1)``, shape ``(n, 1)``, on the generator's device."""
    return torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)


#: Training budget of the flow-matching velocity net; ``ot_block`` is the OT-coupling block size.
FLOW_MATCHING_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 150, "batch": 256, "lr": 1e-3, "ot_block": 128},
    "quick": {"steps": 4_000, "batch": 1024, "lr": 1e-3, "ot_block": 256},
    "paper": {"steps": 20_000, "batch": 2048, "lr": 1e-3, "ot_block": 512},
}
FLOW_MATCHING_VERSION = 2


def flow_matching_config(ctx: FitContext, coupling: str) -> dict[str, Any]:
    """Everything that determines the flow-matching velocity net's weights (its cache key)."""
    return {
        "version": FLOW_MATCHING_VERSION,
        "coupling": coupling,
        "arch": ARCH,
        "standardization": STANDARDIZATION,
        **ctx.profile.pick(FLOW_MATCHING_BUDGETS),
    }


def flow_matching_model(target: Target, ctx: FitContext, coupling: str = "independent") -> nn.Module:
    """The target's flow-matching velocity net ``v(x, t)``, trained once and cached.

    Args:
        target: Supplies the training data.
        ctx: Device, seed, budget and cache.
        coupling: ``"independent"`` (``x_0`` and ``z`` drawn independently) or
            ``"ot"`` (minibatch optimal-transport pairs).

    Returns:
        The trained :class:`TimeMLP` with one time input.
    """
    config = flow_matching_config(ctx, coupling)
    kind = "flow-matching" if coupling == "independent" else f"flow-matching-{coupling}"

    def train(velocity: TimeMLP) -> Mapping[str, Any]:
        fit_standardization(velocity, standardization_draws(target, ctx, kind))
        generator = ctx.generator(kind, target.name, "train")

        def loss_at() -> Tensor:
            x_0 = velocity.standardize(target.sample(config["batch"], generator, ctx.dtype))
            z = prior_draws(config["batch"], target.dim, generator, ctx.dtype)
            if coupling == "ot":
                z = minibatch_ot_coupling(x_0, z, config["ot_block"])
            return flow_matching_loss(velocity, x_0, z, uniform_times(config["batch"], generator, ctx.dtype))

        return train_steps(velocity, loss_at, config["steps"], config["lr"], ctx, f"{kind} {target.name}")

    return ctx.cached_model(kind, target, config, lambda: velocity_net(target.dim), train)


#: Budget of the reflow: pairs drawn once with ``pair_solver_steps`` Heun steps, then ``steps`` optimiser steps.
REFLOW_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"pairs": 2_000, "pair_solver_steps": 8, "steps": 150, "batch": 256, "lr": 1e-3},
    "quick": {"pairs": 50_000, "pair_solver_steps": 32, "steps": 4_000, "batch": 1024, "lr": 1e-3},
    "paper": {"pairs": 200_000, "pair_solver_steps": 64, "steps": 20_000, "batch": 2048, "lr": 1e-3},
}
REFLOW_VERSION = 2


def reflow_pairs(velocity: nn.Module, z: Tensor, solver_steps: int) -> Tensor:
    """The flow's deterministic map ``z ↦ ODE(z)``: Heun from ``t = 1`` to ``t = 0``.

    Args:
        velocity: Trained ``v(x, t)``.
        z: Prior draws, shape ``(n, d)``.
        solver_steps: Heun steps (two velocity calls each).

    Returns:
        ``x_0 = ODE(z)`` in the network's (standardised) space, shape ``(n, d)``.
    """
    with torch.no_grad():
        return heun(velocity, z, time_grid(solver_steps, z.device))


def rectified_flow_model(target: Target, ctx: FitContext) -> nn.Module:
    """The once-reflowed velocity net (2-rectified flow of Liu et al., 2023), trained once and cached."""
    base = flow_matching_model(target, ctx)
    config = {
        "version": REFLOW_VERSION,
        "base": flow_matching_config(ctx, "independent"),
        **ctx.profile.pick(REFLOW_BUDGETS),
    }

    def train(velocity: nn.Module) -> Mapping[str, Any]:
        # Warm start from the first flow (weights and standardisation), as Liu et al. do:
        # the reflow then only has to straighten paths, not learn the data from scratch.
        velocity.load_state_dict(base.state_dict())
        start = time.perf_counter()
        pair_generator = ctx.generator("rectified-flow", target.name, "pairs")
        z_pairs = prior_draws(config["pairs"], target.dim, pair_generator, ctx.dtype)
        x_pairs = reflow_pairs(base, z_pairs, config["pair_solver_steps"])
        pair_seconds = time.perf_counter() - start
        generator = ctx.generator("rectified-flow", target.name, "train")

        def loss_at() -> Tensor:
            index = torch.randint(config["pairs"], (config["batch"],), generator=generator, device=generator.device)
            t = uniform_times(config["batch"], generator, ctx.dtype)
            return flow_matching_loss(velocity, x_pairs[index], z_pairs[index], t)

        info = train_steps(velocity, loss_at, config["steps"], config["lr"], ctx, f"reflow {target.name}")
        return {**info, "pair_seconds": pair_seconds}

    return ctx.cached_model("rectified-flow", target, config, lambda: velocity_net(target.dim), train)
