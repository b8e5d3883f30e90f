"""Flow matching and rectified flow on the straight path.

Time runs as everywhere in pingsbench: the prior at ``t = 1``, the data at
``t = 0``.  The straight (rectified) path between a data point ``x_0`` and a
prior draw ``z ~ N(0, I)`` is::

    x_t = (1 - t) x_0 + t z,        dx_t/dt = z - x_0

(Lipman et al., 2023, eq. 20 with σ_min = 0; Liu et al., 2023, eq. 1, with
time reversed).  A velocity network ``v_θ(x, t)`` regresses the conditional
velocity ``z - x_0`` (the conditional flow-matching loss, Lipman et al. eq. 9),
whose minimiser is the marginal velocity ``E[z - x_0 | x_t = x]``; samples are
drawn by integrating ``dx/dt = v_θ(x, t)`` from ``t = 1`` to ``t = 0``.

* ``flow-matching-<N>``: one velocity net per target, shared by every ``N``;
  ``N`` Euler steps.  ``ot-flow-matching-<N>`` trains on minibatch
  optimal-transport couplings instead of independent pairs (Tong et al., 2024,
  OT-CFM), which straightens the paths.
* ``rectified-flow-1``: one reflow (Liu et al., 2023, Alg. 1): the velocity
  net is re-trained on pairs ``(z, ODE(z))`` of the flow-matching model and
  sampled with a single Euler step.

Every network here is a :class:`TimeMLP` of the ε-net's size (6 hidden
layers × 128, tanh), so comparisons are at equal capacity, and works on
per-coordinate standardised data (:func:`fit_standardization`); samples are
mapped back to data space after the last network call.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bench import hookimpl
from bench.contracts import FitContext, SampleFn, Sampler, SamplerFamily, Target

#: Width, depth and time features of every network in this module (those of the ε-net, PINGS §3.2 / §5.4.1).
ARCH: dict[str, Any] = {"hidden": 128, "depth": 6, "time_features": 64, "activation": "tanh"}


class TimeMLP(nn.Module):
    """``f(x, t_1, ..., t_k)``: an MLP on ``x`` concatenated with sinusoidal features of each time.

    Six tanh layers of width 128 with Xavier weights and zero biases, as the
    PINGS generator and the ε-net (PINGS §3.2, §5.4.1).  Each time input gets
    ``time_features`` sinusoidal features at angular frequencies spaced
    geometrically in ``[1, 100]`` (periods from 2π down to ~0.06), enough to
    resolve ``t ∈ [0, 1]`` without the aliasing of very high frequencies.

    Args:
        dim: Dimension ``d`` of ``x`` and of the output.
        n_times: Number ``k`` of scalar time inputs (0: a plain MLP on ``x``).
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        time_features: Sinusoidal features per time input (even).
    """

    def __init__(self, dim: int, n_times: int = 1, hidden: int = 128, depth: int = 6, time_features: int = 64) -> None:
        super().__init__()
        self.n_times = n_times
        half = time_features // 2
        self.register_buffer("frequencies", torch.logspace(0.0, 2.0, half) if n_times else torch.empty(0))
        widths = [dim + n_times * 2 * half] + [hidden] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Affine map between data space and the standardised space the network works in
        # (identity until fit_standardization sets it); saved with the weights.
        self.register_buffer("data_mean", torch.zeros(dim))
        self.register_buffer("data_std", torch.ones(dim))

    def forward(self, x: Tensor, *times: Tensor | float) -> Tensor:
        """Evaluate the network.

        Args:
            x: Points, shape ``(n, d)``.
            *times: ``n_times`` times, each a float, a scalar tensor, or shape ``(n,)`` / ``(n, 1)``.

        Returns:
            Shape ``(n, d)``.
        """
        if len(times) != self.n_times:
            raise TypeError(f"expected {self.n_times} time inputs, got {len(times)}")
        features = [x]
        for t in times:
            t = torch.as_tensor(t, device=x.device, dtype=x.dtype).reshape(-1, 1).expand(len(x), 1)
            angles = t * self.frequencies
            features += [angles.sin(), angles.cos()]
        return self.net(torch.cat(features, dim=1))

    def standardize(self, x: Tensor) -> Tensor:
        """Data space → network space: ``(x - mean) / std`` per coordinate."""
        return (x - self.data_mean) / self.data_std

    def unstandardize(self, y: Tensor) -> Tensor:
        """Network space → data space: ``mean + std · y`` per coordinate."""
        return self.data_mean + self.data_std * y


#: Data standardisation: per-coordinate mean and std of ``draws`` points, stds floored at
#: ``min_std_ratio`` × the largest (a coordinate that never varies, like dho's x(0), stays finite).
STANDARDIZATION = {"draws": 100_000, "min_std_ratio": 0.01}


def fit_standardization(net: TimeMLP, x: Tensor) -> None:
    """Set ``net``'s data standardisation from samples ``x`` of shape ``(n, d)``.

    Every model here works on per-coordinate standardised data, so the N(0, I)
    prior matches the data's scale in each coordinate.  Without it a target
    whose spread is far below 1 (the oscillator's trajectories vary by ~0.1)
    forces the velocity to contract unit noise by orders of magnitude, and
    small relative errors of the network become large errors in the samples.
    """
    std = x.std(0)
    net.data_mean.copy_(x.mean(0))
    net.data_std.copy_(std.clamp(min=STANDARDIZATION["min_std_ratio"] * float(std.max())))


def standardization_draws(target: Target, ctx: FitContext, kind: str) -> Tensor:
    """Seeded target draws for :func:`fit_standardization`, shape ``(STANDARDIZATION["draws"], dim)``."""
    generator = ctx.generator(kind, target.name, "standardization")
    return target.sample(STANDARDIZATION["draws"], generator, ctx.dtype)


def build_mlp(dim: int, n_times: int) -> TimeMLP:
    """A :class:`TimeMLP` with the shared architecture :data:`ARCH`."""
    return TimeMLP(dim, n_times, hidden=ARCH["hidden"], depth=ARCH["depth"], time_features=ARCH["time_features"])


# --------------------------------------------------------------------------- path, loss, couplings, solvers


def straight_path(x_0: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Point and conditional velocity on the straight path.

    Args:
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws, shape ``(n, d)``.
        t: Times in ``[0, 1]``, shape ``(n, 1)``.

    Returns:
        ``x_t = (1 - t) x_0 + t z`` and ``dx_t/dt = z - x_0``, both ``(n, d)``.
    """
    return (1 - t) * x_0 + t * z, z - x_0


def flow_matching_loss(velocity: nn.Module, x_0: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """Conditional flow-matching loss ``E‖v(x_t, t) - (z - x_0)‖²`` (Lipman et al., 2023, eq. 9).

    Its gradient equals that of ``E‖v(x_t, t) - u_t(x_t)‖²`` with the marginal
    velocity ``u_t(x) = E[z - x_0 | x_t = x]``, so the loss is minimised by ``u_t``.

    Args:
        velocity: ``v(x, t)`` taking ``(n, d)`` and ``(n, 1)``.
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws coupled with ``x_0``, shape ``(n, d)``.
        t: Times, shape ``(n, 1)``.

    Returns:
        Scalar: the squared error summed over dimensions, averaged over points.
    """
    x_t, target = straight_path(x_0, z, t)
    return (velocity(x_t, t) - target).square().sum(1).mean()


def minibatch_ot_coupling(x_0: Tensor, z: Tensor, block: int) -> Tensor:
    """Re-order ``z`` so that ``(x_0[i], z[i])`` is an exact squared-Euclidean OT plan within blocks.

    Minibatch OT-CFM (Tong et al., 2024, §3.2) with the exact assignment solved
    on consecutive blocks of ``block`` points, which keeps the cubic cost of the
    assignment bounded at large batches.

    Args:
        x_0: Data points, shape ``(n, d)``.
        z: Prior draws, shape ``(n, d)``.
        block: Points per exact assignment problem.

    Returns:
        A permutation of the rows of ``z`` within each block, shape ``(n, d)``.
    """
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as exc:  # scipy is an optional dependency of pingsbench
        raise ImportError("minibatch-OT couplings (ot-flow-matching-<N>) need scipy: pip install scipy") from exc

    paired = torch.empty_like(z)
    for start in range(0, len(z), block):
        rows = slice(start, start + block)
        cost = torch.cdist(x_0[rows].double(), z[rows].double()).square().cpu().numpy()
        _, columns = linear_sum_assignment(cost)
        paired[rows] = z[rows][torch.as_tensor(columns, device=z.device)]
    return paired


def euler(velocity: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` with explicit Euler over the grid ``ts`` (one call per step).

    Args:
        velocity: ``v(x, t)``.
        x: State at ``ts[0]``, shape ``(n, d)``.
        ts: Decreasing times, shape ``(N + 1,)``.

    Returns:
        State at ``ts[-1]``, shape ``(n, d)``.
    """
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        x = x + (t_next - t) * velocity(x, t)
    return x


def heun(velocity: nn.Module, x: Tensor, ts: Tensor) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` with Heun's 2nd-order method (two calls per step).

    Used to solve a trained flow accurately when generating reflow pairs.

    Args:
        velocity: ``v(x, t)``.
        x: State at ``ts[0]``, shape ``(n, d)``.
        ts: Decreasing times, shape ``(N + 1,)``.

    Returns:
        State at ``ts[-1]``, shape ``(n, d)``.
    """
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        step = t_next - t
        slope = velocity(x, t)
        predicted = x + step * slope
        x = x + 0.5 * step * (slope + velocity(predicted, t_next))
    return x


def time_grid(steps: int, device: torch.device | None = None) -> Tensor:
    """``steps + 1`` uniformly spaced times from 1 (prior) to 0 (data)."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)


# --------------------------------------------------------------------------- training


def train_steps(
    module: nn.Module,
    loss_at: Callable[[], Tensor],
    steps: int,
    lr: float,
    ctx: FitContext,
    desc: str,
) -> dict[str, Any]:
    """Adam with a cosine-decayed learning rate; the loop every model in this module shares.

    The learning rate decays to 1% of ``lr`` so that short CPU budgets still
    end in a low-noise regime (a constant rate leaves the final iterate
    fluctuating around the optimum).

    Args:
        module: The model, trained in place.
        loss_at: Draws a fresh minibatch and returns its scalar loss.
        steps: Number of optimiser steps.
        lr: Peak learning rate.
        ctx: Supplies the progress-bar switch.
        desc: Progress-bar label.

    Returns:
        ``{"history": {"step": [...], "loss": [...]}}``, the loss averaged over
        at most 500 equal windows.
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.01 * lr)
    window = max(1, math.ceil(steps / 500))
    history: dict[str, list[float]] = {"step": [], "loss": []}
    running = torch.zeros((), device=next(module.parameters()).device)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not ctx.progress, leave=False):
        loss = loss_at()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.detach()
        if step % window == 0 or step == steps:
            count = window if step % window == 0 else step % window
            history["step"].append(step)
            history["loss"].append(float(running) / count)
            running.zero_()
    return {"history": history}


def uniform_times(n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``t ~ U(0, 1)``, shape ``(n, 1)``, on the generator's device."""
    return torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)


def prior_draws(n: int, dim: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``z ~ N(0, I)``, shape ``(n, dim)``, on the generator's device."""
    return torch.randn(n, dim, generator=generator, device=generator.device, dtype=dtype)


#: Training budget of the flow-matching velocity net; ``ot_block`` is the OT-coupling block size.
FLOW_MATCHING_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 150, "batch": 256, "lr": 1e-3, "ot_block": 128},
    "quick": {"steps": 4_000, "batch": 1024, "lr": 1e-3, "ot_block": 256},
    "paper": {"steps": 20_000, "batch": 2048, "lr": 1e-3, "ot_block": 512},
}
FLOW_MATCHING_VERSION = 2


def flow_matching_config(ctx: FitContext, coupling: str) -> dict[str, Any]:
    """Everything that determines the flow-matching velocity net's weights (its cache key)."""
    return {
        "version": FLOW_MATCHING_VERSION,
        "coupling": coupling,
        "arch": ARCH,
        "standardization": STANDARDIZATION,
        **ctx.profile.pick(FLOW_MATCHING_BUDGETS),
    }


def flow_matching_model(target: Target, ctx: FitContext, coupling: str = "independent") -> nn.Module:
    """The target's flow-matching velocity net ``v(x, t)``, trained once and cached.

    Args:
        target: Supplies the training data.
        ctx: Device, seed, budget and cache.
        coupling: ``"independent"`` (``x_0`` and ``z`` drawn independently) or
            ``"ot"`` (minibatch optimal-transport pairs).

    Returns:
        The trained :class:`TimeMLP` with one time input.
    """
    config = flow_matching_config(ctx, coupling)
    kind = "flow-matching" if coupling == "independent" else f"flow-matching-{coupling}"

    def train(velocity: TimeMLP) -> Mapping[str, Any]:
        fit_standardization(velocity, standardization_draws(target, ctx, kind))
        generator = ctx.generator(kind, target.name, "train")

        def loss_at() -> Tensor:
            x_0 = velocity.standardize(target.sample(config["batch"], generator, ctx.dtype))
            z = prior_draws(config["batch"], target.dim, generator, ctx.dtype)
            if coupling == "ot":
                z = minibatch_ot_coupling(x_0, z, config["ot_block"])
            return flow_matching_loss(velocity, x_0, z, uniform_times(config["batch"], generator, ctx.dtype))

        return train_steps(velocity, loss_at, config["steps"], config["lr"], ctx, f"{kind} {target.name}")

    return ctx.cached_model(kind, target, config, lambda: build_mlp(target.dim, 1), train)


def euler_sampler(velocity: TimeMLP, dim: int, steps: int, dtype: torch.dtype) -> SampleFn:
    """Sampling function: ``z ~ N(0, I)`` integrated from ``t = 1`` to ``0`` with ``steps`` Euler steps."""

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> Tensor:
        return velocity.unstandardize(euler(velocity, prior_draws(n, dim, generator, dtype), time_grid(steps)))

    return sample


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


# --------------------------------------------------------------------------- rectified flow (one reflow)

#: Budget of the reflow: pairs drawn once with ``pair_solver_steps`` Heun steps, then ``steps`` optimiser steps.
REFLOW_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"pairs": 2_000, "pair_solver_steps": 8, "steps": 150, "batch": 256, "lr": 1e-3},
    "quick": {"pairs": 50_000, "pair_solver_steps": 32, "steps": 4_000, "batch": 1024, "lr": 1e-3},
    "paper": {"pairs": 200_000, "pair_solver_steps": 64, "steps": 20_000, "batch": 2048, "lr": 1e-3},
}
REFLOW_VERSION = 2


def reflow_pairs(velocity: nn.Module, z: Tensor, solver_steps: int) -> Tensor:
    """The flow's deterministic map ``z ↦ ODE(z)``: Heun from ``t = 1`` to ``t = 0``.

    Args:
        velocity: Trained ``v(x, t)``.
        z: Prior draws, shape ``(n, d)``.
        solver_steps: Heun steps (two velocity calls each).

    Returns:
        ``x_0 = ODE(z)`` in the network's (standardised) space, shape ``(n, d)``.
    """
    with torch.no_grad():
        return heun(velocity, z, time_grid(solver_steps, z.device))


def rectified_flow_model(target: Target, ctx: FitContext) -> nn.Module:
    """The once-reflowed velocity net (2-rectified flow of Liu et al., 2023), trained once and cached."""
    base = flow_matching_model(target, ctx)
    config = {
        "version": REFLOW_VERSION,
        "base": flow_matching_config(ctx, "independent"),
        **ctx.profile.pick(REFLOW_BUDGETS),
    }

    def train(velocity: nn.Module) -> Mapping[str, Any]:
        # Warm start from the first flow (weights and standardisation), as Liu et al. do:
        # the reflow then only has to straighten paths, not learn the data from scratch.
        velocity.load_state_dict(base.state_dict())
        start = time.perf_counter()
        pair_generator = ctx.generator("rectified-flow", target.name, "pairs")
        z_pairs = prior_draws(config["pairs"], target.dim, pair_generator, ctx.dtype)
        x_pairs = reflow_pairs(base, z_pairs, config["pair_solver_steps"])
        pair_seconds = time.perf_counter() - start
        generator = ctx.generator("rectified-flow", target.name, "train")

        def loss_at() -> Tensor:
            index = torch.randint(config["pairs"], (config["batch"],), generator=generator, device=generator.device)
            t = uniform_times(config["batch"], generator, ctx.dtype)
            return flow_matching_loss(velocity, x_pairs[index], z_pairs[index], t)

        info = train_steps(velocity, loss_at, config["steps"], config["lr"], ctx, f"reflow {target.name}")
        return {**info, "pair_seconds": pair_seconds}

    return ctx.cached_model("rectified-flow", target, config, lambda: build_mlp(target.dim, 1), train)


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
