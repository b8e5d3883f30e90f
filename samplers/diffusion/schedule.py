"""The discrete VP (DDPM) noise schedule, its continuous-time interpolation and step spacings.

This is the one place that knows the noise schedule; solvers query it for
``α(t)``, ``σ(t)``, ``λ(t)`` and only ever see an ε-predictor besides.

Time convention: continuous ``t ∈ [1/T, 1]``; ``t = 1`` is the prior end and
``t = 1/T`` the data end.  The DDPM step ``i ∈ {1..T}`` sits at ``t = i/T``
(PINGS paper §5.4.1, eqs. 23–24: ``x_i = √ᾱ_i x_0 + √(1-ᾱ_i) ε``), and between
grid points ``log α`` is interpolated linearly in ``t``, as the official
DPM-Solver code does for discrete-time models (Lu et al. 2022, App. D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SPACINGS = ("logSNR", "time_uniform", "time_quadratic", "karras")

#: Schedule suffix of a solver's name (``ddim-8+karras``) → :func:`timesteps` spacing.
SCHEDULES = {"uniform": "time_uniform", "logsnr": "logSNR", "karras": "karras"}
#: Schedule suffix of the learned schedule (:class:`LearnedSchedule`, trained in :mod:`.train`).
LEARNED = "ld3"

#: Karras et al. (2022) ρ: their nodes are uniform in ``(σ/α)^{1/ρ}``.
KARRAS_RHO = 7.0


class DiscreteVPSchedule:
    """Linear-β DDPM schedule with ``log α`` piecewise linear in ``t`` over the grid ``t_i = i/T``.

    ``α(t) = √ᾱ(t)``, ``σ(t) = √(1 - ᾱ(t))`` and ``λ(t) = log(α/σ)`` (half log-SNR).
    Below ``t = 1/T`` the linear extrapolation gives ``α > 1`` and a NaN ``σ``:
    nothing is defined there, and :func:`timesteps` refuses to go there.

    Args:
        T: Number of DDPM steps.
        beta_start: ``β_1``.
        beta_end: ``β_T``.
    """

    def __init__(self, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> None:
        if T < 2:
            raise ValueError(f"need T >= 2, got {T}")
        self.T = T
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.t_min = 1.0 / T
        self.t_max = 1.0
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        #: ``log α_i = ½ Σ_{s≤i} log(1-β_s)`` at ``t_i = i/T``, shape ``(T,)``, float64.
        self.log_alpha_grid = 0.5 * torch.log1p(-betas).cumsum(0)
        self._tables: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def config(self) -> dict[str, float | int]:
        """JSON-able parameters (part of the ε-net's cache key)."""
        return {"T": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end}

    def grid_log_alpha(self, like: Tensor) -> Tensor:
        """``log α_i`` at ``t_i = i/T``, shape ``(T,)``, on ``like``'s device and dtype (cached)."""
        key = (like.device, like.dtype)
        if key not in self._tables:  # one host-to-device copy per device and dtype
            self._tables[key] = self.log_alpha_grid.to(device=like.device, dtype=like.dtype)
        return self._tables[key]

    def _left_index(self, t: Tensor) -> Tensor:
        """0-based index of the grid point left of ``t`` (float64 ``t``), clamped to a valid piece.

        Integer arithmetic on float64 times: in a narrow dtype such as bfloat16,
        ``T - 1 = 999`` itself rounds to 1000 and would index past the grid.
        """
        return torch.floor(t * self.T).long().clamp(1, self.T - 1) - 1

    def log_alpha(self, t: Tensor) -> Tensor:
        """``log α(t)``, linear in ``t`` between grid points (extrapolated linearly outside).

        Computed in float64 whatever ``t``'s dtype; returned in ``t``'s dtype.
        """
        t64 = t.to(torch.float64)
        grid = self.grid_log_alpha(t64)
        i = self._left_index(t64)
        lo, hi = grid[i], grid[i + 1]
        return (lo + (t64 * self.T - (i + 1)) * (hi - lo)).to(t.dtype)

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``ᾱ(t) = α(t)²``; equals ``Π_{s≤i}(1-β_s)`` at ``t = i/T``."""
        return torch.exp(2 * self.log_alpha(t))

    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``α(t) = √ᾱ(t)``."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``σ(t) = √(1-ᾱ(t))``."""
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def lambda_(self, t: Tensor) -> Tensor:
        """Half log-SNR ``λ(t) = log α(t) - log σ(t)``, decreasing in ``t``."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2 * log_alpha))

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`lambda_` (exact for the piecewise-linear ``log α``).

        ``log α = -½ log(1 + e^{-2λ})``, then ``t`` by inverting the linear pieces;
        computed in float64, returned in ``lam``'s dtype.
        """
        lam64 = lam.to(torch.float64)
        grid = self.grid_log_alpha(lam64)
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam64), -2 * lam64)
        # log α decreases in t: search the negated (increasing) grid.
        i = torch.searchsorted(-grid, -log_alpha.contiguous()).clamp(1, self.T - 1) - 1
        lo, hi = grid[i], grid[i + 1]
        return ((i + 1 + (log_alpha - lo) / (hi - lo)) / self.T).to(lam.dtype)

    def drift(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients ``(f(t), g²(t))`` of the VP SDE ``dx = f x dt + g dW``.

        ``f = d log α/dt`` and ``g² = dσ²/dt - 2fσ² = -2f`` (because ``α² + σ² = 1``);
        the probability-flow ODE is ``dx/dt = f x - ½ g² ∇log p_t(x) = f x + (g²/2σ) ε̂``.
        ``f`` is piecewise constant (the slope of the linear piece containing ``t``); computed in
        float64, returned in ``t``'s dtype.
        """
        t64 = t.to(torch.float64)
        grid = self.grid_log_alpha(t64)
        left = self._left_index(t64)
        f = ((grid[left + 1] - grid[left]) * self.T).to(t.dtype)
        return f, -2 * f


def timesteps(
    schedule: DiscreteVPSchedule,
    n_steps: int,
    spacing: str = "logSNR",
    t_start: float = 1.0,
    t_end: float | None = None,
) -> Tensor:
    """Decreasing solver nodes ``t_0 = t_start > … > t_N = t_end``, shape ``(n_steps + 1,)``, float64.

    Args:
        schedule: The noise schedule (``λ`` and its inverse for ``logSNR`` and ``karras`` spacings).
        n_steps: Number of solver steps ``N``.
        spacing: ``"logSNR"`` (uniform in ``λ``, DPM-Solver's choice for low-dimensional data),
            ``"time_uniform"`` (uniform in ``t``, DDIM's), ``"time_quadratic"`` (uniform in ``√t``) or
            ``"karras"`` (EDM's noise levels: uniform in ``(σ/α)^{1/ρ}`` with ρ = 7, Karras et al. 2022, eq. 5;
            ``σ/α = e^{-λ}`` is EDM's σ).
        t_start: Prior-end time, at most ``schedule.t_max``.
        t_end: Data-end time; defaults to ``schedule.t_min = 1/T``, the smallest allowed.

    Raises:
        ValueError: Unknown spacing, ``n_steps < 1`` or times outside ``[1/T, 1]``.
    """
    t_end = schedule.t_min if t_end is None else t_end
    if n_steps < 1:
        raise ValueError(f"need at least one step, got {n_steps}")
    # Below 1/T the interpolated schedule has α > 1 (NaN σ); allow only float round-off.
    if not schedule.t_min - 1e-12 <= t_end < t_start <= schedule.t_max + 1e-12:
        raise ValueError(f"need 1/T <= t_end < t_start <= 1, got t_end={t_end}, t_start={t_start}")
    kw = {"dtype": torch.float64}
    if spacing == "logSNR":
        ends = schedule.lambda_(torch.tensor([t_start, t_end], **kw))
        ts = schedule.t_from_lambda(torch.linspace(float(ends[0]), float(ends[1]), n_steps + 1, **kw))
    elif spacing == "time_uniform":
        ts = torch.linspace(t_start, t_end, n_steps + 1, **kw)
    elif spacing == "time_quadratic":
        ts = torch.linspace(math.sqrt(t_start), math.sqrt(t_end), n_steps + 1, **kw).square()
    elif spacing == "karras":
        ends = (-schedule.lambda_(torch.tensor([t_start, t_end], **kw)) / KARRAS_RHO).exp()  # (σ/α)^{1/ρ}
        levels = torch.linspace(float(ends[0]), float(ends[1]), n_steps + 1, **kw)
        ts = schedule.t_from_lambda(-KARRAS_RHO * levels.log())
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    # Pin the ends exactly (the λ round trip is only exact to round-off).
    ts[0], ts[-1] = t_start, t_end
    return ts


class LearnedSchedule(nn.Module):
    """Solver nodes whose ``N - 1`` interior points are free parameters (LD3 / Align-Your-Steps spirit).

    The ``N`` log-SNR increments between ``λ(t_start)`` and ``λ(t_end)`` are the softmax of
    ``logits`` times their total, so the nodes stay strictly ordered and the ends stay fixed
    whatever the weights.  The logits start at the log increments of ``start`` (the solver's
    own spacing), so an untrained schedule reproduces it.  Trained by
    :func:`~.train.get_learned_schedule`.

    Args:
        schedule: The noise schedule (``λ`` and its inverse).
        start: Starting nodes ``t_0 > … > t_N``, shape ``(N + 1,)``, e.g. from :func:`timesteps`.

    Raises:
        ValueError: ``start`` is not a decreasing 1-D tensor of at least two nodes.
    """

    def __init__(self, schedule: DiscreteVPSchedule, start: Tensor) -> None:
        super().__init__()
        if start.ndim != 1 or len(start) < 2 or not bool((start[1:] < start[:-1]).all()):
            raise ValueError("start must be a 1-D decreasing tensor of at least two nodes")
        self.schedule = schedule
        self.t_start, self.t_end = float(start[0]), float(start[-1])
        increments = torch.diff(schedule.lambda_(start.to(torch.float64)))
        #: Log-SNR increments up to a common constant, shape ``(N,)``.
        self.logits = nn.Parameter(torch.log(increments / increments.sum()))

    def forward(self) -> Tensor:
        """The nodes ``t_0 = t_start > … > t_N = t_end``, shape ``(N + 1,)``, float64, differentiable in the logits."""
        kw = {"dtype": torch.float64, "device": self.logits.device}
        lam_start, lam_end = self.schedule.lambda_(torch.tensor([self.t_start, self.t_end], **kw))
        fractions = torch.softmax(self.logits.to(torch.float64), 0).cumsum(0)[:-1]
        interior = self.schedule.t_from_lambda(lam_start + (lam_end - lam_start) * fractions)
        # The ends exactly (the λ round trip is only exact to round-off).
        return torch.cat([torch.tensor([self.t_start], **kw), interior, torch.tensor([self.t_end], **kw)])
