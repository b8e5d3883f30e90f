"""Statistics over replicate seeds: intervals, paired comparisons, ties with the best row.

The library the replicate-seed leaderboard is to be built on (the runner and
the report do not call it yet).  A row's metric is measured once per replicate
seed (its own training, reference set and sampling noise).  :func:`t_interval` turns the
replicates into a 95 % Student-t interval.  Rows of one target are compared
with the best one by a paired t-test across replicates (:func:`paired_t_pvalue`:
with common random numbers, replicate ``i`` of every row shares seed ``i``),
Holm's correction over the rows compared (:func:`holm`) and the verdict
:func:`ties_with_best`.  :func:`overlapping` is the Pareto frontier's rule for
latencies: two whose intervals overlap count as equal.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from bench.errors import UsageError


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    """``values`` as a float64 array; :class:`UsageError` unless non-empty and all finite."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0 or not np.isfinite(array).all():
        raise UsageError(f"{what} must be a non-empty list of finite numbers, got {list(values)!r}")
    return array


def t_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, Optional[float], Optional[float]]:
    """Mean and Student-t confidence interval of the mean over replicates.

    ``mean ± t_{(1+c)/2, K-1} · s / √K`` with ``s`` the sample standard
    deviation (``ddof = 1``) of the ``K`` values.  Replicates that all agree
    give the degenerate interval ``(mean, mean)``.

    Args:
        values: One value per replicate, ``K ≥ 1`` finite numbers.
        confidence: Coverage ``c`` of the interval, in ``(0, 1)``.

    Returns:
        ``(mean, low, high)``; ``low`` and ``high`` are ``None`` when ``K = 1``
        (one replicate says nothing about the spread).

    Raises:
        UsageError: If ``values`` is empty or not finite, or ``confidence`` is not in ``(0, 1)``.
    """
    array = _finite(values, "values")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence = {confidence!r} is not a probability; use a value in (0, 1), e.g. 0.95")
    mean = float(array.mean())
    if len(array) == 1:
        return mean, None, None
    sem = float(stats.sem(array))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, df=len(array) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def paired_t_pvalue(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of ``mean(a - b) = 0`` (``scipy.stats.ttest_rel``).

    Pairs whose differences are all equal have no spread to test against:
    ``p = 1`` if they are all 0 (identical samples), ``p = 0`` otherwise (the
    limit of an infinite t statistic); scipy would return NaN.

    Args:
        a: One value per replicate, ``K ≥ 2`` finite numbers.
        b: The same replicates' values of the other row, in the same order.

    Returns:
        The p-value, in ``[0, 1]``.

    Raises:
        UsageError: If the lists differ in length, hold fewer than 2 values or non-finite ones.
    """
    a_array, b_array = _finite(a, "a"), _finite(b, "b")
    if len(a_array) != len(b_array) or len(a_array) < 2:
        raise UsageError(
            f"a paired t-test needs two lists of ≥ 2 paired values of equal length, got {len(a_array)} and {len(b_array)}"
        )
    differences = a_array - b_array
    if np.ptp(differences) == 0.0:
        return 1.0 if differences[0] == 0.0 else 0.0
    return float(stats.ttest_rel(a_array, b_array).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm, 1979), in the input's order.

    With ``p_(1) ≤ … ≤ p_(m)`` sorted, ``p̃_(i) = max_{j ≤ i} min(1, (m - j + 1) p_(j))``;
    rejecting where ``p̃ < α`` controls the family-wise error rate at ``α``.

    Args:
        pvalues: ``m ≥ 0`` p-values in ``[0, 1]``.

    Returns:
        The adjusted p-values, one per input, in the same order.

    Raises:
        UsageError: If a p-value is not a number in ``[0, 1]``.
    """
    if len(pvalues) == 0:
        return []
    array = _finite(pvalues, "p-values")
    if ((array < 0.0) | (array > 1.0)).any():
        raise UsageError(f"p-values must lie in [0, 1], got {list(pvalues)!r}")
    m = len(array)
    order = np.argsort(array, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * array[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def ties_with_best(
    per_row_values: Mapping[str, Sequence[float]],
    better: Literal["lower", "higher"] = "lower",
    alpha: float = 0.05,
) -> dict[str, bool]:
    """Which rows are statistically indistinguishable from the best one.

    The best row has the best mean over replicates (the first such row on a
    tie).  Every other row is compared with it by :func:`paired_t_pvalue`
    (replicate ``i`` of each row pairs with replicate ``i`` of the best), the
    ``m`` p-values are adjusted by :func:`holm`, and a row is tied when its
    adjusted p-value is ``≥ alpha``.  Rows with identical values are always tied.

    Args:
        per_row_values: Row name → one value per replicate; every row holds the
            same ``K ≥ 2`` replicates, in the same order.
        better: ``"lower"`` or ``"higher"``, as in :class:`~bench.contracts.MetricSpec`.
        alpha: Family-wise significance level, in ``(0, 1)``.

    Returns:
        Row name → whether it is tied with the best (``True`` for the best itself), in the input's order.

    Raises:
        UsageError: If there are no rows, rows differ in length or hold fewer
            than 2 values, a value is not finite, or ``better`` or ``alpha`` is invalid.
    """
    if not per_row_values:
        raise UsageError("ties_with_best needs at least one row")
    if better not in ("lower", "higher"):
        raise UsageError(f"better = {better!r} is not a direction; use 'lower' or 'higher'")
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"alpha = {alpha!r} is not a significance level; use a value in (0, 1), e.g. 0.05")
    rows = {name: _finite(values, f"values of row {name!r}") for name, values in per_row_values.items()}
    lengths = {len(values) for values in rows.values()}
    if len(lengths) != 1 or lengths.pop() < 2:
        counts = ", ".join(f"{name}: {len(values)}" for name, values in rows.items())
        raise UsageError(f"paired comparisons need the same ≥ 2 replicates in every row, got {counts}")
    sign = 1.0 if better == "lower" else -1.0
    best = min(rows, key=lambda name: sign * rows[name].mean())
    others = [name for name in rows if name != best]
    adjusted = holm([paired_t_pvalue(rows[name], rows[best]) for name in others])
    tied = {best: True, **{name: p >= alpha for name, p in zip(others, adjusted)}}
    return {name: tied[name] for name in rows}


def overlapping(interval_a: tuple[float, float], interval_b: tuple[float, float]) -> bool:
    """Whether two closed intervals ``(low, high)`` share a point.

    The Pareto frontier treats two latencies whose intervals overlap as equal,
    so no row is starred for being faster within timing noise.  A point
    estimate without an interval is the interval ``(x, x)``.

    Raises:
        UsageError: If a bound is NaN or an interval has ``low > high``.
    """
    for low, high in (interval_a, interval_b):
        if math.isnan(low) or math.isnan(high) or low > high:
            raise UsageError(f"an interval needs low ≤ high, got ({low!r}, {high!r})")
    return interval_a[0] <= interval_b[1] and interval_b[0] <= interval_a[1]
