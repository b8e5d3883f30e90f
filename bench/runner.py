"""The sampler × target loop: fit, sample, measure, and record every pair.

One pair failing (an exception, NaN/inf samples, a wrong shape) becomes a
``failed`` row with its reason; the other pairs still run.  Every sampler gets
the same device, dtype, n, generator discipline, warm-up, repeats and timer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from bench.cache import ModelCache, atomic_write_bytes
from bench.contracts import FitContext, SampleFn, Sampler, Target, UnsupportedTarget
from bench.counting import CountedTarget, count_evaluations, nfe_record
from bench.environment import environment
from bench.errors import UsageError
from bench.metrics import METRIC_SPECS, compute_metrics, mmd2
from bench.profiles import Profile
from bench.registry import Registry
from bench.seeding import derive_seed
from bench.timing import Timer
from bench.validation import CONFIG_CHECKS, check_run_names

log = logging.getLogger("pingsbench")

RESULTS_SCHEMA = "pingsbench.results/1"
#: Points per sampler kept for figures (``samples.npz``), enough for a readable scatter.
FIGURE_POINTS = 2_000
#: Values per sampler kept at most, so high-dimensional targets (whose figures draw
#: a few dozen curves) keep fewer points and the committed ``samples.npz`` stays small.
FIGURE_VALUES = 16_000


def figure_points(dim: int) -> int:
    """How many of a sampler's points ``samples.npz`` keeps for a target of dimension ``dim``."""
    return max(1, min(FIGURE_POINTS, FIGURE_VALUES // dim))


@dataclasses.dataclass
class RunConfig:
    """What to run and how to measure it (recorded verbatim in ``results.json``).

    Every field is checked on construction with the CLI's own checks
    (:data:`bench.validation.CONFIG_CHECKS`: ``n ≥ 2``, ``repeats ≥ 1``,
    ``warmup ≥ 0``, a device this machine has, a floating dtype); ``device``
    and ``profile`` may be given by name.  :meth:`validate` checks the names
    against a registry.

    Raises:
        UsageError: A field breaks its rule (one line: what was wrong; what is allowed).
    """

    samplers: list[str]
    targets: list[str]
    profile: Profile
    device: torch.device
    n: int
    seed: int = 0
    repeats: int = 5
    warmup: int = 3
    dtype: torch.dtype = torch.float32
    compile: bool = False
    cache_dir: Path | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        for field, check in CONFIG_CHECKS.items():
            setattr(self, field, check(getattr(self, field), f"{field} ="))

    def validate(self, registry: Registry) -> None:
        """Check every sampler and target name against ``registry``, before any work.

        Raises:
            UsageError: No samplers or targets, a name listed twice, or a family value the
                family does not take (``ddim-0``).
            UnknownNameError: A name nobody registered.
            PluginError: A name two families claim, or a broken family.
        """
        check_run_names(self.samplers, self.targets, registry)

    def to_json(self) -> dict[str, Any]:
        return {
            "samplers": self.samplers,
            "targets": self.targets,
            "profile": self.profile.name,
            "device": str(self.device),
            "n": self.n,
            "seed": self.seed,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "dtype": str(self.dtype).removeprefix("torch."),
            "optimizations": {"torch_compile": self.compile, "amp": False, "cuda_graphs": False},
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
        }


class SampleError(ValueError):
    """A sampler returned something that is not ``n`` finite points of the target's dimension."""


def check_samples(samples: object, n: int, dim: int) -> Tensor:
    if not isinstance(samples, Tensor):
        raise SampleError(f"sampler returned {type(samples).__name__}, expected a torch.Tensor")
    if tuple(samples.shape) != (n, dim):
        raise SampleError(f"sampler returned shape {tuple(samples.shape)}, expected ({n}, {dim})")
    if not samples.is_floating_point():
        raise SampleError(f"sampler returned dtype {samples.dtype}, expected floating point")
    bad = (~torch.isfinite(samples)).any(dim=1).sum().item()
    if bad:
        raise SampleError(f"{bad} of {n} samples contain NaN or inf")
    # Metrics run in float32's range; a wider dtype's huge values would turn into inf there.
    out_of_range = (samples.abs() > torch.finfo(torch.float32).max).any(dim=1).sum().item()
    if out_of_range:
        raise SampleError(f"{out_of_range} of {n} samples are out of float32's range (|x| > 3.4e38)")
    return samples.detach().to("cpu", torch.float32)


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@dataclasses.dataclass
class TargetData:
    """Held-out reference draws of one target and its MMD² noise floor."""

    reference: Tensor
    mmd2_floor: float


def prepare_target(target: Target, config: RunConfig) -> TargetData:
    """Reference draws and a second independent set for the noise floor (CPU, from the run seed)."""
    cpu = torch.device("cpu")
    reference = target.sample(config.n, seeded_generator(cpu, derive_seed(config.seed, "reference", target.name)))
    second = target.sample(config.n, seeded_generator(cpu, derive_seed(config.seed, "floor", target.name)))
    reference = check_samples(reference, config.n, target.dim)
    return TargetData(reference, mmd2(check_samples(second, config.n, target.dim), reference))


def error_text(exc: BaseException) -> str:
    """How a row (or a ``--dry-run`` entry) states why it failed: ``"<Type>: <message>"``."""
    return f"{type(exc).__name__}: {exc}"


def _failure(row: dict[str, Any], status: str, exc: BaseException) -> dict[str, Any]:
    row["status"] = status
    row["error"] = error_text(exc)
    if status == "failed":
        log.warning("%s on %s failed:\n%s", row["sampler"], row["target"], traceback.format_exc())
    return row


@dataclasses.dataclass
class PairSession:
    """One sampler fitted on one target: the single code path of the runner and the latency benchmarks.

    The sampler is fitted on a :class:`~bench.counting.CountedTarget` view, so
    the oracle calls its sampling function makes are counted (training calls
    during :meth:`Sampler.fit` are not: counting is active only in
    :meth:`sample_counted`).

    Attributes:
        sampler: The sampler.
        target: The target (unwrapped).
        config: The run's settings (device, dtype, n, seed, compile).
        ctx: The fit context (its ``models`` and ``artifacts`` go into the row).
        sample_fn: What ``sampler.fit`` returned.
        fit_seconds: Wall-clock seconds of ``sampler.fit``.
    """

    sampler: Sampler
    target: Target
    config: RunConfig
    ctx: FitContext
    sample_fn: SampleFn
    fit_seconds: float

    @classmethod
    def fit(cls, sampler: Sampler, target: Target, config: RunConfig, cache: ModelCache) -> "PairSession":
        """Fit ``sampler`` on a counted view of ``target`` (the caller has run ``sampler.check``)."""
        ctx = FitContext(config.device, config.dtype, config.seed, config.profile, cache, progress=config.progress)
        start = time.perf_counter()
        sample_fn = sampler.fit(CountedTarget(target), ctx)
        return cls(sampler, target, config, ctx, sample_fn, time.perf_counter() - start)

    def seed(self, purpose: str) -> int:
        """The seed of one purpose (``sample``, ``timing``, ``metrics``) for this pair."""
        return derive_seed(self.config.seed, purpose, self.sampler.name, self.target.name)

    def sample_counted(self) -> tuple[Tensor, dict[str, Any]]:
        """Draw the fidelity sample while counting evaluations.

        Returns:
            The checked samples, shape ``(n, dim)``, float32 on CPU, and the row's NFE
            fields (:func:`~bench.counting.nfe_record`: ``nfe``, ``nfe_split``, ``warnings``).

        Raises:
            SampleError: If the sampler returned anything but ``n`` finite points.
        """
        # Hooks are installed only for this call, never while timing.
        with torch.inference_mode(), count_evaluations() as counter:
            samples = self.sample_fn(self.config.n, seeded_generator(self.config.device, self.seed("sample")))
        samples = check_samples(samples, self.config.n, self.target.dim)
        return samples, nfe_record(counter, self.config.n, self.sampler, self.target)

    def timed_call(self) -> Callable[[], Any]:
        """The call every latency is measured on: ``n`` samples from a freshly seeded generator.

        Runs in inference mode, through ``torch.compile`` when the run asks for it;
        it does not synchronize the device (the timer does).
        """
        config, seed = self.config, self.seed("timing")
        timed_fn = torch.compile(self.sample_fn) if config.compile else self.sample_fn

        def call() -> Any:
            with torch.inference_mode():
                return timed_fn(config.n, seeded_generator(config.device, seed))

        return call

    def metrics(self, samples: Tensor, data: TargetData) -> dict[str, float]:
        """Generic and target-specific metrics of ``samples`` against the held-out draws.

        Raises:
            SampleError: If a metric is not finite.
        """
        metrics = {"mmd2_floor": data.mmd2_floor}
        metrics.update(compute_metrics(samples, data.reference, seed=self.seed("metrics")))
        metrics.update(self.target.extra_metrics(samples, data.reference))
        bad_metrics = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad_metrics:
            raise SampleError(f"metrics {bad_metrics} are not finite")
        return metrics


def new_row(sampler_name: str, target_name: str, registry: Registry, config: RunConfig) -> dict[str, Any]:
    """A result row before anything is measured (``status`` ``"ok"`` until something fails)."""
    return {
        "sampler": sampler_name,
        "target": target_name,
        "source": registry.sampler_source(sampler_name),
        "status": "ok",
        "error": None,
        "n": config.n,
        "nfe": None,
        "nfe_split": None,
        "warnings": [],
        "latency_ms": None,
        "samples_per_s": None,
        "fit_seconds": None,
        "fit": {},
        "metrics": {},
    }


def run_pair(
    sampler_name: str,
    target: Target,
    data: TargetData,
    registry: Registry,
    cache: ModelCache,
    config: RunConfig,
    figure_samples: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Fit, sample, measure one sampler on one target; never raises for the sampler's faults."""
    row = new_row(sampler_name, target.name, registry, config)
    row["metrics"]["mmd2_floor"] = data.mmd2_floor
    sampler = registry.sampler(sampler_name)
    try:
        sampler.check(target)
    except UnsupportedTarget as exc:
        return _failure(row, "skipped", exc)
    except Exception as exc:  # a broken check() is the sampler's fault, not the run's
        return _failure(row, "failed", exc)

    try:
        session = PairSession.fit(sampler, target, config, cache)
        row["fit_seconds"] = session.fit_seconds
        row["fit"] = {"models": session.ctx.models, "artifacts": session.ctx.artifacts}
        samples, nfe_fields = session.sample_counted()
        row.update(nfe_fields)
        for warning in row["warnings"]:
            log.warning("%s on %s: %s", sampler_name, target.name, warning)
        timing = Timer(config.device).measure(session.timed_call(), repeats=config.repeats, warmup=config.warmup)
        row["latency_ms"] = timing.summary()
        row["samples_per_s"] = config.n / (row["latency_ms"]["median"] / 1e3)
        row["metrics"] = session.metrics(samples, data)
        figure_samples[sampler_name] = samples[: figure_points(target.dim)].numpy()
    except Exception as exc:  # one pair's failure must not stop the others
        return _failure(row, "failed", exc)
    return row


def metric_info(registry: Registry, target_names: list[str]) -> dict[str, dict[str, str]]:
    """Label and better-direction of every metric that can appear in the results."""
    specs = list(METRIC_SPECS)
    for name in target_names:
        specs.extend(registry.target(name).metric_specs)
    info = {s.name: {"label": s.label, "better": s.better, "description": s.description} for s in specs}
    info["mmd2_floor"] = {
        "label": "MMD² floor",
        "better": "lower",
        "description": "MMD² between two independent sets of n exact target draws",
    }
    return info


def run(
    config: RunConfig,
    registry: Registry,
    out_dir: Path | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every selected sampler on every selected target.

    Args:
        config: What to run.
        registry: Where names are resolved.
        out_dir: If given, ``results.json`` and ``samples.npz`` are written there atomically
            after every row, so an interrupted run keeps what it finished.
        on_row: Called with each finished row (progress display).

    Returns:
        The results document (schema ``pingsbench.results/1``).

    Raises:
        UsageError: A name that is unknown, listed twice or not available in its family
            (see :meth:`RunConfig.validate`), before any work.
    """
    config.validate(registry)
    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(config.device, config.dtype),
        "config": config.to_json(),
        "metric_info": metric_info(registry, config.targets),
        "rows": [],
    }
    cache = ModelCache(config.cache_dir)
    figure_samples: dict[str, np.ndarray] = {}
    for target_name in config.targets:
        target = registry.target(target_name)
        try:
            data = prepare_target(target, config)
        except Exception as exc:  # a target that cannot draw its reference set fails its own rows, not the run
            data, target_error = None, exc
            log.warning("target %s cannot draw its reference set:\n%s", target_name, traceback.format_exc())
        else:
            figure_samples[f"{target_name}/reference"] = data.reference[: figure_points(target.dim)].numpy()
        for sampler_name in config.samplers:
            pair_samples: dict[str, np.ndarray] = {}
            if data is None:
                row = new_row(sampler_name, target_name, registry, config)
                row.update(status="failed", error=f"target {target_name!r} cannot draw its reference set: "
                                                  f"{error_text(target_error)}")
            else:
                row = run_pair(sampler_name, target, data, registry, cache, config, pair_samples)
            figure_samples.update({f"{target_name}/{k}": v for k, v in pair_samples.items()})
            results["rows"].append(row)
            if out_dir is not None:
                write_results(results, out_dir)
                write_samples(figure_samples, out_dir)
            if on_row is not None:
                on_row(row)
    return results


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (a diverged loss curve) by ``None``: JSON has no NaN."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results(results: dict[str, Any], out_dir: Path) -> Path:
    path = Path(out_dir) / "results.json"
    text = json.dumps(json_safe(results), indent=2, allow_nan=False, default=str)
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path


def write_samples(samples: dict[str, np.ndarray], out_dir: Path) -> Path:
    path = Path(out_dir) / "samples.npz"
    atomic_write_bytes(path, lambda handle: np.savez_compressed(handle, **samples))
    return path


def load_samples(out_dir: Path) -> dict[str, np.ndarray]:
    """The figure samples a run kept in ``out_dir/samples.npz``; ``{}`` (and a warning) if there are none.

    Raises:
        UsageError: The file exists but cannot be read (e.g. truncated).
    """
    path = Path(out_dir) / "samples.npz"
    if not path.exists():
        log.warning("%s is missing: the report is rendered without sample figures", path)
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to render the report "
                         f"without sample figures, or re-run") from None
