"""Measuring time: one synchronized timer for every sampler (NFE is counted in :mod:`bench.counting`)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no such device in CI
        torch.mps.synchronize()


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of ``repeats`` timed calls after ``warmup`` untimed ones (ms)."""

    times_ms: tuple[float, ...]
    warmup: int

    @property
    def repeats(self) -> int:
        return len(self.times_ms)

    def summary(self) -> dict[str, float | int]:
        times = self.times_ms
        return {
            "mean": statistics.fmean(times),
            "std": statistics.stdev(times) if len(times) > 1 else 0.0,
            "median": statistics.median(times),
            "min": min(times),
            "repeats": len(times),
            "warmup": self.warmup,
        }


class Timer:
    """The one timer every sampler is measured with.

    On CUDA the device is synchronized before the clock starts and before it
    stops, so asynchronous kernel launches are not mistaken for finished work;
    on CPU the same code path is a plain ``perf_counter`` measurement.

    Args:
        device: Device the timed function runs on.
        clock: Monotonic clock in seconds (injectable for tests).
        synchronize: Device barrier (injectable for tests).
    """

    def __init__(
        self,
        device: torch.device | str,
        clock: Callable[[], float] = time.perf_counter,
        synchronize: Callable[[torch.device], None] = synchronize,
    ) -> None:
        self.device = torch.device(device)
        self.clock = clock
        self.synchronize = synchronize

    def time_once(self, fn: Callable[[], Any]) -> float:
        """Milliseconds for one synchronized call of ``fn``."""
        self.synchronize(self.device)
        start = self.clock()
        fn()
        self.synchronize(self.device)
        return (self.clock() - start) * 1e3

    def measure(self, fn: Callable[[], Any], repeats: int = 5, warmup: int = 3) -> Timing:
        """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
        if repeats < 1 or warmup < 0:
            raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
        for _ in range(warmup):
            fn()
        self.synchronize(self.device)
        return Timing(tuple(self.time_once(fn) for _ in range(repeats)), warmup)
