"""Accuracy–cost Pareto fronts over summary entries, and their figure.

A summary entry (one sampler on one target over its replicate seeds, see
:func:`bench.results.summarize`) carries the mean counted ``nfe``, the
``latency_ms`` and every metric's mean with its 95 % t-interval.  Lower is
better on both axes.  Latencies are noisy, so two whose intervals overlap
count as equal (:func:`bench.stats.overlapping`): no sampler reaches the front
by being faster within timing noise.  The latency interval of an entry is its
t-interval over replicates when it has ``K > 1`` ok seeds; with one seed it is
``mean ± std`` of that seed's timed calls (the row's ``latency_ms``).  NFE is
exact (a point interval).  The exact reference sampler (``target-draws``) is
not a competitor: the noise floor is drawn as a band.  On the NFE panels, the
members of one solver family (names equal but for their number, see
:func:`curve_key`) are joined into a curve when a run holds two or more of them;
one-pass rows stay points.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bench.cache import atomic_write_bytes
from bench.contracts import REFERENCE_SAMPLER
from bench.results import CHANCE_LEVELS

Entry = Mapping[str, Any]
Row = Mapping[str, Any]
Interval = tuple[float, float]

#: Cost axes and their labels.
COSTS: dict[str, str] = {
    "latency_ms": "latency [ms] (median per seed)",
    "nfe": "counted NFE (evaluations per sample)",
}

#: Axis labels of the usual metrics (others are labelled by their key).
METRIC_LABELS: dict[str, str] = {
    "mmd2": "MMD² (paper kernel)",
    "c2st": "C2ST accuracy (0.5 = indistinguishable)",
    "swd": "sliced Wasserstein distance",
    "energy": "energy distance",
    "mmd2_median": "MMD² (median-heuristic kernel)",
}

#: Metrics drawn on a linear axis (bounded, not spanning decades).
LINEAR_METRICS = frozenset({"c2st"})
#: Their chance level (a C2ST accuracy of 0.5: indistinguishable).
CHANCE = CHANCE_LEVELS["c2st"]


#: The number of a family member's name: the last ``-<digits>`` before its end or a ``+``/``@`` suffix.
_MEMBER_NUMBER = re.compile(r"-\d+(?=$|[+@])")


def curve_key(name: str) -> str | None:
    """The family curve a sampler belongs to: its name with its number replaced by ``<n>``.

    ``ddim-8+ld3@exact`` → ``ddim-<n>+ld3@exact``, ``dpm-solver-2-20`` → ``dpm-solver-2-<n>``;
    ``None`` for a name without a number (``pings``).  The variant and schedule suffixes stay, so
    ``ddim-8`` and ``ddim-8@exact`` lie on different curves.
    """
    matches = list(_MEMBER_NUMBER.finditer(name))
    if not matches:
        return None
    last = matches[-1]
    return f"{name[:last.start()]}-<n>{name[last.end():]}"


def curve_style(key: str) -> tuple[str, str]:
    """Split a curve key into its solver (the colour) and its variant (the line style).

    ``ddim-<n>+ld3@exact`` → ``("ddim", "+ld3@exact")``; ``flow-matching-<n>`` → ``("flow-matching", "")``.
    """
    solver, _, variant = key.partition("-<n>")
    return solver, variant


#: Line styles of the variants, in order of first appearance (the plain learned variant is solid).
VARIANT_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))
#: Above this many competing rows, the latency panels label only front and one-pass rows.
LABELLED_ROWS = 40
#: Above this many family curves, the NFE panels' legend lists solvers and variants under the axes.
MAX_LEGEND_CURVES = 8


def family_curves(points: Iterable[tuple[str, float, float]]) -> dict[str, list[tuple[float, float]]]:
    """Curves of the families with two or more iterative members among ``(name, NFE, value)`` points.

    One-pass points (NFE ≤ 1) never join a curve.

    Returns:
        Curve key (:func:`curve_key`) → its ``(NFE, value)`` points sorted by NFE; only keys of ≥ 2 points.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for name, nfe, value in points:
        key = curve_key(name)
        if key is not None and nfe > 1:
            curves.setdefault(key, []).append((nfe, value))
    return {key: sorted(members) for key, members in curves.items() if len(members) >= 2}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(
    points: Sequence[tuple[float, float]], cost_intervals: Sequence[Interval | None] | None = None
) -> list[bool]:
    """Which points are on the accuracy–cost front when lower is better in both coordinates.

    Points are visited from the best value down (lower cost first among equal
    values).  A point joins the front when its cost interval lies entirely
    below the interval of every point already on it, i.e. when it is clearly
    cheaper than every front point at least as accurate.  Only front points
    exclude others: "overlapping" is not transitive, so a point that overlaps
    two others must not knock out a third that is clearly cheaper than the
    front.  With point intervals (``cost_intervals`` ``None``) this is the usual
    Pareto front: a point is off it when another is ``<=`` in both coordinates
    and ``<`` in one.  Exact duplicates do not exclude each other, so a tie on
    the front keeps every copy.  Points with a non-finite coordinate are never
    on the front.

    Args:
        points: ``(cost, value)`` pairs.
        cost_intervals: Per point, ``(low, high)`` of its cost, or ``None`` for the point ``(cost, cost)``.

    Returns:
        One flag per point, in input order.
    """
    intervals = [
        (c, c) if cost_intervals is None or cost_intervals[i] is None else tuple(cost_intervals[i])
        for i, (c, _) in enumerate(points)
    ]
    order = sorted((i for i, (c, v) in enumerate(points) if _finite(c) and _finite(v)),
                   key=lambda i: (points[i][1], points[i][0]))
    front: list[int] = []
    for i in order:
        if all(intervals[i][1] < intervals[j][0] or points[i] == points[j] for j in front):
            front.append(i)
    on_front = set(front)
    return [i in on_front for i in range(len(points))]


def latency_interval(entry: Entry, rows: Iterable[Row] = ()) -> Interval | None:
    """The interval a latency is compared by, in ms.

    ``K > 1`` ok seeds: the summary's 95 % t-interval over the seeds' median
    latencies.  One seed: ``mean ± std`` of that seed's timed calls, read
    from its row in ``rows`` (the point ``(mean, mean)`` if it is missing).

    Args:
        entry: A summary entry with ``latency_ms``.
        rows: Result rows; only the entry's own ok row is read.

    Returns:
        ``(low, high)``, or ``None`` when the entry has no latency.
    """
    latency = entry.get("latency_ms") or {}
    if not _finite(latency.get("mean")):
        return None
    if _finite(latency.get("ci_low")) and _finite(latency.get("ci_high")):
        return float(latency["ci_low"]), float(latency["ci_high"])
    for row in rows:
        if (row.get("sampler"), row.get("target"), row.get("status")) == (entry["sampler"], entry["target"], "ok") \
                and row.get("seed") in entry.get("ok_seeds", [row.get("seed")]):
            timed = row.get("latency_ms") or {}
            if _finite(timed.get("mean")) and _finite(timed.get("std")):
                return timed["mean"] - timed["std"], timed["mean"] + timed["std"]
    return float(latency["mean"]), float(latency["mean"])


def _cost(entry: Entry, cost_key: str, rows: Iterable[Row]) -> tuple[Any, Interval | None]:
    """``(cost, interval)`` of an entry on one cost axis."""
    if cost_key == "latency_ms":
        return (entry.get("latency_ms") or {}).get("mean"), latency_interval(entry, rows)
    if cost_key == "nfe":
        return entry.get("nfe"), None
    raise KeyError(f"unknown cost {cost_key!r}; available: {', '.join(COSTS)}")


def _metric_mean(entry: Entry, metric: str) -> Any:
    return ((entry.get("metrics") or {}).get(metric) or {}).get("mean")


def _competitors(entries: Iterable[Entry]) -> list[Entry]:
    """Entries of real samplers (not the reference) ok on every seed (a partial one would compete on fewer seeds)."""
    return [e for e in entries if e.get("status") == "ok" and e.get("sampler") != REFERENCE_SAMPLER]


def frontier_names(entries: Iterable[Entry], cost_key: str, metric: str, rows: Iterable[Row] = ()) -> set[str]:
    """Samplers on the Pareto front of ``(cost, metric mean)`` among one target's summary entries.

    Entries ok on every seed with a finite cost and metric compete; the
    reference sampler (:data:`REFERENCE_SAMPLER`) never does.  Latencies
    compare by :func:`latency_interval` (overlapping intervals are equal).

    Args:
        entries: Summary entries of a single target.
        cost_key: ``"latency_ms"`` or ``"nfe"``.
        metric: Metric key, lower is better.
        rows: The result rows, for the timing spread of one-seed entries.

    Raises:
        ValueError: The entries span several targets (fronts are per target).
        KeyError: Unknown ``cost_key``.
    """
    entries = list(entries)
    rows = list(rows)
    targets = {entry.get("target") for entry in entries}
    if len(targets) > 1:
        raise ValueError(f"a Pareto front is per target; entries span {sorted(map(str, targets))}")
    competitors = _competitors(entries)
    costs = [_cost(entry, cost_key, rows) for entry in competitors]
    points = [(cost, _metric_mean(entry, metric)) for (cost, _), entry in zip(costs, competitors)]
    on_front = pareto_front(points, [interval for _, interval in costs])
    return {entry["sampler"] for entry, on in zip(competitors, on_front) if on}


def noise_floor(floor: Mapping[str, Any] | None, reference: Entry | None = None, metric: str = "mmd2") -> float | None:
    """Top of the noise-floor band of one metric.

    The larger of the floor's ``mean + 2·std`` over its pairs of exact draw
    sets (the largest magnitude of its values when there is no spread, e.g. a
    version-1 floor of one pair) and the magnitude of the reference sampler's
    mean.  Magnitudes, because an unbiased estimate (MMD², energy) of a
    perfect sampler scatters around zero: a negative value is as much noise
    as a positive one.

    Args:
        floor: ``floors[target]["metrics"][metric]`` (``mean``, ``std``, ``values``), or ``None``.
        reference: The ``target-draws`` summary entry, or ``None``.
        metric: Which metric of ``reference`` to read.

    Returns:
        The floor, or ``None`` if neither provides a non-zero one.
    """
    candidates = []
    if floor:
        if _finite(floor.get("mean")) and _finite(floor.get("std")):
            candidates.append(floor["mean"] + 2 * floor["std"])
        else:
            candidates += list(floor.get("values") or []) + [floor.get("mean")]
    if reference is not None:
        candidates.append(_metric_mean(reference, metric))
    magnitudes = [abs(float(v)) for v in candidates if _finite(v) and v != 0]
    return max(magnitudes) if magnitudes else None


def _curve_count(entries: Iterable[Entry]) -> int:
    """How many family curves the NFE panels of these entries draw."""
    return len(family_curves((e["sampler"], e.get("nfe"), 0.0) for e in _competitors(entries) if _finite(e.get("nfe"))))


def _draw_panel(
    ax: Any, entries: list[Entry], rows: list[Row], cost_key: str, metric: str, floor: float | None,
    legend_below: bool = False,
) -> None:
    """One panel: every competing sampler a point with error bars, the front a step line, the floor a band.

    Points are labelled by name, except, with more than :data:`LABELLED_ROWS`
    competitors, on the latency panel, where only front and one-pass rows are.
    On the NFE panel, families of ≥ 2 iterative members are also curves
    (colour: the solver, line style: the variant, see :func:`curve_style`),
    named in the legend instead of point by point; with ``legend_below`` the
    legend goes under the axes, one entry per solver and per variant.
    """
    from adjustText import adjust_text
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    points = []
    for entry in _competitors(entries):
        cost, interval = _cost(entry, cost_key, rows)
        summary = (entry.get("metrics") or {}).get(metric) or {}
        if _finite(cost) and _finite(summary.get("mean")):
            points.append((entry["sampler"], cost, interval, summary, entry.get("nfe")))
    linear = metric in LINEAR_METRICS
    ax.set_xlabel(COSTS[cost_key], fontsize=8)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    ax.set_xscale("symlog" if cost_key == "nfe" else "log", **({"linthresh": 1.0} if cost_key == "nfe" else {}))
    ax.set_yscale("linear" if linear else "log")
    ax.grid(True, which="major", alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, f"no {metric} values", transform=ax.transAxes, ha="center", va="center")
        return
    values = [s["mean"] for _, _, _, s, _ in points]
    positive = [v for v in values if v > 0] + ([floor] if floor else [])
    # Unbiased estimates can be ≤ 0 (at the floor): pin them to the axis bottom as ▼.
    bottom = -math.inf if linear else (min(positive) / 3 if positive else 1e-6)
    chance = CHANCE_LEVELS.get(metric)
    ranked = [s["mean"] if chance is None else float(np.mean(np.abs(np.asarray(s["values"]) - chance)))
              for _, _, _, s, _ in points]  # C2ST: distance to chance, as the leaderboard ranks it
    on_front = pareto_front([(c, v) for (_, c, _, _, _), v in zip(points, ranked)], [p[2] for p in points])
    curves = family_curves((n, c, max(s["mean"], bottom)) for n, c, _, s, _ in points) if cost_key == "nfe" else {}
    palette = colormaps["tab20"].colors[::2] + colormaps["tab20"].colors[1::2]  # the ten strong hues first
    solvers = list(dict.fromkeys(curve_style(key)[0] for key in curves))
    variants = sorted({curve_style(key)[1] for key in curves}, key=lambda v: (v != "", v != "@exact", v))
    for key, members in curves.items():
        solver, variant = curve_style(key)
        ax.plot(*zip(*members), color=palette[solvers.index(solver) % len(palette)],
                ls=VARIANT_STYLES[variants.index(variant) % len(VARIANT_STYLES)], lw=1, alpha=0.8, zorder=1,
                label=key)
    label_all = cost_key == "nfe" or len(points) <= LABELLED_ROWS
    texts = []
    for (name, cost, interval, summary, nfe), on in zip(points, on_front):
        shown = max(summary["mean"], bottom)
        low, high = summary.get("ci_low"), summary.get("ci_high")
        yerr = None
        if _finite(low) and _finite(high):
            yerr = [[max(shown - max(low, bottom), 0.0)], [max(max(high, bottom) - shown, 0.0)]]
        xerr = [[max(cost - interval[0], 0.0)], [max(interval[1] - cost, 0.0)]] if interval else None
        color = "tab:red" if on else "tab:gray"
        ax.errorbar([cost], [shown], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=0.8, capsize=2,
                    alpha=0.7, zorder=2)
        ax.scatter([cost], [shown], s=28, zorder=3, marker="v" if shown > summary["mean"] else "o",
                   facecolors=color if on else "none", edgecolors=color)
        one_pass = _finite(nfe) and nfe <= 1
        if (curve_key(name) not in curves or one_pass) if label_all else (on or one_pass):
            texts.append(ax.text(cost, shown, name, fontsize=6, zorder=4))  # a curve's members are in the legend
    front = sorted((c, max(s["mean"], bottom)) for (_, c, _, s, _), on in zip(points, on_front) if on)
    right = max(c for _, c, _, _, _ in points) * 1.5
    ax.plot([c for c, _ in front] + [right], [v for _, v in front] + [front[-1][1]],
            drawstyle="steps-post", color="tab:red", lw=1, label="Pareto front")
    if floor:
        # C2ST's floor sits just above chance (0.5): the band is symmetric about chance.
        ax.axhspan(2 * CHANCE - floor if linear else bottom / 3, floor,
                   color="tab:gray", alpha=0.2, lw=0, label="noise floor (mean + 2 std)")
    # Head room above the highest point and room left of the cheapest for labels to move into.
    shown = [max(s["mean"], bottom) for _, _, _, s, _ in points]
    if linear:
        low = min(shown + ([2 * CHANCE - floor] if floor else []))
        span = max(shown) - low or 0.1
        ax.set_ylim(low - 0.05 * span, max(shown) + 0.15 * span)
    else:
        ax.set_ylim(bottom / 3, max(shown) * 4)
    ax.set_xlim(min(c for _, c, _, _, _ in points) / 3, right * 2)
    if legend_below and curves:
        handles = [Line2D([], [], color=palette[i % len(palette)], label=solver) for i, solver in enumerate(solvers)]
        handles += [Line2D([], [], color="0.3", ls=VARIANT_STYLES[i % len(VARIANT_STYLES)],
                           label=f"…{variant}" if variant else "… (learned model)") for i, variant in enumerate(variants)]
        handles += [h for h, label in zip(*ax.get_legend_handles_labels()) if label not in curves]
        ax.legend(handles=handles, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4)
    else:
        ax.legend(fontsize=6, loc="best", ncol=2 if len(curves) > 8 else 1)
    # Labels repel each other and the markers; a thin line ties a moved label to its point.
    adjust_text(texts, x=[c for _, c, _, _, _ in points], y=shown, ax=ax, expand=(1.15, 1.5),
                force_text=(0.3, 0.6), arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.4})


def plot_pareto(
    entries: Iterable[Entry],
    target_name: str,
    path: str | Path,
    metrics: Sequence[str] = ("mmd2", "swd"),
    floors: Mapping[str, Mapping[str, Any]] | None = None,
    rows: Iterable[Row] = (),
) -> Path:
    """Write the accuracy–cost figure of one target as a PNG.

    Two rows of panels, one column per metric: the metric's mean over seeds
    (log scale; C2ST linear) against latency (top) and against counted NFE
    (bottom).  Every competing sampler is a point with error bars (the
    metric's 95 % t-interval when it has several seeds; the latency interval of
    :func:`latency_interval`), filled red when on the front, ▼ when its
    estimate is ≤ 0; labels are moved apart by adjustText; the front is a
    step line and the noise floor (:func:`noise_floor`) a grey band (around
    0.5 for C2ST).  On the NFE row, each family with two or more iterative
    members (:func:`family_curves`) is also a curve (colour: solver, line
    style: variant) named in the legend, and its points lose their own labels;
    one-pass rows stay labelled points.  Large runs stay readable: above
    :data:`LABELLED_ROWS` competitors the latency row labels only front and
    one-pass rows, and above :data:`MAX_LEGEND_CURVES` curves the legend sits
    under the NFE row with one entry per solver and per variant.  Written
    atomically.

    Args:
        entries: Summary entries (any targets; only ``target_name``'s are drawn).
        target_name: The target to draw.
        path: Output file.
        metrics: Metric keys, lower is better.
        floors: ``floors[target_name]["metrics"]`` of the results document: metric → ``mean``, ``std``, ``values``.
        rows: The result rows, for the timing spread of one-seed entries.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = [entry for entry in entries if entry.get("target") == target_name]
    rows = [row for row in rows if row.get("target") == target_name]
    reference = next((entry for entry in entries if entry.get("sampler") == REFERENCE_SAMPLER), None)
    # Many curves: their legend (one entry per solver and per variant) goes under the NFE panels.
    legend_below = _curve_count(entries) > MAX_LEGEND_CURVES
    height = 10.0 + (1.3 if legend_below else 0.0)
    fig = Figure(figsize=(7.0 * len(metrics), height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(metrics), squeeze=False)
    # Fixed spacing: adjustText redraws the figure, and a layout engine would rerun on every draw.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=(0.6 + (1.3 if legend_below else 0.0)) / height,
                        top=1 - 0.8 / height, wspace=0.16, hspace=0.14)
    for column, metric in enumerate(metrics):
        floor = noise_floor((floors or {}).get(metric), reference, metric)
        for row_index, cost_key in enumerate(("latency_ms", "nfe")):
            _draw_panel(axes[row_index][column], entries, rows, cost_key, metric, floor,
                        legend_below=legend_below and cost_key == "nfe")
    several = any(len(entry.get("ok_seeds", ())) > 1 for entry in entries)
    bars = ("95 % t-intervals over seeds" if several
            else "one seed: latency mean ± std of the timed calls, no metric interval")
    labelled = "" if len(_competitors(entries)) <= LABELLED_ROWS else "; latency panels label front and one-pass rows"
    fig.suptitle(f"{target_name}: fidelity against cost (lower-left is better)\nbars: {bars}{labelled}")
    path = Path(path)
    atomic_write_bytes(path, lambda handle: fig.savefig(handle, format="png", dpi=130))
    return path
