"""Counting function evaluations (NFE) while a sampler draws its samples.

NFE is counted, not declared.  Inside :func:`count_evaluations`:

* every ``torch.nn.Module`` call counts the *rows it evaluates*: the leading
  size of the first tensor in its output (searched through nested tuples,
  lists and dicts); when that tensor is 0-d or there is none, the largest
  leading size among its tensor inputs of dimension ≥ 1 (positional, keyword,
  nested in containers); a call with neither evaluates one point.  So a
  vector field called as ``f(t, x)`` with a 0-d ``t`` (``torchdiffeq``'s
  order) counts ``len(x)``, and a chunked batch counts each chunk once;
* a target oracle (``score``, ``noised_score``, ``log_prob``) called through
  the :class:`CountedTarget` view the runner hands to every sampler counts
  the same way, as an *oracle* evaluation; ``sample`` never counts;
* only the outermost evaluation counts: a module inside a module, or an
  oracle called inside a counted module (``ExactEps`` calling
  ``noised_score``: one *network* evaluation), or ``score`` calling
  ``log_prob``, is one evaluation.

NFE per sample is the total rows divided by the number of samples drawn.
Outside the counting context nothing is counted and no hook is installed (it
must not be active while timing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import Tensor

from bench.contracts import REFERENCE_SAMPLER, Target

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

    from bench.contracts import MetricSpec, Sampler
    from bench.profiles import Profile

Kind = Literal["network", "oracle"]
#: Relative tolerance between a sampler's declared and its counted NFE.
EXPECTED_NFE_RTOL = 1e-9


def _tensors(value: Any) -> Iterator[Tensor]:
    """Tensors in ``value``, depth first through tuples, lists and dict values."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)


def evaluated_rows(args: Sequence[Any], kwargs: Mapping[str, Any], output: Any) -> int:
    """How many points one call evaluated (the NFE rule, see the module docstring).

    Args:
        args: Positional arguments of the call.
        kwargs: Keyword arguments of the call.
        output: What the call returned.

    Returns:
        Leading size of the output's first tensor; if that is 0-d or absent, the
        largest leading size of an input tensor with ``ndim >= 1``; else 1.
    """
    first = next(_tensors(output), None)
    if first is not None and first.ndim >= 1:
        return int(first.shape[0])
    sizes = [int(t.shape[0]) for t in _tensors((tuple(args), dict(kwargs))) if t.ndim >= 1]
    return max(sizes, default=1)


@dataclasses.dataclass
class CallCounter:
    """Evaluations counted by :func:`count_evaluations`, kept apart by kind.

    Attributes:
        network_calls: Outermost ``nn.Module`` calls.
        network_rows: Points those calls evaluated.
        oracle_calls: Outermost target-oracle calls (``score``, ``noised_score``, ``log_prob``).
        oracle_rows: Points those calls evaluated.
    """

    network_calls: int = 0
    network_rows: int = 0
    oracle_calls: int = 0
    oracle_rows: int = 0
    # Evaluations in progress, outermost first; only one that closes on an empty stack counts.
    _open: list[object] = dataclasses.field(default_factory=list, repr=False)

    @property
    def calls(self) -> int:
        """Outermost evaluations of either kind."""
        return self.network_calls + self.oracle_calls

    @property
    def rows(self) -> int:
        """Points evaluated by outermost evaluations of either kind."""
        return self.network_rows + self.oracle_rows

    def nfe_per_sample(self, n: int) -> float:
        """Total NFE per sample when ``n`` samples were drawn."""
        return self.rows / n if n else 0.0

    def nfe_split(self, n: int) -> dict[str, float]:
        """NFE per sample by kind: ``{"network": ..., "oracle": ...}``."""
        return {"network": self.network_rows / n if n else 0.0, "oracle": self.oracle_rows / n if n else 0.0}

    def open(self, token: object) -> None:
        """An evaluation started (``token`` identifies it when it closes)."""
        self._open.append(token)

    def close(self, token: object, kind: Kind | None, rows: Callable[[], int]) -> None:
        """An evaluation ended; it counts ``rows()`` points of ``kind`` if it was the outermost.

        ``kind=None`` closes without counting (``Target.sample``).  A token that is not
        the innermost open one (its start was never seen) is ignored.
        """
        if not self._open or self._open[-1] is not token:
            return
        self._open.pop()
        if self._open or kind is None:
            return
        if kind == "network":
            self.network_calls += 1
            self.network_rows += rows()
        else:
            self.oracle_calls += 1
            self.oracle_rows += rows()


_active: CallCounter | None = None


@contextlib.contextmanager
def count_evaluations() -> Iterator[CallCounter]:
    """Count the evaluations made inside the block (module calls and counted-target oracles).

    Uses torch's global module hooks, so no cooperation from the sampler is
    needed; they are removed on exit, also on error.

    Raises:
        RuntimeError: If a counting block is already active (they do not nest).
    """
    global _active
    if _active is not None:
        raise RuntimeError("count_evaluations() is already active; counting blocks do not nest")
    counter = CallCounter()

    def enter(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        counter.open(module)

    def leave(module: torch.nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        # torch passes (kwargs, output) on return; (output,) when forward raised (always_call).
        kwargs, output = rest if len(rest) == 2 else ({}, rest[-1])
        counter.close(module, "network", lambda: evaluated_rows(args, kwargs, output))

    pre = torch.nn.modules.module.register_module_forward_pre_hook(enter)
    post = torch.nn.modules.module.register_module_forward_hook(leave, with_kwargs=True, always_call=True)
    _active = counter
    try:
        yield counter
    finally:
        _active = None
        pre.remove()
        post.remove()


def _call_counted(method: Callable[..., Any], kind: Kind | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``method(*args, **kwargs)`` as one evaluation of ``kind`` (``None``: nothing inside it counts)."""
    counter = _active
    if counter is None:
        return method(*args, **kwargs)
    token = object()
    counter.open(token)
    output = None
    try:
        output = method(*args, **kwargs)
        return output
    finally:
        counter.close(token, kind, lambda: evaluated_rows(args, kwargs, output))


class CountedTarget(Target):
    """A view of a target whose oracle calls are counted while :func:`count_evaluations` is active.

    ``score``, ``noised_score`` and ``log_prob`` count as oracle evaluations
    (rows by :func:`evaluated_rows`); ``sample`` runs uncounted (nothing it calls
    internally counts either).  Everything else — ``name``, ``dim``, ``has``,
    ``fingerprint`` (so cache keys are the same with and without the view),
    metrics, plotting and any attribute of the target's own class — is the
    wrapped target's.  Outside a counting block the view is a plain pass-through.
    Setting an attribute on the view raises :class:`AttributeError`: the target is
    shared by every sampler and its public attributes are its cache identity.

    Args:
        target: The target to wrap (a view is unwrapped first, never nested).

    Attributes:
        wrapped: The wrapped target.
    """

    def __init__(self, target: Target) -> None:
        object.__setattr__(self, "wrapped", target.wrapped if isinstance(target, CountedTarget) else target)

    # Target's class attributes would shadow __getattr__: delegate them explicitly.
    @property  # type: ignore[override]
    def name(self) -> str:
        return self.wrapped.name

    @property  # type: ignore[override]
    def dim(self) -> int:
        return self.wrapped.dim

    @property  # type: ignore[override]
    def description(self) -> str:
        return self.wrapped.description

    @property  # type: ignore[override]
    def metric_specs(self) -> Sequence["MetricSpec"]:
        return self.wrapped.metric_specs

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "wrapped":  # not yet set (copy, unpickling): no recursion
            raise AttributeError(attribute)
        return getattr(self.wrapped, attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        raise AttributeError(
            f"samplers must not set attributes on the target ({attribute!r} on {self.wrapped.name!r}): the target "
            f"is shared by every sampler and its attributes are its cache identity; keep state in the sampler"
        )

    def __repr__(self) -> str:
        return f"CountedTarget({self.wrapped!r})"

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        return _call_counted(self.wrapped.sample, None, (n, generator, dtype), {})

    def log_prob(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return _call_counted(self.wrapped.log_prob, "oracle", (x, *args), kwargs)

    def score(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return _call_counted(self.wrapped.score, "oracle", (x, *args), kwargs)

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float, *args: Any, **kwargs: Any) -> Tensor:
        return _call_counted(self.wrapped.noised_score, "oracle", (x_t, alpha_bar, *args), kwargs)

    def has(self, capability: Literal["log_prob", "score", "noised_score", "validate"]) -> bool:
        return self.wrapped.has(capability)

    def fingerprint(self) -> Mapping[str, Any]:
        return self.wrapped.fingerprint()

    def extra_metrics(self, generated: Tensor, reference: Tensor) -> dict[str, float]:
        return self.wrapped.extra_metrics(generated, reference)

    def validate(self, out_dir: "Path", profile: "Profile", device: torch.device) -> str:
        return self.wrapped.validate(out_dir, profile, device)

    def plot_panel(self, ax: "Axes", generated: Tensor, reference: Tensor, title: str) -> None:
        self.wrapped.plot_panel(ax, generated, reference, title)


def nfe_record(counter: CallCounter, n: int, sampler: "Sampler", target: Target) -> dict[str, Any]:
    """The NFE fields of a result row, with warnings a reader must see.

    Args:
        counter: What :func:`count_evaluations` counted while ``n`` samples were drawn.
        n: Number of samples drawn.
        sampler: The sampler (its :meth:`~bench.contracts.Sampler.expected_nfe` is checked).
        target: The (unwrapped) target it sampled.

    Returns:
        ``{"nfe": total per sample, "nfe_split": {"network", "oracle"}, "warnings": [str, ...]}``;
        a non-reference sampler with NFE 0, or one whose declared NFE differs from the
        counted one (relative tolerance :data:`EXPECTED_NFE_RTOL`), gets a warning.
    """
    nfe = counter.nfe_per_sample(n)
    warnings = []
    if nfe == 0 and sampler.name != REFERENCE_SAMPLER:
        warnings.append(
            "NFE 0: no nn.Module call and no target oracle (score, noised_score, log_prob) was counted while sampling"
        )
    expected = sampler.expected_nfe(target)
    if expected is not None and not math.isclose(nfe, expected, rel_tol=EXPECTED_NFE_RTOL):
        warnings.append(f"counted NFE {nfe:g} differs from the {expected:g} the sampler declares")
    return {"nfe": nfe, "nfe_split": counter.nfe_split(n), "warnings": warnings}
