"""A run of the CLI in a subprocess, stopped mid-way by a real signal (shared by the resume tests)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Two exact-score rows (no training) before the first trained ones, so the first rows arrive fast and the
#: ε-net trainings leave time to stop the run in the middle.
SAMPLERS = ["target-draws", "ddim-4@exact", "ddim-4", "dpm-solver++-2m-4"]
SEEDS = 2
RUN_OPTIONS = ["--samplers", ",".join(SAMPLERS), "--targets", "gmm3d", "--profile", "smoke", "--n", "256",
               "--seeds", str(SEEDS), "--threads", "1", "--repeats", "1", "--warmup", "0", "--floor-pairs", "2",
               "--no-progress"]
GRID = len(SAMPLERS) * SEEDS


def rows_of(out: Path) -> list[dict]:
    try:
        return json.loads((out / "results.json").read_text())["rows"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def interrupted_run(out: Path, cache: Path, sig: signal.Signals, env: dict[str, str]) -> list[dict]:
    """Start ``pingsbench run`` in a subprocess, send ``sig`` once it has written its first row; its rows.

    Raises:
        AssertionError: The run finished before the signal, or did not stop with the interruption's status.
    """
    command = [sys.executable, "-m", "bench.cli", "run", *RUN_OPTIONS, "--cache-dir", str(cache), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 600  # generous: a loaded CI machine imports torch slowly
    while not rows_of(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not rows_of(out):
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"the run wrote no row (exit status {process.returncode}):\n{err}")
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + sig, err
    assert "--resume --out" in err.splitlines()[-1]
    rows = rows_of(out)
    assert 1 <= len(rows) < GRID, f"stopped with {len(rows)} of {GRID} rows"
    return rows
