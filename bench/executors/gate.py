"""Fair timing on a shared machine: a latency measurement runs while nothing else of the run does.

A :class:`NodeGate` is a writer-preferring readers–writer lock between the
processes of one run on one machine, made of two ``flock(2)`` locks in a
folder of the machine's temporary directory (``tempfile.gettempdir()``, local
to each node on the clusters Ray and SLURM run on; were it shared, the gate
would serialise the whole cluster's timings, which is slower but still fair):

* ``untimed()`` (fitting, sampling, metrics, noise floors) holds ``work.lock``
  shared, so any number of such blocks run side by side;
* ``timed()`` (a latency measurement) holds ``work.lock`` exclusively, so it
  starts only when no other block of the run is active on the machine, and
  nothing else of the run starts until it ends;
* ``turnstile.lock``, held exclusively by a measurement from before it waits until it ends,
  and taken briefly by every ``untimed()`` on entry, stops new work from slipping in
  ahead of a waiting measurement (no starvation).

``flock`` locks belong to the open file, so every block opens its own; the
kernel releases them when a process dies, so a killed worker never wedges
the gate.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator


def gate_dir(run_id: str) -> Path:
    """Where the gate of run ``run_id`` lives on this machine: a folder of the local temporary directory."""
    return Path(tempfile.gettempdir()) / f"pingsbench-gate-{run_id}"


@contextlib.contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases its lock


class NodeGate:
    """The timing gate of one run on this machine (see the module docstring).

    Args:
        run_id: Identifies the run; processes of the same run on the same machine share its gate.
    """

    def __init__(self, run_id: str) -> None:
        self.directory = gate_dir(run_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._work = self.directory / "work.lock"
        self._turnstile = self.directory / "turnstile.lock"

    @contextlib.contextmanager
    def untimed(self) -> Iterator[None]:
        """Hold the gate shared: untimed work, side by side with other untimed work, never during a timing."""
        with _flock(self._turnstile, fcntl.LOCK_EX):
            pass  # wait behind a measurement that is waiting
        with _flock(self._work, fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Hold the gate exclusively: the block runs alone among the run's work on this machine."""
        with _flock(self._turnstile, fcntl.LOCK_EX), _flock(self._work, fcntl.LOCK_EX):
            yield
