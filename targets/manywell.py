"""The many-well target in any even dimension: ``manywell-<d>``.

A product of ``d/2`` copies of the 2-D double well of Noé et al. (Boltzmann
generators, Science 2019) with the energy ``x⁴ - 6x² - 0.5x + 0.5y²``, as in the
many-well of Midgley et al. (flow annealed importance sampling bootstrap, FAB,
ICLR 2023) that the Beyond-ELBOs benchmark (Blessing et al., ICML 2024) also
uses: ``2^{d/2}`` modes of unequal weight (the linear term tilts every well pair).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from scipy import integrate
from torch import Tensor

from bench import hookimpl
from bench.contracts import Target, TargetFamily, parse_dimension
from targets.quadrature import alpha_bar_column, in_row_chunks, posterior_quadrature

#: Range of the double-well coordinate integrated over: its density is below e⁻⁴⁵⁰ of its peak beyond ±5.
WELL_RANGE = (-6.0, 6.0)
#: Below this ``1 - ᾱ`` the noised score is the score.
CLEAN_LIMIT = 1e-9


class DoubleWell1D:
    """The double well's density ``p(x) ∝ exp(a x + b x² - c x⁴)`` (defaults: FAB's a = 0.5, b = 6, c = 1).

    Sampled exactly by rejection from a two-Gaussian proposal centred on the
    wells, with the bound ``sup p̃/g`` found on a fine grid (and raised by 1 %); the
    normaliser and the proposal's well weights come from adaptive quadrature
    (:func:`scipy.integrate.quad`).
    """

    def __init__(self, a: float = 0.5, b: float = 6.0, c: float = 1.0) -> None:
        self.a, self.b, self.c = a, b, c
        wells = sorted(r.real for r in np.roots([-4 * c, 0, 2 * b, a]) if abs(r.imag) < 1e-12)
        self.wells = (wells[0], wells[-1])
        self.peak = max(self.log_unnormalised(np.array(self.wells)))
        left, _ = integrate.quad(lambda x: math.exp(self.log_unnormalised(x) - self.peak), -np.inf, 0.0)
        right, _ = integrate.quad(lambda x: math.exp(self.log_unnormalised(x) - self.peak), 0.0, np.inf)
        self.log_normaliser = self.peak + math.log(left + right)
        self.left_weight = left / (left + right)
        self.proposal_std = 0.45
        grid = np.linspace(-8, 8, 160_001)
        self.log_bound = float(np.max(self.log_unnormalised(grid) - self._log_proposal(grid))) + math.log(1.01)

    def log_unnormalised(self, x):
        """``a x + b x² - c x⁴`` (numpy or torch, elementwise)."""
        square = x * x
        return self.a * x + self.b * square - self.c * square * square

    def _log_proposal(self, x: np.ndarray) -> np.ndarray:
        s = self.proposal_std
        parts = [math.log(w) - 0.5 * ((x - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
                 for w, m in ((self.left_weight, self.wells[0]), (1 - self.left_weight, self.wells[1]))]
        return np.logaddexp(*parts)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` exact draws, shape ``(n,)``, float64 on the generator's device."""
        device, kept, total = generator.device, [], 0
        wells = torch.tensor(self.wells, dtype=torch.float64, device=device)
        while total < n:
            batch = 2 * (n - total) + 16  # acceptance is about 60 %
            left = torch.rand(batch, generator=generator, device=device, dtype=torch.float64) < self.left_weight
            x = wells[(~left).long()] + self.proposal_std * torch.randn(
                batch, generator=generator, device=device, dtype=torch.float64)
            u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
            log_ratio = self.log_unnormalised(x) - torch.as_tensor(
                self._log_proposal(x.cpu().numpy()), device=device) - self.log_bound
            accepted = x[u.log() < log_ratio]
            kept.append(accepted)
            total += len(accepted)
        return torch.cat(kept)[:n]

    def grad_log(self, x: Tensor) -> Tensor:
        """``d/dx log p(x) = a + 2b x - 4c x³``."""
        return self.a + (2 * self.b - 4 * self.c * x * x) * x


class ManyWell(Target):
    """``p(x) = Π_{i<d/2} p_w(x_{2i}) N(x_{2i+1}; 0, 1)``, ``p_w(x) ∝ exp(0.5x + 6x² - x⁴)``.

    Exact sampling per factor (:class:`DoubleWell1D`); ``log_prob`` and ``score``
    are closed-form.  The Gaussian coordinates stay ``N(0, 1)`` under VP noising; each
    double-well coordinate's noised density is ``q(y) = ∫ p_w(x) N(y; √ᾱ x, 1-ᾱ) dx``,
    whose score ``E[p_w'(x)/p_w(x) | y] / √ᾱ`` (integrate ``∇_y N = -∇_x N / √ᾱ`` by
    parts; no cancellation as ᾱ → 1) is computed by
    :func:`~targets.quadrature.posterior_quadrature` over ``x``.  Where ``1 - ᾱ ≤ 10⁻⁹``
    the score is used.

    Args:
        dim: Even ``d ≥ 2``.
        a, b, c: The double well's coefficients (FAB's ``a = 0.5``, ``b = 6``, ``c = 1``).

    Raises:
        ValueError: ``dim`` is odd or below 2.
    """

    def __init__(self, dim: int, a: float = 0.5, b: float = 6.0, c: float = 1.0) -> None:
        if dim < 2 or dim % 2:
            raise ValueError(f"the many-well needs an even dim ≥ 2, got {dim}")
        self.name = f"manywell-{dim}"
        self.dim = dim
        self.a, self.b, self.c = float(a), float(b), float(c)
        self.description = f"many-well in {dim}D: {dim // 2} double wells (FAB/Beyond ELBOs), {2 ** (dim // 2)} modes"
        self._well = DoubleWell1D(self.a, self.b, self.c)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        factors = self.dim // 2
        wells = self._well.sample(n * factors, generator).reshape(n, factors)
        gaussian = torch.randn(n, factors, generator=generator, device=generator.device, dtype=torch.float64)
        return torch.stack([wells, gaussian], dim=2).reshape(n, self.dim).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        x64 = x.double()
        wells, gaussian = x64[:, 0::2], x64[:, 1::2]
        log_p = (self._well.log_unnormalised(wells) - self._well.log_normaliser
                 - 0.5 * gaussian.square() - 0.5 * math.log(2 * math.pi))
        return log_p.sum(1).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        x64 = x.double()
        return torch.stack([self._well.grad_log(x64[:, 0::2]), -x64[:, 1::2]], dim=2).reshape(x.shape).to(x.dtype)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        x = x_t.double()
        n, factors = x.shape[0], self.dim // 2
        alpha = alpha_bar_column(alpha_bar, x)
        wells = x[:, 0::2].reshape(-1, 1)
        alpha_per_well = alpha.repeat_interleave(factors, dim=0)
        clean = (1 - alpha_per_well).squeeze(1) <= CLEAN_LIMIT
        well_scores = torch.empty_like(wells)
        if bool(clean.any()):
            well_scores[clean] = self._well.grad_log(wells[clean])
        if not bool(clean.all()):
            noisy = ~clean
            well_scores[noisy] = in_row_chunks(self._noised_well_score, 8192, wells[noisy], alpha_per_well[noisy])
        out = torch.stack([well_scores.reshape(n, factors), -x[:, 1::2]], dim=2).reshape(n, self.dim)
        return out.to(x_t.dtype)

    def _noised_well_score(self, y: Tensor, alpha: Tensor) -> Tensor:
        """Noised score of the double-well coordinate: ``y`` and ``ᾱ`` of shape ``(m, 1)``, returns ``(m, 1)``."""
        root, noise = alpha.sqrt(), 1 - alpha

        def log_integrand(x: Tensor) -> Tensor:
            return self._well.log_unnormalised(x) - 0.5 * (y - root * x).square() / noise

        x, posterior, _ = posterior_quadrature(log_integrand, *WELL_RANGE)
        return (posterior * self._well.grad_log(x)).sum(1, keepdim=True) / root


class ManyWellFamily(TargetFamily):
    """``manywell-<d>`` for any even ``d`` from 2 to 4096 (:class:`ManyWell`)."""

    pattern = "manywell-<d>"
    regex = re.compile(r"manywell-(?P<d>[0-9]+)")
    description = "many-well: d/2 double wells x⁴ - 6x² - 0.5x times N(0, 1), d even; noised score by quadrature"
    defaults = ("manywell-8",)

    def build(self, name: str, match: re.Match[str]) -> ManyWell:
        return ManyWell(parse_dimension(match, self.pattern, 2, even=True))


@hookimpl
def register_targets(register):
    register(ManyWellFamily())
