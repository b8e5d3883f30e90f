"""Measured choice of the learned diffusion model: parametrization × preconditioning × activation.

``python -m samplers.diffusion.compare --profile quick --targets gmm3d,dho --out reports/parametrizations``
trains every configuration of :data:`GRID` at the paper's capacity (6 hidden layers of 128)
with the profile's ε-net budget, through the runner's own code path (the model cache,
:class:`bench.runner.PairSession`'s fit, counted sampling and metrics, its thread and
determinism settings), samples it with learned ``ddim-50`` and writes ``parametrizations.md``
(a table) and ``parametrizations.json`` (every metric) into ``--out``.  The references named by
``--references`` (registry names; default the paper's ε-net ``ddim-50@paper-eps`` and
``ddim-50@exact``) run beside them; a reference a target cannot take (no closed-form score) is
left out for it.  The committed table in ``reports/parametrizations/`` is this module's output on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from bench.cache import ModelCache, default_cache_dir
from bench.contracts import Sampler, Target, UnsupportedTarget
from bench.errors import UsageError
from bench.plugins import get_plugin_manager
from bench.profiles import get_profile
from bench.registry import Registry
from bench.runner import PairSession, RunConfig, noise_floor, prepare_target, run_settings

from .model import DenoiserConfig
from .plugin import SPECS, DiffusionSampler

#: The compared configurations (all 6 × 128, the quick ε-net budget); labels as :attr:`DenoiserConfig.label`.
GRID: tuple[DenoiserConfig, ...] = (
    DenoiserConfig("eps", "none", False, "silu"),
    DenoiserConfig("eps", "none", True, "silu"),
    DenoiserConfig("x0", "none", True, "silu"),
    DenoiserConfig("v", "none", False, "silu"),
    DenoiserConfig("v", "none", True, "silu"),
    DenoiserConfig("v", "edm", True, "silu"),
    DenoiserConfig("v", "edm", True, "tanh"),
)
#: Columns of the table: metric key → heading (a target shows those it has).
COLUMNS = {"mmd2": "MMD² ↓", "c2st": "C2ST ↓", "kurt_mse": "kurt MSE ↓", "manifold_mse": "manifold MSE ↓"}
#: Solver steps of the evaluation (learned ``ddim-50``, the default learned diffusion row).
DDIM_STEPS = 50


def parameter_count(module: torch.nn.Module) -> int:
    """Number of trainable parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def evaluate(sampler: Sampler, target: Target, config: RunConfig, cache: ModelCache, data: Any) -> dict[str, Any]:
    """One row: fit (cached), draw ``config.n`` counted samples, the runner's metrics; or why it was skipped."""
    try:
        sampler.check(target)
    except UnsupportedTarget as exc:
        return {"sampler": sampler.name, "status": "skipped", "error": str(exc)}
    session = PairSession.fit(sampler, target, config, cache, config.seed)
    samples, nfe = session.sample_counted()
    train_seconds = sum(m.get("train_seconds", 0.0) for m in session.ctx.models)
    return {"sampler": sampler.name, "status": "ok", "nfe": nfe["nfe"], "train_seconds": train_seconds,
            "fit_seconds": session.fit_seconds,
            "models": [{k: v for k, v in m.items() if k != "history"} for m in session.ctx.models],
            "metrics": session.metrics(samples, data)}


def compare(
    targets: Sequence[str], references: Sequence[str], config: RunConfig, registry: Registry,
    grid: Sequence[DenoiserConfig] = GRID,
) -> dict[str, Any]:
    """Every grid configuration and the references (``ddim-50@paper-eps`` among them, say) on every target.

    Returns:
        ``{"config", "grid", "parameters", "floors", "rows"}``; ``rows`` one per (target, row
        name) with ``metrics`` as the runner computes them.
    """
    cache = ModelCache(config.cache_dir)
    ddim = SPECS[0]
    samplers: list[Sampler] = [DiffusionSampler(f"ddim-{DDIM_STEPS} [{cfg.label}]", ddim, DDIM_STEPS, "",
                                                denoiser=cfg) for cfg in grid]
    samplers += [registry.sampler(name) for name in references]
    results: dict[str, Any] = {"config": config.to_json(), "grid": [cfg.to_json() for cfg in grid],
                               "parameters": {}, "floors": {}, "rows": []}
    with run_settings(config):
        for target_name in targets:
            target = registry.target(target_name)
            results["floors"][target_name] = noise_floor(target, config.n, config.seed, config.floor_pairs)
            data = prepare_target(target, config, config.seed)
            for sampler in samplers:
                start = time.perf_counter()
                row = {"target": target_name, **evaluate(sampler, target, config, cache, data)}
                print(f"{target_name:8s} {sampler.name:40s} {row['status']} {time.perf_counter() - start:6.1f} s "
                      + " ".join(f"{k}={row['metrics'][k]:.3g}" for k in COLUMNS if k in row.get("metrics", {})),
                      flush=True)
                results["rows"].append(row)
    results["parameters"] = parameter_counts(targets, registry)
    return results


def parameter_counts(targets: Sequence[str], registry: Registry) -> dict[str, dict[str, int]]:
    """Trainable parameters of the 6 × 128 denoiser and of PINGS' generator per target."""
    from samplers.pings.train import Recipe

    from .model import Denoiser
    from .schedule import DiscreteVPSchedule

    counts = {}
    for name in targets:
        dim = registry.target(name).dim
        counts[name] = {"denoiser": parameter_count(Denoiser(dim, DiscreteVPSchedule(), DenoiserConfig())),
                        "pings": parameter_count(Recipe().build(dim))}
    return counts


def parse_label(label: str) -> DenoiserConfig:
    """The configuration a :attr:`DenoiserConfig.label` names, e.g. ``"v/edm/std/silu"``.

    Raises:
        ValueError: Not four ``/``-separated parts, or a part the configuration does not take.
    """
    parts = label.split("/")
    if len(parts) != 4 or parts[2] not in ("std", "raw"):
        raise ValueError(f"bad configuration {label!r}; give prediction/preconditioning/std|raw/activation, "
                         "e.g. v/edm/std/silu")
    prediction, precondition, data, activation = parts
    if activation not in ("tanh", "silu"):
        raise ValueError(f"bad activation in {label!r}; choose tanh or silu")
    return DenoiserConfig(prediction, precondition, data == "std", activation)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.3g}"


def markdown(results: dict[str, Any], command: str) -> str:
    """The comparison as a Markdown table per target, with the command, floors and parameter counts."""
    lines = ["# Learned diffusion model: parametrization × preconditioning × activation", "",
             f"`{command}`", "",
             f"Learned `ddim-{DDIM_STEPS}` on each configuration (6 hidden layers of 128, the profile's ε-net "
             f"budget), n = {results['config']['n']}, seed {results['config']['seed']}, "
             f"{results['config']['threads']} threads. Labels: prediction / preconditioning / "
             "standardised (std) or raw data / activation.", ""]
    for target, counts in results["parameters"].items():
        lines.append(f"- `{target}`: {counts['denoiser']:,} parameters (PINGS' generator: {counts['pings']:,}).")
    for target, floor in results["floors"].items():
        rows = [r for r in results["rows"] if r["target"] == target and r["status"] == "ok"]
        columns = [k for k in COLUMNS if k in rows[0]["metrics"]]
        lines += ["", f"## {target}", "",
                  "| row | train s | " + " | ".join(COLUMNS[k] for k in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        lines.append("| *noise floor (mean of pairs)* | | "
                     + " | ".join(_cell(floor["metrics"][k]["mean"]) for k in columns) + " |")
        for row in rows:
            train = f"{row['train_seconds']:.0f}" if row["train_seconds"] else "—"
            lines.append(f"| {row['sampler']} | {train} | "
                         + " | ".join(_cell(row["metrics"][k]) for k in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samplers.diffusion.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick", help="training profile (smoke, quick, paper)")
    parser.add_argument("--targets", default="gmm3d,dho", help="comma-separated target names")
    parser.add_argument("--references", default="ddim-50@paper-eps,ddim-50@exact",
                        help="comma-separated registry sampler names run beside the grid")
    parser.add_argument("--grid", default=",".join(cfg.label for cfg in GRID),
                        help="comma-separated configurations as labels prediction/preconditioning/std|raw/activation")
    parser.add_argument("--n", type=int, default=None, help="points per row (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--floor-pairs", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (numbers differ between devices)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="model cache (default: $PINGSBENCH_CACHE or the user cache dir, as the runner)")
    parser.add_argument("--out", type=Path, required=True, help="folder for parametrizations.md and .json")
    args = parser.parse_args(argv)
    try:
        profile = get_profile(args.profile)
    except KeyError as exc:
        parser.exit(2, f"error: {exc.args[0]}\n")
    registry = Registry.from_plugin_manager(get_plugin_manager())
    targets = [t for t in args.targets.split(",") if t]
    references = [r for r in args.references.split(",") if r]
    try:
        grid = [parse_label(label) for label in args.grid.split(",") if label]
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    try:
        config = RunConfig(samplers=references or ["ddim-50@exact"], targets=targets, profile=profile,
                           device=args.device, n=args.n or profile.n, seed=args.seed, threads=args.threads,
                           floor_pairs=args.floor_pairs, cache_dir=args.cache_dir or default_cache_dir())
        config.validate(registry)
    except UsageError as exc:
        parser.exit(2, f"error: {exc}\n")
    results = compare(targets, references, config, registry, grid)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m samplers.diffusion.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    (args.out / "parametrizations.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "parametrizations.md").write_text(markdown(results, command))
    print(f"wrote {args.out / 'parametrizations.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
