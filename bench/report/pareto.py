"""Accuracy–cost Pareto fronts over result rows, and their figure.

A result row (one sampler on one target, see :mod:`bench.runner`) carries
``sampler``, ``target``, ``status``, the measured ``nfe``, ``latency_ms``
statistics and ``metrics``.  A sampler is on the front of a (cost, metric)
pair when no other sampler is at least as cheap *and* at least as accurate
with one of the two strictly better (both lower-is-better).  The exact
reference sampler (``target-draws``) is not a competitor: its metric values
are the noise floor, drawn as a band.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from bench.cache import atomic_write_bytes
from bench.contracts import REFERENCE_SAMPLER

Row = Mapping[str, Any]

#: Cost axes: name -> (axis label, how to read it from a row).
COSTS: dict[str, tuple[str, Callable[[Row], Any]]] = {
    "latency_ms": ("median latency [ms]", lambda row: (row.get("latency_ms") or {}).get("median")),
    "nfe": ("counted NFE (evaluations per sample)", lambda row: row.get("nfe")),
}

#: Axis labels of the usual metrics (others are labelled by their key).
METRIC_LABELS: dict[str, str] = {
    "mmd2": "MMD² (paper kernel)",
    "swd": "sliced Wasserstein distance",
    "energy": "energy distance",
    "mmd2_median": "MMD² (median-heuristic kernel)",
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points are Pareto-optimal when lower is better in both coordinates.

    A point is dominated when another point is ``<=`` in both coordinates and
    ``<`` in at least one.  Exact duplicates do not dominate each other, so a
    tie on the front keeps every copy.  Points with a non-finite coordinate
    are never on the front and never dominate.

    Args:
        points: ``(cost, value)`` pairs.

    Returns:
        One flag per point, in input order.
    """
    valid = [_finite(c) and _finite(v) for c, v in points]
    # Sweep by cost, then value: a point is on the front iff its value is below
    # every value seen at strictly lower cost, and no equal-cost point is lower.
    order = sorted((i for i, ok in enumerate(valid) if ok), key=lambda i: (points[i][0], points[i][1]))
    on_front = [False] * len(points)
    best_before = math.inf  # lowest value among points of strictly lower cost
    k = 0
    while k < len(order):
        cost = points[order[k]][0]
        group = [i for i in order[k:] if points[i][0] == cost]
        lowest = points[group[0]][1]  # the group is sorted by value
        for i in group:
            on_front[i] = points[i][1] == lowest and lowest < best_before
        best_before = min(best_before, lowest)
        k += len(group)
    return on_front


def _row_cost(row: Row, cost_key: str) -> Any:
    try:
        return COSTS[cost_key][1](row)
    except KeyError:
        raise KeyError(f"unknown cost {cost_key!r}; available: {', '.join(COSTS)}") from None


def _competitors(rows: Iterable[Row]) -> list[Row]:
    """Successful rows of real samplers (not the reference)."""
    return [row for row in rows if row.get("status") == "ok" and row.get("sampler") != REFERENCE_SAMPLER]


def frontier_names(rows: Iterable[Row], cost_key: str, metric: str) -> set[str]:
    """Samplers on the Pareto front of ``(cost, metric)`` among one target's rows.

    Only rows with ``status == "ok"`` and a finite cost and metric compete;
    the reference sampler (:data:`REFERENCE_SAMPLER`) never does.

    Args:
        rows: Result rows of a single target.
        cost_key: ``"latency_ms"`` (median latency) or ``"nfe"``.
        metric: Key into ``row["metrics"]``, lower is better.

    Raises:
        ValueError: The rows span several targets (fronts are per target).
        KeyError: Unknown ``cost_key``.
    """
    rows = list(rows)
    targets = {row.get("target") for row in rows}
    if len(targets) > 1:
        raise ValueError(f"a Pareto front is per target; rows span {sorted(map(str, targets))}")
    competitors = _competitors(rows)
    points = [(_row_cost(row, cost_key), (row.get("metrics") or {}).get(metric)) for row in competitors]
    return {row["sampler"] for row, on in zip(competitors, pareto_front(points)) if on}


def noise_floor(rows: Iterable[Row], metric: str) -> float | None:
    """The largest magnitude of the reference row's ``metric`` and any row's ``<metric>_floor``.

    Magnitudes, because an unbiased estimate (MMD², energy) of a perfect
    sampler scatters around zero: a negative value is as much noise as a
    positive one.

    Returns:
        The floor, or ``None`` if no row provides a non-zero one.
    """
    candidates = []
    for row in rows:
        if row.get("status") != "ok":
            continue
        metrics = row.get("metrics") or {}
        candidates.append(metrics.get(f"{metric}_floor"))
        if row.get("sampler") == REFERENCE_SAMPLER:
            candidates.append(metrics.get(metric))
    magnitudes = [abs(float(v)) for v in candidates if _finite(v) and v != 0]
    return max(magnitudes) if magnitudes else None


def _draw_panel(ax: Any, rows: list[Row], cost_key: str, metric: str, floor: float | None) -> None:
    """One panel: every competing sampler a labelled point, the front a step line, the floor a band."""
    points = [
        (row["sampler"], _row_cost(row, cost_key), (row.get("metrics") or {}).get(metric))
        for row in _competitors(rows)
    ]
    points = [(name, c, v) for name, c, v in points if _finite(c) and _finite(v)]
    ax.set_xlabel(COSTS[cost_key][0], fontsize=8)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    ax.set_xscale("symlog" if cost_key == "nfe" else "log", **({"linthresh": 1.0} if cost_key == "nfe" else {}))
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, f"no {metric} values", transform=ax.transAxes, ha="center", va="center")
        return
    positive = [v for _, _, v in points if v > 0] + ([floor] if floor else [])
    # Unbiased estimates can be ≤ 0 (at the floor): pin them to the axis bottom as ▼.
    bottom = min(positive) / 3 if positive else 1e-6
    on_front = pareto_front([(c, v) for _, c, v in points])
    # Samplers of equal cost (e.g. every NFE = 1 method) share an x: alternate their labels right/left.
    label_side = {}
    for cost in {c for _, c, _ in points}:
        same = sorted((v, name) for name, c, v in points if c == cost)
        label_side.update({name: k % 2 for k, (_, name) in enumerate(same)})
    for (name, cost, value), on in zip(points, on_front):
        shown = max(value, bottom)
        ax.scatter(
            [cost], [shown], s=28, zorder=3,
            marker="v" if value <= bottom else "o",
            facecolors="tab:red" if on else "none", edgecolors="tab:red" if on else "tab:gray",
        )
        left = label_side[name]
        ax.annotate(name, (cost, shown), xytext=(-4 if left else 4, 3), textcoords="offset points",
                    ha="right" if left else "left", fontsize=6)
    front = sorted((c, max(v, bottom)) for (_, c, v), on in zip(points, on_front) if on)
    right = max(c for _, c, _ in points) * 1.5
    ax.plot(
        [c for c, _ in front] + [right], [v for _, v in front] + [front[-1][1]],
        drawstyle="steps-post", color="tab:red", lw=1, label="Pareto front",
    )
    if floor:
        ax.axhspan(bottom / 3, floor, color="tab:gray", alpha=0.2, lw=0, label="noise floor")
    ax.set_ylim(bottom=bottom / 3)
    # Room for the labels of the cheapest (left-hand) and costliest samplers.
    ax.set_xlim(min(c for _, c, _ in points) / 4, right * 2)
    ax.legend(fontsize=6, loc="best")


def plot_pareto(
    rows: Iterable[Row],
    target_name: str,
    path: str | Path,
    metrics: Sequence[str] = ("mmd2", "swd"),
) -> Path:
    """Write the accuracy–cost figure of one target as a PNG.

    Two rows of panels, one column per metric: metric (log scale) against
    median latency (top) and against measured NFE (bottom).  Every competing
    sampler is a labelled point (filled red when on the front, ▼ when its
    estimate is ≤ 0), the front is a step line, and the noise floor
    (:func:`noise_floor`) a grey band.  Written atomically.

    Args:
        rows: Result rows (any targets; only ``target_name``'s are drawn).
        target_name: The target to draw.
        path: Output file.
        metrics: Metric keys, lower is better.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [row for row in rows if row.get("target") == target_name]
    fig = Figure(figsize=(5.5 * len(metrics), 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(metrics), squeeze=False)
    for column, metric in enumerate(metrics):
        floor = noise_floor(rows, metric)
        for row_index, cost_key in enumerate(("latency_ms", "nfe")):
            _draw_panel(axes[row_index][column], rows, cost_key, metric, floor)
    fig.suptitle(f"{target_name}: fidelity against cost (lower-left is better)")
    path = Path(path)
    atomic_write_bytes(path, lambda handle: fig.savefig(handle, format="png", dpi=130))
    return path
