"""An example pingsbench plugin package.

It registers

* ``ring2d`` – eight Gaussians on a circle, built from the built-in mixture
  class, so every solver's exact-score mode works on it too;
* ``gaussian-fit`` – a one-pass sampler that matches only the target's mean
  and covariance: ``x = μ + A z`` with ``A Aᵀ = Σ`` estimated from target
  draws (a symmetric square root, so rank-deficient covariances work too).  Its row shows what "first two moments right" scores on each metric.

Install with ``pip install -e examples/pingsbench-example``; ``pingsbench list``
then shows both with this package as their source.
"""

from __future__ import annotations

import math

import torch

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, Target
from targets.gmm import GaussianMixture


def ring2d(modes: int = 8, radius: float = 3.0, std: float = 0.3) -> GaussianMixture:
    angles = [2 * math.pi * k / modes for k in range(modes)]
    return GaussianMixture(
        "ring2d",
        weights=[1 / modes] * modes,
        means=[[radius * math.cos(a), radius * math.sin(a)] for a in angles],
        stds=[[std, std]] * modes,
        description=f"{modes} Gaussians on a circle of radius {radius} (example plugin)",
    )


class AffineMap(torch.nn.Module):
    """``z ↦ μ + A z``; an ``nn.Module`` so the runner counts its calls (NFE = 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.eye(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + z @ self.scale.T


class GaussianFit(Sampler):
    name = "gaussian-fit"
    description = "moment-matched Gaussian, one affine map (example plugin)"

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        def train(model: AffineMap) -> dict:
            draws = target.sample(100_000, ctx.generator("gaussian-fit", target.name), dtype=torch.float64)
            model.mean.copy_(draws.mean(0))
            variances, axes = torch.linalg.eigh(torch.cov(draws.T).reshape(target.dim, target.dim))
            model.scale.copy_(axes * variances.clamp_min(0).sqrt())
            return {"fitted_on": len(draws)}

        model = ctx.cached_model("gaussian-fit", target, {"draws": 100_000, "version": 1},
                                 lambda: AffineMap(target.dim), train)

        def sample(n: int, generator: torch.Generator) -> torch.Tensor:
            z = torch.randn(n, target.dim, generator=generator, device=generator.device, dtype=ctx.dtype)
            return model(z)

        return sample


@hookimpl
def register_targets(register):
    register(ring2d())


@hookimpl
def register_samplers(register):
    register(GaussianFit())
