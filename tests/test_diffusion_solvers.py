"""Probability-flow ODE solvers and their sampler families, checked with the exact ε of Gaussian mixtures.

Oracles: a closed-form Gaussian flow, torchdiffeq's dopri5 and diffusers' schedulers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.cache import ModelCache
from bench.contracts import FitContext, Target, UnsupportedTarget
from bench.counting import count_evaluations
from bench.profiles import get_profile
from bench.registry import Registry
from samplers.diffusion import plugin as diffusion_plugin
from samplers.diffusion import train as epsnet
from samplers.diffusion.model import ExactEps
from samplers.diffusion.plugin import SPECS, DiffusionSolverFamily
from samplers.diffusion.sample import ddim, dpm_solver_2, dpm_solver_heun, dpm_solver_pp_2m
from samplers.diffusion.schedule import DiscreteVPSchedule, timesteps
from targets.mixtures import GaussianMixture, gmm3d
from tests.conftest import registered

F64 = torch.float64
SOLVERS = {"ddim": ddim, "heun": dpm_solver_heun, "dpm-solver-2": dpm_solver_2, "dpm-solver++-2m": dpm_solver_pp_2m}
ORDERS = {"ddim": 1, "heun": 2, "dpm-solver-2": 2, "dpm-solver++-2m": 2}
FAMILIES = {spec.prefix: DiffusionSolverFamily(spec) for spec in SPECS}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def schedule() -> DiscreteVPSchedule:
    return DiscreteVPSchedule()


def smoke_context() -> FitContext:
    return FitContext(torch.device("cpu"), F64, 0, get_profile("smoke"), ModelCache(None))


def prior_draws(n: int, dim: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


def observed_order(steps: list[int], errors: list[float]) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(steps)``."""
    x, y = np.log(steps), -np.log(errors)
    return float(np.polyfit(x, y, 1)[0])


@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_converge_to_the_closed_form_gaussian_flow(name, schedule):
    # For Gaussian data N(μ, s²I) the flow keeps z = (x_t - α μ)/√(α²s² + σ²) fixed, so the
    # exact map from t = 1 to 1/T is affine; the ODE in (y, ρ) is still nonlinear in ρ.
    mu, s = torch.tensor([1.5, -0.5], dtype=F64), 0.3
    target = GaussianMixture("gauss2d", [1.0], [mu.tolist()], [[s, s]])
    x = prior_draws(64, dim=2)
    ends = torch.tensor([1.0, schedule.t_min], dtype=F64)
    alpha, sigma = schedule.alpha(ends), schedule.sigma(ends)
    scale = torch.sqrt(alpha**2 * s**2 + sigma**2)
    exact = alpha[1] * mu + scale[1] * (x - alpha[0] * mu) / scale[0]
    steps = [20, 40, 80]
    errors = [
        float((SOLVERS[name](ExactEps(target, schedule), x, timesteps(schedule, n)) - exact).norm(dim=1).max())
        for n in steps
    ]
    assert ORDERS[name] - 0.2 < observed_order(steps, errors) < ORDERS[name] + 0.4


@pytest.fixture(scope="module")
def gmm_reference(schedule):
    """dopri5 solution of the probability-flow ODE of gmm3d from t = 1 to 1/T (float64, rtol = atol = 1e-9).

    Integrated in λ, where the exact-ε vector field ``dx/dλ = σ² x - σ ε*`` is smooth (in ``t``
    the piecewise-linear schedule puts a kink at every grid point).
    """
    torchdiffeq = pytest.importorskip("torchdiffeq")
    eps = ExactEps(gmm3d(), schedule)
    x = prior_draws(64)

    def velocity(lam, x):
        t = schedule.t_from_lambda(lam.reshape(1))
        sigma = schedule.sigma(t)
        return sigma**2 * x - sigma * eps(x, t.expand(len(x)))

    lams = schedule.lambda_(torch.tensor([1.0, schedule.t_min], dtype=F64))
    return x, torchdiffeq.odeint(velocity, x, lams, method="dopri5", rtol=1e-9, atol=1e-9)[-1]


@pytest.mark.oracle
@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_converge_at_their_order_on_gmm3d(name, schedule, gmm_reference):
    # Median over samples: a few trajectories end between modes, where the flow map is so
    # steep that they reach the asymptotic regime only at far more steps.
    x, reference = gmm_reference
    eps = ExactEps(gmm3d(), schedule)
    steps = [20, 40, 80]
    errors = [
        float((SOLVERS[name](eps, x, timesteps(schedule, n)) - reference).norm(dim=1).median()) for n in steps
    ]
    assert ORDERS[name] - 0.2 < observed_order(steps, errors) < ORDERS[name] + 0.4


def run_diffusers(scheduler, eps, x, n_steps):
    """Drive a diffusers scheduler with ``eps``; returns its output and our nodes ``t = (k + 1)/T`` + ``1/T``."""
    scheduler.set_timesteps(n_steps)
    for k in scheduler.timesteps:
        x = scheduler.step(eps(x, torch.full((len(x),), (int(k) + 1) / 1000, dtype=F64)), k, x).prev_sample
    ts = torch.cat([(scheduler.timesteps.to(F64) + 1) / 1000, torch.tensor([1e-3], dtype=F64)])
    return x, ts


# diffusers' discrete step k is our t = (k+1)/T, so its alphas_cumprod[0] is ᾱ(1/T), our end time:
# set_alpha_to_one=False (True would take the last DDIM step to ᾱ = 1, i.e. t = 0) and
# final_sigmas_type="sigma_min".  diffusers keeps its schedule and state in float32, whose
# rounding the coarse last steps amplify; at 50 steps it stays below the 1e-5 tolerance.
DIFFUSERS_COMMON = {"num_train_timesteps": 1000, "trained_betas": np.linspace(1e-4, 2e-2, 1000),
                    "timestep_spacing": "trailing", "steps_offset": 0}


@pytest.mark.oracle
@pytest.mark.parametrize("n_steps", [20, 50])
def test_ddim_matches_diffusers(n_steps):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **DIFFUSERS_COMMON)
    eps, x = ExactEps(gmm3d()), prior_draws(64)
    expected, ts = run_diffusers(scheduler, eps, x, n_steps)
    torch.testing.assert_close(ddim(eps, x, ts), expected, rtol=0, atol=1e-5)


@pytest.mark.oracle
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' own numpy-2 copy warning
def test_dpm_solver_pp_2m_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=False,
        final_sigmas_type="sigma_min", **DIFFUSERS_COMMON,
    )
    eps, x = ExactEps(gmm3d()), prior_draws(64)
    expected, ts = run_diffusers(scheduler, eps, x, 50)
    torch.testing.assert_close(dpm_solver_pp_2m(eps, x, ts), expected, rtol=0, atol=1e-5)


def test_ddim_with_exact_eps_turns_noise_into_the_mixture(schedule):
    target, n = gmm3d(), 4000
    x = ddim(ExactEps(target, schedule), prior_draws(n, seed=5), timesteps(schedule, 200, "time_uniform"))
    # Means and covariance entries within 4.5 Monte-Carlo standard errors.
    mean = target.mean()
    assert ((x.mean(0) - mean).abs() < 4.5 * x.std(0) / math.sqrt(n)).all()
    centred = x - mean
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - target.covariance()).abs() < 4.5 * se).all()
    # Mode weights (modes are far apart, so assignment by responsibility is nearly exact).
    fractions = torch.bincount(target.responsibilities(x).argmax(-1), minlength=3).to(F64) / n
    weights = target.weights
    assert ((fractions - weights).abs() < 4.5 * torch.sqrt(weights * (1 - weights) / n)).all()


@pytest.mark.parametrize(
    ("name", "nfe"),
    [("ddim-7", 7), ("dpm-solver-heun-10", 20), ("dpm-solver-heun-3", 6), ("dpm-solver-2-20", 20),
     ("dpm-solver-2-6", 6), ("dpm-solver++-2m-20", 20), ("dpm-solver++-2m-5", 5)],
)
def test_measured_nfe_is_the_true_number_of_calls(name, nfe):
    sampler = next(f.resolve(f"{name}@exact") for f in FAMILIES.values() if f.regex.fullmatch(name))
    ctx = smoke_context()
    sample = sampler.fit(gmm3d(), ctx)
    with count_evaluations() as counter:
        out = sample(50, torch.Generator().manual_seed(0))
    assert out.shape == (50, 3) and torch.isfinite(out).all()
    assert counter.calls == nfe and counter.rows == nfe * 50  # every call on the full batch
    assert ctx.artifacts["eps"] == "exact"


def test_defaults_and_sweeps_resolve_to_their_family():
    expected_defaults = {"ddim-50", "dpm-solver-heun-10", "dpm-solver-heun-20", "dpm-solver++-2m-20"}
    defaults = {n for f in FAMILIES.values() for n in f.defaults}
    assert defaults == expected_defaults | {f"{n}@exact" for n in expected_defaults}
    for family in FAMILIES.values():
        for name in (*family.defaults, *family.sweep):
            sampler = family.resolve(name)
            assert sampler is not None and sampler.name == name
            assert sum(f.regex.fullmatch(name) is not None for f in FAMILIES.values()) == 1


def test_plugin_registers_every_family(plugin_manager):
    def check(registry: Registry) -> None:
        schedules, variants = "[+uniform|+logsnr|+karras|+ld3]", "[@exact|@paper-eps|@silu]"
        assert {f"{s.prefix}-<{'nfe' if s.counts_nfe else 'steps'}>{schedules}{variants}" for s in SPECS} <= set(
            registry.families
        )
        assert {"ddim-50", "dpm-solver-heun-20@exact"} <= set(registry.default_samplers())
        assert registry.sampler("ddim-7@exact").n_steps == 7

    if plugin_manager.is_registered(diffusion_plugin):  # already a built-in
        check(Registry.from_plugin_manager(plugin_manager))
    else:
        with registered(plugin_manager, diffusion_plugin, "diffusion") as registry:
            check(registry)


@pytest.mark.parametrize("name", ["dpm-solver-2-5", "ddim-0", "dpm-solver-heun-0"])
def test_impossible_step_counts_are_rejected(name):
    family = next(f for f in FAMILIES.values() if f.regex.fullmatch(name))
    with pytest.raises(ValueError):
        family.resolve(name)


def test_unknown_suffix_does_not_match():
    assert all(f.resolve("ddim-50@fast") is None for f in FAMILIES.values())


class NoScoreTarget(Target):
    name, dim = "no-score", 2

    def sample(self, n, generator, dtype=torch.float32):
        return torch.randn(n, self.dim, generator=generator, dtype=dtype)


def test_exact_variant_needs_a_noised_score():
    sampler = FAMILIES["ddim"].resolve("ddim-10@exact")
    with pytest.raises(UnsupportedTarget, match="noised score"):
        sampler.check(NoScoreTarget())
    sampler.check(gmm3d())
    FAMILIES["ddim"].resolve("ddim-10").check(NoScoreTarget())


def test_samplers_share_one_epsnet_and_run_in_any_dimension(monkeypatch):
    monkeypatch.setitem(epsnet.EPSNET_BUDGETS, "smoke", {"steps": 5, "batch": 32})
    target = GaussianMixture("gmm5d", [0.6, 0.4], [[1.0, -1, 0, 2, 0], [-2, 1, 1, 0, -1]], [[0.5] * 5, [0.8] * 5])
    ctx = smoke_context()
    names = ("ddim-4@paper-eps", "dpm-solver-heun-2@paper-eps", "dpm-solver-2-4@silu", "dpm-solver++-2m-4@paper-eps")
    for name in names:
        sampler = next(f.resolve(name) for f in FAMILIES.values() if f.regex.fullmatch(name.split("@")[0]))
        sample = sampler.fit(target, ctx)
        first, again = (sample(9, torch.Generator().manual_seed(1)) for _ in range(2))
        assert first.shape == (9, 5) and torch.isfinite(first).all()
        torch.testing.assert_close(first, again, rtol=0, atol=0)  # deterministic given the generator
    assert [m["source"] for m in ctx.models] == ["trained", "memory", "trained", "memory"]
    assert [ctx.models[i]["kind"] for i in range(4)] == ["epsnet"] * 4


def test_solvers_reject_increasing_nodes(schedule):
    with pytest.raises(ValueError, match="decreasing"):
        ddim(ExactEps(gmm3d(), schedule), prior_draws(4), timesteps(schedule, 5).flip(0))
