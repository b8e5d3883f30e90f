"""Fidelity metrics against closed forms, dense float64 oracles and numpy/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.metrics import (
    METRIC_SPECS,
    PAPER_BANDWIDTHS,
    compute_metrics,
    energy_distance,
    median_bandwidth,
    mmd2,
    mmd2_permutation_test,
    moment_errors,
    sliced_wasserstein,
)
from bench.metrics.pairwise import _GaussianSum, _random_splits, _two_sample_statistics, pairwise_metrics
from bench.seeding import derive_seed


pytestmark = pytest.mark.usefixtures("single_thread")


def _gaussians(n: int, d: int, seed: int, mean: float | torch.Tensor = 0.0, std: float = 1.0) -> torch.Tensor:
    return mean + std * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _dense_unbiased(a: torch.Tensor, b: torch.Tensor, kernel) -> float:
    """The unbiased two-sample U-statistic from full float64 kernel matrices (the oracle)."""
    a, b = a.double(), b.double()
    n, m = len(a), len(b)

    def off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
        return (k.sum() - k.diagonal().sum()) / (len(k) * (len(k) - 1))

    return float(
        off_diagonal_mean(kernel(torch.cdist(a, a)))
        + off_diagonal_mean(kernel(torch.cdist(b, b)))
        - 2 * kernel(torch.cdist(a, b)).sum() / (n * m)
    )


def _bank(dist: torch.Tensor) -> torch.Tensor:
    # Clamped only to dodge float64 denormals (slow); exp(-700) ≈ 1e-304 changes no sum.
    return sum(torch.exp((-(dist**2) / (2 * s**2)).clamp(min=-700.0)) for s in PAPER_BANDWIDTHS)


def _population_mmd2(d: int, mu: torch.Tensor, s1: float, s2: float) -> float:
    """MMD² of N(0, s1² I) vs N(mu, s2² I) under the paper's kernel, in closed form.

    For X ~ N(μ1, s1² I), Y ~ N(μ2, s2² I) and bandwidth σ,
    E k(X, Y) = (σ² / (σ² + s1² + s2²))^{d/2} exp(-‖μ1 - μ2‖² / (2(σ² + s1² + s2²))).
    """

    def expected_kernel(var: float, shift_sq: float) -> float:
        return sum(
            (s**2 / (s**2 + var)) ** (d / 2) * math.exp(-shift_sq / (2 * (s**2 + var))) for s in PAPER_BANDWIDTHS
        )

    shift_sq = float(mu @ mu)
    within = expected_kernel(2 * s1**2, 0.0) + expected_kernel(2 * s2**2, 0.0)
    return within - 2 * expected_kernel(s1**2 + s2**2, shift_sq)


def test_mmd2_and_energy_match_dense_oracle_with_unequal_sizes():
    a, b = _gaussians(300, 3, 0), _gaussians(200, 3, 1, mean=0.3, std=0.8)
    # Kernel tiles are float32, sums float64.
    assert mmd2(a, b) == pytest.approx(_dense_unbiased(a, b, _bank), rel=1e-7)
    assert energy_distance(a, b) == pytest.approx(_dense_unbiased(a, b, lambda dist: -dist), rel=1e-7)


def test_mmd2_matches_gaussian_closed_form():
    d, s1, s2 = 2, 0.5, 0.6
    mu = torch.tensor([0.6, -0.4], dtype=torch.float64)
    exact = _population_mmd2(d, mu, s1, s2)  # ≈ 0.505
    estimates = torch.tensor(
        [
            mmd2(_gaussians(800, d, 2 * r, std=s1), _gaussians(800, d, 2 * r + 1, mean=mu.float(), std=s2))
            for r in range(6)
        ]
    )
    # Tight enough that a kernel mean (÷5) or a dropped bandwidth misses by many standard errors.
    standard_error = float(estimates.std() / math.sqrt(len(estimates)))
    assert standard_error < 0.05 * exact
    assert abs(float(estimates.mean()) - exact) < 4 * standard_error


@pytest.mark.parametrize(
    ("statistic", "kernel"),
    [(mmd2, _bank), (energy_distance, lambda dist: -dist)],
    ids=["mmd2", "energy"],
)
def test_estimators_are_unbiased_under_the_null(statistic, kernel):
    n, pairs = 20, 300
    unbiased, biased = [], []
    for r in range(pairs):
        a, b = _gaussians(n, 2, 2 * r), _gaussians(n, 2, 2 * r + 1)
        unbiased.append(statistic(a, b))
        # V-statistic: includes the i = j terms of the within-sample sums.
        a, b = a.double(), b.double()
        within = kernel(torch.cdist(a, a)).mean() + kernel(torch.cdist(b, b)).mean()
        biased.append(float(within - 2 * kernel(torch.cdist(a, b)).mean()))
    unbiased, biased = torch.tensor(unbiased), torch.tensor(biased)
    assert abs(float(unbiased.mean())) < 3 * float(unbiased.std()) / math.sqrt(pairs)
    # The test can tell: the V-statistic's bias is many standard errors away from 0.
    assert abs(float(biased.mean())) > 6 * float(biased.std()) / math.sqrt(pairs)


def test_energy_distance_matches_1d_gaussian_closed_form():
    mu = 1.0

    def mean_abs(m: float, s: float) -> float:  # E|Z| for Z ~ N(m, s²)
        return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * math.erf(m / (s * math.sqrt(2)))

    exact = 2 * mean_abs(mu, math.sqrt(2)) - 2 * mean_abs(0.0, math.sqrt(2))  # ≈ 0.542
    estimates = [energy_distance(_gaussians(3000, 1, 2 * r), _gaussians(4000, 1, 2 * r + 1, mean=mu)) for r in range(4)]
    # One estimate's standard deviation is ≈ 0.024 here, so the mean's is ≈ 0.012.
    assert np.mean(estimates) == pytest.approx(exact, abs=0.04)


def test_sliced_wasserstein_matches_gaussian_shift():
    d = 3
    mu = torch.tensor([2.0, -1.0, 1.0])
    swd = sliced_wasserstein(_gaussians(4000, d, 0), _gaussians(4000, d, 1, mean=mu), seed=0, directions=1000)
    # SW2² = E_θ (θ·μ)² = ‖μ‖²/d = 2; the Monte-Carlo error over 1000 directions is ≈ 3 %
    # (sd of cos²θ on the sphere / mean = 0.89), so a missing square root would fail.
    assert swd**2 == pytest.approx(float(mu @ mu) / d, rel=0.1)


def test_sliced_wasserstein_compares_quantile_functions_for_unequal_sizes():
    # 1-D: W2² between {0, 1} and {0, 1, 2} is 1/6 · 1 + 1/3 · 1 = 1/2 for any direction ±1.
    two, three = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [1.0], [2.0]])
    assert sliced_wasserstein(two, three, seed=0) == pytest.approx(math.sqrt(0.5), rel=1e-12)
    a = _gaussians(300, 4, 0)
    assert sliced_wasserstein(a, a.repeat(3, 1), seed=1) == pytest.approx(0.0, abs=1e-12)


def test_moment_errors_match_numpy_and_scipy():
    g = torch.Generator().manual_seed(0)
    generated = torch.randn(500, 4, generator=g).exp()  # skewed, heavy-tailed
    reference = torch.randn(700, 4, generator=g) ** 3
    errors = moment_errors(generated, reference)
    x, y = generated.double().numpy(), reference.double().numpy()
    expected = {
        "mean_mse": np.mean((x.mean(0) - y.mean(0)) ** 2),
        "cov_mse": np.mean((np.cov(x.T) - np.cov(y.T)) ** 2),
        "skew_mse": np.mean((stats.skew(x) - stats.skew(y)) ** 2),
        "kurt_mse": np.mean((stats.kurtosis(x) - stats.kurtosis(y)) ** 2),
    }
    assert errors == pytest.approx(expected, rel=1e-10)


def test_permutation_statistics_match_dense_oracle():
    a, b = _gaussians(40, 2, 0), _gaussians(30, 2, 1, mean=0.4)
    splits = _random_splits(40, 30, 25, seed=3)
    assert torch.equal(splits.sum(0), torch.full((25,), 40.0))  # every split keeps the group sizes
    (stats,) = _two_sample_statistics(a, b, [(_GaussianSum(PAPER_BANDWIDTHS, torch.float32), splits)], chunk=16)
    pool = torch.cat([a, b])
    observed = _dense_unbiased(a, b, _bank)
    permuted = [_dense_unbiased(pool[split.bool()], pool[~split.bool()], _bank) for split in splits.T]
    assert stats.tolist() == pytest.approx([observed, *permuted], abs=1e-6)
    assert mmd2_permutation_test(a, b, seed=3, permutations=25) == (
        pytest.approx(observed, abs=1e-6),
        (1 + sum(p >= observed for p in permuted)) / 26,
    )


def test_permutation_pvalue_is_calibrated_and_has_power():
    nulls = [
        mmd2_permutation_test(_gaussians(50, 2, 2 * r), _gaussians(50, 2, 2 * r + 1), seed=r, permutations=99)[1]
        for r in range(20)
    ]
    # Uniform on {0.01, ..., 1}: mean 0.505 with sd ≈ 0.065 over 20 draws.
    assert 0.3 < np.mean(nulls) < 0.7
    assert sum(p < 0.05 for p in nulls) <= 3
    shifted = (_gaussians(200, 2, 0), _gaussians(200, 2, 1, mean=0.5))
    assert mmd2_permutation_test(*shifted, seed=0, permutations=99)[1] < 0.05
    assert mmd2_permutation_test(*shifted, seed=7)[1] == mmd2_permutation_test(*shifted, seed=7)[1]


def test_median_bandwidth_matches_numpy_and_subsamples_reproducibly():
    a, b = _gaussians(40, 3, 0), _gaussians(50, 3, 1, std=2.0)
    z = torch.cat([a, b]).double().numpy()
    pairwise = np.linalg.norm(z[:, None] - z[None], axis=-1)[np.triu_indices(len(z), 1)]
    # torch's median of an even count is the lower middle value.
    assert median_bandwidth(a, b, seed=0) == pytest.approx(np.sort(pairwise)[(len(pairwise) - 1) // 2], rel=1e-12)
    sub = median_bandwidth(a, b, seed=5, max_points=30)
    assert sub == median_bandwidth(a, b, seed=5, max_points=30)
    assert sub != median_bandwidth(a, b, seed=6, max_points=30)


def test_median_mmd2_scales_with_the_data():
    # In 64-D the fixed 0.1–2 bank sees nothing; the median-bandwidth kernel still does.
    a, b, c = _gaussians(300, 64, 0), _gaussians(300, 64, 1), _gaussians(300, 64, 2, mean=0.3)
    same = pairwise_metrics(a, b, permutation_seed=0, bandwidth_seed=0, permutations=0)
    shifted = pairwise_metrics(a, c, permutation_seed=0, bandwidth_seed=0, permutations=0)
    assert abs(shifted["mmd2"]) < 1e-3 * shifted["mmd2_median"]
    assert shifted["mmd2_median"] > 20 * abs(same["mmd2_median"])
    h = median_bandwidth(a, c, seed=0)
    assert shifted["mmd2_median"] == pytest.approx(mmd2(a, c, bandwidths=(h,)), rel=1e-4)


def test_tiling_changes_only_rounding():
    a, b = _gaussians(300, 3, 0), _gaussians(250, 3, 1, mean=0.1)
    coarse = pairwise_metrics(a, b, permutation_seed=1, bandwidth_seed=2, permutations=50, chunk=512)
    fine = pairwise_metrics(a, b, permutation_seed=1, bandwidth_seed=2, permutations=50, chunk=37)
    assert fine == pytest.approx(coarse, rel=1e-9)
    assert fine["mmd2_pvalue"] == coarse["mmd2_pvalue"]


def test_thread_count_changes_only_rounding_and_is_restored():
    a, b = _gaussians(700, 3, 0), _gaussians(600, 3, 1, mean=0.1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # tiles are shared out among 3 workers
        shared = pairwise_metrics(a, b, permutation_seed=1, bandwidth_seed=2, permutations=30)
        assert torch.get_num_threads() == 3
        torch.set_num_threads(1)
        alone = pairwise_metrics(a, b, permutation_seed=1, bandwidth_seed=2, permutations=30)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert shared == pytest.approx(alone, rel=1e-12)


def test_compute_metrics_returns_every_spec_reproducibly():
    a, b = _gaussians(500, 3, 0), _gaussians(400, 3, 1, mean=0.2)
    values = compute_metrics(a, b, seed=11, permutations=20)
    assert list(values) == [spec.name for spec in METRIC_SPECS]
    assert all(math.isfinite(v) for v in values.values())
    assert {spec.name: spec.better for spec in METRIC_SPECS}["mmd2_pvalue"] == "higher"
    assert values == compute_metrics(a, b, seed=11, permutations=20)
    assert values["mmd2"] == pytest.approx(mmd2(a, b), rel=1e-12)
    assert values["energy"] == pytest.approx(energy_distance(a, b), rel=1e-12)
    assert values["swd"] == sliced_wasserstein(a, b, seed=derive_seed(11, "metrics", "swd"))


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        mmd2(torch.zeros(10, 3), torch.zeros(10, 2))
    with pytest.raises(ValueError):
        energy_distance(torch.zeros(1, 3), torch.zeros(10, 3))


def test_shape_errors_skip_coordinates_the_target_holds_constant():
    # A fixed initial value (the oscillator's x(0)) has no skewness or kurtosis to match.
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    reference[:, 0] = 0.7
    generated = torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    generated[:, 0] = 0.7 + 1e-3 * torch.randn(4000, generator=generator, dtype=torch.float64)
    errors = moment_errors(generated, reference)
    assert all(math.isfinite(v) for v in errors.values())
    varying = moment_errors(generated[:, 1:], reference[:, 1:])
    assert errors["skew_mse"] == pytest.approx(varying["skew_mse"])
    assert errors["kurt_mse"] == pytest.approx(varying["kurt_mse"])
    constant = torch.full((100, 2), 1.0, dtype=torch.float64)
    assert moment_errors(constant, reference[:100, 1:])["kurt_mse"] > 1.0  # a point mass is penalised


# --- Odd data: atoms, duplicates, constant coordinates, extreme scales -----------------------------


def _atoms(n: int, seed: int, mass: float = 0.8) -> torch.Tensor:
    """``mass`` of the points on one atom at (1, 2, 3), the rest standard normal."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=generator)
    x[torch.rand(n, generator=generator) < mass] = torch.tensor([1.0, 2.0, 3.0])
    return x


def test_median_bandwidth_ignores_zero_distances_of_atoms_and_duplicates():
    a, b = _atoms(80, 0), torch.cat([_atoms(20, 1)] * 2)  # 80 % on an atom; every point twice
    z = torch.cat([a, b]).double().numpy()
    pairwise = np.linalg.norm(z[:, None] - z[None], axis=-1)[np.triu_indices(len(z), 1)]
    assert np.median(pairwise) == 0.0  # the plain heuristic would give no kernel at all
    nonzero = np.sort(pairwise[pairwise > 0])
    assert median_bandwidth(a, b, seed=0) == pytest.approx(nonzero[(len(nonzero) - 1) // 2], rel=1e-12)


def test_median_bandwidth_fallbacks_stay_on_the_data_scale():
    atom = torch.zeros(50, 2)
    atom[0] = torch.tensor([3.0, 4.0])
    # No distinct pair in a 2-point subsample (seeded): the pool's RMS pairwise distance √(2 Σ Var).
    pool = torch.cat([atom, atom]).double().numpy()
    rms = math.sqrt(2 * pool.var(axis=0).sum())
    subsampled = [median_bandwidth(atom, atom, seed=s, max_points=2) for s in range(5)]
    assert rms in [pytest.approx(h, rel=1e-12) for h in subsampled]
    assert median_bandwidth(torch.ones(5, 2), torch.ones(4, 2), seed=0) == 1.0


def test_metrics_of_atoms_are_finite_and_match_oracles():
    a, b = _atoms(400, 0), _atoms(300, 1)
    values = compute_metrics(a, b, seed=0, permutations=20)
    assert all(math.isfinite(v) for v in values.values())
    h = median_bandwidth(a, b, seed=derive_seed(0, "metrics", "median_bandwidth"))
    gaussian = lambda dist: torch.exp(-(dist**2) / (2 * h**2))  # noqa: E731
    assert values["mmd2_median"] == pytest.approx(_dense_unbiased(a, b, gaussian), rel=1e-9)
    assert values["energy"] == pytest.approx(_dense_unbiased(a, b, lambda dist: -dist), rel=1e-6)


def test_a_single_point_against_itself_scores_zero_everywhere():
    point = torch.full((50, 3), 2.5)
    values = compute_metrics(point, point.clone(), seed=0, permutations=10)
    assert all(values[k] == 0.0 for k in values if k not in ("mmd2_pvalue", "c2st")) and values["mmd2_pvalue"] == 1.0
    assert values["c2st"] == 0.5  # chance: balanced folds of identical points
    # Against a point mass, shape statistics are undefined: their errors are 0, mean and covariance count.
    errors = moment_errors(_gaussians(50, 3, 0), point)
    assert errors["skew_mse"] == errors["kurt_mse"] == 0.0 and errors["mean_mse"] > 1.0


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_metrics_follow_the_scale_of_extreme_data(scale):
    # Homogeneity: energy and SWD scale with the data, MMD² with the median bandwidth and the
    # shape errors do not change, mean and covariance errors scale as c² and c⁴.
    a, b = _gaussians(300, 3, 0), _gaussians(200, 3, 1, mean=0.3, std=1.5)
    unit = compute_metrics(a, b, seed=3, permutations=20)
    scaled = compute_metrics(a * scale, b * scale, seed=3, permutations=20)
    assert all(math.isfinite(v) for v in scaled.values())
    assert scaled["energy"] == pytest.approx(scale * unit["energy"], rel=1e-6)
    assert scaled["swd"] == pytest.approx(scale * unit["swd"], rel=1e-6)
    assert scaled["mmd2_median"] == pytest.approx(unit["mmd2_median"], rel=1e-6)
    assert scaled["mean_mse"] == pytest.approx(scale**2 * unit["mean_mse"], rel=1e-5)
    assert scaled["cov_mse"] == pytest.approx(scale**4 * unit["cov_mse"], rel=1e-5)
    assert scaled["skew_mse"] == pytest.approx(unit["skew_mse"], rel=1e-5)
    assert scaled["kurt_mse"] == pytest.approx(unit["kurt_mse"], rel=1e-5)


def test_samples_far_out_against_the_target_are_finite_and_far():
    reference = _gaussians(300, 3, 0)
    far = _gaussians(300, 3, 1).clamp(-3, 3) * 1e38  # near float32's largest value
    values = compute_metrics(far, reference, seed=0, permutations=20)
    assert all(math.isfinite(v) for v in values.values())
    assert values["mmd2"] == pytest.approx(_dense_unbiased(far, reference, _bank), rel=1e-7)
    assert values["energy"] > 1e37 and values["mmd2_pvalue"] < 0.05
