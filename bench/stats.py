"""Statistics over replicate seeds: Student-t intervals, paired t-tests and Holm's correction.

A row's metric is measured once per replicate seed (its own training, reference
set and sampling noise).  :func:`t_interval` turns the replicates into a 95 %
Student-t interval (the summary's ``ci_low``/``ci_high``, :mod:`bench.results`).
Rows of one target are compared with the best one by a paired t-test across
replicates (:func:`paired_t_pvalue`: with common random numbers, replicate ``i``
of every row shares seed ``i``) and Holm's correction over the rows compared
(:func:`holm`); :func:`bench.results.compare_with_best` gives the verdict.
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
