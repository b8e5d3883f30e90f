"""Command line: ``pingsbench list | run | sweep | report | validate``.

Exit status: 0 all rows ok, 1 some row failed, 2 bad usage (unknown names listed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from bench.cache import default_cache_dir
from bench.environment import resolve_device
from bench.plugins import get_plugin_manager
from bench.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from bench.registry import Registry, UnknownNameError

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE = 0, 1, 2
DEFAULT_OUT = Path("reports")


def _names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pingsbench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", required=True)

    listing = sub.add_parser("list", help="registered targets and samplers with the package providing each")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    for name, help_text in (
        ("run", "evaluate samplers on targets and write results.json, leaderboard.md and figures"),
        ("sweep", "like run, over every sampler family's NFE sweep (for the Pareto view)"),
    ):
        run = sub.add_parser(name, help=help_text)
        run.add_argument("--samplers", help="comma-separated names (default: all registered defaults)")
        run.add_argument("--targets", help="comma-separated names (default: all)")
        run.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES), help="training budget")
        run.add_argument("--n", type=int, help="generated and held-out points per pair (default: profile's)")
        run.add_argument("--repeats", type=int, default=5, help="timed calls per pair")
        run.add_argument("--warmup", type=int, default=3, help="untimed warm-up calls before timing")
        run.add_argument("--seed", type=int, default=0)
        run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        run.add_argument("--compile", action="store_true", help="torch.compile every sampler alike before timing")
        run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
        run.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: user cache dir)")
        run.add_argument("--no-cache", action="store_true", help="train everything afresh, keep nothing on disk")
        run.add_argument("--no-progress", action="store_true", help="no progress bars")

    report = sub.add_parser("report", help="re-render leaderboard.md and figures from a results.json")
    report.add_argument("results", type=Path)

    validate = sub.add_parser("validate", help="run a target's own physics validation (e.g. the DHO PINN check)")
    validate.add_argument("target")
    validate.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    validate.add_argument("--device", default="auto")
    validate.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def cmd_list(registry: Registry, as_json: bool) -> int:
    from tabulate import tabulate

    targets = [{"name": n, "dim": e.obj.dim, "source": e.source, "description": e.obj.description}
               for n, e in registry.targets.items()]
    samplers = [{"name": n, "source": e.source, "description": e.obj.description} for n, e in registry.samplers.items()]
    samplers += [{"name": p, "source": e.source, "description": e.obj.description, "defaults": list(e.obj.defaults)}
                 for p, e in registry.families.items()]
    if as_json:
        print(json.dumps({"targets": targets, "samplers": samplers}, indent=2))
        return EXIT_OK
    print("Targets")
    print(tabulate([[t["name"], t["dim"], t["source"], t["description"]] for t in targets],
                   headers=["name", "dim", "source", "description"]))
    print("\nSamplers (a <…> pattern accepts any value, e.g. ddim-7)")
    print(tabulate([[s["name"], s["source"], s["description"]] for s in samplers],
                   headers=["name", "source", "description"]))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, registry: Registry, sweep: bool) -> int:
    from tqdm import tqdm

    from bench.report import write_report
    from bench.runner import RunConfig, run

    samplers = _names(args.samplers) or (registry.sweep_samplers() if sweep else registry.default_samplers())
    targets = _names(args.targets) or list(registry.targets)
    for name in targets:
        registry.target(name)
    for name in samplers:
        registry.sampler(name)
    profile = get_profile(args.profile)
    config = RunConfig(
        samplers=samplers,
        targets=targets,
        profile=profile,
        device=resolve_device(args.device),
        n=args.n or profile.n,
        seed=args.seed,
        repeats=args.repeats,
        warmup=args.warmup,
        compile=args.compile,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        progress=not args.no_progress,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = tqdm(total=len(samplers) * len(targets), desc="pairs", unit="pair", disable=args.no_progress)

    def on_row(row):
        pairs.update()
        pairs.write(f"{row['target']:>8} {row['sampler']:<28} {row['status']}"
                    + (f"  ({row['error']})" if row["error"] else ""))

    results = run(config, registry, out_dir=args.out, on_row=on_row)
    pairs.close()
    path = write_report(results, args.out, registry)
    failed = [r for r in results["rows"] if r["status"] == "failed"]
    print(f"wrote {args.out / 'results.json'} and {path}; {len(results['rows'])} rows, {len(failed)} failed")
    return EXIT_FAILED_ROWS if failed else EXIT_OK


def cmd_report(path: Path, registry: Registry) -> int:
    from bench.report import write_report
    from bench.runner import RESULTS_SCHEMA

    results = json.loads(path.read_text())
    if results.get("schema") != RESULTS_SCHEMA:
        print(f"error: {path} is not a {RESULTS_SCHEMA} document", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {write_report(results, path.parent, registry)}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    target = registry.target(args.target)
    if not target.has("validate"):
        runnable = [name for name, entry in registry.targets.items() if entry.obj.has("validate")]
        print(f"error: target {args.target!r} has no validation; targets with one: {', '.join(runnable)}",
              file=sys.stderr)
        return EXIT_USAGE
    args.out.mkdir(parents=True, exist_ok=True)
    print(target.validate(args.out, get_profile(args.profile), resolve_device(args.device)))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    registry = Registry.from_plugin_manager(get_plugin_manager())
    try:
        if args.command == "list":
            return cmd_list(registry, args.json)
        if args.command in ("run", "sweep"):
            return cmd_run(args, registry, sweep=args.command == "sweep")
        if args.command == "report":
            return cmd_report(args.results, registry)
        return cmd_validate(args, registry)
    except UnknownNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
