"""Flow matching and rectified flow: closed-form optimum, solver orders, couplings, NFE, reflow."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.counting import count_evaluations
from bench.profiles import get_profile
from samplers.flow.plugin import FlowMatchingFamily, RectifiedFlowSampler
from samplers.flow.sample import euler, heun, time_grid
from samplers.flow.train import (
    flow_matching_loss,
    flow_matching_model,
    minibatch_ot_coupling,
    rectified_flow_model,
    reflow_pairs,
)
from samplers.nets import build_time_mlp, fit_standardization
from targets.mixtures import gmm3d

MU = torch.tensor([1.5, -0.5], dtype=torch.float64)
STD = torch.tensor([0.3, 2.0], dtype=torch.float64)


class GaussianVelocity(nn.Module):
    """Marginal velocity of the straight path from ``N(MU, diag STD²)`` (t = 0) to ``N(0, I)`` (t = 1).

    ``x_t = (1-t) x_0 + t z`` has variance ``V_t = (1-t)² s² + t²`` and
    ``E[z - x_0 | x_t = x] = (t - (1-t) s²)/V_t · (x - (1-t) μ) - μ``; its flow is
    the affine map ``x_t = (1-t) μ + √V_t · (z - 0)/1``, so ``x_0 = μ + s z``.
    """

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        variance = (1 - t) ** 2 * STD**2 + t**2
        return (t - (1 - t) * STD**2) / variance * (x - (1 - t) * MU) - MU


@pytest.fixture(scope="module")
def ctx() -> FitContext:
    """One smoke-budget context per module, so the flow-matching net is trained once for all tests."""
    return FitContext(torch.device("cpu"), torch.float32, 0, get_profile("smoke"), ModelCache(None))


def test_cfm_loss_excess_over_exact_velocity_is_the_field_error():
    # L(v* + δ) - L(v*) = E‖δ‖² (the cross term vanishes), so v* minimises the CFM loss.
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x_0 = MU + STD * torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, 1, generator=g, dtype=torch.float64)
    exact = GaussianVelocity()
    best = flow_matching_loss(exact, x_0, z, t)
    shift = torch.tensor([0.1, -0.05], dtype=torch.float64)

    class Shifted(nn.Module):
        def forward(self, x, t):
            return exact(x, t) + shift

    class Scaled(nn.Module):
        def forward(self, x, t):
            return 1.05 * exact(x, t)

    excess = float(flow_matching_loss(Shifted(), x_0, z, t) - best)
    assert excess == pytest.approx(float(shift.square().sum()), rel=0.05)
    x_t = (1 - t) * x_0 + t * z
    expected = float((0.05 * exact(x_t, t)).square().sum(1).mean())
    assert float(flow_matching_loss(Scaled(), x_0, z, t) - best) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("solver, order, calls", [(euler, 1, 1), (heun, 2, 2)])
def test_solvers_converge_at_their_order_on_the_exact_flow(solver, order, calls):
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact_map = MU + STD * z
    errors = []
    for steps in (8, 16, 32, 64):
        with count_evaluations() as counter:
            x = solver(GaussianVelocity(), z, time_grid(steps))
        assert counter.calls == calls * steps
        errors.append(float((x - exact_map).abs().max()))
    ratios = [a / b for a, b in zip(errors[:-1], errors[1:])]
    assert all(2**order * 0.85 < r < 2**order * 1.15 for r in ratios), (errors, ratios)


def test_minibatch_ot_coupling_is_an_optimal_blockwise_permutation():
    g = torch.Generator().manual_seed(2)
    x_0, z = torch.randn(12, 3, generator=g), torch.randn(12, 3, generator=g)
    paired = minibatch_ot_coupling(x_0, z, block=4)
    for start in range(0, 12, 4):
        block_x, block_z, block_p = x_0[start:start + 4], z[start:start + 4], paired[start:start + 4]
        # Same rows as the block of z, in another order...
        assert torch.equal(block_p[torch.argsort(block_p[:, 0])], block_z[torch.argsort(block_z[:, 0])])
        # ...and the cheapest of all 4! orders.
        cost = float((block_x - block_p).square().sum())
        brute = min(float((block_x - block_z[list(perm)]).square().sum()) for perm in itertools.permutations(range(4)))
        assert cost == pytest.approx(brute, rel=1e-6)


def test_standardization_round_trips_and_keeps_constant_coordinates_finite():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1000, 3, generator=g) * torch.tensor([2.0, 0.5, 0.0]) + torch.tensor([1.0, -3.0, 0.7])
    net = build_time_mlp(3, 1)
    fit_standardization(net, x)
    y = net.standardize(x)
    torch.testing.assert_close(y[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, :2].std(0), torch.ones(2), atol=1e-5, rtol=0)
    # The constant coordinate gets 1% of the largest std, not a division by zero.
    assert float(net.data_std[2]) == pytest.approx(0.01 * float(net.data_std[0]))
    torch.testing.assert_close(net.unstandardize(y), x)
    # The standardisation is part of the saved state, so a cached model restores it.
    assert {"data_mean", "data_std"} <= set(net.state_dict())


def test_network_matches_the_epsnet_size():
    from samplers.diffusion import DiscreteVPSchedule, EpsNet

    for dim in (3, 64):
        ours = sum(p.numel() for p in build_time_mlp(dim, 1).parameters())
        theirs = sum(p.numel() for p in EpsNet(dim, DiscreteVPSchedule()).parameters())
        assert ours == theirs


def test_one_velocity_net_serves_every_step_count_and_nfe_is_the_step_count(ctx):
    target, family = gmm3d(), FlowMatchingFamily()
    velocities = []
    for steps in (1, 3, 8):
        sample = family.resolve(f"flow-matching-{steps}").fit(target, ctx)
        velocities.append(flow_matching_model(target, ctx))
        with count_evaluations() as counter:
            x = sample(500, torch.Generator().manual_seed(0))
        assert x.shape == (500, 3) and bool(torch.isfinite(x).all())
        assert counter.nfe_per_sample(500) == steps
    assert all(v is velocities[0] for v in velocities)
    assert family.resolve("ot-flow-matching-2").coupling == "ot"
    assert family.resolve("flow-matching-0") is None


def test_sampling_is_deterministic_given_the_generator(ctx):
    sample = FlowMatchingFamily().resolve("flow-matching-2").fit(gmm3d(), ctx)
    a, b = (sample(100, torch.Generator().manual_seed(5)) for _ in range(2))
    c = sample(100, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reflow_one_step_moves_towards_the_base_flows_ode_map(ctx):
    target = gmm3d()
    base = flow_matching_model(target, ctx)
    reflowed = rectified_flow_model(target, ctx)
    z = torch.randn(2000, 3, generator=torch.Generator().manual_seed(3))
    ode_map = reflow_pairs(base, z, 16)
    with torch.no_grad():
        base_error = (z - base(z, 1.0) - ode_map).square().sum(1).mean()
        reflow_error = (z - reflowed(z, 1.0) - ode_map).square().sum(1).mean()
    assert reflow_error < 0.5 * base_error

    sample = RectifiedFlowSampler().fit(target, ctx)
    with count_evaluations() as counter:
        sample(300, torch.Generator().manual_seed(0))
    assert counter.nfe_per_sample(300) == 1
