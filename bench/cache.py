"""The fitted-model cache: in memory for one run, on disk across runs.

A model is identified by everything that determines its weights: its kind, the
target's identity (:func:`bench.identity.target_identity`, which hashes the
target's parameters), the profile, the seed, its training config, the dtype and
thread count it was trained with and the pingsbench version.  Not the device:
a model trained on this CPU is what a CUDA run of the same settings loads (bring
the cache folder along), and its info records where it was trained
(``trained_on``: device type and name).  Entries written before that, whose keys
held the device type, are still found and copied under the new key.

Cache trouble is never fatal and never costs a trained model:

* an entry that is absent, corrupt, of another format or for another key is
  retrained (with a warning unless absent);
* a trained model stays in memory for the run before anything is written, so
  every sampler sharing it gets the same instance even when saving fails;
* an entry is serialised, checked to load with ``torch.load(weights_only=True)``
  and only then written atomically; numpy values in a module's extra state are
  stored in a form that loads that way and are restored on load, anything else
  that would not load skips the save with a warning;
* a cache directory that cannot be created or written degrades the cache to
  memory only for the rest of the run, with one warning.

Several processes may share one cache directory (the workers of
``--executor ray`` on a shared file system, or two runs on one machine): an
entry is looked up, trained and written while holding a lock file next to it
(:class:`filelock.FileLock`, ``flock`` on POSIX), so one process trains it and
every other one waiting for the lock then loads it.  The lock file is removed
on release (filelock notices a peer that removed it and takes a fresh one), so
a finished run leaves only entries in the folder.

``ModelCache(directory, plan_only=True)`` answers what a run *would* do
(``--dry-run``): it builds modules but never trains or writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import filelock
import numpy as np
import torch

from bench import __version__
from bench.environment import device_kind
from bench.identity import target_identity

if TYPE_CHECKING:
    from bench.contracts import FitContext, Target

log = logging.getLogger("pingsbench")

#: Version of the entry layout and key.  2: keys hold the target's state digest
#: (see :mod:`bench.identity`) and numpy extra state is tagged; entries of other
#: formats are retrained, never read.
CACHE_FORMAT = 2
#: Device types that keys held before a model's identity left the device out; their entries are still read.
KEYED_BY_DEVICE = ("cpu", "cuda", "mps")
#: Tag of a numpy value in a saved ``state_dict`` (see :func:`to_weights_only`).
_NUMPY_TAG = "__pingsbench_numpy__"


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


def plain_info(value: Any) -> Any:
    """``train()`` info with numpy and torch numbers, arrays and tensors turned into Python ones (JSON-able)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: plain_info(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_info(v) for v in value]
    return value


def to_weights_only(value: Any) -> Any:
    """A ``state_dict`` value in a form ``torch.load(weights_only=True)`` accepts.

    Numpy scalars and arrays (typical in ``get_extra_state()``) become tagged
    dicts of a Python number or a tensor, recursively through dicts, lists and
    tuples; :func:`from_weights_only` restores them exactly.  Anything else is
    left as it is (the save is then refused if it does not load).
    """
    if isinstance(value, np.generic):
        return {_NUMPY_TAG: "scalar", "dtype": value.dtype.str, "value": value.item()}
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        try:
            return {_NUMPY_TAG: "array", "data": torch.from_numpy(np.array(value, copy=True))}
        except TypeError:  # a dtype torch has no equivalent of
            return value
    if isinstance(value, dict):
        return {k: to_weights_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_weights_only(v) for v in value)
    return value


def from_weights_only(value: Any) -> Any:
    """Inverse of :func:`to_weights_only`."""
    if isinstance(value, dict):
        if value.get(_NUMPY_TAG) == "scalar":
            return np.dtype(value["dtype"]).type(value["value"])
        if value.get(_NUMPY_TAG) == "array":
            return value["data"].numpy()
        return {k: from_weights_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_weights_only(v) for v in value)
    return value


class ModelCache:
    """Trained models keyed by what determines their weights.

    Args:
        directory: Where entries are stored; ``None`` keeps models in memory only.
        plan_only: Plan mode (``--dry-run``): :meth:`get_or_train` builds each module
            and records whether a run would reuse it from memory, load it from disk
            or train it, without training or writing anything.  A module found on
            disk gets its weights (so models keyed by another's weights, like a
            distilled student, are planned right); others stay untrained.
    """

    def __init__(self, directory: Path | None, *, plan_only: bool = False) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.plan_only = plan_only
        self._memory: dict[str, tuple[torch.nn.Module, dict[str, Any]]] = {}
        #: Set by the first failed write: the rest of the run keeps models in memory only.
        self._disk_failed = False

    @staticmethod
    def key(ctx: "FitContext", kind: str, target: "Target", config: Mapping[str, Any]) -> dict[str, Any]:
        """Everything that determines the weights of a ``kind`` model trained on ``target`` (JSON-able).

        The device is not part of it: where a model is loaded does not change what it is.

        Raises:
            bench.errors.PluginError: The target's identity cannot be computed.
        """
        return {
            "kind": kind,
            "target": target_identity(target),
            "profile": ctx.profile.name,
            "seed": ctx.seed,
            "config": dict(config),
            "dtype": str(ctx.dtype),
            # Float sums, hence trained weights, depend on the intra-op thread count (the run's --threads).
            "threads": torch.get_num_threads(),
            "pingsbench": __version__,
        }

    @staticmethod
    def model_id(kind: str, key_json: str) -> str:
        """``<kind>-<16 hex digits of the key's SHA-256>``: ``rows[*].fit.models[*].id``."""
        return f"{kind}-{hashlib.sha256(key_json.encode()).hexdigest()[:16]}"

    def path_for(self, model_id: str, target_name: str, key: Mapping[str, Any]) -> Path | None:
        """Where the entry of ``model_id`` lives; ``None`` without a directory."""
        if self.directory is None:
            return None
        safe_name = re.sub(r"[^\w.-]", "_", target_name)
        return self.directory / f"{safe_name}-{key['profile']}-s{key['seed']}-{model_id}.pt"

    def get_or_train(
        self,
        ctx: "FitContext",
        kind: str,
        target: "Target",
        config: Mapping[str, Any],
        build: Callable[[], torch.nn.Module],
        train: Callable[[torch.nn.Module], Mapping[str, Any]],
    ) -> torch.nn.Module:
        """See :meth:`bench.contracts.FitContext.cached_model`.

        Records ``{"id", "kind", "source", **info}`` in ``ctx.models``; ``source`` is
        ``"memory"``, ``"disk"`` or ``"trained"`` (in plan mode ``"memory"``, ``"disk"``
        or ``"train"``, without info).
        """
        key = self.key(ctx, kind, target, config)
        key_json = json.dumps(key, sort_keys=True)
        model_id = self.model_id(kind, key_json)
        if key_json in self._memory:
            module, info = self._memory[key_json]
            self._record(ctx, model_id, kind, "memory", info)
            return module

        path = self.path_for(model_id, target.name, key)

        def seeded_build() -> torch.nn.Module:
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                torch.manual_seed(ctx.seed_for("init", kind, target.name))
                return build().to(device=ctx.device, dtype=ctx.dtype)

        module = seeded_build()
        if self.plan_only:
            return self._plan(ctx, model_id, kind, key_json, path, module, target.name)

        with self._entry_lock(path, model_id):
            info, keyed_by, tried = None, None, False
            for candidate, candidate_json, keyed_by in self._entries(path, key_json, key, target.name):
                if candidate.exists():
                    tried = True
                    info = self._load(candidate, candidate_json, module)
                    if info is not None:
                        break
            source, write = "disk", False
            if info is not None and keyed_by is not None:
                info.setdefault("trained_on", {"device": keyed_by})
                write = True  # under the new key, so that the next run finds it directly
            if info is None:
                if tried:  # a failed strict load may have copied some tensors: train from the seeded initialisation
                    module = seeded_build()
                source, write = "trained", True
                module.train()
                start = time.perf_counter()
                info = plain_info(dict(train(module)))
                info["train_seconds"] = time.perf_counter() - start
                info["trained_on"] = {"device": ctx.device.type, "device_name": device_kind(ctx.device)}
            module.eval().requires_grad_(False)
            # In memory first: whatever happens to the disk copy, the run keeps the model.
            self._memory[key_json] = (module, info)
            if write and path is not None:
                self._save(path, key_json, module, info)
        self._record(ctx, model_id, kind, source, info)
        return module

    @contextlib.contextmanager
    def _entry_lock(self, path: Path | None, model_id: str) -> Iterator[None]:
        """Hold the lock of the entry at ``path`` for the block: one process trains it, the others then load it.

        Without a directory, or where the lock file cannot be created (an unwritable
        cache, which the first save then reports), the block runs unlocked.
        """
        if path is None or self._disk_failed:
            yield
            return
        lock_path = path.with_name(path.name + ".lock")
        lock = filelock.FileLock(lock_path)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                log.info("waiting for another process to finish training %s", model_id)
                lock.acquire()
        except OSError:
            yield
            return
        try:
            yield
        finally:
            lock.release()
            # Leave only entries in the folder.  A process already waiting on the removed file may
            # lock it (filelock ≥ 4 notices and locks the path afresh); it then finds the entry and
            # loads it, so at worst, where the entry could not be written, a model is trained twice.
            lock_path.unlink(missing_ok=True)

    def _plan(
        self, ctx: "FitContext", model_id: str, kind: str, key_json: str, path: Path | None, module: torch.nn.Module,
        target_name: str,
    ) -> torch.nn.Module:
        source = "train"
        for candidate, candidate_json, _ in self._entries(path, key_json, json.loads(key_json), target_name):
            try:
                module.load_state_dict(self._read(candidate, candidate_json)["state_dict"], strict=True)
                source = "disk"
                break
            except Exception:  # absent or unusable: a run would train it
                continue
        module.eval().requires_grad_(False)
        self._memory[key_json] = (module, {})
        ctx.models.append({"id": model_id, "kind": kind, "source": source})
        return module

    @staticmethod
    def _record(ctx: "FitContext", model_id: str, kind: str, source: str, info: Mapping[str, Any]) -> None:
        ctx.models.append({"id": model_id, "kind": kind, "source": source, **info})

    def _save(self, path: Path, key_json: str, module: torch.nn.Module, info: Mapping[str, Any]) -> None:
        """Write the entry if it will load with ``weights_only=True``; warn (never raise) otherwise."""
        if self._disk_failed:
            return
        try:
            info_json = json.dumps(info)
        except (TypeError, ValueError) as exc:
            log.warning("not caching the model for %s: its train() info is not JSON-able (%s); it stays in "
                        "memory for this run", path.name, exc)
            return
        try:
            payload = {
                "format": CACHE_FORMAT,
                "key": key_json,
                "state_dict": {
                    k: v.detach().cpu() if isinstance(v, torch.Tensor) else to_weights_only(v)
                    for k, v in module.state_dict().items()
                },
                "info": info_json,
            }
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            data = buffer.getvalue()
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            log.warning(
                "not caching the model for %s: its entry would not load with torch.load(weights_only=True) "
                "(%s: %s); it stays in memory for this run",
                path.name, type(exc).__name__, exc,
            )
            return
        try:
            atomic_write_bytes(path, lambda handle: handle.write(data))
        except OSError as exc:
            self._disk_failed = True
            log.warning(
                "cannot write the model cache in %s (%s: %s); trained models stay in memory for this run only "
                "(set --cache-dir or $PINGSBENCH_CACHE to a writable folder to keep them)",
                self.directory, type(exc).__name__, exc,
            )

    @staticmethod
    def _read(path: Path, key_json: str) -> dict[str, Any]:
        """The entry's payload, its ``state_dict``'s numpy values restored.

        Raises:
            FileNotFoundError, NotADirectoryError: No entry.
            ValueError: The entry is of another format or for another key.
            Exception: Whatever an unreadable file makes ``torch.load`` raise.
        """
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache entry has format {payload.get('format')!r}, this pingsbench reads {CACHE_FORMAT}")
        if payload.get("key") != key_json:
            raise ValueError("cache entry was written for a different model")
        payload["state_dict"] = {k: from_weights_only(v) for k, v in payload["state_dict"].items()}
        return payload

    def _load(self, path: Path, key_json: str, module: torch.nn.Module) -> dict[str, Any] | None:
        """Load weights into ``module``; ``None`` if absent, or (with a warning) corrupt or mismatched."""
        try:
            payload = self._read(path, key_json)
            module.load_state_dict(payload["state_dict"], strict=True)
            return json.loads(payload["info"])
        except (FileNotFoundError, NotADirectoryError):  # no entry (or no directory) yet: train
            return None
        except Exception as exc:  # a bad entry costs a retrain, never the run
            log.warning("ignoring cache entry %s (%s: %s); retraining", path, type(exc).__name__, exc)
            return None

    def _entries(
        self, path: Path | None, key_json: str, key: Mapping[str, Any], target_name: str
    ) -> Iterator[tuple[Path, str, str | None]]:
        """Where the model of ``key`` may be stored, in the order to try: ``(path, key JSON, keyed_by)``.

        First its own entry (``keyed_by`` is ``None``), then those an older pingsbench, whose
        keys held the device type, would have written for it on each device type.
        """
        if path is None:
            return
        yield path, key_json, None
        for device_type in KEYED_BY_DEVICE:
            old_json = json.dumps({**key, "device_type": device_type}, sort_keys=True)
            old_path = self.path_for(self.model_id(key["kind"], old_json), target_name, key)
            if old_path is not None:
                yield old_path, old_json, device_type
