"""Command line: ``pingsbench list | run | sweep | report | validate``.

Exit status: 0 all rows ok, 1 some row failed, 2 bad usage: a wrong option or
name, an unusable output folder or results file, or a broken plugin, refused
before any work with one line ``error: <what was wrong>; <what is allowed>``
(``-v`` adds the traceback).  ``list`` still works with a broken plugin and
shows it with its reason.  A run stopped by Ctrl-C or SIGTERM exits 130 or 143,
its finished rows saved for ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn, Sequence

from bench.errors import EXIT_USAGE, UsageError
from bench.plugins import DISABLE_PLUGINS_ENV, get_plugin_manager
from bench.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from bench.registry import Registry
from bench.validation import (
    DTYPES,
    check_cache_dir,
    check_options,
    check_out_dir,
    load_results,
    parse_names,
    select_samplers,
    select_targets,
)

EXIT_OK, EXIT_FAILED_ROWS = 0, 1
#: Where ``run``, ``sweep`` and ``validate`` write unless ``--out`` says otherwise; the committed
#: report in ``reports/`` changes only with ``--out reports``.
RUNS_DIR = Path("runs")
#: How ``--dry-run`` words a model's planned source.
MODEL_SOURCES = {"train": "train", "disk": "load from cache", "memory": "reuse in memory"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are :class:`UsageError` s, so every bad input has one format."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see {self.prog} --help")


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default in ``--help`` when it has a real one the help text does not already state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is none for none in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: {action.default})"


def plural(count: int, noun: str) -> str:
    """``"1 row"``, ``"2 rows"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def default_out_dir(now: float | None = None) -> Path:
    """A fresh ``runs/<YYYYmmdd-HHMMSS>`` folder name (suffixed ``-2``, ``-3``… if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path, attempt = RUNS_DIR / stamp, 1
    while path.exists():
        attempt += 1
        path = RUNS_DIR / f"{stamp}-{attempt}"
    return path


def build_parser() -> argparse.ArgumentParser:
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log every step; tracebacks for errors")
    parser = ArgumentParser(prog="pingsbench", description=__doc__.splitlines()[0], parents=[verbose])
    sub = parser.add_subparsers(dest="command", required=True)

    listing = sub.add_parser("list", parents=[verbose],
                             help="registered targets and samplers with the package providing each, broken plugins")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    for name, help_text in (
        ("run", "evaluate samplers on targets and write results.json, leaderboard.md and figures"),
        ("sweep", "like run, over every sampler family's NFE sweep (for the Pareto view)"),
    ):
        run = sub.add_parser(name, parents=[verbose], help=help_text,
                             formatter_class=HelpFormatter)
        run.add_argument("--samplers", help="comma-separated names or family patterns as `list` prints them "
                                            "(default: all registered defaults; for sweep, all sweeps)")
        run.add_argument("--targets", help="comma-separated names or family patterns as `list` prints them "
                                           "(a pattern selects its defaults); 'all': every target and every "
                                           "family's defaults (default: the default targets, gmm3d and dho)")
        run.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES), help="training budget")
        run.add_argument("--n", type=int, help="generated and held-out points per pair, ≥ 2 (default: profile's)")
        run.add_argument("--repeats", type=int, default=5, help="timed calls per pair, ≥ 1")
        run.add_argument("--warmup", type=int, default=1,
                         help="untimed warm-up calls before timing, ≥ 0 (after the untimed, counted fidelity call)")
        run.add_argument("--batch-sizes", help="comma-separated batch sizes ≥ 1 to time every sampler at "
                                               "(1,100,10000,1000000); the run's --n is always timed "
                                               "(default: --n alone)")
        run.add_argument("--latency-cap-s", type=float, default=30.0,
                         help="skip a batch size (other than --n) whose single call is estimated to take longer, "
                              "seconds > 0")
        run.add_argument("--seed", type=int, default=0, help="every random stream is derived from it")
        run.add_argument("--seeds", help="replicates, each with its own training, reference set and noise: a count "
                                         "K (seeds S…S+K−1, S = --seed) or a comma-separated list (0,3,7; a "
                                         "single seed as 5,); the report gives 95 %% t-intervals over them "
                                         "(default: the one seed --seed)")
        run.add_argument("--independent-noise", action="store_true",
                         help="give every sampler its own sampling noise; by default all samplers of a replicate "
                              "share one stream (common random numbers), so samplers that start from N(0, I) "
                              "start from the same points and rows are paired")
        run.add_argument("--threads", type=int, help="torch threads for training and sampling alike, ≥ 1, "
                                                     "recorded in results.json (default: torch's current count)")
        run.add_argument("--floor-pairs", type=int, default=5,
                         help="pairs of exact target draw sets behind each metric's noise floor, ≥ 2")
        run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (where available)")
        run.add_argument("--compile", action="store_true",
                         help="torch.compile every sampler alike; compiled and warmed before timing, per batch size")
        run.add_argument("--cuda-graphs", action="store_true",
                         help="time every sampler's call as a captured CUDA graph, per batch size (CUDA devices "
                              "only); a sampler that cannot be captured is timed eagerly, the reason in its row")
        run.add_argument("--dtype", default="float32", choices=list(DTYPES),
                         help="precision of sampling: bfloat16 and float16 sample under torch.autocast from models "
                              "trained (and cached) in float32; float64 trains and samples in float64")
        run.add_argument("--out", help="report folder (default: a new runs/<timestamp>/; "
                                       "--out reports updates the committed report)")
        run.add_argument("--cache-dir", help="model cache (default: $PINGSBENCH_CACHE or the user cache dir)")
        run.add_argument("--no-cache", action="store_true", help="train everything afresh, keep nothing on disk")
        run.add_argument("--no-progress", action="store_true", help="no progress bars")
        run.add_argument("--dry-run", action="store_true",
                         help="check everything, list the pairs and which models would be trained, loaded or "
                              "reused; train nothing, write nothing")
        run.add_argument("--resume", action="store_true",
                         help="continue the run in --out DIR: keep its finished rows whose configuration matches "
                              "(sampler, target, seed, profile, n, dtype, threads, device type, common random "
                              "numbers, batch sizes and their cap, pingsbench version) and run only the rest")
        run.add_argument("--retry-failed", action="store_true", help="with --resume, run failed rows again too")
        run.add_argument("--executor", default="local", choices=["local", "ray"],
                         help="where pairs run: in this process, or one Ray task per (sampler, target, seed) "
                              "(needs pip install \"pingsbench[ray]\" and a --cache-dir every node can write)")
        run.add_argument("--ray-address",
                         help="Ray cluster to join: 'auto' (the cluster this machine belongs to, e.g. started on "
                              "a SLURM allocation) or host:port (default: start a local Ray instance)")
        run.add_argument("--cpus-per-task", type=float,
                         help="CPUs Ray reserves per task, > 0 (default: --threads)")
        run.add_argument("--gpus-per-task", type=float,
                         help="GPUs Ray reserves per task, ≥ 0; fractions share a GPU (default: 1 with a CUDA "
                              "--device, else 0)")

    report = sub.add_parser("report", parents=[verbose],
                            help="re-render leaderboard.md and figures from a results.json (or its folder); "
                                 "several are merged into --out")
    report.add_argument("results", type=Path, nargs="+",
                        help="results.json files or their folders; one: the report is written beside it")
    report.add_argument("--out", help="folder for the merged results.json, samples.npz and report (required with "
                                      "several results files; with one, write the report there instead)")

    validate = sub.add_parser("validate", parents=[verbose],
                              help="run a target's own physics validation (e.g. the DHO PINN check)",
                              formatter_class=HelpFormatter)
    validate.add_argument("target")
    validate.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES), help="training budget")
    validate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (where available)")
    validate.add_argument("--out", help="folder (default: a new runs/<timestamp>/)")
    return parser


def load_registry() -> Registry:
    """Every plugin that loads; those that do not are kept in :attr:`Registry.broken`."""
    return Registry.from_plugin_manager(get_plugin_manager(strict=False), strict=False)


def _described(entry: dict[str, Any], named_only: str) -> str:
    """A `list` entry's description plus a family's defaults, or ``named_only`` for what runs only when named."""
    if entry.get("defaults"):
        return f"{entry['description']} (defaults: {', '.join(entry['defaults'])})"
    return entry["description"] + ("" if entry["in_default_run"] else f" ({named_only})")


def cmd_list(registry: Registry, as_json: bool) -> int:
    from tabulate import tabulate

    targets = [{"name": n, "dim": e.obj.dim, "source": e.source, "description": e.obj.description,
                "in_default_run": getattr(e.obj, "in_default_run", True)}
               for n, e in registry.targets.items()]
    targets += [{"name": p, "dim": None, "source": e.source, "description": e.obj.description,
                 "in_default_run": False, "defaults": list(e.obj.defaults)}
                for p, e in registry.target_families.items()]
    samplers = [{"name": n, "source": e.source, "description": e.obj.description,
                 "in_default_run": getattr(e.obj, "in_default_run", True)}
                for n, e in registry.samplers.items()]
    samplers += [{"name": p, "source": e.source, "description": e.obj.description,
                  "in_default_run": bool(e.obj.defaults), "defaults": list(e.obj.defaults), "sweep": list(e.obj.sweep)}
                 for p, e in registry.families.items()]
    broken = [{"plugin": b.plugin, "distribution": b.distribution, "reason": b.reason, "remedy": b.remedy}
              for b in registry.broken]
    if as_json:
        print(json.dumps({"targets": targets, "samplers": samplers, "broken": broken,
                          "disabled": registry.disabled}, indent=2))
        return EXIT_OK
    print("Targets (a <d> pattern accepts any dimension, e.g. gmm-16; --targets all adds every family's "
          "defaults)")
    print(tabulate([[t["name"], "d" if t["dim"] is None else t["dim"], t["source"],
                     _described(t, "runs when named or with --targets all")]
                    for t in targets],
                   headers=["name", "dim", "source", "description"]))
    print("\nSamplers (a <…> pattern accepts any value, e.g. ddim-7; as --samplers it selects the family; "
          "without --samplers a run takes every concrete sampler not marked 'runs when named' and each family's "
          "defaults)")
    print(tabulate([[s["name"], s["source"], _described(s, "runs when named")] for s in samplers],
                   headers=["name", "source", "description"]))
    if broken:
        print("\nBroken plugins (left out; run, sweep, report and validate refuse to start until they are fixed)")
        print(tabulate([[b["plugin"], b["distribution"], "broken: " + b["reason"], b["remedy"]] for b in broken],
                       headers=["plugin", "distribution", "status", "remedy"]))
    if registry.disabled:
        print(f"\nSwitched off by {DISABLE_PLUGINS_ENV}: {', '.join(registry.disabled)}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, registry: Registry, sweep: bool) -> int:
    from bench.executors import make_executor
    from bench.runner import RunConfig, previous_results

    check_options(args)
    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed reruns the failed rows of a resumed run; add --resume --out DIR")
    if args.resume and args.out is None:
        raise UsageError("--resume continues the run in a folder; give it with --out DIR")
    if args.resume and args.dry_run:
        raise UsageError("--dry-run plans a whole run and does not combine with --resume; leave one out")
    executor = make_executor(args.executor, ray_address=args.ray_address, cpus_per_task=args.cpus_per_task,
                             gpus_per_task=args.gpus_per_task)
    samplers = select_samplers(parse_names(args.samplers, "--samplers"), registry, sweep)
    targets = select_targets(parse_names(args.targets, "--targets"), registry)
    profile = get_profile(args.profile)
    config = RunConfig(
        samplers=samplers,
        targets=targets,
        profile=profile,
        device=args.device,
        n=profile.n if args.n is None else args.n,
        seed=args.seed,
        seeds=args.seeds,
        independent_noise=args.independent_noise,
        threads=args.threads,
        floor_pairs=args.floor_pairs,
        repeats=args.repeats,
        warmup=args.warmup,
        batch_sizes=args.batch_sizes,
        latency_cap_s=args.latency_cap_s,
        compile=args.compile,
        dtype=args.dtype,
        cuda_graphs=args.cuda_graphs,
        cache_dir=check_cache_dir(args.cache_dir, args.no_cache),
        progress=not args.no_progress and sys.stderr.isatty(),  # bars would litter a piped log
    )
    config.validate(registry)
    if not args.dry_run:
        executor.check(config)
    out = check_out_dir(args.out if args.out is not None else default_out_dir(), "--out", create=not args.dry_run)
    if args.dry_run:
        return cmd_dry_run(config, registry, out)
    if args.resume:
        previous_results(out)  # an unreadable results.json is refused before any work
    return execute(config, registry, out, executor=executor, resume=args.resume, retry_failed=args.retry_failed)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that a run stops the way Ctrl-C stops it."""


def _terminate(signum: int, frame: Any) -> NoReturn:
    raise Interrupted


def _handle_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM and return the previous one (nothing to do outside the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # signal handlers can only be set from the main thread
        return handler


def execute(config: Any, registry: Registry, out: Path, *, executor: Any = None, resume: bool = False,
            retry_failed: bool = False) -> int:
    """Run ``config`` into ``out``, report each row as it finishes, then render the report.

    Ctrl-C or SIGTERM stops the run (pending Ray tasks are cancelled) with the rows finished
    so far in ``out/results.json`` and a line saying how to resume; exit status 130 (143 for SIGTERM).
    """
    from tqdm import tqdm

    from bench.report import write_report
    from bench.runner import run

    pairs = tqdm(total=len(config.samplers) * len(config.targets) * len(config.seeds), desc="rows", unit="row",
                 disable=not config.progress)

    def on_row(row):
        pairs.update()
        pairs.write(f"{row['target']:>8} seed {row['seed']:<4} {row['sampler']:<28} {row['status']}"
                    + (f"  ({row['error']})" if row["error"] else ""))

    print(f"writing to {out}/ after every row" + (f" ({executor.name} executor)" if executor else ""), flush=True)
    started = time.perf_counter()
    previous_handler = _handle_sigterm(_terminate)
    try:
        results = run(config, registry, out_dir=out, on_row=on_row, executor=executor, resume=resume,
                      retry_failed=retry_failed)
    except KeyboardInterrupt as exc:
        pairs.close()
        print(f"interrupted: the finished rows are in {out}/results.json; to continue, run the same command "
              f"with --resume --out {out}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Interrupted) else signal.SIGINT)
    finally:
        _handle_sigterm(previous_handler or signal.SIG_DFL)
    pairs.close()
    write_report(results, out, registry)
    failed = [r for r in results["rows"] if r["status"] == "failed"]
    print(f"{plural(len(results['rows']), 'row')}, {len(failed)} failed, in {_duration(time.perf_counter() - started)}"
          f" ({_phase_totals(results['rows'])}); results.json, leaderboard.md and figures in {out}/")
    return EXIT_FAILED_ROWS if failed else EXIT_OK


def _duration(seconds: float) -> str:
    """``"9 min 12 s"`` (or ``"41 s"``)."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _phase_totals(rows: list[dict[str, Any]]) -> str:
    """Where the rows' time went, summed over rows (``phase_seconds``; rows kept by a resume included)."""
    totals: dict[str, float] = {}
    for row in rows:
        for phase, seconds in (row.get("phase_seconds") or {}).items():
            totals[phase] = totals.get(phase, 0.0) + seconds
    return ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in totals.items()) or "no row ran"


def cmd_dry_run(config: Any, registry: Registry, out: Path) -> int:
    """Print the pairs that would run and where each model would come from; train and write nothing."""
    from tabulate import tabulate

    from bench.plan import plan_run

    plan = plan_run(config, registry)
    table = [
        [pair["target"], pair["sampler"], pair["seed"],
         pair["status"] + (f": {pair['reason']}" if pair.get("reason") else ""),
         ", ".join(f"{model['kind']} ({MODEL_SOURCES[model['source']]})" for model in pair["models"]) or "—"]
        for pair in plan
    ]
    print(tabulate(table, headers=["target", "sampler", "seed", "status", "models"]))
    models = [model for pair in plan for model in pair["models"]]
    unique = {source: len({m["id"] for m in models if m["source"] == source}) for source in ("train", "disk")}
    running = sum(pair["status"] == "run" for pair in plan)
    failing = sum(pair["status"] == "failed" for pair in plan)
    seeds = ", ".join(map(str, config.seeds))
    print(f"dry run over {plural(len(config.seeds), 'seed')} ({seeds}): {plural(running, 'pair')} would run, "
          f"{len(plan) - running - failing} skipped"
          + (f", {failing} would fail" if failing else "") + f"; models: {unique['train']} to train, "
          f"{unique['disk']} to load from the cache, {sum(m['source'] == 'memory' for m in models)} reuses in memory; "
          f"nothing was trained or written (a run would write to {out}/)")
    return EXIT_OK


def cmd_report(paths: Sequence[Path], out: str | None, registry: Registry) -> int:
    """Render the report of one results file beside it, or merge several (and their figure points) into ``out``.

    Raises:
        UsageError: Several files without ``--out``, an input that cannot be read or merged
            (:func:`bench.report.merge_runs`), or an output folder that cannot be written.
    """
    from bench.report import merge_runs, write_report

    if len(paths) > 1 and out is None:
        raise UsageError(f"{len(paths)} results files are merged into one report, which needs a folder of its own; "
                         f"give --out DIR")
    beside = paths[0] if paths[0].is_dir() else paths[0].parent
    if len(paths) == 1 and out is not None and Path(out).resolve() == beside.resolve():
        out = None  # the folder the report goes to anyway
    if out is None:
        results, folder = load_results(paths[0])
        check_out_dir(folder, "the results folder", create=False)
    else:
        folder = check_out_dir(out, "--out", create=False)
        results = merge_runs(paths, folder)
    source = paths[0] if len(paths) == 1 else f"the merged {folder / 'results.json'}"
    try:
        leaderboard = write_report(results, folder, registry)
    except (KeyError, TypeError, AttributeError) as exc:  # a field the renderer reads is missing or mistyped
        raise UsageError(f"{source} lacks what the report needs ({type(exc).__name__}: {exc}); give a results.json "
                         f"written by pingsbench run") from exc
    if out is None:
        written = ""
    elif len(paths) == 1:
        written = f" (with a copy of the results and samples in {folder}/)"
    else:
        written = f", merging {len(paths)} results files into {folder / 'results.json'}"
    print(f"wrote {leaderboard} and its figures{written}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    from bench.environment import resolve_device

    check_options(args)
    target = registry.target(args.target)
    if not target.has("validate"):
        runnable = [name for name, entry in registry.targets.items() if entry.obj.has("validate")]
        raise UsageError(f"target {args.target!r} has no validation; targets with one: {', '.join(runnable)}")
    device = resolve_device(args.device)
    out = check_out_dir(args.out if args.out is not None else default_out_dir(), "--out")
    print(target.validate(out, get_profile(args.profile), device))
    print(f"validation report in {out}/")
    return EXIT_OK


def dispatch(args: argparse.Namespace) -> int:
    registry = load_registry()
    if args.command == "list":
        return cmd_list(registry, args.json)
    registry.raise_if_broken()
    if args.command in ("run", "sweep"):
        return cmd_run(args, registry, sweep=args.command == "sweep")
    if args.command == "report":
        return cmd_report(args.results, args.out, registry)
    return cmd_validate(args, registry)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (a :class:`UsageError` → ``error: …`` on stderr, status 2)."""
    verbose = False
    try:
        args = build_parser().parse_args(argv)
        verbose = getattr(args, "verbose", False)
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
        return dispatch(args)
    except UsageError as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`pingsbench list | head`): stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1  # the output is incomplete, as Python's own recipe reports it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
