"""Diffusion baselines of PINGS §5.4: the ε-net, the discrete VP schedule and fast ODE solvers.

Plugin module: :mod:`samplers.diffusion.plugin`.
"""

from .epsnet import EpsNet, ExactEps, get_epsnet
from .schedule import DiscreteVPSchedule, timesteps
from .solvers import ddim, dpm_solver_2, dpm_solver_heun, dpm_solver_pp_2m

__all__ = [
    "DiscreteVPSchedule",
    "EpsNet",
    "ExactEps",
    "ddim",
    "dpm_solver_2",
    "dpm_solver_heun",
    "dpm_solver_pp_2m",
    "get_epsnet",
    "timesteps",
]
