"""The results document: rows per replicate seed, and the summary rebuilt from them.

Schema ``pingsbench.results/2`` (``results.json``):

* ``config.seeds`` – the replicate seeds; ``rows`` – one per (sampler, target,
  seed), each with its ``seed``;
* ``floors`` – per target, every metric between independent pairs of exact
  target draw sets (mean, standard deviation, values);
* ``summary`` – one entry per (sampler, target): each metric's and the
  latency's mean over the replicates with a 95 % Student-t interval.  It is a
  function of the rows alone (:func:`summarize`), rebuilt on every write and
  by ``pingsbench report``, so rows may arrive in any order (a resumed or
  distributed run needs nothing special).

:func:`upgrade` reads version-1 documents (one seed, a per-row MMD² floor)
into this shape; :func:`merge` joins the documents of several runs (a study run
in pieces) into one, with ``sources`` naming each run; :func:`compare_with_best`
says which rows of a target are statistically indistinguishable from its best one.
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

from bench.contracts import REFERENCE_SAMPLER
from bench.errors import UsageError
from bench.stats import holm, paired_t_pvalue, t_interval

RESULTS_SCHEMA = "pingsbench.results/2"
#: Earlier schemas :func:`upgrade` still reads.
LEGACY_SCHEMAS = ("pingsbench.results/1",)
#: Coverage of every interval in the summary.
CONFIDENCE = 0.95
#: Family-wise significance level of the comparisons with the best row.
ALPHA = 0.05
#: Metrics whose ideal value is a chance level, not an end of the scale: C2ST accuracy is 0.5 for a
#: perfect sampler, and an accuracy below 0.5 is noise, not better-than-perfect.  Rows are compared by
#: their distance to it.
CHANCE_LEVELS = {"c2st": 0.5}
#: With one seed, a row is tied with the best when their difference is within this many
#: standard deviations of the metric between exact draw sets (the floor's spread).
FLOOR_SPREADS = 2.0

Row = Mapping[str, Any]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def interval(seeds: Sequence[int], values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % Student-t interval of one quantity over replicates.

    Args:
        seeds: The replicate seed of each value.
        values: One finite value per replicate, ``K ≥ 1``.

    Returns:
        ``{"mean", "ci_low", "ci_high", "seeds", "values"}``; the bounds are ``None`` when ``K = 1``.
    """
    mean, low, high = t_interval(values, CONFIDENCE)
    return {"mean": mean, "ci_low": low, "ci_high": high, "seeds": list(seeds), "values": list(values)}


def _training_seconds(row: Row) -> Optional[float]:
    models = (row.get("fit") or {}).get("models")
    if models is None:
        return None
    return float(sum(model.get("train_seconds", 0.0) for model in models))


def _ordered(names: Iterable[str], preferred: Optional[Sequence[str]]) -> list[str]:
    """``names`` in the order of ``preferred`` (the run's configuration), the rest sorted after them."""
    names = set(names)
    first = [name for name in dict.fromkeys(preferred or ()) if name in names]
    return first + sorted(names - set(first))


def summarize(
    rows: Iterable[Row], samplers: Optional[Sequence[str]] = None, targets: Optional[Sequence[str]] = None
) -> list[dict[str, Any]]:
    """One summary entry per (sampler, target), from the rows alone.

    The result does not depend on the order of ``rows``: replicates are sorted
    by seed and entries follow ``targets`` then ``samplers`` (names not listed
    come after, sorted).  Only ``ok`` rows enter the statistics; a value that is
    missing or not finite (``null`` in JSON) leaves its replicate out of that
    metric, which is why each metric lists its own ``seeds``.

    Args:
        rows: Result rows, each with ``sampler``, ``target``, ``seed`` and ``status``
            (and, when ok, ``metrics``, ``latency_ms``, ``nfe``).
        samplers: Sampler order of the run's configuration.
        targets: Target order of the run's configuration.

    Returns:
        Entries ``{"sampler", "target", "seeds", "ok_seeds", "status", "errors", "nfe", "nfe_split",
        "warnings", "train_seconds", "metrics": {name: interval}, "latency_ms": interval,
        "latency_by_n": {size: interval} or None}`` where an interval is what :func:`interval`
        returns (``latency_ms`` over each replicate's median latency in ms; ``latency_by_n`` the same
        per batch size a row timed, as a string, ascending); ``status`` is ``"ok"`` when every replicate is,
        else the first failing replicate's status; ``nfe`` and each part of ``nfe_split``
        (``network``, ``oracle``) are means over the ok replicates; ``errors`` maps the seed (as a
        string) of each replicate that is not ok to its reason.

    Raises:
        UsageError: A row's seed is not an integer, or two rows share sampler, target and seed.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    seen: set[tuple[str, str, Any]] = set()
    for row in rows:
        seed = row.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"the row of {row['sampler']} on {row['target']} has seed {seed!r}; "
                             f"every row needs an integer seed")
        if (row["target"], row["sampler"], seed) in seen:
            raise UsageError(f"the results hold two rows of {row['sampler']} on {row['target']} with seed {seed}; "
                             f"keep one row per sampler, target and seed")
        seen.add((row["target"], row["sampler"], seed))
        groups.setdefault((row["target"], row["sampler"]), []).append(row)
    entries = []
    for target in _ordered((t for t, _ in groups), targets):
        for sampler in _ordered((s for t, s in groups if t == target), samplers):
            replicates = sorted(groups[(target, sampler)], key=lambda row: row.get("seed", 0))
            entries.append(_entry(sampler, target, replicates))
    return entries


def _entry(sampler: str, target: str, replicates: list[Row]) -> dict[str, Any]:
    ok = [row for row in replicates if row["status"] == "ok"]
    failing = [row for row in replicates if row["status"] != "ok"]

    def over_ok(read) -> Optional[dict[str, Any]]:
        pairs = [(row.get("seed", 0), read(row)) for row in ok]
        pairs = [(seed, value) for seed, value in pairs if _number(value)]
        return interval([s for s, _ in pairs], [float(v) for _, v in pairs]) if pairs else None

    metric_names = dict.fromkeys(name for row in ok for name in (row.get("metrics") or {}))
    metrics = {name: over_ok(lambda row, name=name: (row.get("metrics") or {}).get(name)) for name in metric_names}
    nfe = [row["nfe"] for row in ok if _number(row.get("nfe"))]
    splits = [row["nfe_split"] for row in ok if isinstance(row.get("nfe_split"), Mapping)]
    parts = dict.fromkeys(part for split in splits for part in split)
    train = [t for t in map(_training_seconds, ok) if t is not None]
    sizes = sorted({size for row in ok for size in row.get("latency_by_n") or {}}, key=int)
    return {
        "sampler": sampler,
        "target": target,
        "seeds": [row.get("seed", 0) for row in replicates],
        "ok_seeds": [row.get("seed", 0) for row in ok],
        "status": failing[0]["status"] if failing else "ok",
        "errors": {str(row.get("seed", 0)): row.get("error") for row in failing},
        "nfe": sum(nfe) / len(nfe) if nfe else None,
        "nfe_split": {part: sum(split.get(part, 0.0) for split in splits) / len(splits) for part in parts} or None,
        "warnings": list(dict.fromkeys(w for row in ok for w in row.get("warnings") or [])),
        "train_seconds": sum(train) / len(train) if train else None,
        "metrics": {name: value for name, value in metrics.items() if value is not None},
        "latency_ms": over_ok(lambda row: (row.get("latency_ms") or {}).get("median")),
        "latency_by_n": {size: value for size in sizes
                         if (value := over_ok(lambda row, size=size: _timed_median(row, size))) is not None} or None,
    }


def _timed_median(row: Row, size: str) -> Optional[float]:
    """The median ms per call of a row at batch size ``size`` (a key of ``latency_by_n``); ``None`` if not timed."""
    return ((row.get("latency_by_n") or {}).get(size) or {}).get("median")


def upgrade(results: Mapping[str, Any]) -> dict[str, Any]:
    """A results document of any readable schema as a version-2 document, summary rebuilt.

    A version-1 document (one seed; each row's ``metrics["mmd2_floor"]`` from one
    pair of draw sets) becomes: ``config.seeds = [config.seed]``, every row's
    ``seed = config.seed``, ``config.independent_noise = True`` (version 1 drew
    each pair's noise from its own stream), and per target a ``floors`` entry
    holding that one MMD² floor value with ``std = None``; ``upgraded_from``
    names the old schema.  The input is not modified.

    Raises:
        UsageError: The document's ``schema`` is neither version 2 nor a legacy one.
    """
    schema = results.get("schema")
    if schema != RESULTS_SCHEMA and schema not in LEGACY_SCHEMAS:
        raise UsageError(f"results schema {schema!r} is not readable; give a document of schema "
                         f"{RESULTS_SCHEMA} or {', '.join(LEGACY_SCHEMAS)}")
    document = copy.deepcopy(dict(results))
    config = document.setdefault("config", {})
    if schema in LEGACY_SCHEMAS:
        seed = config.get("seed", 0)
        config.setdefault("seeds", [seed])
        config.setdefault("independent_noise", True)
        floors: dict[str, Any] = {}
        for row in document["rows"]:
            row.setdefault("seed", seed)
            value = (row.get("metrics") or {}).pop("mmd2_floor", None)
            if _number(value) and row["target"] not in floors:
                floors[row["target"]] = {
                    "pairs": 1, "n": row.get("n"), "seed": seed,
                    "metrics": {"mmd2": {"mean": value, "std": None, "values": [value]}},
                }
        document["floors"] = floors
        document["upgraded_from"] = schema
        document["schema"] = RESULTS_SCHEMA
    document.setdefault("floors", {})
    document["summary"] = summarize(document["rows"], config.get("samplers"), config.get("targets"))
    return document


def _mean(entry: Row, metric: str, chance: Optional[float] = None) -> Optional[float]:
    value = (entry.get("metrics") or {}).get(metric)
    if not value:
        return None
    return value["mean"] if chance is None else sum(abs(v - chance) for v in value["values"]) / len(value["values"])


def _by_seed(entry: Row, metric: str, chance: Optional[float]) -> dict[int, float]:
    """Seed → value of ``metric`` (its distance to ``chance`` when given)."""
    values = entry["metrics"][metric]
    return {seed: v if chance is None else abs(v - chance) for seed, v in zip(values["seeds"], values["values"])}


def compare_with_best(
    entries: Iterable[Row],
    metric: str,
    better: str = "lower",
    floor: Optional[Mapping[str, Any]] = None,
    alpha: float = ALPHA,
    chance: Optional[float] = None,
) -> dict[str, Any]:
    """Which of one target's rows are statistically indistinguishable from its best row on ``metric``.

    The best row has the best mean (``target-draws`` does not compete).  A row
    sharing ≥ 2 replicate seeds with the best is compared by a paired t-test
    over those seeds (:func:`bench.stats.paired_t_pvalue`; with common random
    numbers replicate ``i`` of every row shares its reference set and noise),
    Holm-corrected over all rows so compared (:func:`bench.stats.holm`); it is
    tied when the adjusted p-value is ``≥ alpha``.  A row with fewer shared
    seeds (a one-seed run) is tied when its difference from the best is within
    :data:`FLOOR_SPREADS` standard deviations of the metric between exact draw
    sets (``floor["std"]``), or, for MMD², when both rows pass the permutation
    test against the target (``mmd2_pvalue ≥ alpha``): neither is then
    distinguishable from exact draws.  With ``chance`` (C2ST's 0.5, see
    :data:`CHANCE_LEVELS`) every value is replaced by its distance to it, per seed,
    before anything is compared, so the best row is the one closest to chance.

    Args:
        entries: One target's :func:`summarize` entries (rows without the metric are ignored).
        metric: Metric key, e.g. ``"mmd2"`` or ``"c2st"``.
        better: ``"lower"`` or ``"higher"``.
        floor: The target's floor of this metric, ``{"mean", "std", ...}``, or ``None``.
        alpha: Family-wise significance level.
        chance: The metric's chance level, or ``None`` to compare raw values.

    Returns:
        ``{"best": name or None, "method": one line naming the test(s) used,
        "tied": {name: bool}, "p": {name: Holm-adjusted p-value or None}}``;
        the best row is tied with itself (``p`` ``None``).

    Raises:
        UsageError: ``better`` is not ``"lower"`` or ``"higher"``.
    """
    if better not in ("lower", "higher"):
        raise UsageError(f"better = {better!r} is not a direction; use 'lower' or 'higher'")
    sign = 1.0 if better == "lower" or chance is not None else -1.0
    rows = {e["sampler"]: e for e in entries if e["sampler"] != REFERENCE_SAMPLER and _mean(e, metric) is not None}
    if not rows:
        return {"best": None, "method": "", "tied": {}, "p": {}}
    best = min(rows, key=lambda name: sign * _mean(rows[name], metric, chance))
    best_values = _by_seed(rows[best], metric, chance)

    paired, by_floor = {}, []
    for name, entry in rows.items():
        if name == best:
            continue
        values = _by_seed(entry, metric, chance)
        common = sorted(set(values) & set(best_values))
        if len(common) >= 2:
            paired[name] = paired_t_pvalue([values[s] for s in common], [best_values[s] for s in common])
        else:
            by_floor.append(name)
    adjusted = dict(zip(paired, holm(list(paired.values()))))
    tied = {name: True if name == best else adjusted[name] >= alpha if name in adjusted else False for name in rows}

    spread = (floor or {}).get("std")
    best_p = _mean(rows[best], "mmd2_pvalue")
    for name in by_floor:
        difference = abs(_mean(rows[name], metric, chance) - _mean(rows[best], metric, chance))
        within = difference <= FLOOR_SPREADS * spread if _number(spread) else difference == 0.0
        row_p = _mean(rows[name], "mmd2_pvalue")
        both_pass = metric == "mmd2" and _number(best_p) and _number(row_p) and min(best_p, row_p) >= alpha
        tied[name] = bool(within or both_pass)

    methods = []
    if paired:
        shared = sorted({len(set(rows[name]["metrics"][metric]["seeds"]) & set(best_values)) for name in paired})
        seeds = str(shared[0]) if len(shared) == 1 else f"{shared[0]}–{shared[-1]}"
        methods.append(f"paired t-test against the best row over the {seeds} replicate seeds each row shares "
                       f"with it, Holm-corrected over {len(paired)} rows, α = {alpha:g}")
    if by_floor:
        rule = (f"one seed: tied when within {FLOOR_SPREADS:g} standard deviations of the floor "
                f"({floor.get('pairs', '?')} pairs of exact draw sets)" if _number(spread)
                else "one seed and no floor spread: only identical values are tied")
        if metric == "mmd2":
            rule += f", or when both rows pass the MMD² permutation test (p ≥ {alpha:g})"
        methods.append(rule)
    return {
        "best": best,
        "method": "; ".join(methods),
        "tied": {name: tied[name] for name in rows},
        "p": {name: adjusted.get(name) for name in rows},
    }


#: Run settings that must agree for rows of several runs to share one leaderboard (:func:`merge`):
#: the training budget (``profile``); the sample size every metric and floor depends on (``n``);
#: the numerics (``dtype``, ``device`` type, ``threads``: trained weights and float sums depend on
#: them, ``deterministic``); how latency is measured (``repeats``, ``warmup``, ``optimizations``
#: such as ``torch.compile``, the ``timing`` method: absent before timed blocks of calls); whether
#: the rows of a seed are paired (``independent_noise``); and how each floor and its spread, the
#: one-seed tie rule's yardstick, is estimated (``floor_pairs``).
COMPARABLE_SETTINGS = (
    "profile", "n", "dtype", "device", "threads", "deterministic", "repeats", "warmup", "optimizations",
    "timing", "independent_noise", "floor_pairs",
)
#: Settings :func:`merge` takes the union of, in first-seen order (the rest of ``config`` is recorded only).
UNION_SETTINGS = ("samplers", "targets", "seeds")


def _setting(config: Mapping[str, Any], key: str) -> Any:
    """A comparable setting as it is compared: a device by its type (``cuda:0`` and ``cuda:1`` agree)."""
    value = config.get(key)
    return value.split(":")[0] if key == "device" and isinstance(value, str) else value


def merge(documents: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """One results document from several runs' documents, so a long study can be run in pieces.

    Each input is first read through :func:`upgrade`.  Rules:

    * ``rows`` are concatenated in input order; each gains ``merged_from``, the index of
      its run in ``sources``.  A (sampler, target, seed) present in two inputs is refused:
      the rows would be two measurements of one replicate.
    * The settings in :data:`COMPARABLE_SETTINGS` must be equal in every input (a device
      is compared by its type); a missing setting counts as its own value, "not recorded".
    * ``samplers``, ``targets`` and ``seeds`` are unions in first-seen order; ``seed`` is the
      first of the merged seeds.  Every other ``config`` key (``cache_dir``, …) is kept when
      all inputs agree on it and left out otherwise; each run's own ``config`` stays in ``sources``.
    * ``floors``: a target's floor comes from the first input that has one.  Another input's
      floor of that target drawn from the same seed must be identical: the same seed giving
      other exact draws means another target version, ``n`` or machine, whose rows would not
      be paired with the first's.  A floor drawn from another seed is left out, as a single
      run over all the merged seeds draws its floor once, from its first seed.
    * ``metric_info`` is the union (first description of a metric wins).
    * ``environment`` is the first input's; ``sources`` lists every run (``path``, ``created``,
      ``environment``, ``config``, its ``targets``, ``seeds`` and ``rows`` count), and
      ``sources_differ`` names the environment keys whose values differ between runs (empty
      when every run recorded the same environment), so the report can say so.
    * ``summary`` is rebuilt from the merged rows (:func:`summarize`).

    A merged document merges again: its own ``sources`` are carried over, flattened.

    Args:
        documents: Results documents (schema ``pingsbench.results/2`` or a legacy one), ≥ 1.
        sources: Where each document came from (its ``results.json`` path), same length.

    Returns:
        A ``pingsbench.results/2`` document with ``sources`` and ``sources_differ`` added.

    Raises:
        ValueError: ``documents`` is empty or its length differs from ``sources``' (a programming error).
        UsageError: An unreadable schema, a (sampler, target, seed) in two inputs, a comparable
            setting that differs (naming the key and each input's value), or one target's floors
            from the same seed that differ.
    """
    if not documents or len(documents) != len(sources):
        raise ValueError(f"merge needs one source per document and ≥ 1 document, got {len(documents)} documents "
                         f"and {len(sources)} sources")
    upgraded = [upgrade(document) for document in documents]
    first = upgraded[0]

    for key in COMPARABLE_SETTINGS:
        values = [_setting(document["config"], key) for document in upgraded]
        if any(value != values[0] for value in values):
            listed = "; ".join(f"{source}: {json_text(document['config'].get(key))}"
                               for source, document in zip(sources, upgraded))
            raise UsageError(f"the runs differ in the setting {key!r} ({listed}), so their rows are not comparable; "
                             f"merge only runs with equal {', '.join(COMPARABLE_SETTINGS)}")

    where: dict[tuple[str, str, Any], str] = {}
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for document, source in zip(upgraded, sources):
        nested = document.get("sources") or [None]  # a merged input brings its own runs
        offset = len(runs)
        for index, run in enumerate(nested):
            own = [row for row in document["rows"] if row.get("merged_from", 0) == index]
            runs.append(_source_record(document, source, own) if run is None else dict(run))
        for row in document["rows"]:
            key = (row["sampler"], row["target"], row.get("seed", 0))
            if key in where:
                raise UsageError(f"{key[0]} on {key[1]} with seed {key[2]} is in both {where[key]} and {source}; "
                                 f"merge runs whose (sampler, target, seed) rows do not overlap")
            where[key] = source
            rows.append({**row, "merged_from": offset + row.get("merged_from", 0)})

    config = {key: value for key, value in first["config"].items()
              if key in COMPARABLE_SETTINGS
              or all(document["config"].get(key, _MISSING) == value for document in upgraded)}
    for key in UNION_SETTINGS:
        config[key] = list(dict.fromkeys(item for document in upgraded for item in _listed(document["config"], key)))
    config["seed"] = config["seeds"][0] if config["seeds"] else first["config"].get("seed", 0)

    floors: dict[str, Any] = {}
    floor_source: dict[str, str] = {}
    for document, source in zip(upgraded, sources):
        for target, floor in (document.get("floors") or {}).items():
            if target not in floors:
                floors[target], floor_source[target] = floor, source
            elif floor.get("seed") == floors[target].get("seed") and floor != floors[target]:
                raise UsageError(f"the noise floors of {target} from seed {floor.get('seed')} differ between "
                                 f"{floor_source[target]} and {source}: the same seed drew other exact samples "
                                 f"(another target version, n or machine), so their rows are not paired; "
                                 f"merge runs whose shared targets give equal floors")

    metric_info: dict[str, Any] = {}
    for document in upgraded:
        for name, meta in (document.get("metric_info") or {}).items():
            metric_info.setdefault(name, meta)

    environments = [run.get("environment") or {} for run in runs]
    differ = [key for key in dict.fromkeys(k for env in environments for k in env)
              if len({json_text(env.get(key)) for env in environments}) > 1]
    return {
        "schema": RESULTS_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": copy.deepcopy(first["environment"]),
        "config": config,
        "metric_info": metric_info,
        "floors": floors,
        "rows": rows,
        "summary": summarize(rows, config["samplers"], config["targets"]),
        "sources": runs,
        "sources_differ": differ,
    }


_MISSING = object()


def _listed(config: Mapping[str, Any], key: str) -> list[Any]:
    value = config.get(key)
    if key == "seeds" and not value:
        return [config.get("seed", 0)]
    return list(value or [])


def _source_record(document: Mapping[str, Any], path: str, rows: Sequence[Row]) -> dict[str, Any]:
    """What a merged document keeps of one run: where it came from and how it ran."""
    record = {
        "path": path,
        "created": document.get("created"),
        "environment": copy.deepcopy(document.get("environment")),
        "config": copy.deepcopy(document.get("config")),
        "targets": list(dict.fromkeys(row["target"] for row in rows)),
        "seeds": sorted({row.get("seed", 0) for row in rows}),
        "rows": len(rows),
    }
    if document.get("upgraded_from"):
        record["upgraded_from"] = document["upgraded_from"]
    return record


def json_text(value: Any) -> str:
    """A setting's value as it reads in ``results.json`` (``null`` when not recorded)."""
    return json.dumps(value, sort_keys=True, default=str)


#: What a kept row's run must share with the resuming run (``config`` fields; ``device`` by its type),
#: besides the pingsbench version: everything that changes a row's fidelity metrics or NFE, and which
#: batch sizes its ``latency_by_n`` holds (``batch_sizes``, and ``latency_cap_s`` where sizes other
#: than ``n`` are timed), so a resumed run's rows all time the same sizes.
RESUME_SETTINGS = ("profile", "n", "dtype", "threads", "device", "independent_noise", "batch_sizes", "latency_cap_s")


def _resume_setting(document: Mapping[str, Any], name: str) -> Any:
    config = document.get("config", {})
    value = config.get(name)
    if name == "device" and isinstance(value, str):
        return value.split(":", 1)[0]  # the device type: cuda:0 and cuda:1 measure alike
    sizes = config.get("batch_sizes") or [config.get("n")]  # a document from before batch sizes timed n alone
    if name == "batch_sizes":
        return sizes
    if name == "latency_cap_s" and len(sizes) == 1:
        return None  # n alone is never capped, so the cap changes nothing
    return value


def resumable_rows(
    previous: Mapping[str, Any], current: Mapping[str, Any], retry_failed: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows and floors of ``previous`` that a run configured as ``current`` keeps instead of rerunning.

    A row is kept when both documents agree on every :data:`RESUME_SETTINGS` field and the
    pingsbench version (``environment.pingsbench``), its (sampler, target, seed) lies in
    ``current``'s grid, and its status is ``ok`` or ``skipped`` (or ``failed``, unless
    ``retry_failed``).  A target's floor is kept when the settings agree and so do the
    base ``seed`` and ``floor_pairs``.

    Args:
        previous: A version-2 results document (:func:`upgrade`), e.g. an interrupted run's.
        current: The new run's document (its ``config`` and ``environment``).
        retry_failed: Leave ``failed`` rows out, so their pairs run again.

    Returns:
        Copies of the kept rows (in ``previous``'s order) and ``{target: floor}``; both empty when
        a setting differs (the first difference is logged).
    """
    import logging

    log = logging.getLogger("pingsbench")
    settings = [(name, _resume_setting(previous, name), _resume_setting(current, name)) for name in RESUME_SETTINGS]
    settings.append(("pingsbench version", previous.get("environment", {}).get("pingsbench"),
                     current.get("environment", {}).get("pingsbench")))
    differing = [(name, old, new) for name, old, new in settings if old != new]
    if differing:
        name, old, new = differing[0]
        log.warning("the previous results were made with %s %s, this run uses %s: no row is kept", name, old, new)
        return [], {}
    config = current["config"]
    pairs = {(t, s, p) for t in config["targets"] for s in config["seeds"] for p in config["samplers"]}
    statuses = ("ok", "skipped") if retry_failed else ("ok", "skipped", "failed")
    rows = [copy.deepcopy(dict(row)) for row in previous.get("rows", [])
            if (row["target"], row.get("seed", 0), row["sampler"]) in pairs and row["status"] in statuses]
    outside = [row for row in previous.get("rows", [])
               if (row["target"], row.get("seed", 0), row["sampler"]) not in pairs]
    if outside:
        log.warning("%d finished rows of the previous run lie outside this run's samplers, targets and seeds and "
                    "will not be in its results.json (e.g. %s on %s); name them too to keep them, or write this run "
                    "to another --out and merge the two with `pingsbench report A B --out DIR`",
                    len(outside), outside[0]["sampler"], outside[0]["target"])
    same_floor = all(previous["config"].get(key) == config.get(key) for key in ("seed", "floor_pairs"))
    floors = {name: copy.deepcopy(floor) for name, floor in (previous.get("floors") or {}).items()
              if same_floor and name in config["targets"]}
    return rows, floors
