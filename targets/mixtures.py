"""Diagonal Gaussian mixtures with exact sampling, density, score and noised score.

``gmm3d`` is the PINGS paper's target (§5.1.1, eq. 22).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from bench import hookimpl
from bench.contracts import MetricSpec, Target

MODE_WEIGHT_TV = MetricSpec(
    "mode_weight_tv",
    "mode-weight TV",
    "lower",
    "total-variation distance between the mixture weights and the fraction of samples assigned "
    "to each component by maximal responsibility",
)


class GaussianMixture(Target):
    """``p(x) = Σ_k π_k N(x; μ_k, diag(σ_k²))``.

    Its cache identity is the default :meth:`~bench.contracts.Target.fingerprint`:
    ``weights``, ``means`` and ``stds`` are public tensors, so changing any of them
    retrains every model trained on the mixture.

    Args:
        name: Registry name.
        weights: Mixture weights ``π``, shape ``(K,)``, summing to one.
        means: Component means ``μ``, shape ``(K, d)``.
        stds: Component standard deviations ``σ``, shape ``(K, d)`` (diagonal covariances).
    """

    metric_specs = (MODE_WEIGHT_TV,)

    def __init__(
        self,
        name: str,
        weights: Sequence[float],
        means: Sequence[Sequence[float]],
        stds: Sequence[Sequence[float]],
        description: str = "",
    ) -> None:
        self.name = name
        self.description = description
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        k, self.dim = self.means.shape
        if self.weights.shape != (k,) or self.stds.shape != (k, self.dim):
            raise ValueError("weights (K,), means (K, d) and stds (K, d) must agree")
        if not math.isclose(float(self.weights.sum()), 1.0, abs_tol=1e-9) or bool((self.weights <= 0).any()):
            raise ValueError(f"mixture weights must be positive and sum to 1, got {weights}")
        if bool((self.stds <= 0).any()):
            raise ValueError("standard deviations must be positive")

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kw = {"device": like.device, "dtype": like.dtype}
        return self.weights.to(**kw), self.means.to(**kw), self.stds.to(**kw)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        device = generator.device
        weights, means, stds = (p.to(device) for p in (self.weights, self.means, self.stds))
        components = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        return (means[components] + stds[components] * noise).to(dtype)

    def _component_log_probs(self, x: Tensor, means: Tensor, variances: Tensor, weights: Tensor) -> Tensor:
        """``log π_k + log N(x; m_k, diag(v_k))``, shape ``(n, K)``; means/variances ``(K, d)`` or ``(n, K, d)``.

        Each row is clamped to at least its maximum − 80: components that far
        below the best one weigh < e⁻⁸⁰ in every softmax / log-sum-exp, and
        exponentiating them would take the CPU's slow denormal path.
        """
        diff = x[:, None, :] - means
        log_norm = -0.5 * (diff.square() / variances + variances.log() + math.log(2 * math.pi)).sum(-1)
        logits = weights.log() + log_norm
        return torch.maximum(logits, logits.amax(-1, keepdim=True) - 80.0)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities ``r_k(x)``, shape ``(n, K)``."""
        weights, means, stds = self._params(x)
        return torch.softmax(self._component_log_probs(x, means, stds.square(), weights), dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        weights, means, stds = self._params(x)
        return torch.logsumexp(self._component_log_probs(x, means, stds.square(), weights), dim=-1)

    def _mixture_score(self, x: Tensor, means: Tensor, variances: Tensor, weights: Tensor) -> Tensor:
        # eq. (8): Σ_k r_k(x) Σ_k^{-1} (μ_k - x), responsibilities via a stable softmax.
        resp = torch.softmax(self._component_log_probs(x, means, variances, weights), dim=-1)
        return (resp[..., None] * (means - x[:, None, :]) / variances).sum(1)

    def score(self, x: Tensor) -> Tensor:
        weights, means, stds = self._params(x)
        return self._mixture_score(x, means, stds.square(), weights)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        # Each component stays Gaussian: N(√ᾱ μ_k, ᾱ σ_k² + 1 - ᾱ).
        weights, means, stds = self._params(x_t)
        alpha_bar = torch.as_tensor(alpha_bar, device=x_t.device, dtype=x_t.dtype)
        if alpha_bar.ndim == 2:  # (n, 1) -> (n, 1, 1) to broadcast over components
            alpha_bar = alpha_bar[:, :, None]
        noised_means = alpha_bar.sqrt() * means
        noised_vars = alpha_bar * stds.square() + (1 - alpha_bar)
        return self._mixture_score(x_t, noised_means, noised_vars, weights)

    def mean(self) -> Tensor:
        """Exact mixture mean, shape ``(d,)`` (float64)."""
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Exact mixture covariance, shape ``(d, d)`` (float64)."""
        mean = self.mean()
        second = (self.weights[:, None, None] * (torch.diag_embed(self.stds.square())
                  + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - mean[:, None] * mean[None, :]

    def extra_metrics(self, generated: Tensor, reference: Tensor) -> dict[str, float]:
        assigned = self.responsibilities(generated.double()).argmax(-1)
        fractions = torch.bincount(assigned, minlength=len(self.weights)).double() / len(generated)
        return {MODE_WEIGHT_TV.name: 0.5 * float((fractions - self.weights).abs().sum())}


def gmm3d() -> GaussianMixture:
    """The PINGS paper's 3-component 3D mixture (eq. 22)."""
    return GaussianMixture(
        "gmm3d",
        weights=[0.5, 0.3, 0.2],
        means=[[2.5, 0.0, -1.5], [-2.0, 2.0, 1.0], [0.0, -2.5, 2.0]],
        stds=[[0.60, 0.50, 0.70], [0.45, 0.65, 0.40], [0.55, 0.40, 0.60]],
        description="PINGS paper eq. 22: 3-component diagonal Gaussian mixture in 3D",
    )


@hookimpl
def register_targets(register):
    register(gmm3d())
