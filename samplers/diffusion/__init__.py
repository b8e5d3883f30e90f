"""Diffusion baselines of PINGS §5.4: the ε-net, the discrete VP schedule and fast ODE solvers.

* :mod:`.model`: the ε-predictors (trained :class:`EpsNet`, closed-form :class:`ExactEps`);
* :mod:`.schedule`: the discrete VP noise schedule, solver node spacings and the learned nodes;
* :mod:`.train`: the DDPM objective and :func:`get_epsnet`, the cached ε-net every solver shares, and
  :func:`get_learned_schedule`, the cached learned nodes of one solver;
* :mod:`.sample`: the probability-flow ODE solvers;
* :mod:`.plugin`: the sampler families and their registration.

Names are ``<solver>-<number>[+<schedule>][@exact|@silu]``: ``+uniform``, ``+logsnr``, ``+karras``
or the learned ``+ld3`` nodes, then the ε-predictor (see :mod:`.plugin`).
"""

from .model import EpsNet, ExactEps
from .sample import ddim, dpm_solver_2, dpm_solver_heun, dpm_solver_pp_2m, dpm_solver_pp_3m, edm_heun, ipndm, unipc
from .schedule import DiscreteVPSchedule, LearnedSchedule, timesteps
from .train import get_epsnet, get_learned_schedule

__all__ = [
    "DiscreteVPSchedule",
    "EpsNet",
    "ExactEps",
    "LearnedSchedule",
    "ddim",
    "dpm_solver_2",
    "dpm_solver_heun",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_3m",
    "edm_heun",
    "ipndm",
    "unipc",
    "get_epsnet",
    "get_learned_schedule",
    "timesteps",
]
