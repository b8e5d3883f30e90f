"""The leaderboard and figures of a version-2 (replicate-seed) results document, and of a version-1 one."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy import stats

import bench.report
from bench.contracts import Target
from bench.report import write_report
from bench.report.figures import (
    axis_limits,
    coordinate_pairs,
    count_outside,
    projection_panel,
    sample_panels,
)
from bench.report.markdown import render

ENVIRONMENT = {"device": "cpu", "device_name": "x86_64", "dtype": "float32", "torch": "2.13.0", "torch_threads": 2,
               "python": "3.11", "platform": "linux", "pingsbench": "0.1.0"}
INFO = {
    "mmd2": {"label": "MMD²", "better": "lower", "description": "kernel bank"},
    "c2st": {"label": "C2ST", "better": "lower", "description": "classifier accuracy"},
}


def _row(sampler, seed, mmd2, c2st, latency=10.0, status="ok", error=None, target="gmm3d"):
    ok = status == "ok"
    return {
        "sampler": sampler, "target": target, "seed": seed, "status": status, "error": error, "n": 100,
        "nfe": 1.0 if ok else None, "warnings": [],
        "latency_ms": {"mean": latency, "std": 0.1, "median": latency, "min": latency} if ok else None,
        "metrics": {"mmd2": mmd2, "c2st": c2st} if ok else {},
        "fit": {"models": [{"id": f"{sampler}-{seed}", "kind": "net", "train_seconds": 3.0,
                            "history": {"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}}]} if ok else {},
    }


def _document(rows, seeds, floors=None):
    samplers = list(dict.fromkeys(row["sampler"] for row in rows))
    return {
        "schema": "pingsbench.results/2",
        "environment": ENVIRONMENT,
        "config": {"profile": "smoke", "n": 100, "seed": seeds[0], "seeds": seeds, "repeats": 5, "warmup": 3,
                   "threads": 2, "deterministic": True, "independent_noise": False, "floor_pairs": 5,
                   "samplers": samplers, "targets": ["gmm3d"], "optimizations": {}},
        "metric_info": INFO,
        "floors": floors if floors is not None else {"gmm3d": {"pairs": 5, "n": 100, "seed": seeds[0], "metrics": {
            "mmd2": {"mean": 1e-4, "std": 2e-4, "values": [1e-4] * 5},
            "c2st": {"mean": 0.51, "std": 0.01, "values": [0.51] * 5}}}},
        "rows": rows,
    }


def _line(text, sampler):
    return next(line for line in text.splitlines() if line.startswith(f"| {sampler} "))


def _cells(line):
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_k2_cells_read_mean_plus_minus_t_interval_half_width():
    values = {"good": [(1.0e-3, 0.52), (3.0e-3, 0.56)], "bad": [(5.0e-2, 0.80), (7.0e-2, 0.90)]}
    rows = [_row(name, seed, *vals[seed], latency=10.0 + seed) for name, vals in values.items() for seed in (0, 1)]
    text = render(_document(rows, [0, 1]))
    for name, pairs in values.items():
        for column, spec, metric_values in ((5, ".2e", [p[0] for p in pairs]), (6, ".3f", [p[1] for p in pairs])):
            mean = float(np.mean(metric_values))
            half = stats.t.ppf(0.975, 1) * stats.sem(metric_values)  # Student-t, K − 1 = 1 degree of freedom
            assert _cells(_line(text, name))[column].startswith(f"{format(mean, spec)} ± ")
            shown = float(_cells(_line(text, name))[column].split(" ± ")[1].split()[0])
            assert shown == pytest.approx(half, rel=0.05)
    latency = _cells(_line(text, "good"))[2]
    assert latency == f"10.50 ± {stats.t.ppf(0.975, 1) * stats.sem([10.0, 11.0]):.2f}"
    assert "mean ± 95 % CI over seeds" in text
    assert "- **replicates**: 2 seeds (0, 1), threads 2, deterministic algorithms on, common random numbers on" in text
    assert "paired t-test" in text and "One seed" not in text


def test_two_identical_samplers_are_always_tied():
    rng = random.Random(0)
    for _ in range(10):
        seeds = [0, 1, 2][: rng.choice((1, 2, 3))]
        # Dyadic values, so the offsets below are exact and the paired differences exactly constant.
        twin = [(rng.randint(1, 64) / 8192, 0.5 + rng.randint(0, 64) / 512) for _ in seeds]
        rows = [_row(name, seed, *twin[i]) for name in ("twin-a", "twin-b") for i, seed in enumerate(seeds)]
        # A constant offset: distinguishable from the best with any number of seeds.
        rows += [_row("worse", seed, twin[i][0] + 1.0, twin[i][1] + 0.25) for i, seed in enumerate(seeds)]
        text = render(_document(rows, seeds))
        marks = {name: _cells(_line(text, name))[5:7] for name in ("twin-a", "twin-b", "worse")}
        assert {marks["twin-a"][0].split()[-1], marks["twin-b"][0].split()[-1]} == {"**best**", "best"}
        assert {marks["twin-a"][1].split()[-1], marks["twin-b"][1].split()[-1]} == {"**best**", "best"}
        assert not any("best" in cell for cell in marks["worse"])


def test_floor_row_reads_mean_std_and_pairs():
    text = render(_document([_row("a", 0, 1e-3, 0.6)], [0]))
    floor = _cells(next(line for line in text.splitlines() if "noise floor" in line))
    assert floor[5:7] == ["1.00e-04 ± 2.0e-04 (5 pairs)", "0.510 ± 0.010 (5 pairs)"]
    assert "One seed: orderings within the noise floor's spread" in text


def test_failed_seeds_keep_their_reason_and_are_named_when_only_some_failed():
    rows = [_row("partial", 0, 1e-3, 0.6), _row("partial", 1, None, None, status="failed", error="OOM"),
            _row("partial", 2, 2e-3, 0.6),
            _row("gone", 0, None, None, status="skipped", error="UnsupportedTarget: no"),
            _row("gone", 1, None, None, status="skipped", error="UnsupportedTarget: no"),
            _row("gone", 2, None, None, status="skipped", error="UnsupportedTarget: no")]
    text = render(_document(rows, [0, 1, 2]))
    partial = _cells(_line(text, "partial"))
    assert partial[-1] == "failed on 1 seed (seed 1: OOM); values over ok seeds 0, 2"
    assert partial[5].startswith(f"{1.5e-3:.2e} ± ")  # the two ok seeds
    assert _cells(_line(text, "gone"))[-1] == "skipped: UnsupportedTarget: no"


def _samples(tmp_path, names, dim=3, n=300, target="gmm3d"):
    rng = np.random.default_rng(0)
    arrays = {f"{target}/{name}": rng.standard_normal((n, dim)).astype(np.float32) for name in names}
    arrays[f"{target}/reference"] = rng.standard_normal((n, dim)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", **arrays)


def test_k2_write_report_renders_figures_and_training_curves_of_the_first_seed_only(tmp_path, monkeypatch):
    names = [f"sampler-{k}" for k in range(6)]
    rows = [_row(name, seed, 1e-3 * (k + 1) * (1 + 0.1 * seed), 0.5 + 0.02 * k + 0.01 * seed,
                 latency=5.0 * (1 + k % 7) + seed) for k, name in enumerate(names) for seed in (3, 4)]
    _samples(tmp_path, names)
    seen = []
    original = bench.report.training_curves
    monkeypatch.setattr(bench.report, "training_curves", lambda rows, *a: seen.extend(rows) or original(rows, *a))
    path = write_report(_document(rows, [3, 4]), tmp_path)
    assert {row["seed"] for row in seen} == {3} and len(seen) == len(names)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["gmm3d_pareto.png", "gmm3d_samples.png",
                                                              "gmm3d_training.png"]
    text = path.read_text()
    assert "sampler-0 ★ " in text and " ± " in _line(text, "sampler-0 ★")


def test_version_1_document_renders_with_figures(tmp_path):
    v1 = _document([], [0])
    rows = [{**_row(name, 0, mmd2, 0.6), "metrics": {"mmd2": mmd2, "mmd2_floor": 3e-4}}
            for name, mmd2 in (("target-draws", 1e-4), ("x", 5e-3), ("y", 2e-2))]
    for row in rows:
        del row["seed"]
    v1 = {**v1, "schema": "pingsbench.results/1", "rows": rows,
          "config": {k: v for k, v in v1["config"].items() if k not in ("seeds", "threads", "deterministic",
                                                                     "independent_noise", "floor_pairs")}}
    del v1["floors"]
    _samples(tmp_path, ["target-draws", "x", "y"])
    text = write_report(v1, tmp_path).read_text()
    assert _cells(next(line for line in text.splitlines() if "noise floor" in line))[5] == "3.00e-04 (1 pair)"
    assert "5.00e-03 **best**" in _line(text, "x") and "best" not in _line(text, "y")
    assert "threads not recorded" in text and "common random numbers off" in text
    assert (tmp_path / "gmm3d_samples.png").exists() and (tmp_path / "gmm3d_pareto.png").exists()


def test_axis_limits_are_reference_quantiles_plus_margin_and_outliers_are_counted():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((20_000, 2)) * [1.0, 5.0] + [0.0, 10.0]
    limits = axis_limits(reference, (0.005, 0.995), margin=0.1)
    for coordinate in range(2):
        low, high = np.quantile(reference[:, coordinate], [0.005, 0.995])
        assert limits[coordinate] == pytest.approx([low - 0.1 * (high - low), high + 0.1 * (high - low)])
    # Far-off generated points do not move the limits (they depend on the reference only)...
    generated = np.concatenate([rng.standard_normal((1000, 2)) * [1.0, 5.0] + [0.0, 10.0],
                                [[60.0, 10.0], [-60.0, 10.0], [0.0, np.nan], [0.0, -500.0]]])
    # ...and count_outside agrees with a point-by-point check.
    by_hand = sum(not all(limits[c][0] <= p[c] <= limits[c][1] for c in range(2)) for p in generated)
    assert count_outside(generated, limits) == by_hand >= 4
    # The limits contain all but ≈ 1 % of the reference (0.5 % in each tail, before the margin).
    assert count_outside(reference, limits) / len(reference) < 0.01


def test_projection_panel_uses_reference_limits_and_titles_the_outside_count():
    from matplotlib.figure import Figure

    reference = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
    generated = torch.cat([reference[:500], torch.tensor([[60.0, 0.0, 0.0], [0.0, 0.0, -60.0]])])
    for coords in coordinate_pairs(3):
        ax = Figure().subplots()
        projection_panel(ax, generated, reference, "s", coords)
        limits = axis_limits(reference.numpy()[:, list(coords)])
        assert [*ax.get_xlim(), *ax.get_ylim()] == pytest.approx(limits.ravel().tolist())
        outside = count_outside(generated.numpy()[:, list(coords)], limits)
        assert ax.get_title() == f"s\n{outside} of 502 outside"
        assert outside >= 1  # each pair of coordinates has one of the two far-off points
    assert coordinate_pairs(2) == [(0, 1)] and coordinate_pairs(64) == [(0, 1), (0, 2), (1, 2)]
    assert coordinate_pairs(1) == [(0,)]


class _Curves(Target):
    name, dim = "curves", 3

    def __init__(self):
        self.drawn = []

    def sample(self, n, generator, dtype=torch.float32):
        return torch.randn(n, self.dim, generator=generator, dtype=dtype)

    def plot_panel(self, ax, generated, reference, title):
        self.drawn.append(title)
        ax.plot(generated[:5].T.numpy())


def test_a_target_with_its_own_panel_draws_one_panel_per_sampler(tmp_path):
    _samples(tmp_path, ["a", "b"], target="curves")
    target = _Curves()
    samples = dict(np.load(tmp_path / "samples.npz"))
    assert sample_panels(target, "curves", samples, ["a", "b"], tmp_path / "c.png").exists()
    assert target.drawn == ["a", "b"]


def test_p_values_read_as_their_range_over_seeds_never_as_a_t_interval():
    rows = [{**_row(name, seed, 1e-3 * (k + 1), 0.5), "metrics": {"mmd2": 1e-3 * (k + 1), "mmd2_pvalue": p}}
            for k, name in enumerate(["a", "b"]) for seed, p in enumerate((0.6, 0.01, 0.3))]
    info = {**INFO, "mmd2_pvalue": {"label": "MMD² p", "better": "higher", "description": "permutation test"}}
    floors = {"gmm3d": {"pairs": 2, "n": 100, "seed": 0, "metrics": {
        "mmd2": {"mean": 1e-4, "std": 2e-4, "values": [1e-4, 1e-4]},
        "mmd2_pvalue": {"mean": 0.5, "std": 0.3, "values": [0.3, 0.7]}}}}
    text = render({**_document(rows, [0, 1, 2], floors), "metric_info": info})
    header = _cells(next(line for line in text.splitlines() if line.startswith("| sampler")))
    column = header.index("MMD² p ↑")
    assert _cells(_line(text, "a"))[column] == "0.010–0.600"
    assert _cells(next(line for line in text.splitlines() if "noise floor" in line))[column] == "0.300–0.700 (2 pairs)"


def test_a_single_competitor_gets_no_empty_test_line_and_one_seed_says_what_it_cannot_tell():
    text = render(_document([_row("target-draws", 0, 1e-4, 0.5), _row("only", 0, 1e-2, 0.6)], [0]))
    assert '(MMD² and C2ST): .' not in text and "**best**" in _line(text, "only")
    assert "not evidence that one sampler is better" in text
