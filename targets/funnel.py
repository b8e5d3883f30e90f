"""Neal's funnel in any dimension: ``funnel-<d>``.

Neal (2003), "Slice sampling", Annals of Statistics 31(3), §8: ``v ~ N(0, 3²)`` and
``x_i | v ~ N(0, e^v)`` for ``i = 1…d-1`` (Neal's example has d = 10).  The
neck (``v`` ≪ 0) is where samplers fail: a sampler that misses it still matches
the bulk, so the funnel reports the W1 distance of the ``v`` marginal.
"""

from __future__ import annotations

import math
import re

import torch
from scipy.stats import wasserstein_distance
from torch import Tensor

from bench import hookimpl
from bench.contracts import MetricSpec, Target, TargetFamily, parse_dimension
from targets.quadrature import alpha_bar_column, in_row_chunks, log_normal, posterior_quadrature

V_MARGINAL_W1 = MetricSpec(
    "v_w1", "v W1", "lower",
    "Wasserstein-1 distance between the generated and the reference marginals of the funnel's neck "
    "coordinate v ~ N(0, 9) (misses in the narrow neck, v ≪ 0, show here)",
)
#: Range of ``v`` integrated over by :meth:`Funnel.noised_score`: ±13 prior standard deviations.
V_RANGE = (-40.0, 40.0)
#: Below this ``1 - ᾱ`` the noised score is the score (the posterior of ``v`` is narrower than 3·10⁻⁵).
CLEAN_LIMIT = 1e-9


class Funnel(Target):
    """Neal's funnel ``p(v, x) = N(v; 0, σ_v²) Π_i N(x_i; 0, e^v)``, coordinates ``(v, x_1, …, x_{d-1})``.

    Exact sampling, ``log_prob`` and ``score`` are closed-form.  Given ``v`` the
    VP-noised funnel is Gaussian, so ``q(v_t, x_t) = ∫ N(v; 0, σ_v²) N(v_t; √ᾱ v, 1-ᾱ)
    Π_i N(x_{t,i}; 0, ᾱ e^v + 1 - ᾱ) dv``, a one-dimensional integral computed by
    :func:`~targets.quadrature.posterior_quadrature` over ``δ = v - v_t/√ᾱ`` (so the
    ``v`` score ``√ᾱ E[δ] / (1-ᾱ)`` has no cancellation as ᾱ → 1); the ``x`` score is
    ``-x_t E[1 / (ᾱ e^v + 1 - ᾱ)]``.  Where ``1 - ᾱ ≤ 10⁻⁹`` the score is used.

    Args:
        dim: ``d ≥ 2``: the neck ``v`` and ``d - 1`` coordinates ``x``.
        v_std: Standard deviation ``σ_v`` of the neck (Neal: 3).

    Raises:
        ValueError: ``dim < 2`` or ``v_std ≤ 0``.
    """

    metric_specs = (V_MARGINAL_W1,)

    def __init__(self, dim: int, v_std: float = 3.0) -> None:
        if dim < 2 or v_std <= 0:
            raise ValueError(f"the funnel needs dim ≥ 2 and v_std > 0, got {dim} and {v_std}")
        self.name = f"funnel-{dim}"
        self.dim = dim
        self.v_std = float(v_std)
        self.description = f"Neal's funnel in {dim}D: v ~ N(0, {v_std:g}²), x_i | v ~ N(0, e^v)"

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        device = generator.device
        normal = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        v = self.v_std * normal[:, :1]
        return torch.cat([v, torch.exp(v / 2) * normal[:, 1:]], dim=1).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        x64 = x.double()
        v = x64[:, :1]
        return (log_normal(v, 0.0, self.v_std**2).squeeze(1)
                + log_normal(x64[:, 1:], 0.0, torch.exp(v)).sum(1)).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        x64 = x.double()
        v, rest = x64[:, :1], x64[:, 1:]
        precision = torch.exp(-v)
        d_v = -v / self.v_std**2 - (self.dim - 1) / 2 + 0.5 * rest.square().sum(1, keepdim=True) * precision
        return torch.cat([d_v, -rest * precision], dim=1).to(x.dtype)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        x = x_t.double()
        alpha = alpha_bar_column(alpha_bar, x)
        clean = (1 - alpha).squeeze(1) <= CLEAN_LIMIT
        out = torch.empty_like(x)
        if bool(clean.any()):
            out[clean] = self.score(x[clean])
        if not bool(clean.all()):
            noisy = ~clean
            out[noisy] = in_row_chunks(self._noised_score, 4096, x[noisy], alpha[noisy])
        return out.to(x_t.dtype)

    def _noised_score(self, x: Tensor, alpha: Tensor) -> Tensor:
        v_t, rest = x[:, :1], x[:, 1:]
        radius2 = rest.square().sum(1, keepdim=True)
        count = self.dim - 1
        root, noise = alpha.sqrt(), 1 - alpha
        centre = v_t / root  # δ = v - v_t/√ᾱ

        def x_variance(delta: Tensor) -> Tensor:
            return alpha * torch.exp(centre + delta) + noise

        def log_integrand(delta: Tensor) -> Tensor:
            s2 = x_variance(delta)
            return (log_normal(centre + delta, 0.0, self.v_std**2) + log_normal(root * delta, 0.0, noise)
                    - 0.5 * (radius2 / s2 + count * s2.log()))

        lower, upper = V_RANGE
        delta, posterior, _ = posterior_quadrature(log_integrand, lower - centre, upper - centre)
        d_v = root * (posterior * delta).sum(1, keepdim=True) / noise
        d_x = -rest * (posterior / x_variance(delta)).sum(1, keepdim=True)
        return torch.cat([d_v, d_x], dim=1)

    def mean(self) -> Tensor:
        """Exact mean (zero), shape ``(d,)``."""
        return torch.zeros(self.dim, dtype=torch.float64)

    def covariance(self) -> Tensor:
        """Exact covariance: ``diag(σ_v², E e^v, …)`` with ``E e^v = e^{σ_v²/2}``, shape ``(d, d)``."""
        return torch.diag(torch.tensor([self.v_std**2] + [math.exp(self.v_std**2 / 2)] * (self.dim - 1),
                                       dtype=torch.float64))

    def extra_metrics(self, generated: Tensor, reference: Tensor) -> dict[str, float]:
        return {V_MARGINAL_W1.name: float(wasserstein_distance(generated[:, 0].double().numpy(),
                                                               reference[:, 0].double().numpy()))}


class FunnelFamily(TargetFamily):
    """``funnel-<d>`` for any ``d`` from 2 to 4096 (:class:`Funnel`)."""

    pattern = "funnel-<d>"
    regex = re.compile(r"funnel-(?P<d>[0-9]+)")
    description = "Neal's funnel: v ~ N(0, 9), x_i | v ~ N(0, e^v), i < d; noised score by quadrature over v"
    defaults = ("funnel-10",)

    def build(self, name: str, match: re.Match[str]) -> Funnel:
        return Funnel(parse_dimension(match, self.pattern, 2))


@hookimpl
def register_targets(register):
    register(FunnelFamily())
