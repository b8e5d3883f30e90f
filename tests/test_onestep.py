"""MeanFlow and PIDDM-style distillation: the MeanFlow identity, teacher pairs, physics loss, NFE."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.cache import ModelCache
from bench.contracts import FitContext, UnsupportedTarget
from bench.counting import count_evaluations
from bench.profiles import get_profile
from samplers.diffusion import ExactEps, get_denoiser, get_epsnet
from samplers.distill.plugin import DistilledSampler, OdeDistilledSampler
from samplers.distill.train import distillation_pairs, oscillator_residual_loss, teacher_pairs, weights_digest
from samplers.meanflow.plugin import MeanFlowFamily
from samplers.meanflow.sample import meanflow_jumps
from samplers.meanflow.train import meanflow_target
from targets.dho import DampedOscillator
from targets.mixtures import GaussianMixture, gmm3d

# torch's forward-mode AD (MeanFlow's JVP) scripts its decompositions on first use.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

MU = torch.tensor([1.5, -0.5], dtype=torch.float64)
STD = torch.tensor([0.3, 2.0], dtype=torch.float64)


def _variance(t):
    return (1 - t) ** 2 * STD**2 + t**2


def _marginal_velocity(x, t):
    """``E[z - x_0 | x_t = x]`` on the straight path from ``N(MU, diag STD²)`` (t = 0) to ``N(0, I)``."""
    return (t - (1 - t) * STD**2) / _variance(t) * (x - (1 - t) * MU) - MU


class GaussianAverageVelocity(nn.Module):
    """Exact ``u(x, r, t) = (x - φ_r(φ_t⁻¹(x)))/(t - r)`` of that flow, called as ``net(x, t, t - r)``.

    The flow is affine, ``φ_t(z) = (1-t) μ + √V_t z``; at ``r = t`` the limit is the velocity.
    """

    def forward(self, x, t, gap):
        r = t - gap
        standardised = (x - (1 - t) * MU) / _variance(t).sqrt()
        x_r = (1 - r) * MU + _variance(r).sqrt() * standardised
        safe_gap = torch.where(gap > 0, gap, torch.ones_like(gap))
        return torch.where(gap > 0, (x - x_r) / safe_gap, _marginal_velocity(x, t))


def _ctx(seed: int = 0) -> FitContext:
    return FitContext(torch.device("cpu"), torch.float32, seed, get_profile("smoke"), ModelCache(None))


@pytest.fixture(scope="module")
def ctx() -> FitContext:
    """One smoke-budget context per module, so the teacher ε-net is trained once for all tests."""
    return _ctx()


def test_exact_average_velocity_is_the_fixed_point_of_the_meanflow_target():
    g = torch.Generator().manual_seed(0)
    n = 1000
    t = torch.rand(n, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    r = t * torch.rand(n, 1, generator=g, dtype=torch.float64)
    r[: n // 4] = t[: n // 4]  # r = t reduces to flow matching
    x_t = (1 - t) * MU + _variance(t).sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    u, target = meanflow_target(GaussianAverageVelocity(), x_t, _marginal_velocity(x_t, t), r, t)
    torch.testing.assert_close(target, u, rtol=1e-9, atol=1e-9)
    # A wrong tangent (the velocity off by a constant) must break the identity.
    _, wrong = meanflow_target(GaussianAverageVelocity(), x_t, _marginal_velocity(x_t, t) + 0.1, r, t)
    assert float((wrong - u).abs().max()) > 1e-2


@pytest.mark.parametrize("steps", [1, 3])
def test_jumps_of_the_exact_average_velocity_are_exact(steps):
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    class Net(GaussianAverageVelocity):
        def forward(self, x, t, gap):
            shape = (len(x), 1)
            return super().forward(x, torch.full(shape, t, dtype=x.dtype), torch.full(shape, gap, dtype=x.dtype))

    with count_evaluations() as counter:
        x = meanflow_jumps(Net(), z, steps)
    torch.testing.assert_close(x, MU + STD * z)
    assert counter.calls == steps


def test_meanflow_nfe_is_the_number_of_jumps(ctx):
    target, family = gmm3d(), MeanFlowFamily()
    first = len(ctx.models)
    for steps in (1, 2):
        sample = family.resolve(f"meanflow-{steps}").fit(target, ctx)
        with count_evaluations() as counter:
            x = sample(400, torch.Generator().manual_seed(0))
        assert x.shape == (400, 3) and bool(torch.isfinite(x).all())
        assert counter.nfe_per_sample(400) == steps
    assert [(m["kind"], m["source"]) for m in ctx.models[first:]] == [("meanflow", "trained"), ("meanflow", "memory")]


def test_teacher_pairs_solve_the_probability_flow_ode():
    # For a Gaussian target the VP probability-flow map is affine: the standardised
    # state is constant, so x_0 = μ + s (x_T - α_1 μ) / √(α_1² s² + σ_1²).
    mean, std = [1.0, -2.0, 0.5], [0.5, 0.8, 0.3]
    target = GaussianMixture("gauss", [1.0], [mean], [std])
    teacher = ExactEps(target)
    z = torch.randn(500, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    alpha, sigma = teacher.schedule.alpha(one), teacher.schedule.sigma(one)
    mu, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    exact = mu + s * (z - alpha * mu) / (alpha**2 * s**2 + sigma**2).sqrt()
    with count_evaluations() as counter:
        x = teacher_pairs(teacher, z, 100)
    assert counter.calls == 101  # 100 solver steps + the final denoising
    error = float((x - exact).abs().max())
    assert error < 2e-3
    # Second order: a quarter of the steps is ~16x (at least 8x) less accurate.
    assert float((teacher_pairs(teacher, z, 25) - exact).abs().max()) > 8 * error


def test_distillation_pairs_are_seeded_teacher_solutions(ctx):
    target = gmm3d()
    teacher = get_epsnet(target, ctx)
    z, x = distillation_pairs(target, ctx, teacher, 300, 10)
    assert z.shape == x.shape == (300, 3)
    z_again, x_again = distillation_pairs(target, ctx, teacher, 300, 10)
    assert torch.equal(z, z_again) and torch.equal(x, x_again)
    torch.testing.assert_close(x, teacher_pairs(teacher, z, 10))
    z_other, _ = distillation_pairs(target, _ctx(seed=1), teacher, 300, 10)
    assert not torch.equal(z, z_other)


def test_distilled_student_is_one_call_and_keyed_by_its_teacher(ctx):
    target = gmm3d()
    first = len(ctx.models)
    sample = DistilledSampler().fit(target, ctx)
    with count_evaluations() as counter:
        x = sample(400, torch.Generator().manual_seed(0))
    assert x.shape == (400, 3) and counter.nfe_per_sample(400) == 1
    assert [m["kind"] for m in ctx.models[first:]] == ["denoiser", "distilled"]
    teacher = get_denoiser(target, ctx)
    digest = weights_digest(teacher)
    assert weights_digest(teacher) == digest
    perturbed = get_denoiser(target, ctx)
    with torch.no_grad():
        state = {k: v.clone() for k, v in perturbed.state_dict().items()}
        next(iter(perturbed.parameters())).add_(1e-3)
        assert weights_digest(perturbed) != digest
        perturbed.load_state_dict(state)


def test_oscillator_residual_loss_vanishes_on_exact_trajectories_and_drives_the_output():
    target = DampedOscillator()
    x = target.sample(64, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert float(oscillator_residual_loss(target, x)) < 1e-12
    noisy = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype))
    noisy.requires_grad_(True)
    loss = oscillator_residual_loss(target, noisy)
    loss.backward()
    assert float(loss.detach()) > 1e-4 and float(noisy.grad.abs().sum()) > 0


def test_targets_without_the_needed_physics_or_score_are_rejected():
    with pytest.raises(UnsupportedTarget):
        OdeDistilledSampler().check(gmm3d())
    OdeDistilledSampler().check(DampedOscillator())
    with pytest.raises(UnsupportedTarget):
        DistilledSampler("distilled-1@exact", "exact").check(DampedOscillator())
    DistilledSampler("distilled-1@exact", "exact").check(gmm3d())
