"""Consistency models (issue 16): the boundary condition, the exact consistency function of a Gaussian,
sampling with it, the distillation loss at the optimum, and the family's names and NFE."""

from __future__ import annotations

import pytest
import torch

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.counting import count_evaluations
from bench.profiles import get_profile
from samplers.consistency.model import ConsistencyNet, GaussianConsistency
from samplers.consistency.plugin import ConsistencyFamily
from samplers.consistency.sample import consistency_sample, step_times
from samplers.consistency import train as consistency_train
from samplers.consistency.train import Recipe, consistency_loss, noise_levels
from samplers.diffusion import DiscreteVPSchedule, ExactEps, dpm_solver_pp_2m, timesteps
from targets.mixtures import GaussianMixture, gmm3d

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("single_thread")

MEAN, STD = torch.tensor([0.8, -0.5], dtype=F64), torch.tensor([0.5, 1.6], dtype=F64)


def gaussian() -> GaussianMixture:
    return GaussianMixture("gauss", [1.0], [MEAN.tolist()], [STD.tolist()])


@pytest.mark.parametrize("skip", [True, False])
def test_the_network_is_the_identity_at_the_boundary_whatever_its_weights(skip):
    schedule = DiscreteVPSchedule()
    torch.manual_seed(0)
    net = ConsistencyNet(2, schedule, hidden=16, depth=2, emb_dim=8, skip=skip).double()
    net.data_mean.copy_(MEAN)
    net.data_std.copy_(STD)
    x = torch.randn(50, 2, dtype=F64)
    with torch.no_grad():
        gap = float((net(x, torch.full((50,), schedule.t_min, dtype=F64)) - x).abs().max())
    if skip:
        assert gap < 1e-12
    else:  # without the skip parametrization nothing enforces it
        assert gap > 1e-2


def test_the_gaussian_consistency_function_is_the_probability_flow_map():
    # A second-order solve of the exact probability-flow ODE converges to f at second order.
    schedule, target = DiscreteVPSchedule(), gaussian()
    exact = GaussianConsistency(MEAN, STD, schedule)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=F64) * 1.5
    for t_start in (1.0, 0.3):
        mapped = exact(x, torch.full((200,), t_start, dtype=F64))
        errors = [float((dpm_solver_pp_2m(ExactEps(target, schedule), x, timesteps(schedule, n, "logSNR",
                                                                                   t_start=t_start))
                         - mapped).abs().max()) for n in (400, 1600)]
        assert errors[1] < errors[0] / 8 and errors[1] < 1e-4, errors


@pytest.mark.parametrize("steps", [1, 2])
def test_sampling_with_the_exact_consistency_function_reproduces_the_target(steps):
    schedule = DiscreteVPSchedule()
    exact = GaussianConsistency(MEAN, STD, schedule)
    n, gen = 400_000, torch.Generator().manual_seed(2)
    times = step_times(exact, steps)
    prior_mean, prior_std = exact.marginal(torch.tensor([times[0]], dtype=F64))
    z = prior_mean + prior_std * torch.randn(n, 2, generator=gen, dtype=F64)  # the exact x_T marginal
    x = consistency_sample(exact, z, times, gen)
    mean, std = exact.marginal(torch.tensor([schedule.t_min], dtype=F64))  # ≈ the target: α_min ≈ 1, σ_min = 0.01
    standard_error = std[0] / n**0.5
    assert float(((x.mean(0) - mean[0]) / standard_error).abs().max()) < 4
    assert float(((x.std(0) / std[0] - 1) / (0.5 ** 0.5 / n**0.5)).abs().max()) < 4
    skewed = consistency_sample(exact, 1.1 * z, times, gen)  # the check can fail: a 10% wider prior
    assert float(((skewed.std(0) / std[0] - 1) / (0.5 ** 0.5 / n**0.5)).abs().max()) > 20


def test_distillation_loss_vanishes_at_the_exact_function_with_the_teachers_order():
    # At the exact f the loss is the teacher step's squared local error: O(h⁶) for Heun, O(h⁴) for Euler.
    schedule, target = DiscreteVPSchedule(), gaussian()
    exact, teacher = GaussianConsistency(MEAN, STD, schedule), ExactEps(target, schedule)
    gen = torch.Generator().manual_seed(3)
    n = 4096
    x0 = target.sample(n, gen, dtype=F64)
    noise = torch.randn(n, 2, generator=gen, dtype=F64)
    position = torch.rand(n, generator=gen, dtype=F64)  # the same noise levels at both resolutions
    losses = {}
    for intervals in (17, 34):
        _, times = noise_levels(schedule, intervals, x0)
        index = (position * intervals).long()
        for solver in ("heun", "euler"):
            recipe = Recipe(loss="l2", teacher_solver=solver)
            losses[solver, intervals] = float(consistency_loss(exact, exact, teacher, x0, noise, index, times, recipe))
    assert losses["heun", 34] < losses["heun", 17] / 32
    assert losses["euler", 34] < losses["euler", 17] / 8
    shifted = GaussianConsistency(MEAN + 0.05, STD, schedule)
    off = float(consistency_loss(shifted, exact, teacher, x0, noise, index, times, Recipe(loss="l2")))
    assert losses["heun", 34] < off / 1000


def test_family_names_steps_and_counts_one_call_per_step(monkeypatch):
    monkeypatch.setitem(consistency_train.CONSISTENCY_BUDGETS, "smoke", {"steps": 10, "batch": 64})
    family = ConsistencyFamily()
    with pytest.raises(ValueError, match="1 or 2"):
        family.resolve("consistency-3")
    assert family.regex.fullmatch("consistency-1@silu") is None
    sampler = family.resolve("consistency-2@exact")
    assert (sampler.steps, sampler.teacher, sampler.expected_nfe(gmm3d())) == (2, "exact", 2.0)
    ctx = FitContext(torch.device("cpu"), torch.float32, 0, get_profile("smoke"), ModelCache(None))
    sample = sampler.fit(gmm3d(), ctx)
    assert [m["kind"] for m in ctx.models] == ["consistency-exact"]
    with count_evaluations() as counter:
        x = sample(50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 3) and torch.isfinite(x).all()
    assert (counter.calls, counter.rows) == (2, 100)
    one = family.resolve("consistency-1@exact").fit(gmm3d(), ctx)  # the same model, from memory
    assert ctx.models[-1]["source"] == "memory" and one(10, torch.Generator()).shape == (10, 3)
