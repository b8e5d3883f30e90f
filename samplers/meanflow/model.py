"""The MeanFlow average-velocity network ``u_θ(x, r, t)``."""

from __future__ import annotations

from torch import Tensor, nn

from samplers.nets import TimeMLP, build_time_mlp


def average_velocity_net(dim: int) -> TimeMLP:
    """An untrained ``u_θ`` for ``dim``-dimensional data: a :class:`~samplers.nets.TimeMLP` with two time inputs."""
    return build_time_mlp(dim, 2)


def average_velocity(net: nn.Module, x: Tensor, r: Tensor | float, t: Tensor | float) -> Tensor:
    """``u_θ(x, r, t)``: the network sees ``(t, t - r)``, the conditioning MeanFlow found best (§4.3).

    Args:
        net: A :class:`~samplers.nets.TimeMLP` with two time inputs.
        x: State at time ``t``, shape ``(n, d)``.
        r: Earlier (data-side) time, float or ``(n, 1)``.
        t: Current time, float or ``(n, 1)``.
    """
    return net(x, t, t - r)
