"""Replicate statistics: interval coverage, paired t-test closed forms, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.errors import UsageError
from bench.stats import holm, paired_t_pvalue, t_interval


@pytest.mark.parametrize("replicates", [3, 10])
def test_the_95_percent_t_interval_covers_the_true_mean_95_percent_of_the_time(replicates):
    # A synthetic metric with a known mean: 1000 repetitions of K normal replicates.  The binomial
    # standard error of the coverage is 0.007, so 93-97 % is ±3 of them; the normal quantile
    # (1.96 instead of t_{0.975, 2} = 4.30) would cover only ≈ 82 % at K = 3.
    rng = np.random.default_rng(0)
    true_mean, spread = 0.37, 0.05
    covered = 0
    for _ in range(1000):
        _, low, high = t_interval(rng.normal(true_mean, spread, replicates).tolist())
        covered += low <= true_mean <= high
    assert 930 <= covered <= 970


def test_t_interval_matches_the_textbook_quantile():
    values = [1.0, 2.0, 6.0]  # mean 3, s = √7, t_{0.975, 2} = 4.302652729749464
    mean, low, high = t_interval(values)
    half_width = 4.302652729749464 * math.sqrt(7.0) / math.sqrt(3.0)
    assert mean == 3.0
    assert low == pytest.approx(3.0 - half_width, rel=1e-12) and high == pytest.approx(3.0 + half_width, rel=1e-12)
    narrower = t_interval(values, confidence=0.5)
    assert low < narrower[1] < narrower[2] < high


def test_t_interval_of_one_or_identical_values():
    assert t_interval([0.25]) == (0.25, None, None)
    assert t_interval([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)


def test_paired_t_pvalue_matches_the_closed_form_with_two_degrees_of_freedom():
    # Differences 1, 2, 3: t = 2 / (1/√3) = 2√3; for df = 2 the t CDF is ½ + t / (2√(2 + t²)),
    # so the two-sided p-value is 1 - t / √(2 + t²).
    t = 2.0 * math.sqrt(3.0)
    assert paired_t_pvalue([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0 - t / math.sqrt(2.0 + t**2), rel=1e-12)
    # Pairing matters: a steady 0.1 gain across replicates is significant, however much they vary.
    better, worse = [10.0, 20.0, 30.0], [10.1, 20.11, 30.09]
    assert paired_t_pvalue(worse, better) < 0.01 < 0.9 < stats.ttest_ind(worse, better).pvalue


def test_paired_t_pvalue_of_identical_and_constantly_shifted_samples():
    assert paired_t_pvalue([0.3, 0.1, 0.2], [0.3, 0.1, 0.2]) == 1.0
    assert paired_t_pvalue([1.5, 1.25, 1.75], [0.5, 0.25, 0.75]) == 0.0  # every difference exactly 1


def test_holm_matches_a_hand_computed_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 scaled by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 → the running
    # maximum lifts the last to 0.06; results go back to the input's order.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: t_interval([]), "non-empty list of finite numbers"),
        (lambda: t_interval([1.0, math.nan]), "finite numbers"),
        (lambda: t_interval([1.0, 2.0], confidence=95), "use a value in (0, 1)"),
        (lambda: paired_t_pvalue([1.0, 2.0], [1.0]), "equal length"),
        (lambda: paired_t_pvalue([1.0], [1.0]), "≥ 2 paired values"),
        (lambda: holm([0.5, 1.5]), "must lie in [0, 1]"),
    ],
)
def test_bad_input_is_refused_in_one_line(call, phrase):
    with pytest.raises(UsageError) as error:
        call()
    assert phrase in str(error.value) and "\n" not in str(error.value)
