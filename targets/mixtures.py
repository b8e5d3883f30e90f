"""Mixture targets: Gaussian (diagonal or full covariance) and multivariate Student-t.

* ``gmm3d`` – the PINGS paper's target (§5.1.1, eq. 22), in the default run.
* ``gmm3d-many`` and ``gmm3d-aniso`` – the paper's future work (i) (§6: "more modes,
  strong anisotropy, heavy tails"): nine modes with weights down to 1 %, and three
  rotated components with condition number 100.
* ``gmm-<d>`` – a Gaussian mixture in any dimension, built from a fixed seed
  (:func:`gmm_d`), with a closed-form noised score.
* ``studentt-mix-<d>`` – a mixture of multivariate Student-t components with
  ν = 5 (:func:`studentt_mix_d`), noised score by quadrature over the t's scale.

Every mixture reports the mode-weight error (:data:`MODE_WEIGHT_TV`).
"""

from __future__ import annotations

import abc
import math
import re
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from bench import hookimpl
from bench.contracts import MetricSpec, Target, TargetFamily, parse_dimension
from targets.quadrature import NODES, alpha_bar_column, in_row_chunks, posterior_quadrature

MODE_WEIGHT_TV = MetricSpec(
    "mode_weight_tv",
    "mode-weight TV",
    "lower",
    "total-variation distance between the mixture weights and the fraction of samples assigned "
    "to each component by maximal responsibility",
)


class Mixture(Target, abc.ABC):
    """A finite mixture ``p(x) = Σ_k π_k p_k(x)`` with public ``weights`` ``π`` of shape ``(K,)``.

    Provides the mode-weight error (:data:`MODE_WEIGHT_TV`) from :meth:`responsibilities`
    and :meth:`sample` from :meth:`sample_components`.  Holds no public data
    attributes of its own, so it adds nothing to a subclass's fingerprint.
    """

    metric_specs = (MODE_WEIGHT_TV,)
    weights: Tensor

    @abc.abstractmethod
    def sample_components(self, n: int, generator: torch.Generator,
                          dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Exact draws and the component each came from: shapes ``(n, dim)`` and ``(n,)`` (int64)."""

    @abc.abstractmethod
    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities ``r_k(x)``, shape ``(n, K)``."""

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.sample_components(n, generator, dtype)[0]

    def extra_metrics(self, generated: Tensor, reference: Tensor) -> dict[str, float]:
        assigned = self.responsibilities(generated.double()).argmax(-1)
        fractions = torch.bincount(assigned, minlength=len(self.weights)).double() / len(generated)
        return {MODE_WEIGHT_TV.name: 0.5 * float((fractions - self.weights).abs().sum())}


def _check_weights(weights: Tensor, k: int) -> None:
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {tuple(weights.shape)}")
    if not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-9) or bool((weights <= 0).any()):
        raise ValueError(f"mixture weights must be positive and sum to 1, got {weights.tolist()}")


class GaussianMixture(Mixture):
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

    def sample_components(self, n: int, generator: torch.Generator,
                          dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        device = generator.device
        weights, means, stds = (p.to(device) for p in (self.weights, self.means, self.stds))
        components = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        return (means[components] + stds[components] * noise).to(dtype), components

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


def gmm3d() -> GaussianMixture:
    """The PINGS paper's 3-component 3D mixture (eq. 22)."""
    return GaussianMixture(
        "gmm3d",
        weights=[0.5, 0.3, 0.2],
        means=[[2.5, 0.0, -1.5], [-2.0, 2.0, 1.0], [0.0, -2.5, 2.0]],
        stds=[[0.60, 0.50, 0.70], [0.45, 0.65, 0.40], [0.55, 0.40, 0.60]],
        description="PINGS paper eq. 22: 3-component diagonal Gaussian mixture in 3D",
    )


def gmm3d_many() -> GaussianMixture:
    """Nine diagonal components in 3D: the cube's corners at ±2.2 and a 1 % mode at its centre.

    The paper's "more modes" (§6, future work (i)): weights from 20 % down to 1 %,
    so a sampler that drops the small central mode or flattens the weights shows
    in the mode-weight error.  Adjacent modes are ≥ 6 standard deviations apart.
    """
    corners = [[sx, sy, sz] for sx in (-2.2, 2.2) for sy in (-2.2, 2.2) for sz in (-2.2, 2.2)]
    return GaussianMixture(
        "gmm3d-many",
        weights=[0.20, 0.16, 0.14, 0.12, 0.11, 0.10, 0.09, 0.07, 0.01],
        means=[*corners, [0.0, 0.0, 0.0]],
        stds=[[0.50, 0.35, 0.45], [0.30, 0.55, 0.40], [0.45, 0.40, 0.30], [0.35, 0.30, 0.55],
              [0.55, 0.45, 0.35], [0.40, 0.50, 0.45], [0.30, 0.40, 0.50], [0.50, 0.30, 0.35],
              [0.30, 0.30, 0.30]],
        description="9-mode diagonal Gaussian mixture in 3D, weights 20 % down to 1 % (PINGS §6 future work)",
    )


def _eigen(matrices: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``(K, d)`` and eigenvectors (columns) ``(K, d, d)`` of symmetric positive-definite matrices."""
    if not torch.allclose(matrices, matrices.mT, rtol=0, atol=1e-12):
        raise ValueError(f"{what} must be symmetric")
    values, vectors = torch.linalg.eigh(matrices)
    if bool((values <= 0).any()):
        raise ValueError(f"{what} must be positive definite")
    return values, vectors


def _rotate(vectors: Tensor, basis: Tensor) -> Tensor:
    """Coordinates of ``vectors`` ``(n, K, d)`` in each component's eigenbasis ``(K, d, d)``."""
    return torch.einsum("nkd,kde->nke", vectors, basis)


def _unrotate(coordinates: Tensor, basis: Tensor) -> Tensor:
    """Inverse of :func:`_rotate`: back from eigenbasis coordinates to ``(n, K, d)`` vectors."""
    return torch.einsum("nke,kde->nkd", coordinates, basis)


def _clamped(logits: Tensor) -> Tensor:
    # Components more than e⁸⁰ below the best weigh nothing in any softmax / log-sum-exp, and
    # exponentiating them would take the CPU's slow denormal path (as in GaussianMixture).
    return torch.maximum(logits, logits.amax(-1, keepdim=True) - 80.0)


class FullCovarianceMixture(Mixture):
    """``p(x) = Σ_k π_k N(x; μ_k, Σ_k)`` with full covariances.

    Computed in each component's eigenbasis ``Σ_k = U_k diag(λ_k) U_kᵀ``: the VP-noised
    component is ``N(√ᾱ μ_k, U_k diag(ᾱ λ_k + 1 - ᾱ) U_kᵀ)``, so the noised score is
    closed-form for every ᾱ and each row's ᾱ costs no extra factorisation.

    Args:
        name: Registry name.
        weights: Mixture weights ``π``, shape ``(K,)``, positive, summing to one.
        means: Component means ``μ``, shape ``(K, d)``.
        covariances: Symmetric positive-definite ``Σ``, shape ``(K, d, d)``.
        description: One line for ``pingsbench list``.

    Raises:
        ValueError: Shapes disagree, weights are not a distribution, or a covariance is not SPD.
    """

    def __init__(self, name: str, weights: Sequence[float] | Tensor, means: Sequence[Sequence[float]] | Tensor,
                 covariances: Sequence[Sequence[Sequence[float]]] | Tensor, description: str = "") -> None:
        self.name = name
        self.description = description
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covariances = torch.as_tensor(covariances, dtype=torch.float64)
        k, self.dim = self.means.shape
        _check_weights(self.weights, k)
        if self.covariances.shape != (k, self.dim, self.dim):
            raise ValueError(f"covariances must have shape ({k}, {self.dim}, {self.dim})")
        self._eigenvalues, self._eigenvectors = _eigen(self.covariances, "covariances")

    def _logits(self, x: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log π_k + log N_k(x)`` ``(n, K)``, eigenbasis offsets ``(n, K, d)`` and variances, all float64.

        ``alpha_bar`` is a float64 column ``(n, 1)``.
        """
        kw = {"device": x.device, "dtype": torch.float64}
        values, vectors = self._eigenvalues.to(**kw), self._eigenvectors.to(**kw)
        a = alpha_bar[:, :, None]
        offsets = _rotate(x[:, None, :] - a.sqrt() * self.means.to(**kw), vectors)
        variances = a * values + (1 - a)
        log_norm = -0.5 * (offsets.square() / variances + variances.log() + math.log(2 * math.pi)).sum(-1)
        return _clamped(self.weights.to(**kw).log() + log_norm), offsets, variances

    def responsibilities(self, x: Tensor) -> Tensor:
        x64 = x.double()
        return torch.softmax(self._logits(x64, alpha_bar_column(1.0, x64))[0], dim=-1).to(x.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        x64 = x.double()
        return torch.logsumexp(self._logits(x64, alpha_bar_column(1.0, x64))[0], dim=-1).to(x.dtype)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        x = x_t.double()
        logits, offsets, variances = self._logits(x, alpha_bar_column(alpha_bar, x))
        resp = torch.softmax(logits, dim=-1)
        vectors = self._eigenvectors.to(device=x.device)
        return -_unrotate(resp[..., None] * offsets / variances, vectors).sum(1).to(x_t.dtype)

    def score(self, x: Tensor) -> Tensor:
        return self.noised_score(x, 1.0)

    def sample_components(self, n: int, generator: torch.Generator,
                          dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        device = generator.device
        components = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        values, vectors = self._eigenvalues.to(device), self._eigenvectors.to(device)
        draws = self.means.to(device)[components] + torch.einsum(
            "nde,ne->nd", vectors[components], values[components].sqrt() * noise)
        return draws.to(dtype), components

    def mean(self) -> Tensor:
        """Exact mixture mean, shape ``(d,)`` (float64)."""
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Exact mixture covariance, shape ``(d, d)`` (float64)."""
        return _mixture_covariance(self.weights, self.means, self.covariances)


def _mixture_covariance(weights: Tensor, means: Tensor, covariances: Tensor) -> Tensor:
    """``Σ_k π_k (Σ_k + μ_k μ_kᵀ) - m mᵀ`` with ``m = Σ_k π_k μ_k``."""
    mean = (weights[:, None] * means).sum(0)
    second = (weights[:, None, None] * (covariances + means[:, :, None] * means[:, None, :])).sum(0)
    return second - mean[:, None] * mean[None, :]


#: Range of the log-precision ``u = log τ`` integrated over by :meth:`StudentTMixture.noised_score`:
#: the Gamma(ν/2, ν/2) prior weighs e^{-ν/2·e^15} at the top; at the bottom, a point's posterior
#: sits near log((ν + d)/Mahalanobis²), above -40 for any point within 10⁸ scales of a mode.
LOG_PRECISION_RANGE = (-40.0, 15.0)


class StudentTMixture(Mixture):
    """``p(x) = Σ_k π_k t_ν(x; μ_k, Σ_k)``, multivariate Student-t components with ``ν`` degrees of freedom.

    Each component is the Gaussian scale mixture ``x = μ_k + Σ_k^{1/2} z / √τ`` with
    ``z ~ N(0, I)`` and ``τ ~ Gamma(ν/2, rate ν/2)`` (Kotz & Nadarajah, *Multivariate
    t Distributions*, 2004, §1.1), which is how it is sampled (``τ = χ²_ν / ν`` from ν
    squared normals, so ν is an integer) and how it is noised: given ``τ`` the
    VP-noised component is ``N(√ᾱ μ_k, ᾱ Σ_k / τ + (1 - ᾱ) I)``, so
    ``q_k(x_t) = ∫ N(x_t; √ᾱ μ_k, ᾱ Σ_k e^{-u} + (1 - ᾱ) I) p(u) du`` over
    ``u = log τ``, computed by :func:`~targets.quadrature.posterior_quadrature`; the
    score is ``-Σ_k r_k U_k (E[1 / v(u)] ⊙ y_k)`` in the eigenbasis of ``Σ_k``, with
    the posterior expectation on the same nodes.  ``log_prob`` and ``score`` are closed-form.

    With ``ν = 5`` the tails are heavy (polynomial, ``∝ ‖x‖^{-(ν + d)}``), yet the
    covariance ``ν/(ν - 2) Σ_k`` and the kurtosis (``ν > 4``) are finite, so the
    moment metrics stay defined.

    Args:
        name: Registry name.
        weights: Mixture weights, shape ``(K,)``.
        means: Component locations ``μ``, shape ``(K, d)``.
        scales: Symmetric positive-definite scale matrices ``Σ``, shape ``(K, d, d)``.
        dof: Degrees of freedom ``ν``, an integer ≥ 3 (finite covariance).
        description: One line for ``pingsbench list``.

    Raises:
        ValueError: Shapes disagree, weights are not a distribution, a scale is not SPD, or ``ν`` is not
            an integer ≥ 3.
    """

    def __init__(self, name: str, weights: Sequence[float] | Tensor, means: Sequence[Sequence[float]] | Tensor,
                 scales: Sequence[Sequence[Sequence[float]]] | Tensor, dof: int = 5, description: str = "") -> None:
        if not isinstance(dof, int) or dof < 3:
            raise ValueError(f"dof must be an integer ≥ 3 (finite covariance), got {dof!r}")
        self.name = name
        self.description = description
        self.dof = dof
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.scales = torch.as_tensor(scales, dtype=torch.float64)
        k, self.dim = self.means.shape
        _check_weights(self.weights, k)
        if self.scales.shape != (k, self.dim, self.dim):
            raise ValueError(f"scales must have shape ({k}, {self.dim}, {self.dim})")
        self._eigenvalues, self._eigenvectors = _eigen(self.scales, "scales")

    def _params(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        kw = {"device": device, "dtype": torch.float64}
        return (self.weights.to(**kw), self.means.to(**kw), self._eigenvalues.to(**kw),
                self._eigenvectors.to(**kw))

    def _clean(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Clamped ``log π_k + log t_k(x)`` ``(n, K)``, eigenbasis offsets ``(n, K, d)``, Mahalanobis² ``(n, K)``."""
        weights, means, values, vectors = self._params(x.device)
        nu, d = float(self.dof), self.dim
        offsets = _rotate(x[:, None, :] - means, vectors)
        mahalanobis = (offsets.square() / values).sum(-1)
        log_t = (math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - d / 2 * math.log(nu * math.pi)
                 - 0.5 * values.log().sum(-1) - (nu + d) / 2 * torch.log1p(mahalanobis / nu))
        return _clamped(weights.log() + log_t), offsets, mahalanobis

    def responsibilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self._clean(x.double())[0], dim=-1).to(x.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._clean(x.double())[0], dim=-1).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        x64 = x.double()
        logits, offsets, mahalanobis = self._clean(x64)
        _, _, values, vectors = self._params(x.device)
        shrink = (self.dof + self.dim) / (self.dof + mahalanobis)
        resp = torch.softmax(logits, dim=-1)
        return -_unrotate((resp * shrink)[..., None] * offsets / values, vectors).sum(1).to(x.dtype)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        x = x_t.double()
        rows = max(1, 2**22 // (len(self.weights) * NODES * self.dim))  # (rows·K, nodes, d) temporaries ≤ 32 MiB
        return in_row_chunks(self._noised_score, rows, x, alpha_bar_column(alpha_bar, x)).to(x_t.dtype)

    def _noised_score(self, x: Tensor, alpha_bar: Tensor) -> Tensor:
        weights, means, values, vectors = self._params(x.device)
        (n, d), k = x.shape, len(weights)
        a = alpha_bar[:, :, None]
        offsets = _rotate(x[:, None, :] - a.sqrt() * means, vectors).reshape(n * k, d)
        scaled = (a * values).reshape(n * k, 1, d)  # ᾱ λ, to be divided by τ = e^u
        noise = (1 - alpha_bar).repeat_interleave(k, dim=0)[:, :, None]
        half_nu = self.dof / 2

        def variances(u: Tensor) -> Tensor:
            return scaled * torch.exp(-u)[:, :, None] + noise  # (n·K, nodes, d)

        def log_integrand(u: Tensor) -> Tensor:
            v = variances(u)
            log_lik = -0.5 * (offsets[:, None, :].square() / v + v.log()).sum(-1)
            return half_nu * u - half_nu * torch.exp(u) + log_lik  # log Gamma(τ) + log τ, constants dropped

        u, posterior, log_q = posterior_quadrature(log_integrand, *LOG_PRECISION_RANGE)
        inverse_variance = (posterior[:, :, None] / variances(u)).sum(1)  # E[1 / v(u) | x_t], (n·K, d)
        component_scores = -_unrotate((offsets * inverse_variance).reshape(n, k, d), vectors)
        # the constants dropped from log q_k are the same for every component
        resp = torch.softmax(_clamped(weights.log() + log_q.reshape(n, k)), dim=-1)
        return (resp[..., None] * component_scores).sum(1)

    def sample_components(self, n: int, generator: torch.Generator,
                          dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        device = generator.device
        weights, means, values, vectors = self._params(device)
        components = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        chi2 = torch.randn(n, self.dof, generator=generator, device=device, dtype=torch.float64).square().sum(1)
        gaussian = torch.einsum("nde,ne->nd", vectors[components], values[components].sqrt() * noise)
        return (means[components] + gaussian / (chi2 / self.dof).sqrt()[:, None]).to(dtype), components

    def mean(self) -> Tensor:
        """Exact mixture mean, shape ``(d,)`` (float64)."""
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Exact mixture covariance (component covariance ``ν/(ν-2) Σ_k``), shape ``(d, d)`` (float64)."""
        return _mixture_covariance(self.weights, self.means, self.dof / (self.dof - 2) * self.scales)


def _axis_rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` about ``axis`` (Rodrigues' formula), shape ``(3, 3)``."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    angle = math.radians(degrees)
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _covariance(rotation: np.ndarray, eigenvalues: Sequence[float]) -> np.ndarray:
    """``R diag(λ) Rᵀ``, symmetrised and rounded to 12 decimals so the fingerprint is the same on every BLAS."""
    covariance = (rotation * np.asarray(eigenvalues)) @ rotation.T
    return np.round((covariance + covariance.T) / 2, 12)


def gmm3d_aniso() -> FullCovarianceMixture:
    """Three rotated, needle-shaped components in 3D, each with condition number 100.

    The paper's "strong anisotropy" (§6, future work (i)): standard deviations
    (1, 0.3, 0.1) along axes rotated away from the coordinate axes, so no
    coordinate-wise (diagonal) model fits a component.
    """
    eigenvalues = (1.0, 0.09, 0.01)
    rotations = (_axis_rotation((1, 1, 0), 50), _axis_rotation((0, 1, 1), -35), _axis_rotation((1, 0, 1), 70))
    return FullCovarianceMixture(
        "gmm3d-aniso",
        weights=[0.45, 0.35, 0.20],
        means=[[2.5, 0.0, -1.5], [-2.0, 2.0, 1.0], [0.0, -2.5, 2.0]],
        covariances=np.stack([_covariance(r, eigenvalues) for r in rotations]),
        description="3 rotated full-covariance Gaussians in 3D, condition number 100 (PINGS §6 future work)",
    )


#: Seeds of the dimension families' constructions (with d): fixed, so a name is one distribution everywhere.
CONSTRUCTION_SEEDS = {"gmm": 2024_11, "studentt-mix": 2024_12}


def random_construction(family: str, d: int, k: int, spacing: float,
                        eigenvalue_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Means and SPD matrices of a ``k``-component mixture in ``d`` dimensions, from a fixed seed.

    * Means: in every coordinate, the ``k`` components take the levels
      ``spacing · (i - (k-1)/2)``, ``i = 0…k-1``, in a random order per coordinate, so
      any two modes are ``spacing`` apart or more in *every* coordinate.
    * Matrices: ``Q diag(λ) Qᵀ`` with ``Q`` a random orthogonal matrix (QR of a
      Gaussian matrix with the signs fixed, i.e. Haar-distributed, Mezzadri 2007) and
      ``λ`` log-uniform in ``eigenvalue_range``, its smallest and largest values
      pinned to the range's ends (d ≥ 2) so every component has the same condition number.

    Uniform draws come from numpy's PCG64 seeded with ``(CONSTRUCTION_SEEDS[family], d)``;
    normal ones from them by Box–Muller.  Entries are rounded to 12 decimals so that
    BLAS differences in the last bits do not change the fingerprint.

    Returns:
        ``(means (k, d), matrices (k, d, d))``, float64.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([CONSTRUCTION_SEEDS[family], d])))
    levels = spacing * (np.arange(k) - (k - 1) / 2)
    means = np.stack([levels[np.argsort(rng.random(k))] for _ in range(d)], axis=1)
    low, high = eigenvalue_range
    matrices = []
    for _ in range(k):
        radius, angle = rng.random((d, d)), rng.random((d, d))
        gaussian = np.sqrt(-2 * np.log1p(-radius)) * np.cos(2 * np.pi * angle)
        q, r = np.linalg.qr(gaussian)
        q = q * np.sign(np.diag(r))
        eigenvalues = np.exp(np.log(low) + (np.log(high) - np.log(low)) * rng.random(d))
        if d >= 2:
            eigenvalues[0], eigenvalues[1] = low, high
        matrices.append(_covariance(q, eigenvalues))
    return np.round(means, 12), np.stack(matrices)


#: gmm-<d>: five components with unequal weights, modes 2.5 apart per coordinate, component
#: standard deviations 0.2–0.6 along random axes (condition number 9).
GMM_WEIGHTS = (5 / 15, 4 / 15, 3 / 15, 2 / 15, 1 / 15)
GMM_SPACING, GMM_EIGENVALUES = 2.5, (0.04, 0.36)
#: studentt-mix-<d>: three t₅ components, modes 4 apart per coordinate, scales 0.2–0.5.
STUDENTT_WEIGHTS = (0.5, 0.3, 0.2)
STUDENTT_SPACING, STUDENTT_EIGENVALUES, STUDENTT_DOF = 4.0, (0.04, 0.25), 5


def gmm_d(d: int) -> FullCovarianceMixture:
    """``gmm-<d>``: the five-component full-covariance Gaussian mixture in ``d`` dimensions.

    The construction is :func:`random_construction` with :data:`GMM_WEIGHTS`,
    :data:`GMM_SPACING` and :data:`GMM_EIGENVALUES`, in the spirit of the
    dimension-scalable mixtures of sampling benchmarks (e.g. the ``GMM`` targets of
    Blessing et al., "Beyond ELBOs", ICML 2024): unequal weights, anisotropic full
    covariances and modes separated in every coordinate, with a closed-form noised score.
    """
    means, covariances = random_construction("gmm", d, len(GMM_WEIGHTS), GMM_SPACING, GMM_EIGENVALUES)
    return FullCovarianceMixture(
        f"gmm-{d}", GMM_WEIGHTS, means, covariances,
        description=f"5-component full-covariance Gaussian mixture in {d}D (fixed construction)",
    )


def studentt_mix_d(d: int) -> StudentTMixture:
    """``studentt-mix-<d>``: three multivariate Student-t₅ components in ``d`` dimensions.

    The heavy-tailed counterpart of :func:`gmm_d` (the paper's "heavy tails", §6):
    :func:`random_construction` with :data:`STUDENTT_WEIGHTS`, :data:`STUDENTT_SPACING`
    and :data:`STUDENTT_EIGENVALUES` as scale matrices, ν = 5 (finite kurtosis).
    """
    means, scales = random_construction("studentt-mix", d, len(STUDENTT_WEIGHTS), STUDENTT_SPACING,
                                        STUDENTT_EIGENVALUES)
    return StudentTMixture(
        f"studentt-mix-{d}", STUDENTT_WEIGHTS, means, scales, dof=STUDENTT_DOF,
        description=f"3-component Student-t (ν = {STUDENTT_DOF}) mixture in {d}D (fixed construction)",
    )


class GaussianMixtureFamily(TargetFamily):
    """``gmm-<d>`` for any ``d`` from 1 to 1024 (:func:`gmm_d`)."""

    pattern = "gmm-<d>"
    regex = re.compile(r"gmm-(?P<d>[0-9]+)")
    description = "5-component full-covariance Gaussian mixture in d dimensions, closed-form noised score"
    defaults = ("gmm-2", "gmm-8", "gmm-32", "gmm-64")

    def build(self, name: str, match: re.Match[str]) -> FullCovarianceMixture:
        return gmm_d(parse_dimension(match, self.pattern, 1, maximum=1024))


class StudentTMixtureFamily(TargetFamily):
    """``studentt-mix-<d>`` for any ``d`` from 1 to 1024 (:func:`studentt_mix_d`)."""

    pattern = "studentt-mix-<d>"
    regex = re.compile(r"studentt-mix-(?P<d>[0-9]+)")
    description = "3-component Student-t (ν = 5) mixture in d dimensions, noised score by quadrature"
    defaults = ("studentt-mix-3",)

    def build(self, name: str, match: re.Match[str]) -> StudentTMixture:
        return studentt_mix_d(parse_dimension(match, self.pattern, 1, maximum=1024))


@hookimpl
def register_targets(register):
    register(gmm3d())
    for target in (gmm3d_many(), gmm3d_aniso()):
        target.in_default_run = False  # run when named, or with --targets all
        register(target)
    register(GaussianMixtureFamily())
    register(StudentTMixtureFamily())
