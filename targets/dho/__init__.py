"""Damped-harmonic-oscillator trajectories: a physics target in ``D = 64`` dimensions.

The PINGS paper (§4, eqs. 14–16) solves ``x'' + 2ξ x' + x = 0``, ``x(0) = 0.7``,
``x'(0) = 1.2``, ``ξ ∈ [0.1, 0.4]``, ``z ∈ [0, 20]`` with a PINN as a sanity
check.  Here the same family is a distribution: ``ξ ~ U[0.1, 0.4]`` and a draw
is the analytic solution observed on ``D`` uniform points of ``[0, 20]``.  It
has no closed-form score, so samplers are judged by whether what they generate
obeys the physics (cf. PIDDM, arXiv:2505.22391, which scores generated samples
by their PDE residual): each trajectory is fitted with the closest analytic
solution, and the fit's error, its damping ratio ``ξ̂``, its ODE residual and its
initial conditions are compared with the exact family.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor

from bench import hookimpl
from bench.contracts import MetricSpec, Target

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bench.profiles import Profile

X0, V0 = 0.7, 1.2
XI_LOW, XI_HIGH = 0.1, 0.4
Z_MAX = 20.0
# ξ̂ is searched on a range wider than the prior, so that a trajectory of the right
# physics but a ξ outside [0.1, 0.4] shows up in the ξ̂ distances, not as manifold error.
FIT_LOW, FIT_HIGH = 0.0, 0.8

MANIFOLD_MSE = MetricSpec(
    "manifold_mse", "manifold MSE", "lower",
    "mean over trajectories of the MSE to the closest analytic solution x(·; ξ̂), ξ̂ ∈ [0, 0.8] "
    "(the paper's 'MSE vs analytical', eq. 15, without a conditional sampler)",
)
XI_KS = MetricSpec(
    "xi_ks", "ξ̂ KS", "lower",
    "Kolmogorov–Smirnov statistic between the fitted damping ratios ξ̂ and U[0.1, 0.4]",
)
XI_W1 = MetricSpec(
    "xi_w1", "ξ̂ W1", "lower",
    "Wasserstein-1 distance between the fitted damping ratios ξ̂ and U[0.1, 0.4]",
)
ODE_RESIDUAL = MetricSpec(
    "ode_residual_rms", "ODE residual RMS", "lower",
    "RMS of the three-point finite-difference residual of x'' + 2ξ̂x' + x on the grid, with the "
    "stencil that is exact for this ODE (exact solutions score round-off, not truncation error)",
)
IC_VALUE = MetricSpec(
    "ic_value_rmse", "x(0) RMSE", "lower", "RMS error of the first grid value against x(0) = 0.7",
)
IC_SLOPE = MetricSpec(
    "ic_slope_rmse", "x'(0) RMSE", "lower",
    "RMS error against x'(0) = 1.2 of the slope of the ODE solution (with ξ̂) through the first two grid values",
)


def _damped_frequency(xi: Tensor) -> Tensor:
    # eq. (16): keep ω_d away from zero as ξ → 1.
    return torch.sqrt(torch.clamp(1 - xi * xi, min=1e-12))


def oscillator_solution(z: Tensor, xi: Tensor, x0: float = X0, v0: float = V0) -> Tensor:
    """Analytic under-damped solution ``x(z; ξ)`` (paper eqs. 15–16).

    Args:
        z: Positions, any shape broadcastable with ``xi``.
        xi: Damping ratios ``ξ < 1``, broadcastable with ``z`` (e.g. ``(n, 1)`` against ``(D,)``).
        x0: Initial value ``x(0)``.
        v0: Initial slope ``x'(0)``.

    Returns:
        ``e^{-ξz} (x0 cos ω_d z + (v0 + ξ x0)/ω_d sin ω_d z)``, broadcast shape.
    """
    omega = _damped_frequency(xi)
    return torch.exp(-xi * z) * (x0 * torch.cos(omega * z) + (v0 + xi * x0) / omega * torch.sin(omega * z))


def oscillator_solution_and_sensitivity(z: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
    """``x(z; ξ)`` of eq. (15) and its derivative ``∂x/∂ξ`` (for Gauss–Newton fits), broadcast shapes.

    With ``A = (v0 + ξ x0)/ω_d`` and ``ω_d' = -ξ/ω_d``:
    ``∂x/∂ξ = -z x + e^{-ξz} (A' sin ω_d z + z ω_d' (A cos ω_d z - x0 sin ω_d z))``.
    """
    omega = _damped_frequency(xi)
    decay, cos, sin = torch.exp(-xi * z), torch.cos(omega * z), torch.sin(omega * z)
    amplitude = (V0 + xi * X0) / omega
    x = decay * (X0 * cos + amplitude * sin)
    d_amplitude = (X0 + amplitude * xi / omega) / omega
    d_omega = -xi / omega
    return x, -z * x + decay * (d_amplitude * sin + z * d_omega * (amplitude * cos - X0 * sin))


def exact_stencil(xi: Tensor, h: float) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients of the exact three-point scheme ``c₊ x_{k+1} - c₀ x_k + c₋ x_{k-1} = 0``.

    Every solution of ``x'' + 2ξx' + x = 0`` is a combination of ``e^{(-ξ ± iω_d) z}``, whose
    samples with step ``h`` obey the recurrence with ``c₊ = e^{ξh}``, ``c₀ = 2 cos ω_d h`` and
    ``c₋ = e^{-ξh}``.  The scheme is symmetric, so divided by ``h²`` it equals the ODE
    residual up to ``O(h²)`` for any smooth ``x`` (using ``ξ² + ω_d² = 1``).
    """
    return torch.exp(xi * h), 2 * torch.cos(_damped_frequency(xi) * h), torch.exp(-xi * h)


def ode_residual(x: Tensor, xi: Tensor, h: float) -> Tensor:
    """Finite-difference residual of ``x'' + 2ξx' + x`` with the exact stencil.

    Args:
        x: Trajectories on a uniform grid of step ``h``, shape ``(n, D)``.
        xi: Damping ratio of each trajectory, shape ``(n,)``.

    Returns:
        ``(c₊ x_{k+1} - c₀ x_k + c₋ x_{k-1}) / h²`` at the interior points, shape ``(n, D - 2)``.
    """
    forward, centre, backward = exact_stencil(xi[:, None], h)
    return (forward * x[:, 2:] - centre * x[:, 1:-1] + backward * x[:, :-2]) / h**2


def initial_slope(x: Tensor, xi: Tensor, h: float) -> Tensor:
    """``x'(0)`` of the ODE solution with damping ``ξ`` through the first two grid values.

    Inverts eq. (15) at ``z = h`` for the initial slope given ``x(0) = x_0`` and ``x(h) = x_1``.

    Args:
        x: Trajectories, shape ``(n, D)``; only the first two columns are used.
        xi: Damping ratios, shape ``(n,)``.

    Returns:
        Shape ``(n,)``.
    """
    omega = _damped_frequency(xi)
    x_0, x_1 = x[:, 0], x[:, 1]
    return omega * (x_1 * torch.exp(xi * h) - x_0 * torch.cos(omega * h)) / torch.sin(omega * h) - xi * x_0


def fit_damping(x: Tensor, z: Tensor, grid: int = 401, steps: int = 3) -> tuple[Tensor, Tensor]:
    """Least-squares damping ratio ``ξ̂ = argmin_ξ mean_k (x_k - x(z_k; ξ))²`` over ``[0, 0.8]``.

    A vectorised nearest-curve search on a ``grid``-point ξ grid, then Gauss–Newton steps
    kept inside the bracket of the best grid point (a step that does not lower the error
    is discarded, so the fit is never worse than the grid).

    Args:
        x: Trajectories, shape ``(n, D)``, on the positions ``z`` of shape ``(D,)``.

    Returns:
        ``(ξ̂, mse)``, each of shape ``(n,)``, float64.
    """
    x, z = x.double(), z.to(device=x.device, dtype=torch.float64)
    xi_grid = torch.linspace(FIT_LOW, FIT_HIGH, grid, dtype=torch.float64, device=x.device)
    curves = oscillator_solution(z, xi_grid[:, None])  # (G, D)
    # ||x - c||² = ||x||² - 2 x·c + ||c||², one matmul for all pairs.
    sq_dist = x.square().sum(1, keepdim=True) - 2 * x @ curves.T + curves.square().sum(1)
    best = sq_dist.argmin(1)
    xi_start = xi_grid[best]
    mse_start = sq_dist.gather(1, best[:, None]).squeeze(1).clamp(min=0) / x.shape[1]

    spacing = (FIT_HIGH - FIT_LOW) / (grid - 1)
    lower, upper = (xi_start - spacing).clamp(min=FIT_LOW), (xi_start + spacing).clamp(max=FIT_HIGH)
    xi = xi_start
    for _ in range(steps):
        curve, d_curve = oscillator_solution_and_sensitivity(z, xi[:, None])
        step = ((x - curve) * d_curve).sum(1) / d_curve.square().sum(1)
        xi = torch.minimum(torch.maximum(xi + step, lower), upper)
    mse = (x - oscillator_solution(z, xi[:, None])).square().mean(1)
    improved = mse <= mse_start
    return torch.where(improved, xi, xi_start), torch.where(improved, mse, mse_start)


def uniform_ks(samples: Tensor, low: float, high: float) -> float:
    """Kolmogorov–Smirnov statistic ``sup |F_n - F|`` of ``samples`` (shape ``(n,)``) against ``U[low, high]``."""
    n = samples.numel()
    cdf = ((samples.double().sort().values - low) / (high - low)).clamp(0, 1)
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=samples.device)
    return float(torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n).max())


def uniform_w1(samples: Tensor, low: float, high: float) -> float:
    """Exact Wasserstein-1 distance ``∫_0^1 |Q_n(u) - Q(u)| du`` of ``samples`` against ``U[low, high]``.

    On ``u ∈ [(i-1)/n, i/n]`` the empirical quantile is the i-th order statistic and the
    uniform quantile is linear, so each piece is the integral of ``|linear|``.
    """
    n = samples.numel()
    sorted_samples = samples.double().sort().values
    u = torch.arange(n + 1, dtype=torch.float64, device=samples.device) / n
    start = sorted_samples - (low + (high - low) * u[:-1])
    end = sorted_samples - (low + (high - low) * u[1:])
    same_sign = start * end >= 0
    # A sign change inside the piece splits it into two triangles.
    piece = torch.where(
        same_sign,
        (start.abs() + end.abs()) / 2,
        (start.square() + end.square()) / (2 * (start.abs() + end.abs()).clamp(min=1e-300)),
    )
    return float(piece.sum() / n)


class DampedOscillator(Target):
    """Trajectories of ``x'' + 2ξx' + x = 0``, ``x(0) = 0.7``, ``x'(0) = 1.2`` with ``ξ ~ U[0.1, 0.4]``.

    A draw is ``(x(z_1; ξ), …, x(z_D; ξ))`` on ``z_k = 20 (k - 1)/(D - 1)``.  No log-density
    or score is offered: the draws lie on a one-dimensional curve in ``R^D``.

    Args:
        dim: Number of grid points ``D`` (at least 3, for the residual stencil).
        name: Registry name.
    """

    metric_specs = (MANIFOLD_MSE, XI_KS, XI_W1, ODE_RESIDUAL, IC_VALUE, IC_SLOPE)

    def __init__(self, dim: int = 64, name: str = "dho") -> None:
        if dim < 3:
            raise ValueError(f"the oscillator grid needs at least 3 points, got {dim}")
        self.name = name
        self.dim = dim
        self.description = (
            f"damped oscillator x'' + 2ξx' + x = 0 (PINGS eq. 14), ξ ~ U[{XI_LOW}, {XI_HIGH}], "
            f"{dim} points of z ∈ [0, {Z_MAX:g}]"
        )
        self.step = Z_MAX / (dim - 1)

    def grid(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """Observation positions ``z``, shape ``(D,)``."""
        return torch.linspace(0.0, Z_MAX, self.dim, dtype=dtype, device=device)

    def fingerprint(self) -> Mapping[str, Any]:
        """The default identity (``name``, ``dim``, the grid step) plus the module-level physics constants."""
        return {
            **super().fingerprint(), "x0": X0, "v0": V0, "xi_range": [XI_LOW, XI_HIGH], "z_range": [0.0, Z_MAX],
        }

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        device = generator.device
        xi = XI_LOW + (XI_HIGH - XI_LOW) * torch.rand(n, 1, generator=generator, device=device, dtype=torch.float64)
        return oscillator_solution(self.grid(device=device), xi).to(dtype)

    def physics_metrics(self, trajectories: Tensor) -> dict[str, float]:
        """All physics metrics of trajectories of shape ``(n, D)`` (see :attr:`metric_specs`)."""
        x = trajectories.detach().to("cpu", torch.float64)
        xi_hat, mse = fit_damping(x, self.grid())
        return {
            MANIFOLD_MSE.name: float(mse.mean()),
            XI_KS.name: uniform_ks(xi_hat, XI_LOW, XI_HIGH),
            XI_W1.name: uniform_w1(xi_hat, XI_LOW, XI_HIGH),
            ODE_RESIDUAL.name: float(ode_residual(x, xi_hat, self.step).square().mean().sqrt()),
            IC_VALUE.name: float((x[:, 0] - X0).square().mean().sqrt()),
            IC_SLOPE.name: float((initial_slope(x, xi_hat, self.step) - V0).square().mean().sqrt()),
        }

    def extra_metrics(self, generated: Tensor, reference: Tensor) -> dict[str, float]:
        # Every metric compares with the exact solution family, not with the reference draws.
        return self.physics_metrics(generated)

    def plot_panel(self, ax: "Axes", generated: Tensor, reference: Tensor, title: str, curves: int = 30) -> None:
        """Overlay ``curves`` generated trajectories (orange) on as many exact ones (blue) against ``z``."""
        z = self.grid().numpy()
        exact = ax.plot(z, reference[:curves].T.cpu().numpy(), color="tab:blue", lw=1.6, alpha=0.3)
        exact[0].set_label("exact")
        if generated is not None:
            drawn = ax.plot(z, generated[:curves].T.cpu().numpy(), color="tab:orange", lw=0.6, alpha=0.8)
            drawn[0].set_label("generated")
        # Scale to the exact family so one diverging sampler cannot flatten the picture.
        low, high = float(reference.min()), float(reference.max())
        margin = 0.15 * (high - low)
        ax.set_ylim(low - margin, high + margin)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("$z$")
        ax.set_ylabel("$x(z)$")

    def validate(self, out_dir: Path, profile: "Profile", device: torch.device) -> str:
        """The paper's PINN check (§4, Table 1) and an improved recipe; see :mod:`targets.dho.pinn`."""
        from targets.dho.pinn import run_validation  # pinn imports this package

        return run_validation(Path(out_dir), profile, device)


@hookimpl
def register_targets(register):
    register(DampedOscillator())
