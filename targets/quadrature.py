"""One-dimensional integrals behind the noised scores of scale mixtures and product targets.

When a target is a mixture over one latent variable ``u`` (the funnel over its
neck ``v``, a Student-t over its precision, a double well over its own
coordinate), its VP-noised density is ``q(y) = ∫ f(u; y) du`` for an integrand
known in closed form, and its score is an expectation under the posterior
``f(u; y) / q(y)``.  :func:`posterior_quadrature` computes both with the
trapezoid rule on a uniform grid that zooms onto each row's posterior: the
trapezoid rule converges geometrically for smooth integrands that vanish at the
ends of the range (Trefethen & Weideman, SIAM Review 56(3), 2014), so once the
grid spacing is a third of the posterior's spread and the range covers ±20
spreads, the rule is exact to round-off for the integrands used here, which
decay at least exponentially.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

#: Nodes per row and stage.
NODES = 128
#: Half-width of a zoomed range in posterior standard deviations.
WIDTH = 20.0
#: A posterior counts as resolved when its standard deviation spans this many grid steps.
RESOLVED = 3.0
#: Zoom stages at most (each narrows an unresolved range about 12-fold).
MAX_STAGES = 16


def posterior_quadrature(
    log_integrand: Callable[[Tensor], Tensor],
    lower: Tensor | float,
    upper: Tensor | float,
    *,
    nodes: int = NODES,
) -> tuple[Tensor, Tensor, Tensor]:
    """Nodes and normalised posterior weights of ``∫ f(u) du`` per row, and the integral's log.

    Stage 0 evaluates ``f`` on ``nodes`` points spanning ``[lower, upper]``; each
    later stage spans the previous stage's posterior mean ± 20 posterior standard
    deviations (clipped to the range), where a spread narrower than the grid is
    taken as a quarter step.  The first stage built from a resolved posterior
    (spread ≥ 3 steps in every row) is returned, or the 16th: a row still unresolved
    there (a posterior piled against an end of the range, from a point far outside
    the target) has its mass on a grid ~10⁻¹⁶ of the range wide, where it is a point
    mass to round-off.

    Args:
        log_integrand: Maps nodes ``u`` of shape ``(B, nodes)`` (or ``(1, nodes)``,
            shared by every row) to ``log f(u)`` of shape ``(B, nodes)``, float64.
        lower: Lower end of the range, a float or shape ``(B,)``; ``f`` must be
            negligible beyond both ends.
        upper: Upper end, a float or shape ``(B,)``.
        nodes: Nodes per row and stage.

    Returns:
        ``(u, weights, log_integral)``: nodes ``(B, nodes)``, weights ``f(u_i) / Σ_j f(u_j)``
        of shape ``(B, nodes)`` (a posterior expectation is ``(weights * g(u)).sum(-1)``),
        and ``log ∫ f`` of shape ``(B,)``.
    """
    lower = torch.as_tensor(lower, dtype=torch.float64).reshape(-1, 1)
    upper = torch.as_tensor(upper, dtype=torch.float64).reshape(-1, 1)
    grid = torch.linspace(0.0, 1.0, nodes, dtype=torch.float64, device=lower.device)
    low, high = lower, upper
    from_resolved = False
    for stage in range(MAX_STAGES):
        u = low + (high - low) * grid
        log_f = log_integrand(u)
        step = (high - low) / (nodes - 1)
        log_mass = torch.logsumexp(log_f, dim=-1, keepdim=True)
        weights = torch.exp(log_f - log_mass)
        u = u.expand_as(log_f)
        if from_resolved or stage == MAX_STAGES - 1:
            return u, weights, (log_mass + step.log()).squeeze(-1)
        mean = (weights * u).sum(-1, keepdim=True)
        spread = (weights * (u - mean).square()).sum(-1, keepdim=True).sqrt()
        from_resolved = bool((spread >= RESOLVED * step).all())
        spread = torch.maximum(spread, step / 4)
        low = torch.maximum(mean - WIDTH * spread, lower)
        high = torch.minimum(mean + WIDTH * spread, upper)
    raise AssertionError("unreachable: the last stage returns")


def in_row_chunks(function: Callable[..., Tensor], rows: int, *tensors: Tensor) -> Tensor:
    """``function(*chunks)`` over chunks of at most ``rows`` rows of every tensor, concatenated (bounds memory)."""
    n = tensors[0].shape[0]
    if n <= rows:
        return function(*tensors)
    return torch.cat([function(*(t[i:i + rows] for t in tensors)) for i in range(0, n, rows)])


def alpha_bar_column(alpha_bar: Tensor | float, like: Tensor) -> Tensor:
    """``ᾱ`` (a float, a 0-d tensor or shape ``(n, 1)``) as a float64 column ``(n, 1)`` on ``like``'s device."""
    column = torch.as_tensor(alpha_bar, dtype=torch.float64, device=like.device)
    return column.reshape(-1, 1).expand(like.shape[0], 1)


def log_normal(x: Tensor, mean: Tensor | float, variance: Tensor | float) -> Tensor:
    """Elementwise ``log N(x; mean, variance)``."""
    variance = torch.as_tensor(variance, dtype=x.dtype, device=x.device)
    return -0.5 * ((x - mean).square() / variance + variance.log() + math.log(2 * math.pi))
