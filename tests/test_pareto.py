"""Pareto fronts against hand-worked examples, and the Pareto figure."""

from __future__ import annotations

import math

import pytest

from bench.report.pareto import frontier_names, noise_floor, pareto_front, plot_pareto


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


def _row(sampler, nfe, latency, mmd2, swd, status="ok", target="gmm3d", **metrics):
    return {
        "sampler": sampler,
        "target": target,
        "status": status,
        "nfe": nfe,
        "latency_ms": {"mean": latency, "std": 0.1, "median": latency, "min": latency},
        "metrics": {"mmd2": mmd2, "swd": swd, **metrics},
    }


ROWS = [
    _row("target-draws", 0.0, 0.5, 1e-5, 1e-3),
    _row("pings", 1.0, 1.0, 2e-2, 5e-2, mmd2_floor=2e-4),
    _row("distilled-1", 1.0, 1.2, 8e-4, 2e-2, mmd2_floor=2e-4),
    _row("flow-matching-8", 8.0, 9.0, 5e-4, 1e-2, mmd2_floor=2e-4),
    _row("ddim-50", 50.0, 60.0, 7e-4, 3e-3, mmd2_floor=2e-4),
    _row("broken", 1.0, 0.1, math.nan, math.nan, status="failed"),
]


def test_frontier_names_per_cost_and_metric():
    # NFE: pings and distilled-1 tie on cost, distilled-1 is better; the reference never competes.
    assert frontier_names(ROWS, "nfe", "mmd2") == {"distilled-1", "flow-matching-8"}
    # Latency separates pings (1.0 ms) from distilled-1 (1.2 ms).
    assert frontier_names(ROWS, "latency_ms", "mmd2") == {"pings", "distilled-1", "flow-matching-8"}
    assert frontier_names(ROWS, "nfe", "swd") == {"distilled-1", "flow-matching-8", "ddim-50"}


def test_frontier_names_refuses_mixed_targets_and_unknown_costs():
    with pytest.raises(ValueError, match="per target"):
        frontier_names(ROWS + [_row("pings", 1.0, 1.0, 1e-2, 1e-2, target="dho")], "nfe", "mmd2")
    with pytest.raises(KeyError, match="unknown cost"):
        frontier_names(ROWS, "flops", "mmd2")


def test_noise_floor_is_the_larger_of_reference_value_and_reported_floor():
    assert noise_floor(ROWS, "mmd2") == pytest.approx(2e-4)
    assert noise_floor(ROWS, "swd") == pytest.approx(1e-3)
    assert noise_floor(ROWS, "energy") is None
    # An unbiased estimate at the floor can be negative; its magnitude is the noise scale.
    negative = [_row("target-draws", 0.0, 0.5, -3e-4, 1e-3, mmd2_floor=-1e-4)]
    assert noise_floor(negative, "mmd2") == pytest.approx(3e-4)


def test_plot_writes_a_png(tmp_path):
    path = plot_pareto(ROWS + [_row("pings", 1.0, 1.0, 1e-2, 1e-2, target="dho")], "gmm3d", tmp_path / "p.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left behind


def test_plot_handles_a_metric_no_row_has(tmp_path):
    path = plot_pareto(ROWS, "gmm3d", tmp_path / "q.png", metrics=("mmd2", "energy"))
    assert path.stat().st_size > 0
