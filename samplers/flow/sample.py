"""Sampling a velocity field: prior draws, the time grid, Euler and Heun from ``t = 1`` (prior) to ``t = 0`` (data)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.contracts import SampleFn
from samplers.nets import TimeMLP


def prior_draws(n: int, dim: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``z ~ N(0, I)``, shape ``(n, dim)``, on the generator's device."""
    return torch.randn(n, dim, generator=generator, device=generator.device, dtype=dtype)


def euler(velocity: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` with explicit Euler over the grid ``ts`` (one call per step).

    Args:
        velocity: ``v(x, t)``.
        x: State at ``ts[0]``, shape ``(n, d)``.
        ts: Decreasing times, shape ``(N + 1,)``.

    Returns:
        State at ``ts[-1]``, shape ``(n, d)``.
    """
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        x = x + (t_next - t) * velocity(x, t)
    return x


def heun(velocity: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` with Heun's 2nd-order method (two calls per step).

    Used to solve a trained flow accurately when generating reflow pairs.

    Args:
        velocity: ``v(x, t)``.
        x: State at ``ts[0]``, shape ``(n, d)``.
        ts: Decreasing times, shape ``(N + 1,)``.

    Returns:
        State at ``ts[-1]``, shape ``(n, d)``.
    """
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        step = t_next - t
        slope = velocity(x, t)
        predicted = x + step * slope
        x = x + 0.5 * step * (slope + velocity(predicted, t_next))
    return x


def time_grid(steps: int, device: torch.device | None = None) -> Tensor:
    """``steps + 1`` uniformly spaced times from 1 (prior) to 0 (data)."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)


def euler_sampler(velocity: TimeMLP, dim: int, steps: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function: ``z ~ N(0, I)`` integrated from ``t = 1`` to ``0`` with ``steps`` Euler steps."""

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> Tensor:
        return velocity.unstandardize(euler(velocity, prior_draws(n, dim, generator, dtype), time_grid(steps)))

    return sample
