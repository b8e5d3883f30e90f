"""The Ray executor (``pingsbench run --executor ray``): one Ray task per (sampler, target, seed) pair.

Ray is an optional extra (``pip install "pingsbench[ray]"``); this module imports
it only when a run uses it.

* **Each model trained once.**  Before anything runs, the driver plans the run
  (:func:`bench.plan.plan_run`, with the run's cache directory; nothing is
  trained) and turns the plan into trainings (:func:`bench.plan.training_plan`):
  every model to train gets a *fit task* (the fit of the first pair that uses
  it, which trains and saves it to the shared cache), and every pair task that
  uses the model is scheduled only after that fit task, then loads the model
  from the cache.  A fit task that builds on another model (a distilled student
  on its teacher) waits for that model's fit task.  Cache entries are also
  written under a per-entry file lock (:class:`bench.cache.ModelCache`), so
  even a plan that missed a model, or two runs sharing a cache, never train or
  write one entry twice at the same time.
* **Fair timing.**  Every task holds its node's :class:`~bench.executors.gate.NodeGate`
  shared while it fits, samples and measures fidelity, and exclusively while it
  times: a latency measurement runs while nothing else of the run runs on that
  node.  Rows record where and when they were timed (``timed_on``, ``timing_window``).
* **Same numbers as the local executor.**  Workers rebuild the plugin registry
  from the driver's settings (``PINGSBENCH_DISABLE_PLUGINS``,
  ``PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD``, in-process plugin modules), apply the
  run's thread count and determinism (:func:`bench.runner.run_settings`) and run
  the same :func:`bench.runner.pair_row`; every seed derives from names
  (:func:`bench.seeding.derive_seed`), never from which worker runs a task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import shutil
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from bench.cache import ModelCache
from bench.contracts import UnsupportedTarget
from bench.errors import UsageError
from bench.executors.gate import NodeGate, gate_dir
from bench.plugins import DISABLE_AUTOLOAD_ENV, DISABLE_PLUGINS_ENV, get_plugin_manager
from bench.registry import Registry
from bench.runner import (
    PairKey,
    PairSession,
    ResultsWriter,
    RunConfig,
    error_text,
    new_row,
    pair_row,
    reference_set,
    run_settings,
    target_floor,
)

log = logging.getLogger("pingsbench")

#: The one line ``--executor ray`` prints without Ray.
MISSING_RAY = '--executor ray needs Ray, which is not installed; install it with pip install "pingsbench[ray]"'


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        UsageError: Ray is not installed (:data:`MISSING_RAY`).
    """
    try:
        import ray
    except ImportError:
        raise UsageError(MISSING_RAY) from None
    return ray


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to rebuild the driver's registry and find its node's timing gate.

    Attributes:
        plugin_env: ``(variable, value)`` of the plugin switches (``None``: unset in the driver).
        plugin_modules: ``(module, source, distribution)`` of plugins the driver registered
            in-process (not through an entry point); workers import and register them alike.
        run_id: Identifies the run's timing gates.
    """

    plugin_env: tuple[tuple[str, str | None], ...]
    plugin_modules: tuple[tuple[str, str, str], ...]
    run_id: str


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task's work: the run's settings and the pair (or, for a floor, the target alone)."""

    config: RunConfig
    settings: WorkerSettings
    target: str
    seed: int | None = None
    sampler: str | None = None


def _set_environment(values: Mapping[str, str | None]) -> None:
    """Set each variable, or unset it where its value is ``None``."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


#: Registries built in this worker process, by settings (a worker runs many tasks of one run).
_REGISTRIES: dict[tuple[Any, ...], Registry] = {}


def worker_registry(settings: WorkerSettings) -> Registry:
    """The registry the driver has, rebuilt in this process from ``settings`` (built once per process).

    Raises:
        PluginError: A plugin that loads in the driver is broken here (e.g. not installed on this node).
    """
    key = (settings.plugin_env, settings.plugin_modules)
    if key not in _REGISTRIES:
        with _environment(dict(settings.plugin_env)):
            manager = get_plugin_manager(strict=False)
        for module, source, distribution in settings.plugin_modules:
            manager.register_from(importlib.import_module(module), module, source, distribution)
        registry = Registry.from_plugin_manager(manager, strict=False)
        registry.raise_if_broken()
        _REGISTRIES[key] = registry
    return _REGISTRIES[key]


def fit_task(spec: TaskSpec, *waited_for: Any) -> list[dict[str, Any]]:
    """Train (and write to the shared cache) every model the pair's fit trains; a Ray task.

    Args:
        spec: The pair.
        waited_for: Results of the fit tasks this one had to wait for (unused: the models are
            read from the cache).

    Returns:
        The cache's records (``{"id", "kind", "source": "trained", ...}``) of the models trained
        here; ``[]`` when the fit failed (its pairs then fail, or train, on their own and say why).
    """
    registry = worker_registry(spec.settings)
    config = spec.config
    with run_settings(config), NodeGate(spec.settings.run_id).untimed():
        try:
            target, sampler = registry.target(spec.target), registry.sampler(spec.sampler)
            sampler.check(target)
            session = PairSession.fit(sampler, target, config, ModelCache(config.cache_dir), spec.seed)
        except UnsupportedTarget:
            return []
        except Exception:  # the pair's own task meets the same fault and records it in the row
            log.warning("fitting %s on %s (seed %d) failed:\n%s", spec.sampler, spec.target, spec.seed,
                        traceback.format_exc())
            return []
    return [model for model in session.ctx.models if model["source"] == "trained"]


def pair_task(spec: TaskSpec, *fits: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row of one pair and its figure points (:func:`bench.runner.pair_row`); a Ray task.

    Args:
        spec: The pair.
        fits: Results of the fit tasks that trained the models the pair uses (read from the cache).
    """
    registry = worker_registry(spec.settings)
    config = spec.config
    gate = NodeGate(spec.settings.run_id)
    with run_settings(config):
        target = registry.target(spec.target)
        with gate.untimed():
            data = reference_set(target, config, spec.seed)
        return pair_row(spec.sampler, target, spec.seed, data, registry, ModelCache(config.cache_dir), config, gate)


def floor_task(spec: TaskSpec) -> dict[str, Any] | None:
    """The noise floor of one target (:func:`bench.runner.target_floor`); a Ray task."""
    registry = worker_registry(spec.settings)
    with run_settings(spec.config), NodeGate(spec.settings.run_id).untimed():
        return target_floor(registry.target(spec.target), spec.config)


def check_shared_cache(cache_dir: Path | None) -> None:
    """The cache directory every worker shares: given, and writable from here.

    Raises:
        UsageError: No cache directory (``--no-cache``) or one that cannot be written.
    """
    allowed = ("give --cache-dir a writable folder on a file system every Ray node mounts: workers share "
               "trained models through it")
    if cache_dir is None:
        raise UsageError(f"--executor ray cannot run without a model cache (--no-cache); {allowed}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise UsageError(f"--cache-dir {cache_dir} cannot be written ({exc.strerror or exc}); {allowed}") from None


class RayExecutor:
    """Runs each pair as a Ray task, fits as tasks of their own, rows streamed back in grid order.

    Args:
        address: ``None`` starts a local Ray instance (stopped at the end); ``"auto"`` or
            ``host:port`` joins a running cluster.  A Ray already initialised in this process
            (e.g. by a test or a notebook) is used as it is and left running.
        cpus_per_task: CPUs Ray reserves per task; default: the run's ``threads``.
        gpus_per_task: GPUs Ray reserves per task; default: 1 on a CUDA device, else 0.
        plugin_modules: Importable modules of plugins registered in-process in the driver
            (e.g. by :func:`bench.testing.registered`); workers register them too.  Entry-point
            plugins need nothing: workers load them as the driver does.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_task: float | None = None,
        gpus_per_task: float | None = None,
        plugin_modules: Sequence[str] = (),
    ) -> None:
        self.address, self.cpus_per_task, self.gpus_per_task = address, cpus_per_task, gpus_per_task
        self.plugin_modules = tuple(plugin_modules)

    def check(self, config: RunConfig) -> None:
        """Refuse a run without a writable cache directory, or without Ray, before any work.

        Raises:
            UsageError: See :func:`check_shared_cache` and :func:`import_ray`.
        """
        import_ray()
        check_shared_cache(config.cache_dir)

    def resources(self, config: RunConfig) -> dict[str, float]:
        """Ray's ``num_cpus`` and ``num_gpus`` of every task of the run."""
        gpus = self.gpus_per_task if self.gpus_per_task is not None else float(config.device.type == "cuda")
        cpus = self.cpus_per_task if self.cpus_per_task is not None else config.threads
        return {"num_cpus": cpus, "num_gpus": gpus}

    def settings(self, registry: Registry) -> WorkerSettings:
        """The settings workers rebuild ``registry`` from.

        Raises:
            UsageError: A plugin module registers nothing in ``registry``.
        """
        entries = [entry for table in (registry.samplers, registry.families, registry.targets,
                                       registry.target_families) for entry in table.values()]
        modules = []
        for module in self.plugin_modules:
            entry = next((entry for entry in entries if entry.plugin == module), None)
            if entry is None:
                raise UsageError(f"plugin module {module!r} registers nothing in this registry; give the modules "
                                 f"of plugins registered in-process")
            modules.append((module, entry.source, entry.distribution))
        return WorkerSettings(
            plugin_env=tuple((name, os.environ.get(name)) for name in (DISABLE_PLUGINS_ENV, DISABLE_AUTOLOAD_ENV)),
            plugin_modules=tuple(modules),
            run_id=uuid.uuid4().hex[:12],
        )

    def execute(self, config: RunConfig, registry: Registry, pairs: Sequence[PairKey], floors: Sequence[str],
                writer: ResultsWriter) -> None:
        """Run the fits, floors and pairs as Ray tasks; hand every row to ``writer`` as it arrives.

        On an interruption (Ctrl-C, SIGTERM) the tasks still pending are cancelled; the rows
        written so far stay in ``results.json`` for ``--resume``.
        """
        ray = import_ray()
        settings = self.settings(registry)
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        try:
            self._execute(ray, config, registry, pairs, floors, writer, settings)
        finally:
            if started:
                ray.shutdown()
            shutil.rmtree(gate_dir(settings.run_id), ignore_errors=True)  # this node's; other nodes' stay in their /tmp

    def _execute(self, ray: Any, config: RunConfig, registry: Registry, pairs: Sequence[PairKey],
                 floors: Sequence[str], writer: ResultsWriter, settings: WorkerSettings) -> None:
        from bench.plan import plan_run, training_plan

        config = dataclasses.replace(config, progress=False)  # no training bars in worker logs
        options = self.resources(config)
        remote_fit = ray.remote(fit_task).options(**options)
        remote_pair = ray.remote(pair_task).options(**options)
        remote_floor = ray.remote(floor_task).options(num_cpus=options["num_cpus"])

        def spec(target: str, seed: int | None = None, sampler: str | None = None) -> TaskSpec:
            return TaskSpec(config, settings, target, seed, sampler)

        trainings = training_plan(plan_run(config, registry), pairs) if pairs else None
        fits: dict[PairKey, Any] = {}
        for key in trainings.fits() if trainings else []:
            fits[key] = remote_fit.remote(spec(*key), *(fits[other] for other in trainings.fit_waits_for(key)))
        pending: dict[Any, tuple[str, Any]] = {}
        for name in floors:
            pending[remote_floor.remote(spec(name))] = ("floor", name)
        for key in pairs:
            waits = dict.fromkeys(trainings.trainer[m] for m in trainings.waits_for.get(key, [])) if trainings else {}
            pending[remote_pair.remote(spec(*key), *(fits[trainer] for trainer in waits))] = ("pair", key)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                kind, what = pending.pop(ref)
                if kind == "floor":
                    writer.add_floor(what, self._result(ray, ref, f"the noise floor of {what}"))
                    continue
                try:
                    row, figures = ray.get(ref)
                except Exception as exc:  # the task itself died (worker crash, lost node): its row fails
                    row, figures = self._failed_row(what, registry, config, exc), {}
                if what in fits:
                    self._credit_training(row, self._result(ray, fits[what], "a fit") or [])
                writer.add_row(row, figures)
        finally:
            for ref in pending:  # interrupted: stop what is still queued or running
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    @staticmethod
    def _result(ray: Any, ref: Any, what: str) -> Any:
        try:
            return ray.get(ref)
        except Exception as exc:
            log.warning("%s was lost: %s", what, error_text(exc))
            return None

    @staticmethod
    def _failed_row(key: PairKey, registry: Registry, config: RunConfig, exc: BaseException) -> dict[str, Any]:
        target, seed, sampler = key
        row = new_row(sampler, target, seed, registry, config)
        row.update(status="failed", error=error_text(getattr(exc, "cause", None) or exc))
        return row

    @staticmethod
    def _credit_training(row: dict[str, Any], trained: list[dict[str, Any]]) -> None:
        """Record the models the pair's fit task trained as trained by the pair, as the local executor does."""
        by_id = {model["id"]: model for model in trained}
        models = (row.get("fit") or {}).get("models")
        if models:
            row["fit"]["models"] = [by_id.get(model["id"], model) for model in models]
