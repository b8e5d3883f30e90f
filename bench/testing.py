"""Helpers for testing pingsbench plugins, and the pytest plugin that exports them.

pytest loads this module in every environment where pingsbench is installed
(entry point ``pytest11``: ``pingsbench``), so a plugin package's own tests can
use its fixtures without a ``conftest.py``:

* ``pingsbench_plugin_manager`` – the built-in plugins only; installed
  third-party plugins are not autoloaded during the test.
* ``pingsbench_registry`` – a function ``(*plugins) -> Registry``: the built-ins
  plus the given plugin modules or objects, registered in-process.

The plain functions work outside pytest too:

* :func:`registered` – the same in-process registration as a context manager.
* :func:`run_one` – one sampler on one target through the real runner (smoke
  profile, small ``n``), returning the result row.
* :func:`check_target` – the :class:`~bench.contracts.Target` contract
  (shapes, dtypes, seeding, ``score`` = ∇ ``log_prob``, ``noised_score``'s ᾱ forms).

Importing this module costs nothing heavy (no torch): pytest imports it in
every session, also of projects that never use it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from bench.plugins import DISABLE_AUTOLOAD_ENV, PluginManager, get_plugin_manager

if TYPE_CHECKING:
    from pathlib import Path

    from bench.contracts import Target
    from bench.registry import Registry

#: Points per sampler drawn by :func:`run_one` unless told otherwise: enough for
#: every metric, small enough for a unit test (about a second per row on a CPU).
SMOKE_N = 1_000


def plugin_name(plugin: object) -> str:
    """The name a plugin is registered under when none is given: its module or class name."""
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def builtin_plugin_manager() -> PluginManager:
    """A plugin manager with the built-in plugins only (no entry points are loaded)."""
    return get_plugin_manager(load_entry_points=False)


def _add(pm: PluginManager, plugin: object, name: str | None) -> str:
    name = name or plugin_name(plugin)
    pm.register_from(plugin, name, f"test plugin {name}")
    return name


@contextlib.contextmanager
def registered(
    plugin: object, name: str | None = None, *, plugin_manager: PluginManager | None = None
) -> Iterator["Registry"]:
    """Register ``plugin`` in-process and yield the registry it produces; always unregister.

    Args:
        plugin: A module or object with ``@hookimpl`` functions.
        name: Name to register it under (default: :func:`plugin_name`); it is also
            its source in the registry (``"test plugin <name>"``).
        plugin_manager: Manager to register into; default: a fresh
            :func:`builtin_plugin_manager`, so installed plugins cannot interfere.

    Yields:
        A :class:`~bench.registry.Registry` of the built-ins (and whatever else
        ``plugin_manager`` holds) plus ``plugin``.

    Raises:
        Whatever building the registry raises for a broken plugin (a duplicate
        name, a misspelled hook, an object that is not a Sampler or Target).
    """
    from bench.registry import Registry

    pm = plugin_manager if plugin_manager is not None else builtin_plugin_manager()
    name = _add(pm, plugin, name)
    try:
        yield Registry.from_plugin_manager(pm)
    finally:
        pm.unregister(name=name)


def run_one(
    registry: "Registry",
    sampler: str,
    target: str,
    *,
    n: int = SMOKE_N,
    profile: str = "smoke",
    seed: int = 0,
    device: str = "cpu",
    repeats: int = 1,
    warmup: int = 0,
    cache_dir: "Path | None" = None,
    check: bool = True,
) -> dict[str, Any]:
    """Run one sampler on one target through :func:`bench.runner.run`, exactly as ``pingsbench run`` does.

    Args:
        registry: Where the names are resolved (e.g. from :func:`registered`).
        sampler: Sampler name (a family member such as ``"ddim-7"`` works too).
        target: Target name.
        n: Generated and held-out reference points.
        profile: Training budget profile (``smoke``, ``quick`` or ``paper``).
        seed: Run seed.
        device: ``"cpu"``, ``"cuda"``, ...
        repeats: Timed sampling calls (latency is not what a unit test checks).
        warmup: Untimed calls before timing.
        cache_dir: Model cache folder; ``None`` keeps trained models in memory only.
        check: Raise if the row is not ``ok``.

    Returns:
        The result row: ``status``, ``error``, ``nfe``, ``metrics`` (``mmd2``,
        ``mmd2_pvalue``, ``c2st``, ..., the target's own), ``fit``
        (``models``, ``artifacts``), ``latency_ms``, ...

    Raises:
        bench.errors.UsageError: A bad value or name (e.g. ``UnknownNameError`` for a name
            nobody registered), before any work.
        AssertionError: ``check`` is set and the row failed or was skipped (message: its error).
    """
    from bench.runner import RunConfig, run

    config = RunConfig(  # RunConfig and run() check every value and name, with pingsbench's own errors
        floor_pairs=2,  # the fewest: the floor is not returned
        samplers=[sampler],
        targets=[target],
        profile=profile,
        device=device,
        n=n,
        seed=seed,
        repeats=repeats,
        warmup=warmup,
        cache_dir=cache_dir,
    )
    (row,) = run(config, registry)["rows"]
    if check and row["status"] != "ok":
        raise AssertionError(f"{sampler} on {target}: {row['status']}: {row['error']}")
    return row


def check_target(target: "Target", *, n: int = 256, seed: int = 0) -> None:
    """Check that ``target`` keeps the :class:`~bench.contracts.Target` contract.

    Checks, on ``n`` of its own float64 draws: ``sample`` returns ``(n, dim)``
    on the generator's device in the requested dtype, reproducibly from the
    generator's seed; ``log_prob`` is ``(n,)`` and finite; ``score`` is
    ``(n, dim)`` and equals the autograd gradient of ``log_prob``;
    ``noised_score`` gives the same answer for ᾱ as a float, a 0-d tensor and an
    ``(n, 1)`` column, treats each row of a column with its own ᾱ, keeps
    float32 inputs float32, and equals ``score`` at ᾱ = 1; ``score`` and
    ``noised_score`` also work under ``torch.inference_mode()``, as samplers
    call them while sampling.  Optional methods the target does not provide are skipped.

    Args:
        target: The target instance (as registered).
        n: Points to check on.
        seed: Seed of the draws.

    Raises:
        AssertionError: A rule is broken; the message names the target and the rule.
    """
    import torch

    def draws(dtype: torch.dtype) -> torch.Tensor:
        return target.sample(n, torch.Generator().manual_seed(seed), dtype=dtype)

    def close(actual: torch.Tensor, expected: torch.Tensor, rule: str) -> None:
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-8,
                                   msg=lambda detail: f"target {target.name!r}: {rule}\n{detail}")

    def while_sampling(oracle: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        """``oracle(*args)`` under ``torch.inference_mode()``, as the runner draws samples."""
        try:
            with torch.inference_mode():
                inputs = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
                return oracle(*inputs).clone()
        except Exception as exc:
            raise AssertionError(
                f"target {target.name!r}: {oracle.__name__} fails under torch.inference_mode(), where samplers "
                f"call it ({type(exc).__name__}: {exc}); compute gradients inside "
                "`with torch.inference_mode(False), torch.enable_grad():` on a clone of the input"
            ) from exc

    def expect(ok: bool, rule: str) -> None:
        if not ok:
            raise AssertionError(f"target {target.name!r}: {rule}")

    x = draws(torch.float64)
    expect(isinstance(x, torch.Tensor) and tuple(x.shape) == (n, target.dim),
           f"sample(n, generator) must return shape ({n}, {target.dim}), got {getattr(x, 'shape', type(x))}")
    expect(x.dtype == torch.float64 and x.device.type == "cpu",
           f"sample(..., dtype=float64) on a CPU generator gave {x.dtype} on {x.device}")
    expect(bool(torch.isfinite(x).all()), "sample returned NaN or inf")
    expect(torch.equal(x, draws(torch.float64)), "sample must depend only on the generator's seed")
    expect(target.sample(n, torch.Generator().manual_seed(seed)).dtype == torch.float32,
           "sample's default dtype must be float32")

    if target.has("log_prob"):
        log_p = target.log_prob(x)
        expect(tuple(log_p.shape) == (n,), f"log_prob must return shape ({n},), got {tuple(log_p.shape)}")
        expect(bool(torch.isfinite(log_p).all()), "log_prob is not finite on the target's own draws")
    if target.has("score"):
        score = target.score(x)
        expect(tuple(score.shape) == (n, target.dim) and score.dtype == x.dtype,
               f"score must return shape ({n}, {target.dim}) in the input's dtype, got {score.dtype} "
               f"{tuple(score.shape)}")
        if target.has("log_prob"):
            with torch.enable_grad():
                leaf = x.clone().requires_grad_(True)
                (gradient,) = torch.autograd.grad(target.log_prob(leaf).sum(), leaf)
            close(score, gradient, "score(x) must equal the gradient of log_prob(x)")
        close(while_sampling(target.score, x), score, "score under torch.inference_mode() must not change")
    if target.has("noised_score"):
        column = torch.full((n, 1), 0.3, dtype=torch.float64)
        as_float = target.noised_score(x, 0.3)
        expect(tuple(as_float.shape) == (n, target.dim),
               f"noised_score must return shape ({n}, {target.dim}), got {tuple(as_float.shape)}")
        close(target.noised_score(x, torch.tensor(0.3, dtype=torch.float64)), as_float,
              "noised_score must accept ᾱ as a 0-d tensor (same result as a float)")
        close(target.noised_score(x, column), as_float, "noised_score must accept ᾱ of shape (n, 1)")
        per_row = torch.linspace(0.05, 0.95, n, dtype=torch.float64)[:, None]
        mixed = target.noised_score(x, per_row)
        for i in (0, n // 2, n - 1):
            close(mixed[i], target.noised_score(x[i:i + 1], float(per_row[i]))[0],
                  "noised_score with an (n, 1) ᾱ must use row i's ᾱ for row i")
        close(while_sampling(target.noised_score, x, 0.3), as_float,
              "noised_score under torch.inference_mode() must not change")
        as_float32 = target.noised_score(x.float(), 0.3)
        expect(as_float32.dtype == torch.float32, f"noised_score of float32 input returned {as_float32.dtype}")
        if target.has("score"):
            close(target.noised_score(x, 1.0), target.score(x), "noised_score at ᾱ = 1 must equal score")


# --- pytest plugin --------------------------------------------------------------------------------


@pytest.fixture
def pingsbench_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    """A plugin manager with the built-ins only; autoload of installed plugins is off for the test.

    ``$PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set while the test runs, so code
    under test that builds its own manager (the CLI) skips installed plugins too.
    """
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    return get_plugin_manager()


@pytest.fixture
def pingsbench_registry(pingsbench_plugin_manager: PluginManager) -> Callable[..., "Registry"]:
    """A function ``(*plugins) -> Registry``: the built-ins plus ``plugins``, registered in-process.

    Each plugin (a module or object with ``@hookimpl`` functions) is registered
    under :func:`plugin_name` into this test's own plugin manager, so nothing
    outlives the test.  Call it again to add more; each call returns a fresh
    registry of everything added so far.
    """
    from bench.registry import Registry

    def add(*plugins: object) -> Registry:
        for plugin in plugins:
            _add(pingsbench_plugin_manager, plugin, None)
        return Registry.from_plugin_manager(pingsbench_plugin_manager)

    return add


__all__ = [
    "SMOKE_N",
    "builtin_plugin_manager",
    "check_target",
    "pingsbench_plugin_manager",
    "pingsbench_registry",
    "plugin_name",
    "registered",
    "run_one",
]
