"""results.json → Markdown leaderboard (tabulate), one table per target.

Every metric column says which direction is better (↓/↑); the ``target-draws``
row and the MMD² floor line are what a perfect sampler scores at this n;
failed and skipped rows stay in the table with their reason; a row whose
counted NFE carries a warning is marked ⚠ and the warning is listed below.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from tabulate import tabulate

from bench.contracts import REFERENCE_SAMPLER

ARROWS = {"lower": "↓", "higher": "↑"}
#: Generic metric columns, in order; target-specific metrics follow them.
CORE_METRICS = (
    "mmd2", "mmd2_pvalue", "mmd2_median", "mean_mse", "cov_mse", "skew_mse", "kurt_mse", "swd", "energy", "c2st",
)


def fmt(value: Any, spec: str = ".2e") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def environment_lines(results: Mapping[str, Any]) -> list[str]:
    env, config = results["environment"], results["config"]
    opts = config.get("optimizations", {})
    on = [name for name, enabled in opts.items() if enabled] or ["none"]
    return [
        f"- **device**: {env['device']} ({env['device_name']}), dtype {env['dtype']}, "
        f"torch {env['torch']} ({env['torch_threads']} threads), python {env['python']}, {env['platform']}",
        f"- **run**: profile `{config['profile']}`, n = {config['n']}, seed {config['seed']}, "
        f"latency over {config['repeats']} timed calls after {config['warmup']} warm-up calls "
        f"(device synchronized around each), optimizations: {', '.join(on)}",
        f"- **created**: {results.get('created', '?')} by pingsbench {env['pingsbench']}",
    ]


def _metric_columns(rows: Iterable[Mapping[str, Any]], info: Mapping[str, Mapping[str, str]]) -> list[str]:
    present = {k for row in rows for k in row.get("metrics", {})} - {"mmd2_floor"}
    ordered = [m for m in CORE_METRICS if m in present]
    return ordered + sorted(present - set(ordered))


def _header(name: str, info: Mapping[str, Mapping[str, str]]) -> str:
    meta = info.get(name, {})
    return f"{meta.get('label', name)} {ARROWS.get(meta.get('better', ''), '')}".strip()


def target_table(
    rows: list[Mapping[str, Any]],
    info: Mapping[str, Mapping[str, str]],
    frontier: Callable[[list[Mapping[str, Any]]], set[str]] | None = None,
) -> str:
    """One target's leaderboard as a GitHub-flavoured Markdown table."""
    ok = [r for r in rows if r["status"] == "ok"]
    slowest = max((r["latency_ms"]["median"] for r in ok), default=None)
    on_front = frontier(rows) if frontier else set()
    metrics = _metric_columns(rows, info)
    headers = ["sampler", "NFE", "latency ms ↓ (median, mean ± std)", "speed-up ↑", "train s ↓"]
    headers += [_header(m, info) for m in metrics] + ["status"]
    table = []
    for row in sorted(rows, key=_row_order):
        name = row["sampler"] + (" ★" if row["sampler"] in on_front else "")
        if row["sampler"] == REFERENCE_SAMPLER:
            name += " (floor)"
        if row["status"] != "ok":
            table.append([name, "—", "—", "—", fmt(training_seconds(row), ".1f")] + ["—"] * len(metrics)
                         + [f"{row['status']}: {row['error']}"])
            continue
        lat = row["latency_ms"]
        table.append(
            [
                name,
                nfe_cell(row),
                f"{lat['median']:.2f} ({lat['mean']:.2f} ± {lat['std']:.2f})",
                f"{slowest / lat['median']:.1f}×",
                fmt(training_seconds(row), ".1f"),
            ]
            + [fmt(row["metrics"].get(m), ".3f" if m == "mmd2_pvalue" else ".2e") for m in metrics]
            + ["ok"]
        )
    floor = next((r["metrics"].get("mmd2_floor") for r in rows if r.get("metrics")), None)
    table.append(["*MMD² floor: two independent target draw sets*", "", "", "", ""]
                 + [fmt(floor) if m == "mmd2" else "" for m in metrics] + [""])
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def nfe_cell(row: Mapping[str, Any]) -> str:
    """NFE per sample, its oracle part when there is one, and ⚠ when the row has warnings."""
    text = fmt(row["nfe"], "g")
    oracle = (row.get("nfe_split") or {}).get("oracle", 0.0)
    if oracle:
        text += f" ({oracle:g} oracle)"
    return text + (" ⚠" if row.get("warnings") else "")


def warning_notes(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One Markdown list item per ok row with warnings (the ⚠ footnotes of a table)."""
    return [f"- ⚠ **{row['sampler']}**: {'; '.join(row['warnings'])}"
            for row in sorted(rows, key=_row_order) if row["status"] == "ok" and row.get("warnings")]


def training_seconds(row: Mapping[str, Any]) -> float | None:
    """Training time of every model a row used, whether trained in this run or loaded from the cache.

    A shared model (the ε-net behind every diffusion row) counts in each row that
    uses it, so each row shows what it costs to train from nothing; the row's own
    ``fit_seconds`` would show zero for a model another row trained first.
    ``None`` for a row that failed before its models were recorded.
    """
    models = (row.get("fit") or {}).get("models")
    if models is None:
        return None
    return sum(model.get("train_seconds", 0.0) for model in models)


def _row_order(row: Mapping[str, Any]) -> tuple:
    # Floor first, then ok rows by MMD², then skipped/failed.
    if row["sampler"] == REFERENCE_SAMPLER:
        return (0, 0.0, row["sampler"])
    if row["status"] != "ok":
        return (2, 0.0, row["sampler"])
    return (1, row["metrics"].get("mmd2", float("inf")), row["sampler"])


def render(
    results: Mapping[str, Any],
    figures: Mapping[str, list[tuple[str, str]]] | None = None,
    frontier: Callable[[list[Mapping[str, Any]]], set[str]] | None = None,
    extra_sections: Mapping[str, str] | None = None,
) -> str:
    """The whole leaderboard document.

    Args:
        results: A results document (schema ``pingsbench.results/1``).
        figures: Per target, ``(caption, relative path)`` of figures to link.
        frontier: Returns the sampler names on a target's accuracy–cost frontier (marked ★).
        extra_sections: Per target, Markdown appended under its table (e.g. validation links).
    """
    info = results["metric_info"]
    lines = ["# pingsbench leaderboard", "", *environment_lines(results), ""]
    lines += [
        "Fidelity is measured on n generated points against n held-out target draws; the `target-draws` row "
        "is an independent exact sample, i.e. what a perfect sampler scores. NFE is the number of function "
        "evaluations per sample *counted* during sampling: outermost `nn.Module` calls and target oracle calls "
        "(`score`, `noised_score`, `log_prob`), each by the points it evaluates; \"(k oracle)\" is the oracle "
        "part. ⚠ marks a row whose NFE is 0 or differs from what its sampler declares (listed under the "
        "table). Speed-up is relative to the slowest ok row in the same run. ★ marks rows on the "
        "MMD²–latency Pareto frontier.",
        "",
    ]
    targets = list(dict.fromkeys(r["target"] for r in results["rows"]))
    for target in targets:
        rows = [r for r in results["rows"] if r["target"] == target]
        lines += [f"## {target}", "", target_table(rows, info, frontier), ""]
        notes = warning_notes(rows)
        if notes:
            lines += [*notes, ""]
        for caption, path in (figures or {}).get(target, []):
            lines.append(f"- [{caption}]({path})")
        if (figures or {}).get(target):
            lines.append("")
        if extra_sections and target in extra_sections:
            lines += [extra_sections[target], ""]
    lines += ["## Metrics", ""]
    lines += [f"- **{meta['label']}** ({ARROWS.get(meta['better'], '')}): {meta.get('description', '')}"
              for meta in info.values()]
    return "\n".join(lines) + "\n"
