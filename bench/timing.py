"""Measuring time: one timer for every sampler (NFE is counted in :mod:`bench.counting`).

A latency is measured in *blocks*: ``calls_per_block`` back-to-back calls between
two readings of a clock that first waits for the device (``synchronize``), so the
barrier and the clock's own cost are paid once per block, not once per call, and
a call of microseconds is not swamped by them.  Blocks are run by
:class:`timeit.Timer` (the loop :class:`torch.utils.benchmark.Timer` wraps) under
:func:`torch.utils.benchmark.set_torch_threads`, and summarised by median and
interquartile range over the blocks.  :class:`torch.utils.benchmark.Timer` itself is
not called: its ``timeit`` adds ``max(number // 100, 2)`` untimed calls to every block
and its ``blocked_autorange`` chooses its own counts (a single block for a call longer
than ``min_run_time``), while a run promises ``--warmup`` untimed calls and
``--repeats`` timed blocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.benchmark import set_torch_threads

#: A block of calls lasts at least this long (s) when the warm-up tells how long a call takes: the
#: clock (≈ 0.1 µs) and a CUDA barrier (≈ 10 µs) then cost < 0.1 % of the block.
MIN_BLOCK_SECONDS = 0.01
#: Other processes (and the hypervisor, through steal time) using this many CPUs or more on average while a
#: sampler is timed mark its latency as taken under load: a quarter of a core is far above an idle machine's
#: background and well below the load that made latencies 4-6x too slow on 2 cores.
CONTENTION_CPUS = 0.25
#: Below this many CPU seconds taken by others, a reading is within /proc/stat's tick granularity (10 ms per
#: counter), so short timing windows are not marked for rounding alone.
CONTENTION_MIN_SECONDS = 0.05


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no such device in CI
        torch.mps.synchronize()


def calls_per_block(call_seconds: float, min_block_seconds: float = MIN_BLOCK_SECONDS) -> int:
    """How many calls of ``call_seconds`` each (a warm-up call's time) fill a block of ``min_block_seconds``.

    A power of ten (1, 10, 100, …), as :meth:`torch.utils.benchmark.Timer.blocked_autorange` grows its blocks.
    """
    if not call_seconds > 0:
        return 1
    return 10 ** max(0, math.ceil(math.log10(min_block_seconds / call_seconds)))


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-call times of ``repeats`` timed blocks after ``warmup`` untimed calls.

    Attributes:
        times_ms: Each block's time divided by its calls, ms per call (one entry per block).
        warmup: Untimed calls before the first block.
        calls_per_block: Calls in each block.
    """

    times_ms: tuple[float, ...]
    warmup: int
    calls_per_block: int = 1

    @property
    def repeats(self) -> int:
        return len(self.times_ms)

    def summary(self) -> dict[str, float | int]:
        """``median`` and ``iqr`` (interquartile range; quartiles interpolated linearly, as
        :class:`torch.utils.benchmark.Measurement` does), ``mean``, ``std`` (ddof = 1), ``min`` over the
        blocks, all ms per call; ``repeats`` (blocks), ``warmup``, ``calls_per_block``."""
        times = self.times_ms
        # Measurement's own quartiles divide by the median (a warning check), which a coarse clock can make 0.
        low, median, high = np.percentile(times, [25, 50, 75])
        return {
            "mean": statistics.fmean(times),
            "std": statistics.stdev(times) if len(times) > 1 else 0.0,
            "median": float(median),
            "iqr": float(high - low),
            "min": min(times),
            "repeats": len(times),
            "warmup": self.warmup,
            "calls_per_block": self.calls_per_block,
        }


class Timer:
    """The one timer every sampler is measured with.

    The clock is read after a device barrier, at the start and at the end of each
    block; on CPU the barrier is a no-op and the clock a plain ``perf_counter``.
    Warm-up calls are timed one by one (untimed for the result); the last one sets
    :func:`calls_per_block`.  Without warm-up every block is one call.

    Args:
        device: Device the timed function runs on.
        threads: Torch intra-op threads during the measurement (default: torch's current count).
        clock: Monotonic clock in seconds (injectable for tests).
        synchronize: Device barrier (injectable for tests).
        min_block_seconds: See :func:`calls_per_block`.
    """

    def __init__(
        self,
        device: torch.device | str,
        threads: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        synchronize: Callable[[torch.device], None] = synchronize,
        min_block_seconds: float = MIN_BLOCK_SECONDS,
    ) -> None:
        self.device = torch.device(device)
        self.threads = torch.get_num_threads() if threads is None else threads
        self.clock = clock
        self.synchronize = synchronize
        self.min_block_seconds = min_block_seconds

    def _read(self) -> float:
        self.synchronize(self.device)
        return self.clock()

    def block(self, fn: Callable[[], Any], calls: int) -> float:
        """Seconds for ``calls`` back-to-back calls of ``fn``, the device synchronized before each clock reading."""
        return timeit.Timer(fn, timer=self._read).timeit(calls)

    def measure(self, fn: Callable[[], Any], repeats: int = 5, warmup: int = 3) -> Timing:
        """Run ``fn`` ``warmup`` times untimed, then ``repeats`` timed blocks.

        Raises:
            ValueError: ``repeats < 1`` or ``warmup < 0``.
        """
        if repeats < 1 or warmup < 0:
            raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
        with set_torch_threads(self.threads):
            last_call = None
            for _ in range(warmup):
                last_call = self.block(fn, 1)
            calls = 1 if last_call is None else calls_per_block(last_call, self.min_block_seconds)
            times = tuple(self.block(fn, calls) / calls * 1e3 for _ in range(repeats))
        return Timing(times, warmup, calls)


def predict_call_seconds(size: int, known: Mapping[int, float]) -> tuple[float, str]:
    """Estimate one call's seconds at batch size ``size`` from the sizes already timed.

    The rule: a call never gets faster with more samples, so a size at or below a known one
    takes at most the smallest known time at or above it.  Beyond the largest known size, the
    time follows the power law ``t ∝ size^p`` through the two largest known sizes, ``p`` clipped
    to ``[0, 1]`` (from launch-bound, constant time, to compute-bound, linear); with one known
    size, linearly (``p = 1``, the cautious side).

    Args:
        size: The batch size to estimate, ``≥ 1``.
        known: Batch size → seconds per call (medians, or the first call's time), ≥ 1 entry.

    Returns:
        The estimate in seconds and the sizes it rests on, in words (for a skipped size's reason).
    """
    above = [seconds for known_size, seconds in known.items() if known_size >= size]
    if above:
        return min(above), "no faster than a larger batch"
    ordered = sorted(known.items())
    large, t_large = ordered[-1]
    if len(ordered) == 1 or not (ordered[-2][1] > 0 and t_large > 0):
        return t_large * size / large, f"linear from n = {large}"
    small, t_small = ordered[-2]
    exponent = min(1.0, max(0.0, math.log(t_large / t_small) / math.log(large / small)))
    return t_large * (size / large) ** exponent, f"n^{exponent:.2f} through n = {small}, {large}"


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Record the block's peak allocated memory on a CUDA ``device`` (``{}`` elsewhere).

    The peak counter is reset on entry; on exit the dict gains ``peak_memory_mb``,
    :func:`torch.cuda.max_memory_allocated` in MiB.
    """
    record: dict[str, float] = {}
    if device.type != "cuda":
        yield record
        return
    torch.cuda.reset_peak_memory_stats(device)
    yield record
    record["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process of this machine has used since boot, steal time included; ``None`` off Linux.

    Read from the first line of ``/proc/stat`` (``user nice system idle iowait irq softirq steal …``, in clock
    ticks): everything but ``idle`` and ``iowait``.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        ticks = [int(value) for value in fields[1:9]]
    except (OSError, ValueError):
        return None
    if not fields or fields[0] != "cpu" or len(ticks) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_contention(
    busy: Callable[[], float | None] = busy_cpu_seconds,
    own: Callable[[], float] = time.process_time,
    wall: Callable[[], float] = time.perf_counter,
) -> Iterator[dict[str, Any]]:
    """Measure how much CPU other processes took while the block ran (a timing disturbed by other load).

    Other processes' CPU seconds are the machine's busy CPU seconds (:func:`busy_cpu_seconds`) minus this
    process's own (all its threads, :func:`time.process_time`) over the block.  On exit the yielded dict gains
    ``other_cpus`` (their mean number of CPUs busy, ≥ 0), ``seconds`` (the block's wall-clock length) and
    ``loaded`` (``other_cpus ≥`` :data:`CONTENTION_CPUS` and more than :data:`CONTENTION_MIN_SECONDS` of
    CPU taken); it stays empty where the machine's busy time cannot be read.

    Args:
        busy: Machine-wide busy CPU seconds, or ``None``.
        own: This process's CPU seconds.
        wall: A wall clock, seconds.
    """
    record: dict[str, Any] = {}
    before = busy(), own(), wall()
    yield record
    after = busy(), own(), wall()
    if before[0] is None or after[0] is None:
        return
    seconds = after[2] - before[2]
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
    other_cpus = others / seconds if seconds > 0 else 0.0
    record.update(other_cpus=other_cpus, seconds=seconds,
                  loaded=other_cpus >= CONTENTION_CPUS and others > CONTENTION_MIN_SECONDS)
