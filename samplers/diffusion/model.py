"""Noise predictors ``ε(x_t, t)``: the learned :class:`Denoiser`, the ε-net of PINGS §5.4.1, the exact ε of a target.

Each is an ``nn.Module`` (so the runner counts its calls as network evaluations)
with a ``schedule`` attribute: a predictor together with its schedule fully
defines the probability-flow ODE that every solver in :mod:`.sample` integrates.
Both learned models are trained in :mod:`.train`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from bench.contracts import Target
from samplers.nets import SinusoidalEmbedding, mlp

from .schedule import DiscreteVPSchedule


class EpsNet(nn.Module):
    """The ε-net of PINGS §5.4.1: an MLP on ``[x_t, emb(t)]`` predicting the noise.

    Six hidden layers of width 128 (tanh by default, as the paper states),
    Xavier-uniform weights and zero biases, a linear output layer.

    Args:
        dim: Data dimension ``d``.
        schedule: The schedule it is trained for (used by solvers to integrate it).
        hidden: Hidden width.
        depth: Number of hidden layers.
        emb_dim: Size of the sinusoidal time embedding.
        activation: ``"tanh"`` or ``"silu"``.

    Raises:
        ValueError: Unknown ``activation`` or odd ``emb_dim``.
    """

    def __init__(
        self,
        dim: int,
        schedule: DiscreteVPSchedule,
        hidden: int = 128,
        depth: int = 6,
        emb_dim: int = 64,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.embed = SinusoidalEmbedding(emb_dim)
        self.mlp = mlp(dim + emb_dim, dim, hidden, depth, activation)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, continuous ``t`` ``(n,)`` in ``[1/T, 1]`` → ``ε̂`` ``(n, d)``."""
        return self.mlp(torch.cat([x_t, self.embed(t)], dim=-1))


class ExactEps(nn.Module):
    """The optimal noise prediction ``ε*(x_t, t) = E[ε | x_t] = -σ(t) ∇log q_t(x_t)``.

    Uses the target's closed-form noised score, so solver error can be measured
    apart from score-learning error.  An ``nn.Module`` so each call is counted.

    Args:
        target: A target providing :meth:`~bench.contracts.Target.noised_score`.
        schedule: The noise schedule defining ``ᾱ(t)``.
    """

    def __init__(self, target: Target, schedule: DiscreteVPSchedule | None = None) -> None:
        super().__init__()
        self.target = target
        self.schedule = schedule or DiscreteVPSchedule()

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` → ``ε*`` ``(n, d)``."""
        log_alpha = self.schedule.log_alpha(t)[:, None]
        sigma = torch.sqrt(-torch.expm1(2 * log_alpha))
        return -sigma * self.target.noised_score(x_t, torch.exp(2 * log_alpha))


#: What a denoiser's native output predicts (Salimans & Ho 2022 for ``v``).
PREDICTIONS = ("eps", "x0", "v")
#: Output preconditioning: none (the net's output is the prediction) or EDM's skip connection.
PRECONDITIONINGS = ("none", "edm")


def prediction_to_eps(
    prediction: str, native: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, mean: Tensor, std: Tensor
) -> Tensor:
    """The noise ``ε`` implied by a ``prediction``-parametrized output at ``x_t = α x_0 + σ ε``.

    With ``r = x_t - α μ`` and the standardised data ``y_0 = (x_0 - μ)/s`` (per coordinate;
    ``μ = 0``, ``s = 1`` without standardisation) the outputs are ``ε`` itself, ``y_0``, or
    ``v = α ε - σ y_0``; then ``ε = (r - α s y_0)/σ`` and ``ε = (σ r + α s v)/(α² s + σ²)``.

    Args:
        prediction: One of :data:`PREDICTIONS`.
        native: The prediction, shape ``(n, d)``.
        x_t: Noised points, shape ``(n, d)``.
        alpha: ``α(t)``, shape ``(n, 1)``.
        sigma: ``σ(t)``, shape ``(n, 1)``.
        mean: ``μ``, shape ``(d,)``.
        std: ``s``, shape ``(d,)``, positive.

    Returns:
        ``ε``, shape ``(n, d)``.

    Raises:
        ValueError: Unknown ``prediction``.
    """
    residual = x_t - alpha * mean
    if prediction == "eps":
        return native
    if prediction == "x0":
        return (residual - alpha * std * native) / sigma
    if prediction == "v":
        return (sigma * residual + alpha * std * native) / (alpha.square() * std + sigma.square())
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def eps_to_prediction(
    prediction: str, eps: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, mean: Tensor, std: Tensor
) -> Tensor:
    """Inverse of :func:`prediction_to_eps`: the ``prediction``-parametrized output for noise ``eps``.

    Also the regression target of training (``eps`` the true noise).  Shapes as in
    :func:`prediction_to_eps`.

    Raises:
        ValueError: Unknown ``prediction``.
    """
    if prediction == "eps":
        return eps
    y0 = (x_t - alpha * mean - sigma * eps) / (alpha * std)
    if prediction == "x0":
        return y0
    if prediction == "v":
        return alpha * eps - sigma * y0
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def preconditioning(
    prediction: str, precondition: str, alpha: Tensor, sigma: Tensor, std: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(c_in, c_skip, c_out)`` of EDM (Karras et al. 2022, App. B.6) on the VP schedule, per coordinate.

    The network sees ``c_in · (x_t - α μ)``, which has unit variance at every ``t`` when the
    data has mean ``μ`` and std ``s``: ``c_in = 1/√V`` with ``V = α² s² + σ²`` (``c_in = 1``
    for ``s = 1``, since ``α² + σ² = 1``); ``c_in`` is applied under either preconditioning.
    With ``"edm"`` the prediction is ``T̂ = c_skip (x_t - α μ) + c_out F``, where ``c_skip`` is the
    regression coefficient of the target ``T`` on ``x_t - α μ`` and ``c_out`` the residual std (so
    the net's own target ``F`` has unit variance, and the loss is unweighted in ``F``):

    * ``ε``: ``c_skip = σ/V``, ``c_out = α s/√V``;
    * ``y_0``: ``c_skip = α s/V``, ``c_out = σ/√V`` (EDM's own, with ``σ_data = s``);
    * ``v``: ``c_skip = ασ(1 - s)/V``, ``c_out = √(1 - α²σ²(1 - s)²/V)`` (``0`` and ``1`` for ``s = 1``:
      ``v`` is already preconditioned for unit-variance data).

    With ``"none"``, ``c_skip = 0`` and ``c_out = 1``.  The three targets are affine in each
    other given ``x_t``, so under ``"edm"`` they train the same ``F`` up to its sign.

    Args:
        prediction: One of :data:`PREDICTIONS`.
        precondition: One of :data:`PRECONDITIONINGS`.
        alpha: ``α(t)``, shape ``(n, 1)``.
        sigma: ``σ(t)``, shape ``(n, 1)``.
        std: ``s``, shape ``(d,)``.

    Returns:
        Three tensors broadcastable to ``(n, d)``.

    Raises:
        ValueError: Unknown ``prediction`` or ``precondition``.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    if precondition not in PRECONDITIONINGS:
        raise ValueError(f"unknown preconditioning {precondition!r}; choose one of {PRECONDITIONINGS}")
    variance = alpha.square() * std.square() + sigma.square()
    c_in = variance.rsqrt()
    if precondition == "none":
        return c_in, torch.zeros_like(c_in), torch.ones_like(c_in)
    if prediction == "eps":
        return c_in, sigma / variance, alpha * std * c_in
    if prediction == "x0":
        return c_in, alpha * std / variance, sigma * c_in
    covariance = alpha * sigma * (1 - std)
    return c_in, covariance / variance, torch.sqrt(1 - covariance.square() / variance)


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """Options of the shared learned diffusion model (:class:`Denoiser`); all part of its cache key.

    Attributes:
        prediction: What the output predicts: ``"eps"``, ``"x0"`` or ``"v"`` (:data:`PREDICTIONS`).
        precondition: ``"none"`` or ``"edm"`` (:func:`preconditioning`); ``"edm"`` also feeds the net
            EDM's ``c_noise``: the log-SNR, rescaled to ``[0, 1]``, in place of ``t``.
        standardize: Fit per-coordinate mean and std of the data from seeded training draws
            (:func:`~samplers.nets.fit_standardization`'s settings); else ``μ = 0``, ``s = 1``.
        activation: Hidden activation (``"tanh"`` or ``"silu"``).
        hidden: Hidden width.
        depth: Number of hidden layers.
        emb_dim: Size of the sinusoidal time embedding.
    """

    prediction: str = "eps"
    precondition: str = "none"
    standardize: bool = False
    activation: str = "tanh"
    hidden: int = 128
    depth: int = 6
    emb_dim: int = 64

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}")
        if self.precondition not in PRECONDITIONINGS:
            raise ValueError(f"unknown preconditioning {self.precondition!r}; choose one of {PRECONDITIONINGS}")

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-able dict (the cache key's part)."""
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        """Short readable name, e.g. ``"v/edm/std/silu"`` (tables, progress bars)."""
        return "/".join([self.prediction, self.precondition, "std" if self.standardize else "raw", self.activation])


class Denoiser(nn.Module):
    """The learned diffusion model: an MLP on ``[c_in (x_t - α μ), emb(c_noise)]``, any parametrization.

    ``native(x_t, t)`` is the prediction its :class:`DenoiserConfig` names; ``forward``
    converts it to ``ε`` (:func:`prediction_to_eps`), the interface every solver uses, in
    the same call (one network evaluation).  ``data_mean`` and ``data_std`` are buffers
    saved with the weights (``0`` and ``1`` until training sets them).

    Args:
        dim: Data dimension ``d``.
        schedule: The VP schedule it is trained for.
        config: The options.

    Raises:
        ValueError: Unknown activation or odd ``config.emb_dim``.
    """

    def __init__(self, dim: int, schedule: DiscreteVPSchedule, config: DenoiserConfig = DenoiserConfig()) -> None:
        super().__init__()
        self.schedule = schedule
        self.config = config
        self.embed = SinusoidalEmbedding(config.emb_dim)
        self.mlp = mlp(dim + config.emb_dim, dim, config.hidden, config.depth, config.activation)
        self.register_buffer("data_mean", torch.zeros(dim))
        self.register_buffer("data_std", torch.ones(dim))
        ends = schedule.lambda_(torch.tensor([schedule.t_min, schedule.t_max], dtype=torch.float64))
        self.lambda_range = (float(ends[0]), float(ends[1]))

    def _scales(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.schedule.alpha(t).to(like.dtype)[:, None], self.schedule.sigma(t).to(like.dtype)[:, None]

    def c_noise(self, t: Tensor) -> Tensor:
        """The net's time input, shape ``(n,)``: ``t``, or with ``"edm"`` the log-SNR mapped onto ``[0, 1]``."""
        if self.config.precondition == "none":
            return t
        lam_data, lam_prior = self.lambda_range
        return (lam_data - self.schedule.lambda_(t)) / (lam_data - lam_prior)

    def raw(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(F, c_skip, c_out, α, σ)``: the net's output ``F`` ``(n, d)`` and the coefficients at ``t``."""
        alpha, sigma = self._scales(t, x_t)
        c_in, c_skip, c_out = preconditioning(
            self.config.prediction, self.config.precondition, alpha, sigma, self.data_std
        )
        residual = x_t - alpha * self.data_mean
        output = self.mlp(torch.cat([c_in * residual, self.embed(self.c_noise(t))], dim=-1))
        return output, c_skip * residual, c_out, alpha, sigma

    def native(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` → the prediction ``T̂ = c_skip (x_t - αμ) + c_out F`` ``(n, d)``."""
        output, skip, c_out, _, _ = self.raw(x_t, t)
        return skip + c_out * output

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` in ``[1/T, 1]`` → ``ε̂`` ``(n, d)``."""
        output, skip, c_out, alpha, sigma = self.raw(x_t, t)
        return prediction_to_eps(
            self.config.prediction, skip + c_out * output, x_t, alpha, sigma, self.data_mean, self.data_std
        )

    def loss(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The training loss on noised points ``x_t`` ``(n, d)`` at ``t`` ``(n,)`` made with ``noise`` ``(n, d)``.

        :func:`denoising_loss` of :meth:`native` (0-d): the unweighted MSE of the net's own output.
        """
        alpha, sigma = self._scales(t, x_t)
        return denoising_loss(self.config, self.native(x_t, t), x_t, noise, alpha, sigma, self.data_mean,
                              self.data_std)


def denoising_loss(
    config: DenoiserConfig, native: Tensor, x_t: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor,
    mean: Tensor, std: Tensor,
) -> Tensor:
    """Per-coordinate mean of ``((T̂ - T)/c_out)²`` = ``(F - F*)²``, ``F* = (T - c_skip (x_t - αμ))/c_out`` (0-d).

    ``T`` is the true target of ``(x_t, ε)`` (:func:`eps_to_prediction`); without
    preconditioning (``c_out = 1``) the plain MSE of the prediction (the DDPM loss for ``ε``).
    Its minimum over ``T̂`` is ``E[Var(T | x_t)/c_out²]``, reached at ``T̂ = E[T | x_t]``.

    Args:
        config: Prediction and preconditioning.
        native: The prediction ``T̂``, shape ``(n, d)``.
        x_t: Noised points, shape ``(n, d)``.
        noise: The ``ε`` that made them, shape ``(n, d)``.
        alpha: ``α(t)``, shape ``(n, 1)``.
        sigma: ``σ(t)``, shape ``(n, 1)``.
        mean: ``μ``, shape ``(d,)``.
        std: ``s``, shape ``(d,)``.
    """
    truth = eps_to_prediction(config.prediction, noise, x_t, alpha, sigma, mean, std)
    _, _, c_out = preconditioning(config.prediction, config.precondition, alpha, sigma, std)
    return ((native - truth) / c_out).square().mean()


def _conversion_terms(
    schedule: DiscreteVPSchedule, t: Tensor, like: Tensor, data_mean: Tensor, data_std: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(α, σ, μ, s)`` at ``t`` for :func:`prediction_to_eps` / :func:`eps_to_prediction`, in ``like``'s dtype and device."""
    alpha = schedule.alpha(t).to(like.dtype)[:, None]
    sigma = schedule.sigma(t).to(like.dtype)[:, None]
    mean, std = (v.to(device=like.device, dtype=like.dtype) for v in (data_mean, data_std))
    return alpha, sigma, mean, std


class EpsAdapter(nn.Module):
    """Any ``prediction``-parametrized predictor seen as an ε-predictor, the interface of every solver.

    In the spirit of k-diffusion's model wrappers: ``forward(x_t, t)`` calls
    ``predictor(x_t, t)`` once and converts its output (:func:`prediction_to_eps`); the
    runner counts the adapter's call only (the outermost module), so NFE stays exact.

    Args:
        predictor: Module mapping ``x_t`` ``(n, d)``, ``t`` ``(n,)`` to the prediction ``(n, d)``.
        prediction: One of :data:`PREDICTIONS`.
        schedule: The VP schedule (``α``, ``σ``; solvers read it from the adapter).
        data_mean: ``μ`` of the standardised units ``(d,)`` (default 0).
        data_std: ``s`` ``(d,)`` (default 1).

    Raises:
        ValueError: Unknown ``prediction``.
    """

    def __init__(
        self, predictor: nn.Module, prediction: str, schedule: DiscreteVPSchedule,
        data_mean: Tensor | None = None, data_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        self.predictor = predictor
        self.prediction = prediction
        self.schedule = schedule
        self.data_mean = torch.zeros(()) if data_mean is None else data_mean
        self.data_std = torch.ones(()) if data_std is None else data_std

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` → ``ε̂`` ``(n, d)``."""
        return prediction_to_eps(self.prediction, self.predictor(x_t, t), x_t,
                                 *_conversion_terms(self.schedule, t, x_t, self.data_mean, self.data_std))


class ExactPrediction(nn.Module):
    """The closed-form optimum of a parametrization: :class:`ExactEps` converted by :func:`eps_to_prediction`.

    Args:
        target: A target with a noised score.
        prediction: One of :data:`PREDICTIONS`.
        schedule: The VP schedule.
        data_mean: ``μ`` ``(d,)`` of the standardised units (default 0).
        data_std: ``s`` ``(d,)`` (default 1).
    """

    def __init__(
        self, target: Target, prediction: str, schedule: DiscreteVPSchedule | None = None,
        data_mean: Tensor | None = None, data_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.exact = ExactEps(target, schedule)
        self.schedule = self.exact.schedule
        self.prediction = prediction
        self.data_mean = torch.zeros(()) if data_mean is None else data_mean
        self.data_std = torch.ones(()) if data_std is None else data_std

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_t`` ``(n, d)``, ``t`` ``(n,)`` → the optimal prediction ``(n, d)``."""
        return eps_to_prediction(self.prediction, self.exact(x_t, t), x_t,
                                 *_conversion_terms(self.schedule, t, x_t, self.data_mean, self.data_std))
