"""The model cache: shared in memory, persisted safely, retrains on bad entries."""

from __future__ import annotations

import logging

import torch

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.profiles import get_profile
from targets.gmm import gmm3d


def _ctx(cache, seed=0):
    return FitContext(torch.device("cpu"), torch.float32, seed, get_profile("smoke"), cache)


class Trainer:
    def __init__(self):
        self.calls = 0

    def __call__(self, module):
        self.calls += 1
        with torch.no_grad():
            module.weight.fill_(float(self.calls))
        return {"history": {"step": [0, 1], "loss": [2.0, 1.0]}}


def _get(ctx, trainer, config=None):
    return ctx.cached_model("toy", gmm3d(), config or {"steps": 1}, lambda: torch.nn.Linear(3, 3), trainer)


def test_same_key_shares_one_instance_and_trains_once(tmp_path):
    cache, trainer = ModelCache(tmp_path), Trainer()
    first_ctx, second_ctx = _ctx(cache), _ctx(cache)
    assert _get(first_ctx, trainer) is _get(second_ctx, trainer)
    assert trainer.calls == 1
    assert [m["source"] for m in first_ctx.models + second_ctx.models] == ["trained", "memory"]
    assert not any(p.requires_grad for p in _get(second_ctx, trainer).parameters())


def test_disk_entry_is_reused_by_a_new_run(tmp_path):
    trainer = Trainer()
    weights = _get(_ctx(ModelCache(tmp_path)), trainer).weight.clone()
    ctx = _ctx(ModelCache(tmp_path))
    assert torch.equal(_get(ctx, trainer).weight, weights)
    assert trainer.calls == 1 and ctx.models[0]["source"] == "disk"
    assert ctx.models[0]["history"]["loss"] == [2.0, 1.0] and "train_seconds" in ctx.models[0]


def test_changed_config_or_seed_retrains(tmp_path):
    trainer = Trainer()
    _get(_ctx(ModelCache(tmp_path)), trainer)
    _get(_ctx(ModelCache(tmp_path)), trainer, {"steps": 2})
    _get(_ctx(ModelCache(tmp_path), seed=1), trainer)
    assert trainer.calls == 3 and len(list(tmp_path.iterdir())) == 3


def test_corrupt_entry_is_retrained_not_fatal(tmp_path, caplog):
    trainer = Trainer()
    _get(_ctx(ModelCache(tmp_path)), trainer)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        ctx = _ctx(ModelCache(tmp_path))
        _get(ctx, trainer)
    assert trainer.calls == 2 and ctx.models[0]["source"] == "trained"
    assert "ignoring cache entry" in caplog.text
    assert _get(_ctx(ModelCache(tmp_path)), trainer) is not None and trainer.calls == 2  # rewritten entry is valid


def test_entry_for_another_key_is_retrained(tmp_path, caplog):
    trainer = Trainer()
    _get(_ctx(ModelCache(tmp_path)), trainer)
    (entry,) = tmp_path.iterdir()
    payload = torch.load(entry, weights_only=True)
    payload["key"] = payload["key"].replace('"toy"', '"other"')
    torch.save(payload, entry)
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        _get(_ctx(ModelCache(tmp_path)), trainer)
    assert trainer.calls == 2 and "different model" in caplog.text


def test_entries_load_with_weights_only(tmp_path, monkeypatch):
    trainer = Trainer()
    _get(_ctx(ModelCache(tmp_path)), trainer)
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("weights_only")) or real_load(*a, **k))
    _get(_ctx(ModelCache(tmp_path)), trainer)
    assert seen == [True]


def test_training_is_deterministic_from_the_seed():
    def random_init():
        return torch.nn.Linear(3, 3)

    def noop(module):
        return {}

    first = _ctx(ModelCache(None)).cached_model("init", gmm3d(), {}, random_init, noop)
    second = _ctx(ModelCache(None)).cached_model("init", gmm3d(), {}, random_init, noop)
    other_seed = _ctx(ModelCache(None), seed=5).cached_model("init", gmm3d(), {}, random_init, noop)
    assert torch.equal(first.weight, second.weight)
    assert not torch.equal(first.weight, other_seed.weight)


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os

    from bench.cache import atomic_write_bytes

    path = tmp_path / "report.md"
    atomic_write_bytes(path, lambda handle: handle.write(b"x"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_bytes() == b"x" and (path.stat().st_mode & 0o777) == 0o666 & ~mask
