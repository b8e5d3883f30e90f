"""``--executor ray`` against a real local Ray instance (2 CPUs, 1 thread per task).

Ray starts once for the module.  One smoke grid runs through both executors; the
tests compare them (same metrics and NFE), count trainings, look at the failing
task's row and at the timing records.  A run stopped by SIGTERM is resumed on Ray.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from bench import testing
from bench.cli import main
from bench.executors.ray import RayExecutor
from bench.profiles import get_profile
from bench.runner import RunConfig, run
from tests import failing_plugin
from tests.resume_helpers import GRID, RUN_OPTIONS, interrupted_run, rows_of

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ["target-draws", "ddim-4", "dpm-solver++-2m-4", "fails-in-fit"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with 2 CPUs whose workers can import this repository's test plugins."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        try:
            yield
        finally:
            ray.shutdown()


def _config(cache_dir: Path) -> RunConfig:
    return RunConfig(SAMPLERS, ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=256, seeds=SEEDS,
                     repeats=1, warmup=0, floor_pairs=2, threads=1, cache_dir=cache_dir, batch_sizes=[16])


@pytest.fixture(scope="module")
def grids(ray_instance, tmp_path_factory):
    """The same grid run in-process and on Ray, each with its own empty cache: both documents and folders."""
    folder = tmp_path_factory.mktemp("grids")
    with testing.registered(failing_plugin) as registry:
        local = run(_config(folder / "local-cache"), registry, out_dir=folder / "local")
        distributed = run(_config(folder / "ray-cache"), registry, out_dir=folder / "ray",
                          executor=RayExecutor(plugin_modules=[failing_plugin.__name__]))
    return local, distributed, folder


def _by_key(results):
    return {(row["target"], row["seed"], row["sampler"]): row for row in results["rows"]}


def test_ray_rows_equal_the_local_rows_in_every_metric_and_nfe(grids):
    local, distributed, folder = grids
    assert list(_by_key(local)) == list(_by_key(distributed))  # same pairs, same (grid) order
    for key, row in _by_key(local).items():
        other = _by_key(distributed)[key]
        assert (other["status"], other["nfe"], other["nfe_split"]) == (row["status"], row["nfe"], row["nfe_split"])
        assert other["metrics"] == row["metrics"], key
    ok = [row for row in local["rows"] if row["status"] == "ok"]
    assert len(ok) == 6 and all(row["metrics"] for row in ok)
    assert distributed["floors"] == local["floors"]
    # the document on disk is the streamed one, summary rebuilt
    on_disk = json.loads((folder / "ray" / "results.json").read_text())
    assert len(on_disk["rows"]) == len(SAMPLERS) * len(SEEDS) and len(on_disk["summary"]) == len(SAMPLERS)


def test_a_model_shared_by_several_samplers_is_trained_once(grids):
    _, distributed, folder = grids
    rows = [row for row in distributed["rows"] if row["status"] == "ok"]
    used = collections.defaultdict(set)
    trained = collections.Counter()
    for row in rows:
        for model in row["fit"]["models"]:
            used[model["id"]].add(row["sampler"])
            trained[model["id"]] += model["source"] == "trained"
    # one ε-net per seed, shared by DDIM and DPM-Solver++, trained exactly once each
    assert len(used) == len(SEEDS) and all(samplers == {"ddim-4", "dpm-solver++-2m-4"} for samplers in used.values())
    assert all(trained[model_id] == 1 for model_id in used)
    assert sorted(p.name for p in (folder / "ray-cache").iterdir() if p.is_file()) == sorted(
        p.name for p in (folder / "ray-cache").glob("*.pt"))  # no lock file left behind (metrics/ is a folder)
    assert len(list((folder / "ray-cache").glob("*.pt"))) == len(used)


def test_a_failing_task_fails_only_its_own_row(grids):
    _, distributed, _ = grids
    failed = [row for row in distributed["rows"] if row["status"] != "ok"]
    assert [row["sampler"] for row in failed] == ["fails-in-fit"] * len(SEEDS)
    assert all(failing_plugin.MESSAGE in row["error"] for row in failed)
    assert all(row["source"] == "test plugin tests.failing_plugin" for row in failed)


def test_rows_record_where_and_when_they_were_timed_and_timings_never_overlap(grids):
    _, distributed, _ = grids
    ok = [row for row in distributed["rows"] if row["status"] == "ok"]
    assert all(set(row["timed_on"]) == {"node", "device_name"} for row in ok)
    by_node = collections.defaultdict(list)
    for row in ok:
        window = row["timing_window"]
        assert window["start"] <= window["end"]
        by_node[row["timed_on"]["node"]].append((window["start"], window["end"]))
    for windows in by_node.values():
        windows.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(windows, windows[1:]))


def test_ray_rows_time_every_batch_size(grids):
    _, distributed, _ = grids
    ok = [row for row in distributed["rows"] if row["status"] == "ok"]
    assert ok and all(list(row["latency_by_n"]) == ["16", "256"] for row in ok)
    assert all(row["latency_by_n"][size]["median"] > 0 for row in ok for size in ("16", "256"))
    assert all(row["latency_ms"]["median"] == row["latency_by_n"]["256"]["median"] for row in ok)


def test_run_killed_by_sigterm_resumes_on_ray_with_every_row_and_none_run_twice(ray_instance, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    before = interrupted_run(out, cache, signal.SIGTERM, dict(os.environ))
    assert main(["run", *RUN_OPTIONS, "--cache-dir", str(cache), "--out", str(out), "--resume",
                 "--executor", "ray"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("gmm3d seed")]
    after = rows_of(out)
    assert len(printed) == GRID - len(before)
    assert len(after) == GRID and all(row["status"] == "ok" for row in after)
    kept = {(row["target"], row["seed"], row["sampler"]): row for row in after}
    for row in before:
        assert kept[(row["target"], row["seed"], row["sampler"])] == row


def test_ray_needs_a_writable_shared_cache(ray_instance, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for cache in (["--no-cache"], ["--cache-dir", str(blocker / "cache")]):
        assert main(["run", "--executor", "ray", "--samplers", "target-draws", *cache,
                     "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "every Ray node mounts" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
