"""Leaderboard rendering from a results document alone."""

from __future__ import annotations

from bench.report.markdown import render, training_seconds

INFO = {
    "mmd2": {"label": "MMD²", "better": "lower", "description": "kernel bank"},
    "mmd2_pvalue": {"label": "MMD² p", "better": "higher", "description": "permutation test"},
    "mmd2_floor": {"label": "MMD² floor", "better": "lower", "description": "two target draw sets"},
}


def _row(sampler, status="ok", median=10.0, mmd2=1e-3, error=None):
    ok = status == "ok"
    return {
        "sampler": sampler, "target": "gmm3d", "status": status, "error": error, "n": 100,
        "nfe": 1.0 if ok else None, "fit_seconds": 2.0,
        "latency_ms": {"mean": median, "std": 0.5, "median": median, "min": median, "repeats": 5, "warmup": 3}
        if ok else None,
        "metrics": {"mmd2_floor": 2e-4, **({"mmd2": mmd2, "mmd2_pvalue": 0.5} if ok else {})},
    }


RESULTS = {
    "schema": "pingsbench.results/1",
    "environment": {"device": "cpu", "device_name": "x86_64", "dtype": "float32", "torch": "2.13.0",
                    "torch_threads": 2, "python": "3.11", "platform": "linux", "pingsbench": "0.1.0"},
    "config": {"profile": "smoke", "n": 100, "seed": 0, "repeats": 5, "warmup": 3,
               "optimizations": {"torch_compile": False}},
    "metric_info": INFO,
    "rows": [_row("slow", median=100.0, mmd2=5e-3), _row("target-draws", median=1.0, mmd2=1e-4),
             _row("broken", status="failed", error="RuntimeError: boom"), _row("fast", median=10.0)],
}


def test_table_has_directions_floor_speedup_and_failure_reason():
    text = render(RESULTS, frontier=lambda rows: {"fast"})
    assert "MMD² ↓" in text and "MMD² p ↑" in text
    lines = text.splitlines()
    floor_row = next(line for line in lines if "target-draws (floor)" in line)
    assert "100.0×" in floor_row  # speed-up relative to the slowest ok row
    assert next(line for line in lines if line.startswith("| slow")).count("1.0×") == 1
    assert "fast ★" in text and "failed: RuntimeError: boom" in text
    # A version-1 document's floor is its rows' one mmd2_floor: one pair, no spread.
    floor_line = next(line for line in lines if "noise floor: pairs of independent target draw sets" in line)
    assert "2.00e-04 (1 pair)" in floor_line
    assert "optimizations: none" in text and "profile `smoke`" in text


def test_rows_ordered_floor_first_then_by_mmd2_then_failures():
    names = [line.split("|")[1].strip() for line in render(RESULTS).splitlines()
             if line.startswith("| ") and "sampler" not in line and "noise floor" not in line]
    assert names == ["target-draws (floor)", "fast", "slow", "broken"]


def test_training_time_counts_shared_models_in_every_row_that_uses_them():
    epsnet = {"id": "epsnet-1", "kind": "epsnet", "train_seconds": 40.0}
    trained_here = {**_row("ddim-50"), "fit_seconds": 41.0,
                    "fit": {"models": [{**epsnet, "source": "trained"}], "artifacts": {}}}
    reused = {**_row("dpm-solver++-2m-20"), "fit_seconds": 0.001,
              "fit": {"models": [{**epsnet, "source": "memory"}], "artifacts": {}}}
    student = {**_row("distilled-1"), "fit_seconds": 12.0, "fit": {"models": [
        {**epsnet, "source": "memory"}, {"id": "distilled-1", "kind": "distilled", "source": "trained",
                                         "train_seconds": 12.0}], "artifacts": {}}}
    exact = {**_row("ddim-50@exact"), "fit": {"models": [], "artifacts": {}}}
    assert [training_seconds(r) for r in (trained_here, reused, student, exact)] == [40.0, 40.0, 52.0, 0.0]
    assert training_seconds(_row("broken", status="failed", error="x")) is None
    lines = render({**RESULTS, "rows": [trained_here, reused]}).splitlines()
    assert "train s ↓" in lines[next(i for i, line in enumerate(lines) if line.startswith("| sampler"))]
    assert all("| 40.0 " in line for line in lines if line.startswith(("| ddim-50", "| dpm-solver")))
