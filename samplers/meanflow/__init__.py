"""``meanflow-<N>``: MeanFlow (Geng et al., 2025, "Mean Flows for One-step Generative Modeling").

A network ``u_θ(x, r, t)`` learns the *average* velocity
``u(x_t, r, t) = 1/(t - r) ∫_r^t v(x_τ, τ) dτ`` of the straight-path flow
(:mod:`samplers.flow`) from scratch, through the MeanFlow identity
``u = v - (t - r) d/dt u`` (their eq. 6).  One step ``x_0 = z - u(z, 0, 1)``
jumps from the prior to the data; ``N`` steps chain ``N`` jumps.  Chosen over
consistency distillation because it needs no teacher (so it is not capped by
the ε-net's accuracy, which ``distilled-1`` already measures), no EMA target
network and no discretisation curriculum.

Its network has the ε-net's size (:data:`samplers.nets.ARCH`).

* :mod:`.model`: the average-velocity network and how it is conditioned on ``(r, t)``;
* :mod:`.train`: the MeanFlow objective and the cached model;
* :mod:`.sample`: chained jumps from the prior to the data;
* :mod:`.plugin`: the ``meanflow-<N>`` family and its registration.
"""

from .model import average_velocity, average_velocity_net
from .sample import meanflow_jumps
from .train import meanflow_model

__all__ = ["average_velocity", "average_velocity_net", "meanflow_jumps", "meanflow_model"]
