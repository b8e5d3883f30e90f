"""The model cache: shared in memory, persisted safely, retrains on bad entries, never fatal; target identities."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from bench import hookimpl
from bench.cache import CACHE_FORMAT, ModelCache
from bench.contracts import FitContext, Sampler, Target
from bench.environment import device_kind
from bench.errors import PluginError
from bench.profiles import get_profile
from bench.registry import Registry
from bench.runner import RunConfig, run
from targets.mixtures import gmm3d
from tests.conftest import registered


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


def test_another_thread_count_retrains(tmp_path):
    # Trained weights depend on the intra-op thread count, so it is part of the key.
    trainer, threads = Trainer(), torch.get_num_threads()
    _get(_ctx(ModelCache(tmp_path)), trainer)
    torch.set_num_threads(threads + 1)
    try:
        _get(_ctx(ModelCache(tmp_path)), trainer)
    finally:
        torch.set_num_threads(threads)
    _get(_ctx(ModelCache(tmp_path)), trainer)
    assert trainer.calls == 2 and len(list(tmp_path.iterdir())) == 2


def test_the_device_is_not_part_of_a_models_identity():
    # A model trained on this CPU is the one a CUDA run of the same settings loads (issue 18, part 5).
    cpu = _ctx(ModelCache(None))
    cuda = FitContext(torch.device("cuda"), torch.float32, 0, get_profile("smoke"), ModelCache(None))
    assert ModelCache.key(cpu, "toy", gmm3d(), {"steps": 1}) == ModelCache.key(cuda, "toy", gmm3d(), {"steps": 1})
    other_dtype = FitContext(torch.device("cpu"), torch.float64, 0, get_profile("smoke"), ModelCache(None))
    assert ModelCache.key(cpu, "toy", gmm3d(), {}) != ModelCache.key(other_dtype, "toy", gmm3d(), {})


def test_a_model_records_where_it_was_trained_also_when_loaded(tmp_path):
    trainer = Trainer()
    ctx = _ctx(ModelCache(tmp_path))
    _get(ctx, trainer)
    assert ctx.models[0]["trained_on"] == {"device": "cpu", "device_name": device_kind(torch.device("cpu"))}
    again = _ctx(ModelCache(tmp_path))
    _get(again, trainer)
    assert again.models[0]["source"] == "disk" and again.models[0]["trained_on"] == ctx.models[0]["trained_on"]


def _keyed_by_device(entry, device_type):
    """Rewrite ``entry`` as pingsbench wrote it when keys held the device type (and info had no ``trained_on``)."""
    payload = torch.load(entry, weights_only=True)
    key = {**json.loads(payload["key"]), "device_type": device_type}
    payload["key"] = json.dumps(key, sort_keys=True)
    payload["info"] = json.dumps({k: v for k, v in json.loads(payload["info"]).items() if k != "trained_on"})
    old_entry = ModelCache(entry.parent).path_for(ModelCache.model_id(key["kind"], payload["key"]), "gmm3d", key)
    torch.save(payload, old_entry)
    entry.unlink()
    return old_entry


def test_an_entry_keyed_by_its_device_is_loaded_and_copied_under_the_new_key(tmp_path):
    trainer = Trainer()
    weights = _get(_ctx(ModelCache(tmp_path)), trainer).weight.clone()
    (entry,) = tmp_path.iterdir()
    old_entry = _keyed_by_device(entry, "cuda")
    plan = _ctx(ModelCache(tmp_path, plan_only=True))
    assert torch.equal(_get(plan, trainer).weight, weights) and plan.models[0]["source"] == "disk"
    assert list(tmp_path.iterdir()) == [old_entry]  # planning writes nothing
    ctx = _ctx(ModelCache(tmp_path))
    assert torch.equal(_get(ctx, trainer).weight, weights)
    assert trainer.calls == 1 and ctx.models[0]["source"] == "disk"
    assert ctx.models[0]["trained_on"] == {"device": "cuda"} and ctx.models[0]["history"]["loss"] == [2.0, 1.0]
    assert sorted(tmp_path.iterdir()) == sorted([old_entry, entry])  # the old entry stays, a copy joins it
    again = _ctx(ModelCache(tmp_path))
    _get(again, trainer)
    assert again.models[0]["trained_on"] == {"device": "cuda"} and trainer.calls == 1


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


# --- Never fatal: an unwritable directory, numpy state, old formats ---------------------------------


class SharedModelSampler(Sampler):
    """Asks the cache for a ``kind`` model: two instances of one kind share it."""

    def __init__(self, name, kind, trainer):
        self.name, self.kind, self.trainer = name, kind, trainer

    def fit(self, target, ctx):
        model = ctx.cached_model(self.kind, target, {"steps": 1}, lambda: torch.nn.Linear(target.dim, target.dim),
                                 self.trainer)
        return lambda n, generator: target.sample(n, generator) + 0 * model(torch.zeros(1, target.dim))


def test_unwritable_cache_keeps_models_in_memory_with_one_warning(tmp_path, plugin_manager, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    shared, other = Trainer(), Trainer()

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(SharedModelSampler("share-a", "toy-shared", shared))
            register(SharedModelSampler("share-b", "toy-shared", shared))
            register(SharedModelSampler("other", "toy-other", other))

    config = RunConfig(["share-a", "share-b", "other"], ["gmm3d"], get_profile("smoke"), torch.device("cpu"),
                       n=50, repeats=1, warmup=0, cache_dir=blocker / "cache")
    with registered(plugin_manager, Plugin(), "shared-models") as registry:
        with caplog.at_level(logging.WARNING, logger="pingsbench"):
            rows = run(config, registry)["rows"]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok"]
    first, second = (row["fit"]["models"][0] for row in rows[:2])
    assert first["id"] == second["id"] and [first["source"], second["source"]] == ["trained", "memory"]
    assert shared.calls == 1 and other.calls == 1
    assert sum("cannot write the model cache" in r.getMessage() for r in caplog.records) == 1
    assert "ignoring cache entry" not in caplog.text  # a missing folder is no corrupt entry
    assert blocker.read_text() == "not a directory"


class NumpyState(torch.nn.Linear):
    """A module whose extra state holds numpy values, as third-party code often does."""

    def __init__(self):
        super().__init__(3, 3)
        self.extra = {"scale": np.float64(1.0), "count": np.int64(0), "table": np.zeros(4, dtype=np.float32),
                      "nested": [np.float32(0.5), (np.int16(2), "label")]}

    def get_extra_state(self):
        return self.extra

    def set_extra_state(self, state):
        self.extra = state


def _train_numpy(module):
    with torch.no_grad():
        module.weight.fill_(2.0)
    module.extra = {"scale": np.float64(2.5), "count": np.int64(3), "table": np.arange(4, dtype=np.float32),
                    "nested": [np.float32(1.5), (np.int16(7), "label")]}
    return {"steps": np.int64(5), "loss": np.float32(0.25), "curve": np.array([1.0, 0.5]),
            "history": {"loss": [np.float64(1.0), np.float64(0.5)]}}


def _assert_trained_numpy_state(extra):
    assert type(extra["scale"]) is np.float64 and extra["scale"] == 2.5
    assert type(extra["count"]) is np.int64 and extra["count"] == 3
    assert extra["table"].dtype == np.float32 and extra["table"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert type(extra["nested"][0]) is np.float32 and type(extra["nested"][1][0]) is np.int16
    assert extra["nested"][1] == (7, "label")


def test_numpy_extra_state_and_info_are_saved_loadably(tmp_path):
    ctx = _ctx(ModelCache(tmp_path))
    module = ctx.cached_model("numpy", gmm3d(), {}, NumpyState, _train_numpy)
    assert torch.equal(module.weight, torch.full((3, 3), 2.0))
    _assert_trained_numpy_state(module.extra)
    info = ctx.models[0]
    assert info["steps"] == 5 and type(info["steps"]) is int and info["curve"] == [1.0, 0.5]
    json.dumps(info)  # plain Python: results.json needs no fallback
    (entry,) = tmp_path.iterdir()
    assert torch.load(entry, weights_only=True)["format"] == CACHE_FORMAT

    again = _ctx(ModelCache(tmp_path))
    loaded = again.cached_model("numpy", gmm3d(), {}, NumpyState, _train_numpy_not_again)
    assert again.models[0]["source"] == "disk" and again.models[0]["steps"] == 5
    assert torch.equal(loaded.weight, module.weight)
    _assert_trained_numpy_state(loaded.extra)  # restored with its numpy types


def _train_numpy_not_again(module):
    raise AssertionError("a valid cache entry exists")


class Opaque:
    """Extra state that no weights-only loader accepts."""


def test_extra_state_that_would_not_load_skips_the_save_with_a_warning(tmp_path, caplog):
    class OpaqueState(torch.nn.Linear):
        def get_extra_state(self):
            return {"handle": Opaque()}

        def set_extra_state(self, state):
            pass

    def train(module):
        with torch.no_grad():
            module.weight.fill_(3.0)
        return {}

    cache = ModelCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        first_ctx, second_ctx = _ctx(cache), _ctx(cache)
        module = first_ctx.cached_model("opaque", gmm3d(), {}, lambda: OpaqueState(3, 3), train)
        again = second_ctx.cached_model("opaque", gmm3d(), {}, lambda: OpaqueState(3, 3), train)
    assert again is module and torch.equal(module(torch.ones(1, 3)), torch.full((1, 3), 9.0) + module.bias)
    assert second_ctx.models[0]["source"] == "memory"
    assert "not caching" in caplog.text and "weights_only" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing half-usable written


def test_old_format_entry_is_retrained_never_read(tmp_path, caplog):
    trainer = Trainer()
    _get(_ctx(ModelCache(tmp_path)), trainer)
    (entry,) = tmp_path.iterdir()
    payload = torch.load(entry, weights_only=True)
    payload["format"] = CACHE_FORMAT - 1
    torch.save(payload, entry)
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        ctx = _ctx(ModelCache(tmp_path))
        _get(ctx, trainer)
    assert trainer.calls == 2 and ctx.models[0]["source"] == "trained"
    assert f"format {CACHE_FORMAT - 1}" in caplog.text
    assert torch.load(entry, weights_only=True)["format"] == CACHE_FORMAT  # rewritten in the new format


# --- Identity: the target's state is part of every key ----------------------------------------------


class Blob(Target):
    """A plugin-like target written from scratch: ``N(mean, scale² I)``."""

    name, dim = "blob", 2

    def __init__(self, mean=(0.0, 0.0), scale=1.0, extras=None, description="a blob"):
        self.mean = torch.tensor(mean)
        self.scale = scale
        self.extras = extras or {"tags": ["a", "b"], "grid": np.linspace(0, 1, 3)}
        self.description = description
        self._draw_cache = {}  # private: never part of the identity

    def sample(self, n, generator, dtype=torch.float32):
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.mean + self.scale * noise).to(dtype)


def _model_record(target, directory, trainer):
    ctx = _ctx(ModelCache(directory))
    ctx.cached_model("toy", target, {"steps": 1}, lambda: torch.nn.Linear(2, 2), trainer)
    return ctx.models[0]


def test_a_changed_parameter_gives_a_new_model_and_equal_ones_reuse_it(tmp_path):
    trainer = Trainer()
    first = _model_record(Blob(), tmp_path, trainer)
    shifted = _model_record(Blob(mean=(0.0, 0.5)), tmp_path, trainer)
    same = _model_record(Blob(), tmp_path, trainer)
    assert first["source"] == "trained" and shifted["source"] == "trained" and shifted["id"] != first["id"]
    assert same["source"] == "disk" and same["id"] == first["id"] and trainer.calls == 2


@pytest.mark.parametrize(
    "changed",
    [
        {"mean": (0.0, 1e-6)},
        {"scale": 1.5},
        {"scale": np.float32(1.5)},
        {"extras": {"tags": ["a", "c"], "grid": np.linspace(0, 1, 3)}},
        {"extras": {"tags": ["a", "b"], "grid": np.linspace(0, 2, 3)}},
    ],
)
def test_every_kind_of_public_attribute_is_part_of_the_identity(changed):
    assert Blob(**changed).fingerprint() != Blob().fingerprint()


def test_description_private_attributes_and_container_types_leave_the_identity_alone():
    blob = Blob()
    blob._draw_cache["x"] = object()
    assert Blob(description="renamed").fingerprint() == Blob().fingerprint() == blob.fingerprint()
    assert Blob(scale=np.float64(1.0)).fingerprint() == Blob().fingerprint()  # a number is a number
    assert json.loads(json.dumps(Blob().fingerprint())) == Blob().fingerprint()


def test_class_level_parameters_count_too():
    class Wide(Blob):
        spread = 2.0

    class Wider(Blob):
        spread = 3.0

    assert Wide().fingerprint() != Wider().fingerprint()


def test_gmm_identity_follows_its_parameters():
    moved = gmm3d()
    moved.means[0, 0] += 0.1
    assert moved.fingerprint() != gmm3d().fingerprint() and gmm3d().fingerprint() == gmm3d().fingerprint()


def test_an_unhashable_attribute_stops_registration_naming_the_target(plugin_manager):
    class WithCallback(Blob):
        def __init__(self):
            super().__init__()
            self.transform = lambda x: 2 * x

    class Plugin:
        @hookimpl
        def register_targets(self, register):
            register(WithCallback())

    with pytest.raises(PluginError, match=r"target 'blob'.*'transform'.*override Target.fingerprint\(\)"):
        with registered(plugin_manager, Plugin(), "unhashable-target"):
            pass

    class Described(WithCallback):
        def fingerprint(self):
            return {"name": self.name, "dim": self.dim, "mean": self.mean.tolist()}

    registry = Registry()
    registry.add_target(Described(), "test")
    assert registry.target("blob").fingerprint()["mean"] == [0.0, 0.0]


def test_a_fingerprint_that_is_not_json_is_a_plugin_error():
    class Bad(Blob):
        def fingerprint(self):
            return {"name": self.name, "mean": self.mean}

    with pytest.raises(PluginError, match="'blob'.*JSON-able"):
        Registry().add_target(Bad(), "test")


def _shift_weights(module):
    with torch.no_grad():
        module.weight.add_(1.0)
    return {}


def test_a_failed_load_trains_from_the_seeded_initialisation(tmp_path, caplog):
    expected = _get(_ctx(ModelCache(None)), _shift_weights).weight.clone()  # seeded init + 1
    _get(_ctx(ModelCache(tmp_path)), _shift_weights)
    (entry,) = tmp_path.iterdir()
    payload = torch.load(entry, weights_only=True)
    payload["state_dict"]["unexpected"] = torch.zeros(1)  # strict loading copies the weight, then raises
    torch.save(payload, entry)
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        ctx = _ctx(ModelCache(tmp_path))
        retrained = _get(ctx, _shift_weights)
    assert ctx.models[0]["source"] == "trained" and "ignoring cache entry" in caplog.text
    assert torch.equal(retrained.weight, expected)  # not the loaded weights shifted once more


def test_train_info_that_is_not_json_skips_the_save_with_its_own_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pingsbench"):
        ctx = _ctx(ModelCache(tmp_path))
        model = _get(ctx, lambda module: {"seen": {1, 2}})
    assert isinstance(model, torch.nn.Linear) and ctx.models[0]["source"] == "trained"
    assert "train() info is not JSON-able" in caplog.text and not list(tmp_path.iterdir())


def test_builtin_functions_on_the_class_are_not_state():
    class Squashed(Blob):
        squash = torch.tanh
        wave = np.sin

    assert Squashed().fingerprint() == Blob().fingerprint()
