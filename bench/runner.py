"""The sampler × target loop: fit, sample, measure, and record every pair.

One pair failing (an exception, NaN/inf samples, a wrong shape) becomes a
``failed`` row with its reason; the other pairs still run.  Every sampler gets
the same device, dtype, n, generator discipline, warm-up, repeats and timer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import socket
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.cache import ModelCache, atomic_write_bytes
from bench.contracts import FitContext, SampleFn, Sampler, Target, UnsupportedTarget
from bench.counting import CountedTarget, count_evaluations, nfe_record
from bench.environment import device_kind, environment
from bench.errors import UsageError
from bench.metrics import METRIC_SPECS
from bench.metrics.cache import cached_metrics
from bench.profiles import Profile
from bench.registry import Registry
from bench.results import RESULTS_SCHEMA, resumable_rows, summarize
from bench.seeding import derive_seed
from bench.timing import MIN_BLOCK_SECONDS, Timer, cpu_contention, peak_memory, predict_call_seconds
from bench.validation import CONFIG_CHECKS, check_run_names

log = logging.getLogger("pingsbench")

#: Points per sampler kept for figures (``samples.npz``), enough for a readable scatter.
FIGURE_POINTS = 2_000
#: Values per sampler kept at most, so high-dimensional targets (whose figures draw
#: a few dozen curves) keep fewer points and the committed ``samples.npz`` stays small.
FIGURE_VALUES = 16_000


def figure_points(dim: int) -> int:
    """How many of a sampler's points ``samples.npz`` keeps for a target of dimension ``dim``."""
    return max(1, min(FIGURE_POINTS, FIGURE_VALUES // dim))


#: Sampling dtypes reached by :func:`torch.autocast` from float32-trained models.
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclasses.dataclass
class RunConfig:
    """What to run and how to measure it (recorded verbatim in ``results.json``).

    Every field is checked on construction with the CLI's own checks
    (:data:`bench.validation.CONFIG_CHECKS`: ``n ≥ 2``, ``repeats ≥ 1``,
    ``warmup ≥ 0``, a device this machine has, a floating dtype, seeds,
    ``threads ≥ 1``, ``floor_pairs ≥ 2``); ``device`` and ``profile`` may be
    given by name.  :meth:`validate` checks the names against a registry.

    Attributes:
        seed: The base seed; with ``seeds`` given as a list it becomes ``seeds[0]``.
        seeds: The replicate seeds, each a full repetition (own training, reference set and
            noise): a list in the order to run, a count ``K`` (seeds ``seed … seed+K−1``), or
            ``None`` for ``[seed]``.  Always a list after construction.
        independent_noise: Give every (sampler, target) pair its own sampling, timing and
            metric streams instead of common random numbers within a replicate.
        threads: Torch intra-op threads for training and sampling alike; ``None`` takes
            ``torch.get_num_threads()`` at construction (always an ``int`` after it).
        floor_pairs: Pairs of exact target draw sets behind each metric's noise floor.
        deterministic: Run with ``torch.use_deterministic_algorithms(True, warn_only=True)``.
        dtype: The precision of sampling.  ``float32`` and ``float64`` train and sample in it;
            ``bfloat16`` and ``float16`` (:data:`AUTOCAST_DTYPES`) train in float32, so they share
            float32's cache entries, and sample under :func:`torch.autocast` to that dtype (matrix
            products in it; the samples are measured as float32, :func:`check_samples`).
        batch_sizes: The sizes latency is timed at (:func:`time_batch_sizes`), as a list or as
            ``"1,100,10000"``; ``None`` times ``n`` alone.  After construction: distinct, ascending,
            ``n`` always among them (added if missing).
        latency_cap_s: A size other than ``n`` whose single call is estimated to take longer
            (seconds) is not timed; its entry in ``latency_by_n`` says why.
        cuda_graphs: Time each size's call as a captured CUDA graph (:mod:`bench.cuda_graphs`);
            needs a CUDA ``device``.

    Raises:
        UsageError: A field breaks its rule (one line: what was wrong; what is allowed), or
            ``seed`` contradicts the first of an explicit ``seeds`` list, or ``cuda_graphs`` is
            asked for without a CUDA device.
    """

    samplers: list[str]
    targets: list[str]
    profile: Profile
    device: torch.device
    n: int
    seed: int = 0
    repeats: int = 5
    #: One: the counted fidelity call at ``n`` has just run the sampler once already, untimed.
    warmup: int = 1
    dtype: torch.dtype = torch.float32
    compile: bool = False
    cache_dir: Path | None = None
    progress: bool = False
    seeds: list[int] | int | None = None
    independent_noise: bool = False
    threads: int | None = None
    floor_pairs: int = 5
    deterministic: bool = True
    batch_sizes: list[int] | str | None = None
    latency_cap_s: float = 30.0
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.seeds is None:
            self.seeds = [self.seed]
        if self.batch_sizes is None:
            self.batch_sizes = [self.n]
        if self.threads is None:
            self.threads = torch.get_num_threads()
        for field, check in CONFIG_CHECKS.items():
            setattr(self, field, check(getattr(self, field), f"{field} ="))
        if isinstance(self.seeds, int):
            self.seeds = list(range(self.seed, self.seed + self.seeds))
        elif self.seed not in (0, self.seeds[0]):  # 0 is the default: "not given"
            raise UsageError(f"seed = {self.seed} contradicts seeds = {self.seeds}, whose first seed is the base "
                             f"seed; give seed = {self.seeds[0]} or leave seed out")
        self.seed = self.seeds[0]
        self.batch_sizes = sorted(set(self.batch_sizes) | {self.n})
        if self.cuda_graphs and self.device.type != "cuda":
            raise UsageError(f"CUDA graphs need a CUDA device, and the run's device is {self.device}; give "
                             f"--device cuda or leave --cuda-graphs out")

    @property
    def training_dtype(self) -> torch.dtype:
        """The dtype models are trained (and cached) in: float32 for an autocast ``dtype``, else ``dtype``."""
        return torch.float32 if self.dtype in AUTOCAST_DTYPES else self.dtype

    def sampling_precision(self, cache_enabled: bool = True) -> ContextManager[Any]:
        """The context sampling runs in: :func:`torch.autocast` to an autocast ``dtype``, else nothing.

        Args:
            cache_enabled: Autocast's cast cache; off while capturing a CUDA graph, as torch requires.
        """
        if self.dtype in AUTOCAST_DTYPES:
            return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache_enabled)
        return contextlib.nullcontext()

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
            "seeds": self.seeds,
            "independent_noise": self.independent_noise,
            "threads": self.threads,
            "deterministic": self.deterministic,
            "floor_pairs": self.floor_pairs,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "dtype": str(self.dtype).removeprefix("torch."),
            "optimizations": {"torch_compile": self.compile, "amp": self.dtype in AUTOCAST_DTYPES,
                              "cuda_graphs": self.cuda_graphs},
            "batch_sizes": self.batch_sizes,
            "latency_cap_s": self.latency_cap_s,
            "timing": {"method": "blocks", "min_block_seconds": MIN_BLOCK_SECONDS},
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
        }


@contextlib.contextmanager
def run_settings(config: RunConfig) -> Iterator[None]:
    """Apply the run's thread count, determinism and full float32 precision to torch for the block; restore them.

    TF32 is off for matrix products and convolutions alike (``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.backends.cudnn.allow_tf32``): float32 means float32 on every GPU, whatever the process
    had set.  On CUDA, cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for deterministic results; it is set
    (if unset) here, before the run's first CUDA work, and left set: cuBLAS reads it once per process.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.set_num_threads(config.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if config.deterministic:
        if config.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


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
    """Held-out reference draws of one target for one replicate seed."""

    reference: Tensor
    seed: int


def prepare_target(target: Target, config: RunConfig, seed: int | None = None) -> TargetData:
    """The reference set of replicate ``seed`` (default ``config.seed``): ``n`` exact draws on the CPU.

    Raises:
        SampleError: The target's draws are not ``n`` finite points of its dimension.
    """
    seed = config.seed if seed is None else seed
    generator = seeded_generator(torch.device("cpu"), derive_seed(seed, "reference", target.name))
    return TargetData(check_samples(target.sample(config.n, generator), config.n, target.dim), seed)


def noise_floor(target: Target, n: int, seed: int, pairs: int, cache_dir: Path | None = None) -> dict[str, Any]:
    """Every metric between independent pairs of exact target draw sets: what a perfect sampler scores.

    Pair ``i`` compares ``n`` draws seeded ``derive_seed(seed, "floor", name, i)`` (in the
    sampler's place) with ``n`` seeded ``derive_seed(seed, "floor-reference", name, i)``, by
    :func:`~bench.metrics.compute_metrics` (through :func:`~bench.metrics.cache.cached_metrics`) and the
    target's ``extra_metrics``.  No training.

    Args:
        target: The target.
        n: Points per draw set, as in the run's rows.
        seed: The run's base seed.
        pairs: Number of pairs ``P ≥ 2``.
        cache_dir: Where :func:`~bench.metrics.cache.cached_metrics` keeps the generic metrics' values
            (``None``: computed every time).

    Returns:
        ``{"pairs": P, "n": n, "seed": seed, "metrics": {name: {"mean", "std", "values"}}}``,
        ``values`` the ``P`` per-pair values, ``std`` their sample standard deviation (ddof = 1).

    Raises:
        SampleError: The target's draws are not ``n`` finite points of its dimension.
    """
    cpu = torch.device("cpu")
    per_pair: list[dict[str, float]] = []
    for i in range(pairs):
        draws, reference = (
            check_samples(target.sample(n, seeded_generator(cpu, derive_seed(seed, label, target.name, str(i)))),
                          n, target.dim)
            for label in ("floor", "floor-reference")
        )
        metrics = cached_metrics(draws, reference, seed=derive_seed(seed, "floor-metrics", target.name, str(i)),
                                 directory=cache_dir)
        metrics.update(target.extra_metrics(draws, reference))
        per_pair.append(metrics)
    summary = {}
    for name in per_pair[0]:
        values = np.array([metrics[name] for metrics in per_pair], dtype=np.float64)
        summary[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "values": values.tolist()}
    return {"pairs": pairs, "n": n, "seed": seed, "metrics": summary}


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
        graph_status: With ``config.cuda_graphs``, per batch size :meth:`timed_call` was asked for:
            ``"captured"``, or ``"eager: <why the capture failed>"``.
    """

    sampler: Sampler
    target: Target
    config: RunConfig
    ctx: FitContext
    sample_fn: SampleFn
    fit_seconds: float
    graph_status: dict[int, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def fit(
        cls, sampler: Sampler, target: Target, config: RunConfig, cache: ModelCache, seed: int | None = None
    ) -> "PairSession":
        """Fit ``sampler`` on a counted view of ``target`` (the caller has run ``sampler.check``).

        ``seed`` is the replicate seed (default ``config.seed``): the fit context's seed, so
        each replicate trains (and caches) its own models, and the root of the sampling streams.
        """
        seed = config.seed if seed is None else seed
        ctx = FitContext(config.device, config.training_dtype, seed, config.profile, cache, progress=config.progress)
        start = time.perf_counter()
        sample_fn = sampler.fit(CountedTarget(target), ctx)
        return cls(sampler, target, config, ctx, sample_fn, time.perf_counter() - start)

    def seed(self, purpose: str) -> int:
        """The seed of one purpose (``sample``, ``timing``, ``metrics``) for this pair in its replicate.

        Common random numbers: within a replicate every sampler samples and is timed from the
        same streams (samplers that start from ``N(0, I)`` start from the same points) and its
        metrics use the target's stream, so rows are paired.  ``config.independent_noise``
        gives each pair its own streams instead.
        """
        replicate = self.ctx.seed
        if self.config.independent_noise:
            return derive_seed(replicate, purpose, self.sampler.name, self.target.name)
        if purpose == "metrics":
            return derive_seed(replicate, purpose, self.target.name)
        return derive_seed(replicate, purpose)

    def sample_counted(self) -> tuple[Tensor, dict[str, Any]]:
        """Draw the fidelity sample while counting evaluations, in the run's sampling precision.

        Returns:
            The checked samples, shape ``(n, dim)``, float32 on CPU, and the row's NFE
            fields (:func:`~bench.counting.nfe_record`: ``nfe``, ``nfe_split``, ``warnings``).

        Raises:
            SampleError: If the sampler returned anything but ``n`` finite points.
        """
        # Hooks are installed only for this call, never while timing.
        with torch.inference_mode(), self.config.sampling_precision(), count_evaluations() as counter:
            samples = self.sample_fn(self.config.n, seeded_generator(self.config.device, self.seed("sample")))
        samples = check_samples(samples, self.config.n, self.target.dim)
        return samples, nfe_record(counter, self.config.n, self.sampler, self.target)

    @functools.cached_property
    def timed_fn(self) -> SampleFn:
        """The sampling function latency is measured on: ``sample_fn``, through ``torch.compile`` when the run asks."""
        return torch.compile(self.sample_fn) if self.config.compile else self.sample_fn

    def timed_call(self, n: int | None = None) -> Callable[[], Any]:
        """The call every latency is measured on: ``n`` samples (default: the run's) from a freshly seeded generator.

        Runs in inference mode and the run's sampling precision (:meth:`RunConfig.sampling_precision`),
        through :attr:`timed_fn`; it does not synchronize the device (the timer does).  With
        ``config.cuda_graphs`` the call is captured here (:func:`bench.cuda_graphs.capture`) and
        replayed; a call that cannot be captured stays eager, and :attr:`graph_status` says why.
        """
        config, seed = self.config, self.seed("timing")
        n = config.n if n is None else n
        timed_fn = self.timed_fn
        if config.cuda_graphs:
            from bench.cuda_graphs import capture

            try:
                replay = capture(timed_fn, n, seed, config.device,
                                 lambda: config.sampling_precision(cache_enabled=False))
                self.graph_status[n] = "captured"
                return replay
            except Exception as exc:  # the sampler cannot be captured: time it eagerly, say why
                self.graph_status[n] = f"eager: {error_text(exc)}"

        def call() -> Any:
            with torch.inference_mode(), config.sampling_precision():
                return timed_fn(n, seeded_generator(config.device, seed))

        return call

    def metrics(self, samples: Tensor, data: TargetData) -> dict[str, float]:
        """Generic metrics (through the metric cache in ``config.cache_dir``) and target-specific ones of ``samples``.

        Raises:
            SampleError: If a metric is not finite.
        """
        metrics = cached_metrics(samples, data.reference, seed=self.seed("metrics"), directory=self.config.cache_dir)
        metrics.update(self.target.extra_metrics(samples, data.reference))
        bad_metrics = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad_metrics:
            raise SampleError(f"metrics {bad_metrics} are not finite")
        return metrics


def new_row(sampler_name: str, target_name: str, seed: int, registry: Registry, config: RunConfig) -> dict[str, Any]:
    """A result row of replicate ``seed`` before anything is measured (``status`` ``"ok"`` until something fails)."""
    return {
        "sampler": sampler_name,
        "target": target_name,
        "seed": seed,
        "source": registry.sampler_source(sampler_name),
        "status": "ok",
        "error": None,
        "n": config.n,
        "nfe": None,
        "nfe_split": None,
        "warnings": [],
        "latency_ms": None,
        "samples_per_s": None,
        "latency_by_n": None,
        "dtype": str(config.dtype).removeprefix("torch."),
        "timed_on": None,
        "timing_window": None,
        "timing_contention": None,
        "fit_seconds": None,
        "phase_seconds": None,
        "fit": {},
        "metrics": {},
    }


class TimingGate(Protocol):
    """When a pair may work: everything but the latency measurement is ``untimed``, the measurement ``timed``.

    An executor that runs pairs side by side passes a gate under which a ``timed``
    block runs alone on its machine (:class:`bench.executors.gate.NodeGate`); the
    in-process executor runs one thing at a time and needs none (:data:`NO_GATE`).
    """

    def untimed(self) -> ContextManager[None]: ...

    def timed(self) -> ContextManager[None]: ...


class _NoGate:
    def untimed(self) -> ContextManager[None]:
        return contextlib.nullcontext()

    def timed(self) -> ContextManager[None]:
        return contextlib.nullcontext()


#: The gate of a process that runs one pair at a time.
NO_GATE: TimingGate = _NoGate()


#: Fields of a ``latency_by_n`` entry that the row's ``latency_ms`` (a timing summary) leaves out.
BY_N_ONLY = ("samples_per_s", "peak_memory_mb", "cuda_graph")


def time_batch_sizes(
    call_at: Callable[[int], Callable[[], Any]],
    config: RunConfig,
    first_call_seconds: float,
    timer: Timer | None = None,
) -> dict[str, dict[str, Any]]:
    """Latency at each of ``config.batch_sizes``, smallest first: the row's ``latency_by_n``.

    A size other than the run's ``n`` is skipped when :func:`~bench.timing.predict_call_seconds`
    estimates its single call above ``config.latency_cap_s``; the estimate rests on the sizes timed
    so far and on the untimed fidelity call at ``n`` (``first_call_seconds``, an upper bound: it
    counted evaluations and may have paid one-time costs), so it needs no call at the size itself.
    ``n`` is never skipped: its fidelity sample was drawn already.  With ``config.compile`` each
    size is called once before its measurement, so compiling (one graph per shape) is never timed,
    even with ``warmup = 0``.  On CUDA each size records its peak allocated memory, the counter
    reset before the size's first call.

    Args:
        call_at: Batch size → the timed call at that size (:meth:`PairSession.timed_call`).
        config: The run's ``batch_sizes``, ``n``, ``latency_cap_s``, ``repeats``, ``warmup``, ``compile``,
            ``device`` and ``threads``.
        first_call_seconds: Seconds of the fidelity call at ``n``.
        timer: Default: :class:`~bench.timing.Timer` on the run's device with its threads.

    Returns:
        ``{str(size): entry}``: a timed entry is :meth:`~bench.timing.Timing.summary` (ms per call)
        plus ``samples_per_s`` (``size`` over the median) and, on CUDA, ``peak_memory_mb``; a skipped
        one is ``{"skipped": reason, "estimated_ms"}``; a size other than ``n`` whose call raised is
        ``{"failed": "<Type>: <message>"}``.

    Raises:
        Exception: Whatever the call at ``n`` raised (the row fails).
    """
    timer = timer if timer is not None else Timer(config.device, config.threads)
    known = {config.n: first_call_seconds}
    entries: dict[str, dict[str, Any]] = {}
    for size in config.batch_sizes:
        if size != config.n:
            estimate, basis = predict_call_seconds(size, known)
            if estimate > config.latency_cap_s:
                entries[str(size)] = {
                    "skipped": f"one call estimated at {estimate:.3g} s ({basis}) exceeds the cap of "
                               f"{config.latency_cap_s:g} s (--latency-cap-s)",
                    "estimated_ms": estimate * 1e3,
                }
                continue
        try:
            with peak_memory(config.device) as memory:
                call = call_at(size)  # a CUDA graph is captured here, outside the clock
                if config.compile:
                    call()  # compile for this shape and warm up, before the clock runs
                summary = timer.measure(call, repeats=config.repeats, warmup=config.warmup).summary()
        except Exception as exc:  # an extra size's failure (memory, say) leaves the row and its other sizes
            if size == config.n:
                raise
            entries[str(size)] = {"failed": error_text(exc)}
            continue
        known[size] = summary["median"] / 1e3
        throughput = size / known[size] if known[size] > 0 else None  # a clock too coarse for the call reads 0
        entries[str(size)] = {**summary, "samples_per_s": throughput, **memory}
    return entries


def run_pair(
    sampler_name: str,
    target: Target,
    data: TargetData,
    registry: Registry,
    cache: ModelCache,
    config: RunConfig,
    figure_samples: dict[str, np.ndarray],
    gate: TimingGate = NO_GATE,
) -> dict[str, Any]:
    """Fit, sample, measure one sampler on one target in replicate ``data.seed``; never raises for its faults.

    The latency at every batch size (:func:`time_batch_sizes`) is measured inside ``gate.timed()``,
    everything else inside ``gate.untimed()``; ``latency_ms`` and ``samples_per_s`` are those of the
    run's ``n``, ``latency_by_n`` holds every size's.  The row records where (``timed_on``:
    ``{"node": host name, "device_name"}``), when (``timing_window``: ``{"start", "end"}``, Unix
    seconds) and under what other load (``timing_contention``, :func:`bench.timing.cpu_contention`)
    it was timed, and where its wall-clock time went (``phase_seconds``: ``fit``, the counted
    fidelity ``sample`` call, ``latency`` (every batch size, warm-ups included) and ``metrics``, in seconds).
    """
    row = new_row(sampler_name, target.name, data.seed, registry, config)
    sampler = registry.sampler(sampler_name)
    try:
        with gate.untimed():
            sampler.check(target)
    except UnsupportedTarget as exc:
        return _failure(row, "skipped", exc)
    except Exception as exc:  # a broken check() is the sampler's fault, not the run's
        return _failure(row, "failed", exc)

    try:
        with gate.untimed():
            session = PairSession.fit(sampler, target, config, cache, data.seed)
            row["fit_seconds"] = session.fit_seconds
            row["fit"] = {"models": session.ctx.models, "artifacts": session.ctx.artifacts}
            started = time.perf_counter()
            samples, nfe_fields = session.sample_counted()
            first_call = time.perf_counter() - started
        row.update(nfe_fields)
        row["phase_seconds"] = phases = {"fit": session.fit_seconds, "sample": first_call}
        for warning in row["warnings"]:
            log.warning("%s on %s: %s", sampler_name, target.name, warning)
        with gate.timed(), cpu_contention() as contention:
            start = time.time()
            row["latency_by_n"] = time_batch_sizes(session.timed_call, config, first_call)
            row["timing_window"] = {"start": start, "end": time.time()}
        phases["latency"] = row["timing_window"]["end"] - start
        row["timing_contention"] = contention or None
        if contention.get("loaded"):
            log.warning("%s on %s: timed while other processes used %.1f CPUs on average; its latency may be "
                        "inflated (time on an idle machine)", sampler_name, target.name, contention["other_cpus"])
        for size, status in session.graph_status.items():
            row["latency_by_n"][str(size)]["cuda_graph"] = status
        row["timed_on"] = {"node": socket.gethostname(), "device_name": device_kind(config.device)}
        at_n = row["latency_by_n"][str(config.n)]
        row["latency_ms"] = {key: value for key, value in at_n.items() if key not in BY_N_ONLY}
        row["samples_per_s"] = at_n["samples_per_s"]
        with gate.untimed():
            started = time.perf_counter()
            row["metrics"] = session.metrics(samples, data)
            phases["metrics"] = time.perf_counter() - started
        figure_samples[sampler_name] = samples[: figure_points(target.dim)].numpy()
    except Exception as exc:  # one pair's failure must not stop the others
        return _failure(row, "failed", exc)
    return row


def metric_info(registry: Registry, target_names: list[str]) -> dict[str, dict[str, str]]:
    """Label and better-direction of every metric that can appear in the results."""
    specs = list(METRIC_SPECS)
    for name in target_names:
        specs.extend(registry.target(name).metric_specs)
    return {s.name: {"label": s.label, "better": s.better, "description": s.description} for s in specs}


#: One result row's place in the grid: ``(target, seed, sampler)``.
PairKey = tuple[str, int, str]


def grid(config: RunConfig) -> list[PairKey]:
    """Every pair of the run in the order the in-process executor visits them (per target: seed, then sampler)."""
    return [(target, seed, sampler)
            for target in config.targets for seed in config.seeds for sampler in config.samplers]


def target_floor(target: Target, config: RunConfig) -> dict[str, Any] | None:
    """:func:`noise_floor` of ``target`` from the base seed; ``None`` (and a warning) if the target cannot draw."""
    try:
        return noise_floor(target, config.n, config.seed, config.floor_pairs, config.cache_dir)
    except Exception:  # its reference sets will fail too, and say why in the rows
        log.warning("target %s has no noise floor:\n%s", target.name, traceback.format_exc())
        return None


def reference_set(target: Target, config: RunConfig, seed: int) -> TargetData | BaseException:
    """:func:`prepare_target`, or (with a warning) the exception that kept the target from drawing it."""
    try:
        return prepare_target(target, config, seed)
    except Exception as exc:  # a target that cannot draw its reference set fails its own rows, not the run
        log.warning("target %s cannot draw its reference set for seed %d:\n%s", target.name, seed,
                    traceback.format_exc())
        return exc


def pair_row(
    sampler_name: str,
    target: Target,
    seed: int,
    data: TargetData | BaseException,
    registry: Registry,
    cache: ModelCache,
    config: RunConfig,
    gate: TimingGate = NO_GATE,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The row of one (sampler, target, seed) pair and its figure points; what every executor runs per pair.

    Args:
        data: The replicate's reference set (:func:`reference_set`), or why there is none (the row then fails).

    Returns:
        The row and ``{"<target>/<sampler>": points}`` (plus ``"<target>/reference"``) when ``seed``
        is the run's first seed (the seed whose points the figures show), else ``{}``.
    """
    if isinstance(data, BaseException):
        row = new_row(sampler_name, target.name, seed, registry, config)
        row.update(status="failed", error=f"target {target.name!r} cannot draw its reference set: "
                                          f"{error_text(data)}")
        return row, {}
    pair_samples: dict[str, np.ndarray] = {}
    row = run_pair(sampler_name, target, data, registry, cache, config, pair_samples, gate)
    if seed != config.seeds[0]:
        return row, {}
    figures = {f"{target.name}/{name}": points for name, points in pair_samples.items()}
    figures[f"{target.name}/reference"] = data.reference[: figure_points(target.dim)].numpy()
    return row, figures


class ResultsWriter:
    """The results document of one run, rewritten atomically after every row.

    Rows are kept in grid order (:func:`grid`), whatever order they arrive in, and
    ``summary`` is rebuilt from them on every write, so an interrupted run leaves a
    complete document of the rows it finished, and a resumed or distributed run the
    same document as an uninterrupted in-process one.

    Args:
        results: The document (rows already kept by a resume included).
        config: The run's settings (the grid's order).
        out_dir: Where ``results.json`` and ``samples.npz`` go; ``None`` writes nothing.
        on_row: Called with each new row (progress display).
        figure_samples: Figure points already kept (by a resume).
    """

    def __init__(
        self,
        results: dict[str, Any],
        config: RunConfig,
        out_dir: Path | None,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        figure_samples: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.results, self.config, self.out_dir, self.on_row = results, config, out_dir, on_row
        self.figure_samples = dict(figure_samples or {})
        self._order = {key: index for index, key in enumerate(grid(config))}

    def add_floor(self, target_name: str, floor: dict[str, Any] | None) -> None:
        """Record a target's noise floor (``None``: it has none)."""
        if floor is not None:
            self.results["floors"][target_name] = floor

    def add_row(self, row: dict[str, Any], figures: dict[str, np.ndarray]) -> None:
        """Insert a finished row in grid order, rebuild the summary, write both files, report the row."""
        self.results["rows"].append(row)
        self.results["rows"].sort(
            key=lambda r: self._order.get((r["target"], r["seed"], r["sampler"]), len(self._order)))
        self.figure_samples.update(figures)
        self.write()
        if self.on_row is not None:
            self.on_row(row)

    def write(self) -> None:
        """Rebuild the summary; write ``results.json`` and ``samples.npz`` (if there is an output folder)."""
        self.results["summary"] = summarize(self.results["rows"], samplers=self.config.samplers,
                                            targets=self.config.targets)
        if self.out_dir is not None:
            write_results(self.results, self.out_dir)
            write_samples(self.figure_samples, self.out_dir)


class Executor(Protocol):
    """Runs a run's pairs and hands each finished row to a :class:`ResultsWriter`.

    Implementations: :class:`bench.executors.local.LocalExecutor` (in-process, the default) and
    :class:`bench.executors.ray.RayExecutor` (one Ray task per pair).  Both produce rows through
    :func:`pair_row`, so their fidelity metrics and NFE agree for the same seeds and threads.
    """

    name: str

    def check(self, config: RunConfig) -> None:
        """Refuse what this executor cannot run, before any work (raises :class:`UsageError`)."""

    def execute(self, config: RunConfig, registry: Registry, pairs: Sequence[PairKey], floors: Sequence[str],
                writer: ResultsWriter) -> None:
        """Run ``pairs`` (a sub-list of :func:`grid`) and the noise floors of ``floors`` into ``writer``."""


def new_results(config: RunConfig, registry: Registry) -> dict[str, Any]:
    """The results document of ``config`` before any row (schema :data:`bench.results.RESULTS_SCHEMA`)."""
    return {
        "schema": RESULTS_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(config.device, config.dtype),
        "config": config.to_json(),
        "metric_info": metric_info(registry, config.targets),
        "floors": {},
        "rows": [],
        "summary": [],
    }


def run(
    config: RunConfig,
    registry: Registry,
    out_dir: Path | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    *,
    executor: Executor | None = None,
    resume: bool = False,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Run every selected sampler on every selected target, once per replicate seed.

    Per target: its noise floor (:func:`noise_floor`, once, from the base seed); then per
    replicate seed: a reference set from that seed, then every sampler, fitted with that seed
    (its own cache entries) and sampled from the replicate's common random numbers
    (:meth:`PairSession.seed`).  Everything runs under :func:`run_settings` (threads, determinism).

    Args:
        config: What to run.
        registry: Where names are resolved.
        out_dir: If given, ``results.json`` and ``samples.npz`` (figure points of the first seed)
            are written there atomically after every row, so an interrupted run keeps what it finished.
        on_row: Called with each finished row (progress display).
        executor: Where the pairs run; default: in this process
            (:class:`bench.executors.local.LocalExecutor`).
        resume: Keep the rows of ``out_dir/results.json`` whose configuration matches
            (:func:`bench.results.resumable_rows`: ``ok`` and ``skipped`` rows, ``failed`` ones
            unless ``retry_failed``) and their floors and figure points; run only the other pairs.
            Without a ``results.json`` there the run starts afresh.
        retry_failed: With ``resume``, run the pairs of ``failed`` rows again.

    Returns:
        The results document (schema :data:`bench.results.RESULTS_SCHEMA`): ``schema``, ``created``,
        ``environment``, ``config``, ``metric_info``, ``floors`` (per target), ``rows`` (one per
        sampler, target and seed, in grid order) and ``summary`` (:func:`bench.results.summarize` of the rows).

    Raises:
        UsageError: A name that is unknown, listed twice or not available in its family
            (see :meth:`RunConfig.validate`), ``resume`` without ``out_dir`` or with an unreadable
            ``results.json``, or a run the executor refuses; all before any work.
    """
    from bench.executors.local import LocalExecutor

    config.validate(registry)
    executor = executor if executor is not None else LocalExecutor()
    executor.check(config)
    previous = previous_results(out_dir) if resume else None
    with run_settings(config):
        results = new_results(config, registry)
        figure_samples: dict[str, np.ndarray] = {}
        if previous is not None:
            results["rows"], results["floors"] = resumable_rows(previous, results, retry_failed)
            if (Path(out_dir) / "samples.npz").exists():
                figure_samples = kept_figure_samples(load_samples(out_dir), results["rows"], config.seeds[0])
        writer = ResultsWriter(results, config, out_dir, on_row, figure_samples)
        done = {(row["target"], row["seed"], row["sampler"]) for row in results["rows"]}
        pairs = [key for key in grid(config) if key not in done]
        floors = [name for name in config.targets if name not in results["floors"]]
        if previous is not None:
            log.warning("resuming %s: %d of %d rows kept, %d to run", out_dir, len(done), len(grid(config)),
                        len(pairs))
        executor.execute(config, registry, pairs, floors, writer)
        writer.write()  # also when nothing ran (a resumed finished run): the document takes this run's settings
    return results


def kept_figure_samples(
    samples: Mapping[str, np.ndarray], kept_rows: Sequence[Mapping[str, Any]], first_seed: int
) -> dict[str, np.ndarray]:
    """The figure points a resumed run keeps: each kept target's reference and its kept first-seed rows'.

    A pair that runs again (a retried failure, a row of another configuration) loses its old points,
    so a row that now fails shows none in the sample figure.

    Args:
        samples: ``samples.npz`` contents, keys ``"<target>/<sampler>"`` or ``"<target>/reference"``.
        kept_rows: The rows the resumed run keeps.
        first_seed: The seed whose points the figures draw.
    """
    kept = {(row["target"], row["sampler"]) for row in kept_rows if row.get("seed", 0) == first_seed}
    kept_targets = {target for target, _ in kept}

    def keep(key: str) -> bool:
        target, name = key.split("/", 1)
        return (target, name) in kept or (name == "reference" and target in kept_targets)

    return {key: points for key, points in samples.items() if keep(key)}


def previous_results(out_dir: Path | None) -> dict[str, Any] | None:
    """The results document a resumed run continues: ``out_dir/results.json``, or ``None`` if there is none.

    Raises:
        UsageError: No ``out_dir``, or a ``results.json`` that cannot be read (see
            :func:`bench.validation.load_results`).
    """
    from bench.validation import load_results

    if out_dir is None:
        raise UsageError("resume needs the folder of the run to continue; give --out DIR with --resume")
    if not (Path(out_dir) / "results.json").exists():
        return None
    return load_results(out_dir)[0]


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
