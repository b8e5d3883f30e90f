"""An example pingsbench plugin package (the plugin guide, docs/plugins.md, walks through it).

It registers

* ``ring2d`` – eight Gaussians on a circle, built from the built-in mixture
  class, so every solver's exact-score mode works on it too;
* ``ellipses2d`` – two rotated elliptical Gaussians, written from scratch on
  :class:`~bench.contracts.Target`: exact sampling, log-density, score and the
  closed-form score of its VP-noised version (which the ``@exact`` solver rows use);
* ``gaussian-fit`` – a one-pass sampler that matches only the target's mean
  and covariance: ``x = μ + A z`` with ``A Aᵀ = Σ`` estimated from target
  draws (a symmetric square root, so rank-deficient covariances work too).  Its row shows what "first two moments right" scores on each metric;
* ``pf-ode-<method>-<steps>`` – a sampler family: the probability-flow ODE
  with the target's exact noised score, integrated by ``torchdiffeq.odeint``
  on a fixed grid (``euler``, ``midpoint`` or ``rk4``).  Its NFE is counted by
  the runner like any network's: ``rk4`` with ``k`` steps is ``4k``.

Install with ``pip install -e examples/pingsbench-example``; ``pingsbench list``
then shows all four with this package as their source.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch import Tensor, nn

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target, UnsupportedTarget
from targets.mixtures import GaussianMixture


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


class RotatedGaussians(Target):
    """``p(x) = Σ_k π_k N(x; μ_k, Σ_k)`` in ``R²`` with ``Σ_k = R(θ_k) diag(s_k²) R(θ_k)ᵀ``.

    Written directly on :class:`~bench.contracts.Target` (no built-in class).
    Every component of the VP-noised target ``x_t = √ᾱ x_0 + √(1-ᾱ) ε`` is again
    Gaussian, ``N(√ᾱ μ_k, ᾱ Σ_k + (1-ᾱ) I)``, with the same principal axes and
    variances ``ᾱ s_k² + 1 - ᾱ``, so density, score and noised score are closed
    forms evaluated in each component's axes.

    The public attributes (``weights``, ``means``, ``scales``, ``angles``) are
    the parameters; the default :meth:`~bench.contracts.Target.fingerprint`
    hashes them, so changing one gives every model trained on it a new cache id.

    Args:
        name: Registry name.
        weights: Mixture weights ``π``, shape ``(K,)``, positive, summing to one.
        means: Component means ``μ``, shape ``(K, 2)``.
        scales: Standard deviations ``s`` along each component's two principal axes, shape ``(K, 2)``.
        angles: Rotation ``θ`` of each component's first axis from ``x_1``, in radians, shape ``(K,)``.

    Raises:
        ValueError: Inconsistent shapes, weights not positive or not summing to one, scales not positive.
    """

    dim = 2

    def __init__(
        self,
        name: str = "ellipses2d",
        weights: Sequence[float] = (0.6, 0.4),
        means: Sequence[Sequence[float]] = ((-1.5, 0.0), (1.5, 1.0)),
        scales: Sequence[Sequence[float]] = ((1.0, 0.25), (0.6, 0.2)),
        angles: Sequence[float] = (math.pi / 6, -math.pi / 4),
    ) -> None:
        self.name = name
        self.description = "two rotated elliptical Gaussians, closed-form noised score (example plugin)"
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)
        self.scales = torch.tensor(scales, dtype=torch.float64)
        self.angles = torch.tensor(angles, dtype=torch.float64)
        k = len(self.weights)
        if self.means.shape != (k, 2) or self.scales.shape != (k, 2) or self.angles.shape != (k,):
            raise ValueError("weights (K,), means (K, 2), scales (K, 2) and angles (K,) must agree")
        if bool((self.weights <= 0).any()) or not math.isclose(float(self.weights.sum()), 1.0, abs_tol=1e-9):
            raise ValueError(f"mixture weights must be positive and sum to 1, got {list(weights)}")
        if bool((self.scales <= 0).any()):
            raise ValueError("scales must be positive")

    def _axes(self) -> Tensor:
        """Principal axes as the columns of rotation matrices, shape ``(K, 2, 2)`` (float64)."""
        cos, sin = self.angles.cos(), self.angles.sin()
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)

    def _components(self, x: Tensor, alpha_bar: Tensor | float) -> tuple[Tensor, Tensor]:
        """Per-component log-weights and scores of the ᾱ-noised mixture.

        Args:
            x: Points, shape ``(n, 2)``.
            alpha_bar: ``ᾱ`` in ``(0, 1]``: a float, a 0-d tensor or shape ``(n, 1)``.

        Returns:
            ``log π_k + log N_k(x)``, shape ``(n, K)``, and ``∇ log N_k(x)``, shape ``(n, K, 2)``.
        """
        like = {"device": x.device, "dtype": x.dtype}
        alpha_bar = torch.as_tensor(alpha_bar, **like).reshape(-1, 1, 1)  # (1 or n, 1, 1): broadcasts over K, d
        axes = self._axes().to(**like)
        offset = x[:, None, :] - alpha_bar.sqrt() * self.means.to(**like)  # (n, K, 2)
        along = torch.einsum("nkd,kde->nke", offset, axes)  # coordinates along each component's axes
        variances = alpha_bar * self.scales.to(**like).square() + (1 - alpha_bar)
        log_density = -0.5 * (along.square() / variances + variances.log() + math.log(2 * math.pi)).sum(-1)
        scores = -torch.einsum("nke,kde->nkd", along / variances, axes)
        return self.weights.to(**like).log() + log_density, scores

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        device = generator.device
        component = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        noise = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        axes, scales, means = (p.to(device) for p in (self._axes(), self.scales, self.means))
        x = means[component] + torch.einsum("nde,ne->nd", axes[component], scales[component] * noise)
        return x.to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        logits, _ = self._components(x, 1.0)
        return torch.logsumexp(logits, dim=-1)

    def score(self, x: Tensor) -> Tensor:
        return self.noised_score(x, 1.0)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        logits, scores = self._components(x_t, alpha_bar)
        return (torch.softmax(logits, dim=-1)[..., None] * scores).sum(1)

    def mean(self) -> Tensor:
        """Exact mean, shape ``(2,)`` (float64)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Exact covariance ``Σ_k π_k (Σ_k + μ_k μ_kᵀ) - m mᵀ``, shape ``(2, 2)`` (float64)."""
        axes = self._axes()
        covariances = axes @ torch.diag_embed(self.scales.square()) @ axes.transpose(1, 2)
        second = torch.einsum("k,kde->de", self.weights, covariances + self.means[:, :, None] * self.means[:, None, :])
        mean = self.mean()
        return second - mean[:, None] * mean[None, :]


#: Probability-flow ODE range in ρ = σ/α (noise-to-signal ratio) and node spacing: those of
#: Karras et al. (2022, EDM): ρ_max = 80, ρ_min = 0.002, nodes uniform in ρ^(1/7).
RHO_MAX, RHO_MIN, RHO_EXPONENT = 80.0, 2e-3, 7.0
#: torchdiffeq fixed-grid methods and their vector-field evaluations per step.
ODE_METHODS = {"euler": 1, "midpoint": 2, "rk4": 4}


def karras_grid(steps: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``steps + 1`` decreasing values of ρ from ρ_max to ρ_min, uniform in ``ρ^(1/7)``, shape ``(steps + 1,)``."""
    ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    high, low = RHO_MAX ** (1 / RHO_EXPONENT), RHO_MIN ** (1 / RHO_EXPONENT)
    return ((high + ramp * (low - high)) ** RHO_EXPONENT).to(device=device, dtype=dtype)


class ExactFlowField(nn.Module):
    """Right-hand side of the probability-flow ODE with the target's exact noised score.

    In ``y = x/α`` the VP-noised target is the data plus noise ``ρ ε`` with
    ``ρ = σ/α`` and ``ᾱ = 1/(1+ρ²)``, and the probability-flow ODE (Song et al.
    2021; the ODE that DDIM discretises) is ``dy/dρ = ε*(x) = -σ ∇log q(x)``
    at ``x = α y``.  An ``nn.Module``, so the runner counts each call by the
    rows of its output: one evaluation per point, whatever ``odeint`` passes as time.

    Args:
        target: A target providing ``noised_score`` (the one handed to ``Sampler.fit``).
    """

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target

    def forward(self, rho: Tensor, y: Tensor) -> Tensor:
        """``ρ``, a 0-d tensor; ``y`` of shape ``(n, d)`` → ``dy/dρ``, shape ``(n, d)``."""
        alpha_bar = 1 / (1 + rho.square())
        sigma = (1 - alpha_bar).sqrt()
        return -sigma * self.target.noised_score(y * alpha_bar.sqrt(), alpha_bar)


class ProbabilityFlowODE(Sampler):
    """The probability-flow ODE solved by ``torchdiffeq.odeint`` with ``steps`` fixed steps (:func:`karras_grid`).

    Starts from ``x ~ N(0, I)`` at ``ρ_max`` (where the noised target is that
    prior up to a ``1/ρ_max`` error) and returns ``x`` at ``ρ_min``.

    Args:
        name: Registry name, e.g. ``"pf-ode-rk4-8"``.
        method: A key of :data:`ODE_METHODS`.
        steps: Number of integration steps (≥ 1).
    """

    def __init__(self, name: str, method: str, steps: int) -> None:
        self.name, self.method, self.steps = name, method, steps
        self.description = (f"probability-flow ODE, exact noised score, torchdiffeq {method}, {steps} steps "
                            f"(example plugin)")

    def check(self, target: Target) -> None:
        if not target.has("noised_score"):
            raise UnsupportedTarget(f"{self.name} needs the target's closed-form noised_score")

    def expected_nfe(self, target: Target) -> float:
        """Vector-field evaluations per sample: ``steps`` × evaluations per step of the method."""
        return float(ODE_METHODS[self.method] * self.steps)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        from torchdiffeq import odeint  # imported when used: `pingsbench list` does not need it

        field = ExactFlowField(target)
        grid = karras_grid(self.steps, ctx.device, ctx.dtype)
        ctx.artifacts.update({"solver": f"torchdiffeq {self.method}", "steps": self.steps,
                              "rho_range": [RHO_MAX, RHO_MIN]})

        def sample(n: int, generator: torch.Generator) -> Tensor:
            x_start = torch.randn(n, target.dim, generator=generator, device=generator.device, dtype=ctx.dtype)
            y_end = odeint(field, x_start * math.sqrt(1 + RHO_MAX**2), grid, method=self.method)[-1]
            return y_end / math.sqrt(1 + RHO_MIN**2)

        return sample


class ProbabilityFlowODEFamily(SamplerFamily):
    """``pf-ode-<method>-<steps>``: :class:`ProbabilityFlowODE` at any method and step count."""

    pattern = "pf-ode-<euler|midpoint|rk4>-<steps>"
    regex = re.compile(r"pf-ode-(?P<method>euler|midpoint|rk4)-(?P<steps>\d+)")
    description = "probability-flow ODE on the exact noised score, integrated by torchdiffeq (example plugin)"
    defaults = ("pf-ode-rk4-8",)
    sweep = ("pf-ode-rk4-2", "pf-ode-rk4-4", "pf-ode-rk4-8", "pf-ode-euler-8", "pf-ode-euler-32")

    def build(self, name: str, match: re.Match[str]) -> Sampler:
        steps = int(match["steps"])
        if steps < 1:
            raise ValueError(f"{self.pattern}: the number of steps must be at least 1, got {steps}")
        return ProbabilityFlowODE(name, match["method"], steps)


@hookimpl
def register_targets(register):
    register(ring2d())
    register(RotatedGaussians())


@hookimpl
def register_samplers(register):
    register(GaussianFit())
    register(ProbabilityFlowODEFamily())
