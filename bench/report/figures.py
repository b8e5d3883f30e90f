"""Figures of a run: each target's sample panels and every model's training curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from bench.cache import atomic_write_bytes
from bench.contracts import Target


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    plt = _pyplot()
    atomic_write_bytes(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def sample_panels(
    target: Target | None,
    target_name: str,
    samples: Mapping[str, np.ndarray],
    order: list[str],
    path: Path,
) -> Path | None:
    """One panel per sampler, drawn by the target's own :meth:`Target.plot_panel`.

    ``samples`` maps ``"<target>/<sampler>"`` (and ``"<target>/reference"``) to arrays.
    Without the target plugin installed the default x1–x2 projection is used.
    """
    reference = samples.get(f"{target_name}/reference")
    names = [name for name in order if f"{target_name}/{name}" in samples]
    if reference is None or not names:
        return None
    plt = _pyplot()
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows), squeeze=False, sharex=True, sharey=True)
    draw = target.plot_panel if target is not None else lambda *a: Target.plot_panel(None, *a)  # type: ignore[arg-type]
    ref = torch.from_numpy(reference)
    for ax, name in zip(axes.flat, names):
        draw(ax, torch.from_numpy(samples[f"{target_name}/{name}"]), ref, name)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"{target_name}: generated (orange) vs held-out target draws (blue)")
    fig.tight_layout()
    return save_figure(fig, path)


def training_curves(rows: list[Mapping[str, Any]], target_name: str, path: Path) -> Path | None:
    """Loss histories of every model trained (or loaded) for this target, one panel per model."""
    curves: dict[str, tuple[str, Mapping[str, list]]] = {}
    for row in rows:
        for model in row.get("fit", {}).get("models", []):
            history = model.get("history")
            if history and "step" in history:
                curves.setdefault(model["id"], (f"{model['kind']} (used by {row['sampler']})", history))
    if not curves:
        return None
    plt = _pyplot()
    cols = min(3, len(curves))
    nrows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.3 * nrows), squeeze=False)
    for ax, (label, history) in zip(axes.flat, curves.values()):
        steps = history["step"]
        for key, values in history.items():
            if key == "step" or len(values) != len(steps):
                continue
            finite = [(s, v) for s, v in zip(steps, values) if v is not None and v > 0]
            if finite:
                ax.plot(*zip(*finite), label=key, linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.suptitle(f"{target_name}: training curves")
    fig.tight_layout()
    return save_figure(fig, path)
