"""Facts about the machine a run was measured on (recorded in every result)."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy
import torch

from bench import __version__
from bench.errors import UsageError


def available_devices() -> list[str]:
    """Devices this machine can run the benchmark on: ``cpu``, then each CUDA device, then ``mps``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str | torch.device, label: str = "--device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; any other name must be a device this machine has.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`.
        label: How the value is named in the error message (the CLI flag or the config field).

    Raises:
        UsageError: Not a device name, a device torch does not see here, or one that holds
            no data (``meta``); the message lists the devices available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    allowed = f"available here: auto, {', '.join(available)}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"{label} {name!r} is not a device name; {allowed}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{label} {name!r}: torch {torch.__version__} sees no CUDA device; {allowed}")
    if device.type == "cpu" or (device.type == "mps" and "mps" in available):
        return device
    if device.type == "cuda" and (device.index is None or device.index < torch.cuda.device_count()):
        return device
    if device.type == "meta":
        raise UsageError(f"{label} {name!r} holds no data, so nothing can be sampled or timed on it; {allowed}")
    raise UsageError(f"{label} {name!r} is not a device torch sees on this machine; {allowed}")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def device_kind(device: torch.device) -> str:
    """The kind of device a latency was measured (or a model trained) on: the GPU's name, or the CPU's model name.

    :func:`describe_device` answers ``x86_64`` for most CPUs, which cannot
    tell two kinds of node apart; ``/proc/cpuinfo`` names the model where Linux tells it.
    """
    if device.type == "cpu":
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return describe_device(device)


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    env: dict[str, Any] = {
        "pingsbench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": describe_device(device),
        "dtype": str(dtype).removeprefix("torch."),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        # TensorFloat-32 rounds float32 products to 10 mantissa bits; runs turn it off (bench.runner.run_settings).
        env["tf32"] = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    return env
