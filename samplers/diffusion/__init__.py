"""Diffusion baselines of PINGS §5.4: the learned denoiser, the discrete VP schedule and fast ODE solvers.

* :mod:`.model`: the learned :class:`Denoiser` (ε / x₀ / v prediction, EDM preconditioning, standardisation;
  options :class:`DenoiserConfig`), the paper's :class:`EpsNet`, the closed-form :class:`ExactEps` and
  :class:`ExactPrediction`, and :class:`EpsAdapter`, which shows any parametrization to the solvers as an ε;
* :mod:`.schedule`: the discrete VP noise schedule, solver node spacings and the learned nodes;
* :mod:`.train`: the training objectives, :func:`get_denoiser` (the cached model every default learned row
  shares), :func:`get_epsnet` (the paper's ε-net, ``@paper-eps``), and
  :func:`get_learned_schedule`, the cached learned nodes of one solver;
* :mod:`.sample`: the probability-flow ODE solvers;
* :mod:`.plugin`: the sampler families and their registration.

Names are ``<solver>-<number>[+<schedule>][@exact|@paper-eps|@silu]``: ``+uniform``, ``+logsnr``, ``+karras``
or the learned ``+ld3`` nodes, then the ε-predictor (see :mod:`.plugin`).
"""

from .model import Denoiser, DenoiserConfig, EpsAdapter, EpsNet, ExactEps, ExactPrediction
from .sample import ddim, dpm_solver_2, dpm_solver_heun, dpm_solver_pp_2m, dpm_solver_pp_3m, edm_heun, ipndm, unipc
from .schedule import DiscreteVPSchedule, LearnedSchedule, timesteps
from .train import DEFAULT_DENOISER, denoiser_config, get_denoiser, get_epsnet, get_learned_schedule

__all__ = [
    "DEFAULT_DENOISER",
    "Denoiser",
    "DenoiserConfig",
    "EpsAdapter",
    "ExactPrediction",
    "denoiser_config",
    "get_denoiser",
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
