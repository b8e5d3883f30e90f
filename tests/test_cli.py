"""The command line: list, unknown names, the smoke end-to-end run, report re-rendering, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.plugins import get_plugin_manager
from bench.registry import Registry


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
    assert re.search(r"1 row, 0 failed, in (\d+ min )?\d+ s \(fit \d+ s, sample \d+ s, latency \d+ s, metrics \d+ s\)",
                     capsys.readouterr().out)

    # The rerun on the same cache reads every metric back (floor pairs and row): same values, no new entry.
    entries = sorted((tmp_path / "cache" / "metrics").glob("*.json"))
    assert len(entries) == 1 + results["config"]["floor_pairs"]
    assert main([*args[:-1], str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["rows"][0]["metrics"] == results["rows"][0]["metrics"] and again["floors"] == results["floors"]
    assert sorted((tmp_path / "cache" / "metrics").glob("*.json")) == entries


def test_two_seed_smoke_run_renders_the_summary_with_intervals_and_ties(tmp_path, capsys):
    args = ["run", "--samplers", "target-draws,ddim-5@exact,ddim-40@exact", "--targets", "gmm3d",
            "--profile", "smoke", "--n", "300", "--seeds", "2", "--floor-pairs", "2", "--threads", "1",
            "--repeats", "2", "--warmup", "0", "--no-progress", "--no-cache", "--out", str(tmp_path)]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["schema"] == "pingsbench.results/2" and results["config"]["seeds"] == [0, 1]
    assert sorted((row["sampler"], row["seed"]) for row in results["rows"]) == sorted(
        (name, seed) for name in ("target-draws", "ddim-5@exact", "ddim-40@exact") for seed in (0, 1))
    entry = next(e for e in results["summary"] if e["sampler"] == "ddim-5@exact")
    assert entry["metrics"]["mmd2"]["ci_low"] < entry["metrics"]["mmd2"]["mean"] < entry["metrics"]["mmd2"]["ci_high"]
    board = (tmp_path / "leaderboard.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| ddim-5@exact"))
    assert row.count(" ± ") >= 3  # latency, MMD², C2ST, ...: mean ± half-width
    assert "**best**" in board and "paired t-test against the best row over the 2 replicate seeds each row shares" in board
    assert "2 seeds (0, 1), threads 1" in board


def test_report_rejects_foreign_json(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "something-else"}))
    assert main(["report", str(path)]) == 2
    assert "not a pingsbench.results/2 document" in capsys.readouterr().err


def test_validate_without_validation_lists_targets_that_have_one(tmp_path, capsys):
    assert main(["validate", "gmm3d", "--out", str(tmp_path)]) == 2
    assert "has no validation" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input (issue 12)

#: Options every ``run``/``sweep`` row gets unless the row sets them: a smoke run that
#: would train and write into the test's folders if validation let it through.
RUN_DEFAULTS = {"--targets": "gmm3d", "--profile": "smoke", "--n": "200", "--repeats": "1", "--warmup": "0",
                "--cache-dir": "{cache}", "--out": "{out}"}


def _argv(row: list[str | None], paths: dict[str, Path]) -> list[str]:
    """The row's arguments with ``RUN_DEFAULTS`` added; an option followed by ``None`` is left out."""
    given = [arg for arg in row if arg is not None]
    omitted = {row[i - 1] for i, arg in enumerate(row) if arg is None}
    argv = [arg.format(**paths) for i, arg in enumerate(given)
            if arg not in omitted and (i == 0 or given[i - 1] not in omitted)]
    if argv[0] in ("run", "sweep"):
        for option, value in RUN_DEFAULTS.items():
            if option not in given and not (option == "--cache-dir" and "--no-cache" in argv):
                argv += [option, value.format(**paths)]
        argv.append("--no-progress")
    return argv


#: Every command-line row of issue 12's table: (argv, exit status, phrase in stderr or stdout).
#: ``{file}`` is an existing regular file, ``{cache}``/``{out}`` the test's cache and output folders.
CLI_ROWS = {
    "samplers empty": (["run", "--samplers", ""], 2, "--samplers '' names nothing"),
    "samplers comma": (["run", "--samplers", ","], 2, "--samplers ',' names nothing"),
    "samplers space": (["sweep", "--samplers", " "], 2, "--samplers ' ' names nothing"),
    "targets empty": (["run", "--targets", ""], 2, "--targets '' names nothing"),
    "n 0": (["run", "--n", "0"], 2, "--n must be ≥ 2"),
    "n 1": (["run", "--n", "1"], 2, "--n must be ≥ 2"),
    "n -3": (["run", "--n", "-3"], 2, "--n must be ≥ 2"),
    "ddim-0": (["run", "--samplers", "ddim-0"], 2, "sampler 'ddim-0' is not available: ddim-<steps> takes steps ≥ 1"),
    "dpm-solver-2-3": (["run", "--samplers", "target-draws,dpm-solver-2-3"], 2,
                       "dpm-solver-2-<nfe> makes 2 network calls per step, so the NFE must be a multiple of 2"),
    "heun-0@exact": (["sweep", "--samplers", "dpm-solver-heun-0@exact"], 2,
                     "dpm-solver-heun-<steps> takes steps ≥ 1"),
    "repeats 0": (["run", "--repeats", "0"], 2, "--repeats must be ≥ 1"),
    "warmup -1": (["run", "--warmup", "-1"], 2, "--warmup must be ≥ 0"),
    "device foo": (["run", "--device", "foo"], 2, "--device 'foo' is not a device name; available here: auto, cpu"),
    "device cuda": (["run", "--device", "cuda"], 2, "sees no CUDA device; available here: auto, cpu"),
    "device cuda:3": (["run", "--device", "cuda:3"], 2, "available here: auto, cpu"),
    "device mps": (["run", "--device", "mps"], 2, "'mps' is not a device torch sees on this machine; available here"),
    "device meta": (["run", "--device", "meta"], 2, "'meta' holds no data"),
    "validate device": (["validate", "dho", "--device", "foo", "--out", "{out}"], 2, "--device 'foo'"),
    "out file": (["run", "--out", "{file}"], 2, "is an existing file; give a folder"),
    "out under file": (["sweep", "--out", "{file}/sub"], 2, "lies under the file"),
    "out unwritable": (["run", "--out", "/proc/pingsbench-test/out"], 2, "cannot be written"),
    "validate out file": (["validate", "dho", "--out", "{file}"], 2, "is an existing file"),
    "cache-dir and no-cache": (["run", "--cache-dir", "{cache}", "--no-cache"], 2, "contradict each other"),
    "cache-dir empty": (["run", "--cache-dir", ""], 2, "--cache-dir is empty"),
    "not an int": (["run", "--n", "ten"], 2, "argument --n: invalid int value: 'ten'"),
    "report truncated": (["report", "{truncated}"], 2, "is not valid JSON, perhaps truncated"),
    "report []": (["report", "{empty_list}"], 2, "is not a pingsbench.results/2 document (it holds a JSON list)"),
    "report without rows": (["report", "{no_rows}"], 2, "has no 'rows' list"),
    "report missing": (["report", "{out}/results.json"], 2, "does not exist"),
    "default output folder": (["run", "--samplers", "target-draws", "--out", None], 0, "runs/"),
}


@pytest.fixture
def bad_input_paths(tmp_path, monkeypatch):
    """A cwd of its own (runs/ lands there), the cache and output folders, and broken results files."""
    monkeypatch.chdir(tmp_path)
    # Every machine refuses cuda and mps the same way, whatever it has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    files = {"file": "a-file.txt", "truncated": "truncated.json", "empty_list": "empty.json", "no_rows": "no-rows.json"}
    paths = {key: tmp_path / name for key, name in files.items()}
    paths["file"].write_text("not a folder")
    paths["truncated"].write_text('{"schema": "pingsbench.results/1", "rows": [{"sampler": "ddim-5", "tar')
    paths["empty_list"].write_text("[]")
    paths["no_rows"].write_text(json.dumps({"schema": "pingsbench.results/1", "config": {}}))
    return {**paths, "cache": tmp_path / "cache", "out": tmp_path / "out"}


@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_bad_input_is_refused_before_any_work(row, bad_input_paths, tmp_path, capsys):
    if row == "out unwritable" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc, a folder even root cannot write into")
    argv, status, phrase = CLI_ROWS[row]
    argv = _argv(argv, bad_input_paths)
    results_before = {p for p in tmp_path.rglob("results.json")}

    assert main(argv) == status
    out, err = capsys.readouterr()
    if status == 2:
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert phrase in err
        # Refused before any work: nothing trained into the cache, no results written.
        cache = bad_input_paths["cache"]
        assert not cache.exists() or not any(cache.iterdir())
        assert {p for p in tmp_path.rglob("results.json")} == results_before
        assert not bad_input_paths["out"].exists()
    else:
        # The default output: a fresh runs/<timestamp>/ in the working directory, printed at the end.
        (folder,) = (tmp_path / "runs").iterdir()
        assert re.fullmatch(r"\d{8}-\d{6}", folder.name) and (folder / "results.json").exists()
        assert f"{phrase}{folder.name}/" in out.splitlines()[-1]
        assert not (tmp_path / "reports").exists()


def test_verbose_adds_the_traceback(capsys):
    for argv in (["-v", "run", "--n", "0"], ["run", "--n", "0", "-v"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: --n 0 is too small")


def test_installed_entry_point_exits_2_with_one_line(tmp_path):
    executable = Path(sys.executable).with_name("pingsbench")
    if not executable.exists():
        executable = shutil.which("pingsbench")
    assert executable, "the pingsbench console script is not installed"
    done = subprocess.run([str(executable), "run", "--samplers", "ddim-0", "--cache-dir", str(tmp_path / "cache"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: sampler 'ddim-0' is not available: ddim-<steps> takes steps ≥ 1, got 0\n"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_sweep_selects_a_family_by_its_pattern(monkeypatch, tmp_path):
    registry = Registry.from_plugin_manager(get_plugin_manager())
    pattern = "ddim-<steps>[+uniform|+logsnr|+karras|+ld3][@exact|@paper-eps|@silu]"
    family = registry.families[pattern].obj
    planned = {}

    def capture(config, registry, out, **options):  # options: executor, resume, retry_failed
        planned[config.samplers[0]] = config.samplers
        return 0

    monkeypatch.setattr("bench.cli.execute", capture)
    for command, expected in (("sweep", family.sweep), ("run", family.defaults)):
        assert main([command, "--samplers", pattern, "--targets", "gmm3d", "--out", str(tmp_path / command)]) == 0
        assert planned.pop(expected[0]) == list(expected)


def test_dry_run_lists_pairs_and_models_and_trains_nothing(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["run", "--dry-run", "--samplers", "target-draws,ddim-5,ddim-10,ddim-5@exact", "--targets", "gmm3d",
            "--profile", "smoke", "--cache-dir", str(cache), "--out", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    rows = {line.split()[1]: line for line in table.splitlines() if line.startswith("gmm3d ")}
    assert set(rows) == {"target-draws", "ddim-5", "ddim-10", "ddim-5@exact"}
    # ddim-5 and ddim-10 share one ε-net: trained for the first, reused by the second; @exact needs none.
    assert "(train)" in rows["ddim-5"] and "(reuse in memory)" in rows["ddim-10"]
    assert "train" not in rows["ddim-5@exact"]
    assert "4 pairs would run, 0 skipped; models: 1 to train, 0 to load from the cache, 1 reuses in memory" in table
    assert not cache.exists() or not any(cache.iterdir())
    assert not out.exists()


def test_report_with_unreadable_samples_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--samplers", "target-draws", "--targets", "gmm3d", "--profile", "smoke", "--n", "100",
                 "--repeats", "1", "--warmup", "0", "--no-progress", "--no-cache", "--out", str(out)]) == 0
    samples = out / "samples.npz"
    samples.write_bytes(samples.read_bytes()[:50])  # truncated
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "samples.npz cannot be read" in err and "Traceback" not in err


def test_list_into_a_closed_pipe_ends_without_a_traceback():
    pingsbench = Path(sys.executable).with_name("pingsbench")
    done = subprocess.run(f"'{pingsbench}' list | head -n 1", shell=True, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert done.stdout.startswith("Targets") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
