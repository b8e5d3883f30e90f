"""Diffusion parametrizations (ε, x₀, v), EDM preconditioning and the ε adapter (issue 16).

Closed forms: exact predictors of every parametrization drive every solver to the same
output; the preconditioned net's regression target has unit variance; on a Gaussian target
(whose optimal denoiser is linear in ``x_t``) the loss at the optimum is the analytic
minimum, and short training reaches it.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.counting import count_evaluations
from bench.profiles import get_profile
from samplers.diffusion.model import (
    PREDICTIONS,
    Denoiser,
    DenoiserConfig,
    EpsAdapter,
    ExactEps,
    ExactPrediction,
    denoising_loss,
    eps_to_prediction,
    preconditioning,
)
from samplers.diffusion.plugin import DiffusionSolverFamily, SPECS
from samplers.diffusion.sample import ddim, dpm_solver_pp_2m, unipc
from samplers.diffusion.schedule import DiscreteVPSchedule, timesteps
from samplers.diffusion.train import train_denoiser
from targets.mixtures import GaussianMixture, gmm3d

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")

#: Standardised units other than the identity, so the adapter's μ and s are exercised.
MEAN, STD = torch.tensor([0.3, -1.0, 0.5], dtype=F64), torch.tensor([1.7, 0.4, 1.1], dtype=F64)


def gaussian(dim: int = 2) -> GaussianMixture:
    """``N(m, diag(c²))``: a one-component mixture, whose noised score is closed-form."""
    return GaussianMixture("gauss", [1.0], [[0.8, -0.5][:dim]], [[0.5, 1.6][:dim]])


@pytest.mark.parametrize("solver", [ddim, dpm_solver_pp_2m, unipc])
@pytest.mark.parametrize("units", ["identity", "standardised"])
def test_exact_predictors_of_every_parametrization_give_the_same_solver_output(solver, units):
    target, schedule = gmm3d(), DiscreteVPSchedule()
    mean, std = (MEAN, STD) if units == "standardised" else (None, None)
    x_T = torch.randn(256, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = timesteps(schedule, 12, "logSNR")
    reference = solver(ExactEps(target, schedule), x_T, ts)
    for prediction in PREDICTIONS:
        exact = ExactPrediction(target, prediction, schedule, mean, std)
        out = solver(EpsAdapter(exact, prediction, schedule, mean, std), x_T, ts)
        assert float((out - reference).abs().max()) < 1e-10, prediction
    # The check can fail: x₀ predicted in one set of units, read in another.
    wrong = EpsAdapter(ExactPrediction(target, "x0", schedule, MEAN, STD), "x0", schedule, MEAN, 2 * STD)
    assert float((solver(wrong, x_T, ts) - reference).abs().max()) > 1e-2


def test_an_adapted_predictor_is_one_network_evaluation():
    for prediction in PREDICTIONS:
        adapter = EpsAdapter(ExactPrediction(gmm3d(), prediction), prediction, DiscreteVPSchedule())
        with count_evaluations() as counter:
            adapter(torch.randn(9, 3), torch.full((9,), 0.4))
        assert (counter.calls, counter.rows) == (1, 9)
    net = Denoiser(3, DiscreteVPSchedule(), DenoiserConfig(prediction="v", precondition="edm"))
    with count_evaluations() as counter:
        net(torch.randn(9, 3), torch.full((9,), 0.4))
    assert (counter.calls, counter.rows) == (1, 9)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_edm_preconditioning_makes_the_net_target_unit_variance_and_uncorrelated(prediction):
    # Data with exactly the mean and std of the standardisation: F* = (T - c_skip r)/c_out is the
    # residual of T's regression on r = x_t - αμ, scaled to unit variance (Karras et al. App. B.6).
    schedule, n = DiscreteVPSchedule(), 100_000
    gen = torch.Generator().manual_seed(1)
    tolerance = 5 / n**0.5  # five standard errors of a unit-variance mean
    for t in (0.002, 0.1, 0.5, 1.0):
        x0 = MEAN + STD * torch.randn(n, 3, generator=gen, dtype=F64)
        noise = torch.randn(n, 3, generator=gen, dtype=F64)
        tt = torch.full((n,), t, dtype=F64)
        alpha, sigma = schedule.alpha(tt)[:, None], schedule.sigma(tt)[:, None]
        x_t = alpha * x0 + sigma * noise
        c_in, c_skip, c_out = preconditioning(prediction, "edm", alpha, sigma, STD)
        residual = x_t - alpha * MEAN
        truth = eps_to_prediction(prediction, noise, x_t, alpha, sigma, MEAN, STD)
        net_target = (truth - c_skip * residual) / c_out
        torch.testing.assert_close(net_target.var(0), torch.ones(3, dtype=F64), rtol=0, atol=3 * tolerance)
        assert float((net_target * c_in * residual).mean(0).abs().max()) < tolerance
        torch.testing.assert_close((c_in * residual).var(0), torch.ones(3, dtype=F64), rtol=0, atol=3 * tolerance)


def analytic_minimum(config: DenoiserConfig, target: GaussianMixture, mean: torch.Tensor, std: torch.Tensor) -> float:
    """``E_i mean_d Var(T | x_t)/c_out²`` for a Gaussian ``N(m, c²)`` target, ``i ~ U{1..T}`` (closed form).

    ``Var(x_0 | x_t) = c²σ²/(α²c² + σ²)``; ``ε = (x_t - αx_0)/σ``, ``y_0 = (x_0 - μ)/s`` and
    ``v = αε - σy_0`` are affine in ``x_0`` given ``x_t`` with slopes ``-α/σ``, ``1/s`` and
    ``-(α²/σ + σ/s)``, so their conditional variances are the slopes² times it.
    """
    schedule = DiscreteVPSchedule()
    t = torch.arange(1, schedule.T + 1, dtype=F64)[:, None] / schedule.T
    alpha, sigma = schedule.alpha(t[:, 0])[:, None], schedule.sigma(t[:, 0])[:, None]
    c2 = target.stds[0].square()
    posterior = c2 * sigma.square() / (alpha.square() * c2 + sigma.square())
    slope = {"eps": -alpha / sigma, "x0": 1 / std, "v": -(alpha.square() / sigma + sigma / std)}[config.prediction]
    _, _, c_out = preconditioning(config.prediction, config.precondition, alpha, sigma, std)
    return float((slope.square() * posterior / c_out.square()).mean())


CONFIGS = [DenoiserConfig(prediction=p, precondition=c, standardize=s)
           for p, c, s in itertools.product(PREDICTIONS, ("none", "edm"), (False, True))]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label)
def test_the_loss_at_the_exact_optimum_is_its_closed_form_minimum(config):
    target, schedule, n = gaussian(), DiscreteVPSchedule(), 200_000
    mean, std = (MEAN[:2], STD[:2]) if config.standardize else (torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))
    gen = torch.Generator().manual_seed(2)
    x0 = target.sample(n, gen, dtype=F64)
    t = torch.randint(1, schedule.T + 1, (n,), generator=gen).to(F64) / schedule.T
    noise = torch.randn(n, 2, generator=gen, dtype=F64)
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    x_t = alpha * x0 + sigma * noise
    optimum = ExactPrediction(target, config.prediction, schedule, mean, std)(x_t, t)
    minimum = analytic_minimum(config, target, mean, std)
    loss = float(denoising_loss(config, optimum, x_t, noise, alpha, sigma, mean, std))
    _, _, c_out = preconditioning(config.prediction, config.precondition, alpha, sigma, std)
    per_value = ((optimum - eps_to_prediction(config.prediction, noise, x_t, alpha, sigma, mean, std)) / c_out)
    standard_error = float(per_value.square().std()) / per_value.numel() ** 0.5
    assert abs(loss - minimum) < 4 * standard_error
    # The optimum is the conditional mean: its error averages to zero, so a prediction shifted by
    # 0.1 c_out costs 0.01 more (up to the sampled mean error, itself within its standard error).
    error_mean = float(per_value.mean())
    assert abs(error_mean) < 4 * float(per_value.std()) / per_value.numel() ** 0.5
    shifted = float(denoising_loss(config, optimum + 0.1 * c_out, x_t, noise, alpha, sigma, mean, std))
    assert shifted - loss == pytest.approx(0.01 + 0.2 * error_mean, rel=1e-6)


SMALL = [DenoiserConfig(prediction=p, precondition=c, standardize=True, activation="silu", hidden=32, depth=2,
                        emb_dim=16) for p, c in (("eps", "none"), ("x0", "none"), ("v", "none"), ("v", "edm"))]


@pytest.mark.parametrize("small", SMALL, ids=lambda c: c.label)
def test_training_reaches_the_closed_form_minimum_on_a_gaussian(small):
    target = gaussian(dim=1)
    ctx = FitContext(torch.device("cpu"), torch.float32, 0, get_profile("smoke"), ModelCache(None))
    torch.manual_seed(0)
    net = Denoiser(1, DiscreteVPSchedule(), small)
    train_denoiser(net, target, ctx, steps=400, batch=512)
    minimum = analytic_minimum(small, target, net.data_mean.double(), net.data_std.double())
    schedule, n = net.schedule, 200_000
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(1, schedule.T + 1, (n,), generator=gen).float() / schedule.T
    noise = torch.randn(n, 1, generator=gen)
    x_t = schedule.alpha(t)[:, None] * target.sample(n, gen) + schedule.sigma(t)[:, None] * noise
    with torch.no_grad():
        loss = float(net.loss(x_t, t, noise))
    assert 0.97 * minimum < loss < 1.05 * minimum


def test_variant_grammar_names_the_paper_eps_net_and_keeps_silu():
    family = DiffusionSolverFamily(SPECS[0])
    assert family.pattern == "ddim-<steps>[+uniform|+logsnr|+karras|+ld3][@exact|@paper-eps|@silu]"
    variants = {name: family.resolve(name).variant for name in ("ddim-8", "ddim-8@paper-eps", "ddim-8@silu",
                                                                "ddim-8+karras@paper-eps", "ddim-8@exact")}
    assert variants == {"ddim-8": "", "ddim-8@paper-eps": "paper-eps", "ddim-8@silu": "silu",
                        "ddim-8+karras@paper-eps": "paper-eps", "ddim-8@exact": "exact"}
    assert family.regex.fullmatch("ddim-8@eps") is None and family.regex.fullmatch("ddim-8@paper") is None


def test_default_rows_train_the_denoiser_and_paper_eps_the_papers_net(tmp_path):
    family = DiffusionSolverFamily(SPECS[0])
    kinds = {}
    for name in ("ddim-2", "ddim-2@paper-eps"):
        ctx = FitContext(torch.device("cpu"), torch.float32, 0, get_profile("smoke"), ModelCache(tmp_path))
        family.resolve(name).fit(gmm3d(), ctx)
        kinds[name] = [m["kind"] for m in ctx.models]
    assert kinds == {"ddim-2": ["denoiser"], "ddim-2@paper-eps": ["epsnet"]}
