"""pytest-benchmark: one optimiser step of every model the default run trains (and MeanFlow's), at the quick batch.

Run with ``pytest tests/test_bench_training_steps.py --benchmark-only`` (skipped otherwise); on a
shared 2-core machine add ``OMP_NUM_THREADS=1`` or nothing else running, and compare steps within
one run.  The default run's training time is the sum over its models of steps × these times (plus
each student's pair generation), so a faster step shows here before it shows in a run.

Every step is the trainer's own: the model is built by its real entry point (``flow_matching_model``,
``distilled_model``, …) on an in-memory cache, and the minibatch-loss closure that trainer hands to
its loop (:func:`samplers.flow.train_steps`) is captured instead of looped over, then timed as the
loop runs it (loss, backward, Adam step).  The denoiser's loop is :func:`samplers.diffusion.train._fit`,
timed for ``DENOISER_STEPS`` steps per round (``steps_per_round`` in ``extra_info``: divide by it); PINGS
steps are :func:`samplers.pings.train.training_step` on one drawn batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
import torch

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.profiles import get_profile
from samplers.diffusion import DEFAULT_DENOISER, Denoiser, DiscreteVPSchedule
from samplers.diffusion.train import EPSNET_BUDGETS, _fit
from samplers.distill import train as distill_train
from samplers.flow import train as flow_train
from samplers.meanflow import train as meanflow_train
from samplers.pings import KernelBankMMD
from samplers.pings.plugin import PINGS, PINGS_PF_DISTILL
from samplers.pings.train import draw_batch, training_step
from targets.dho import DampedOscillator
from targets.mixtures import gmm3d

TARGETS = {"gmm3d": gmm3d, "dho": DampedOscillator}
#: Denoiser steps per benchmark round (its loop, not a captured closure).
DENOISER_STEPS = 5


@dataclasses.dataclass
class CapturedLoop:
    """What a trainer passed to ``train_steps``: the module, its minibatch loss and its learning rate."""

    module: torch.nn.Module
    loss_at: Callable[[], torch.Tensor]
    lr: float


class _Captured(Exception):
    def __init__(self, loop: CapturedLoop) -> None:
        self.loop = loop


def _capture(module, loss_at, steps, lr, ctx, desc):
    raise _Captured(CapturedLoop(module, loss_at, lr))


def quick_context() -> FitContext:
    """The quick profile on CPU, float32, seed 0, with an in-memory cache (nothing is written)."""
    return FitContext(torch.device("cpu"), torch.float32, 0, get_profile("quick"), ModelCache(None))


def captured_loop(monkeypatch, build: Callable[[], Any], *modules) -> CapturedLoop:
    """Run ``build`` (a model's entry point) until its trainer enters ``train_steps``; return what it passed."""
    for module in modules:
        monkeypatch.setattr(module, "train_steps", _capture)
    with pytest.raises(_Captured) as captured:
        build()
    return captured.value.loop


def step_of(loop: CapturedLoop) -> Callable[[], None]:
    """One iteration of ``train_steps``' body: minibatch loss, backward, Adam step."""
    optimizer = torch.optim.Adam(loop.module.parameters(), lr=loop.lr)

    def step() -> None:
        loss = loop.loss_at()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _run(benchmark, step: Callable[[], None], rounds: int = 20, steps_per_round: int = 1) -> None:
    benchmark.extra_info["steps_per_round"] = steps_per_round
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=2)


@pytest.mark.parametrize("target_name", TARGETS)
def test_flow_matching_step(benchmark, monkeypatch, target_name):
    target = TARGETS[target_name]()
    loop = captured_loop(monkeypatch, lambda: flow_train.flow_matching_model(target, quick_context()), flow_train)
    _run(benchmark, step_of(loop))


@pytest.mark.parametrize("target_name", TARGETS)
def test_reflow_step(benchmark, monkeypatch, target_name):
    target = TARGETS[target_name]()
    # The base flow is trained for zero steps and the pairs are few: only the step is timed here.
    monkeypatch.setitem(flow_train.FLOW_MATCHING_BUDGETS, "quick",
                        {**flow_train.FLOW_MATCHING_BUDGETS["quick"], "steps": 0})
    monkeypatch.setitem(flow_train.REFLOW_BUDGETS, "quick", {**flow_train.REFLOW_BUDGETS["quick"], "pairs": 4096})
    loop = captured_loop(monkeypatch, lambda: flow_train.rectified_flow_model(target, quick_context()), flow_train)
    _run(benchmark, step_of(loop))


@pytest.mark.parametrize("target_name", TARGETS)
def test_meanflow_step(benchmark, monkeypatch, target_name):
    target = TARGETS[target_name]()
    loop = captured_loop(monkeypatch, lambda: meanflow_train.meanflow_model(target, quick_context()), meanflow_train)
    _run(benchmark, step_of(loop))


@pytest.mark.parametrize("target_name", TARGETS)
def test_distilled_step(benchmark, monkeypatch, target_name):
    target = TARGETS[target_name]()
    # An untrained teacher and few pairs: the student's step does not depend on either.
    monkeypatch.setitem(EPSNET_BUDGETS, "quick", {**EPSNET_BUDGETS["quick"], "steps": 0})
    monkeypatch.setitem(distill_train.DISTILL_BUDGETS, "quick",
                        {**distill_train.DISTILL_BUDGETS["quick"], "pairs": 4096, "teacher_steps": 2})
    loop = captured_loop(monkeypatch, lambda: distill_train.distilled_model(target, quick_context()), distill_train)
    _run(benchmark, step_of(loop))


@pytest.mark.parametrize("target_name", TARGETS)
def test_denoiser_step(benchmark, target_name):
    target, ctx = TARGETS[target_name](), quick_context()
    model = Denoiser(target.dim, DiscreteVPSchedule(), DEFAULT_DENOISER)  # untrained; the cache's copy is frozen
    batch = EPSNET_BUDGETS["quick"]["batch"]
    # The denoiser's own loop (fresh noised batch, loss, backward, Adam), DENOISER_STEPS steps a round.
    _run(benchmark, lambda: _fit(model, target, ctx, DENOISER_STEPS, batch, "denoiser", "benchmark", model.loss),
         rounds=5, steps_per_round=DENOISER_STEPS)


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("sampler", [PINGS, PINGS_PF_DISTILL], ids=lambda s: s.name)
def test_pings_step(benchmark, monkeypatch, sampler, target_name):
    target, ctx = TARGETS[target_name](), quick_context()
    monkeypatch.setitem(EPSNET_BUDGETS, "quick", {**EPSNET_BUDGETS["quick"], "steps": 0})
    velocity, _ = sampler.velocity(target, ctx)
    recipe = sampler.recipe
    model = recipe.build(target.dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    generator = torch.Generator().manual_seed(0)
    batch = draw_batch(target, recipe.batch, generator, torch.float32)
    if recipe.distill_pairs:  # the t = 0 rows are solved pairs; their values do not change the step's cost
        batch["x_pair"] = batch["y"]
    mmd, weights = KernelBankMMD(), recipe.loss_weights()
    _run(benchmark, lambda: training_step(model, velocity, mmd, optimiser, weights, batch))
