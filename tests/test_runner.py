"""The runner: failure isolation, measured NFE, results schema, atomic writes."""

from __future__ import annotations

import contextlib
import json
import logging
import math

import pytest
import torch

import bench.runner
from bench import hookimpl, timing
from bench.cli import main
from bench.plan import plan_run
from bench.contracts import Sampler, Target, UnsupportedTarget
from bench.profiles import get_profile
from bench.registry import Registry
from bench.report import write_report
from bench.runner import FIGURE_VALUES, RESULTS_SCHEMA, RunConfig, load_samples, run
from tests.conftest import registered

ROW_KEYS = {"sampler", "target", "status", "error", "nfe", "n", "latency_ms", "latency_by_n", "dtype", "fit_seconds",
            "phase_seconds", "metrics"}
LATENCY_KEYS = {"mean", "std", "median", "iqr", "min", "repeats", "warmup", "calls_per_block"}
PAPER_METRICS = {"mmd2", "mean_mse", "cov_mse", "skew_mse", "kurt_mse", "swd", "energy"}


class Simple(Sampler):
    """A sampler defined by a function of (n, generator, target)."""

    def __init__(self, name, draw):
        self.name, self.draw = name, draw

    def fit(self, target, ctx):
        return lambda n, generator: self.draw(n, generator, target)


class TwoCalls(Sampler):
    """Two evaluations of a module per sample, in chunks: measured NFE must be 2."""

    name = "two-calls"

    def fit(self, target, ctx):
        net = torch.nn.Linear(target.dim, target.dim)

        def sample(n, generator):
            x = target.sample(n, generator)
            return torch.cat([net(net(chunk)) * 0 + chunk for chunk in x.split(700)])

        return sample


class Picky(Sampler):
    name = "picky"

    def check(self, target):
        raise UnsupportedTarget("needs a 2-D target")

    def fit(self, target, ctx):  # pragma: no cover - never reached
        raise AssertionError


def _raise(n, generator, target):
    raise RuntimeError("boom inside the plugin")


class Plugin:
    @hookimpl
    def register_samplers(self, register):
        register(Simple("raises", _raise))
        register(Simple("nan", lambda n, g, t: torch.full((n, t.dim), float("nan"))))
        register(Simple("wrong-shape", lambda n, g, t: torch.zeros(n, t.dim + 1)))
        register(TwoCalls())
        register(Picky())


@pytest.fixture
def bad_plugin_registry(plugin_manager):
    with registered(plugin_manager, Plugin(), "bad-plugins") as registry:
        yield registry


def _config(samplers, n=1_500):
    # One thread: on a shared 2-core machine two OpenMP threads spin against each other (metrics ~30× slower).
    return RunConfig(samplers, ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=n, repeats=2, warmup=1,
                     threads=1, floor_pairs=2)


def test_failing_pairs_become_failed_rows_and_the_rest_finish(bad_plugin_registry, tmp_path):
    names = ["raises", "target-draws", "nan", "wrong-shape", "two-calls", "picky"]
    results = run(_config(names), bad_plugin_registry, out_dir=tmp_path)
    rows = {row["sampler"]: row for row in results["rows"]}
    assert [rows[n]["status"] for n in names] == ["failed", "ok", "failed", "failed", "ok", "skipped"]
    assert rows["raises"]["error"] == "RuntimeError: boom inside the plugin"
    assert "NaN or inf" in rows["nan"]["error"]
    assert "shape (1500, 4), expected (1500, 3)" in rows["wrong-shape"]["error"]
    assert "needs a 2-D target" in rows["picky"]["error"]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(results["rows"]))
    assert not list(tmp_path.glob(".*.tmp"))


class BrokenCheck(Picky):
    name = "broken-check"

    def check(self, target):
        raise KeyError("oops")


def test_a_check_that_raises_fails_only_its_own_row(plugin_manager):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(BrokenCheck())

    with registered(plugin_manager, Plugin(), "broken-check") as registry:
        config = _config(["broken-check", "target-draws"])
        rows = run(config, registry)["rows"]
        assert [(row["status"], row["error"]) for row in rows] == [("failed", "KeyError: 'oops'"), ("ok", None)]
        assert [(pair["status"], pair["reason"]) for pair in plan_run(config, registry)] == [
            ("failed", "KeyError: 'oops'"), ("run", None)]


def test_nfe_is_measured_not_declared(bad_plugin_registry):
    rows = run(_config(["two-calls", "target-draws"]), bad_plugin_registry)["rows"]
    assert [row["nfe"] for row in rows] == [2.0, 0.0]


def test_rows_carry_the_nfe_split_and_warnings(bad_plugin_registry):
    rows = run(_config(["two-calls", "raises"], n=1_000), bad_plugin_registry)["rows"]
    assert rows[0]["nfe_split"] == {"network": 2.0, "oracle": 0.0} and rows[0]["warnings"] == []
    assert rows[1]["nfe_split"] is None and rows[1]["warnings"] == []


def test_results_schema(bad_plugin_registry):
    results = run(_config(["target-draws", "raises"], n=1_000), bad_plugin_registry)
    assert results["schema"] == RESULTS_SCHEMA
    assert {"environment", "config", "rows", "metric_info", "floors", "summary"} <= set(results)
    assert {"torch", "torch_threads", "device", "device_name", "dtype"} <= set(results["environment"])
    ok, failed = results["rows"]
    assert ROW_KEYS <= set(ok) and ROW_KEYS <= set(failed)
    assert set(ok["latency_ms"]) == LATENCY_KEYS and ok["latency_ms"]["repeats"] == 2
    assert PAPER_METRICS <= set(ok["metrics"]) and "mode_weight_tv" in ok["metrics"]
    assert set(results["floors"]["gmm3d"]["metrics"]) == set(ok["metrics"])  # the floor moved out of the rows
    assert all(results["metric_info"][m]["better"] in ("lower", "higher") for m in ok["metrics"])
    assert failed["latency_ms"] is None and failed["status"] == "failed"
    phases = ok["phase_seconds"]
    assert list(phases) == ["fit", "sample", "latency", "metrics"] and min(phases.values()) >= 0
    assert phases["latency"] == ok["timing_window"]["end"] - ok["timing_window"]["start"]
    if timing.busy_cpu_seconds() is not None:  # Linux: the load other processes put on the timing is recorded
        assert set(ok["timing_contention"]) == {"other_cpus", "seconds", "loaded"}
        assert ok["timing_contention"]["other_cpus"] >= 0 and failed["timing_contention"] is None


def test_a_row_timed_under_load_says_so_in_its_row_the_log_and_the_report(bad_plugin_registry, monkeypatch,
                                                                            caplog, tmp_path):
    @contextlib.contextmanager
    def loaded():
        yield (record := {})
        record.update(other_cpus=1.5, seconds=0.4, loaded=True)

    monkeypatch.setattr(bench.runner, "cpu_contention", loaded)
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        results = run(_config(["target-draws"], n=500), bad_plugin_registry, out_dir=tmp_path)
    assert results["rows"][0]["timing_contention"] == {"other_cpus": 1.5, "seconds": 0.4, "loaded": True}
    assert "target-draws on gmm3d: timed while other processes used 1.5 CPUs" in caplog.text
    write_report(results, tmp_path)
    assert "⚠ **timed under load**: `target-draws` (seed 0: 1.5 CPUs)" in (tmp_path / "leaderboard.md").read_text()


def test_floor_row_sits_at_the_noise_floor(plugin_manager):
    # Exact draws are indistinguishable from the held-out set: not significant, near the floor.
    results = run(_config(["target-draws"], n=2_000), Registry.from_plugin_manager(plugin_manager))
    row, floor = results["rows"][0], results["floors"]["gmm3d"]["metrics"]["mmd2"]
    assert row["metrics"]["mmd2_pvalue"] > 0.01
    floor_scale = math.sqrt(sum(value**2 for value in floor["values"]) / len(floor["values"]))  # |MMD²| of exact pairs
    assert abs(row["metrics"]["mmd2"]) < 10 * floor_scale + 1e-3


def test_figure_samples_keep_fewer_points_in_high_dimension(plugin_manager, tmp_path):
    config = _config(["target-draws"], n=1_000)
    config.targets = ["gmm3d", "dho"]
    run(config, Registry.from_plugin_manager(plugin_manager), out_dir=tmp_path)
    kept = {key: array.shape for key, array in load_samples(tmp_path).items()}
    dho_points = FIGURE_VALUES // 64
    assert kept == {"gmm3d/reference": (1_000, 3), "gmm3d/target-draws": (1_000, 3),
                    "dho/reference": (dho_points, 64), "dho/target-draws": (dho_points, 64)}


def test_runs_are_reproducible_from_the_seed(plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)
    first, second = (run(_config(["target-draws"], n=800), registry)["rows"][0]["metrics"] for _ in range(2))
    assert first == second


def test_cli_exit_status_and_report_for_failed_rows(plugin_manager, tmp_path, monkeypatch):
    plugin_manager.register_from(Plugin(), "bad-plugins-cli", "test plugin")
    monkeypatch.setattr("bench.cli.get_plugin_manager", lambda **options: plugin_manager)
    code = main(["run", "--samplers", "target-draws,raises,nan,wrong-shape", "--targets", "gmm3d",
                 "--profile", "smoke", "--n", "800", "--repeats", "1", "--warmup", "0", "--no-cache",
                 "--no-progress", "--out", str(tmp_path)])
    assert code == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in results["rows"]] == ["ok", "failed", "failed", "failed"]
    board = (tmp_path / "leaderboard.md").read_text()
    assert "failed: RuntimeError: boom inside the plugin" in board


class BrokenDraws(Target):
    name, dim = "broken-draws", 2

    def sample(self, n, generator, dtype=torch.float32):
        raise RuntimeError("no draws today")


class BrokenPanel(Target):
    name, dim = "broken-panel", 2

    def sample(self, n, generator, dtype=torch.float32):
        return torch.randn(n, 2, generator=generator, dtype=dtype)

    def plot_panel(self, ax, generated, reference, title):
        raise RuntimeError("cannot draw")


class WritesOnTarget(Sampler):
    name = "writes-on-target"

    def fit(self, target, ctx):
        target.cached_draws = 1  # would change the target's cache identity for every later sampler
        return lambda n, generator: target.sample(n, generator)


def test_a_broken_target_fails_its_own_rows_and_figure_only(plugin_manager, tmp_path, caplog):
    class Plugin:
        @hookimpl
        def register_targets(self, register):
            register(BrokenDraws())
            register(BrokenPanel())

        @hookimpl
        def register_samplers(self, register):
            register(WritesOnTarget())

    with registered(plugin_manager, Plugin(), "broken-targets") as registry:
        config = RunConfig(["target-draws", "writes-on-target"], ["broken-draws", "broken-panel"],
                           get_profile("smoke"), torch.device("cpu"), n=200, repeats=1, warmup=0)
        with caplog.at_level(logging.WARNING, logger="pingsbench"):
            results = run(config, registry, out_dir=tmp_path)
            write_report(results, tmp_path, registry)
    rows = {(row["target"], row["sampler"]): row for row in results["rows"]}
    assert [rows["broken-draws", s]["status"] for s in ("target-draws", "writes-on-target")] == ["failed"] * 2
    error = rows["broken-draws", "target-draws"]["error"]
    assert "cannot draw its reference set: RuntimeError: no draws today" in error
    assert rows["broken-panel", "target-draws"]["status"] == "ok"
    assert "must not set attributes on the target" in rows["broken-panel", "writes-on-target"]["error"]
    assert "cached_draws" not in vars(registry.target("broken-panel"))
    assert not (tmp_path / "broken-panel_samples.png").exists() and "drawing it failed" in caplog.text
    assert "## broken-panel" in (tmp_path / "leaderboard.md").read_text()


def test_report_on_results_the_renderer_cannot_read_is_one_line(tmp_path, capsys, plugin_manager):
    results = run(_config(["target-draws"], n=200), Registry.from_plugin_manager(plugin_manager), out_dir=tmp_path)
    results["environment"] = {}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks what the report needs" in err
