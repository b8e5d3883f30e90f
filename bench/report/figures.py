"""Figures of a run: sample panels and training curves per target, fidelity against dimension per family."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from bench.cache import atomic_write_bytes
from bench.contracts import Target


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Height kept free for a figure's title, in inches.
TITLE_INCHES = 0.6


def _title(fig, text: str) -> None:
    """The figure title, a fixed distance from the top edge whatever the figure's height."""
    fig.suptitle(text, y=1 - 0.12 / fig.get_figheight(), va="top")


def _tight_under_title(fig) -> None:
    """``tight_layout`` below the figure title (plain ``tight_layout`` lets panel titles run into it)."""
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))


def save_figure(fig, path: Path) -> Path:
    plt = _pyplot()
    atomic_write_bytes(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


#: Reference quantiles the sample axes span (robust to a few far-off points), and the margin added on each side.
LIMIT_QUANTILES = (0.005, 0.995)
LIMIT_MARGIN = 0.1
#: Coordinates whose pairs the sample figure shows for d > 2: (x1,x2), (x1,x3), (x2,x3).
PAIRED_COORDINATES = 3


def axis_limits(reference: np.ndarray, quantiles: tuple[float, float] = LIMIT_QUANTILES,
                margin: float = LIMIT_MARGIN) -> np.ndarray:
    """Per-coordinate axis limits from the reference draws: robust quantiles widened by a margin.

    Args:
        reference: Exact target draws, shape ``(n, d)``.
        quantiles: Lower and upper quantile of each coordinate, in ``[0, 1]``.
        margin: Fraction of each coordinate's quantile range added below and above.

    Returns:
        ``(d, 2)`` array of ``(low, high)``; a coordinate without spread gets ``± 1``.
    """
    low, high = np.quantile(np.asarray(reference, dtype=np.float64), quantiles, axis=0)
    pad = margin * (high - low)
    pad = np.where(pad > 0, pad, 1.0)
    return np.stack([low - pad, high + pad], axis=1)


def count_outside(points: np.ndarray, limits: np.ndarray) -> int:
    """How many points have a coordinate outside its limits (non-finite points count as outside).

    Args:
        points: Shape ``(n, k)``.
        limits: Shape ``(k, 2)``, ``(low, high)`` per coordinate.
    """
    points = np.asarray(points, dtype=np.float64)
    inside = (points >= limits[:, 0]) & (points <= limits[:, 1])
    return int((~inside.all(axis=1)).sum())


def coordinate_pairs(dim: int, first: int = PAIRED_COORDINATES) -> list[tuple[int, ...]]:
    """Coordinates of the projection panels: every pair among the first ``first`` ones; ``[(0,)]`` for d = 1."""
    if dim == 1:
        return [(0,)]
    return list(itertools.combinations(range(min(dim, first)), 2))


def projection_panel(ax, generated, reference, title: str, coords: tuple[int, ...] = (0, 1)) -> None:
    """Scatter generated (orange) over target draws (blue) on ``coords``, limits from the reference draws.

    The axes span :func:`axis_limits` of the reference, so a few far-off
    generated points cannot shrink the picture to a dot; the title says how
    many generated points fall outside.  One coordinate: overlaid histograms.

    Args:
        ax: Matplotlib axes.
        generated: ``(n, d)`` tensor or array, or ``None`` (reference only).
        reference: ``(m, d)`` tensor or array of exact target draws.
        title: Panel title (the sampler's name).
        coords: One or two coordinate indices (0-based).
    """
    reference = np.asarray(reference, dtype=np.float64)[:, list(coords)]
    generated = None if generated is None else np.asarray(generated, dtype=np.float64)[:, list(coords)]
    limits = axis_limits(reference)
    labels = [f"$x_{{{c + 1}}}$" for c in coords]
    if len(coords) == 1:
        bins = np.linspace(*limits[0], 50)
        ax.hist(reference[:, 0], bins=bins, density=True, alpha=0.5, color="tab:blue", label="target")
        if generated is not None:
            ax.hist(np.clip(generated[:, 0], *limits[0]), bins=bins, density=True, alpha=0.5, color="tab:orange",
                    label="generated")
        ax.set_xlim(*limits[0])
    else:
        ax.scatter(reference[:, 0], reference[:, 1], s=1, alpha=0.25, label="target", color="tab:blue",
                   rasterized=True)
        if generated is not None:
            ax.scatter(generated[:, 0], generated[:, 1], s=1, alpha=0.25, label="generated", color="tab:orange",
                       rasterized=True)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_ylabel(labels[1], fontsize=8, labelpad=1)
    ax.set_xlabel(labels[0], fontsize=8, labelpad=1)
    ax.tick_params(labelsize=6)
    if generated is not None:
        title += f"\n{count_outside(generated, limits)} of {len(generated)} outside"
    ax.set_title(title, fontsize=8)


def _has_own_panel(target: Target | None) -> bool:
    return target is not None and type(target).plot_panel is not Target.plot_panel


def sample_panels(
    target: Target | None,
    target_name: str,
    samples: Mapping[str, np.ndarray],
    order: list[str],
    path: Path,
) -> Path | None:
    """The sample figure of one target.

    A target with its own :meth:`Target.plot_panel` gets one panel per sampler
    drawn by it.  Otherwise (or without the target plugin installed) each
    sampler gets :func:`projection_panel` on every pair of the first three
    coordinates (the x1–x2 plane for d = 2), axes from the reference draws.

    ``samples`` maps ``"<target>/<sampler>"`` (and ``"<target>/reference"``) to arrays.
    """
    reference = samples.get(f"{target_name}/reference")
    names = [name for name in order if f"{target_name}/{name}" in samples]
    if reference is None or not names:
        return None
    plt = _pyplot()
    title = f"{target_name}: generated (orange) vs held-out target draws (blue)"
    if _has_own_panel(target):
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows), squeeze=False, sharex=True,
                                 sharey=True)
        ref = torch.from_numpy(reference)
        for ax, name in zip(axes.flat, names):
            target.plot_panel(ax, torch.from_numpy(samples[f"{target_name}/{name}"]), ref, name)
        used = len(names)
    else:
        pairs = coordinate_pairs(reference.shape[1])
        per_row = max(1, 6 // len(pairs))  # samplers side by side: 6 panels a row
        cols = per_row * len(pairs)
        rows = math.ceil(len(names) / per_row)
        panel_title_inches = 0.4  # two lines above each panel
        height = 2.6 * rows + TITLE_INCHES + panel_title_inches
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, height), squeeze=False)
        # Fixed spacing: a layout engine costs seconds per draw with ~70 panels.  Room for two-line titles.
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.5 / height,
                            top=1 - (TITLE_INCHES + panel_title_inches) / height, wspace=0.38, hspace=0.55)
        flat = list(axes.flat)
        for index, name in enumerate(names):
            for k, coords in enumerate(pairs):
                projection_panel(flat[index * len(pairs) + k], samples[f"{target_name}/{name}"], reference, name,
                                 coords)
        used = len(names) * len(pairs)
        title += (f"; axes span the target's {LIMIT_QUANTILES[0]:.1%}–{LIMIT_QUANTILES[1]:.1%} quantiles "
                  f"+ {LIMIT_MARGIN:.0%}")
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    _title(fig, title)
    if _has_own_panel(target):
        _tight_under_title(fig)
    return save_figure(fig, path)


def training_curves(rows: list[Mapping[str, Any]], target_name: str, path: Path) -> Path | None:
    """Loss histories of every model trained (or loaded) for this target, one panel per model.

    Give it one seed's rows (the report passes the first seed's): each replicate trains its own models.
    """
    curves: dict[str, tuple[str, Mapping[str, list]]] = {}
    for row in rows:
        for model in row.get("fit", {}).get("models", []):
            history = model.get("history")
            if history and "step" in history:
                curves.setdefault(model["id"], (f"{model['kind']} (used by {row['sampler']})", history))
    if not curves:
        return None
    plt = _pyplot()
    cols = min(3, len(curves))
    nrows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.3 * nrows), squeeze=False)
    for ax, (label, history) in zip(axes.flat, curves.values()):
        steps = history["step"]
        for key, values in history.items():
            if key == "step" or len(values) != len(steps):
                continue
            finite = [(s, v) for s, v in zip(steps, values) if v is not None and v > 0]
            if finite:
                ax.plot(*zip(*finite), label=key, linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    _title(fig, f"{target_name}: training curves")
    _tight_under_title(fig)
    return save_figure(fig, path)


#: Marker of each sampler's line on the dimension figure (colours repeat after ten; markers tell them apart).
DIMENSION_MARKERS = "osD^P*Xh<>"  # not "v": ▼ marks a value pinned to the axis bottom


def _dimension_points(entry: Mapping[str, Any] | None, metric: str) -> tuple[float, float, float] | None:
    """``(mean, low, high)`` of a metric (``"train_seconds"``: the mean training time, no interval) or ``None``."""
    if entry is None or not entry.get("ok_seeds"):
        return None
    if metric == "train_seconds":
        value = entry.get("train_seconds")
        return None if value is None else (value, value, value)
    summary = (entry.get("metrics") or {}).get(metric)
    if not summary or summary.get("mean") is None:
        return None
    mean = summary["mean"]
    low, high = summary.get("ci_low"), summary.get("ci_high")
    return (mean, mean, mean) if low is None or high is None else (mean, low, high)


def plot_dimension(
    pattern: str,
    members: list[tuple[int, str]],
    entries: list[Mapping[str, Any]],
    path: Path,
    floors: Mapping[str, Any] | None = None,
    metrics: tuple[str, ...] = ("mmd2", "c2st"),
) -> Path | None:
    """Fidelity and training time of every sampler against the dimension of one target family's members.

    One panel per metric and one of training seconds, all against d (log₂ x axis,
    ticks at the members' d).  Each sampler is a line with error bars over seeds
    (95 % t-intervals; none with one seed), slightly offset in x so bars do not
    hide each other.  MMD² and training time are on a log y axis, where a value
    ≤ 0 (an unbiased MMD² at the floor) is pinned to the bottom as ▼; C2ST is
    linear with chance (0.5) dashed.  Each member's noise floor is a grey band up
    to :func:`bench.report.pareto.noise_floor` (the floor's mean + 2 std or the
    ``target-draws`` row, whichever is larger; symmetric about 0.5 for C2ST).
    ``target-draws`` is drawn only through that band; samplers that train nothing
    are left out of the training panel.  The legend sits outside, right.

    Args:
        pattern: The family's pattern (``"gmm-<d>"``), for the title.
        members: ``(d, target name)`` of ≥ 2 members, sorted by d.
        entries: Summary entries (:func:`bench.results.summarize`; other targets are ignored).
        path: Output PNG, written atomically.
        floors: ``floors`` of the results document (per target), or ``None``.
        metrics: Headline metric keys, one panel each (those without a value anywhere are left out).

    Returns:
        ``path``, or ``None`` when no sampler has a value to draw.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator, StrMethodFormatter

    from bench.contracts import REFERENCE_SAMPLER
    from bench.report.pareto import CHANCE, LINEAR_METRICS, METRIC_LABELS, noise_floor

    dims = [d for d, _ in members]
    names = {target for _, target in members}
    entries = [e for e in entries if e["target"] in names]
    by_pair = {(e["sampler"], e["target"]): e for e in entries}
    samplers = [s for s in dict.fromkeys(e["sampler"] for e in entries) if s != REFERENCE_SAMPLER]
    metrics = tuple(m for m in metrics
                    if any(_dimension_points(by_pair.get((s, t)), m) for s in samplers for t in names))
    if not samplers:
        return None
    panels = (*metrics, "train_seconds")
    several = any(len(e.get("ok_seeds", ())) > 1 for e in entries)
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    style = {s: (palette[i % len(palette)], DIMENSION_MARKERS[i % len(DIMENSION_MARKERS)])
             for i, s in enumerate(samplers)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.4), squeeze=False)
    drawn: set[str] = set()
    for ax, metric in zip(axes[0], panels):
        linear = metric in LINEAR_METRICS
        series = {}
        for sampler in samplers:
            points = [(d, _dimension_points(by_pair.get((sampler, target)), metric)) for d, target in members]
            # A row that trains nothing (0 s) has no place on the log axis of training time.
            points = [(d, p) for d, p in points if p is not None and not (metric == "train_seconds" and p[0] <= 0)]
            if points:
                series[sampler] = points
                drawn.add(sampler)
        tops = []
        if metric != "train_seconds":
            for d, target in members:
                floor = (((floors or {}).get(target) or {}).get("metrics") or {}).get(metric)
                tops.append((d, noise_floor(floor, by_pair.get((REFERENCE_SAMPLER, target)), metric)))
            tops = [(d, top) for d, top in tops if top is not None]
        positive = [p[0] for pts in series.values() for _, p in pts if p[0] > 0] + [top for _, top in tops]
        bottom = min(positive) / 3 if positive else 1e-6
        for k, (sampler, points) in enumerate(series.items()):
            color, marker = style[sampler]
            shift = 2 ** (0.05 * (k - (len(series) - 1) / 2))  # a few percent in d: bars side by side
            x = [d * shift for d, _ in points]
            shown = [p[0] if linear else max(p[0], bottom) for _, p in points]
            low = [max(s - (p[1] if linear else max(p[1], bottom)), 0.0) for s, (_, p) in zip(shown, points)]
            high = [max((p[2] if linear else max(p[2], bottom)) - s, 0.0) for s, (_, p) in zip(shown, points)]
            ax.errorbar(x, shown, yerr=[low, high], color=color, lw=1.2, elinewidth=0.8, capsize=2, alpha=0.9)
            for xi, si, (_, p) in zip(x, shown, points):
                pinned = si > p[0]
                ax.scatter([xi], [si], marker="v" if pinned else marker, s=22, color=color, zorder=3)
        if tops:
            band_x = [d for d, _ in tops]
            upper = [top for _, top in tops]
            lower = [2 * CHANCE - top for top in upper] if linear else [bottom / 1.5] * len(upper)
            ax.fill_between(band_x, lower, upper, color="tab:gray", alpha=0.25, lw=0,
                            label="noise floor (mean + 2 std)")
        if linear:
            ax.axhline(CHANCE, color="black", ls="--", lw=0.8, label=f"chance ({CHANCE:g})")
            low, high = ax.get_ylim()  # an accuracy lies in [0, 1]; a t-interval over few seeds need not
            ax.set_ylim(max(low, 0.0), min(high, 1.02))
        else:
            ax.set_yscale("log")
            if metric != "train_seconds":
                ax.set_ylim(bottom=bottom / 1.5)  # ▼ (pinned at ``bottom``) sit on the axis's lower edge
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims)
        ax.set_xticklabels([str(d) for d in dims])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(dims[0] / 1.4, dims[-1] * 1.4)
        ax.set_xlabel("dimension d")
        label = "train seconds" if metric == "train_seconds" else METRIC_LABELS.get(metric, metric).split(" (")[0]
        ax.set_ylabel(f"{label} (mean over seeds)")
        if metric == "train_seconds":  # seconds read as plain numbers, not 6×10⁰
            for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_formatter(StrMethodFormatter("{x:g}"))
        ax.set_title("training time of every network a row uses" if metric == "train_seconds"
                     else METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no sampler trains" if metric == "train_seconds" else f"no {metric} values",
                    transform=ax.transAxes, ha="center", va="center")
    handles = {sampler: Line2D([], [], color=color, marker=marker, lw=1.2)
               for sampler, (color, marker) in style.items() if sampler in drawn}
    for ax in axes[0]:  # the floor band and the chance line
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    bars = "95 % t-intervals over seeds" if several else "one seed, no intervals"
    _title(fig, f"{pattern}: fidelity and training time against dimension (lines: mean; bars: {bars}; "
                f"▼: ≤ 0, drawn at the bottom)")
    _tight_under_title(fig)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    return save_figure(fig, path)


#: Markers telling apart the samplers of one solver (same colour), in order of appearance.
SCALING_MARKERS = "os^DvP*Xh<>"
#: Columns of the scaling figure's legend (25 samplers: five rows).
SCALING_LEGEND_COLUMNS = 5


def scaling_sizes(entries: list[Mapping[str, Any]]) -> list[int]:
    """The batch sizes with a timed latency in any of ``entries`` (summary entries), ascending."""
    return sorted({int(size) for entry in entries for size in (entry.get("latency_by_n") or {})})


def plot_scaling(entries: list[Mapping[str, Any]], target_name: str, path: Path) -> Path | None:
    """Latency and throughput of every sampler against batch size n on one target, log–log.

    Two panels: ms per call (mean over seeds of the per-seed medians; bars: 95 %
    t-interval over seeds when there are several) and samples per second (n over that
    mean), one line per sampler over the sizes it was timed at (a size skipped by the
    cap, or failed, is left out of its line).  Styles follow the Pareto figure's
    (:func:`bench.report.pareto.curve_style`): the colour is the solver, the line style
    the variant (``@exact``, ``+ld3`` …), the marker the member within its solver; with
    ~25 samplers the legend sits under the panels, one entry per sampler.

    Args:
        entries: Summary entries (:func:`bench.results.summarize`; other targets are ignored).
        target_name: The target to draw.
        path: Output PNG, written atomically.

    Returns:
        ``path``, or ``None`` when fewer than two batch sizes were timed.
    """
    from matplotlib import colormaps

    from bench.report.pareto import VARIANT_STYLES, curve_key, curve_style

    entries = [e for e in entries if e.get("target") == target_name and e.get("latency_by_n")]
    sizes = scaling_sizes(entries)
    if len(sizes) < 2:
        return None
    keys = {e["sampler"]: curve_style(curve_key(e["sampler"]) or e["sampler"]) for e in entries}
    solvers = list(dict.fromkeys(solver for solver, _ in keys.values()))
    variants = sorted({variant for _, variant in keys.values()}, key=lambda v: (v != "", v != "@exact", v))
    palette = colormaps["tab20"].colors[::2] + colormaps["tab20"].colors[1::2]  # the ten strong hues first
    members: dict[str, int] = {}
    plt = _pyplot()
    legend_rows = math.ceil(len(entries) / SCALING_LEGEND_COLUMNS)
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6 + 0.16 * legend_rows))
    several = any(len(e.get("ok_seeds", ())) > 1 for e in entries)
    for entry in entries:
        solver, variant = keys[entry["sampler"]]
        marker = SCALING_MARKERS[members.setdefault(solver, 0) % len(SCALING_MARKERS)]
        members[solver] += 1
        style = {"color": palette[solvers.index(solver) % len(palette)], "marker": marker, "ms": 4, "lw": 1.1,
                 "ls": VARIANT_STYLES[variants.index(variant) % len(VARIANT_STYLES)]}
        timed = entry["latency_by_n"]
        n = [size for size in sizes if str(size) in timed]
        ms = [timed[str(size)]["mean"] for size in n]
        low = [timed[str(size)].get("ci_low") for size in n]
        high = [timed[str(size)].get("ci_high") for size in n]
        yerr = None
        if all(v is not None for v in low + high):
            yerr = [[m - lo for m, lo in zip(ms, low)], [hi - m for m, hi in zip(ms, high)]]
        axes[0].errorbar(n, ms, yerr=yerr, capsize=2, elinewidth=0.7, label=entry["sampler"], **style)
        axes[1].plot(n, [size / (m / 1e3) for size, m in zip(n, ms)], **style)
    for ax, label in zip(axes, ("ms per call (median; mean over seeds)", "samples per second")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{size:g}" for size in sizes])
        ax.set_xlabel("batch size n (samples per call)")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    bars = "bars: 95 % t-intervals over seeds" if several else "one seed, no intervals"
    _title(fig, f"{target_name}: latency and throughput against batch size ({bars}; sizes not timed are left out)")
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, (0.16 * legend_rows + 0.15) / height, 1, 1 - 0.4 / height))  # legend below, title above
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=SCALING_LEGEND_COLUMNS, fontsize=7, frameon=False)
    return save_figure(fig, path)
