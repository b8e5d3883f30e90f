"""The one-step student ``x = d_θ(z)``."""

from __future__ import annotations

from samplers.nets import TimeMLP, build_time_mlp


def student_net(dim: int) -> TimeMLP:
    """An untrained ``d_θ`` for ``dim``-dimensional data: a :class:`~samplers.nets.TimeMLP` without time inputs."""
    return build_time_mlp(dim, 0)
