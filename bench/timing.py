"""Measuring cost: network-call counting and one synchronized timer.

NFE is counted, not declared: while :func:`count_network_calls` is active,
every *top-level* ``torch.nn.Module`` call (one not nested inside another
module's forward) adds the number of rows of its first tensor argument.  NFE
per sample is that total divided by the number of samples drawn, so a sampler
that processes its batch in chunks is still counted correctly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from typing import Any, Callable, Iterator

import torch


@dataclasses.dataclass
class CallCounter:
    """Rows processed by top-level module calls (see :func:`count_network_calls`)."""

    calls: int = 0
    rows: int = 0
    _depth: int = 0

    def nfe_per_sample(self, n: int) -> float:
        return self.rows / n if n else 0.0


def _leading_rows(args: tuple[Any, ...]) -> int:
    for value in args:
        if isinstance(value, torch.Tensor):
            return int(value.shape[0]) if value.ndim else 1
    return 1


@contextlib.contextmanager
def count_network_calls() -> Iterator[CallCounter]:
    """Count top-level ``nn.Module`` evaluations made inside the block.

    Uses torch's global module hooks, so no cooperation from the sampler is
    needed; hooks are removed on exit (they must not be active while timing).
    """
    counter = CallCounter()

    def enter(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if counter._depth == 0:
            counter.calls += 1
            counter.rows += _leading_rows(args)
        counter._depth += 1

    def leave(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        counter._depth -= 1

    pre = torch.nn.modules.module.register_module_forward_pre_hook(enter)
    post = torch.nn.modules.module.register_module_forward_hook(leave, always_call=True)
    try:
        yield counter
    finally:
        pre.remove()
        post.remove()


def synchronize(device: torch.device) -> None:
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
