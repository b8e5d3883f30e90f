"""The discrete VP schedule: grid values, interpolation, λ and its inverse, SDE drift, step spacings."""

from __future__ import annotations

import math

import pytest
import torch

from samplers.diffusion.schedule import DiscreteVPSchedule, timesteps

F64 = torch.float64


@pytest.fixture(scope="module")
def schedule() -> DiscreteVPSchedule:
    return DiscreteVPSchedule()


def off_grid_times(schedule: DiscreteVPSchedule) -> torch.Tensor:
    """Times ``(i + 0.3)/T`` strictly between grid points, across the whole range."""
    return (torch.arange(1, schedule.T, 7, dtype=F64) + 0.3) / schedule.T


def test_alpha_bar_on_the_grid_is_the_ddpm_cumulative_product(schedule):
    # PINGS eq. 23: ᾱ_i = Π_{s≤i}(1 - β_s) with β linear from 1e-4 to 2e-2.
    betas = [1e-4 + (2e-2 - 1e-4) * k / 999 for k in range(1000)]
    expected = torch.tensor([math.prod(1 - b for b in betas[: i + 1]) for i in (0, 1, 9, 499, 999)], dtype=F64)
    t = torch.tensor([1, 2, 10, 500, 1000], dtype=F64) / 1000
    torch.testing.assert_close(schedule.alpha_bar(t), expected, rtol=1e-12, atol=0)
    assert schedule.t_min == 1e-3 and schedule.t_max == 1.0


def test_log_alpha_is_linear_between_grid_points(schedule):
    i = torch.arange(1, schedule.T, dtype=F64)
    left, right = schedule.log_alpha(i / schedule.T), schedule.log_alpha((i + 1) / schedule.T)
    for w in (0.25, 0.5, 0.9):
        between = schedule.log_alpha((i + w) / schedule.T)
        torch.testing.assert_close(between, (1 - w) * left + w * right, rtol=1e-12, atol=1e-15)


def test_alpha_sigma_lambda_are_consistent(schedule):
    t = off_grid_times(schedule)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones_like(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(schedule.lambda_(t), torch.log(alpha / sigma), rtol=1e-10, atol=1e-12)
    assert bool((schedule.lambda_(t).diff() < 0).all()), "λ must decrease towards the prior end"


def test_t_from_lambda_inverts_lambda(schedule):
    t = torch.cat([off_grid_times(schedule), torch.tensor([schedule.t_min, 0.5, 1.0], dtype=F64)])
    torch.testing.assert_close(schedule.t_from_lambda(schedule.lambda_(t)), t, rtol=1e-9, atol=1e-12)


def test_drift_matches_the_schedule_derivatives(schedule):
    # f = d log α/dt and g² = dσ²/dt - 2 f σ², by central differences inside one linear piece.
    t = off_grid_times(schedule)
    dt = 1e-2 / schedule.T  # stays inside the linear piece
    f, g2 = schedule.drift(t)
    d_log_alpha = (schedule.log_alpha(t + dt) - schedule.log_alpha(t - dt)) / (2 * dt)
    d_var = (schedule.sigma(t + dt).square() - schedule.sigma(t - dt).square()) / (2 * dt)
    torch.testing.assert_close(f, d_log_alpha, rtol=1e-6, atol=0)
    torch.testing.assert_close(g2, d_var - 2 * f * schedule.sigma(t).square(), rtol=1e-5, atol=0)
    assert bool((g2 > 0).all())


def test_extrapolating_below_the_data_end_is_undefined(schedule):
    # Why the end time is 1/T: extrapolating log α linearly to t = 0 gives α > 1.
    assert torch.isnan(schedule.sigma(torch.zeros(1, dtype=F64))).all()
    with pytest.raises(ValueError, match="1/T"):
        timesteps(schedule, 10, t_end=0.5 / schedule.T)


@pytest.mark.parametrize("spacing", ["logSNR", "time_uniform", "time_quadratic"])
def test_timesteps_run_from_prior_to_data_end(schedule, spacing):
    ts = timesteps(schedule, 17, spacing)
    assert ts.shape == (18,) and ts.dtype == F64
    assert float(ts[0]) == 1.0 and float(ts[-1]) == schedule.t_min
    assert bool((ts.diff() < 0).all())
    assert bool(torch.isfinite(schedule.lambda_(ts)).all())


@pytest.mark.parametrize(
    ("spacing", "transform"),
    [("logSNR", None), ("time_uniform", lambda t: t), ("time_quadratic", torch.sqrt)],
)
def test_timesteps_are_uniform_in_their_variable(schedule, spacing, transform):
    ts = timesteps(schedule, 12, spacing)
    values = schedule.lambda_(ts) if transform is None else transform(ts)
    steps = values.diff()
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-8, atol=0)


def test_timesteps_reject_bad_arguments(schedule):
    with pytest.raises(ValueError, match="spacing"):
        timesteps(schedule, 10, "cosine")
    with pytest.raises(ValueError, match="step"):
        timesteps(schedule, 0)
