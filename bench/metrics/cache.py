"""Metric values on disk, keyed by the exact inputs and the code that computes them.

A rerun with cached models draws bit-identical samples (same models, seeds and threads), so its
metrics are bit-identical too, and at n = 10⁴ recomputing them costs ≈ 3 s per row on 2 CPU cores
(the pooled pairwise sums of :mod:`bench.metrics.pairwise`).  :func:`cached_metrics` returns the
stored values of :func:`~bench.metrics.compute_metrics` when every input matches:

* the SHA-256 of both point sets (dtype, shape and bytes), the seed and the permutation count;
* the SHA-256 of the metric code: every module of :mod:`bench.metrics` and :mod:`bench.seeding`;
* the torch, numpy and scikit-learn versions and the torch thread count (the pairwise sums are
  shared out over threads, and C2ST's MLP runs on BLAS).

A change to any of them is a miss.  Target-specific metrics (``extra_metrics``, plugin code) are
never cached.  A missing, unreadable or corrupt entry is recomputed and rewritten atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from torch import Tensor

from bench.cache import atomic_write_bytes

log = logging.getLogger(__name__)

#: Folder of the entries inside a model cache directory.
SUBDIRECTORY = "metrics"


@functools.cache
def metric_code_digest() -> str:
    """SHA-256 over the source of every :mod:`bench.metrics` module and :mod:`bench.seeding`, in name order."""
    import bench.seeding

    metrics_dir = Path(__file__).parent
    sources = sorted(metrics_dir.glob("*.py")) + [Path(bench.seeding.__file__)]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def points_digest(points: Tensor) -> str:
    """SHA-256 of a point set's dtype, shape and bytes."""
    array = points.detach().cpu().contiguous().numpy()
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def metrics_key(generated: Tensor, reference: Tensor, seed: int, permutations: int) -> dict[str, Any]:
    """Everything :func:`~bench.metrics.compute_metrics`' values depend on (see the module's docstring)."""
    return {
        "generated": points_digest(generated),
        "reference": points_digest(reference),
        "seed": seed,
        "permutations": permutations,
        "code": metric_code_digest(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "threads": torch.get_num_threads(),
    }


def cached_metrics(
    generated: Tensor, reference: Tensor, *, seed: int, directory: Path | None, permutations: int = 100
) -> dict[str, float]:
    """:func:`~bench.metrics.compute_metrics`, read from ``directory`` when the same inputs were measured before.

    Args:
        generated: Sampler output, shape ``(n, d)``, float32 on CPU.
        reference: Held-out exact target draws, shape ``(m, d)``.
        seed: As in :func:`~bench.metrics.compute_metrics`.
        directory: The model cache directory (entries go in its ``metrics/`` folder); ``None``
            computes without caching (``--no-cache``).
        permutations: As in :func:`~bench.metrics.compute_metrics`.

    Returns:
        What :func:`~bench.metrics.compute_metrics` returns for these arguments, bit for bit.
    """
    from bench.metrics import compute_metrics

    if directory is None:
        return compute_metrics(generated, reference, seed=seed, permutations=permutations)
    key = metrics_key(generated, reference, seed, permutations)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = Path(directory) / SUBDIRECTORY / f"{digest}.json"
    try:
        entry = json.loads(path.read_text())
        if entry["key"] == key:
            return {name: float(value) for name, value in entry["metrics"].items()}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a corrupt or unreadable entry is recomputed
        log.warning("metric cache entry %s is unreadable (%s); recomputing", path, exc)
    values = compute_metrics(generated, reference, seed=seed, permutations=permutations)
    try:
        text = json.dumps({"key": key, "metrics": values})
        atomic_write_bytes(path, lambda f: f.write(text.encode()))
    except OSError as exc:  # a read-only or full cache costs the next run the recomputation, nothing else
        log.warning("could not store metric cache entry %s (%s)", path, exc)
    return values
