"""Plan mode (``--dry-run``): which models a run would reuse, load or train, with nothing trained or written."""

from __future__ import annotations

import pytest
import torch

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.plan import plan_run
from bench.profiles import get_profile
from bench.registry import Registry
from bench.runner import RunConfig, run
from samplers.diffusion import train as epsnet
from targets.mixtures import gmm3d

pytestmark = pytest.mark.usefixtures("single_thread")

SAMPLERS = ["ddim-4", "dpm-solver++-2m-4", "ddim-4@exact", "distilled-ode-1"]


@pytest.fixture
def registry(plugin_manager, monkeypatch):
    monkeypatch.setitem(epsnet.EPSNET_BUDGETS, "smoke", {"steps": 5, "batch": 32})
    return Registry.from_plugin_manager(plugin_manager)


def _config(cache_dir):
    return RunConfig(SAMPLERS, ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=64, repeats=1, warmup=0,
                     cache_dir=cache_dir)


def _summary(plan):
    return [(p["sampler"], p["status"], [(m["kind"], m["source"]) for m in p["models"]]) for p in plan]


def test_plan_tells_train_memory_and_disk_and_writes_nothing(registry, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    real_train = epsnet.train_denoiser

    def no_training(*args, **kwargs):
        raise AssertionError("a plan must not train")

    monkeypatch.setattr(epsnet, "train_denoiser", no_training)
    cold = plan_run(_config(cache_dir), registry)
    assert _summary(cold) == [
        ("ddim-4", "run", [("denoiser", "train")]),
        ("dpm-solver++-2m-4", "run", [("denoiser", "memory")]),  # shares the first sampler's learned model
        ("ddim-4@exact", "run", []),
        ("distilled-ode-1", "skipped", []),
    ]
    assert "damped oscillator" in cold[3]["reason"] and cold[0]["reason"] is None
    assert not cache_dir.exists()

    monkeypatch.setattr(epsnet, "train_denoiser", real_train)
    rows = run(_config(cache_dir), registry)["rows"]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "skipped"]
    entries = sorted(cache_dir.iterdir())

    monkeypatch.setattr(epsnet, "train_denoiser", no_training)
    warm = plan_run(_config(cache_dir), registry)
    assert _summary(warm)[:2] == [
        ("ddim-4", "run", [("denoiser", "disk")]),
        ("dpm-solver++-2m-4", "run", [("denoiser", "memory")]),
    ]
    # The plan's ids are the run's ids, and planning left the folder as it was.
    assert warm[0]["models"][0]["id"] == cold[0]["models"][0]["id"] == rows[0]["fit"]["models"][0]["id"]
    assert sorted(cache_dir.iterdir()) == entries
    assert all(entry.stat().st_size > 0 for entry in entries)


def test_plan_mode_cache_builds_without_training_or_loading_into_a_new_folder(tmp_path):
    cache = ModelCache(tmp_path / "plan", plan_only=True)
    ctx = FitContext(torch.device("cpu"), torch.float32, 0, get_profile("smoke"), cache)

    def train(module):
        raise AssertionError("a plan must not train")

    module = ctx.cached_model("toy", gmm3d(), {}, lambda: torch.nn.Linear(3, 3), train)
    assert isinstance(module, torch.nn.Linear) and not module.training
    assert ctx.models == [{"id": ctx.models[0]["id"], "kind": "toy", "source": "train"}]
    assert not (tmp_path / "plan").exists()
