"""Turn a results document into ``leaderboard.md`` and its figures."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Mapping

from bench.cache import atomic_write_bytes
from bench.contracts import Target
from bench.registry import Registry, UnknownNameError
from bench.report.figures import sample_panels, training_curves
from bench.report.markdown import render
from bench.report.pareto import LABELLED_ROWS, frontier_names, plot_pareto
from bench.runner import load_samples

LEADERBOARD = "leaderboard.md"
log = logging.getLogger("pingsbench")


def validation_report_name(target: str) -> str:
    """File a target's ``validate`` writes its Markdown to (linked from the leaderboard)."""
    return f"{target}_validation.md"


def panel_samplers(entries: list[Mapping[str, Any]], rows: list[Mapping[str, Any]]) -> tuple[list[str], str]:
    """Which samplers the sample figure of one target shows, and its caption.

    Every sampler, up to :data:`~bench.report.pareto.LABELLED_ROWS`
    competitors; a larger run (a sweep) shows the reference, the MMD²–latency
    front and the one-pass rows, as its Pareto figure labels them, so the
    figure stays readable.
    """
    names = [entry["sampler"] for entry in entries]
    caption = "generated vs target samples (first seed)"
    if sum(entry.get("status") == "ok" for entry in entries) <= LABELLED_ROWS:
        return names, caption
    front = frontier_names(entries, "latency_ms", "mmd2", rows)
    shown = [entry["sampler"] for entry in entries if entry["sampler"] in front or entry.get("status") == "ok"
             and (entry.get("nfe") is not None and entry["nfe"] <= 1)]
    return shown, f"{caption}: the MMD²–latency front and the one-pass rows, {len(shown)} of {len(names)}"


def _guarded_sample_panels(target: Target | None, target_name: str, *args: Any) -> Path | None:
    """:func:`sample_panels`, leaving the figure out (with a warning) when the target's ``plot_panel`` raises."""
    try:
        return sample_panels(target, target_name, *args)
    except Exception:  # a plugin's drawing code must not cost the leaderboard
        import matplotlib.pyplot as plt

        plt.close("all")
        log.warning("the sample figure of %s is left out: drawing it failed:\n%s", target_name,
                    traceback.format_exc())
        return None


def write_report(results: Mapping[str, Any], out_dir: Path, registry: Registry | None = None) -> Path:
    """Render figures and ``leaderboard.md`` into ``out_dir``; returns the Markdown's path.

    Args:
        results: A results document, schema ``pingsbench.results/2`` or ``/1``
            (read through :func:`bench.results.upgrade`).
        out_dir: Report folder (also holds ``samples.npz`` written by the run: the first seed's points).
        registry: Used to draw each target's own figure; targets whose plugin is
            missing fall back to the default projection.
    """
    from bench.results import upgrade

    results = upgrade(results)
    out_dir = Path(out_dir)
    samples = load_samples(out_dir)
    first_seed = (results["config"].get("seeds") or [results["config"]["seed"]])[0]
    figures: dict[str, list[tuple[str, str]]] = {}
    for target_name in dict.fromkeys(entry["target"] for entry in results["summary"]):
        entries = [entry for entry in results["summary"] if entry["target"] == target_name]
        rows = [row for row in results["rows"] if row["target"] == target_name]
        headline = ["mmd2", "c2st" if any("c2st" in e["metrics"] for e in entries) else "swd"]
        target = None
        if registry is not None:
            try:
                target = registry.target(target_name)
            except UnknownNameError:
                pass
        links = figures.setdefault(target_name, [])
        panel_names, panel_caption = panel_samplers(entries, rows)
        made = [
            (panel_caption, _guarded_sample_panels(
                target, target_name, samples, panel_names, out_dir / f"{target_name}_samples.png")),
            ("training curves (first seed)", training_curves(
                [row for row in rows if row.get("seed", first_seed) == first_seed], target_name,
                out_dir / f"{target_name}_training.png")),
            ("accuracy–cost Pareto view", plot_pareto(
                entries, target_name, out_dir / f"{target_name}_pareto.png", metrics=headline,
                floors=(results.get("floors", {}).get(target_name) or {}).get("metrics"), rows=rows)),
        ]
        links += [(caption, path.name) for caption, path in made if path is not None]
        validation = out_dir / validation_report_name(target_name)
        if validation.exists():
            links.append(("physics validation (`pingsbench validate`)", validation.name))

    def frontier(entries):
        return frontier_names(entries, "latency_ms", "mmd2", rows=results["rows"])

    text = render(results, figures, frontier)
    path = out_dir / LEADERBOARD
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path
