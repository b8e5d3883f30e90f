"""Training MeanFlow (Geng et al., 2025): the MeanFlow identity as a regression target, time pairs, cached model."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from bench.contracts import FitContext, Target
from samplers.flow import prior_draws, straight_path, train_steps
from samplers.nets import ARCH, STANDARDIZATION, TimeMLP, fit_standardization, standardization_draws

from .model import average_velocity, average_velocity_net


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

    return ctx.cached_model("meanflow", target, config, lambda: average_velocity_net(target.dim), train)
