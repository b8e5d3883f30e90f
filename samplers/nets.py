"""Network building blocks shared by every sampler family: MLPs, sinusoidal time features, standardisation.

* :func:`mlp` and :func:`xavier_init_`: the fully connected stack of the ε-net
  (PINGS §5.4.1), reused at equal size by the flow, MeanFlow and student
  networks; PINGS' generator (§3.2) shares the initialisation.
* :func:`sinusoidal_features` and :class:`SinusoidalEmbedding`: ``[sin(ω t), cos(ω t)]``
  time features.
* :class:`TimeMLP`: an :func:`mlp` on ``x`` and the features of ``k`` scalar times,
  working on per-coordinate standardised data (:func:`fit_standardization`).

Parameters are created in a fixed order (every linear layer, then their
initialisation), so a network built under a given seed has the same weights
wherever it is built.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from bench.contracts import FitContext, Target

ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU}
#: Xavier (Glorot) weight initialisations by distribution; biases always start at zero.
XAVIER_INITS = {"uniform": nn.init.xavier_uniform_, "normal": nn.init.xavier_normal_}


def xavier_init_(layers: Iterable[nn.Linear], distribution: str = "uniform") -> None:
    """Xavier weights (``"uniform"`` or ``"normal"``) and zero biases for ``layers``, in place, in order.

    Raises:
        ValueError: ``distribution`` is neither ``"uniform"`` nor ``"normal"``.
    """
    if distribution not in XAVIER_INITS:
        raise ValueError(f"unknown Xavier distribution {distribution!r}; choose one of {sorted(XAVIER_INITS)}")
    for layer in layers:
        XAVIER_INITS[distribution](layer.weight)
        nn.init.zeros_(layer.bias)


def mlp(
    in_features: int, out_features: int, hidden: int = 128, depth: int = 6, activation: str = "tanh"
) -> nn.Sequential:
    """``depth`` hidden layers ``Linear → activation`` of width ``hidden``, then a linear output.

    Xavier-uniform weights and zero biases.  As an ``nn.Sequential`` its
    parameters are named ``0.weight``, ``0.bias``, ``2.weight``, … (activations
    sit at the odd indices), the names saved in the model cache.

    Args:
        in_features: Input size.
        out_features: Output size.
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        activation: ``"tanh"`` or ``"silu"``.

    Returns:
        The module, mapping ``(n, in_features)`` to ``(n, out_features)``.

    Raises:
        ValueError: Unknown ``activation``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    widths = [in_features] + [hidden] * depth
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(hidden, out_features))
    stack = nn.Sequential(*layers)
    xavier_init_(layer for layer in stack if isinstance(layer, nn.Linear))
    return stack


def sinusoidal_features(t: Tensor, frequencies: Tensor) -> Tensor:
    """``[sin(ω_k t), cos(ω_k t)]``: times ``t`` ``(n, 1)``, angular frequencies ``(k,)`` → features ``(n, 2k)``."""
    angles = t * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """``[sin(ω_k t), cos(ω_k t)]`` with ``dim/2`` angular frequencies geometric in ``[ω_min, ω_max]``.

    The default range resolves one DDPM step (``Δt = 1/T = 10⁻³`` ⇒ ``ω_max = 1000``)
    and varies slowly over the whole of ``t ∈ [0, 1]`` (``ω_min = 1``); it is the
    transformer embedding of the integer step ``i = Tt`` with periods up to ``2πT`` steps.
    The frequencies are recomputed on construction, not saved with the weights.

    Args:
        dim: Embedding size (even).
        min_freq: Lowest angular frequency ``ω_min`` (rad per unit ``t``).
        max_freq: Highest angular frequency ``ω_max``.

    Raises:
        ValueError: ``dim`` is odd.
    """

    def __init__(self, dim: int = 64, min_freq: float = 1.0, max_freq: float = 1000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding size must be even, got {dim}")
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """``t`` of shape ``(n,)`` → embedding ``(n, dim)``."""
        return sinusoidal_features(t[:, None], self.freqs)


class TimeMLP(nn.Module):
    """``f(x, t_1, ..., t_k)``: an :func:`mlp` on ``x`` concatenated with sinusoidal features of each time.

    Six tanh layers of width 128 with Xavier weights and zero biases by default,
    as the PINGS generator and the ε-net (PINGS §3.2, §5.4.1).  Each time input
    gets ``time_features`` sinusoidal features at angular frequencies
    ``10^0 … 10^2`` (geometric; periods from 2π down to ~0.06), enough to resolve
    ``t ∈ [0, 1]`` without the aliasing of very high frequencies; they are saved
    with the weights (``frequencies``), as is the data standardisation
    (``data_mean``, ``data_std``: identity until :func:`fit_standardization`).

    Args:
        dim: Dimension ``d`` of ``x`` and of the output.
        n_times: Number ``k`` of scalar time inputs (0: a plain MLP on ``x``).
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        time_features: Sinusoidal features per time input (even).
        activation: Hidden-layer activation (a name :func:`mlp` takes).
    """

    def __init__(
        self, dim: int, n_times: int = 1, hidden: int = 128, depth: int = 6, time_features: int = 64,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.n_times = n_times
        half = time_features // 2
        self.register_buffer("frequencies", torch.logspace(0.0, 2.0, half) if n_times else torch.empty(0))
        self.net = mlp(dim + n_times * 2 * half, dim, hidden, depth, activation)
        self.register_buffer("data_mean", torch.zeros(dim))
        self.register_buffer("data_std", torch.ones(dim))

    def forward(self, x: Tensor, *times: Tensor | float) -> Tensor:
        """Evaluate the network.

        Args:
            x: Points, shape ``(n, d)``.
            *times: ``n_times`` times, each a float, a scalar tensor, or shape ``(n,)`` / ``(n, 1)``.

        Returns:
            Shape ``(n, d)``.

        Raises:
            TypeError: Not exactly ``n_times`` times.
        """
        if len(times) != self.n_times:
            raise TypeError(f"expected {self.n_times} time inputs, got {len(times)}")
        features = [x]
        for t in times:
            t = torch.as_tensor(t, device=x.device, dtype=x.dtype).reshape(-1, 1).expand(len(x), 1)
            features.append(sinusoidal_features(t, self.frequencies))
        return self.net(torch.cat(features, dim=1))

    def standardize(self, x: Tensor) -> Tensor:
        """Data space → network space: ``(x - mean) / std`` per coordinate."""
        return (x - self.data_mean) / self.data_std

    def unstandardize(self, y: Tensor) -> Tensor:
        """Network space → data space: ``mean + std · y`` per coordinate."""
        return self.data_mean + self.data_std * y


#: Width, depth and time features of the flow, MeanFlow and student networks: the ε-net's
#: (PINGS §3.2 / §5.4.1), so every comparison is at equal capacity.  Part of their cache keys.
ARCH: dict[str, Any] = {"hidden": 128, "depth": 6, "time_features": 64, "activation": "tanh"}


def build_time_mlp(dim: int, n_times: int) -> TimeMLP:
    """A :class:`TimeMLP` of the shared size :data:`ARCH` with ``n_times`` time inputs."""
    return TimeMLP(dim, n_times, hidden=ARCH["hidden"], depth=ARCH["depth"], time_features=ARCH["time_features"],
                   activation=ARCH["activation"])


#: Data standardisation: per-coordinate mean and std of ``draws`` points, stds floored at
#: ``min_std_ratio`` × the largest (a coordinate that never varies, like dho's x(0), stays finite).
STANDARDIZATION = {"draws": 100_000, "min_std_ratio": 0.01}


def fit_standardization(net: nn.Module, x: Tensor) -> None:
    """Set ``net``'s data standardisation from samples ``x`` of shape ``(n, d)``.

    ``net`` is a :class:`TimeMLP` or any module with ``data_mean`` and ``data_std`` buffers of
    shape ``(d,)`` (the diffusion :class:`~samplers.diffusion.model.Denoiser`).

    Every :class:`TimeMLP` model works on per-coordinate standardised data, so
    the N(0, I) prior matches the data's scale in each coordinate.  Without it a
    target whose spread is far below 1 (the oscillator's trajectories vary by
    ~0.1) forces the velocity to contract unit noise by orders of magnitude, and
    small relative errors of the network become large errors in the samples.
    """
    std = x.std(0)
    net.data_mean.copy_(x.mean(0))
    net.data_std.copy_(std.clamp(min=STANDARDIZATION["min_std_ratio"] * float(std.max())))


def standardization_draws(target: Target, ctx: FitContext, kind: str) -> Tensor:
    """Seeded target draws for :func:`fit_standardization`, shape ``(STANDARDIZATION["draws"], dim)``."""
    generator = ctx.generator(kind, target.name, "standardization")
    return target.sample(STANDARDIZATION["draws"], generator, ctx.dtype)
