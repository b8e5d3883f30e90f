"""PINGS: exact ∂_t g, the fused MMD² against references, closed-form residuals, training and sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.cache import ModelCache
from bench.contracts import FitContext, Target
from bench.counting import count_evaluations
from bench.metrics import mmd2 as reference_mmd2
from bench.profiles import get_profile
from samplers.diffusion import DiscreteVPSchedule, ExactEps
from samplers.pings import (
    Budget,
    KernelBankMMD,
    PingsMLP,
    ProbabilityFlow,
    Recipe,
    ScoreGuidance,
    train_pings,
    value_and_time_derivative,
)
from samplers.pings.mmd import GaussianKernelBank
from samplers.pings.physics import flow_map_error
from samplers.pings.plugin import PINGS, PINGS_PF, PINGS_PF_DISTILL, PingsSampler
from samplers.pings.train import draw_batch, loss_terms, moment_loss
from targets.mixtures import GaussianMixture, gmm3d

TINY = Budget(steps=3, validate_every=1, validation_points=128)


pytestmark = pytest.mark.usefixtures("single_thread")


def make_ctx(seed: int = 0) -> FitContext:
    return FitContext(torch.device("cpu"), torch.float32, seed, get_profile("smoke"), ModelCache(None))


def naive_mmd2(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)):
    """Eq. 11 literally: one dense kernel matrix per block, autograd through everything."""

    def kernel(a, b):
        sq_dist = torch.cdist(a, b).square()
        return sum(torch.exp(-sq_dist / (2 * s**2)) for s in bandwidths)

    m, n = len(x), len(y)
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    return (
        (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
        + (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
        - 2 * kernel(x, y).mean()
    )


class NoScoreBlob(Target):
    """A target with sampling only: PINGS must fall back to score-free / the ε-net."""

    name = "blob"
    dim = 2

    def sample(self, n, generator, dtype=torch.float32):
        return 1.0 + 0.5 * torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)


class GaussianFlowMap(nn.Module):
    """Closed-form flow map of the VP probability-flow ODE for the target ``N(μ, s² I)``.

    The noised marginal is ``N(α μ, r² I)``, ``r² = α² s² + σ²``, and the ODE is linear, so
    ``x(τ) = α(τ) μ + r(τ)/r(1) (z - α(1) μ)``; PINGS time ``t`` maps to ``τ`` as in :class:`ProbabilityFlow`.
    """

    def __init__(self, mean, std, flow: ProbabilityFlow):
        super().__init__()
        self.mean, self.std, self.flow = mean, std, flow

    def forward(self, z, t):
        schedule = self.flow.schedule

        def alpha_and_radius(tau):
            alpha = schedule.alpha(tau)[:, None]
            return alpha, torch.sqrt(alpha**2 * self.std**2 + 1 - alpha**2)

        alpha, radius = alpha_and_radius(self.flow.diffusion_time(t))
        alpha_1, radius_1 = alpha_and_radius(torch.ones_like(t))
        return alpha * self.mean + radius / radius_1 * (z - alpha_1 * self.mean)


# --------------------------------------------------------------------------- ∂_t g


def test_time_derivative_is_the_full_jacobian_column_not_the_summed_scalar():
    torch.manual_seed(0)
    model = PingsMLP(3, hidden=32, depth=3).double()
    z = torch.randn(16, 3, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64)

    value, dg_dt = value_and_time_derivative(model, z, t)

    assert torch.allclose(value, model(z, t))
    # Oracle 1: reverse-mode, one component at a time (rows are independent).
    t_leaf = t.clone().requires_grad_(True)
    out = model(z, t_leaf)
    columns = [torch.autograd.grad(out[:, k].sum(), t_leaf, retain_graph=True)[0] for k in range(3)]
    assert torch.allclose(dg_dt, torch.stack(columns, 1), atol=1e-12)
    # Oracle 2: central finite differences.
    h = 1e-6
    finite = (model(z, t + h) - model(z, t - h)) / (2 * h)
    assert torch.allclose(dg_dt, finite, atol=1e-7)
    # The public code's autograd.grad(g, t, ones) is the row sum, not the vector.
    (summed,) = torch.autograd.grad(out, t_leaf, torch.ones_like(out))
    assert torch.allclose(dg_dt.sum(1), summed, atol=1e-12)
    assert not torch.allclose(dg_dt, summed[:, None].expand(-1, 3), atol=1e-3)


def test_time_derivative_carries_parameter_gradients():
    torch.manual_seed(1)
    model = PingsMLP(2, hidden=16, depth=2).double()
    z, t = torch.randn(8, 2, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    _, dg_dt = value_and_time_derivative(model, z, t)
    grads = torch.autograd.grad(dg_dt.square().sum(), model.layers[0].weight)
    t_leaf = t.clone().requires_grad_(True)
    out = model(z, t_leaf)
    cols = [torch.autograd.grad(out[:, k].sum(), t_leaf, create_graph=True)[0] for k in range(2)]
    expected = torch.autograd.grad(torch.stack(cols, 1).square().sum(), model.layers[0].weight)
    assert torch.allclose(grads[0], expected[0], atol=1e-12)


# --------------------------------------------------------------------------- MMD²


def test_kernel_bank_shares_exponentials_and_matches_direct_sum():
    bank = GaussianKernelBank()
    assert sum(source is None for source, _ in bank.plan) == 2  # rates 1/8, 1/2, 2, 12.5, 50
    sq_dist = torch.linspace(0, 60, 1001, dtype=torch.float64)
    kernel, slope = bank(sq_dist, slope=True)
    rates = [0.5 / s**2 for s in (0.1, 0.2, 0.5, 1.0, 2.0)]
    assert torch.allclose(kernel, sum(torch.exp(-r * sq_dist) for r in rates), rtol=1e-12, atol=1e-30)
    assert torch.allclose(slope, sum(r * torch.exp(-r * sq_dist) for r in rates), rtol=1e-12, atol=1e-30)


@pytest.mark.parametrize("m, n", [(700, 300), (300, 1100)])
def test_training_mmd_equals_reference_mmd(m, n):
    generator = torch.Generator().manual_seed(2)
    target = gmm3d()
    x = 1.2 * target.sample(m, generator) + 0.3
    y = target.sample(n, generator)
    value = KernelBankMMD(chunk=256)(x, y)
    assert value.item() == pytest.approx(reference_mmd2(x, y), rel=1e-5, abs=1e-7)
    assert value.item() == pytest.approx(naive_mmd2(x.double(), y.double()).item(), rel=1e-5, abs=1e-7)


def test_training_mmd_gradient_equals_autograd_of_naive_formula():
    generator = torch.Generator().manual_seed(3)
    target = gmm3d()
    x = (0.9 * target.sample(600, generator, dtype=torch.float64)).requires_grad_(True)
    y = target.sample(500, generator, dtype=torch.float64)
    (fused,) = torch.autograd.grad(KernelBankMMD(chunk=256)(x, y), x)
    (naive,) = torch.autograd.grad(naive_mmd2(x, y), x)
    assert torch.allclose(fused, naive, rtol=1e-9, atol=1e-14)


def test_training_mmd_has_no_gradient_through_target_block():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, 2, generator=generator, requires_grad=True)
    y = torch.randn(64, 2, generator=generator, requires_grad=True)
    value = KernelBankMMD()(x, y)
    assert value.requires_grad
    (grad_y,) = torch.autograd.grad(value, y, allow_unused=True)
    assert grad_y is None


# --------------------------------------------------------------------------- loss terms and residuals


class IdentityMap(nn.Module):
    def forward(self, z, t):
        return z + 0.0 * t[:, None]


def test_identity_map_satisfies_boundary_and_score_free_residual():
    target = gmm3d()
    batch = draw_batch(target, 256, torch.Generator().manual_seed(5), torch.float32)
    terms = loss_terms(IdentityMap(), ScoreGuidance(None, 1.0, 1.0), KernelBankMMD(), batch)
    assert terms["bc"].item() == 0.0
    assert terms["phys"].item() == 0.0
    assert terms["mmd"].item() + KernelBankMMD().target_term(batch["y"]).item() > 0.05  # N(0, I) is not gmm3d
    assert terms["mom"].item() > 1.0


def test_moment_loss_closed_form():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert moment_loss(x, x).item() == 0.0
    # Shift by (1, 0): mean error 1.  Scale by 2: mean (1, 1) → (2, 2), each variance 4/3 → 16/3.
    assert moment_loss(x + torch.tensor([1.0, 0.0]), x).item() == pytest.approx(1.0)
    assert moment_loss(2 * x, x).item() == pytest.approx(2.0 + 2 * (16 / 3 - 4 / 3) ** 2)


def test_score_guidance_is_paper_eq7():
    target = gmm3d()
    x = target.sample(32, torch.Generator().manual_seed(6))
    t = torch.linspace(0, 1, 32)
    guidance = ScoreGuidance(target.score, alpha_scale=1.5, alpha_power=2.0)
    assert torch.allclose(guidance(x, t), 1.5 * (1 - t)[:, None] ** 2 * target.score(x))
    assert torch.equal(guidance(x, torch.ones(32)), torch.zeros_like(x))  # α(1) = 0


def test_probability_flow_residual_vanishes_on_closed_form_gaussian_flow_map():
    mean, std = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.7
    target = GaussianMixture("gauss", [1.0], [mean.tolist()], [[std, std]])
    schedule = DiscreteVPSchedule()
    flow = ProbabilityFlow(ExactEps(target, schedule), schedule)
    exact_map = GaussianFlowMap(mean, std, flow)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    t = torch.rand(64, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    x_t, dx_dt = value_and_time_derivative(exact_map, z, t)
    assert torch.allclose(dx_dt, flow(x_t, t), atol=1e-9)
    assert torch.allclose(exact_map(z, torch.ones_like(t)), z)
    # The other map (paper eq. 7 with the data score) is not satisfied by the flow map.
    assert not torch.allclose(dx_dt, ScoreGuidance(target.score, 1.0, 1.0)(x_t, t), atol=1e-2)


def test_probability_flow_of_standard_normal_is_at_rest():
    target = GaussianMixture("normal", [1.0], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    flow = ProbabilityFlow(ExactEps(target), DiscreteVPSchedule())
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.allclose(flow(x, torch.rand(32, dtype=torch.float64)), torch.zeros_like(x), atol=1e-10)


def test_probability_flow_solve_reaches_the_closed_form_endpoint():
    mean, std = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.7
    target = GaussianMixture("gauss", [1.0], [mean.tolist()], [[std, std]])
    schedule = DiscreteVPSchedule()
    flow = ProbabilityFlow(ExactEps(target, schedule), schedule)
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    exact = GaussianFlowMap(mean, std, flow)(z, torch.zeros(256, dtype=torch.float64))
    errors = [float((flow.solve(z, nfe) - exact).abs().max()) for nfe in (100, 200)]
    assert errors[0] < 2e-3
    assert 3.0 < errors[0] / errors[1] < 5.0  # second order: halving the step quarters the error


@pytest.mark.oracle
def test_flow_map_error_is_zero_for_exact_flow_map_and_detects_a_wrong_one():
    pytest.importorskip("torchdiffeq")
    mean, std = torch.tensor([0.5, -1.0]), 0.7
    target = GaussianMixture("gauss", [1.0], [mean.tolist()], [[std, std]])
    schedule = DiscreteVPSchedule()
    flow = ProbabilityFlow(ExactEps(target, schedule), schedule)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(10))
    assert flow_map_error(GaussianFlowMap(mean, std, flow), flow, z) < 2e-3
    assert flow_map_error(IdentityMap(), flow, z) > 0.3


# --------------------------------------------------------------------------- training and sampling


def test_smoke_training_decreases_validation_mmd():
    target, ctx = gmm3d(), make_ctx()
    recipe = Recipe(batch=256)
    model = recipe.build(target.dim)
    velocity = ScoreGuidance(target.score, 1.0, 1.0)
    info = train_pings(model, target, velocity, ctx, recipe, Budget(steps=80, validate_every=10, validation_points=512))
    history = info["history"]
    assert history["step"] == list(range(10, 81, 10))
    assert set(history) == {"step", "loss", "bc", "mmd", "mom", "phys", "val_mmd"}
    assert all(len(v) == 8 for v in history.values())
    assert info["best_val_mmd"] == min(history["val_mmd"]) < 0.75 * history["val_mmd"][0]
    # The returned weights are the best validated ones.
    assert info["best_step"] == history["step"][history["val_mmd"].index(info["best_val_mmd"])]


def test_early_stopping_on_validation_mmd():
    target, ctx = gmm3d(), make_ctx()
    recipe = Recipe(batch=64, lr=0.0, patience=4)  # nothing improves after the first check
    info = train_pings(
        recipe.build(target.dim), target, ScoreGuidance(None, 1.0, 1.0), ctx, recipe, Budget(50, 2, 128)
    )
    assert info["best_step"] == 2 and info["stopped_at"] == 6


def test_a_budget_patience_overrides_the_recipes():
    target, ctx = gmm3d(), make_ctx()
    recipe = Recipe(batch=64, lr=0.0)  # the recipe's patience (3000) would never stop 50 steps
    info = train_pings(recipe.build(target.dim), target, ScoreGuidance(None, 1.0, 1.0), ctx, recipe,
                       Budget(50, 2, 128, patience=4))
    assert info["best_step"] == 2 and info["stopped_at"] == 6
    # A budget without its own patience keeps the cache key it had before budgets could have one.
    assert Budget(50, 2, 128).config() == {"steps": 50, "validate_every": 2, "validation_points": 128}
    assert Budget(50, 2, 128, patience=4).config()["patience"] == 4


def test_diverged_training_fails_instead_of_returning_the_start_weights():
    """A run whose loss is not finite (here: a score that returns NaN) must raise, not keep step-0 weights."""
    target, ctx = gmm3d(), make_ctx()
    recipe = Recipe(batch=64)
    nan_score = lambda x: torch.full_like(x, math.nan)  # noqa: E731
    with pytest.raises(FloatingPointError, match="diverged.*step 2"):
        train_pings(recipe.build(target.dim), target, ScoreGuidance(nan_score, 1.0, 1.0), ctx, recipe,
                    Budget(10, 2, 128))


def _fit_tiny(seed: int, sampler_recipe: Recipe = Recipe(batch=128)):
    sampler = PingsSampler("pings-tiny", "", sampler_recipe, {"smoke": TINY})
    ctx = make_ctx(seed)
    return sampler.fit(gmm3d(), ctx), ctx


def test_sampling_is_one_network_call():
    sample, ctx = _fit_tiny(0)
    with torch.inference_mode(), count_evaluations() as counter:
        x = sample(500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 3)
    assert counter.calls == 1 and counter.nfe_per_sample(500) == 1.0
    assert ctx.artifacts["score"] == "exact"
    assert ctx.models[0]["kind"] == "pings" and len(ctx.models[0]["history"]["val_mmd"]) == TINY.steps


def test_training_and_sampling_are_deterministic_in_the_seed():
    first, _ = _fit_tiny(0)
    again, _ = _fit_tiny(0)
    other, _ = _fit_tiny(1)
    draw = lambda sample: sample(64, torch.Generator().manual_seed(5))  # noqa: E731
    with torch.inference_mode():
        assert torch.equal(draw(first), draw(again))
        assert not torch.allclose(draw(first), draw(other))


def test_distillation_pairs_anchor_the_endpoint_and_need_the_flow():
    target, ctx = gmm3d(), make_ctx()
    recipe = Recipe(physics="probability-flow", batch=64, distill_pairs=256, distill_nfe=10, distill_weight=4.0)
    flow, _ = PINGS_PF_DISTILL.velocity(target, ctx)
    info = train_pings(recipe.build(3), target, flow, ctx, recipe, Budget(4, 2, 128))
    assert set(info["history"]) == {"step", "loss", "bc", "mmd", "mom", "phys", "pair", "val_mmd"}
    assert info["history"]["pair"][0] > 0
    with pytest.raises(ValueError, match="probability-flow"):
        train_pings(recipe.build(3), target, ScoreGuidance(None, 1.0, 1.0), ctx, recipe, Budget(4, 2, 128))


def test_pair_term_is_the_squared_endpoint_error():
    target = gmm3d()
    batch = draw_batch(target, 128, torch.Generator().manual_seed(12), torch.float32)
    batch["x_pair"] = batch["z_data"] + torch.tensor([1.0, 2.0, 0.0])
    terms = loss_terms(IdentityMap(), ScoreGuidance(None, 1.0, 1.0), KernelBankMMD(), batch)
    assert terms["pair"].item() == pytest.approx(5.0)


def test_paper_recipe_is_the_published_one():
    recipe = PINGS.recipe
    assert (recipe.physics, recipe.weights) == ("score", (1.0, 2.0, 0.1, 0.5))
    assert (recipe.alpha_scale, recipe.alpha_power) == (1.0, 1.0)
    assert (recipe.hidden, recipe.depth, recipe.batch, recipe.lr, recipe.distill_pairs) == (128, 6, 2048, 1e-3, 0)
    assert (recipe.lr_schedule, recipe.lr_decay, recipe.lr_decay_every, recipe.patience) == ("step", 0.999, 1000, 3000)
    assert PINGS.budgets["paper"].steps == 20_000
    model = recipe.build(3)
    assert [layer.in_features for layer in model.layers] == [4] + [128] * 5 and model.output.out_features == 3
    assert all(float(layer.bias.detach().abs().max()) == 0.0 for layer in model.layers)
    # Xavier-normal: weight std ≈ √(2 / (fan_in + fan_out)).
    assert float(model.layers[1].weight.detach().std()) == pytest.approx(math.sqrt(2 / 256), rel=0.05)


def test_score_free_fallback_without_a_score():
    target, ctx = NoScoreBlob(), make_ctx()
    velocity, source = PINGS.velocity(target, ctx)
    assert source == "none"
    x, t = torch.randn(8, 2), torch.rand(8)
    assert torch.equal(velocity(x, t), torch.zeros_like(x))
    sampler = PingsSampler("pings-tiny", "", Recipe(batch=64), {"smoke": TINY})
    sample = sampler.fit(target, ctx)
    with torch.inference_mode():
        assert sample(32, torch.Generator().manual_seed(0)).shape == (32, 2)
    assert ctx.artifacts["score"] == "none"


@pytest.mark.oracle
def test_probability_flow_fit_reports_flow_map_error():
    pytest.importorskip("torchdiffeq")
    sampler = PingsSampler("pings-pf-tiny", "", Recipe(physics="probability-flow", batch=128), {"smoke": TINY})
    ctx = make_ctx()
    sampler.fit(gmm3d(), ctx)
    assert ctx.artifacts["score"] == "exact"
    assert 0.1 < ctx.artifacts["flow_map_rmse"] < 10.0  # 3 steps: far from the flow map, but finite


def test_probability_flow_uses_exact_score_or_shared_denoiser():
    ctx = make_ctx()
    flow, source = PINGS_PF.velocity(gmm3d(), ctx)
    assert source == "exact" and isinstance(flow.eps_model, ExactEps)
    flow, source = PINGS_PF.velocity(NoScoreBlob(), ctx)
    assert source == "denoiser" and ctx.models[-1]["kind"] == "denoiser"
