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
from bench.report.pareto import frontier_names, plot_pareto
from bench.runner import load_samples

LEADERBOARD = "leaderboard.md"
log = logging.getLogger("pingsbench")


def validation_report_name(target: str) -> str:
    """File a target's ``validate`` writes its Markdown to (linked from the leaderboard)."""
    return f"{target}_validation.md"


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
        made = [
            ("generated vs target samples (first seed)", _guarded_sample_panels(
                target, target_name, samples, [e["sampler"] for e in entries], out_dir / f"{target_name}_samples.png")),
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
