"""Sampling a one-step student: one network call from the prior to the data."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.contracts import SampleFn
from samplers.flow import prior_draws
from samplers.nets import TimeMLP


def one_step_sampler(student: TimeMLP, dim: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function ``z ~ N(0, I) ↦ d_θ(z)`` (one network call)."""

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> Tensor:
        return student.unstandardize(student(prior_draws(n, dim, generator, dtype)))

    return sample
