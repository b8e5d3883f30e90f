"""Latency across batch sizes (issue 18): every requested n timed inside the timing window, a size over the cap
skipped with its reason, peak CUDA memory per size, bad sizes refused before any work, resume keyed on sizes."""

from __future__ import annotations

import contextlib
import math
import re

import pytest
import torch

from bench import hookimpl, testing
from bench.cache import ModelCache
from bench.cli import main
from bench.contracts import Sampler
from bench.errors import UsageError
from bench.profiles import get_profile
from bench.results import resumable_rows, summarize
from bench.runner import RunConfig, prepare_target, run_pair, time_batch_sizes
from bench.timing import Timer, predict_call_seconds
from targets.mixtures import gmm3d

pytestmark = pytest.mark.usefixtures("single_thread")


def config(**changes) -> RunConfig:
    values = dict(samplers=["target-draws"], targets=["gmm3d"], profile=get_profile("smoke"),
                  device=torch.device("cpu"), n=100, repeats=2, warmup=1, threads=1)
    return RunConfig(**{**values, **changes})


class LinearClock:
    """A fake clock: a call at batch size m takes m × 0.1 ms; reading the clock takes no time."""

    def __init__(self):
        self.now, self.calls = 0.0, []

    def __call__(self):
        return self.now

    def call_at(self, size):
        def call():
            self.calls.append(size)
            self.now += size * 1e-4
        return call


def test_every_requested_size_is_timed_and_a_size_over_the_cap_records_why():
    clock = LinearClock()
    cfg = config(batch_sizes=[1_000_000, 10, 1, 10_000], latency_cap_s=30.0)
    assert cfg.batch_sizes == [1, 10, 100, 10_000, 1_000_000]  # ascending, the run's n added
    entries = time_batch_sizes(clock.call_at, cfg, first_call_seconds=0.05,
                               timer=Timer("cpu", threads=1, clock=clock))
    assert list(entries) == ["1", "10", "100", "10000", "1000000"]
    for size in (1, 10, 100, 10_000):
        entry = entries[str(size)]
        assert entry["median"] == pytest.approx(size * 0.1) and entry["iqr"] == pytest.approx(0.0, abs=1e-9)
        assert entry["samples_per_s"] == pytest.approx(1e4) and entry["repeats"] == 2
    # 10⁶ samples at 0.1 ms per 1000 would take 100 s: estimated by the power law through 100 and 10⁴ (linear
    # here), never called
    skipped = entries["1000000"]
    assert set(skipped) == {"skipped", "estimated_ms"}
    assert skipped["estimated_ms"] == pytest.approx(1e5)
    assert "exceeds the cap of 30 s" in skipped["skipped"] and "n = 100, 10000" in skipped["skipped"]
    assert 1_000_000 not in clock.calls


def test_the_run_n_is_timed_even_above_the_cap():
    clock = LinearClock()
    cfg = config(n=1000, batch_sizes=[1000], latency_cap_s=0.01)  # one call at n takes 0.1 s
    entries = time_batch_sizes(clock.call_at, cfg, first_call_seconds=10.0, timer=Timer("cpu", clock=clock))
    assert entries["1000"]["median"] == pytest.approx(100.0)


def test_a_failing_extra_size_is_recorded_and_a_failing_run_size_raises():
    def failing_at(failing):
        def call_at(size):
            def call():
                if size == failing:
                    raise RuntimeError(f"fails at {size}")
            return call
        return call_at

    entries = time_batch_sizes(failing_at(1), config(batch_sizes=[1, 100]), 0.01)
    assert entries["1"] == {"failed": "RuntimeError: fails at 1"} and "median" in entries["100"]
    with pytest.raises(RuntimeError, match="fails at 100"):
        time_batch_sizes(failing_at(100), config(batch_sizes=[1, 100]), 0.01)


def test_peak_cuda_memory_is_recorded_per_size_with_the_counter_reset_before_each(monkeypatch):
    events, allocated = [], {"now": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["now"])
    cfg = config(batch_sizes=[10, 100], repeats=1, warmup=0)
    cfg.device = torch.device("cuda")  # faked: nothing runs on it

    def call_at(size):
        def call():
            events.append(("call", size))
            allocated["now"] = size * 2**20  # MiB per sample
        return call

    timer = Timer("cuda", threads=1, synchronize=lambda device: events.append(("sync", device.type)))
    entries = time_batch_sizes(call_at, cfg, 0.001, timer=timer)
    assert entries["10"]["peak_memory_mb"] == 10 and entries["100"]["peak_memory_mb"] == 100
    resets = [index for index, event in enumerate(events) if event[0] == "reset"]
    calls = {size: events.index(("call", size)) for size in (10, 100)}
    assert len(resets) == 2 and resets[0] < calls[10] < resets[1] < calls[100]
    assert events[resets[0] + 1] == ("sync", "cuda")  # the timer's barrier, once per clock reading


class GateRecorder:
    """A timing gate that remembers whether a block is open, and a sampler that notes it on every call."""

    def __init__(self):
        self.state, self.seen = "idle", []

    @contextlib.contextmanager
    def _block(self, state):
        self.state = state
        yield
        self.state = "idle"

    def untimed(self):
        return self._block("untimed")

    def timed(self):
        return self._block("timed")


GATE = GateRecorder()


class Noting(Sampler):
    name = "noting"

    def fit(self, target, ctx):
        def sample(n, generator):
            GATE.seen.append((n, GATE.state))
            return torch.randn(n, target.dim, generator=generator)
        return sample


class Plugin:
    @hookimpl
    def register_samplers(self, register):
        register(Noting())


def test_every_size_is_timed_inside_the_timing_window_and_recorded_in_the_row():
    cfg = config(samplers=["noting"], batch_sizes="1,10", repeats=1, warmup=0)
    target = gmm3d()
    GATE.seen.clear()
    with testing.registered(Plugin()) as registry:
        row = run_pair("noting", target, prepare_target(target, cfg), registry, ModelCache(None), cfg, {}, GATE)
    assert row["status"] == "ok", row["error"]
    assert GATE.seen == [(100, "untimed"), (1, "timed"), (10, "timed"), (100, "timed")]
    assert list(row["latency_by_n"]) == ["1", "10", "100"]
    at_n = row["latency_by_n"]["100"]
    assert row["latency_ms"] == {key: value for key, value in at_n.items() if key != "samples_per_s"}
    assert row["samples_per_s"] == at_n["samples_per_s"] == pytest.approx(100 / (at_n["median"] / 1e3))


def test_the_config_records_its_sizes_and_the_summary_pools_each_size_over_seeds():
    recorded = config(batch_sizes=[7]).to_json()
    assert recorded["batch_sizes"] == [7, 100] and recorded["latency_cap_s"] == 30.0
    assert recorded["timing"]["method"] == "blocks"
    medians = {0: {"7": 1.0, "100": 2.0}, 1: {"7": 3.0, "100": 5.0}}
    rows = [{"sampler": "a", "target": "t", "seed": seed, "status": "ok", "metrics": {},
             "latency_ms": {"median": by_size["100"]},
             "latency_by_n": {size: {"median": median} for size, median in by_size.items()}}
            for seed, by_size in medians.items()]
    rows[1]["latency_by_n"]["1000"] = {"skipped": "over the cap", "estimated_ms": 9e4}
    (entry,) = summarize(rows)
    assert list(entry["latency_by_n"]) == ["7", "100"]  # ascending; a skipped size has no value
    assert entry["latency_by_n"]["100"]["values"] == [2.0, 5.0] and entry["latency_by_n"]["100"]["mean"] == 3.5
    assert entry["latency_by_n"]["100"]["mean"] == entry["latency_ms"]["mean"]
    assert entry["latency_by_n"]["7"]["ci_low"] < 2.0 < entry["latency_by_n"]["7"]["ci_high"]


@pytest.mark.parametrize("sizes, message", [
    ("1,x", "--batch-sizes '1,x' is not a list of integer batch sizes"),
    ("0,10", "--batch-sizes holds the batch size 0"),
    ("10,100,10", "--batch-sizes lists batch size 10 twice"),
])
def test_bad_batch_sizes_are_refused_in_one_line_before_any_work(sizes, message, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["run", "--targets", "gmm3d", "--samplers", "target-draws", "--profile", "smoke",
                   "--batch-sizes", sizes, "--no-cache", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_cap_that_is_not_positive_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--profile", "smoke", "--latency-cap-s", "0", "--no-cache", "--out", str(out)]) == 2
    assert "--latency-cap-s 0.0 is not a positive number of seconds" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("sizes, message", [
    ([1, "a"], "batch_sizes = holds 'a'"), ("1.5", "is not a list of integer batch sizes"),
    ([1, 2.0], "holds 2.0"), ([True], "holds True"), ("-3", "holds the batch size -3"), ([], "is not a list"),
    ("", "is not a list of integer batch sizes"), ([5, 5], "lists batch size 5 twice"),
])
def test_runconfig_refuses_bad_sizes_too(sizes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        config(batch_sizes=sizes)


@pytest.mark.parametrize("cap", [0, -1.0, math.inf, math.nan, "30", True])
def test_runconfig_refuses_a_cap_that_is_not_positive_seconds(cap):
    with pytest.raises(UsageError, match="latency_cap_s = .* is not a positive number of seconds"):
        config(latency_cap_s=cap)


@pytest.mark.parametrize("known, size, expected", [
    ({10: 1e-3, 100: 1e-2}, 1000, 1e-1),  # linear through the two largest
    ({10: 1e-3, 100: 1e-3}, 10**6, 1e-3),  # launch-bound: constant
    ({10: 1e-3, 100: 1e-1}, 1000, 1.0),  # superlinear clipped to linear
    ({100: 2e-3, 1000: 2e-2}, 10, 2e-3),  # never faster than a larger batch
    ({100: 0.5}, 400, 2.0),  # one known size: linear
])
def test_predicted_call_seconds(known, size, expected):
    estimate, basis = predict_call_seconds(size, known)
    assert estimate == pytest.approx(expected) and basis


def test_power_law_exponent_between_the_two_largest_sizes():
    estimate, basis = predict_call_seconds(10_000, {1: 1.0, 10: 1e-3, 100: 1e-2 * math.sqrt(10) / 10})
    assert estimate == pytest.approx(10 ** -2.5 * 100 ** 0.5) and "n^0.50 through n = 10, 100" in basis


def _document(**config_values):
    return {"environment": {"pingsbench": "1"}, "config": {
        "profile": "smoke", "n": 100, "dtype": "float32", "threads": 1, "device": "cpu", "independent_noise": False,
        "targets": ["gmm3d"], "seeds": [0], "samplers": ["a"], "seed": 0, "floor_pairs": 2, **config_values},
        "rows": [{"target": "gmm3d", "seed": 0, "sampler": "a", "status": "ok"}], "floors": {}}


@pytest.mark.parametrize("previous, current, kept", [
    ({"batch_sizes": [1, 100], "latency_cap_s": 30.0}, {"batch_sizes": [1, 100], "latency_cap_s": 30.0}, True),
    ({"batch_sizes": [1, 100], "latency_cap_s": 30.0}, {"batch_sizes": [100], "latency_cap_s": 30.0}, False),
    ({"batch_sizes": [1, 100], "latency_cap_s": 30.0}, {"batch_sizes": [1, 100], "latency_cap_s": 5.0}, False),
    ({"batch_sizes": [100], "latency_cap_s": 30.0}, {"batch_sizes": [100], "latency_cap_s": 5.0}, True),
    ({}, {"batch_sizes": [100], "latency_cap_s": 30.0}, True),  # written before batch sizes: n alone
    ({}, {"batch_sizes": [1, 100], "latency_cap_s": 30.0}, False),
])
def test_resume_keeps_rows_only_of_the_same_batch_sizes(previous, current, kept):
    rows, _ = resumable_rows(_document(**previous), _document(**current))
    assert bool(rows) == kept
