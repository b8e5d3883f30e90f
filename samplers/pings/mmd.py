"""The paper's kernel-bank MMD² as a training loss, with a fused analytic gradient.

PINGS eq. (11) matches ``g(0, Z)`` to target draws ``Y`` with the unbiased MMD²
of the kernel ``k(u, v) = Σ_σ exp(-‖u - v‖² / 2σ²)``, σ ∈ {0.1, 0.2, 0.5, 1, 2}.
Computed naively (one distance matrix and five exponentials per block, autograd
through all of it) it is most of a training step.  This module computes the same
statistic in one pass over tiles of the pairwise matrix:

* one distance tile serves every bandwidth, and bandwidths whose rates
  ``1/2σ²`` differ by a power of two share one exponential (``exp(-4rD) =
  exp(-rD)⁴``: the paper's bank needs two exponentials instead of five);
* the generated–generated block is symmetric, so only its upper triangle is
  evaluated;
* the gradient is assembled in the same pass from the kernel slope
  ``w = -dk/dD`` (``∂/∂x_i Σ_j k(‖x_i - v_j‖²) = -2 Σ_j w_ij (x_i - v_j)``),
  so no autograd graph over the ``n × n`` tiles is ever built;
* the target–target block does not depend on the generator: it is computed
  only when the loss value is wanted (:meth:`KernelBankMMD.target_term`), never
  for the gradient.

Values agree with :func:`bench.metrics.mmd2` to float32 round-off (same clamping and
centring, float64 sums; distances here are float32 where the metric uses float64).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bench.metrics import PAPER_BANDWIDTHS

#: Exponents are clamped here, as in :mod:`bench.metrics`: exp(-80) ≈ 2e-35 is
#: negligible, and on CPU exp of arguments below ≈ -87 is 25–80× slower.
MIN_EXPONENT = -80.0
#: Rows per tile: a 512 × 2048 float32 tile (4 MiB) stays cache-friendly.
DEFAULT_CHUNK = 512


class GaussianKernelBank:
    """``k(D) = Σ_r exp(-r D)`` over rates ``r = 1/2σ²`` of squared distances ``D``.

    A rate that is ``2^p`` (``p ≤ 4``) times a smaller one is obtained from that
    one's exponential by ``p`` squarings instead of a fresh ``exp``.

    Args:
        bandwidths: Kernel bandwidths σ.
    """

    def __init__(self, bandwidths: Sequence[float] = PAPER_BANDWIDTHS) -> None:
        self.bandwidths = tuple(float(s) for s in bandwidths)
        self.rates = sorted(0.5 / s**2 for s in self.bandwidths)
        #: Per rate: ``(index of the rate it is squared from or None, number of squarings)``.
        self.plan: list[tuple[int | None, int]] = []
        for i, rate in enumerate(self.rates):
            source = None
            for j in reversed(range(i)):
                power = math.log2(rate / self.rates[j])
                if abs(power - round(power)) < 1e-9 and 1 <= round(power) <= 4:
                    source = (j, round(power))
                    break
            self.plan.append(source if source is not None else (None, 0))

    @property
    def diagonal(self) -> float:
        """``k(u, u)``: one per bandwidth."""
        return float(len(self.rates))

    def __call__(self, sq_dist: Tensor, slope: bool) -> tuple[Tensor, Tensor | None]:
        """Kernel values and, if ``slope``, ``w = -dk/dD = Σ_r r exp(-r D)``, both shaped like ``sq_dist``."""
        terms: list[Tensor] = []
        for rate, (source, squarings) in zip(self.rates, self.plan):
            if source is None:
                term = torch.mul(sq_dist, -rate).clamp_(min=MIN_EXPONENT).exp_()
            else:
                term = terms[source].square()
                for _ in range(squarings - 1):
                    term.square_()
            terms.append(term)
        kernel = terms[0] + terms[1] if len(terms) > 1 else terms[0].clone()
        for term in terms[2:]:
            kernel.add_(term)
        if not slope:
            return kernel, None
        weight = terms[0].mul_(self.rates[0])
        for rate, term in zip(self.rates[1:], terms[1:]):
            weight.add_(term, alpha=rate)
        return kernel, weight


def _sq_dist(u: Tensor, u_sq: Tensor, v: Tensor, v_sq: Tensor) -> Tensor:
    """``‖u_i - v_j‖²`` of centred points, shape ``(len(u), len(v))``, clamped at 0 against round-off."""
    return torch.addmm(u_sq[:, None], u, v.T, alpha=-2.0).add_(v_sq).clamp_(min=0.0)


def _block_sums(
    u: Tensor, v: Tensor | None, bank: GaussianKernelBank, chunk: int, slope: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Kernel sum of one block and the pieces of its gradient with respect to ``u``.

    Args:
        u: Points, shape ``(m, d)``.
        v: Points, shape ``(n, d)``, or ``None`` for the symmetric block of ``u``
            with itself (then the diagonal ``i = j`` is excluded from every sum).
        bank: The kernel.
        chunk: Tile side.
        slope: Whether to return the gradient pieces.

    Returns:
        ``Σ_ij k_ij`` (float64 scalar) and, if ``slope``, ``Σ_j w_ij`` ``(m,)`` and
        ``Σ_j w_ij v_j`` ``(m, d)``, so that ``∂/∂u_i Σ_j k_ij = -2 (Σ_j w_ij u_i - Σ_j w_ij v_j)``
        (for the symmetric block each unordered pair is counted twice, as in the sum).
    """
    symmetric = v is None
    v = u if symmetric else v
    u_sq, v_sq = (u * u).sum(1), (v * v).sum(1)
    total = torch.zeros((), dtype=torch.float64, device=u.device)
    row_w = torch.zeros(len(u), dtype=u.dtype, device=u.device) if slope else None
    w_v = torch.zeros_like(u) if slope else None
    for i0 in range(0, len(u), chunk):
        rows = slice(i0, i0 + chunk)
        for j0 in range(i0 if symmetric else 0, len(v), chunk):
            cols = slice(j0, j0 + chunk)
            sq_dist = _sq_dist(u[rows], u_sq[rows], v[cols], v_sq[cols])
            on_diagonal = symmetric and i0 == j0
            if on_diagonal:
                sq_dist.fill_diagonal_(0.0)  # k(u_i, u_i) exactly bank.diagonal, removed below
            kernel, weight = bank(sq_dist, slope)
            # Row sums in float32 (2048 terms each), then accumulated in float64.
            tile_sum = kernel.sum(1, dtype=torch.float64).sum()
            if on_diagonal:
                tile_sum = tile_sum - bank.diagonal * kernel.shape[0]
            total += tile_sum if not symmetric or on_diagonal else 2.0 * tile_sum
            if not slope:
                continue
            if on_diagonal:
                weight.fill_diagonal_(0.0)
            # Right operands as transposed views of (d, ·) rows: much faster skinny GEMMs.
            row_w[rows] += weight.sum(1)
            w_v[rows] += torch.mm(weight, v[cols].T.contiguous().T)
            if symmetric and not on_diagonal:  # the mirrored tile (cols, rows)
                row_w[cols] += weight.sum(0)
                w_v[cols] += torch.mm(u[rows].T, weight).T
    return total, row_w, w_v


class _GeneratorTerms(torch.autograd.Function):
    """``Σ_{i≠j} k(x_i, x_j) / m(m-1) - 2 Σ_ij k(x_i, y_j) / mn`` and its gradient in ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, bank: GaussianKernelBank, chunk: int) -> Tensor:
        m, n = len(x), len(y)
        shift = y.mean(0)  # translation-invariant; smaller norms, less cancellation in ‖u‖²+‖v‖²-2u·v
        x, y = x - shift, y - shift
        slope = ctx.needs_input_grad[0]
        within, row_xx, w_xx = _block_sums(x, None, bank, chunk, slope)
        cross, row_xy, w_xy = _block_sums(x, y, bank, chunk, slope)
        value = within / (m * (m - 1)) - 2.0 * cross / (m * n)
        if slope:
            # d(within)/dx_i = -4 Σ_j w_ij (x_i - x_j): each unordered pair appears twice.
            grad = (-4.0 / (m * (m - 1))) * (row_xx[:, None] * x - w_xx)
            grad += (4.0 / (m * n)) * (row_xy[:, None] * x - w_xy)
            ctx.save_for_backward(grad)
        return value.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None]:
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None, None


class KernelBankMMD:
    """Unbiased MMD² of PINGS eq. (11) with the Gaussian kernel bank, differentiable in ``x``.

    ``MMD²(X, Y) = generator_terms(X, Y) + target_term(Y)``; only the first part
    depends on the generator, so a training step needs only it for the gradient.

    Args:
        bandwidths: Kernel bandwidths σ (default: the paper's bank).
        chunk: Tile side of the pairwise matrices (changes only round-off).
    """

    def __init__(self, bandwidths: Sequence[float] = PAPER_BANDWIDTHS, chunk: int = DEFAULT_CHUNK) -> None:
        self.bank = GaussianKernelBank(bandwidths)
        self.chunk = chunk

    def generator_terms(self, x: Tensor, y: Tensor) -> Tensor:
        """``1/m(m-1) Σ_{i≠j} k(x_i, x_j) - 2/mn Σ_ij k(x_i, y_j)``.

        Args:
            x: Generated points, shape ``(m, d)``; gradients flow to it.
            y: Target draws, shape ``(n, d)``; treated as constant.

        Returns:
            Scalar in ``x.dtype``.
        """
        return _GeneratorTerms.apply(x, y.detach(), self.bank, self.chunk)

    @torch.no_grad()
    def target_term(self, y: Tensor) -> Tensor:
        """``1/n(n-1) Σ_{i≠j} k(y_i, y_j)``, shape ``()`` (no gradient)."""
        y = y - y.mean(0)
        within, _, _ = _block_sums(y, None, self.bank, self.chunk, slope=False)
        return (within / (len(y) * (len(y) - 1))).to(y.dtype)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """The full unbiased MMD² (eq. 11), differentiable in ``x``."""
        return self.generator_terms(x, y) + self.target_term(y)
