"""The metric cache returns compute_metrics' values bit for bit, and only for the same inputs and code."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import bench.metrics
from bench.metrics import cache as metric_cache
from bench.metrics.cache import cached_metrics

N = 300


@pytest.fixture
def samples():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(N, 3, generator=generator), torch.randn(N, 3, generator=generator) + 0.1


@pytest.fixture
def calls(monkeypatch):
    """Counts compute_metrics calls (the cache's only way to a value it does not have)."""
    counter = {"n": 0}
    compute = bench.metrics.compute_metrics

    def counted(*args, **kwargs):
        counter["n"] += 1
        return compute(*args, **kwargs)

    monkeypatch.setattr(bench.metrics, "compute_metrics", counted)
    return counter


def entries(directory):
    return sorted((directory / metric_cache.SUBDIRECTORY).glob("*.json"))


def test_a_hit_returns_the_computed_values_bit_for_bit(samples, calls, tmp_path):
    generated, reference = samples
    fresh = bench.metrics.compute_metrics(generated, reference, seed=7)
    first = cached_metrics(generated, reference, seed=7, directory=tmp_path)
    second = cached_metrics(generated, reference, seed=7, directory=tmp_path)
    assert calls["n"] == 2  # the fresh computation and the first (missing) entry; the second is read
    assert first == second == fresh
    assert list(first) == list(fresh)  # same order (the report's columns)
    assert len(entries(tmp_path)) == 1


def test_any_changed_input_is_a_miss(samples, calls, tmp_path, monkeypatch):
    generated, reference = samples
    cached_metrics(generated, reference, seed=7, directory=tmp_path)
    nudged = generated.clone()
    nudged[0, 0] = torch.nextafter(nudged[0, 0], torch.tensor(float("inf")))  # one ulp of one coordinate
    cached_metrics(nudged, reference, seed=7, directory=tmp_path)
    cached_metrics(generated, reference[:-1], seed=7, directory=tmp_path)
    cached_metrics(generated, reference, seed=8, directory=tmp_path)
    cached_metrics(generated, reference, seed=7, directory=tmp_path, permutations=10)
    cached_metrics(generated.double(), reference, seed=7, directory=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        cached_metrics(generated, reference, seed=7, directory=tmp_path)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(metric_cache, "metric_code_digest", lambda: "edited metric code")
    cached_metrics(generated, reference, seed=7, directory=tmp_path)
    assert calls["n"] == 8 and len(entries(tmp_path)) == 8


def test_a_corrupt_entry_is_recomputed_and_rewritten(samples, calls, tmp_path, caplog):
    generated, reference = samples
    values = cached_metrics(generated, reference, seed=7, directory=tmp_path)
    (entry,) = entries(tmp_path)
    entry.write_text('{"key": ')  # a write cut short
    with caplog.at_level(logging.WARNING):
        assert cached_metrics(generated, reference, seed=7, directory=tmp_path) == values
    assert "unreadable" in caplog.text and calls["n"] == 2
    assert json.loads(entry.read_text())["metrics"] == values


def test_an_entry_under_another_key_is_not_trusted(samples, calls, tmp_path):
    generated, reference = samples
    values = cached_metrics(generated, reference, seed=7, directory=tmp_path)
    (entry,) = entries(tmp_path)
    stored = json.loads(entry.read_text())
    stored["key"]["seed"] = 8
    stored["metrics"] = {name: 0.0 for name in values}
    entry.write_text(json.dumps(stored))
    assert cached_metrics(generated, reference, seed=7, directory=tmp_path) == values
    assert calls["n"] == 2


def test_without_a_directory_nothing_is_stored(samples, calls, tmp_path, monkeypatch):
    generated, reference = samples
    monkeypatch.chdir(tmp_path)
    cached_metrics(generated, reference, seed=7, directory=None)
    cached_metrics(generated, reference, seed=7, directory=None)
    assert calls["n"] == 2 and not list(tmp_path.rglob("*"))


def test_an_unwritable_cache_costs_only_the_recomputation(samples, calls, tmp_path, caplog):
    generated, reference = samples
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # the metrics folder cannot be created under a file
    with caplog.at_level(logging.WARNING):
        values = cached_metrics(generated, reference, seed=7, directory=blocked)
    assert values == bench.metrics.compute_metrics(generated, reference, seed=7)
    assert "could not store" in caplog.text
