"""The few-step solvers (DPM-Solver++(3M), UniPC-bh2, iPNDM, EDM Heun), checked with the exact ε of gmm3d.

Oracles: diffusers' schedulers stepped in float64 on the same nodes, the authors' iPNDM loop
re-written in EDM's variables, and torchdiffeq's dopri5 for the convergence orders.
"""

from __future__ import annotations

import re
import types

import pytest
import torch

from bench.counting import count_evaluations
from bench.registry import Registry
from samplers.diffusion import plugin as diffusion_plugin
from samplers.diffusion.model import ExactEps
from samplers.diffusion.plugin import EDM_HEUN, SPECS, DiffusionSolverFamily
from samplers.diffusion.sample import (
    dpm_solver_heun,
    dpm_solver_pp_2m,
    dpm_solver_pp_3m,
    edm_heun,
    ipndm,
    unipc,
)
from samplers.diffusion.schedule import DiscreteVPSchedule, timesteps
from targets.mixtures import gmm3d
from tests.conftest import registered
from tests.test_diffusion_solvers import (
    DIFFUSERS_COMMON,
    gmm_reference,  # noqa: F401  (fixture)
    observed_order,
    prior_draws,
    schedule,  # noqa: F401  (fixture)
    smoke_context,
)

F64 = torch.float64
FAMILIES = {spec.prefix: DiffusionSolverFamily(spec) for spec in (*SPECS, EDM_HEUN)}
NEW_FAMILIES = ("dpm-solver++-3m", "unipc", "ipndm", "edm-heun")

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def t_of_sigma(schedule: DiscreteVPSchedule, sigma: torch.Tensor) -> torch.Tensor:
    """Our time at EDM's noise level ``σ = σ_VP/α_VP = e^{-λ}``."""
    return schedule.t_from_lambda(-torch.log(sigma).reshape(-1))


def run_diffusers_f64(scheduler, eps, x, n_steps, edm_scaling=False):
    """Drive a diffusers scheduler in float64 on its own noise levels; returns its output and our nodes.

    diffusers stores its noise levels ``scheduler.sigmas`` (EDM's σ) in float32; they are taken
    as given, widened to float64, and the ε-predictor is called at our ``t`` of each level, so
    both sides step through the same nodes.  ``edm_scaling``: the scheduler works on EDM's
    ``x/α`` and feeds the model ``x/√(σ² + 1)`` (Heun); else on ``x`` itself (multistep ones).
    """
    scheduler.set_timesteps(n_steps)
    scheduler.sigmas = scheduler.sigmas.to(F64)
    sigmas = scheduler.sigmas
    sample = x * torch.sqrt(sigmas[0] ** 2 + 1) if edm_scaling else x
    for j, k in enumerate(scheduler.timesteps):  # call j is made at level j (Heun's levels repeat)
        model_input = sample / torch.sqrt(sigmas[j] ** 2 + 1) if edm_scaling else sample
        t = t_of_sigma(eps.schedule, sigmas[j]).expand(len(x))
        sample = scheduler.step(eps(model_input, t), k, sample).prev_sample
    levels = torch.unique_consecutive(sigmas[sigmas > 0])
    return sample, t_of_sigma(eps.schedule, levels)


@pytest.fixture
def float64_dpm_solver(monkeypatch):
    """diffusers' DPMSolverMultistepScheduler rounds its state to float32 every step
    (``sample.to(torch.float32)``), which hides differences below ~1e-5; let that cast keep float64."""
    module = pytest.importorskip("diffusers.schedulers.scheduling_dpmsolver_multistep")
    proxy = types.SimpleNamespace(**{name: getattr(torch, name) for name in dir(torch) if not name.startswith("__")})
    proxy.float32 = F64
    monkeypatch.setattr(module, "torch", proxy)


@pytest.mark.oracle
@pytest.mark.parametrize("n_steps", [3, 6, 20])
def test_dpm_solver_pp_3m_matches_diffusers(n_steps, float64_dpm_solver):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        solver_order=3, algorithm_type="dpmsolver++", lower_order_final=False, final_sigmas_type="sigma_min",
        **DIFFUSERS_COMMON,
    )
    eps, x = ExactEps(gmm3d()), prior_draws(64)
    expected, ts = run_diffusers_f64(scheduler, eps, x, n_steps)
    assert len(ts) == n_steps + 1
    torch.testing.assert_close(dpm_solver_pp_3m(eps, x, ts), expected, rtol=0, atol=1e-10)
    if n_steps > 2:  # the third-order term is really there
        assert (dpm_solver_pp_2m(eps, x, ts) - expected).abs().max() > 1e-3


@pytest.mark.oracle
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("n_steps", [3, 6, 20])
def test_unipc_matches_diffusers(order, n_steps):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.UniPCMultistepScheduler(
        solver_order=order, solver_type="bh2", predict_x0=True, lower_order_final=False,
        final_sigmas_type="sigma_min", **DIFFUSERS_COMMON,
    )
    eps, x = ExactEps(gmm3d()), prior_draws(64)
    expected, ts = run_diffusers_f64(scheduler, eps, x, n_steps)
    torch.testing.assert_close(unipc(eps, x, ts, order), expected, rtol=0, atol=1e-10)


@pytest.mark.oracle
@pytest.mark.parametrize("levels", [2, 5, 12])
def test_edm_heun_matches_diffusers_on_karras_levels(levels, schedule):
    diffusers = pytest.importorskip("diffusers")
    # "linspace" spacing keeps diffusers' end levels at our t = 1 and t = 1/T.
    scheduler = diffusers.HeunDiscreteScheduler(
        use_karras_sigmas=True, **{**DIFFUSERS_COMMON, "timestep_spacing": "linspace"}
    )
    eps, x = ExactEps(gmm3d()), prior_draws(64)
    expected, ts = run_diffusers_f64(scheduler, eps, x, levels, edm_scaling=True)
    assert len(scheduler.timesteps) == 2 * levels - 1  # EDM's NFE = 2·steps - 1
    torch.testing.assert_close(edm_heun(eps, x, ts), expected, rtol=0, atol=1e-10)
    # Our Karras spacing gives the same noise levels, up to diffusers' float32 ᾱ table: at t = 1/T,
    # 1 - ᾱ = 1e-4 is held to ±6e-8 (its rounding here puts σ_min 8e-5 off relatively).
    ours = torch.exp(-schedule.lambda_(timesteps(schedule, levels - 1, "karras")))
    torch.testing.assert_close(torch.exp(-schedule.lambda_(ts)), ours, rtol=2e-4, atol=0)


def authors_ipndm(eps: ExactEps, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """iPNDM as the authors' code writes it (Zhou et al. 2024, zju-pi/diff-sampler ``ipndm_sampler``):
    EDM's ``x``, ``σ`` and denoiser, Adams–Bashforth on ``d = (x - D(x; σ))/σ`` with fixed weights."""
    schedule = eps.schedule
    sigmas = torch.exp(-schedule.lambda_(ts))

    def denoiser(x_edm, sigma, t):
        x_vp = x_edm / torch.sqrt(1 + sigma**2)
        return x_edm - sigma * eps(x_vp, t.expand(len(x_vp)))

    x_next, buffer = x * torch.sqrt(1 + sigmas[0] ** 2), []
    for i in range(len(ts) - 1):
        x_cur, t_cur, t_next = x_next, sigmas[i], sigmas[i + 1]
        d_cur = (x_cur - denoiser(x_cur, t_cur, ts[i : i + 1])) / t_cur
        order = min(4, i + 1)
        if order == 1:
            x_next = x_cur + (t_next - t_cur) * d_cur
        elif order == 2:
            x_next = x_cur + (t_next - t_cur) * (3 * d_cur - buffer[-1]) / 2
        elif order == 3:
            x_next = x_cur + (t_next - t_cur) * (23 * d_cur - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x_next = x_cur + (t_next - t_cur) * (55 * d_cur - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3]) / 24
        buffer = [*buffer, d_cur][-3:]
    return x_next / torch.sqrt(1 + sigmas[-1] ** 2)


@pytest.mark.parametrize("n_steps", [1, 3, 6, 20])
def test_ipndm_matches_the_authors_loop(n_steps, schedule):
    eps, x = ExactEps(gmm3d(), schedule), prior_draws(64)
    ts = timesteps(schedule, n_steps, "karras")
    torch.testing.assert_close(ipndm(eps, x, ts), authors_ipndm(eps, x, ts), rtol=0, atol=1e-10)


# Observed orders against dopri5 (median over 64 samples; see test_diffusion_solvers), each over the
# step counts where the error has reached its asymptotic slope:
# * UniPC-bh2 with a 2nd-order predictor: 3 (UniC adds one order; it also lifts the warm-start steps).
# * EDM Heun: 2, the last Euler step to σ = 0 being exact given x at the last level.
# * DPM-Solver++(3M) as published (authors' code, diffusers): 2.  Its D2 = (D1_0 - D1_1)/(r0 + r1)
#   estimates h²D''/2 while the weight (e^{-h} - 1 + h)/h² - ½ ≈ -h/6 belongs to h²D'': the local
#   error keeps an O(h³) term, so the order is 2 (slopes 2.5-2.8 up to 40 steps, then 1.8-1.9).
# * iPNDM as published: 2.  Its fixed Adams–Bashforth weights assume equal steps in ρ; on Karras
#   nodes consecutive steps differ by O(h²) relatively, which leaves an O(h³) local error.
ORDER_CASES = {
    "unipc": (unipc, "logSNR", 3, [20, 40, 80]),
    "edm-heun": (edm_heun, "karras", 2, [20, 40, 80]),
    "dpm-solver++-3m": (dpm_solver_pp_3m, "logSNR", 2, [40, 80, 160]),
    "ipndm": (ipndm, "karras", 2, [40, 80, 160]),
}


@pytest.mark.oracle
@pytest.mark.parametrize("name", ORDER_CASES)
def test_fast_solvers_converge_at_their_order_on_gmm3d(name, schedule, gmm_reference):  # noqa: F811
    solver, spacing, order, steps = ORDER_CASES[name]
    x, reference = gmm_reference
    eps = ExactEps(gmm3d(), schedule)
    if solver is edm_heun:  # it returns the data prediction at t = 1/T (σ = 0 in EDM's terms)
        t_end = torch.full((len(x),), schedule.t_min, dtype=F64)
        reference = (reference - schedule.sigma(t_end)[:, None] * eps(reference, t_end)) / schedule.alpha(t_end)[:, None]
    errors = [
        float((solver(eps, x, timesteps(schedule, n, spacing)) - reference).norm(dim=1).median()) for n in steps
    ]
    assert order - 0.2 < observed_order(steps, errors) < order + 0.4


@pytest.mark.parametrize(
    ("name", "nfe", "steps"),
    [("dpm-solver++-3m-1", 1, 1), ("dpm-solver++-3m-3", 3, 3), ("dpm-solver++-3m-10", 10, 10),
     ("unipc-1", 1, 1), ("unipc-4", 4, 4), ("unipc-10", 10, 10), ("ipndm-2", 2, 2), ("ipndm-5", 5, 5),
     ("ipndm-10", 10, 10), ("edm-heun-2", 2, 1), ("edm-heun-3", 3, 1), ("edm-heun-4", 4, 2),
     ("edm-heun-9", 9, 4), ("edm-heun-10", 10, 5)],
)
def test_counted_nfe_is_the_number_in_the_name(name, nfe, steps):
    sampler = FAMILIES[name.rsplit("-", 1)[0]].resolve(f"{name}@exact")
    assert sampler.n_steps == steps and sampler.expected_nfe(gmm3d()) == nfe
    sample = sampler.fit(gmm3d(), smoke_context())
    with count_evaluations() as counter:
        out = sample(50, torch.Generator().manual_seed(0))
    assert out.shape == (50, 3) and torch.isfinite(out).all()
    assert counter.calls == nfe and counter.rows == nfe * 50


def test_edm_heun_odd_nfe_ends_with_the_denoising_step(schedule):
    # NFE 2S - 1 = the 2S - 2 calls of S - 1 Heun steps, then D(x; σ_min) at t = 1/T.
    eps, x = ExactEps(gmm3d(), schedule), prior_draws(16)
    ts = timesteps(schedule, 4, "karras")
    heun = dpm_solver_heun(eps, x, ts)
    t_end = torch.full((16,), schedule.t_min, dtype=F64)
    denoised = (heun - schedule.sigma(t_end)[:, None] * eps(heun, t_end)) / schedule.alpha(t_end)[:, None]
    torch.testing.assert_close(edm_heun(eps, x, ts), denoised, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["edm-heun-1", "edm-heun-0", "unipc-0", "ipndm-0", "dpm-solver++-3m-0"])
def test_impossible_nfe_is_rejected(name):
    family = FAMILIES[name.rsplit("-", 1)[0]]
    with pytest.raises(ValueError, match=re.escape(f"{family.spec.prefix}-<nfe> takes nfe ≥")):
        family.resolve(name)


def test_new_families_are_registered_with_their_sweeps(plugin_manager):
    def check(registry: Registry) -> None:
        for prefix in NEW_FAMILIES:
            assert f"{prefix}-<nfe>[+uniform|+logsnr|+karras|+ld3][@exact|@paper-eps|@silu]" in registry.families
            assert registry.sampler(f"{prefix}-6@exact").expected_nfe(gmm3d()) == 6
            family = FAMILIES[prefix]
            assert {f"{prefix}-{n}@exact" for n in (3, 4, 5, 6, 8, 10)} <= set(family.sweep)
            for name in (*family.defaults, *family.sweep):
                assert sum(f.regex.fullmatch(name) is not None for f in FAMILIES.values()) == 1

    if plugin_manager.is_registered(diffusion_plugin):  # already a built-in
        check(Registry.from_plugin_manager(plugin_manager))
    else:
        with registered(plugin_manager, diffusion_plugin, "diffusion") as registry:
            check(registry)


def test_karras_nodes_are_uniform_in_sigma_to_the_one_over_rho(schedule):
    ts = timesteps(schedule, 9, "karras")
    values = torch.exp(-schedule.lambda_(ts) / 7)
    torch.testing.assert_close(values.diff(), values.diff().mean().expand(9), rtol=1e-8, atol=0)
    assert float(ts[0]) == 1.0 and float(ts[-1]) == schedule.t_min


def test_unipc_rejects_order_zero(schedule):
    with pytest.raises(ValueError, match="order"):
        unipc(ExactEps(gmm3d(), schedule), prior_draws(4), timesteps(schedule, 3), order=0)
