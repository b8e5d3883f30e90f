"""The command line: list, unknown names, the smoke end-to-end run, report re-rendering."""

from __future__ import annotations

import json

import pytest

from bench.cli import main


@pytest.fixture(autouse=True)
def builtins_only(monkeypatch):
    monkeypatch.setenv("PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_list_json_names_sources(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    targets = {t["name"]: t for t in listing["targets"]}
    samplers = {s["name"]: s for s in listing["samplers"]}
    assert targets["gmm3d"]["dim"] == 3 and targets["gmm3d"]["source"] == "pingsbench (built-in)"
    assert samplers["target-draws"]["source"] == "pingsbench (built-in)"


@pytest.mark.parametrize("option, value, kind", [("--samplers", "no-such-sampler", "sampler"),
                                                 ("--targets", "no-such-target", "target")])
def test_unknown_names_exit_2_and_list_available(option, value, kind, capsys, tmp_path):
    assert main(["run", option, value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"unknown {kind} {value!r}" in err and f"Available {kind}s:" in err
    assert ("target-draws" if kind == "sampler" else "gmm3d") in err
    assert not (tmp_path / "results.json").exists()


def test_smoke_run_writes_results_leaderboard_and_figure(tmp_path, capsys):
    args = ["run", "--samplers", "target-draws", "--targets", "gmm3d", "--profile", "smoke",
            "--repeats", "2", "--warmup", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["profile"] == "smoke" and results["rows"][0]["status"] == "ok"
    board = (out / "leaderboard.md").read_text()
    assert "## gmm3d" in board and "target-draws (floor)" in board and "MMD² ↓" in board
    assert "(gmm3d_samples.png)" in board and (out / "gmm3d_samples.png").stat().st_size > 10_000

    (out / "leaderboard.md").unlink()
    assert main(["report", str(out / "results.json")]) == 0
    assert (out / "leaderboard.md").read_text() == board


def test_report_rejects_foreign_json(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "something-else"}))
    assert main(["report", str(path)]) == 2
    assert "not a pingsbench.results/1 document" in capsys.readouterr().err


def test_validate_without_validation_lists_targets_that_have_one(tmp_path, capsys):
    assert main(["validate", "gmm3d", "--out", str(tmp_path)]) == 2
    assert "has no validation" in capsys.readouterr().err
