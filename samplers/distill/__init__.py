"""One-step students distilled from a diffusion teacher: ``distilled-1[@exact]``, ``distilled-ode-1``.

``distilled-1`` (PIDDM, Zhang et al., 2025, arXiv:2505.22391, §4.2): a
student ``x = d_θ(z)`` regresses pairs ``(z, ODE(z))`` solved once with a
high-accuracy solver (DPM-Solver++(2M), many steps) on the shared learned diffusion model
of the diffusion baselines (the teacher); ``distilled-1@exact`` uses the target's
closed-form ε instead, the information PINGS trains on.  ``distilled-ode-1`` (``dho`` only) adds
PIDDM's physics term: the squared residual of ``x'' + 2ξx' + x = 0`` of the
generated trajectory, with ``ξ`` fitted per trajectory.

The student has the ε-net's size (:data:`samplers.nets.ARCH`).

* :mod:`.model`: the student network;
* :mod:`.train`: teachers, teacher pairs, the physics term and the cached student;
* :mod:`.sample`: the one-call sampler;
* :mod:`.plugin`: the ``distilled-*`` samplers and their registration.
"""

from .model import student_net
from .sample import one_step_sampler
from .train import distilled_model

__all__ = ["distilled_model", "one_step_sampler", "student_net"]
