"""PINGS training (§3.3–3.4): boundary, distribution-matching and residual losses.

``L = λ_bc L_bc + λ_mmd L_mmd + λ_mom L_mom + λ_phys L_phys`` (eq. 9) with, per step,
fresh ``z ~ N(0, I)`` for each term, ``t ~ U(0, 1)`` and fresh target draws:

* ``L_bc = E‖g(1, z) - z‖²`` (eq. 10);
* ``L_mmd`` = unbiased kernel-bank MMD² of ``g(0, Z)`` against target draws (eq. 11);
* ``L_mom = ‖μ_θ - μ‖² + ‖Σ_θ - Σ‖_F²`` of the same two batches (eq. 12);
* ``L_phys = E‖∂_t g(t, z) - v(g(t, z), t)‖²`` (eq. 13) with the full time derivative;
* optionally ``L_pair = E‖g(0, z_i) - x_i‖²`` on pairs solved with the residual's ODE
  (:attr:`Recipe.distill_pairs`).

Norms are the paper's (summed over coordinates, averaged over the batch).
Early stopping watches the MMD² of ``g(0, ·)`` on a fixed held-out validation set
rather than the noisy training loss; the best weights are kept in memory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any, Callable, Literal, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.contracts import FitContext, Target

from .mmd import KernelBankMMD
from .model import PingsMLP, value_and_time_derivative
from .physics import ProbabilityFlow
from .sample import endpoint_samples

Velocity = Callable[[Tensor, Tensor], Tensor]
TERMS = ("bc", "mmd", "mom", "phys")
MAX_LOGGED_POINTS = 500


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of a PINGS model (defaults: the paper's, §3.2–3.4 and §5.1.2).

    Attributes:
        physics: Residual target: ``"score"`` (eq. 7, ``α(t) s(x)``) or ``"probability-flow"``.
        weights: ``(λ_bc, λ_mmd, λ_mom, λ_phys)``.
        alpha_scale: ``α_scale`` of eq. 7.
        alpha_power: ``α_power`` of eq. 7.
        hidden: Hidden width.
        depth: Number of hidden layers.
        batch: Points per term and step (prior draws, times and target draws).
        lr: Adam learning rate.
        lr_schedule: ``"step"`` (× ``lr_decay`` every ``lr_decay_every`` steps, the paper's)
            or ``"cosine"`` (cosine decay to zero over the step budget).
        lr_decay: Factor of the step schedule.
        lr_decay_every: Period of the step schedule.
        patience: Early stopping: steps without a new best validation MMD².
        distill_pairs: Number of prior draws ``z_i`` solved once, before training, with the
            residual's own ODE to ``x_i`` (probability-flow physics only; 0: none).  Each
            step's ``t = 0`` rows are then drawn from these ``z_i`` and the term
            ``L_pair = E‖g(0, z_i) - x_i‖²`` anchors each sample to its own ODE endpoint
            ("distill from a pre-trained score/flow model", the paper's mitigation §6.1 item 1).
        distill_nfe: Steps of DPM-Solver++(2M) for those solves.
        distill_weight: ``λ_pair``.
    """

    physics: Literal["score", "probability-flow"] = "score"
    weights: tuple[float, float, float, float] = (1.0, 2.0, 0.1, 0.5)
    alpha_scale: float = 1.0
    alpha_power: float = 1.0
    hidden: int = 128
    depth: int = 6
    batch: int = 2048
    lr: float = 1e-3
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_decay: float = 0.999
    lr_decay_every: int = 1000
    patience: int = 3000
    distill_pairs: int = 0
    distill_nfe: int = 100
    distill_weight: float = 0.0

    def loss_weights(self) -> dict[str, float]:
        """``{term: λ}`` of every term this recipe trains on."""
        weights = dict(zip(TERMS, self.weights))
        if self.distill_pairs:
            weights["pair"] = self.distill_weight
        return weights

    def build(self, dim: int) -> PingsMLP:
        """The untrained generator for a ``dim``-dimensional target."""
        return PingsMLP(dim, hidden=self.hidden, depth=self.depth)

    def config(self) -> dict[str, Any]:
        """JSON-able fields (part of the model-cache key)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long to train and how often to validate.

    Attributes:
        steps: Maximum number of optimiser steps.
        validate_every: Steps between validations (and logged points).
        validation_points: Size of the fixed held-out validation set (prior and target draws).
        patience: Early stopping at this budget: steps without a new best validation MMD² before
            training stops (``None``: the recipe's :attr:`Recipe.patience`).  The best weights are
            kept either way, so stopping changes the model only if a later step would have beaten them.
    """

    steps: int
    validate_every: int
    validation_points: int
    patience: int | None = None

    def config(self) -> dict[str, int | None]:
        config = dataclasses.asdict(self)
        if self.patience is None:  # the key of a budget without its own patience stays what it was
            del config["patience"]
        return config


def moment_loss(x: Tensor, y: Tensor) -> Tensor:
    """``‖μ_x - μ_y‖² + ‖Σ_x - Σ_y‖_F²`` with unbiased covariances (eq. 12); ``x``, ``y`` ``(n, d)``."""
    mean_x, mean_y = x.mean(0), y.mean(0)
    cov_x = torch.cov(x.T).reshape(x.shape[1], -1)
    cov_y = torch.cov(y.T).reshape(y.shape[1], -1)
    return (mean_x - mean_y).square().sum() + (cov_x - cov_y).square().sum()


def loss_terms(
    model: nn.Module,
    velocity: Velocity,
    mmd: KernelBankMMD,
    batch: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """The four loss terms of eq. 9 on one batch (and ``"pair"`` if it has ``x_pair``).

    ``"mmd"`` is returned without the target–target part of MMD² (constant in θ,
    see :meth:`KernelBankMMD.generator_terms`); add ``mmd.target_term(batch["y"])``
    for the value.

    Args:
        model: ``g_θ(z, t)``.
        velocity: ``v(x, t)`` of the residual.
        mmd: The differentiable MMD².
        batch: ``z_bc``, ``z_data``, ``z_phys`` (prior draws), ``t_phys`` (times),
            ``y`` (target draws) and optionally ``x_pair`` (ODE endpoints of ``z_data``),
            each with the batch as first dimension.
    """
    z_bc, z_data = batch["z_bc"], batch["z_data"]
    n = len(z_bc)
    ends = torch.cat([torch.ones(n, dtype=z_bc.dtype, device=z_bc.device), torch.zeros_like(z_data[:, 0])])
    x_prior, x_data = model(torch.cat([z_bc, z_data]), ends).split([n, len(z_data)])
    x_t, dx_dt = value_and_time_derivative(model, batch["z_phys"], batch["t_phys"])
    terms = {
        "bc": (x_prior - z_bc).square().sum(1).mean(),
        "mmd": mmd.generator_terms(x_data, batch["y"]),
        "mom": moment_loss(x_data, batch["y"]),
        "phys": (dx_dt - velocity(x_t, batch["t_phys"])).square().sum(1).mean(),
    }
    if "x_pair" in batch:
        terms["pair"] = (x_data - batch["x_pair"]).square().sum(1).mean()
    return terms


def draw_batch(target: Target, size: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
    """Independent prior draws per term, ``t ~ U(0, 1)`` and fresh target draws (§3.4)."""
    device = generator.device

    def prior() -> Tensor:
        return torch.randn(size, target.dim, generator=generator, device=device, dtype=dtype)

    return {
        "z_bc": prior(),
        "z_data": prior(),
        "z_phys": prior(),
        "t_phys": torch.rand(size, generator=generator, device=device, dtype=dtype),
        "y": target.sample(size, generator, dtype=dtype),
    }


def training_step(
    model: nn.Module,
    velocity: Velocity,
    mmd: KernelBankMMD,
    optimiser: torch.optim.Optimizer,
    weights: Mapping[str, float],
    batch: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """One optimiser step on ``Σ λ_k L_k`` (eq. 9); returns the terms (``"mmd"`` as in :func:`loss_terms`)."""
    terms = loss_terms(model, velocity, mmd, batch)
    loss = sum(weight * terms[key] for key, weight in weights.items())
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return terms


def _learning_rate_schedule(
    optimiser: torch.optim.Optimizer, recipe: Recipe, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if recipe.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimiser, recipe.lr_decay_every, recipe.lr_decay)
    if recipe.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    raise ValueError(f"unknown learning-rate schedule {recipe.lr_schedule!r}")


def train_pings(
    model: nn.Module,
    target: Target,
    velocity: Velocity,
    ctx: FitContext,
    recipe: Recipe,
    budget: Budget,
) -> dict[str, Any]:
    """Train ``model`` in place; keep the weights with the best validation MMD².

    Returns:
        ``history`` (``step``, ``loss``, ``bc``, ``mmd``, ``mom``, ``phys`` [, ``pair``],
        ``val_mmd``: the training terms of the step at each validation, at most 500 points),
        ``stopped_at`` (last step run), ``best_step``, ``best_val_mmd`` and
        ``seconds_per_step`` (mean wall time of an optimiser step, validation excluded).

    Raises:
        FloatingPointError: The training loss or the validation MMD² is not finite at a validation
            step (training diverged); the row fails with this reason instead of sampling untrained weights.
    """
    generator = ctx.generator("pings", "train", target.name)
    validation = ctx.generator("pings", "validation", target.name)
    z_val = torch.randn(budget.validation_points, target.dim, generator=validation, device=ctx.device, dtype=ctx.dtype)
    y_val = target.sample(budget.validation_points, validation, dtype=ctx.dtype)
    mmd = KernelBankMMD()
    y_val_term = mmd.target_term(y_val)

    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    schedule = _learning_rate_schedule(optimiser, recipe, budget.steps)

    weights = recipe.loss_weights()
    if recipe.distill_pairs:
        if not isinstance(velocity, ProbabilityFlow):
            raise ValueError("distillation pairs need the probability-flow residual (physics='probability-flow')")
        z_pairs = torch.randn(
            recipe.distill_pairs, target.dim, generator=ctx.generator("pings", "pairs", target.name),
            device=ctx.device, dtype=ctx.dtype,
        )
        x_pairs = velocity.solve(z_pairs, recipe.distill_nfe)

    validate_every = max(budget.validate_every, math.ceil(budget.steps / MAX_LOGGED_POINTS))
    history: dict[str, list[float]] = {key: [] for key in ("step", "loss", *weights, "val_mmd")}
    patience = recipe.patience if budget.patience is None else budget.patience
    best_val, best_step, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    step_seconds, step = 0.0, 0
    progress = tqdm(range(1, budget.steps + 1), desc=f"PINGS {target.name}", disable=not ctx.progress, leave=False)
    for step in progress:
        start = time.perf_counter()
        batch = draw_batch(target, recipe.batch, generator, ctx.dtype)
        if recipe.distill_pairs:  # the t = 0 rows become a minibatch of the solved pairs
            index = torch.randint(recipe.distill_pairs, (recipe.batch,), generator=generator, device=ctx.device)
            batch["z_data"], batch["x_pair"] = z_pairs[index], x_pairs[index]
        terms = training_step(model, velocity, mmd, optimiser, weights, batch)
        schedule.step()
        step_seconds += time.perf_counter() - start

        if step % validate_every and step != budget.steps:
            continue
        with torch.no_grad():
            val = float(mmd.generator_terms(endpoint_samples(model, z_val), y_val) + y_val_term)
            full_mmd = terms["mmd"] + mmd.target_term(batch["y"])
        logged = {**{k: float(v.detach()) for k, v in terms.items()}, "mmd": float(full_mmd)}
        history["step"].append(step)
        history["loss"].append(sum(w * logged[k] for k, w in weights.items()))
        for key in weights:
            history[key].append(logged[key])
        history["val_mmd"].append(val)
        if not (math.isfinite(history["loss"][-1]) and math.isfinite(val)):
            # A non-finite loss has already turned the weights non-finite (Adam steps on NaN gradients), so
            # going on would only return the untrained start weights as if they were a model.
            raise FloatingPointError(
                f"PINGS training on {target.name} diverged: loss {history['loss'][-1]:.3g}, validation MMD² "
                f"{val:.3g} at step {step}"
            )
        progress.set_postfix(val_mmd=f"{val:.2e}", best=f"{min(best_val, val):.2e}")
        if val < best_val:
            best_val, best_step, best_state = val, step, copy.deepcopy(model.state_dict())
        elif step - best_step >= patience:
            break
    model.load_state_dict(best_state)
    return {
        "history": history,
        "stopped_at": step,
        "best_step": best_step,
        "best_val_mmd": best_val,
        "seconds_per_step": step_seconds / max(step, 1),
    }
