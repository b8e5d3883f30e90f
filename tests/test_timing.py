"""The timer: warm-up calls untimed, timed blocks with one device barrier per clock reading (NFE counting:
tests/test_counting.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bench import timing
from bench.timing import Timer, calls_per_block


class FakeClock:
    """A clock that advances by ``step`` seconds per reading plus ``per_call`` per call of :meth:`call`."""

    def __init__(self, events, step=1.0, per_call=0.0):
        self.events, self.now, self.step, self.per_call = events, 0.0, step, per_call

    def __call__(self):
        self.events.append("clock")
        self.now += self.step
        return self.now

    def call(self):
        self.events.append("call")
        self.now += self.per_call


def test_timer_synchronizes_cuda_before_each_clock_reading():
    events = []
    clock = FakeClock(events)
    timer = Timer("cuda", clock=clock, synchronize=lambda device: events.append(f"sync:{device.type}"))
    timing_ = timer.measure(clock.call, repeats=2, warmup=1)
    block = ["sync:cuda", "clock", "call", "sync:cuda", "clock"]
    assert events == block * 3  # the warm-up call, then two timed blocks of one call (a 1 s call fills a block)
    assert timing_.summary()["repeats"] == 2 and timing_.summary()["warmup"] == 1
    assert timing_.times_ms == (1000.0, 1000.0) and timing_.calls_per_block == 1


def test_fast_calls_are_timed_in_blocks_with_one_barrier_per_clock_reading():
    events = []
    clock = FakeClock(events, step=0.0, per_call=1e-4)  # 100 µs per call: a 10 ms block holds 100 calls
    timer = Timer("cuda", clock=clock, synchronize=lambda device: events.append("sync"))
    timing_ = timer.measure(clock.call, repeats=3, warmup=2)
    assert timing_.calls_per_block == 100
    assert events.count("call") == 2 + 3 * 100
    assert events.count("sync") == events.count("clock") == 2 * (2 + 3)
    assert timing_.times_ms == pytest.approx((0.1, 0.1, 0.1))


def test_without_warmup_every_block_is_one_call():
    events = []
    clock = FakeClock(events, step=0.0, per_call=1e-6)
    timing_ = Timer("cpu", clock=clock).measure(clock.call, repeats=4, warmup=0)
    assert timing_.calls_per_block == 1 and events.count("call") == 4


@pytest.mark.parametrize("seconds, calls", [(2e-3, 10), (0.01, 1), (0.5, 1), (1e-6, 10_000), (0.0, 1)])
def test_calls_per_block_fill_the_minimum_block(seconds, calls):
    assert calls_per_block(seconds, 0.01) == calls
    if seconds > 0:
        assert calls * seconds >= 0.01 - 1e-12 and (calls == 1 or calls / 10 * seconds < 0.01)


def test_timer_runs_with_the_given_thread_count():
    seen = []
    before = torch.get_num_threads()
    Timer("cpu", threads=before + 1).measure(lambda: seen.append(torch.get_num_threads()), repeats=1, warmup=0)
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_default_synchronize_calls_cuda_for_a_cuda_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    timing.synchronize(torch.device("cuda"))
    timing.synchronize(torch.device("cpu"))
    assert calls == [torch.device("cuda")]


def test_summary_statistics():
    times = (1.0, 2.0, 6.0)
    summary = timing.Timing(times, warmup=3).summary()
    p25, p75 = np.percentile(times, [25, 75])
    assert summary == pytest.approx({"mean": 3.0, "std": 2.6457513, "median": 2.0, "iqr": p75 - p25, "min": 1.0,
                                     "repeats": 3, "warmup": 3, "calls_per_block": 1})


def test_invalid_repeats_rejected():
    with pytest.raises(ValueError):
        Timer("cpu").measure(lambda: None, repeats=0)


def _readings(*values):
    """A reader returning ``values`` one after the other."""
    values = iter(values)
    return lambda: next(values)


@pytest.mark.parametrize(
    ("busy", "own", "wall", "other_cpus", "loaded"),
    [
        ((100.0, 101.5), (3.0, 4.0), (0.0, 1.0), 0.5, True),  # others took 0.5 CPU-s of a 1 s window
        ((100.0, 101.0), (3.0, 4.0), (0.0, 1.0), 0.0, False),  # all the busy time was this process's
        ((100.0, 100.9), (3.0, 4.0), (0.0, 1.0), 0.0, False),  # tick rounding below own time: never negative
        ((100.0, 100.04), (3.0, 3.0), (0.0, 0.1), 0.4, False),  # 0.04 CPU-s: within /proc/stat's granularity
    ],
)
def test_contention_is_the_busy_time_this_process_did_not_use(busy, own, wall, other_cpus, loaded):
    with timing.cpu_contention(_readings(*busy), _readings(*own), _readings(*wall)) as record:
        pass
    assert record["other_cpus"] == pytest.approx(other_cpus) and record["loaded"] is loaded
    assert record["seconds"] == pytest.approx(wall[1] - wall[0])


def test_contention_is_not_recorded_where_the_machine_busy_time_cannot_be_read():
    with timing.cpu_contention(lambda: None) as record:
        pass
    assert record == {}


@pytest.mark.skipif(timing.busy_cpu_seconds() is None, reason="needs Linux's /proc/stat")
def test_the_machine_busy_time_counts_this_process_spinning():
    before, own = timing.busy_cpu_seconds(), time.process_time()
    while time.process_time() - own < 0.3:
        pass
    assert timing.busy_cpu_seconds() - before >= 0.25  # 0.3 s spun, less /proc/stat's tick granularity
