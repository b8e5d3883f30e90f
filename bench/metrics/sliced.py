"""Sliced Wasserstein-2 distance (Rabin et al., 2011; Bonneel et al., 2015)."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.metrics.pairwise import check_pair


def _quantile_w2_squared(x: Tensor, y: Tensor) -> Tensor:
    """Exact ``W2²`` between 1-D empirical measures, row by row.

    ``W2² = ∫₀¹ (F⁻¹(t) - G⁻¹(t))² dt`` for the empirical quantile functions,
    which are constant between consecutive points of the common grid
    ``{i/n} ∪ {j/m}``; for ``n = m`` this is the mean squared difference of
    the sorted samples.

    Args:
        x: Sorted samples, shape ``(L, n)``.
        y: Sorted samples, shape ``(L, m)``.

    Returns:
        ``W2²`` per row, shape ``(L,)``.
    """
    n, m = x.shape[1], y.shape[1]
    grid = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    grid = grid.unique()  # sorted; equal fractions i/n = j/m round to equal doubles
    widths = torch.diff(grid, prepend=grid.new_zeros(1))
    mid = grid - widths / 2
    # F⁻¹(t) is the ⌈tn⌉-th smallest point, i.e. index ⌊tn⌋ inside a piece.
    ix = (mid * n).floor().long().clamp_(max=n - 1)
    iy = (mid * m).floor().long().clamp_(max=m - 1)
    return (x[:, ix] - y[:, iy]) ** 2 @ widths


def sliced_wasserstein(a: Tensor, b: Tensor, *, seed: int, directions: int = 256) -> float:
    """Monte-Carlo sliced Wasserstein-2 distance, in float64.

    ``SW2 = sqrt(E_θ W2²(θ·a, θ·b))`` over ``directions`` random unit vectors
    ``θ`` (uniform on the sphere), the 1-D ``W2²`` computed exactly from
    sorted projections.

    Args:
        a: First sample, shape ``(n, d)``.
        b: Second sample, shape ``(m, d)``.
        seed: Seeds the directions.
        directions: Number ``L`` of random directions.

    Returns:
        The distance (same units as the data).
    """
    check_pair(a, b, min_points=1)
    theta = torch.randn(a.shape[1], directions, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta /= theta.norm(dim=0)
    # (L, n) layout: sorting contiguous rows is several times faster than columns.
    x = (theta.T @ a.to(torch.float64).T).sort(dim=1).values
    y = (theta.T @ b.to(torch.float64).T).sort(dim=1).values
    return float(_quantile_w2_squared(x, y).mean().sqrt())
