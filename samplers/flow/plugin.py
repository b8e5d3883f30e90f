"""Sampler families ``[ot-]flow-matching-<steps>`` and ``rectified-flow-1`` and their registration."""

from __future__ import annotations

import re
from typing import Any, Callable

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target

from .sample import euler_sampler
from .train import flow_matching_model, rectified_flow_model


class FlowMatchingSampler(Sampler):
    """Flow matching (Lipman et al., 2023) sampled with ``steps`` Euler steps.

    Args:
        name: Registry name, e.g. ``flow-matching-8``.
        steps: Number of Euler steps (= network evaluations).
        coupling: ``"independent"`` or ``"ot"`` (minibatch OT-CFM).
    """

    def __init__(self, name: str, steps: int, coupling: str = "independent") -> None:
        self.name = name
        self.steps = steps
        self.coupling = coupling
        coupling_text = "minibatch-OT couplings" if coupling == "ot" else "independent couplings"
        self.description = f"flow matching on the straight path ({coupling_text}), {steps} Euler step(s)"

    def expected_nfe(self, target: Target) -> float:
        return float(self.steps)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        velocity = flow_matching_model(target, ctx, self.coupling)
        ctx.artifacts.update({"coupling": self.coupling, "solver": "euler", "steps": self.steps})
        return euler_sampler(velocity, target.dim, self.steps, ctx.dtype)


class FlowMatchingFamily(SamplerFamily):
    """``flow-matching-<steps>`` and ``ot-flow-matching-<steps>``: one velocity net per coupling, any step count."""

    pattern = "[ot-]flow-matching-<steps>"
    regex = re.compile(r"(?P<ot>ot-)?flow-matching-(?P<steps>[1-9][0-9]*)")
    description = "conditional flow matching on the straight path, Euler sampling; ot- = minibatch-OT couplings"
    defaults = ("flow-matching-1", "flow-matching-8")
    sweep = (
        *(f"flow-matching-{n}" for n in (1, 2, 4, 8, 16, 32)),
        *(f"ot-flow-matching-{n}" for n in (1, 2, 4, 8)),
    )

    def build(self, name: str, match: re.Match[str]) -> Sampler:
        return FlowMatchingSampler(name, int(match["steps"]), "ot" if match["ot"] else "independent")


class RectifiedFlowSampler(Sampler):
    """``rectified-flow-1``: the once-reflowed flow sampled with one Euler step (Liu et al., 2023)."""

    name = "rectified-flow-1"
    description = "flow matching + one reflow on (z, ODE(z)) pairs, one Euler step"

    def expected_nfe(self, target: Target) -> float:
        return 1.0

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        velocity = rectified_flow_model(target, ctx)
        ctx.artifacts.update({"reflows": 1, "solver": "euler", "steps": 1})
        return euler_sampler(velocity, target.dim, 1, ctx.dtype)


@hookimpl
def register_samplers(register: Callable[[Any], None]) -> None:
    register(FlowMatchingFamily())
    register(RectifiedFlowSampler())
