"""The flow-matching velocity network ``v_θ(x, t)``."""

from __future__ import annotations

from samplers.nets import TimeMLP, build_time_mlp


def velocity_net(dim: int) -> TimeMLP:
    """An untrained ``v_θ(x, t)`` for ``dim``-dimensional data: a :class:`~samplers.nets.TimeMLP` with one time input.

    Of the shared size :data:`samplers.nets.ARCH`, so flow matching and its reflow
    compete with the ε-net at equal capacity.
    """
    return build_time_mlp(dim, 1)
