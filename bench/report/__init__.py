"""Turn a results document into ``leaderboard.md`` and its figures; merge several runs into one report."""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bench.cache import atomic_write_bytes
from bench.contracts import Target
from bench.errors import PluginError, UsageError
from bench.registry import Registry, UnknownNameError
from bench.report.figures import plot_dimension, plot_scaling, sample_panels, training_curves
from bench.report.markdown import dimension_section, render, scaling_section
from bench.report.pareto import LABELLED_ROWS, frontier_names, plot_pareto
from bench.runner import load_samples, write_results, write_samples

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


def family_stem(pattern: str) -> str:
    """A target family's pattern without its placeholders, for file names: ``gmm-<d>`` → ``gmm``."""
    stem = re.sub(r"[-_]{2,}", "-", re.sub(r"<[^>]*>", "", pattern)).strip("-_")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "family"


def dimension_families(targets: Sequence[str], registry: Registry | None) -> dict[str, list[tuple[int, str]]]:
    """The registered target families with two or more members among ``targets``, each member with its dimension.

    A name belongs to the family whose pattern matches it (:meth:`Registry.target_family_of`);
    its d is the built member's ``dim``.  Names the registry cannot resolve (plugin missing or
    broken) are left out, as is everything without a registry.

    Returns:
        Family pattern → ``[(d, target name), …]`` sorted by d, only for families with ≥ 2 members.
    """
    if registry is None:
        return {}
    families: dict[str, list[tuple[int, str]]] = {}
    for name in targets:
        try:
            entry = registry.target_family_of(name)
            if entry is not None:
                families.setdefault(entry.obj.pattern, []).append((registry.target(name).dim, name))
        except (UsageError, PluginError) as exc:  # a member the installed plugins cannot build: not drawn
            log.warning("target %s is left out of the dimension view: %s", name, exc)
    return {pattern: sorted(members) for pattern, members in families.items() if len(members) >= 2}


def first_seeds(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per target, its first seed: the first of ``config.seeds`` that has a row of that target.

    A merged document's targets may come from runs with different seeds; each run's
    ``samples.npz`` holds its first seed's points.
    """
    rank = {seed: index for index, seed in enumerate(results["config"].get("seeds") or [results["config"]["seed"]])}
    seeds: dict[str, list[Any]] = {}
    for row in results["rows"]:
        seeds.setdefault(row["target"], []).append(row.get("seed", 0))
    return {target: min(found, key=lambda seed: rank.get(seed, len(rank))) for target, found in seeds.items()}


def write_report(results: Mapping[str, Any], out_dir: Path, registry: Registry | None = None) -> Path:
    """Render figures and ``leaderboard.md`` into ``out_dir``; returns the Markdown's path.

    Per target: sample panels, training curves, the Pareto view, and when it was timed at two or more
    batch sizes the figure ``<target>_scaling.png`` (:func:`bench.report.figures.plot_scaling`) and a
    section after the target tables (:func:`bench.report.markdown.scaling_section`).  Per registered target
    family with ≥ 2 members in the results (:func:`dimension_families`): the figure
    ``<stem>_dimension.png`` (:func:`family_stem`, e.g. ``gmm_dimension.png`` for ``gmm-<d>``;
    :func:`bench.report.figures.plot_dimension`) and a section after the target tables
    (:func:`bench.report.markdown.dimension_section`).

    Args:
        results: A results document, schema ``pingsbench.results/2`` or ``/1``
            (read through :func:`bench.results.upgrade`).
        out_dir: Report folder (also holds ``samples.npz`` written by the run: the first seed's points).
        registry: Used to draw each target's own figure and to find target families; targets whose
            plugin is missing fall back to the default projection and have no dimension view.
    """
    from bench.results import upgrade

    results = upgrade(results)
    out_dir = Path(out_dir)
    samples = load_samples(out_dir)
    target_seeds = first_seeds(results)
    figures: dict[str, list[tuple[str, str]]] = {}
    for target_name in dict.fromkeys(entry["target"] for entry in results["summary"]):
        entries = [entry for entry in results["summary"] if entry["target"] == target_name]
        rows = [row for row in results["rows"] if row["target"] == target_name]
        first_seed = target_seeds.get(target_name)
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
            ("latency and samples/s against batch size", plot_scaling(
                entries, target_name, out_dir / f"{target_name}_scaling.png")),
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

    sections = []
    targets = list(dict.fromkeys(entry["target"] for entry in results["summary"]))
    for pattern, members in dimension_families(targets, registry).items():
        figure = plot_dimension(pattern, members, results["summary"], out_dir / f"{family_stem(pattern)}_dimension.png",
                                floors=results.get("floors"))
        sections.append(dimension_section(pattern, members, results["summary"], results["metric_info"],
                                          results.get("floors"), figure.name if figure else None))

    scaling = scaling_section(results, {target: name for target, links in figures.items() for _, name in links
                                        if name == f"{target}_scaling.png"})
    if scaling is not None:
        sections.insert(0, scaling)
    text = render(results, figures, frontier, sections=sections)
    path = out_dir / LEADERBOARD
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path


def merge_samples(sample_sets: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The figure points of several runs (``samples.npz`` contents) as one set.

    Keys are ``"<target>/<sampler>"`` and ``"<target>/reference"``; each key is taken from the
    first set holding it, i.e. from the first run with that pair, which drew it from its first seed.
    """
    merged: dict[str, np.ndarray] = {}
    for samples in sample_sets:
        for key, points in samples.items():
            merged.setdefault(key, points)
    return merged


def merge_runs(paths: Sequence[str | Path], out_dir: Path) -> dict[str, Any]:
    """Merge several runs' ``results.json`` (:func:`bench.results.merge`) and their figure points into ``out_dir``.

    Every input is read and the merge checked before anything is written; then
    ``out_dir/results.json`` and ``out_dir/samples.npz`` are written atomically.

    Args:
        paths: Each run's ``results.json`` or its folder (which also holds its ``samples.npz``).
        out_dir: The merged report's folder; none of the inputs' folders.

    Returns:
        The merged results document.

    Raises:
        UsageError: An input that cannot be read (:func:`bench.validation.load_results`), runs that
            cannot be merged (:func:`bench.results.merge`), or ``out_dir`` holding one of the inputs.
    """
    from bench.results import merge
    from bench.validation import load_results

    loaded = [load_results(path) for path in paths]
    folders = [folder for _, folder in loaded]
    out_dir = Path(out_dir)
    clash = next((folder for folder in folders if folder.resolve() == out_dir.resolve()), None)
    if clash is not None:
        raise UsageError(f"--out {out_dir} holds the input {clash / 'results.json'}, which the merged results would "
                         f"overwrite; give a folder of its own")
    results = merge([document for document, _ in loaded], [str(folder / "results.json") for folder in folders])
    write_results(results, out_dir)
    write_samples(merge_samples([load_samples(folder) for folder in folders]), out_dir)
    return results
