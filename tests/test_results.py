"""The version-2 results document: summary from rows, version-1 upgrade, comparisons with the best row."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench.contracts import REFERENCE_SAMPLER
from bench.errors import UsageError
from bench.results import FLOOR_SPREADS, RESULTS_SCHEMA, compare_with_best, summarize, upgrade
from bench.stats import paired_t_pvalue, t_interval


def _row(sampler, seed, target="t", status="ok", **metrics):
    return {
        "sampler": sampler, "target": target, "seed": seed, "status": status,
        "error": None if status == "ok" else "RuntimeError: boom",
        "nfe": 10.0, "nfe_split": {"network": 8.0, "oracle": 2.0 + seed}, "warnings": [],
        "latency_ms": {"median": 1.0 + seed, "mean": 1.0 + seed, "std": 0.1},
        "fit": {"models": [{"train_seconds": 2.0}]}, "metrics": metrics if status == "ok" else {},
    }


def test_summary_is_a_function_of_the_rows_not_their_order():
    rows = [_row(name, seed, target, mmd2=0.01 * seed + k) for k, name in enumerate(["a", "b"])
            for seed in (0, 1, 2) for target in ("t1", "t2")]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert summarize(shuffled, ["a", "b"], ["t1", "t2"]) == summarize(rows, ["a", "b"], ["t1", "t2"])
    entries = summarize(shuffled, ["b", "a"], ["t2", "t1"])
    assert [(e["target"], e["sampler"]) for e in entries] == [("t2", "b"), ("t2", "a"), ("t1", "b"), ("t1", "a")]
    first = entries[0]
    assert first["seeds"] == first["ok_seeds"] == first["metrics"]["mmd2"]["seeds"] == [0, 1, 2]
    mean, low, high = t_interval([1.0, 1.01, 1.02])
    assert first["metrics"]["mmd2"]["mean"] == pytest.approx(mean)
    assert (first["metrics"]["mmd2"]["ci_low"], first["metrics"]["mmd2"]["ci_high"]) == pytest.approx((low, high))
    assert first["latency_ms"]["values"] == [1.0, 2.0, 3.0]
    assert first["train_seconds"] == 2.0 and first["nfe"] == 10.0
    assert first["nfe_split"] == {"network": 8.0, "oracle": 3.0}


def test_one_seed_has_no_interval_and_failed_replicates_are_named():
    entries = summarize([_row("a", 0, mmd2=0.5), _row("a", 1, status="failed"), _row("b", 3, mmd2=0.25)])
    a, b = entries
    assert a["status"] == "failed" and a["errors"] == {"1": "RuntimeError: boom"}
    assert a["seeds"] == [0, 1] and a["ok_seeds"] == [0]
    assert a["metrics"]["mmd2"] == {"mean": 0.5, "ci_low": None, "ci_high": None, "seeds": [0], "values": [0.5]}
    assert b["status"] == "ok" and b["errors"] == {}


def test_a_missing_metric_leaves_only_its_replicate_out():
    entry, = summarize([_row("a", 0, mmd2=0.5, swd=None), _row("a", 1, mmd2=0.7, swd=0.1)])
    assert entry["metrics"]["swd"]["seeds"] == [1] and entry["metrics"]["mmd2"]["seeds"] == [0, 1]


def test_the_summarized_interval_of_a_synthetic_sampler_covers_its_true_metric_95_percent_of_the_time():
    # The metric is the mean of the sampler's n draws from N(μ, 1): exactly N(μ, 1/n) per replicate.
    rng = np.random.default_rng(1)
    true_value, n, seeds = 0.2, 100, [0, 1, 2]
    covered = 0
    for _ in range(1000):
        rows = [_row("synthetic", seed, mean=float(rng.normal(true_value, 1.0, n).mean())) for seed in seeds]
        interval = summarize(rows)[0]["metrics"]["mean"]
        covered += interval["ci_low"] <= true_value <= interval["ci_high"]
    assert 930 <= covered <= 970


def _entries(values_by_row, metric="mmd2"):
    """Summary entries of rows whose ``metric`` takes the given values, replicate seed = list position."""
    rows = [_row(name, seed, **{metric: value}) for name, values in values_by_row.items()
            for seed, value in enumerate(values)]
    return summarize(rows, list(values_by_row))


def test_identical_samplers_are_always_tied_with_any_number_of_seeds():
    for values in ([0.3], [0.3, 0.1], [0.3, 0.1, 0.5, 0.2]):
        comparison = compare_with_best(_entries({"twin-a": values, "twin-b": values}), "mmd2")
        assert comparison["tied"] == {"twin-a": True, "twin-b": True}


def test_identical_samplers_get_identical_verdicts_and_a_best_twin_ties_the_other():
    rng = np.random.default_rng(2)
    twin_was_best = 0
    for _ in range(200):
        values = rng.normal(0.1, 0.02, 3).tolist()
        others = {f"other-{i}": rng.normal(0.1 + 0.02 * i, 0.02, 3).tolist() for i in range(3)}
        comparison = compare_with_best(_entries({"twin-a": values, **others, "twin-b": list(values)}), "mmd2")
        assert comparison["tied"]["twin-a"] == comparison["tied"]["twin-b"]
        if comparison["best"] == "twin-a":
            twin_was_best += 1
            assert comparison["tied"]["twin-b"]
    assert 20 < twin_was_best < 180  # both cases occurred


def test_common_random_numbers_separate_a_worse_row_and_a_noisy_one_stays_tied():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0.0, 0.01, 5)  # shared by every row: common random numbers
    values = {"best": 0.02 + seed_effect, "worse": 0.30 + seed_effect + rng.normal(0.0, 0.005, 5),
              "noisy": 0.02 + seed_effect + rng.normal(0.0, 0.05, 5)}
    comparison = compare_with_best(_entries({k: v.tolist() for k, v in values.items()}), "mmd2")
    assert comparison["tied"] == {"best": True, "worse": False, "noisy": True}


def test_holm_keeps_tied_what_single_tests_would_separate():
    rows = {"best": [0.0, 0.0, 0.0, 0.0], "a": [1.0, 2.0, 3.0, 1.0], "b": [1.0, 2.0, 3.1, 1.0]}
    raw = [paired_t_pvalue(rows[name], rows["best"]) for name in ("a", "b")]
    assert all(0.025 < p < 0.05 for p in raw)
    assert compare_with_best(_entries(rows), "mmd2")["tied"] == {"best": True, "a": True, "b": True}


def test_paired_comparison_with_holm_separates_a_consistently_worse_row():
    rng = np.random.default_rng(2)
    base = rng.normal(0.01, 0.004, 5)
    entries = _entries({"good": base.tolist(), "noisy-twin": (base + rng.normal(0, 1e-3, 5)).tolist(),
                        "worse": (base + 0.05 + rng.normal(0, 1e-3, 5)).tolist()})
    comparison = compare_with_best(entries, "mmd2")
    assert comparison["tied"]["worse"] is False and comparison["p"]["worse"] < 0.05
    assert comparison["tied"][comparison["best"]] is True
    assert "paired t-test" in comparison["method"] and "Holm" in comparison["method"]
    # Holm multiplies the smallest of the m = 2 p-values by 2.
    by_seed = {e["sampler"]: e["metrics"]["mmd2"]["values"] for e in entries}
    raw = {name: paired_t_pvalue(by_seed[name], by_seed[comparison["best"]])
           for name in by_seed if name != comparison["best"]}
    assert raw["worse"] == min(raw.values())
    assert comparison["p"]["worse"] == pytest.approx(2 * raw["worse"], rel=1e-12)


def test_higher_is_better_metrics_pick_the_largest_mean():
    comparison = compare_with_best(_entries({"low": [0.1, 0.3], "high": [0.8, 0.9]}, metric="acc"), "acc", "higher")
    assert comparison["best"] == "high"
    with pytest.raises(UsageError, match="not a direction"):
        compare_with_best([], "acc", "sideways")


def test_one_seed_ties_follow_the_floor_spread_and_the_permutation_test():
    floor = {"mean": 0.0, "std": 1e-3, "pairs": 5}
    entries = _entries({"best": [1e-3], "close": [1e-3 + 1.5e-3], "far": [1e-3 + 3e-3]})
    comparison = compare_with_best(entries, "mmd2", floor=floor)
    assert FLOOR_SPREADS == 2.0
    assert comparison["tied"] == {"best": True, "close": True, "far": False}
    assert "standard deviations of the floor (5 pairs" in comparison["method"]
    # Both rows indistinguishable from exact draws by the permutation test: tied whatever the floor says.
    passing = summarize([_row("best", 0, mmd2=1e-3, mmd2_pvalue=0.4), _row("far", 0, mmd2=4e-3, mmd2_pvalue=0.2)])
    assert compare_with_best(passing, "mmd2", floor=floor)["tied"]["far"] is True
    failing = summarize([_row("best", 0, mmd2=1e-3, mmd2_pvalue=0.4), _row("far", 0, mmd2=4e-3, mmd2_pvalue=0.01)])
    assert compare_with_best(failing, "mmd2", floor=floor)["tied"]["far"] is False


def test_target_draws_never_competes_for_best():
    entries = summarize([_row(REFERENCE_SAMPLER, 0, mmd2=-1e-4), _row("a", 0, mmd2=1e-2)])
    comparison = compare_with_best(entries, "mmd2")
    assert comparison["best"] == "a" and REFERENCE_SAMPLER not in comparison["tied"]


def _version_1_document():
    """A version-1 document as the suite wrote it before schema 2: one seed, a per-row MMD² floor."""
    rows = []
    for target, floor in (("gmm3d", -1.9e-4), ("dho", -3.3e-4)):
        for name, mmd2 in ((REFERENCE_SAMPLER, -1.8e-4), ("ddim-50@exact", 6.8e-4), ("pings", 0.16)):
            row = _row(name, 0, target, mmd2=mmd2, mmd2_floor=floor)
            del row["seed"]
            rows.append(row)
    rows.append({**_row("broken", 0, "dho", status="failed"), "metrics": {}})
    del rows[-1]["seed"]
    config = {"seed": 7, "samplers": [REFERENCE_SAMPLER, "ddim-50@exact", "pings", "broken"],
              "targets": ["gmm3d", "dho"]}
    return {"schema": "pingsbench.results/1", "config": config, "rows": rows}


def test_a_version_1_document_upgrades_with_its_single_seed_and_floor():
    v1 = _version_1_document()
    v2 = upgrade(v1)
    assert v1["schema"] == "pingsbench.results/1" and "summary" not in v1 and "seed" not in v1["rows"][0]
    assert v2["schema"] == RESULTS_SCHEMA and v2["upgraded_from"] == "pingsbench.results/1"
    assert v2["config"]["seeds"] == [7] and v2["config"]["independent_noise"] is True
    assert {row["seed"] for row in v2["rows"]} == {7}
    assert v2["floors"]["gmm3d"]["metrics"]["mmd2"] == {"mean": -1.9e-4, "std": None, "values": [-1.9e-4]}
    assert v2["floors"]["dho"]["pairs"] == 1 and v2["floors"]["dho"]["metrics"]["mmd2"]["mean"] == -3.3e-4
    assert [(e["target"], e["sampler"]) for e in v2["summary"]][:2] == [("gmm3d", REFERENCE_SAMPLER),
                                                                        ("gmm3d", "ddim-50@exact")]
    assert len(v2["summary"]) == len(v1["rows"])
    assert all("mmd2_floor" not in e["metrics"] for e in v2["summary"])
    assert next(e for e in v2["summary"] if e["sampler"] == "broken")["errors"] == {"7": "RuntimeError: boom"}


def test_a_version_2_document_gets_its_summary_rebuilt_and_other_schemas_are_refused():
    document = {"schema": RESULTS_SCHEMA, "config": {"samplers": ["a"], "targets": ["t"]},
                "rows": [_row("a", 1, mmd2=0.2), _row("a", 0, mmd2=0.1)], "summary": "stale"}
    assert upgrade(document)["summary"] == summarize(document["rows"])
    with pytest.raises(UsageError, match="not readable"):
        upgrade({"schema": "pingsbench.results/0", "rows": []})


def test_c2st_is_ranked_by_its_distance_to_chance():
    entries = _entries({"below-chance": [0.46, 0.45, 0.47], "at-chance": [0.50, 0.51, 0.49]}, metric="c2st")
    assert compare_with_best(entries, "c2st")["best"] == "below-chance"  # raw accuracy would reward noise
    comparison = compare_with_best(entries, "c2st", chance=0.5)
    assert comparison["best"] == "at-chance" and comparison["tied"]["below-chance"] is False


def test_duplicate_or_seedless_rows_are_refused_in_one_line():
    with pytest.raises(UsageError, match="two rows of a on t with seed 0"):
        summarize([_row("a", 0, mmd2=0.1), _row("a", 1, mmd2=0.2), _row("a", 0, mmd2=0.3)])
    with pytest.raises(UsageError, match="has seed None; every row needs an integer seed"):
        summarize([{**_row("a", 0, mmd2=0.1), "seed": None}])
