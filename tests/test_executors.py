"""Executors without Ray: resuming a run (``--resume --out DIR``, ``--retry-failed``), the timing gate,
``--executor`` checks, the missing-Ray error, the leaderboard's timed-on line."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.executors.gate import NodeGate
from bench.profiles import get_profile
from bench.runner import RunConfig, run
from tests import failing_plugin
from tests.resume_helpers import GRID, RUN_OPTIONS, interrupted_run, rows_of

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def builtins_only(monkeypatch):
    monkeypatch.setenv("PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")


def _key(row):
    return row["target"], row["seed"], row["sampler"]


def _json(value):
    """``value`` as results.json holds it."""
    return json.loads(json.dumps(value, default=str))


def test_run_killed_by_sigint_resumes_with_every_row_and_none_run_twice(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    before = interrupted_run(out, cache, signal.SIGINT, {**os.environ, "PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"})

    assert main(["run", *RUN_OPTIONS, "--cache-dir", str(cache), "--out", str(out), "--resume"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("gmm3d seed")]
    after = rows_of(out)
    assert len(printed) == GRID - len(before)  # only the missing pairs ran
    assert len(after) == GRID and len({_key(row) for row in after}) == GRID
    kept = {_key(row): row for row in after}
    for row in before:  # finished rows are kept as they were, timing window included: not run again
        assert kept[_key(row)] == row


def _config(samplers, cache_dir, n=128):
    return RunConfig(samplers, ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=n, repeats=1, warmup=0,
                     floor_pairs=2, threads=1, cache_dir=cache_dir)


def test_resume_keeps_failed_rows_unless_retry_failed(pingsbench_registry, tmp_path):
    registry = pingsbench_registry(failing_plugin)
    samplers = ["target-draws", "ddim-4@exact", "fails-in-fit"]
    first = run(_config(samplers, None), registry, out_dir=tmp_path)
    assert [row["status"] for row in first["rows"]] == ["ok", "ok", "failed"]

    ran = []
    again = run(_config(samplers, None), registry, out_dir=tmp_path, on_row=ran.append, resume=True)
    assert ran == [] and _json(again["rows"]) == _json(first["rows"])
    assert _json(again["floors"]) == _json(first["floors"])

    # Points left under the retried pair's name (an earlier ok row of it, say) must not outlive its rerun.
    points = dict(np.load(tmp_path / "samples.npz"))
    np.savez(tmp_path / "samples.npz", **points, **{"gmm3d/fails-in-fit": points["gmm3d/ddim-4@exact"]})
    retried = run(_config(samplers, None), registry, out_dir=tmp_path, on_row=ran.append, resume=True,
                  retry_failed=True)
    assert [row["sampler"] for row in ran] == ["fails-in-fit"]
    assert sorted(np.load(tmp_path / "samples.npz").files) == sorted(points)
    assert _json(retried["rows"][:2]) == _json(first["rows"][:2]) and retried["rows"][2]["status"] == "failed"
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == _json(retried["rows"])


def test_resume_reruns_rows_of_another_configuration_and_runs_new_pairs(pingsbench_registry, tmp_path):
    registry = pingsbench_registry()
    run(_config(["target-draws"], None), registry, out_dir=tmp_path)
    ran = []
    run(_config(["target-draws", "ddim-4@exact"], None), registry, out_dir=tmp_path, on_row=ran.append, resume=True)
    assert [row["sampler"] for row in ran] == ["ddim-4@exact"]  # the finished pair is kept, the new one runs
    ran.clear()
    resumed = run(_config(["target-draws", "ddim-4@exact"], None, n=64), registry, out_dir=tmp_path,
                  on_row=ran.append, resume=True)
    assert len(ran) == 2 and all(row["n"] == 64 for row in resumed["rows"])  # another n: nothing kept


def test_resume_warns_about_finished_rows_outside_the_new_grid(pingsbench_registry, tmp_path, caplog):
    registry = pingsbench_registry()
    run(_config(["target-draws", "ddim-4@exact"], None), registry, out_dir=tmp_path)
    with caplog.at_level("WARNING", logger="pingsbench"):
        resumed = run(_config(["target-draws"], None), registry, out_dir=tmp_path, resume=True)
    assert [row["sampler"] for row in resumed["rows"]] == ["target-draws"]
    assert "1 finished rows of the previous run lie outside" in caplog.text and "ddim-4@exact" in caplog.text


def test_resume_options_are_checked_before_any_work(tmp_path, capsys):
    assert main(["run", "--resume", "--samplers", "target-draws"]) == 2
    assert "give it with --out DIR" in capsys.readouterr().err
    assert main(["run", "--retry-failed", "--out", str(tmp_path)]) == 2
    assert "add --resume" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{ truncated")
    assert main(["run", "--resume", "--out", str(tmp_path), "--samplers", "target-draws", "--targets", "gmm3d"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["run", "--ray-address", "auto", "--out", str(tmp_path)]) == 2
    assert "--ray-address is an option of --executor ray" in capsys.readouterr().err


def test_missing_ray_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    assert main(["run", "--executor", "ray", "--samplers", "target-draws", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ('error: --executor ray needs Ray, which is not installed; install it with '
                                       'pip install "pingsbench[ray]"\n')
    assert not (tmp_path / "out").exists()


def test_gate_runs_a_timing_alone_and_lets_untimed_work_overlap(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    gate = NodeGate("test")
    events: list[tuple[str, float]] = []

    def hold(name, block, seconds):
        with block():
            events.append((name + " start", time.monotonic()))
            time.sleep(seconds)
            events.append((name + " end", time.monotonic()))

    untimed = [threading.Thread(target=hold, args=(f"work{i}", gate.untimed, 0.3)) for i in range(2)]
    timed = threading.Thread(target=hold, args=("timing", gate.timed, 0.2))
    late = threading.Thread(target=hold, args=("late", gate.untimed, 0.05))
    for thread in untimed:
        thread.start()
    time.sleep(0.1)
    timed.start()  # waits for both untimed blocks
    time.sleep(0.05)
    late.start()  # arrives while the timing waits: must not start before it ends
    for thread in (*untimed, timed, late):
        thread.join(5)
    at = dict(events)
    assert at["work1 start"] < at["work0 end"] and at["work0 start"] < at["work1 end"]  # untimed work overlaps
    assert at["timing start"] >= max(at["work0 end"], at["work1 end"])
    assert at["late start"] >= at["timing end"]


def test_leaderboard_header_says_when_rows_were_timed_on_several_kinds_of_device():
    from bench.report.markdown import timed_on_lines

    def row(device_name, status="ok"):
        return {"status": status, "timed_on": {"node": "n", "device_name": device_name}}

    assert timed_on_lines([row("AMD EPYC"), row("AMD EPYC"), row("Intel Xeon", status="failed")]) == []
    (line,) = timed_on_lines([row("AMD EPYC"), row("AMD EPYC"), row("NVIDIA H100")])
    assert "timed on 2 kinds of device" in line and "AMD EPYC (2 rows)" in line and "NVIDIA H100 (1 row)" in line


def test_leaderboard_header_names_models_trained_on_another_kind_of_device():
    from bench.report.markdown import trained_on_lines

    def row(*trained_on):
        models = [{"id": f"m{i}", "trained_on": where} for i, where in enumerate(trained_on)]
        return {"status": "ok", "fit": {"models": models}}

    epyc = {"device": "cpu", "device_name": "AMD EPYC"}
    assert trained_on_lines([row(epyc), {"status": "failed", "fit": None}], "cpu") == []
    assert trained_on_lines([row({"device": "cuda"})], "cuda:0") == []
    (line,) = trained_on_lines([row(epyc, {"device": "cuda"}), row(epyc)], "cuda:0")
    assert "cpu (AMD EPYC) (1 model)" in line and "loaded from the model cache on cuda" in line
