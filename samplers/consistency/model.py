"""Consistency functions ``f(x_t, t)``: the trained network and the exact one of a Gaussian target."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from samplers.diffusion import DiscreteVPSchedule
from samplers.nets import SinusoidalEmbedding, mlp


class ConsistencyNet(nn.Module):
    """``f_θ(x_t, t)`` with the skip parametrization of Song et al. (2023, App. C), on the VP schedule.

    In EDM's variables ``x̃ = x/α`` and ``σ̃ = σ/α`` of the schedule, per coordinate with data mean
    ``μ`` and std ``s`` (``data_mean``, ``data_std``: buffers saved with the weights):
    ``f̃ = μ + c_skip (x̃ - μ) + c_out F([c_in (x̃ - μ), emb(c_noise)])`` with
    ``c_skip = s²/((σ̃ - σ̃_min)² + s²)``, ``c_out = s (σ̃ - σ̃_min)/√(σ̃² + s²)``,
    ``c_in = 1/√(σ̃² + s²)`` and ``c_noise`` the log-SNR mapped onto ``[0, 1]``; the output is
    ``α_min f̃``.  At ``t = 1/T`` (``σ̃ = σ̃_min``) ``c_skip = 1`` and ``c_out = 0``: ``f(x, 1/T) = x``
    exactly, the boundary condition, whatever the weights.

    Args:
        dim: Data dimension ``d``.
        schedule: The VP schedule of the teacher.
        hidden: Hidden width.
        depth: Hidden layers.
        emb_dim: Time embedding size.
        activation: ``"tanh"`` or ``"silu"``.
        skip: Use ``c_skip``/``c_out`` (``False``: ``f̃ = μ + s F``, no boundary condition; an ablation).
    """

    def __init__(
        self, dim: int, schedule: DiscreteVPSchedule, hidden: int = 128, depth: int = 6, emb_dim: int = 64,
        activation: str = "silu", skip: bool = True,
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.skip = skip
        self.embed = SinusoidalEmbedding(emb_dim)
        self.mlp = mlp(dim + emb_dim, dim, hidden, depth, activation)
        self.register_buffer("data_mean", torch.zeros(dim))
        self.register_buffer("data_std", torch.ones(dim))
        ends = schedule.lambda_(torch.tensor([schedule.t_min, schedule.t_max], dtype=torch.float64))
        self.lambda_range = (float(ends[0]), float(ends[1]))
        self.alpha_min = float(schedule.alpha(torch.tensor(schedule.t_min, dtype=torch.float64)))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` in ``[1/T, 1]`` → the trajectory's end at ``t = 1/T``, ``(n, d)``."""
        lam = self.schedule.lambda_(t)
        rho = torch.exp(-lam).to(x_t.dtype)[:, None]  # σ̃ = σ/α
        rho_min = torch.exp(torch.tensor(-self.lambda_range[0], dtype=x_t.dtype, device=x_t.device))
        alpha = self.schedule.alpha(t).to(x_t.dtype)[:, None]
        mean, std = self.data_mean, self.data_std
        centred = x_t / alpha - mean
        c_in = torch.rsqrt(rho.square() + std.square())
        c_noise = (self.lambda_range[0] - lam) / (self.lambda_range[0] - self.lambda_range[1])
        output = self.mlp(torch.cat([c_in * centred, self.embed(c_noise.to(x_t.dtype))], dim=-1))
        if self.skip:
            c_skip = std.square() / ((rho - rho_min).square() + std.square())
            c_out = std * (rho - rho_min) * c_in
            return self.alpha_min * (mean + c_skip * centred + c_out * output)
        return self.alpha_min * (mean + std * output)


class GaussianConsistency(nn.Module):
    """The exact consistency function of ``N(m, diag(c²))`` on the VP schedule (closed form).

    The probability-flow ODE of a Gaussian keeps ``(x_t - α_t m)/√(α_t² c² + σ_t²)`` constant, so
    ``f(x_t, t) = α_min m + √(α_min² c² + σ_min²)/√(α_t² c² + σ_t²) · (x_t - α_t m)``.

    Args:
        mean: ``m``, shape ``(d,)``.
        std: ``c``, shape ``(d,)``.
        schedule: The VP schedule.
    """

    def __init__(self, mean: Tensor, std: Tensor, schedule: DiscreteVPSchedule | None = None) -> None:
        super().__init__()
        self.schedule = schedule or DiscreteVPSchedule()
        self.mean, self.std = mean, std

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``α_t m`` and std ``√(α_t² c² + σ_t²)`` of ``x_t``, each ``(n, d)`` for ``t`` ``(n,)``."""
        alpha, sigma = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        return alpha * self.mean, torch.sqrt(alpha.square() * self.std.square() + sigma.square())

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` → ``f(x_t, t)`` ``(n, d)``."""
        end_mean, end_std = self.marginal(torch.full_like(t, self.schedule.t_min))
        mean, std = self.marginal(t)
        return end_mean + end_std / std * (x_t - mean)
