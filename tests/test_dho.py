"""dho: the analytic solution, the exact-stencil residual, the ξ̂ fit and the physics metrics."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from targets import dho
from targets.dho import (
    V0, X0, DampedOscillator, exact_stencil, fit_damping, initial_slope, ode_residual,
    oscillator_solution, oscillator_solution_and_sensitivity, uniform_ks, uniform_w1,
)


@pytest.fixture
def target():
    return DampedOscillator()


def _draws(target, n, seed=0, dtype=torch.float32):
    return target.sample(n, torch.Generator().manual_seed(seed), dtype=dtype)


def test_analytic_solution_satisfies_ode_and_initial_conditions():
    z = torch.linspace(0.0, 20.0, 401, dtype=torch.float64).requires_grad_(True)
    for xi_value in (0.1, 0.25, 0.4, 0.9):
        xi = torch.tensor(xi_value, dtype=torch.float64)
        x = oscillator_solution(z, xi)
        (dx,) = torch.autograd.grad(x.sum(), z, create_graph=True)
        (d2x,) = torch.autograd.grad(dx.sum(), z)
        assert (d2x + 2 * xi * dx + x).abs().max() < 1e-12
        assert x[0].item() == pytest.approx(X0, abs=1e-15)
        assert dx[0].item() == pytest.approx(V0, abs=1e-14)


def test_sensitivity_is_the_xi_derivative():
    z = torch.linspace(0.0, 20.0, 64, dtype=torch.float64)
    xi = torch.linspace(0.0, 0.8, 33, dtype=torch.float64)
    x, d_x = oscillator_solution_and_sensitivity(z, xi[:, None])
    # One leaf per element: each entry of x depends on its own copy of ξ only.
    xi_per_entry = xi[:, None].expand(-1, 64).clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(oscillator_solution(z, xi_per_entry).sum(), xi_per_entry)
    torch.testing.assert_close(x, oscillator_solution(z, xi[:, None]), rtol=0, atol=1e-15)
    torch.testing.assert_close(d_x, autograd, rtol=1e-12, atol=1e-12)


def test_exact_stencil_vanishes_on_any_solution_and_tends_to_the_ode_residual():
    xi = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    for h in (20 / 63, 0.05):
        z = torch.arange(0, 400, dtype=torch.float64) * h
        # Any initial conditions: the stencil encodes the ODE, not the ICs.
        for x0, v0 in ((0.7, 1.2), (-2.0, 0.3)):
            x = oscillator_solution(z, xi[:, None], x0, v0)
            assert ode_residual(x, xi, h).abs().max() < 1e-9
    # On a non-solution x = z², x'' + 2ξx' + x = 2 + 4ξz + z²: the symmetric stencil is O(h²).
    errors = []
    for points in (101, 201):
        z = torch.linspace(0.0, 2.0, points, dtype=torch.float64)
        residual = ode_residual((z**2).expand(3, -1), xi, z[1].item())
        exact = 2 + 4 * xi[:, None] * z[1:-1] + z[1:-1] ** 2
        errors.append((residual - exact).abs().max().item())
    assert errors[1] < 0.3 * errors[0] and errors[1] < 1e-3
    forward, centre, backward = exact_stencil(torch.tensor(0.2, dtype=torch.float64), 1e-3)
    assert abs(forward - 1) < 1e-3 and abs(centre - 2) < 1e-5 and abs(backward - 1) < 1e-3


def test_initial_slope_recovers_the_initial_velocity():
    z = torch.linspace(0.0, 20.0, 64, dtype=torch.float64)
    xi = torch.tensor([0.12, 0.33, 0.5], dtype=torch.float64)
    for v0 in (1.2, -0.4):
        x = oscillator_solution(z, xi[:, None], X0, v0)
        torch.testing.assert_close(initial_slope(x, xi, z[1].item()), torch.full_like(xi, v0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_fit_recovers_known_damping(dtype, tolerance):
    z = torch.linspace(0.0, 20.0, 64, dtype=torch.float64)
    # Inside and outside the prior, including the fit range's ends.
    xi = torch.tensor([0.0, 0.05, 0.1, 0.1234, 0.2, 0.3, 0.37, 0.4, 0.55, 0.8], dtype=torch.float64)
    xi_hat, mse = fit_damping(oscillator_solution(z, xi[:, None]).to(dtype), z)
    assert (xi_hat - xi).abs().max() < tolerance
    assert mse.max() < (1e-24 if dtype == torch.float64 else 1e-12)


def test_fit_is_the_least_squares_minimum_on_noisy_curves():
    z = torch.linspace(0.0, 20.0, 64, dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    xi = 0.1 + 0.3 * torch.rand(50, generator=gen, dtype=torch.float64)
    x = oscillator_solution(z, xi[:, None]) + 0.05 * torch.randn(50, 64, generator=gen, dtype=torch.float64)
    xi_hat, mse = fit_damping(x, z)
    # No ξ on a fine brute-force grid does better.
    fine = torch.linspace(0.0, 0.8, 20_001, dtype=torch.float64)
    for row in range(0, 50, 10):
        brute = (x[row] - oscillator_solution(z, fine[:, None])).square().mean(1).min()
        assert mse[row] <= brute + 1e-12
    torch.testing.assert_close(mse, (x - oscillator_solution(z, xi_hat[:, None])).square().mean(1))


def test_sampling_is_seeded_on_the_solution_family(target):
    draws = _draws(target, 500, dtype=torch.float64)
    assert draws.shape == (500, 64) and draws.dtype == torch.float64
    assert torch.equal(draws, _draws(target, 500, dtype=torch.float64))
    assert not torch.equal(draws, _draws(target, 500, seed=1, dtype=torch.float64))
    assert _draws(target, 3).dtype == torch.float32
    xi_hat, mse = fit_damping(draws, target.grid())
    assert mse.max() < 1e-24 and xi_hat.min() >= 0.1 - 1e-9 and xi_hat.max() <= 0.4 + 1e-9
    assert DampedOscillator(dim=16).sample(4, torch.Generator().manual_seed(0)).shape == (4, 16)
    with pytest.raises(ValueError):
        DampedOscillator(dim=2)


def test_uniform_distances_match_closed_forms():
    n = 1000
    # Midpoints of the n quantile cells: W1 = (b - a)/(4n), KS = 1/(2n).
    midpoints = 0.1 + 0.3 * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert uniform_w1(midpoints[torch.randperm(n)], 0.1, 0.4) == pytest.approx(0.3 / (4 * n), rel=1e-9)
    assert uniform_ks(midpoints, 0.1, 0.4) == pytest.approx(1 / (2 * n), rel=1e-9)
    # A point mass at c: W1 = E|U - c| = ((c - a)² + (b - c)²) / (2(b - a)), KS = max(F(c), 1 - F(c)).
    point = torch.full((7,), 0.16, dtype=torch.float64)
    assert uniform_w1(point, 0.1, 0.4) == pytest.approx((0.06**2 + 0.24**2) / 0.6, rel=1e-9)
    assert uniform_ks(point, 0.1, 0.4) == pytest.approx(0.8, rel=1e-9)


@pytest.mark.oracle
def test_ks_matches_scipy():
    samples = 0.05 + 0.4 * torch.rand(3000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = stats.kstest(samples.numpy(), "uniform", args=(0.1, 0.3)).statistic
    assert uniform_ks(samples, 0.1, 0.4) == pytest.approx(expected, rel=1e-9)


def test_manifold_error_is_zero_on_target_and_positive_off_it(target):
    exact = _draws(target, 2000)
    noise = torch.randn(exact.shape, generator=torch.Generator().manual_seed(1))
    floor = target.extra_metrics(exact, _draws(target, 2000, seed=1))
    assert floor["manifold_mse"] < 1e-13
    assert floor["ode_residual_rms"] < 1e-4 and floor["ic_value_rmse"] < 1e-6 and floor["ic_slope_rmse"] < 1e-5
    # Monte-Carlo KS of 2000 exact draws is ~1/√n; far below what a wrong ξ law scores.
    assert floor["xi_ks"] < 0.05 and floor["xi_w1"] < 0.01

    sigma = 0.01
    noisy = target.extra_metrics(exact + sigma * noise, exact)
    # One fitted parameter absorbs about 1/D of the noise power.
    assert noisy["manifold_mse"] == pytest.approx(sigma**2 * (1 - 1 / 64), rel=0.1)
    assert noisy["ode_residual_rms"] > 1e3 * floor["ode_residual_rms"]
    shifted = target.extra_metrics(exact + 0.05, exact)
    assert shifted["manifold_mse"] > 0.5 * 0.05**2
    assert shifted["ic_value_rmse"] == pytest.approx(0.05, rel=1e-3)


def test_metrics_separate_the_law_of_xi_from_the_physics(target):
    z, gen = target.grid(), torch.Generator().manual_seed(3)
    floor = target.extra_metrics(_draws(target, 4000), _draws(target, 10))
    # Exact solutions, wrong damping law U[0.1, 0.5]: only the ξ̂ distances notice.
    wide = oscillator_solution(z, 0.1 + 0.4 * torch.rand(4000, 1, generator=gen, dtype=torch.float64)).float()
    wrong_law = target.extra_metrics(wide, wide)
    assert wrong_law["manifold_mse"] < 1e-13 and wrong_law["ode_residual_rms"] < 1e-4
    assert wrong_law["xi_ks"] > 0.2 > 5 * floor["xi_ks"]  # KS of U[0.1, 0.5] against U[0.1, 0.4] is 0.25
    assert wrong_law["xi_w1"] > 5 * floor["xi_w1"]
    # Solutions of the right ODE with the wrong initial slope: the IC error names the culprit.
    xi = 0.1 + 0.3 * torch.rand(4000, 1, generator=gen, dtype=torch.float64)
    wrong_ic = target.extra_metrics(oscillator_solution(z, xi, X0, 1.0).float(), wide)
    assert wrong_ic["ic_value_rmse"] < 1e-6
    assert wrong_ic["manifold_mse"] > 1e-4 and wrong_ic["ic_slope_rmse"] > 0.1


def test_metric_specs_cover_extra_metrics(target):
    values = target.extra_metrics(_draws(target, 100), _draws(target, 100, seed=1))
    assert {spec.name for spec in target.metric_specs} == set(values)
    assert all(spec.better == "lower" for spec in target.metric_specs)


def test_registers_dho_without_score_capabilities():
    registered = []
    dho.register_targets(registered.append)
    (target,) = registered
    assert target.name == "dho" and target.dim == 64
    assert not target.has("score") and not target.has("noised_score") and not target.has("log_prob")
    assert target.has("validate")
    assert target.fingerprint()["xi_range"] == [0.1, 0.4]
    assert DampedOscillator(dim=32).fingerprint() != target.fingerprint()


def test_plot_panel_overlays_curves_against_z(target):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (with_generated, without) = plt.subplots(1, 2)
    reference = _draws(target, 100)
    target.plot_panel(with_generated, reference + 10.0, reference, "shifted")
    target.plot_panel(without, None, reference, "reference only")
    assert len(with_generated.lines) == 60 and len(without.lines) == 30
    assert with_generated.lines[0].get_xdata()[-1] == pytest.approx(20.0)
    # The y-range follows the exact family, not a sampler that ran away.
    assert with_generated.get_ylim()[1] < 3.0
    plt.close(fig)
