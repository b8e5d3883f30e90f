"""The timer synchronizes the device around each timed call (NFE counting: tests/test_counting.py)."""

from __future__ import annotations

import pytest
import torch

from bench import timing
from bench.timing import Timer


class FakeClock:
    def __init__(self, events):
        self.events, self.now = events, 0.0

    def __call__(self):
        self.events.append("clock")
        self.now += 1.0
        return self.now


def test_timer_synchronizes_cuda_before_and_after_each_timed_call():
    events = []
    timer = Timer("cuda", clock=FakeClock(events), synchronize=lambda device: events.append(f"sync:{device.type}"))
    timing_ = timer.measure(lambda: events.append("call"), repeats=2, warmup=1)
    assert events == ["call", "sync:cuda"] + ["sync:cuda", "clock", "call", "sync:cuda", "clock"] * 2
    assert timing_.summary()["repeats"] == 2 and timing_.summary()["warmup"] == 1
    assert timing_.times_ms == (1000.0, 1000.0)


def test_default_synchronize_calls_cuda_for_a_cuda_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    timing.synchronize(torch.device("cuda"))
    timing.synchronize(torch.device("cpu"))
    assert calls == [torch.device("cuda")]


def test_summary_statistics():
    summary = timing.Timing((1.0, 2.0, 6.0), warmup=3).summary()
    assert summary == pytest.approx({"mean": 3.0, "std": 2.6457513, "median": 2.0, "min": 1.0,
                                     "repeats": 3, "warmup": 3})


def test_invalid_repeats_rejected():
    with pytest.raises(ValueError):
        Timer("cpu").measure(lambda: None, repeats=0)
