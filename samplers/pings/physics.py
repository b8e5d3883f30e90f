"""Target velocities ``v(x, t)`` of the PINGS residual ``R = ∂_t g - v(g, t)`` (PINGS eq. 7).

Time runs as in the paper: ``t = 1`` is the prior (``g(1, z) = z``), ``t = 0`` the data.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from samplers.diffusion import DiscreteVPSchedule, dpm_solver_pp_2m, timesteps


class ScoreGuidance:
    """The paper's residual target ``v(x, t) = α(t) s(x)``, ``α(t) = α_scale (1 - t)^α_power`` (eq. 7).

    Args:
        score: The target's score ``∇log p(x)`` (``(n, d) → (n, d)``), or ``None``
            for the score-free mode ``s ≡ 0`` (§3.1), where ``R = ∂_t g``.
        alpha_scale: ``α_scale``.
        alpha_power: ``α_power``.
    """

    def __init__(self, score: Callable[[Tensor], Tensor] | None, alpha_scale: float, alpha_power: float) -> None:
        self.score = score
        self.alpha_scale = alpha_scale
        self.alpha_power = alpha_power

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """``x`` ``(n, d)``, ``t`` ``(n,)`` → ``(n, d)``."""
        if self.score is None:
            return torch.zeros_like(x)
        alpha = self.alpha_scale * (1.0 - t).pow(self.alpha_power)
        return alpha[:, None] * self.score(x)


class ProbabilityFlow:
    """The VP probability-flow ODE in PINGS time: the velocity whose flow map ``g`` should be.

    PINGS time ``t ∈ [0, 1]`` maps linearly onto diffusion time ``τ = τ_min + (1 - τ_min) t``
    (``τ_min = 1/T`` is the data end of :class:`DiscreteVPSchedule`, ``τ = 1`` its prior
    end), so::

        dx/dt = (1 - τ_min) (f(τ) x - ½ g²(τ) ∇log p_τ(x)) = (1 - τ_min) (f(τ) x + g²(τ) ε̂(x, τ) / 2σ(τ))

    with ``ε̂ = -σ ∇log p_τ`` from an ε-predictor (the target's exact one or the
    trained ε-net).  ``g(1, z) = z`` with ``z ~ N(0, I)`` starts the flow from the
    prior only approximately: ``ᾱ(1) ≈ 4·10⁻⁵``, so ``p_1`` is ``N(0, I)`` up to a
    mean shift of ``√ᾱ(1) μ`` (≈ 0.016 for the paper's mixture).

    Args:
        eps_model: ``ε̂(x_τ, τ)`` taking ``(n, d)`` and ``(n,)``.
        schedule: The noise schedule ``eps_model`` belongs to.
    """

    def __init__(self, eps_model: nn.Module, schedule: DiscreteVPSchedule) -> None:
        self.eps_model = eps_model
        self.schedule = schedule

    def diffusion_time(self, t: Tensor) -> Tensor:
        """``τ = τ_min + (1 - τ_min) t``."""
        return self.schedule.t_min + (1.0 - self.schedule.t_min) * t

    @torch.no_grad()
    def solve(self, z: Tensor, nfe: int) -> Tensor:
        """``x(t = 0)`` of this ODE from ``x(1) = z`` by DPM-Solver++(2M) with ``nfe`` steps (logSNR spacing)."""
        return dpm_solver_pp_2m(self.eps_model, z, timesteps(self.schedule, nfe))

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """``x`` ``(n, d)``, ``t`` ``(n,)`` → ``dx/dt`` ``(n, d)``."""
        tau = self.diffusion_time(t)
        f, g_sq = self.schedule.drift(tau)
        eps_scale = g_sq / (2.0 * self.schedule.sigma(tau))
        return (1.0 - self.schedule.t_min) * (f[:, None] * x + eps_scale[:, None] * self.eps_model(x, tau))


@torch.no_grad()
def flow_map_error(model: nn.Module, flow: ProbabilityFlow, z: Tensor, tol: float = 1e-5) -> float | None:
    """RMSE per coordinate of ``g(0, z)`` against a dopri5 solve of ``flow`` from ``z`` at ``t = 1`` to ``t = 0``.

    If ``g`` is the flow map of the probability-flow ODE this is zero, sample by sample.
    The drift of the discrete schedule jumps at its 1000 grid points, which dopri5's
    error control does not see: on a closed-form Gaussian flow map the solve is off
    by ~5e-4 whatever the tolerance (passing the jumps as ``jump_t`` gives ~2e-5 but
    costs ~7000 evaluations), far below the errors this is meant to measure.

    Args:
        model: ``g_θ(z, t)``.
        flow: The ODE ``g`` was trained to follow.
        z: Prior draws, shape ``(n, d)``.
        tol: Relative and absolute tolerance of the solver.

    Returns:
        The RMSE, or ``None`` if torchdiffeq (a test-only dependency) is not installed.
    """
    try:
        from torchdiffeq import odeint
    except ImportError:
        return None
    ends = torch.tensor([1.0, 0.0], dtype=z.dtype, device=z.device)
    # dopri5 steps past t = 0 and interpolates back; below 0 the schedule is undefined,
    # so the velocity is held at its t = 0 value there (continuous, changes nothing on [0, 1]).
    solved = odeint(
        lambda t, x: flow(x, t.clamp(min=0.0).expand(len(x))),
        z,
        ends,
        method="dopri5",
        rtol=tol,
        atol=tol,
    )[-1]
    mapped = model(z, torch.zeros(len(z), dtype=z.dtype, device=z.device))
    return float((mapped - solved).square().mean().sqrt())
