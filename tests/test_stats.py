"""Replicate statistics: interval coverage, paired t-test closed forms, Holm, ties and overlaps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.errors import UsageError
from bench.stats import holm, overlapping, paired_t_pvalue, t_interval, ties_with_best


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


def test_two_identical_samplers_are_always_tied():
    # Identical rows get identical verdicts, and whenever one of them is the best, the other is tied.
    rng = np.random.default_rng(2)
    twin_was_best = 0
    for _ in range(200):
        values = rng.normal(0.1, 0.02, 3).tolist()
        others = {f"other-{i}": rng.normal(0.1 + 0.02 * i, 0.02, 3).tolist() for i in range(3)}
        rows = {"twin-a": values, **others, "twin-b": list(values)}
        ties = ties_with_best(rows)
        assert ties["twin-a"] == ties["twin-b"]
        if min(rows, key=lambda name: np.mean(rows[name])) == "twin-a":
            twin_was_best += 1
            assert ties["twin-b"]
    assert 20 < twin_was_best < 180  # both cases occurred


def test_a_clearly_worse_sampler_is_not_tied_and_a_noisy_one_is():
    rng = np.random.default_rng(3)
    seeds_effect = rng.normal(0.0, 0.01, 5)  # shared by every row: common random numbers
    best = (0.02 + seeds_effect).tolist()
    worse = (0.30 + seeds_effect + rng.normal(0.0, 0.005, 5)).tolist()
    noisy = (0.02 + seeds_effect + rng.normal(0.0, 0.05, 5)).tolist()
    assert ties_with_best({"best": best, "worse": worse, "noisy": noisy}) == {
        "best": True, "worse": False, "noisy": True
    }


def test_higher_is_better_picks_the_largest_mean():
    ties = ties_with_best({"low": [0.1, 0.2, 0.15], "high": [0.9, 0.95, 0.92]}, better="higher")
    assert ties == {"low": False, "high": True}


def test_holm_decides_what_a_single_test_would_not():
    # Rows whose raw p-values are below 0.05 but whose Holm-adjusted ones are not stay tied.
    best = [0.0, 0.0, 0.0, 0.0]
    rows = {"best": best, "a": [1.0, 2.0, 3.0, 1.0], "b": [1.0, 2.0, 3.1, 1.0]}
    raw = [paired_t_pvalue(rows[name], best) for name in ("a", "b")]
    assert all(0.025 < p < 0.05 for p in raw)
    assert ties_with_best(rows) == {"best": True, "a": True, "b": True}


def test_overlapping_intervals():
    assert overlapping((1.0, 2.0), (1.5, 3.0)) and overlapping((1.5, 3.0), (1.0, 2.0))
    assert overlapping((1.0, 2.0), (2.0, 3.0))  # closed intervals touching
    assert not overlapping((1.0, 2.0), (2.1, 3.0))
    assert overlapping((47.7 - 1.7, 47.7 + 1.7), (48.1 - 0.2, 48.1 + 0.2))  # the distilled-1 rows
    assert overlapping((5.0, 5.0), (4.0, 6.0))


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: t_interval([]), "non-empty list of finite numbers"),
        (lambda: t_interval([1.0, math.nan]), "finite numbers"),
        (lambda: t_interval([1.0, 2.0], confidence=95), "use a value in (0, 1)"),
        (lambda: paired_t_pvalue([1.0, 2.0], [1.0]), "equal length"),
        (lambda: paired_t_pvalue([1.0], [1.0]), "≥ 2 paired values"),
        (lambda: holm([0.5, 1.5]), "must lie in [0, 1]"),
        (lambda: ties_with_best({}), "at least one row"),
        (lambda: ties_with_best({"a": [1.0, 2.0], "b": [1.0]}), "a: 2, b: 1"),
        (lambda: ties_with_best({"a": [1.0]}), "≥ 2 replicates"),
        (lambda: ties_with_best({"a": [1.0, 2.0]}, better="up"), "use 'lower' or 'higher'"),
        (lambda: ties_with_best({"a": [1.0, 2.0]}, alpha=5), "use a value in (0, 1)"),
        (lambda: overlapping((2.0, 1.0), (0.0, 3.0)), "low ≤ high"),
    ],
)
def test_bad_input_is_refused_in_one_line(call, phrase):
    with pytest.raises(UsageError) as error:
        call()
    assert phrase in str(error.value) and "\n" not in str(error.value)
