"""Flow matching and rectified flow on the straight path.

Time runs as everywhere in pingsbench: the prior at ``t = 1``, the data at
``t = 0``.  The straight (rectified) path between a data point ``x_0`` and a
prior draw ``z ~ N(0, I)`` is::

    x_t = (1 - t) x_0 + t z,        dx_t/dt = z - x_0

(Lipman et al., 2023, eq. 20 with σ_min = 0; Liu et al., 2023, eq. 1, with
time reversed).  A velocity network ``v_θ(x, t)`` regresses the conditional
velocity ``z - x_0`` (the conditional flow-matching loss, Lipman et al. eq. 9),
whose minimiser is the marginal velocity ``E[z - x_0 | x_t = x]``; samples are
drawn by integrating ``dx/dt = v_θ(x, t)`` from ``t = 1`` to ``t = 0``.

* ``flow-matching-<N>``: one velocity net per target, shared by every ``N``;
  ``N`` Euler steps.  ``ot-flow-matching-<N>`` trains on minibatch
  optimal-transport couplings instead of independent pairs (Tong et al., 2024,
  OT-CFM), which straightens the paths.
* ``rectified-flow-1``: one reflow (Liu et al., 2023, Alg. 1): the velocity
  net is re-trained on pairs ``(z, ODE(z))`` of the flow-matching model and
  sampled with a single Euler step.

Every network here is a :class:`~samplers.nets.TimeMLP` of the ε-net's size
(6 hidden layers × 128, tanh), so comparisons are at equal capacity, and works
on per-coordinate standardised data (:func:`~samplers.nets.fit_standardization`);
samples are mapped back to data space after the last network call.

* :mod:`.model`: the velocity network;
* :mod:`.train`: the path, the loss, couplings, the training loop and the cached models;
* :mod:`.sample`: prior draws, time grid, Euler and Heun;
* :mod:`.plugin`: the samplers and their registration.
"""

from .model import velocity_net
from .sample import euler, euler_sampler, heun, prior_draws, time_grid
from .train import flow_matching_model, rectified_flow_model, straight_path, train_steps

__all__ = [
    "euler",
    "euler_sampler",
    "flow_matching_model",
    "heun",
    "prior_draws",
    "rectified_flow_model",
    "straight_path",
    "time_grid",
    "train_steps",
    "velocity_net",
]
