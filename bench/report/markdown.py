"""results.json → Markdown leaderboard (tabulate), one table per target.

One table row per sampler × target, built from the document's ``summary``
(replicate seeds pooled): cells read ``mean ± half-width`` of the 95 %
t-interval with several seeds, the plain value with one.  Every metric column
says which direction is better (↓/↑); the ``target-draws`` row and the
noise-floor line (mean ± std over pairs of exact draw sets) are what a
perfect sampler scores at this n; the headline metrics (MMD², C2ST) mark the
best row and the rows tied with it; failed and skipped rows stay in the table
with their reason (and which seeds, when only some failed); a row whose
counted NFE carries a warning is marked ⚠ and the warning is listed below.
After the target tables, each target family with several members gets a
fidelity-versus-dimension section (:func:`dimension_section`); a document merged
from several runs says so in its header (:func:`source_lines`).
Version-1 documents are read through :func:`bench.results.upgrade`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from tabulate import tabulate

from bench.contracts import REFERENCE_SAMPLER
from bench.results import CHANCE_LEVELS, compare_with_best

ARROWS = {"lower": "↓", "higher": "↑"}
#: Generic metric columns, in order; target-specific metrics follow them.
CORE_METRICS = (
    "mmd2", "c2st", "mmd2_pvalue", "mmd2_median", "mean_mse", "cov_mse", "skew_mse", "kurt_mse", "swd", "energy",
)
#: Metrics whose best row and ties with it the leaderboard marks.
HEADLINE_METRICS = ("mmd2", "c2st")


def fmt(value: Any, spec: str = ".2e") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def environment_lines(results: Mapping[str, Any]) -> list[str]:
    """The environment and run-setting bullet lines of a (version-2) results document."""
    env, config = results["environment"], results["config"]
    opts = config.get("optimizations", {})
    on = [name for name, enabled in opts.items() if enabled] or ["none"]
    seeds = config.get("seeds") or [config["seed"]]
    return [
        f"- **device**: {env['device']} ({env['device_name']}), dtype {env['dtype']}, "
        f"torch {env['torch']} ({env['torch_threads']} thread{'s' if env['torch_threads'] != 1 else ''}), "
        f"python {env['python']}, {env['platform']}"
        + ("" if "tf32" not in env else f", TF32 {_on_off(env['tf32'])}"),
        f"- **run**: profile `{config['profile']}`, n = {config['n']}, {latency_method(config)}, "
        f"optimizations: {', '.join(on)}",
        f"- **replicates**: {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}), "
        f"threads {_recorded(config.get('threads'))}, "
        f"deterministic algorithms {_on_off(config.get('deterministic'))}, "
        f"common random numbers {_on_off(None if 'independent_noise' not in config else not config['independent_noise'])}",
        f"- **created**: {results.get('created', '?')} by pingsbench {env['pingsbench']}",
        *source_lines(results),
        *timed_on_lines(results.get("rows", [])),
        *trained_on_lines(results.get("rows", []), env["device"]),
    ]


def latency_method(config: Mapping[str, Any]) -> str:
    """How the run timed its latencies, in words, with its batch sizes when it timed more than ``n``."""
    timing = config.get("timing")
    if timing is None:  # documents from before timed blocks
        text = (f"latency over {config['repeats']} timed calls after {plural(config['warmup'], 'warm-up call')} "
                f"(device synchronized around each)")
    else:
        text = (f"latency: median (IQR in results.json) over {config['repeats']} timed blocks after "
                f"{plural(config['warmup'], 'warm-up call')}, a block {timing['min_block_seconds'] * 1e3:g} ms or more of "
                f"back-to-back calls with the device synchronized once per block (one call per block without warm-up)")
    sizes, cap = config.get("batch_sizes") or [config["n"]], config.get("latency_cap_s")
    if len(sizes) > 1:
        text += (f", batch sizes {', '.join(map(str, sizes))} (a size other than n skipped when one call is "
                 f"estimated over {_recorded(cap if cap is None else format(cap, 'g'))} s)")
    return text


def source_lines(results: Mapping[str, Any]) -> list[str]:
    """The header line of a document merged from several runs (:func:`bench.results.merge`); none otherwise.

    It names each run (path, created, targets, seeds) and says whether their recorded
    environments agree; when they differ, which keys differ, and that latencies and
    speed-ups then compare rows timed in different environments.
    """
    sources = results.get("sources") or []
    if len(sources) < 2:
        return []
    runs = "; ".join(f"`{source.get('path')}` ({source.get('created', '?')}: {', '.join(source.get('targets', []))}, "
                     f"seeds {', '.join(map(str, source.get('seeds', [])))}, {plural(source.get('rows', 0), 'row')})"
                     for source in sources)
    differ = results.get("sources_differ") or []
    if differ:
        values = "; ".join(f"{key}: " + " / ".join(str((s.get("environment") or {}).get(key)) for s in sources)
                           for key in differ)
        where = (f"on different machines or software ({values}): the device line is the first run's, and "
                 f"latencies and speed-ups compare rows timed in different environments")
    else:
        where = "every run recorded the same environment (device, software, platform)"
    return [f"- **merged**: the leaderboard merges {len(sources)} runs ({runs}); {where}"]


def timed_on_lines(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """A warning line when the ok rows were timed on more than one kind of device (a distributed run)."""
    kinds: dict[str, int] = {}
    for row in rows:
        timed_on = row.get("timed_on") if row.get("status") == "ok" else None
        if timed_on:
            kinds[timed_on["device_name"]] = kinds.get(timed_on["device_name"], 0) + 1
    if len(kinds) < 2:
        return []
    counts = ", ".join(f"{name} ({count} row{'' if count == 1 else 's'})" for name, count in sorted(kinds.items()))
    return [f"- **timed on {len(kinds)} kinds of device**: {counts}; latencies compare only between rows "
            f"timed on the same kind (each row's `timed_on` in results.json)"]


def trained_on_lines(rows: Iterable[Mapping[str, Any]], run_device: str) -> list[str]:
    """A line naming where models were trained when some were trained on another kind of device than the run's.

    The model cache serves a model to any device (:mod:`bench.cache`), so a CUDA run may sample
    with models trained on a CPU: their weights, hence the fidelity columns, are those of that training.
    """
    run_type = run_device.split(":")[0]
    elsewhere: dict[str, set[str]] = {}
    for row in rows:
        for model in (row.get("fit") or {}).get("models") or []:
            trained_on = model.get("trained_on")
            if trained_on and trained_on["device"] != run_type:
                label = trained_on["device"] + (f" ({trained_on['device_name']})" if "device_name" in trained_on else "")
                elsewhere.setdefault(label, set()).add(model["id"])
    if not elsewhere:
        return []
    where = ", ".join(f"{label} ({plural(len(ids), 'model')})" for label, ids in sorted(elsewhere.items()))
    return [f"- **models trained elsewhere**: {where}, loaded from the model cache on {run_type}; each "
            f"model's `trained_on` in results.json"]


def _recorded(value: Any) -> str:
    return "not recorded" if value is None else str(value)


def _on_off(flag: bool | None) -> str:
    return "not recorded" if flag is None else ("on" if flag else "off")


def _metric_columns(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    present = {k for entry in entries for k in entry.get("metrics", {})} - {"mmd2_floor"}
    ordered = [m for m in CORE_METRICS if m in present]
    return ordered + sorted(present - set(ordered))


def _header(name: str, info: Mapping[str, Mapping[str, str]]) -> str:
    meta = info.get(name, {})
    return f"{meta.get('label', name)} {ARROWS.get(meta.get('better', ''), '')}".strip()


def interval_cell(summary: Mapping[str, Any] | None, spec: str = ".2e") -> str:
    """``mean ± half-width`` of a 95 % interval over seeds, the plain mean with one seed, ``—`` without a value.

    Args:
        summary: ``{"mean", "ci_low", "ci_high"}`` of a summary entry (interval bounds ``None`` for one seed).
        spec: Format of the numbers.
    """
    if not summary or summary.get("mean") is None:
        return "—"
    text = format(summary["mean"], spec)
    if summary.get("ci_low") is not None and summary.get("ci_high") is not None:
        text += f" ± {format((summary['ci_high'] - summary['ci_low']) / 2, _spread_spec(spec))}"
    return text


def floor_cell(floor: Mapping[str, Any] | None, pairs: int | None, spec: str = ".2e") -> str:
    """A metric's noise floor: ``mean ± std (P pairs)`` (no ``± std`` for a single pair, no count for ``pairs=None``)."""
    if not floor or floor.get("mean") is None:
        return ""
    spread = f" ± {format(floor['std'], _spread_spec(spec))}" if floor.get("std") is not None else ""
    count = "" if pairs is None else f" ({plural(pairs, 'pair')})"
    return f"{format(floor['mean'], spec)}{spread}{count}"


def _floor_metric_cell(floors: Mapping[str, Any], metric: str) -> str:
    floor, pairs = floors["metrics"].get(metric), floors.get("pairs", 1)
    if metric in RANGE_METRICS and floor:
        return f"{range_cell(floor.get('values'), _value_spec(metric))} ({plural(pairs, 'pair')})"
    return floor_cell(floor, pairs, _value_spec(metric))


def _value_spec(metric: str) -> str:
    """Number format of a metric: probabilities and accuracies fixed-point, the rest in scientific notation."""
    return ".3f" if metric in ("mmd2_pvalue", "c2st") else ".2e"


def _spread_spec(spec: str) -> str:
    return ".1e" if "e" in spec else spec


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def status_cell(entry: Mapping[str, Any]) -> str:
    """``ok``, or the status with its reason; naming the seeds when only some of them failed or errors differ."""
    if entry["status"] == "ok":
        return "ok"
    errors = {int(seed): text for seed, text in (entry.get("errors") or {}).items()}
    if not entry.get("ok_seeds") and len(set(errors.values())) <= 1:
        return f"{entry['status']}: {next(iter(errors.values()), '')}"
    reasons = "; ".join(f"seed {seed}: {text}" for seed, text in sorted(errors.items()))
    if entry.get("ok_seeds"):
        ok = ", ".join(map(str, entry["ok_seeds"]))
        return f"{entry['status']} on {plural(len(errors), 'seed')} ({reasons}); values over ok seeds {ok}"
    return f"{entry['status']}: {reasons}"


def target_table(
    entries: list[Mapping[str, Any]],
    info: Mapping[str, Mapping[str, str]],
    frontier: Callable[[list[Mapping[str, Any]]], set[str]] | None = None,
    floors: Mapping[str, Any] | None = None,
    ties: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """One target's leaderboard as a GitHub-flavoured Markdown table, one row per summary entry.

    Args:
        entries: The target's summary entries (:func:`bench.results.summarize`).
        info: ``metric_info`` of the results document (labels and directions).
        frontier: Returns the sampler names on the target's accuracy–cost frontier (marked ★).
        floors: ``floors[target]`` of the results document (``pairs``, ``metrics``), for the floor row.
        ties: Per headline metric, :func:`bench.results.compare_with_best`'s verdict (marks "best" and "≈ best").
    """
    measured = [e for e in entries if e.get("latency_ms")]
    slowest = max((e["latency_ms"]["mean"] for e in measured), default=None)
    on_front = frontier(entries) if frontier else set()
    metrics = _metric_columns(entries)
    multi = any(len(e.get("ok_seeds", ())) > 1 for e in entries)
    latency_header = "latency ms ↓ (median per seed; mean ± 95 % CI over seeds)" if multi else "latency ms ↓ (median)"
    headers = ["sampler", "NFE", latency_header, "speed-up ↑", "train s ↓"]
    headers += [_header(m, info) for m in metrics] + ["status"]
    table = []
    for entry in sorted(entries, key=_entry_order):
        name = entry["sampler"] + (" ★" if entry["sampler"] in on_front else "")
        if entry["sampler"] == REFERENCE_SAMPLER:
            name += " (floor)"
        if not entry.get("ok_seeds"):
            table.append([name, "—", "—", "—", fmt(entry.get("train_seconds"), ".1f")] + ["—"] * len(metrics)
                         + [status_cell(entry)])
            continue
        latency = entry["latency_ms"]
        table.append(
            [
                name,
                nfe_cell(entry),
                interval_cell(latency, ".2f"),
                f"{slowest / latency['mean']:.1f}×",
                fmt(entry.get("train_seconds"), ".1f"),
            ]
            + [_metric_cell(entry, m, (ties or {}).get(m)) for m in metrics]
            + [status_cell(entry)]
        )
    if floors and floors.get("metrics"):
        table.append([f"*noise floor: pairs of independent target draw sets (n = {floors.get('n', '?')}, seed "
                      f"{floors.get('seed', '?')})*",
                      "", "", "", ""]
                     + [_floor_metric_cell(floors, m) for m in metrics]
                     + [""])
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


#: Metrics shown as their range over seeds instead of mean ± t half-width: a p-value is bounded to
#: [0, 1] and floored at 1/(permutations + 1), so a t-interval of it would read e.g. 0.6 ± 1.1.
RANGE_METRICS = frozenset({"mmd2_pvalue"})


def range_cell(values: Sequence[float] | None, spec: str) -> str:
    """``min–max`` of the values over seeds (or pairs); the value itself when there is one; ``—`` without any."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    return format(low, spec) if low == high else f"{format(low, spec)}–{format(high, spec)}"


def _metric_cell(entry: Mapping[str, Any], metric: str, verdict: Mapping[str, Any] | None) -> str:
    summary = entry["metrics"].get(metric)
    if metric in RANGE_METRICS:
        text = range_cell((summary or {}).get("values"), _value_spec(metric))
    else:
        text = interval_cell(summary, _value_spec(metric))
    if verdict and entry["sampler"] in verdict.get("tied", {}):
        if verdict.get("best") == entry["sampler"]:
            text += " **best**"
        elif verdict["tied"][entry["sampler"]]:
            text += " ≈ best"
    return text


def nfe_cell(entry: Mapping[str, Any]) -> str:
    """NFE per sample, its oracle part when there is one, and ⚠ when the row has warnings."""
    text = fmt(entry["nfe"], "g")
    oracle = (entry.get("nfe_split") or {}).get("oracle", 0.0)
    if oracle:
        text += f" ({oracle:g} oracle)"
    return text + (" ⚠" if entry.get("warnings") else "")


def warning_notes(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """One Markdown list item per entry with warnings on an ok seed (the ⚠ footnotes of a table)."""
    return [f"- ⚠ **{entry['sampler']}**: {'; '.join(entry['warnings'])}"
            for entry in sorted(entries, key=_entry_order) if entry.get("ok_seeds") and entry.get("warnings")]


def contention_lines(rows: Iterable[Mapping[str, Any]], target: str) -> list[str]:
    """A ⚠ line naming the target's ok rows timed while other processes took CPU (``timing_contention.loaded``)."""
    loaded = [f"`{row['sampler']}` (seed {row['seed']}: {row['timing_contention']['other_cpus']:.1f} CPUs)"
              for row in rows
              if row.get("target") == target and row.get("status") == "ok"
              and (row.get("timing_contention") or {}).get("loaded")]
    if not loaded:
        return []
    return [f"- ⚠ **timed under load**: {', '.join(loaded)}: other processes used that many CPUs on average while "
            f"these rows were timed, so their latencies and speed-ups may be inflated; rerun on an idle machine"]


def training_seconds(row: Mapping[str, Any]) -> float | None:
    """Training time of every model a row used, whether trained in this run or loaded from the cache.

    A shared model (the denoiser behind every learned diffusion row) counts in each row that
    uses it, so each row shows what it costs to train from nothing; the row's own
    ``fit_seconds`` would show zero for a model another row trained first.
    ``None`` for a row that failed before its models were recorded.
    """
    models = (row.get("fit") or {}).get("models")
    if models is None:
        return None
    return sum(model.get("train_seconds", 0.0) for model in models)


def _entry_order(entry: Mapping[str, Any]) -> tuple:
    # Floor first, then entries with an ok seed by mean MMD², then skipped/failed.
    if entry["sampler"] == REFERENCE_SAMPLER:
        return (0, 0.0, entry["sampler"])
    if not entry.get("ok_seeds"):
        return (2, 0.0, entry["sampler"])
    return (1, (entry["metrics"].get("mmd2") or {}).get("mean", float("inf")), entry["sampler"])


def headline_verdicts(
    entries: list[Mapping[str, Any]], info: Mapping[str, Mapping[str, str]], floors: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Per headline metric present, :func:`bench.results.compare_with_best` over the target's ok entries.

    The reference sampler does not compete; entries with a failed seed are left out
    (their replicates do not pair with the others').
    """
    competitors = [e for e in entries if e["status"] == "ok" and e["sampler"] != REFERENCE_SAMPLER]
    verdicts = {}
    for metric in HEADLINE_METRICS:
        ranked = [e for e in competitors if metric in e.get("metrics", {})]
        if ranked:
            better = info.get(metric, {}).get("better", "lower")
            floor = ((floors or {}).get("metrics") or {}).get(metric)
            if floor is not None:
                floor = {**floor, "pairs": floors.get("pairs")}
            verdicts[metric] = compare_with_best(ranked, metric, better, floor=floor,
                                                 chance=CHANCE_LEVELS.get(metric))
    return verdicts


def significance_lines(
    verdicts: Mapping[str, Mapping[str, Any]], info: Mapping[str, Mapping[str, str]], seeds: int,
    floors: Mapping[str, Any] | None = None,
) -> list[str]:
    """The lines under a table saying which test marked the ties, and what one seed cannot tell.

    Args:
        verdicts: Per headline metric, :func:`bench.results.compare_with_best`'s verdict.
        info: ``metric_info`` of the results document.
        seeds: Number of replicate seeds of the run.
        floors: ``floors[target]`` of the results document, or ``None``.
    """
    lines = []
    methods = {metric: verdict["method"] for metric, verdict in verdicts.items()}
    for method in dict.fromkeys(filter(None, methods.values())):  # no method: a single competitor
        labels = " and ".join(info.get(m, {}).get("label", m) for m, text in methods.items() if text == method)
        lines.append(f"- \"≈ best\" ({labels}): {method}.")
    spread = any(floor.get("std") is not None for floor in ((floors or {}).get("metrics") or {}).values())
    if any(metric in CHANCE_LEVELS for metric in verdicts):
        lines.append("- C2ST is ranked by its distance to chance (0.5): below 0.5 is noise, not better.")
    caveat = ("the marks reflect sampling noise only, not the variation from retraining with another seed, "
              "which for learned samplers is usually larger: differences beyond the floor are not evidence that "
              "one sampler is better; run with `--seeds K` for that.")
    if seeds == 1 and spread:
        lines.append("- One seed: orderings within the noise floor's spread (its ± std over pairs of exact draw "
                     f"sets) are not significant, and {caveat}")
    elif seeds == 1:
        lines.append("- One seed, and a floor from a single pair of exact draw sets: orderings of values closer "
                     f"than the floor are not significant, and {caveat}")
    return lines


def dimension_section(
    pattern: str,
    members: Sequence[tuple[int, str]],
    entries: Sequence[Mapping[str, Any]],
    info: Mapping[str, Mapping[str, str]],
    floors: Mapping[str, Any] | None = None,
    figure: str | None = None,
) -> str:
    """Fidelity against dimension for one target family: a table per headline metric and one of training time.

    Each table has one row per sampler and one column per member's dimension d; a
    cell is the summary entry's :func:`interval_cell` (mean ± 95 % half-width over
    seeds, the value with one seed), the status when no seed of that pair is ok, and
    names the ok seeds' count when only some are.  The metric tables end with the
    noise-floor row of each member (mean ± std over its pairs of exact draw sets);
    the training table gives each row's mean training seconds (every network it uses).

    Args:
        pattern: The family's pattern, e.g. ``"gmm-<d>"``.
        members: ``(d, target name)`` of the members in the results, sorted by d.
        entries: Summary entries (:func:`bench.results.summarize`; other targets are ignored).
        info: ``metric_info`` of the results document (labels and directions).
        floors: ``floors`` of the results document (per target), or ``None``.
        figure: File name of the family's dimension figure, linked under the tables.

    Returns:
        Markdown starting with a level-2 heading.
    """
    names = [name for _, name in members]
    by_pair = {(e["sampler"], e["target"]): e for e in entries if e["target"] in names}
    samplers = sorted(dict.fromkeys(sampler for sampler, _ in by_pair),
                      key=lambda sampler: sampler != REFERENCE_SAMPLER)  # stable: run order after the reference
    headers = ["sampler", *(f"d = {d}" for d, _ in members)]
    metrics = [m for m in HEADLINE_METRICS if any(m in e.get("metrics", {}) for e in by_pair.values())]
    floors = floors or {}
    seeds = max((len(e.get("ok_seeds", ())) for e in by_pair.values()), default=0)
    lines = [
        f"## `{pattern}`: fidelity against dimension",  # in backticks: Markdown would read <d> as an HTML tag
        "",
        f"Each member of `{pattern}` in these results, by its dimension d. "
        + ("Cells read mean ± half-width of the 95 % t-interval over the seeds; "
           if seeds > 1 else "One seed: cells are single values, orderings within the floor's spread are not "
                             "significant; ")
        + "`(k/K seeds)` marks a pair that failed on some seeds. The noise-floor row is what a perfect sampler "
          "scores at this n (mean ± std over pairs of exact draw sets, per d). Read MMD² beside C2ST: the "
          "fixed-bandwidth kernel loses power as d grows (see Metrics).",
        "",
    ]

    def cell(sampler: str, target: str, read: Callable[[Mapping[str, Any]], str]) -> str:
        entry = by_pair.get((sampler, target))
        if entry is None:
            return "—"
        if not entry.get("ok_seeds"):
            return entry["status"]
        text = read(entry)
        if len(entry["ok_seeds"]) < len(entry.get("seeds", ())):
            text += f" ({len(entry['ok_seeds'])}/{len(entry['seeds'])} seeds)"
        return text

    for metric in metrics:
        spec = _value_spec(metric)
        table = [[sampler, *(cell(sampler, name, lambda e: interval_cell(e["metrics"].get(metric), spec))
                             for name in names)] for sampler in samplers]
        pairs = {floors.get(name, {}).get("pairs") for name in names} - {None}
        floor_cells = []
        for name in names:
            floor = ((floors.get(name) or {}).get("metrics") or {}).get(metric)
            floor_cells.append(floor_cell(floor, None, spec) or "—")
        label = f"*noise floor ({', '.join(map(str, sorted(pairs)))} pairs, mean ± std)*" if pairs else \
            "*noise floor*"
        table.append([label, *floor_cells])
        lines += [f"**{_header(metric, info)}**", "",
                  tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    table = [[sampler, *(cell(sampler, name, lambda e: fmt(e.get("train_seconds"), ".1f")) for name in names)]
             for sampler in samplers]
    lines += ["**train s ↓** (seconds to train every network the row uses, mean over seeds)", "",
              tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    if figure:
        lines.append(f"- [`{pattern}`: fidelity and training time against dimension]({figure})")
    return "\n".join(lines).rstrip("\n")


def render(
    results: Mapping[str, Any],
    figures: Mapping[str, list[tuple[str, str]]] | None = None,
    frontier: Callable[[list[Mapping[str, Any]]], set[str]] | None = None,
    extra_sections: Mapping[str, str] | None = None,
    sections: Sequence[str] = (),
) -> str:
    """The whole leaderboard document.

    Args:
        results: A results document, schema ``pingsbench.results/2`` or ``/1``
            (read through :func:`bench.results.upgrade`).
        figures: Per target, ``(caption, relative path)`` of figures to link.
        frontier: Returns the sampler names on the accuracy–cost frontier of one target's summary entries (★).
        extra_sections: Per target, Markdown appended under its table (e.g. validation links).
        sections: Markdown sections placed after every target's table, before the metric descriptions
            (e.g. :func:`dimension_section`).
    """
    from bench.results import upgrade

    results = upgrade(results)
    info = results["metric_info"]
    seeds = results["config"].get("seeds") or [results["config"]["seed"]]
    lines = ["# pingsbench leaderboard", "", *environment_lines(results), ""]
    lines += [
        "Fidelity is measured on n generated points against n held-out target draws; the `target-draws` row "
        "is an independent exact sample scored like a sampler in every seed, i.e. what a perfect sampler scores, "
        "and the noise-floor line gives each metric's mean ± std over pairs of independent exact draw sets "
        "(drawn once per target, from the first seed). Each replicate seed retrains every "
        "model, draws its own reference set and sampling noise; with several seeds a cell reads mean ± half-width "
        "of the 95 % Student-t interval over them. Within a seed every sampler's sampling stream starts from "
        "the same seed (common random numbers) unless the run says otherwise, so rows are paired. \"best\" marks "
        "the best mean MMD² and C2ST among a target's samplers (`target-draws` excluded); \"≈ best\" the rows "
        "the test named under each table cannot tell from it, which with few seeds is not the same as being as "
        "good: only very consistent differences separate. NFE is the number of function evaluations per sample *counted* during "
        "sampling: outermost `nn.Module` calls and target oracle calls (`score`, `noised_score`, `log_prob`), "
        "each by the points it evaluates; \"(k oracle)\" is the oracle part. ⚠ marks a row whose NFE is 0 or "
        "differs from what its sampler declares (listed under the table). Speed-up is the slowest row's latency "
        "over this row's (means over seeds of per-seed medians, same target and run; no interval). ★ marks rows "
        "on the MMD²–latency Pareto frontier: going down the MMD² ranking, a row joins it when its latency "
        "interval lies entirely below that of every row already on it, so no row is starred for being faster "
        "within timing noise.",
        "",
    ]
    targets = list(dict.fromkeys(entry["target"] for entry in results["summary"]))
    for target in targets:
        entries = [e for e in results["summary"] if e["target"] == target]
        floors = results.get("floors", {}).get(target)
        verdicts = headline_verdicts(entries, info, floors)
        lines += [f"## {target}", "", target_table(entries, info, frontier, floors, verdicts), ""]
        lines += [*significance_lines(verdicts, info, len(seeds), floors), ""]
        notes = warning_notes(entries) + contention_lines(results.get("rows", []), target)
        if notes:
            lines += [*notes, ""]
        for caption, path in (figures or {}).get(target, []):
            lines.append(f"- [{caption}]({path})")
        if (figures or {}).get(target):
            lines.append("")
        if extra_sections and target in extra_sections:
            lines += [extra_sections[target], ""]
    for section in sections:
        lines += [section, ""]
    lines += ["## Metrics", ""]
    lines += [f"- **{meta['label']}** ({ARROWS.get(meta['better'], '')}): {meta.get('description', '')}"
              for name, meta in info.items() if name != "mmd2_floor"]
    return "\n".join(lines) + "\n"


def scaling_section(results: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str | None:
    """The leaderboard's latency-against-batch-size section; ``None`` when no target was timed at two sizes.

    Per target, a table of every sampler's ms per call at each batch size (mean over seeds
    of the per-seed medians, ± 95 % half-width with several seeds) and the ratio of its
    latency at the largest timed size to that at the smallest (1× is constant time);
    sizes a row did not time read "skipped" or "failed", their reasons listed under
    the table.

    Args:
        results: A version-2 results document (``summary`` and ``rows``).
        figures: Per target, the file name of its scaling figure to link.
    """
    from bench.report.figures import scaling_sizes

    lines = ["## Latency against batch size", "",
             "Milliseconds per call of n samples (median of the timed blocks per seed; mean over seeds). "
             "\"× largest/smallest\" divides the latency at a sampler's largest timed n by that at its smallest.", ""]
    drawn = False
    for target in dict.fromkeys(entry["target"] for entry in results["summary"]):
        entries = [e for e in results["summary"] if e["target"] == target and e.get("latency_by_n")]
        if len(scaling_sizes(entries)) < 2:
            continue
        drawn = True
        rows = [row for row in results["rows"] if row["target"] == target]
        sizes = sorted({int(size) for row in rows for size in row.get("latency_by_n") or {}})  # skipped ones too
        reasons: dict[tuple[str, str], str] = {}
        for row in rows:
            for size, entry in (row.get("latency_by_n") or {}).items():
                if "skipped" in entry or "failed" in entry:
                    reasons.setdefault((row["sampler"], size), ("skipped: " + entry["skipped"]) if "skipped" in entry
                                       else ("failed: " + entry["failed"]))
        table = []
        for entry in entries:
            timed = entry["latency_by_n"]
            cells = [interval_cell(timed[str(size)], ".3g") if str(size) in timed
                     else reasons.get((entry["sampler"], str(size)), "—").split(":")[0] for size in sizes]
            ends = [timed[str(size)]["mean"] for size in sizes if str(size) in timed]
            table.append([entry["sampler"], *cells, f"{ends[-1] / ends[0]:.3g}×" if len(ends) > 1 else "—"])
        headers = ["sampler", *(f"n = {size}" for size in sizes), "× largest/smallest"]
        lines += [f"### {target}", "", tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
        lines += [f"- `{sampler}` at n = {size}: {reason}" for (sampler, size), reason in reasons.items()]
        if figures and figures.get(target):
            lines.append(f"- [latency and samples/s against batch size]({figures[target]})")
        lines.append("")
    return "\n".join(lines).rstrip("\n") if drawn else None
