"""Diffusion baselines of PINGS §5.4: the ε-net, the discrete VP schedule and fast ODE solvers.

* :mod:`.model`: the ε-predictors (trained :class:`EpsNet`, closed-form :class:`ExactEps`);
* :mod:`.schedule`: the discrete VP noise schedule and solver node spacings;
* :mod:`.train`: the DDPM objective and :func:`get_epsnet`, the cached ε-net every solver shares;
* :mod:`.sample`: the probability-flow ODE solvers;
* :mod:`.plugin`: the sampler families and their registration.
"""

from .model import EpsNet, ExactEps
from .sample import ddim, dpm_solver_2, dpm_solver_heun, dpm_solver_pp_2m, dpm_solver_pp_3m, edm_heun, ipndm, unipc
from .schedule import DiscreteVPSchedule, timesteps
from .train import get_epsnet

__all__ = [
    "DiscreteVPSchedule",
    "EpsNet",
    "ExactEps",
    "ddim",
    "dpm_solver_2",
    "dpm_solver_heun",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_3m",
    "edm_heun",
    "ipndm",
    "unipc",
    "get_epsnet",
    "timesteps",
]
