"""Deterministic solvers of the VP probability-flow ODE, driven by an ε-predictor.

Every solver has the signature ``solver(eps_model, x, ts) -> x``:

* ``eps_model(x, t)`` — any noise predictor (:class:`~.model.EpsNet`,
  :class:`~.model.ExactEps`) with a ``schedule`` attribute giving ``α, σ, λ``;
* ``x`` — the state at ``ts[0]`` (usually ``x_T ~ N(0, I)``), shape ``(n, d)``;
* ``ts`` — decreasing nodes ``t_0 > … > t_N`` from :func:`~.schedule.timesteps`.

Written in the exponential-integrator variables of DPM-Solver (Lu et al. 2022):
with ``h_i = λ(t_{i+1}) - λ(t_i) > 0`` the ODE's linear part is integrated
exactly, and ``y = x/α``, ``ρ = σ/α = e^{-λ}`` turn it into ``dy/dρ = ε(x, t)``.
The model is called exactly as often as the method says (no extra final
evaluation), always on the full batch, so the measured NFE is the true one.
Step coefficients are computed in float64 and cast to the state's dtype.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

Solver = Callable[[nn.Module, Tensor, Tensor], Tensor]


class _Nodes:
    """``t``, ``α``, ``σ``, ``λ`` at the solver nodes (float64, on the state's device)."""

    def __init__(self, eps_model: nn.Module, ts: Tensor, like: Tensor) -> None:
        if ts.ndim != 1 or len(ts) < 2 or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("ts must be a 1-D decreasing tensor of at least two nodes")
        self.schedule = eps_model.schedule
        self.t = ts.to(device=like.device, dtype=torch.float64)
        self.alpha, self.sigma, self.lam = self.at(self.t)
        self.dtype = like.dtype

    def at(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = self.schedule
        return s.alpha(t), s.sigma(t), s.lambda_(t)

    def cast(self, *coefficients: Tensor) -> tuple[Tensor, ...]:
        return tuple(c.to(self.dtype) for c in coefficients)


def _eps(eps_model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """One network evaluation at a single time ``t`` (0-dim) for the whole batch: the model adapter."""
    return eps_model(x, t.to(x.dtype).expand(x.shape[0]))


def ddim(eps_model: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Deterministic DDIM (η = 0; Song et al. 2021, eq. 12), one network call per step.

    ``x_{i+1} = (α_{i+1}/α_i) x_i - σ_{i+1}(e^{h_i} - 1) ε(x_i, t_i)``: Euler in ``(y, ρ)``,
    identical to first-order DPM-Solver.  First order in the step size.
    """
    nodes = _Nodes(eps_model, ts, x)
    h = nodes.lam[1:] - nodes.lam[:-1]
    scale, noise_coef = nodes.cast(nodes.alpha[1:] / nodes.alpha[:-1], -nodes.sigma[1:] * torch.expm1(h))
    for i in range(len(h)):
        x = scale[i] * x + noise_coef[i] * _eps(eps_model, x, nodes.t[i])
    return x


def dpm_solver_heun(eps_model: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Heun's method (trapezoidal predictor–corrector) on ``dy/dρ = ε`` — the paper's "DPM-Solver (Heun)".

    Each step is a DDIM (Euler) predictor to ``t_{i+1}`` and a corrector with the
    average of the two slopes (Karras et al. 2022, Alg. 1, in ``y = x/α``,
    ``ρ = σ/α``).  Every step, the last included, makes two network calls: NFE = 2N.
    Second order.
    """
    nodes = _Nodes(eps_model, ts, x)
    h = nodes.lam[1:] - nodes.lam[:-1]
    scale, noise_coef = nodes.cast(nodes.alpha[1:] / nodes.alpha[:-1], -nodes.sigma[1:] * torch.expm1(h))
    for i in range(len(h)):
        eps_start = _eps(eps_model, x, nodes.t[i])
        x_euler = scale[i] * x + noise_coef[i] * eps_start
        eps_end = _eps(eps_model, x_euler, nodes.t[i + 1])
        x = scale[i] * x + noise_coef[i] * 0.5 * (eps_start + eps_end)
    return x


def dpm_solver_2(eps_model: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Singlestep DPM-Solver-2 with ``r = ½`` (Lu et al. 2022, Alg. 1), two network calls per step.

    An intermediate DDIM step to ``s_i = t(λ_i + h_i/2)`` gives ``u_i``, then
    ``x_{i+1} = (α_{i+1}/α_i) x_i - σ_{i+1}(e^{h_i} - 1) ε(u_i, s_i)``.  Second order.
    """
    nodes = _Nodes(eps_model, ts, x)
    h = nodes.lam[1:] - nodes.lam[:-1]
    t_mid = nodes.schedule.t_from_lambda(nodes.lam[:-1] + 0.5 * h)
    alpha_mid, sigma_mid, _ = nodes.at(t_mid)
    mid_scale, mid_coef, scale, noise_coef = nodes.cast(
        alpha_mid / nodes.alpha[:-1],
        -sigma_mid * torch.expm1(0.5 * h),
        nodes.alpha[1:] / nodes.alpha[:-1],
        -nodes.sigma[1:] * torch.expm1(h),
    )
    for i in range(len(h)):
        u = mid_scale[i] * x + mid_coef[i] * _eps(eps_model, x, nodes.t[i])
        x = scale[i] * x + noise_coef[i] * _eps(eps_model, u, t_mid[i])
    return x


def dpm_solver_pp_2m(eps_model: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Multistep DPM-Solver++(2M) in data prediction (Lu et al. 2022b, Alg. 2), one call per step.

    With ``D_i = (x_i - σ_i ε(x_i, t_i))/α_i`` and ``r_i = h_{i-1}/h_i``:
    ``x_{i+1} = (σ_{i+1}/σ_i) x_i - α_{i+1}(e^{-h_i} - 1)(D_i + (D_i - D_{i-1})/(2 r_i))``.
    The first step has no history and is first order (DDIM); every later step,
    the last included, is second order (no ``lower_order_final``).
    """
    nodes = _Nodes(eps_model, ts, x)
    h = nodes.lam[1:] - nodes.lam[:-1]
    ratio = torch.cat([h.new_ones(1), h[:-1] / h[1:]])  # r_i (unused at i = 0)
    inv_alpha, sigma_over_alpha, scale, data_coef, half_over_r = nodes.cast(
        1 / nodes.alpha, nodes.sigma / nodes.alpha, nodes.sigma[1:] / nodes.sigma[:-1],
        -nodes.alpha[1:] * torch.expm1(-h), 0.5 / ratio,
    )
    previous = None
    for i in range(len(h)):
        data = inv_alpha[i] * x - sigma_over_alpha[i] * _eps(eps_model, x, nodes.t[i])
        slope = data if previous is None else data + half_over_r[i] * (data - previous)
        x = scale[i] * x + data_coef[i] * slope
        previous = data
    return x
