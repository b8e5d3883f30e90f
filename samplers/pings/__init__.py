"""PINGS: a network ``g_θ(t, z)`` whose ``g_θ(0, ·)`` maps ``N(0, I)`` to the target in one pass.

* ``pings``: the paper exactly (§3, §5.1): score-guided residual ``∂_t g - (1 - t) s(g)``
  with the target's closed-form score (score-free ``s ≡ 0`` without one).
* ``pings-pf``: the residual is the VP probability-flow ODE (the exact noised score,
  or the shared learned diffusion model for targets without one), so ``g`` is that ODE's flow map
  and its error is checked per sample against dopri5 (``fit.artifacts.flow_map_rmse``).
* ``pings-pf-distill``: ``pings-pf`` plus an anchor ``E‖g(0, z_i) - x_i‖²`` on prior draws
  solved once with the same ODE (DPM-Solver++(2M), 100 steps), the paper's mitigation
  "distill from a pre-trained score/flow model" (§6.1 item 1); trained faster
  (batch 1024, Adam 2e-3 with cosine decay).

Sampling is one batched forward pass ``g_θ(0, Z)``, ``Z ~ N(0, I)``.

* :mod:`.model`: the generator ``g_θ`` and its exact time derivative;
* :mod:`.physics`: the residual's target velocities (score guidance, probability flow);
* :mod:`.mmd`: the differentiable kernel-bank MMD²;
* :mod:`.train`: the loss of eq. 9 and the training loop with early stopping;
* :mod:`.sample`: the one-pass sampler;
* :mod:`.plugin`: the samplers and their registration.
"""

from .mmd import KernelBankMMD
from .model import PingsMLP, value_and_time_derivative
from .physics import ProbabilityFlow, ScoreGuidance
from .sample import endpoint_samples
from .train import Budget, Recipe, train_pings

__all__ = [
    "Budget",
    "KernelBankMMD",
    "PingsMLP",
    "ProbabilityFlow",
    "Recipe",
    "ScoreGuidance",
    "endpoint_samples",
    "train_pings",
    "value_and_time_derivative",
]
