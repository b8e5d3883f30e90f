"""The fitted-model cache: in memory for one run, on disk across runs.

A model is identified by everything that determines its weights: its kind, the
target's parameters, the profile, the seed, its training config, the device
type it was trained on and the pingsbench version.  Entries are written
atomically and read with ``torch.load(..., weights_only=True)``; an entry that
is corrupt or does not match its key is retrained, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from bench import __version__

if TYPE_CHECKING:
    from bench.contracts import FitContext, Target

log = logging.getLogger("pingsbench")

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$PINGSBENCH_CACHE`` or the platform's user cache directory."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("PINGSBENCH_CACHE") or user_cache_dir("pingsbench"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file via a temporary sibling and ``os.replace`` so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelCache:
    """Trained models keyed by what determines their weights.

    Args:
        directory: Where entries are stored; ``None`` keeps models in memory only.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, tuple[torch.nn.Module, dict[str, Any]]] = {}

    @staticmethod
    def key(ctx: "FitContext", kind: str, target: "Target", config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "kind": kind,
            "target": dict(target.fingerprint()),
            "profile": ctx.profile.name,
            "seed": ctx.seed,
            "config": dict(config),
            "device_type": ctx.device.type,
            "dtype": str(ctx.dtype),
            "pingsbench": __version__,
        }

    def path_for(self, model_id: str, key: Mapping[str, Any]) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{key['target']['name']}-{key['profile']}-s{key['seed']}-{model_id}.pt"

    def get_or_train(
        self,
        ctx: "FitContext",
        kind: str,
        target: "Target",
        config: Mapping[str, Any],
        build: Callable[[], torch.nn.Module],
        train: Callable[[torch.nn.Module], Mapping[str, Any]],
    ) -> torch.nn.Module:
        """See :meth:`bench.contracts.FitContext.cached_model`."""
        key = self.key(ctx, kind, target, config)
        key_json = json.dumps(key, sort_keys=True)
        model_id = f"{kind}-{hashlib.sha256(key_json.encode()).hexdigest()[:16]}"
        if key_json in self._memory:
            module, info = self._memory[key_json]
            self._record(ctx, model_id, kind, "memory", info)
            return module

        path = self.path_for(model_id, key)
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            torch.manual_seed(ctx.seed_for("init", kind, target.name))
            module = build().to(device=ctx.device, dtype=ctx.dtype)
        info = self._load(path, key, module) if path is not None else None
        source = "disk"
        if info is None:
            source = "trained"
            module.train()
            start = time.perf_counter()
            info = dict(train(module))
            info["train_seconds"] = time.perf_counter() - start
            if path is not None:
                self._save(path, key, module, info)
        module.eval().requires_grad_(False)
        self._memory[key_json] = (module, info)
        self._record(ctx, model_id, kind, source, info)
        return module

    @staticmethod
    def _record(ctx: "FitContext", model_id: str, kind: str, source: str, info: Mapping[str, Any]) -> None:
        ctx.models.append({"id": model_id, "kind": kind, "source": source, **info})

    @staticmethod
    def _save(path: Path, key: Mapping[str, Any], module: torch.nn.Module, info: Mapping[str, Any]) -> None:
        payload = {
            "format": CACHE_FORMAT,
            "key": json.dumps(key, sort_keys=True),
            "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "info": json.dumps(info),
        }
        atomic_write_bytes(path, lambda handle: torch.save(payload, handle))

    @staticmethod
    def _load(path: Path, key: Mapping[str, Any], module: torch.nn.Module) -> dict[str, Any] | None:
        """Load weights into ``module``; ``None`` (and a warning) if absent, corrupt or mismatched."""
        if not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("format") != CACHE_FORMAT or payload.get("key") != json.dumps(key, sort_keys=True):
                raise ValueError("cache entry was written for a different model")
            module.load_state_dict(payload["state_dict"], strict=True)
            return json.loads(payload["info"])
        except Exception as exc:  # a bad entry costs a retrain, never the run
            log.warning("ignoring cache entry %s (%s: %s); retraining", path, type(exc).__name__, exc)
            return None
