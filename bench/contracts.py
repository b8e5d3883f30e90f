"""What a plugin must (and may) provide: the Target and Sampler contracts.

The core never imports a concrete sampler or target.  It talks to them only
through the classes below, which plugins subclass:

* :class:`Target` – a distribution with exact seeded sampling and, optionally,
  its log-density, score and the closed-form score of its VP-noised version.
* :class:`TargetFamily` – a parametrised set of targets resolved by name, e.g.
  ``gmm-<d>`` for a mixture in any dimension.
* :class:`Sampler` – fitted once per target through a :class:`FitContext`
  (which owns device, dtype, seed, training budget and the model cache) and
  returning a :data:`SampleFn` that draws ``n`` points from a seeded generator.

Function evaluations are *counted* by the runner (see :mod:`bench.counting`):
every outermost ``torch.nn.Module`` call and every target oracle call
(``score``, ``noised_score``, ``log_prob``) made while sampling, by the rows
it evaluates.  A sampler may declare the NFE it expects
(:meth:`Sampler.expected_nfe`); a disagreement is flagged, never trusted.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from bench.identity import state_digest

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

    from bench.cache import ModelCache
    from bench.profiles import Profile


#: Name of the sampler that draws exactly from the target: its row is every metric's noise floor.
REFERENCE_SAMPLER = "target-draws"


class UnsupportedTarget(Exception):
    """Raised by :meth:`Sampler.check` when a sampler cannot run on a target.

    The runner records the pair as ``skipped`` (not failed) with this message.
    """


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """How to read one metric: its label and which direction is better."""

    name: str
    label: str
    better: Literal["lower", "higher"]
    description: str = ""


def overrides(obj: object, method: str, base: type) -> bool:
    """Whether ``obj``'s class overrides ``base.method`` (an optional capability)."""
    return getattr(type(obj), method, None) is not getattr(base, method, None)


class Target(abc.ABC):
    """A target distribution in ``R^dim``.

    Required: :attr:`name`, :attr:`dim`, :meth:`sample`.  Optional (override to
    provide; :meth:`has` tells whether one is provided): :meth:`log_prob`,
    :meth:`score`, :meth:`noised_score`.  Targets may also contribute their own
    metrics (:meth:`extra_metrics`, :attr:`metric_specs`) and their own figure
    panel (:meth:`plot_panel`).

    Keep the parameters that define the distribution in public attributes
    (tensors, arrays, numbers, strings, containers of those): :meth:`fingerprint`
    hashes them, so cached models follow every change of the distribution.
    Prefix with ``_`` what does not change it (caches, handles).
    """

    name: str
    dim: int
    description: str = ""
    #: Specs of the metrics returned by :meth:`extra_metrics`.
    metric_specs: Sequence[MetricSpec] = ()
    #: Whether the target runs when ``--targets`` is not given; set ``False`` for targets that
    #: run only when named (or with ``--targets all``).  Not part of :meth:`fingerprint`.
    in_default_run: bool = True

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw ``n`` exact samples.

        Args:
            n: Number of samples.
            generator: Source of randomness; samples are created on its device.
            dtype: Floating dtype of the result.

        Returns:
            Tensor of shape ``(n, dim)`` on ``generator.device``.
        """

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density ``log p(x)``; ``x`` of shape ``(n, dim)``, returns ``(n,)``."""
        raise NotImplementedError(f"target {self.name!r} has no log_prob")

    def score(self, x: Tensor) -> Tensor:
        """Score ``∇ log p(x)``; ``x`` of shape ``(n, dim)``, returns ``(n, dim)``."""
        raise NotImplementedError(f"target {self.name!r} has no score")

    def noised_score(self, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
        """Score of the VP-noised target ``q(x_t) = ∫ N(x_t; √ᾱ x_0, (1-ᾱ) I) p(x_0) dx_0``.

        Args:
            x_t: Noised points, shape ``(n, dim)``.
            alpha_bar: ``ᾱ`` in ``(0, 1]``; a float, a scalar tensor or shape ``(n, 1)``.

        Returns:
            ``∇ log q(x_t)``, shape ``(n, dim)``.  The optimal noise prediction
            is ``ε*(x_t) = -√(1-ᾱ) · noised_score(x_t, ᾱ)``.
        """
        raise NotImplementedError(f"target {self.name!r} has no closed-form noised score")

    def has(self, capability: Literal["log_prob", "score", "noised_score", "validate"]) -> bool:
        """Whether this target provides an optional capability."""
        return overrides(self, capability, Target)

    def fingerprint(self) -> Mapping[str, Any]:
        """JSON-able identity of the target's distribution: part of every model-cache key.

        Default: ``{"name", "dim", "state"}``, where ``state`` is a SHA-256 digest of
        the target's public attributes (instance attributes and public class data
        attributes not starting with ``_``; ``description``, ``metric_specs`` and
        ``in_default_run`` excluded): change a parameter and every model trained on the target is
        retrained.  Tensors, arrays, numbers, strings and nested containers of those
        hash (see :mod:`bench.identity`).  Override (e.g. extend
        ``super().fingerprint()``) when the distribution also depends on something
        else, such as module constants, or when an attribute cannot be hashed.

        Called when the target registers: an attribute that cannot be hashed stops
        start-up with a :class:`~bench.errors.PluginError` naming the target and
        the attribute.

        Raises:
            bench.identity.UnhashableStateError: A public attribute cannot be hashed.
        """
        return {"name": self.name, "dim": self.dim, "state": state_digest(self)}

    def extra_metrics(self, generated: Tensor, reference: Tensor) -> dict[str, float]:
        """Target-specific metrics (e.g. physics residuals), keyed as in :attr:`metric_specs`.

        Args:
            generated: Sampler output, shape ``(n, dim)``, float32 on CPU.
            reference: Held-out exact target draws, shape ``(m, dim)``.
        """
        return {}

    def validate(self, out_dir: "Path", profile: "Profile", device: torch.device) -> str:
        """Optional self-check of the target's physics (``pingsbench validate NAME``).

        Writes its tables and figures into ``out_dir`` and returns Markdown.
        """
        raise NotImplementedError(f"target {self.name!r} has no validation")

    def plot_panel(self, ax: "Axes", generated: Tensor, reference: Tensor, title: str) -> None:
        """Draw one sampler's panel of the target's figure.

        Default: the x1–x2 projection with axes from the reference draws and the
        count of generated points outside them in the title
        (:func:`bench.report.figures.projection_panel`); the report then shows every
        pair of the first three coordinates.  Override to draw something else.
        """
        from bench.report.figures import projection_panel  # the report imports this module

        projection_panel(ax, generated, reference, title, coords=(0, 1) if self.dim > 1 else (0,))


class SampleFn(Protocol):
    """A fitted sampler: draws ``n`` samples, shape ``(n, dim)``, on ``generator.device``."""

    def __call__(self, n: int, generator: torch.Generator) -> Tensor: ...


class Sampler(abc.ABC):
    """A sampler: fitted once per target, then draws seeded samples.

    Subclasses set :attr:`name` and implement :meth:`fit`.  :meth:`check`
    rejects targets the sampler cannot handle.
    """

    name: str
    description: str = ""
    #: Whether the sampler runs when ``--samplers`` is not given; set ``False`` for ablations and
    #: variants that run only when named, so the default run stays short.
    in_default_run: bool = True

    def check(self, target: Target) -> None:
        """Raise :class:`UnsupportedTarget` if this sampler cannot run on ``target``."""

    def expected_nfe(self, target: Target) -> float | None:
        """The NFE per sample this sampler should be counted at on ``target``, if known exactly.

        NFE is the number of points evaluated per sample by outermost
        ``nn.Module`` calls plus target oracle calls (``score``, ``noised_score``,
        ``log_prob``) while sampling, e.g. ``steps × calls_per_step`` for an ODE
        solver.  The runner still counts; a declared value that disagrees with
        the count puts a warning in the row and the leaderboard.

        Returns:
            The expected NFE, or ``None`` (the default) when not declared.
        """
        return None

    @abc.abstractmethod
    def fit(self, target: Target, ctx: "FitContext") -> SampleFn:
        """Train (or load from ``ctx``'s cache) whatever the sampler needs.

        Everything trainable must be obtained through
        :meth:`FitContext.cached_model` so that it is cached on disk, shared with
        other samplers that ask for the same model, and timed.

        Returns:
            The sampling function; it must be deterministic given its generator.
        """


class SamplerFamily(abc.ABC):
    """A parametrised set of samplers resolved by name, e.g. ``ddim-<steps>``.

    Families let users pick any step count from the CLI (``ddim-7``) without
    code.  :attr:`defaults` are the concrete names that run when the user
    does not select samplers; ``pingsbench sweep --samplers '<pattern>'``
    selects one family's :attr:`sweep`.

    Names must not overlap: a family whose regex matches another family's
    ``defaults``/``sweep`` names, or a concrete sampler's name, is refused at
    start-up, naming both distributions.
    """

    #: Human-readable pattern shown by ``pingsbench list``, e.g. ``"ddim-<steps>[@exact]"``.
    pattern: str
    #: Regex with named groups matched against requested sampler names.
    regex: re.Pattern[str]
    description: str = ""
    #: Names (matching :attr:`regex`) included in the default run.
    defaults: Sequence[str] = ()
    #: Names run by ``pingsbench sweep`` to trace the family's NFE–fidelity curve.
    sweep: Sequence[str] = ()

    @abc.abstractmethod
    def build(self, name: str, match: re.Match[str]) -> Sampler:
        """Create the sampler for ``name`` (already matched by :attr:`regex`).

        Raises:
            ValueError: The matched values break the family's rule (``ddim-0``,
                an odd NFE for a two-calls-per-step solver).  The message is the
                rule in one line, e.g. ``"ddim-<steps> takes steps ≥ 1, got 0"``;
                the CLI prints it as a usage error (exit status 2) before any work.
        """

    def resolve(self, name: str) -> Sampler | None:
        match = self.regex.fullmatch(name)
        return self.build(name, match) if match else None


class TargetFamily(abc.ABC):
    """A parametrised set of targets resolved by name, e.g. ``gmm-<d>`` where the number is the dimension.

    The counterpart of :class:`SamplerFamily`: any value the family accepts can be
    named from the CLI (``--targets gmm-16``) without code.  :attr:`defaults` are the
    members that ``--targets all`` (or the pattern itself, ``--targets 'gmm-<d>'``)
    runs; a plain run without ``--targets`` runs only the concrete targets whose
    :attr:`Target.in_default_run` is set.

    Names must not overlap: a family whose regex matches another family's
    ``defaults`` is refused at start-up, naming both distributions.  A concrete
    target whose name the family also matches is the same target when the family
    builds an identical distribution for it (equal :meth:`Target.fingerprint`) and
    a conflict otherwise.
    """

    #: Human-readable pattern shown by ``pingsbench list``, e.g. ``"gmm-<d>"``.
    pattern: str
    #: Regex with named groups matched against requested target names.
    regex: re.Pattern[str]
    description: str = ""
    #: Members (matching :attr:`regex`) that ``--targets all`` and ``--targets '<pattern>'`` run.
    defaults: Sequence[str] = ()

    @abc.abstractmethod
    def build(self, name: str, match: re.Match[str]) -> Target:
        """Create the target called ``name`` (already matched by :attr:`regex`); its ``name`` must be ``name``.

        Building the same name twice must give the same distribution (same
        :meth:`Target.fingerprint`): ``gmm-16`` is one distribution everywhere.

        Raises:
            ValueError: The matched values break the family's rule (an odd dimension
                for ``manywell-<d>``).  The message is the rule in one line, e.g.
                ``"manywell-<d> takes an even d ≥ 2, got 7"``; the CLI prints it as a
                usage error (exit status 2) before any work.
        """

    def resolve(self, name: str) -> Target | None:
        match = self.regex.fullmatch(name)
        return self.build(name, match) if match else None


def parse_dimension(match: re.Match[str], pattern: str, minimum: int = 1, *, even: bool = False,
                    maximum: int = 4096) -> int:
    """The dimension in a family member's name (named group ``d``), checked against the family's rule.

    Args:
        match: The family regex's match; its group ``d`` holds decimal digits.
        pattern: The family's pattern, for the message (``"gmm-<d>"``).
        minimum: Smallest dimension the family takes.
        even: Whether the dimension must be even.
        maximum: Largest dimension the family takes (memory grows with d²).

    Raises:
        ValueError: Leading zeros (``gmm-08`` would be a second name of ``gmm-8``), a value
            out of range, or an odd one where even is required; one line with the rule.
    """
    text = match.group("d")
    rule = (f"{pattern} takes {'an even' if even else 'a'} d with {minimum} ≤ d ≤ {maximum}, "
            f"written without leading zeros")
    value = int(text)
    if text != str(value) or not minimum <= value <= maximum or (even and value % 2):
        raise ValueError(f"{rule}, got {text}")
    return value


@dataclasses.dataclass
class FitContext:
    """Everything a sampler's :meth:`Sampler.fit` may use.

    Attributes:
        device: Device for models and sampling.
        dtype: Floating dtype for models and samples.
        seed: Base seed of the run; derive per-purpose seeds with :meth:`seed_for`.
        profile: Training budget profile (``smoke`` / ``quick`` / ``paper``).
        cache: Shared model cache (memory + disk).
        progress: Whether to show progress bars while training.
        artifacts: Free-form, JSON-able facts the sampler wants in its result row
            (e.g. ``{"score": "exact"}``); the runner copies them into ``row["fit"]``.
        models: Filled by the cache: one record per model the sampler obtained
            (kind, where it came from, training seconds and history).
    """

    device: torch.device
    dtype: torch.dtype
    seed: int
    profile: "Profile"
    cache: "ModelCache"
    progress: bool = False
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def seed_for(self, *labels: str) -> int:
        """A seed for one purpose, independent of other purposes, derived from :attr:`seed`."""
        from bench.seeding import derive_seed

        return derive_seed(self.seed, *labels)

    def generator(self, *labels: str, device: torch.device | str | None = None) -> torch.Generator:
        """A generator seeded with :meth:`seed_for` on ``device`` (default :attr:`device`)."""
        gen = torch.Generator(device=device or self.device)
        gen.manual_seed(self.seed_for(*labels))
        return gen

    def cached_model(
        self,
        kind: str,
        target: Target,
        config: Mapping[str, Any],
        build: Callable[[], torch.nn.Module],
        train: Callable[[torch.nn.Module], Mapping[str, Any]],
    ) -> torch.nn.Module:
        """Return a trained model, training it only if no valid cached copy exists.

        Two samplers asking for the same ``(kind, target, config)`` in the same
        profile and seed get the same module instance (e.g. one denoiser shared by
        DDIM and every DPM-Solver).

        Args:
            kind: Model family, e.g. ``"epsnet"``; part of the cache key.
            target: The target the model is trained on.
            config: JSON-able hyper-parameters and training budget; part of the key,
                so changing any of them retrains.  Include a ``"version"`` entry and
                bump it when the training code changes what it computes.
            build: Creates the untrained module (on CPU; the cache moves it).
            train: Trains the module in place (already on :attr:`device`) and
                returns JSON-able info, e.g. ``{"history": {"loss": [...]}}``.

        Returns:
            The trained module on :attr:`device` in eval mode, ``requires_grad`` off.
        """
        return self.cache.get_or_train(self, kind, target, config, build, train)
