"""Training of the learned denoiser (any parametrization) and of the paper's ε-net (PINGS §5.4.1, the DDPM
objective), the cached models every learned solver row shares, and of the learned solver schedules (``+ld3``)."""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench.contracts import FitContext, Target

from samplers.nets import STANDARDIZATION, fit_standardization, standardization_draws

from .model import Denoiser, DenoiserConfig, EpsNet, ExactEps
from .sample import Solver, dpm_solver_pp_2m, edm_heun
from .schedule import DiscreteVPSchedule, LearnedSchedule, timesteps

#: Training budgets per profile (PINGS §5.4.1: 20 000 steps at batch 2048 for ``paper``).
EPSNET_BUDGETS: Mapping[str, Mapping[str, int]] = {
    "smoke": {"steps": 200, "batch": 256},
    "quick": {"steps": 3000, "batch": 1024},
    "paper": {"steps": 20_000, "batch": 2048},
}
#: Optimiser of §5.4.1: Adam 1e-3, learning rate × 0.999 every 1000 steps, no EMA.
OPTIMISER = {"lr": 1e-3, "lr_decay": 0.999, "lr_decay_every": 1000}
#: Held-out (x_0, i, ε) triples for the final ε error; enough for ~1% precision.
EVAL_POINTS = 20_000
MAX_LOGGED_POINTS = 500


def _noised_batch(
    target: Target, schedule: DiscreteVPSchedule, n: int, generator: torch.Generator, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh DDPM training triples (eq. 24): ``x_t = √ᾱ_i x_0 + √(1-ᾱ_i) ε``, ``i ~ U{1..T}``, ``t = i/T``.

    Returns ``(x_t, t, ε)``, shapes ``(n, d)``, ``(n,)``, ``(n, d)``.
    """
    device = generator.device
    x0 = target.sample(n, generator, dtype=dtype)
    i = torch.randint(1, schedule.T + 1, (n,), generator=generator, device=device)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    log_alpha = schedule.grid_log_alpha(x0)[i - 1, None]
    x_t = torch.exp(log_alpha) * x0 + torch.sqrt(-torch.expm1(2 * log_alpha)) * noise
    # One rounding of i/T into ``dtype`` (in bfloat16, i itself would already round).
    return x_t, (i.to(torch.float64) / schedule.T).to(dtype), noise


def train_epsnet(model: EpsNet, target: Target, ctx: FitContext, steps: int, batch: int) -> dict[str, Any]:
    """Train ``model`` in place with the DDPM objective (PINGS eq. 25) on fresh target draws each step.

    Returns:
        ``{"history": {"step", "loss"}}`` (per-coordinate MSE averaged over logging
        intervals, at most 500 points) and, when the target has a noised score,
        ``eps_rmse`` (RMSE of ``ε̂ - ε*`` per coordinate over ``i ~ U{1..T}``) and
        ``loss_floor`` (the DDPM loss of ``ε*``, the best any network can reach).
    """
    history = _fit(model, target, ctx, steps, batch, "epsnet", f"ε-net {target.name}",
                   lambda x_t, t, noise: (model(x_t, t) - noise).square().mean())
    info: dict[str, Any] = {"history": history}
    if target.has("noised_score"):
        info.update(epsnet_error(model, target, ctx.generator("epsnet-eval", target.name), ctx.dtype))
    return info


def _fit(
    model: nn.Module, target: Target, ctx: FitContext, steps: int, batch: int, stream: str, desc: str,
    loss_of: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> dict[str, list[float]]:
    """The optimisation loop both diffusion models share; returns the logged loss history.

    Each step draws a fresh noised batch ``(x_t, t, ε)`` from the ``stream`` generator and takes
    one Adam step on ``loss_of(x_t, t, ε)`` (0-d), with :data:`OPTIMISER`'s step decay; the loss
    is averaged over logging intervals (at most :data:`MAX_LOGGED_POINTS` points).
    """
    generator = ctx.generator(stream, target.name)
    optimiser = torch.optim.Adam(model.parameters(), lr=OPTIMISER["lr"])
    decay = torch.optim.lr_scheduler.StepLR(optimiser, OPTIMISER["lr_decay_every"], OPTIMISER["lr_decay"])
    log_every = max(1, math.ceil(steps / MAX_LOGGED_POINTS))
    history: dict[str, list[float]] = {"step": [], "loss": []}
    running, count = torch.zeros((), device=ctx.device, dtype=ctx.dtype), 0  # summed on device: one sync per log
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not ctx.progress, leave=False):
        loss = loss_of(*_noised_batch(target, model.schedule, batch, generator, ctx.dtype))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay.step()
        running += loss.detach()
        count += 1
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(float(running) / count)
            running, count = running.zero_(), 0
    return history


@torch.no_grad()
def epsnet_error(
    model: nn.Module, target: Target, generator: torch.Generator, dtype: torch.dtype, n: int = EVAL_POINTS
) -> dict[str, float]:
    """``eps_rmse`` of ``model`` against :class:`ExactEps` and the DDPM ``loss_floor`` on ``n`` fresh triples."""
    x_t, t, noise = _noised_batch(target, model.schedule, n, generator, dtype)
    exact = ExactEps(target, model.schedule)(x_t, t)
    return {
        "eps_rmse": float((model(x_t, t) - exact).square().mean().sqrt()),
        "loss_floor": float((exact - noise).square().mean()),
    }


def epsnet_architecture(activation: str = "tanh") -> dict[str, Any]:
    """Keyword arguments of :class:`EpsNet` besides ``dim`` and ``schedule`` (PINGS §5.4.1: 6 × 128)."""
    return {"hidden": 128, "depth": 6, "emb_dim": 64, "activation": activation}


def epsnet_config(ctx: FitContext, activation: str = "tanh") -> dict[str, Any]:
    """The ε-net's cache config (schedule, architecture, optimiser, the profile's budget): JSON-able.

    Also what identifies the ε-net in the cache key of a model built on it (a learned schedule).
    """
    return {"version": 1, "schedule": DiscreteVPSchedule().config(), **epsnet_architecture(activation),
            **OPTIMISER, **ctx.profile.pick(EPSNET_BUDGETS)}


def get_epsnet(target: Target, ctx: FitContext, activation: str = "tanh") -> EpsNet:
    """The paper's ε-net for ``target``, trained once per (target, profile, seed, activation) and cached.

    The historical baseline (``@paper-eps``, ``@silu``); the default learned rows use
    :func:`get_denoiser`.  Every caller with the same context gets the same trained module.
    """
    schedule = DiscreteVPSchedule()
    budget = ctx.profile.pick(EPSNET_BUDGETS)
    return ctx.cached_model(
        "epsnet",
        target,
        epsnet_config(ctx, activation),
        build=lambda: EpsNet(target.dim, schedule, **epsnet_architecture(activation)),
        train=lambda model: train_epsnet(model, target, ctx, **budget),
    )


#: The learned diffusion model of every default learned row (diffusion solvers, distilled students, pings-pf
#: without a closed-form score); chosen by ``python -m samplers.diffusion.compare`` (README, reports/parametrizations).
DEFAULT_DENOISER = DenoiserConfig(prediction="v", precondition="edm", standardize=True, activation="silu")
#: Bump when :func:`train_denoiser` changes what it computes (part of the denoiser's cache key).
DENOISER_VERSION = 1


def train_denoiser(model: Denoiser, target: Target, ctx: FitContext, steps: int, batch: int) -> dict[str, Any]:
    """Fit ``model``'s standardisation (if configured), then train it in place on :meth:`Denoiser.loss`.

    Same data stream, optimiser and budget as :func:`train_epsnet` (fresh target draws each step,
    ``i ~ U{1..T}``); the standardisation uses :data:`~samplers.nets.STANDARDIZATION`'s seeded draws.

    Returns:
        As :func:`train_epsnet`: ``history`` (the loss in the net's own units) and, with a noised
        score, ``eps_rmse`` and ``loss_floor`` (of the ε the model implies).
    """
    if model.config.standardize:
        fit_standardization(model, standardization_draws(target, ctx, "denoiser"))
    history = _fit(model, target, ctx, steps, batch, "denoiser", f"denoiser {model.config.label} {target.name}",
                   model.loss)
    info: dict[str, Any] = {"history": history, "denoiser": model.config.label}
    if target.has("noised_score"):
        info.update(epsnet_error(model, target, ctx.generator("epsnet-eval", target.name), ctx.dtype))
    return info


def denoiser_config(ctx: FitContext, config: DenoiserConfig = DEFAULT_DENOISER) -> dict[str, Any]:
    """The denoiser's cache config (version, schedule, options, standardisation, optimiser, budget): JSON-able.

    Also what identifies it in the cache key of a model built on it (a learned schedule).
    """
    standardization = dict(STANDARDIZATION) if config.standardize else None
    return {"version": DENOISER_VERSION, "schedule": DiscreteVPSchedule().config(), **config.to_json(),
            "standardization": standardization, **OPTIMISER, **ctx.profile.pick(EPSNET_BUDGETS)}


def get_denoiser(target: Target, ctx: FitContext, config: DenoiserConfig = DEFAULT_DENOISER) -> Denoiser:
    """The learned diffusion model for ``target`` with options ``config``, trained once and cached.

    Its ``forward`` is an ε-predictor, so every solver runs on it; the quick budget is the
    ε-net's (:data:`EPSNET_BUDGETS`).  Every caller with the same context and config gets the
    same trained module.
    """
    schedule = DiscreteVPSchedule()
    budget = ctx.profile.pick(EPSNET_BUDGETS)
    return ctx.cached_model(
        "denoiser",
        target,
        denoiser_config(ctx, config),
        build=lambda: Denoiser(target.dim, schedule, config),
        train=lambda model: train_denoiser(model, target, ctx, **budget),
    )


#: Learned-schedule budgets per profile: ``iterations`` Adam steps on one ``batch`` of prior draws, whose
#: targets are a ``teacher_steps``-step DPM-Solver++(2M) solve; ``heldout`` fresh draws evaluate it.
SCHEDULE_BUDGETS: Mapping[str, Mapping[str, int]] = {
    "smoke": {"iterations": 15, "batch": 256, "teacher_steps": 20, "heldout": 512},
    "quick": {"iterations": 100, "batch": 512, "teacher_steps": 100, "heldout": 4096},
    "paper": {"iterations": 400, "batch": 2048, "teacher_steps": 200, "heldout": 8192},
}
#: Adam's learning rate on the logits of :class:`~.schedule.LearnedSchedule`.
SCHEDULE_LR = 0.05


def teacher_solve(eps_model: nn.Module, z: Tensor, steps: int, denoise: bool) -> Tensor:
    """Many-step reference solve: DPM-Solver++(2M) on log-SNR-uniform nodes from ``t = 1`` to ``t = 1/T``.

    Args:
        eps_model: ε-predictor with a ``schedule``.
        z: Prior draws ``x_T``, shape ``(n, d)``.
        steps: Teacher steps (network calls).
        denoise: Return the data prediction at ``t = 1/T`` (what solvers ending at σ = 0 return, e.g.
            :func:`~.sample.edm_heun`) instead of the state there; one more call.

    Returns:
        The endpoints, shape ``(n, d)``.
    """
    schedule = eps_model.schedule
    x = dpm_solver_pp_2m(eps_model, z, timesteps(schedule, steps, "logSNR").to(z.device))
    if not denoise:
        return x
    t_end = torch.full((len(x),), schedule.t_min, device=x.device, dtype=x.dtype)
    alpha, sigma = schedule.alpha(t_end)[:, None], schedule.sigma(t_end)[:, None]
    return (x - sigma * eps_model(x, t_end)) / alpha


def schedule_loss(solver: Solver, eps_model: nn.Module, nodes: Tensor, z: Tensor, reference: Tensor) -> Tensor:
    """Mean squared distance ``E|solver(z; nodes) - reference|²`` over the batch (0-d, differentiable)."""
    return (solver(eps_model, z, nodes) - reference).square().sum(1).mean()


def train_schedule(
    module: LearnedSchedule, solver: Solver, eps_model: nn.Module, target: Target, ctx: FitContext,
    labels: tuple[str, ...], iterations: int, batch: int, teacher_steps: int, heldout: int,
) -> dict[str, Any]:
    """Fit ``module``'s logits by gradient through the solve so its endpoints match the teacher's.

    The training batch and the held-out batch are prior draws from two different generator
    streams (``ctx.generator("ld3-train", *labels)`` and ``ctx.generator("ld3-heldout", *labels)``).
    The best iterate on the training batch is kept, so the result is never worse there than the
    starting schedule.

    Returns:
        ``history`` (step, training loss), ``train_loss_start``/``train_loss`` and
        ``heldout_loss_start``/``heldout_loss`` (the loss of the starting and the learned schedule
        on each batch) and the learned ``nodes``.
    """
    dtype = ctx.dtype

    def draws(stream: str, n: int) -> tuple[Tensor, Tensor]:
        generator = ctx.generator(stream, *labels)
        z = torch.randn(n, target.dim, generator=generator, device=generator.device, dtype=dtype)
        with torch.no_grad():
            return z, teacher_solve(eps_model, z, teacher_steps, denoise=solver is edm_heun)

    z_train, x_train = draws("ld3-train", batch)
    z_heldout, x_heldout = draws("ld3-heldout", heldout)
    with torch.no_grad():
        start_nodes = module().detach()
        heldout_start = float(schedule_loss(solver, eps_model, start_nodes, z_heldout, x_heldout))
    optimiser = torch.optim.Adam(module.parameters(), lr=SCHEDULE_LR)
    history: dict[str, list[float]] = {"step": [], "loss": []}
    best_loss, best_logits = math.inf, module.logits.detach().clone()
    for step in range(iterations + 1):  # the last pass only evaluates the last update
        loss = schedule_loss(solver, eps_model, module(), z_train, x_train)
        value = float(loss.detach())
        history["step"].append(step)
        history["loss"].append(value)
        if value < best_loss:
            best_loss, best_logits = value, module.logits.detach().clone()
        if step == iterations:
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        module.logits.copy_(best_logits)
        nodes = module()
        heldout_loss = float(schedule_loss(solver, eps_model, nodes, z_heldout, x_heldout))
    return {
        "history": history,
        "train_loss_start": history["loss"][0],
        "train_loss": best_loss,
        "heldout_loss_start": heldout_start,
        "heldout_loss": heldout_loss,
        "nodes": nodes.tolist(),
    }


def get_learned_schedule(
    target: Target, ctx: FitContext, eps_model: nn.Module, eps_key: Mapping[str, Any], solver: Solver,
    steps: int, start_spacing: str,
) -> LearnedSchedule:
    """The learned nodes of one solver at one step count on one ε-predictor, trained once and cached.

    Args:
        target: The target (its prior dimension; part of the cache key).
        ctx: Device, dtype, seed, budget and cache.
        eps_model: The ε-predictor the solver runs on; the teacher solve uses it too.
        eps_key: JSON-able facts identifying ``eps_model`` (part of the cache key), e.g.
            ``{"kind": "exact"}`` or the ε-net's config.
        solver: The solver (:mod:`.sample`); its name is part of the key.
        steps: Solver steps ``N`` (``N + 1`` nodes, ``N - 1`` of them free).
        start_spacing: The :func:`~.schedule.timesteps` spacing the logits start from.

    Returns:
        The trained :class:`~.schedule.LearnedSchedule` (call it for the nodes).
    """
    schedule = eps_model.schedule
    budget = ctx.profile.pick(SCHEDULE_BUDGETS)
    config = {
        "version": 1, "eps": dict(eps_key), "solver": solver.__name__, "steps": steps, "start": start_spacing,
        "teacher": "dpm-solver++-2m, logSNR", "lr": SCHEDULE_LR, **budget,
    }
    labels = (target.name, solver.__name__, str(steps), json.dumps(config["eps"], sort_keys=True))
    return ctx.cached_model(
        "ld3-schedule",
        target,
        config,
        build=lambda: LearnedSchedule(schedule, timesteps(schedule, steps, start_spacing)),
        train=lambda module: train_schedule(module, solver, eps_model, target, ctx, labels, **budget),
    )
