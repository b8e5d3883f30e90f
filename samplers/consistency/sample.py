"""Multistep consistency sampling (Song et al. 2023, Alg. 1) on the VP schedule."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bench.contracts import SampleFn

#: Log-SNR ``λ = log(α/σ)`` of the second step's time: unit SNR (``σ̃ = 1``), about the data's own scale
#: for standardised targets (Song et al. use ``σ = 0.821`` for their two-step CIFAR-10 samples).
TWO_STEP_LAMBDA = 0.0


def step_times(model: nn.Module, steps: int) -> list[float]:
    """Times of the ``steps`` calls: ``1``, then (two steps) the time of :data:`TWO_STEP_LAMBDA`.

    Raises:
        ValueError: ``steps`` is not 1 or 2.
    """
    if steps not in (1, 2):
        raise ValueError(f"consistency sampling takes 1 or 2 steps, got {steps}")
    schedule = model.schedule
    times = [schedule.t_max]
    if steps == 2:
        times.append(float(schedule.t_from_lambda(torch.tensor(TWO_STEP_LAMBDA, dtype=torch.float64))))
    return times


def consistency_sample(model: nn.Module, z: Tensor, times: Sequence[float], generator: torch.Generator) -> Tensor:
    """``x = f(z, times[0])``; for each later ``τ``: re-noise ``x`` to ``τ``, then ``x = f(x_τ, τ)``.

    ``x`` is a point at ``t_min = 1/T``, so it is carried to ``τ`` by the VP transition
    ``q(x_τ | x_{t_min})``: ``x_τ = (α_τ/α_min) x + √(σ_τ² - (α_τ/α_min)² σ_min²) ξ``, which with the
    exact ``f`` leaves every step's output distributed exactly as the ``t_min`` marginal.

    Args:
        model: Consistency function ``f(x_t, t)`` with a ``schedule``.
        z: Prior draws, shape ``(n, d)``.
        times: Decreasing times, ``times[0]`` the prior end (one call each).
        generator: Source of the re-noising draws.

    Returns:
        Samples, shape ``(n, d)``.
    """
    schedule = model.schedule
    t_min = torch.tensor(schedule.t_min, dtype=torch.float64)
    alpha_min, sigma_min = float(schedule.alpha(t_min)), float(schedule.sigma(t_min))
    x = model(z, torch.full((len(z),), times[0], device=z.device, dtype=z.dtype))
    for tau in times[1:]:
        tau64 = torch.tensor(tau, dtype=torch.float64)
        ratio = float(schedule.alpha(tau64)) / alpha_min
        noise_std = (float(schedule.sigma(tau64)) ** 2 - ratio**2 * sigma_min**2) ** 0.5
        xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = model(ratio * x + noise_std * xi, torch.full((len(x),), tau, device=x.device, dtype=x.dtype))
    return x


def consistency_sampler(model: nn.Module, dim: int, steps: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function: ``z ~ N(0, I)``, then :func:`consistency_sample` with ``steps`` calls (NFE = steps)."""
    times = step_times(model, steps)

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, dim, generator=generator, device=generator.device, dtype=dtype)
        return consistency_sample(model, z, times, generator)

    return sample
