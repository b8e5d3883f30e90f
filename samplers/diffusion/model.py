"""Noise predictors ``ε(x_t, t)``: the trained ε-net of PINGS §5.4.1 and the exact ε of a target.

Both are ``nn.Module`` calls (so the runner counts them as network evaluations)
with a ``schedule`` attribute: a predictor together with its schedule fully
defines the probability-flow ODE that every solver in :mod:`.sample` integrates.
The ε-net is trained in :mod:`.train`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.contracts import Target
from samplers.nets import SinusoidalEmbedding, mlp

from .schedule import DiscreteVPSchedule


class EpsNet(nn.Module):
    """The ε-net of PINGS §5.4.1: an MLP on ``[x_t, emb(t)]`` predicting the noise.

    Six hidden layers of width 128 (tanh by default, as the paper states),
    Xavier-uniform weights and zero biases, a linear output layer.

    Args:
        dim: Data dimension ``d``.
        schedule: The schedule it is trained for (used by solvers to integrate it).
        hidden: Hidden width.
        depth: Number of hidden layers.
        emb_dim: Size of the sinusoidal time embedding.
        activation: ``"tanh"`` or ``"silu"``.

    Raises:
        ValueError: Unknown ``activation`` or odd ``emb_dim``.
    """

    def __init__(
        self,
        dim: int,
        schedule: DiscreteVPSchedule,
        hidden: int = 128,
        depth: int = 6,
        emb_dim: int = 64,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.embed = SinusoidalEmbedding(emb_dim)
        self.mlp = mlp(dim + emb_dim, dim, hidden, depth, activation)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, continuous ``t`` ``(n,)`` in ``[1/T, 1]`` → ``ε̂`` ``(n, d)``."""
        return self.mlp(torch.cat([x_t, self.embed(t)], dim=-1))


class ExactEps(nn.Module):
    """The optimal noise prediction ``ε*(x_t, t) = E[ε | x_t] = -σ(t) ∇log q_t(x_t)``.

    Uses the target's closed-form noised score, so solver error can be measured
    apart from score-learning error.  An ``nn.Module`` so each call is counted.

    Args:
        target: A target providing :meth:`~bench.contracts.Target.noised_score`.
        schedule: The noise schedule defining ``ᾱ(t)``.
    """

    def __init__(self, target: Target, schedule: DiscreteVPSchedule | None = None) -> None:
        super().__init__()
        self.target = target
        self.schedule = schedule or DiscreteVPSchedule()

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` → ``ε*`` ``(n, d)``."""
        log_alpha = self.schedule.log_alpha(t)[:, None]
        sigma = torch.sqrt(-torch.expm1(2 * log_alpha))
        return -sigma * self.target.noised_score(x_t, torch.exp(2 * log_alpha))
