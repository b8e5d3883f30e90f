"""Samplers ``pings``, ``pings-pf``, ``pings-pf-distill`` (see :mod:`samplers.pings`) and their registration."""

from __future__ import annotations

from typing import Mapping

import torch

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, Target
from samplers.diffusion import DiscreteVPSchedule, ExactEps, denoiser_config, get_denoiser

from .physics import ProbabilityFlow, ScoreGuidance, flow_map_error
from .sample import one_pass_sampler
from .train import Budget, Recipe, train_pings

#: Bump when training changes what it computes (part of every PINGS model's cache key).
VERSION = 1
#: Prior draws on which ``pings-pf``'s flow map is compared with dopri5.
FLOW_CHECK_POINTS = 256

#: Steps without a new best validation MMD² before a quick ``pings``/``pings-pf`` training stops: half its
#: budget (the recipe's 3000 never stops 500 steps).  Its learning rate is all but constant, so a plateau is
#: one; on dho, whose best step was 20, it stops at step 280 (the first validation 250 steps on) with the same
#: kept weights.  ``pings-pf-distill`` gets none: its cosine schedule makes its last, low-rate steps its best
#: (200 steps of patience stopped it at 800 on dho, 4 % worse in MMD²).
QUICK_PATIENCE = 250
#: The paper's step budget is 20 000 (§5.1.2); ``quick`` keeps the recipe and cuts only steps
#: (≈ 1 minute at batch 2048 on 2 cores).
PAPER_BUDGETS: Mapping[str, Budget] = {
    "smoke": Budget(steps=12, validate_every=4, validation_points=512),
    "quick": Budget(steps=500, validate_every=20, validation_points=2048, patience=QUICK_PATIENCE),
    "paper": Budget(steps=20_000, validate_every=40, validation_points=2048),
}
#: ``pings-pf-distill`` steps are ~2.5× cheaper (batch 1024): more of them in the same time.
DISTILL_BUDGETS: Mapping[str, Budget] = {
    "smoke": Budget(steps=12, validate_every=4, validation_points=512),
    "quick": Budget(steps=1000, validate_every=20, validation_points=2048),
    "paper": Budget(steps=20_000, validate_every=40, validation_points=2048),
}


class PingsSampler(Sampler):
    """A PINGS generator trained with ``recipe`` under per-profile ``budgets``.

    Args:
        name: Registry name.
        description: One line for ``pingsbench list``.
        recipe: Every hyper-parameter of the model and its training.
        budgets: Step budget per profile.
        in_default_run: Whether it runs without ``--samplers`` (:attr:`Sampler.in_default_run`).
    """

    def __init__(
        self, name: str, description: str, recipe: Recipe, budgets: Mapping[str, Budget], in_default_run: bool = True
    ) -> None:
        self.name = name
        self.description = description
        self.recipe = recipe
        self.budgets = budgets
        self.in_default_run = in_default_run

    def velocity(self, target: Target, ctx: FitContext) -> tuple[ScoreGuidance | ProbabilityFlow, str]:
        """The residual's target velocity and where its score comes from (``exact``, ``denoiser`` or ``none``).

        Without a closed-form noised score, the shared learned diffusion model (:func:`get_denoiser`).
        """
        if self.recipe.physics == "score":
            score = target.score if target.has("score") else None
            guidance = ScoreGuidance(score, self.recipe.alpha_scale, self.recipe.alpha_power)
            return guidance, "exact" if score is not None else "none"
        if target.has("noised_score"):
            schedule = DiscreteVPSchedule()
            return ProbabilityFlow(ExactEps(target, schedule), schedule), "exact"
        denoiser = get_denoiser(target, ctx)
        return ProbabilityFlow(denoiser, denoiser.schedule), "denoiser"

    def expected_nfe(self, target: Target) -> float:
        return 1.0  # one forward pass g(0, z)

    def fit(self, target: Target, ctx: FitContext) -> SampleFn:
        velocity, score_source = self.velocity(target, ctx)
        budget = ctx.profile.pick(self.budgets)
        config = {"version": VERSION, "score": score_source, **self.recipe.config(), **budget.config()}
        if score_source == "denoiser":  # its options decide the score, so they key the generator
            config["score_model"] = denoiser_config(ctx)
        model = ctx.cached_model(
            "pings",
            target,
            config,
            build=lambda: self.recipe.build(target.dim),
            train=lambda module: train_pings(module, target, velocity, ctx, self.recipe, budget),
        )
        ctx.artifacts["score"] = score_source
        if isinstance(velocity, ProbabilityFlow):
            z = torch.randn(
                FLOW_CHECK_POINTS,
                target.dim,
                generator=ctx.generator("pings", "flow-check", target.name),
                device=ctx.device,
                dtype=ctx.dtype,
            )
            ctx.artifacts["flow_map_rmse"] = flow_map_error(model, velocity, z)
        return one_pass_sampler(model, target.dim, ctx.dtype)


PINGS = PingsSampler(
    "pings",
    "PINGS exactly as published (§3, §5.1): one forward pass g(0, z); score-guided residual",
    Recipe(),
    PAPER_BUDGETS,
)
PINGS_PF = PingsSampler(
    "pings-pf",
    "PINGS whose residual is the VP probability-flow ODE: g is that ODE's flow map (checked against dopri5)",
    Recipe(physics="probability-flow"),
    PAPER_BUDGETS,
    in_default_run=False,  # the ablation between pings and pings-pf-distill: run it by name
)
PINGS_PF_DISTILL = PingsSampler(
    "pings-pf-distill",
    "pings-pf anchored at t = 0 to its own ODE's solutions (DPM-Solver++ pairs); batch 1024, cosine lr",
    Recipe(
        physics="probability-flow",
        batch=1024,
        lr=2e-3,
        lr_schedule="cosine",
        distill_pairs=16_384,
        distill_nfe=100,
        distill_weight=4.0,
    ),
    DISTILL_BUDGETS,
)


@hookimpl
def register_samplers(register):
    register(PINGS)
    register(PINGS_PF)
    register(PINGS_PF_DISTILL)
