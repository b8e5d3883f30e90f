"""Consistency models by consistency distillation (Song et al. 2023): ``consistency-<steps>[@exact]``.

A consistency function ``f_θ(x_t, t)`` maps any point of a probability-flow ODE trajectory to
the trajectory's end at ``t = 1/T``; it is distilled from a diffusion teacher by making
``f_θ(x_{t_{n+1}}, t_{n+1})`` agree with a target network at the point one teacher ODE step
(Heun) closer to the data.  Teachers: the shared learned diffusion model
(:func:`samplers.diffusion.get_denoiser`), or with ``@exact`` the target's closed-form ε.
Sampling takes one call ``f_θ(z, 1)`` or, with two steps, re-noises that sample to a middle
time and calls ``f_θ`` again.

* :mod:`.model`: the consistency network (EDM skip parametrization, exact at the boundary) and
  the exact consistency function of a Gaussian target;
* :mod:`.train`: the discretisation, the teacher step, the loss and the cached model;
* :mod:`.sample`: multistep consistency sampling;
* :mod:`.plugin`: the ``consistency-<steps>`` family and its registration.
"""

from .model import ConsistencyNet, GaussianConsistency
from .sample import consistency_sample, consistency_sampler
from .train import RECIPE, consistency_model, consistency_loss

__all__ = [
    "RECIPE",
    "ConsistencyNet",
    "GaussianConsistency",
    "consistency_loss",
    "consistency_model",
    "consistency_sample",
    "consistency_sampler",
]
