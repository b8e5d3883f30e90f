"""Every option and every name checked before any model is built.

Each check raises :class:`~bench.errors.UsageError` with one line, ``<what was
wrong>; <what is allowed>``, which the CLI prints as ``error: …`` with exit
status 2.  The CLI runs all of them before it builds a model (``--dry-run``
runs nothing else), and :class:`bench.runner.RunConfig` runs the same checks
on its fields, so the Python API gets the same errors.

A new run option is one entry in :data:`OPTION_CHECKS` (the ``argparse``
destination, which is also the ``RunConfig`` field, → its check); a check
takes the value and the label to name it by (``--n`` on the command line,
``n =`` for a ``RunConfig``) and returns the value to use.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn, Sequence

import torch

from bench.environment import resolve_device
from bench.errors import UsageError
from bench.profiles import PROFILES, Profile

if TYPE_CHECKING:
    from bench.registry import Registry

#: Fewest points per pair: the unbiased MMD² and energy distance (``i ≠ j`` sums,
#: :func:`bench.metrics.pairwise.check_pair`) and the unbiased covariance need two per sample.
MIN_N = 2

#: A check: ``(value, label) → value to use``; raises :class:`UsageError`.
Check = Callable[[Any, str], Any]


def fail(what: str, allowed: str) -> NoReturn:
    """Raise the one-line usage error ``"<what>; <allowed>"``."""
    raise UsageError(f"{what}; {allowed}")


def at_least(minimum: int, meaning: str) -> Check:
    """A check that its value is an integer ``≥ minimum``; ``meaning`` says what the number counts."""

    def check(value: Any, label: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{label} {value!r} is not an integer", f"give an integer ≥ {minimum} ({meaning})")
        if value < minimum:
            fail(f"{label} {value} is too small", f"{label.rstrip(' =')} must be ≥ {minimum} ({meaning})")
        return value

    return check


def check_seed(value: Any, label: str) -> int:
    """The seed, an integer (any sign).

    Raises:
        UsageError: Not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{label} {value!r} is not an integer", "give an integer seed")
    return value


def check_seeds(value: Any, label: str) -> int | list[int]:
    """The replicate seeds: a count ``K ≥ 1`` or an explicit list of distinct seeds ``≥ 0``.

    On the command line ``--seeds 3`` is a count (seeds ``S, S+1, S+2`` with
    ``S = --seed``) and ``--seeds 0,3,7`` a list (``--seeds 5,`` is the single seed 5).

    Args:
        value: The option's text, an ``int`` count or a sequence of ints.
        label: How to name the value in a message (``--seeds``, ``seeds =``).

    Returns:
        The count as an ``int`` or the seeds as a ``list[int]`` in the order given
        (:class:`bench.runner.RunConfig` expands a count from its ``seed``).

    Raises:
        UsageError: Not a count or a list of integers, a count below 1, an empty, negative
            or repeated seed.
    """
    allowed = "give a count K ≥ 1 (seeds S…S+K−1, S = --seed) or distinct seeds ≥ 0 separated by commas (0,3,7)"
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            try:
                value = int(text)
            except ValueError:
                fail(f"{label} {value!r} is neither a count nor a list of seeds", allowed)
        else:
            items = [item.strip() for item in text.split(",")]
            if items[-1] == "":  # "5," is the one seed 5
                items.pop()
            if not items or not all(re.fullmatch(r"[+-]?\d+", item) for item in items):
                fail(f"{label} {value!r} is not a list of integer seeds", allowed)
            value = [int(item) for item in items]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            fail(f"{label} {value} is not a count of seeds", allowed)
        return value
    if not isinstance(value, (list, tuple)) or not value:
        fail(f"{label} {value!r} is neither a count nor a list of seeds", allowed)
    _check_distinct_integers(value, label, "seed", 0, "the negative seed {}", allowed)
    return list(value)


def _check_distinct_integers(
    values: Sequence[Any], label: str, noun: str, minimum: int, too_small: str, allowed: str
) -> None:
    """Fail on the first of ``values`` that is not an integer ``≥ minimum``, then on one listed twice.

    Args:
        values: The items to check.
        label: How to name the option in a message.
        noun: What one item is (``"seed"``, ``"batch size"``).
        minimum: The smallest allowed value.
        too_small: The message's words for an item below ``minimum``, ``{}`` standing for it.
        allowed: What is allowed, the message's second half.

    Raises:
        UsageError: As :func:`fail`.
    """
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int):
            fail(f"{label} holds {item!r}, which is not an integer {noun}", allowed)
        if item < minimum:
            fail(f"{label} holds {too_small.format(item)}", allowed)
    repeated = sorted({item for item in values if list(values).count(item) > 1})
    if repeated:
        fail(f"{label} lists {noun} {repeated[0]} twice", allowed)


def check_batch_sizes(value: Any, label: str) -> list[int]:
    """The batch sizes latency is timed at: distinct integers ``≥ 1``, returned in ascending order.

    Args:
        value: The option's text (``"1,100,10000"``) or a sequence of ints.
        label: How to name the value in a message (``--batch-sizes``, ``batch_sizes =``).

    Raises:
        UsageError: Empty, not integers, a size below 1, or a size listed twice.
    """
    allowed = "give distinct batch sizes ≥ 1 separated by commas (1,100,10000)"
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        if not all(re.fullmatch(r"[+-]?\d+", item) for item in items):
            fail(f"{label} {value!r} is not a list of integer batch sizes", allowed)
        value = [int(item) for item in items]
    if not isinstance(value, (list, tuple)) or not value:
        fail(f"{label} {value!r} is not a list of batch sizes", allowed)
    _check_distinct_integers(value, label, "batch size", 1, "the batch size {}", allowed)
    return sorted(value)


def check_positive_seconds(value: Any, label: str) -> float:
    """A duration in seconds, a finite number ``> 0``.

    Raises:
        UsageError: Anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        fail(f"{label} {value!r} is not a positive number of seconds", "give seconds > 0, e.g. 30")
    return float(value)


def check_device(value: Any, label: str) -> torch.device:
    """The device named by ``value`` (``auto``, ``cpu``, ``cuda[:N]``, ``mps`` or a ``torch.device``).

    Raises:
        UsageError: Not a device this machine has (the message lists those it has).
    """
    return resolve_device(value, label)


#: The ``--dtype`` names.
DTYPES = ("float32", "bfloat16", "float16", "float64")


def check_dtype(value: Any, label: str) -> torch.dtype:
    """The sampling dtype: a floating-point ``torch.dtype``, or one of :data:`DTYPES` by name.

    Raises:
        UsageError: Anything else.
    """
    if isinstance(value, str) and value in DTYPES:
        value = getattr(torch, value)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        fail(f"{label} {value!r} is not a floating-point torch dtype", "use e.g. torch.float32 or torch.float64")
    return value


def check_profile(value: Any, label: str) -> Profile:
    """The budget profile, given as a :class:`~bench.profiles.Profile` or by name.

    Raises:
        UsageError: An unknown name (the message lists the profiles).
    """
    if isinstance(value, Profile):
        return value
    if isinstance(value, str) and value in PROFILES:
        return PROFILES[value]
    fail(f"{label} {value!r} is not a profile", f"choose one of {', '.join(PROFILES)}")


#: Checks of the run options, keyed by ``argparse`` destination (= ``RunConfig`` field).
OPTION_CHECKS: dict[str, Check] = {
    "n": at_least(MIN_N, "generated and held-out points per pair; the unbiased MMD² needs two"),
    "repeats": at_least(1, "timed calls per pair"),
    "warmup": at_least(0, "untimed calls before timing"),
    "seed": check_seed,
    "seeds": check_seeds,
    "device": check_device,
    "threads": at_least(1, "torch threads for training and sampling"),
    "floor_pairs": at_least(2, "pairs of exact target draw sets behind each metric's noise floor; a spread needs two"),
    "batch_sizes": check_batch_sizes,
    "latency_cap_s": check_positive_seconds,
}
#: Checks of :class:`bench.runner.RunConfig` fields: the options' plus fields the CLI sets itself.
CONFIG_CHECKS: dict[str, Check] = {**OPTION_CHECKS, "profile": check_profile, "dtype": check_dtype}


def check_options(options: Any, checks: Mapping[str, Check] = OPTION_CHECKS) -> None:
    """Run every check whose option ``options`` (an ``argparse.Namespace``) has and is set.

    Raises:
        UsageError: The first option that breaks its rule, named by its flag (``--n``).
    """
    for dest, check in checks.items():
        value = getattr(options, dest, None)
        if value is not None:
            check(value, "--" + dest.replace("_", "-"))


def parse_names(value: str | None, option: str) -> list[str] | None:
    """The comma-separated names of ``option``; ``None`` when the option was not given.

    Raises:
        UsageError: Given but naming nothing (``''``, ``','``, ``' '``).
    """
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        fail(f"{option} {value!r} names nothing",
             f"give comma-separated names (pingsbench list shows them) or leave {option} out for the defaults")
    return names


def select_samplers(names: Sequence[str] | None, registry: "Registry", sweep: bool) -> list[str]:
    """Expand a selection into concrete sampler names (each once, in order).

    A family's pattern as ``pingsbench list`` prints it (``'ddim-<steps>[+uniform|+logsnr|+karras|+ld3][@exact|@paper-eps|@silu]'``)
    stands for its ``sweep`` names under ``sweep``, for its ``defaults`` otherwise;
    ``None`` selects every family's (and concrete sampler's) sweep or defaults.
    """
    if names is None:
        return registry.sweep_samplers() if sweep else registry.default_samplers()
    selected: list[str] = []
    for name in names:
        family = registry.families.get(name)
        expanded = [name] if family is None else list(family.obj.sweep if sweep else family.obj.defaults)
        selected.extend(n for n in expanded if n not in selected)
    return selected


def select_targets(names: Sequence[str] | None, registry: "Registry") -> list[str]:
    """Expand a ``--targets`` selection into target names (each once, in order).

    ``None`` selects the default targets (:meth:`~bench.registry.Registry.default_targets`),
    ``all`` every concrete target and every target family's defaults, and a family's
    pattern as ``pingsbench list`` prints it (``'gmm-<d>'``) that family's defaults.
    """
    from bench.registry import ALL_TARGETS

    if names is None:
        return registry.default_targets()
    selected: list[str] = []
    for name in names:
        family = registry.target_families.get(name)
        if name == ALL_TARGETS:
            expanded = registry.all_targets()
        else:
            expanded = [name] if family is None else list(family.obj.defaults)
        selected.extend(n for n in expanded if n not in selected)
    return selected


def check_run_names(samplers: Sequence[str], targets: Sequence[str], registry: "Registry") -> None:
    """Every sampler and target name is registered, listed once, and (for families) buildable.

    Raises:
        UsageError: An empty or repeated selection, or a family value the family does not take.
        UnknownNameError: A name nobody registered (the message lists those registered).
        PluginError: A name two families claim, or a family whose ``build`` is broken.
    """
    for kind, names, resolve in (("target", targets, registry.target), ("sampler", samplers, registry.sampler)):
        if not names:
            fail(f"no {kind}s selected", f"give at least one {kind} name (pingsbench list shows them)")
        seen: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                fail(f"{kind} name {name!r} is not a string", f"give {kind} names as strings")
            if name in seen:
                fail(f"{kind} {name!r} is selected twice", "list each name once")
            seen.add(name)
            resolve(name)


def _nearest_existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def check_out_dir(path: str | Path, label: str = "--out", *, create: bool = True) -> Path:
    """The output folder, checked up front: not a file, and writable.

    Args:
        path: The folder (created with its parents when ``create``).
        label: How to name it in the message.
        create: Create the folder and write a temporary file in it; otherwise
            only probe its nearest existing ancestor (``--dry-run`` leaves no trace).

    Raises:
        UsageError: The path is a file, lies under a file, or cannot be written.
    """
    if str(path) == "":
        fail(f"{label} is empty", "give a folder (created if missing)")
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is an existing file" if existing == path else f"lies under the file {existing}"
        fail(f"{label} {path} {where}", "give a folder (created if missing)")
    probe = path if create else existing
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        fail(f"{label} {path} cannot be written ({exc.strerror or exc})", "give a folder you can write to")
    return path


def check_cache_dir(value: str | None, no_cache: bool) -> Path | None:
    """The model-cache folder, or ``None`` for ``--no-cache``.

    A folder that cannot be written is not an error: the cache then keeps
    models in memory for the run and warns once.

    Raises:
        UsageError: ``--cache-dir`` is empty or given together with ``--no-cache``.
    """
    from bench.cache import default_cache_dir

    if value is not None and no_cache:
        fail("--cache-dir and --no-cache contradict each other", "give one of them")
    if no_cache:
        return None
    if value == "":
        fail("--cache-dir is empty", "give a folder, or leave the option out for the user cache dir")
    return Path(value) if value is not None else default_cache_dir()


#: What ``pingsbench report`` reads from a results document (any schema :func:`bench.results.upgrade` reads).
RESULTS_OBJECTS = ("environment", "config", "metric_info")
ROW_STRINGS = ("sampler", "target", "status")


def load_results(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a results document for ``pingsbench report`` and check what rendering it needs.

    Args:
        path: ``results.json``, or the folder holding it.

    Returns:
        The document as a version-2 document (:func:`bench.results.upgrade`: a version-1
        document gains ``seeds``, ``floors``; the summary is rebuilt from the rows), and the
        folder its report goes into.

    Raises:
        UsageError: Missing, unreadable, not JSON (e.g. truncated), another schema,
            or lacking ``rows`` or another part the report needs.
    """
    from bench.results import LEGACY_SCHEMAS, RESULTS_SCHEMA, upgrade

    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    allowed = (f"give a results.json written by pingsbench run (schema {RESULTS_SCHEMA}, "
               f"or {', '.join(LEGACY_SCHEMAS)} of earlier versions)")
    if not path.exists():
        fail(f"results file {path} does not exist", allowed)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON, perhaps truncated ({exc.msg} at line {exc.lineno} column {exc.colno})",
             allowed)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc})", allowed)
    if not isinstance(results, dict) or results.get("schema") not in (RESULTS_SCHEMA, *LEGACY_SCHEMAS):
        found = f"schema {results.get('schema')!r}" if isinstance(results, dict) else f"a JSON {type(results).__name__}"
        fail(f"{path} is not a {RESULTS_SCHEMA} document (it holds {found})", allowed)
    if not isinstance(results.get("rows"), list):
        fail(f"{path} has no 'rows' list", allowed)
    missing = [key for key in RESULTS_OBJECTS if not isinstance(results.get(key), dict)]
    if missing:
        fail(f"{path} has no {missing[0]!r} object", allowed)
    for index, row in enumerate(results["rows"]):
        if not isinstance(row, dict) or not all(isinstance(row.get(key), str) for key in ROW_STRINGS):
            fail(f"{path}: row {index} lacks one of {', '.join(ROW_STRINGS)}", allowed)
        if row["status"] == "ok" and not (isinstance(row.get("latency_ms"), dict) and "median" in row["latency_ms"]
                                          and isinstance(row.get("metrics"), dict)):
            fail(f"{path}: ok row {index} ({row['sampler']} on {row['target']}) lacks latency_ms or metrics", allowed)
    return upgrade(results), path.parent
