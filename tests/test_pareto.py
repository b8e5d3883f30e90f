"""Pareto fronts against hand-worked examples and a brute-force definition, and the Pareto figure."""

from __future__ import annotations

import math

import pytest

from bench.report.pareto import (
    LABELLED_ROWS,
    MAX_LEGEND_CURVES,
    curve_key,
    curve_style,
    family_curves,
    frontier_names,
    latency_interval,
    noise_floor,
    pareto_front,
    plot_pareto,
)
from bench.results import summarize
from bench.stats import t_interval


def test_dominated_points_are_off_the_front():
    # (1, 5) and (3, 1) trade off; (2, 6) is beaten by (1, 5) on both; (4, 1) ties
    # (3, 1) on value at a higher cost, so it is dominated.
    points = [(1.0, 5.0), (2.0, 6.0), (3.0, 1.0), (4.0, 1.0), (2.5, 2.0)]
    assert pareto_front(points) == [True, False, True, False, True]


def test_exact_ties_stay_on_the_front_and_equal_costs_keep_only_the_best():
    points = [(1.0, 2.0), (1.0, 2.0), (1.0, 3.0), (0.5, 4.0)]
    assert pareto_front(points) == [True, True, False, True]


def test_equal_values_at_higher_cost_are_dominated():
    assert pareto_front([(2.0, 1.0), (1.0, 1.0)]) == [False, True]


def test_non_finite_points_never_compete():
    points = [(1.0, math.nan), (2.0, 1.0), (None, 0.0), (3.0, -math.inf)]
    assert pareto_front(points) == [False, True, False, False]


def test_negative_values_are_ordinary_values():
    # Unbiased MMD² estimates can be slightly negative; they are simply better.
    assert pareto_front([(1.0, 1e-3), (2.0, -1e-5)]) == [True, True]


def test_front_matches_brute_force_definition():
    import random

    rng = random.Random(0)
    points = [(rng.randint(0, 5), rng.randint(0, 5)) for _ in range(60)]

    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)

    assert pareto_front(points) == [not dominated(p) for p in points]


def _row(sampler, nfe, latency, mmd2, swd, status="ok", target="gmm3d", seed=0, std=0.05, **metrics):
    return {
        "sampler": sampler,
        "target": target,
        "seed": seed,
        "status": status,
        "error": None if status == "ok" else "RuntimeError: boom",
        "nfe": nfe,
        "latency_ms": {"mean": latency, "std": std, "median": latency, "min": latency},
        "metrics": {"mmd2": mmd2, "swd": swd, **metrics},
    }


ROWS = [
    _row("target-draws", 0.0, 0.5, 1e-5, 1e-3),
    _row("pings", 1.0, 1.0, 2e-2, 5e-2),
    _row("distilled-1", 1.0, 1.2, 8e-4, 2e-2),
    _row("flow-matching-8", 8.0, 9.0, 5e-4, 1e-2),
    _row("ddim-50", 50.0, 60.0, 7e-4, 3e-3),
    _row("broken", 1.0, 0.1, math.nan, math.nan, status="failed"),
]
ENTRIES = summarize(ROWS)
#: floors[target]["metrics"] of a version-2 document.
FLOORS = {"mmd2": {"mean": 1e-4, "std": 5e-5, "values": [5e-5, 1e-4, 1.5e-4]},
          "swd": {"mean": 2e-4, "std": 1e-4, "values": [1e-4, 2e-4, 3e-4]}}


def test_frontier_names_per_cost_and_metric():
    # NFE: pings and distilled-1 tie on cost, distilled-1 is better; the reference never competes.
    assert frontier_names(ENTRIES, "nfe", "mmd2") == {"distilled-1", "flow-matching-8"}
    # Latency separates pings (1.0 ± 0.05 ms) from distilled-1 (1.2 ± 0.05 ms): the intervals do not overlap.
    assert frontier_names(ENTRIES, "latency_ms", "mmd2", ROWS) == {"pings", "distilled-1", "flow-matching-8"}
    assert frontier_names(ENTRIES, "nfe", "swd") == {"distilled-1", "flow-matching-8", "ddim-50"}


def test_frontier_names_refuses_mixed_targets_and_unknown_costs():
    with pytest.raises(ValueError, match="per target"):
        frontier_names(summarize(ROWS + [_row("pings", 1.0, 1.0, 1e-2, 1e-2, target="dho")]), "nfe", "mmd2")
    with pytest.raises(KeyError, match="unknown cost"):
        frontier_names(ENTRIES, "flops", "mmd2")


def test_faster_within_timing_noise_is_not_on_the_front():
    # The gmm3d case: distilled-1 at 47.7 ± 1.7 ms against distilled-1@exact's 48.1 ± 0.2 ms,
    # with 150x worse MMD². One seed: the intervals are the timed calls' mean ± std.
    rows = [_row("distilled-1", 1.0, 47.7, 1.5e-1, 1.0, std=1.7),
            _row("distilled-1@exact", 1.0, 48.1, 1e-3, 1.0, std=0.2)]
    assert frontier_names(summarize(rows), "latency_ms", "mmd2", rows) == {"distilled-1@exact"}
    # Without the timing spread (the old rule) the faster row would be starred.
    assert frontier_names(summarize(rows), "latency_ms", "mmd2") == {"distilled-1", "distilled-1@exact"}
    # Clearly faster (non-overlapping intervals) puts it back on the front.
    rows[0] = _row("distilled-1", 1.0, 40.0, 1.5e-1, 1.0, std=1.7)
    assert frontier_names(summarize(rows), "latency_ms", "mmd2", rows) == {"distilled-1", "distilled-1@exact"}


def test_only_front_rows_exclude_others_so_a_clearly_faster_row_survives_a_chain_of_overlaps():
    # A: best, slow. B: second, overlaps A and C. C: third, clearly faster than A.  B is off the
    # front (as accurate-or-worse than A and not clearly faster); it must not knock C out.
    points = [(25.0, 1e-4), (24.0, 1e-3), (20.0, 2e-3)]
    intervals = [(22.6, 28.9), (19.0, 29.7), (18.7, 22.0)]
    assert pareto_front(points, intervals) == [True, False, True]


def test_front_with_intervals_is_internally_consistent_and_excludes_every_other_point():
    # Characterisation: no front point is excluded by another front point (an exact duplicate aside),
    # and every point off the front is excluded by a front point that is at least as accurate and
    # not clearly cheaper-interval-wise than it.
    import random

    rng = random.Random(1)
    for _ in range(50):
        points = [(rng.uniform(0, 10), rng.randint(0, 4)) for _ in range(25)]
        intervals = [(c - rng.uniform(0, 1), c + rng.uniform(0, 1)) for c, _ in points]

        def excludes(j, i):
            return (points[j][1], points[j][0]) <= (points[i][1], points[i][0]) and points[j] != points[i] \
                and not intervals[i][1] < intervals[j][0]

        front = [k for k, on in enumerate(pareto_front(points, intervals)) if on]
        assert front and not any(excludes(j, i) for i in front for j in front if j != i)
        assert all(any(excludes(j, i) for j in front) for i in range(len(points)) if i not in front)


def test_latency_interval_is_the_t_interval_with_seeds_and_the_timing_spread_with_one():
    rows = [_row("a", 1.0, latency, 1e-3, 1e-2, seed=seed) for seed, latency in enumerate((10.0, 12.0, 11.0))]
    entry = summarize(rows)[0]
    mean, low, high = t_interval([10.0, 12.0, 11.0])
    assert latency_interval(entry, rows) == pytest.approx((low, high))
    one = summarize(rows[:1])[0]
    assert latency_interval(one, rows[:1]) == pytest.approx((10.0 - 0.05, 10.0 + 0.05))
    assert latency_interval(one) == pytest.approx((10.0, 10.0))


def test_noise_floor_is_the_larger_of_reference_value_and_floor_spread():
    reference = next(e for e in ENTRIES if e["sampler"] == "target-draws")
    assert noise_floor(FLOORS["mmd2"], reference, "mmd2") == pytest.approx(1e-4 + 2 * 5e-5)
    assert noise_floor(FLOORS["swd"], reference, "swd") == pytest.approx(1e-3)  # the reference row is larger
    assert noise_floor(None, reference, "energy") is None
    # A version-1 floor (one pair, no spread) counts by its value; an unbiased estimate at the floor can be
    # negative, and its magnitude is the noise scale.
    negative = summarize([_row("target-draws", 0.0, 0.5, -3e-4, 1e-3)])[0]
    assert noise_floor({"mean": -1e-4, "std": None, "values": [-1e-4]}, negative, "mmd2") == pytest.approx(3e-4)
    assert noise_floor({"mean": -5e-4, "std": None, "values": [-5e-4]}, None) == pytest.approx(5e-4)


def test_plot_writes_a_png(tmp_path):
    entries = summarize(ROWS + [_row("pings", 1.0, 1.0, 1e-2, 1e-2, target="dho")])
    path = plot_pareto(entries, "gmm3d", tmp_path / "p.png", floors=FLOORS, rows=ROWS)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left behind


def test_plot_handles_a_metric_no_row_has(tmp_path):
    path = plot_pareto(ENTRIES, "gmm3d", tmp_path / "q.png", metrics=("mmd2", "energy"))
    assert path.stat().st_size > 0


def test_curve_keys_drop_only_the_members_number():
    assert curve_key("ddim-8+ld3@exact") == "ddim-<n>+ld3@exact"
    assert curve_key("dpm-solver-2-20") == "dpm-solver-2-<n>"
    assert curve_key("dpm-solver++-3m-6@exact") == "dpm-solver++-3m-<n>@exact"
    assert curve_key("flow-matching-8") == "flow-matching-<n>"
    assert curve_key("pings") is None and curve_key("target-draws") is None


def test_families_of_two_or_more_iterative_members_are_curves():
    points = [("ddim-4@exact", 4, 0.1), ("ddim-8@exact", 8, 0.05), ("ddim-6@exact", 6, 0.07), ("ddim-8", 8, 0.2),
              ("flow-matching-1", 1, 0.3), ("flow-matching-8", 8, 0.01), ("pings", 1, 0.02)]
    assert family_curves(points) == {"ddim-<n>@exact": [(4, 0.1), (6, 0.07), (8, 0.05)]}


def test_curve_style_splits_solver_and_variant():
    assert curve_style("ddim-<n>+ld3@exact") == ("ddim", "+ld3@exact")
    assert curve_style("dpm-solver-2-<n>") == ("dpm-solver-2", "")
    assert curve_style("ipndm-<n>@exact") == ("ipndm", "@exact")


def _panel(entries, cost_key="nfe", rows=(), legend_below=False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bench.report.pareto import _draw_panel

    figure = Figure()
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    _draw_panel(ax, entries, list(rows), cost_key, "mmd2", 1e-4, legend_below=legend_below)
    return ax


def _nfe_panel(entries):
    return _panel(entries)


def test_nfe_panel_draws_each_family_as_a_curve_and_one_pass_rows_as_points():
    rows = ROWS + [_row(f"ddim-{k}@exact", float(k), k * 1.1, 0.3 / k, 0.1) for k in (4, 6, 10)]
    ax = _nfe_panel(summarize(rows))
    _, labels = ax.get_legend_handles_labels()
    assert "ddim-<n>@exact" in labels
    (curve,) = [line for line in ax.lines if line.get_label() == "ddim-<n>@exact"]
    assert list(curve.get_xdata()) == [4.0, 6.0, 10.0]
    names = {text.get_text() for text in ax.texts} - {""}  # adjustText's leader lines are empty annotations
    assert {"pings", "distilled-1", "flow-matching-8", "ddim-50"} <= names
    assert not any(name.endswith("@exact") for name in names)


def test_nfe_panel_without_families_is_unchanged():
    ax = _nfe_panel(ENTRIES)
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["Pareto front", "noise floor (mean + 2 std)"]
    names = {text.get_text() for text in ax.texts} - {""}
    assert names == {"pings", "distilled-1", "flow-matching-8", "ddim-50"}


def _sweep_rows():
    """A sweep-sized run: many families of a few members (learned, @exact, +ld3@exact) and one-pass rows."""
    rows = list(ROWS)
    for solver in ("ddim", "ipndm", "unipc", "dpm-solver++-3m"):
        for variant in ("", "@exact", "+ld3@exact"):
            for k in (3, 4, 6, 8, 10):
                rows.append(_row(f"{solver}-{k}{variant}", float(k), 3.0 * k, 0.3 / k ** 2, 0.1))
    return rows


def test_a_sweep_sized_latency_panel_labels_only_front_and_one_pass_rows():
    rows = _sweep_rows()
    entries = summarize(rows)
    assert len(entries) - 2 > LABELLED_ROWS  # the reference and the failed row do not compete
    ax = _panel(entries, "latency_ms", rows)
    names = {text.get_text() for text in ax.texts} - {""}
    front = frontier_names(entries, "latency_ms", "mmd2", rows)
    assert names == front | {"pings", "distilled-1"}


def test_many_curves_get_a_legend_by_solver_and_variant_under_the_axes():
    entries = summarize(_sweep_rows())
    ax = _panel(entries, legend_below=True)
    assert len(family_curves((e["sampler"], e["nfe"], 0.0) for e in entries)) > MAX_LEGEND_CURVES
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sorted(legend[:4]) == ["ddim", "dpm-solver++-3m", "ipndm", "unipc"]
    assert legend[4:7] == ["… (learned model)", "…@exact", "…+ld3@exact"]
    assert legend[7:] == ["Pareto front", "noise floor (mean + 2 std)"]
    # Members of one solver share a colour; its variants differ in line style.
    curves = {line.get_label(): line for line in ax.lines if "<n>" in line.get_label()}
    assert curves["ipndm-<n>"].get_color() == curves["ipndm-<n>@exact"].get_color()
    assert curves["ipndm-<n>"].get_linestyle() != curves["ipndm-<n>@exact"].get_linestyle()


def test_a_sweep_sized_sample_figure_shows_the_front_and_the_one_pass_rows():
    from bench.report import panel_samplers

    rows = _sweep_rows()
    entries = summarize(rows)
    shown, caption = panel_samplers(entries, rows)
    one_pass = {"target-draws", "pings", "distilled-1"}  # the failed row is not drawn
    assert set(shown) == frontier_names(entries, "latency_ms", "mmd2", rows) | one_pass
    assert f"{len(shown)} of {len(entries)}" in caption
    # A run of ordinary size shows every sampler.
    assert panel_samplers(ENTRIES, ROWS)[0] == [entry["sampler"] for entry in ENTRIES]
