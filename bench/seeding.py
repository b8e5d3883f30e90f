"""Deterministic, independent seeds for every purpose in a run."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *labels: str) -> int:
    """A 63-bit seed for ``labels`` derived from ``seed``.

    Different labels give statistically independent streams, so that e.g. the
    held-out reference draws never share randomness with a sampler's noise.
    """
    digest = hashlib.sha256(repr((int(seed), *labels)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
