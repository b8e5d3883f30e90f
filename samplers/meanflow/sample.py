"""Sampling MeanFlow: ``N`` jumps ``x_r = x_t - (t - r) u_θ(x_t, r, t)`` from ``t = 1`` to ``t = 0``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.contracts import SampleFn
from samplers.flow import prior_draws, time_grid
from samplers.nets import TimeMLP

from .model import average_velocity


def meanflow_jumps(net: nn.Module, z: Tensor, steps: int) -> Tensor:
    """``steps`` jumps ``x_r = x_t - (t - r) u_θ(x_t, r, t)`` on a uniform grid from ``t = 1`` to ``0``.

    Args:
        net: Average-velocity network (see :func:`average_velocity`).
        z: Prior draws, shape ``(n, d)``.
        steps: Number of jumps (= network calls).

    Returns:
        Samples, shape ``(n, d)``.
    """
    ts = time_grid(steps).tolist()
    x = z
    for t, r in zip(ts[:-1], ts[1:]):
        x = x - (t - r) * average_velocity(net, x, r, t)
    return x


def jump_sampler(net: TimeMLP, dim: int, steps: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function: ``z ~ N(0, I)`` carried to the data by ``steps`` jumps, mapped back to data space."""

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> Tensor:
        return net.unstandardize(meanflow_jumps(net, prior_draws(n, dim, generator, dtype), steps))

    return sample
