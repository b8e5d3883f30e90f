"""The validation layer: every option and name refused before any work, the same way from the Python API."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from bench.cache import default_cache_dir
from bench.environment import resolve_device
from bench.errors import UsageError
from bench.metrics import compute_metrics
from bench.profiles import get_profile
from bench.registry import Registry, UnknownNameError
from bench.runner import RunConfig
from bench.validation import (
    MIN_N,
    check_cache_dir,
    check_out_dir,
    load_results,
    parse_names,
    select_samplers,
)
from samplers.diffusion.plugin import SPECS


@pytest.fixture
def registry(plugin_manager) -> Registry:
    return Registry.from_plugin_manager(plugin_manager)


def _config(**fields) -> RunConfig:
    values = {"samplers": ["target-draws"], "targets": ["gmm3d"], "profile": get_profile("smoke"),
              "device": torch.device("cpu"), "n": 100}
    return RunConfig(**{**values, **fields})


def test_min_n_is_what_the_metrics_need():
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(2 * MIN_N, 3, generator=generator)
    metrics = compute_metrics(draws[:MIN_N], draws[MIN_N:], seed=0)
    assert all(math.isfinite(value) for value in metrics.values())
    with pytest.raises(ValueError, match="at least"):
        compute_metrics(draws[: MIN_N - 1], draws[MIN_N:], seed=0)


@pytest.mark.parametrize("field, value, phrase", [
    ("n", 1, "n = 1 is too small; n must be ≥ 2"),
    ("n", -3, "n must be ≥ 2"),
    ("n", 2.5, "n = 2.5 is not an integer"),
    ("repeats", 0, "repeats must be ≥ 1"),
    ("warmup", -1, "warmup must be ≥ 0"),
    ("seed", "zero", "seed = 'zero' is not an integer"),
    ("device", "foo", "device = 'foo' is not a device name; available here: auto, cpu"),
    ("device", "meta", "holds no data"),
    ("dtype", torch.int64, "not a floating-point torch dtype"),
    ("profile", "fast", "choose one of smoke, quick, paper"),
])
def test_run_config_checks_its_fields_like_the_cli(field, value, phrase):
    with pytest.raises(UsageError) as info:
        _config(**{field: value})
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_run_config_takes_device_and_profile_names():
    config = _config(device="cpu", profile="smoke", n=MIN_N, repeats=1, warmup=0)
    assert config.device == torch.device("cpu") and config.profile is get_profile("smoke")


@pytest.mark.parametrize("samplers, targets, error, phrase", [
    ([], ["gmm3d"], UsageError, "no samplers selected"),
    (["target-draws"], [], UsageError, "no targets selected"),
    (["target-draws", "target-draws"], ["gmm3d"], UsageError, "sampler 'target-draws' is selected twice"),
    (["ddim-0"], ["gmm3d"], UsageError, "ddim-<steps> takes steps ≥ 1, got 0"),
    (["target-draws"], ["gmm4d"], UnknownNameError, "unknown target 'gmm4d'"),
])
def test_run_config_validate_checks_names(samplers, targets, error, phrase, registry):
    config = _config(samplers=samplers, targets=targets)
    with pytest.raises(error, match=re.escape(phrase)):
        config.validate(registry)


def test_every_family_states_its_rule_or_refuses_the_name(registry):
    # The number 0 is below every built-in family's minimum: each answers with a one-line usage error.
    for pattern in registry.families:
        name = re.sub(r"<[^>]+>", "0", re.sub(r"\[[^\]]*\]", "", pattern))
        with pytest.raises(UsageError) as info:
            registry.sampler(name)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.prefix)
def test_solver_families_state_their_rule(spec):
    unit = "nfe" if spec.counts_nfe else "steps"
    smallest = spec.calls_per_step if spec.counts_nfe else 1
    with pytest.raises(ValueError, match=re.escape(f"{spec.prefix}-<{unit}> takes {unit} ≥ {smallest}, got 0")):
        spec.steps(0)
    assert spec.steps(3 * spec.calls_per_step if spec.counts_nfe else 3) == 3
    if spec.counts_nfe and spec.calls_per_step > 1:
        with pytest.raises(ValueError, match=f"multiple of {spec.calls_per_step}, got {smallest * 3 + 1}"):
            spec.steps(smallest * 3 + 1)


def test_cuda_index_beyond_the_devices_lists_those_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UsageError, match=r"'cuda:1' is not a device torch sees.*auto, cpu, cuda, cuda:0"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("value", ["", ",", " ", " , ,"])
def test_names_that_name_nothing_are_refused(value):
    with pytest.raises(UsageError, match="names nothing"):
        parse_names(value, "--samplers")


def test_names_are_trimmed_and_absent_means_default():
    assert parse_names(" ddim-5, target-draws ,", "--samplers") == ["ddim-5", "target-draws"]
    assert parse_names(None, "--samplers") is None


def test_family_pattern_selects_its_sweep_or_defaults_once(registry):
    pattern = "ddim-<steps>[+uniform|+logsnr|+karras|+ld3][@exact|@paper-eps|@silu]"
    family = registry.families[pattern].obj
    selected = select_samplers(["ddim-5", pattern, "target-draws"], registry, sweep=True)
    assert selected == ["ddim-5", *[n for n in family.sweep if n != "ddim-5"], "target-draws"]
    assert select_samplers([pattern], registry, sweep=False) == list(family.defaults)
    assert select_samplers(None, registry, sweep=True) == registry.sweep_samplers()


def test_out_dir_is_probed_without_a_trace_for_dry_runs(tmp_path):
    nested = tmp_path / "a" / "b"
    assert check_out_dir(nested, create=False) == nested and not (tmp_path / "a").exists()
    assert list(tmp_path.iterdir()) == []
    assert check_out_dir(nested) == nested and nested.is_dir() and list(nested.iterdir()) == []
    with pytest.raises(UsageError, match="--out is empty"):
        check_out_dir("")


def test_cache_dir_defaults_and_no_cache():
    assert check_cache_dir(None, no_cache=True) is None
    assert check_cache_dir(None, no_cache=False) == default_cache_dir()
    assert str(check_cache_dir("somewhere", no_cache=False)) == "somewhere"


def _results(**changes):
    row = {"sampler": "target-draws", "target": "gmm3d", "status": "ok", "latency_ms": {"median": 1.0},
           "metrics": {"mmd2": 0.0}}
    document = {"schema": "pingsbench.results/1", "environment": {}, "config": {}, "metric_info": {}, "rows": [row]}
    return {**document, **changes}


@pytest.mark.parametrize("document, phrase", [
    (_results(schema="pingsbench.results/0"), "not a pingsbench.results/2 document (it holds schema"),
    ({"schema": "pingsbench.results/1", "rows": {}}, "has no 'rows' list"),
    (_results(config=None), "has no 'config' object"),
    (_results(rows=[{"sampler": "x", "target": "gmm3d"}]), "row 0 lacks one of sampler, target, status"),
    (_results(rows=[{"sampler": "x", "target": "gmm3d", "status": "ok"}]), "ok row 0 (x on gmm3d) lacks latency_ms"),
])
def test_results_documents_the_report_cannot_render_are_refused(document, phrase, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError, match=re.escape(phrase)):
        load_results(path)


def test_results_folder_stands_for_its_results_json(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    results, folder = load_results(tmp_path)
    assert folder == tmp_path and results["rows"][0]["sampler"] == "target-draws"
