"""Sampling PINGS: one batched forward pass ``g_θ(0, Z)``, ``Z ~ N(0, I)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.contracts import SampleFn


def endpoint_samples(model: nn.Module, z: Tensor) -> Tensor:
    """``g(0, z)``: the one-pass sampler."""
    return model(z, torch.zeros(len(z), dtype=z.dtype, device=z.device))


def one_pass_sampler(model: nn.Module, dim: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function ``n ↦ g_θ(0, Z)``, ``Z ~ N(0, I)`` of shape ``(n, dim)`` in ``dtype`` (one network call)."""

    def sample(n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, dim, generator=generator, device=generator.device, dtype=dtype)
        return endpoint_samples(model, z)

    return sample
