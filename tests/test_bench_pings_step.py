"""Seconds per PINGS training step at batch 2048: the public code's formulation against ours.

Run with ``pytest tests/test_bench_pings_step.py --benchmark-only``; both steps are
measured in one run on one machine, so their ratio is the speed-up.  Both train the
same network on the same target with the same four loss terms and Adam; only how a
step is computed differs:

* public: a dense ``‖x‖² + ‖y‖² - 2xyᵀ`` matrix per block, five exponentials per
  block, autograd through all of it, the target–target block evaluated every step,
  and ``autograd.grad(g, t, ones)`` for ``∂_t g`` (a row sum; cheaper than the
  full vector, so the comparison flatters the public code);
* ours: :func:`samplers.pings.train.training_step` (the code ``train_pings`` runs).

The public code's per-improvement checkpoint writes are left out of its step.  On a
shared 2-core machine run with ``OMP_NUM_THREADS=1``: two OpenMP threads competing with
other jobs make both timings several times slower and very noisy.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samplers.diffusion import ExactEps
from samplers.pings import KernelBankMMD, ProbabilityFlow, Recipe, ScoreGuidance
from samplers.pings.train import draw_batch, training_step
from targets.mixtures import gmm3d

BATCH = 2048
BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0)


def public_mmd2(x, y):
    """The public code's MMD²: one squared-distance matrix and five exponentials per block."""

    def kernel(a, b):
        sq_dist = (a**2).sum(1, keepdim=True) + (b**2).sum(1, keepdim=True).T - 2 * a @ b.T
        return sum(torch.exp(-sq_dist / (2 * s * s)) for s in BANDWIDTHS)

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    return (
        (k_xx.sum() - k_xx.diag().sum()) / (m * (m - 1))
        + (k_yy.sum() - k_yy.diag().sum()) / (n * (n - 1))
        - 2 * k_xy.mean()
    )


def public_step(model, target, optimiser, batch, weights):
    """One step of the public code's training loop (its reductions and its ∂_t g)."""
    optimiser.zero_grad()
    z_bc, z_data, z_phys, y = batch["z_bc"], batch["z_data"], batch["z_phys"], batch["y"]
    x_prior = model(z_bc, torch.ones(len(z_bc)))
    x_data = model(z_data, torch.zeros(len(z_data)))
    mean_x, mean_y = x_data.mean(0, keepdim=True), y.mean(0, keepdim=True)
    cov_x = (x_data - mean_x).T @ (x_data - mean_x) / (len(x_data) - 1)
    cov_y = (y - mean_y).T @ (y - mean_y) / (len(y) - 1)
    t = batch["t_phys"].clone().requires_grad_(True)
    x_t = model(z_phys, t)
    (summed_dt,) = torch.autograd.grad(x_t, t, torch.ones_like(x_t), create_graph=True)
    terms = (
        F.mse_loss(x_prior, z_bc),
        public_mmd2(x_data, y),
        F.mse_loss(mean_x, mean_y) + F.mse_loss(cov_x, cov_y),
        ((summed_dt[:, None] - (1 - t)[:, None] * target.score(x_t)) ** 2).mean(),
    )
    sum(w * term for w, term in zip(weights, terms)).backward()
    optimiser.step()


@pytest.fixture
def setup():
    torch.manual_seed(0)
    target, recipe = gmm3d(), Recipe()
    model = recipe.build(target.dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    generator = torch.Generator().manual_seed(0)
    # Pre-train briefly (probability-flow residual, small batches) so that g(0, z) is spread
    # like the data: the public code's cost grows with the spread (exp of very negative
    # arguments is slow on CPU), so timing an untrained, collapsed g would flatter it.
    eps = ExactEps(target)
    flow, mmd, weights = ProbabilityFlow(eps, eps.schedule), KernelBankMMD(), recipe.loss_weights()
    for _ in range(60):
        training_step(model, flow, mmd, optimiser, weights, draw_batch(target, 256, generator, torch.float32))
    batch = draw_batch(target, BATCH, generator, torch.float32)
    return target, recipe, model, optimiser, batch


def test_step_public_formulation(benchmark, setup):
    target, recipe, model, optimiser, batch = setup
    benchmark.pedantic(public_step, args=(model, target, optimiser, batch, recipe.weights), rounds=5, warmup_rounds=1)


def test_step_fused(benchmark, setup):
    target, recipe, model, optimiser, batch = setup
    velocity, mmd = ScoreGuidance(target.score, 1.0, 1.0), KernelBankMMD()
    benchmark.pedantic(
        training_step, args=(model, velocity, mmd, optimiser, recipe.loss_weights(), batch), rounds=10, warmup_rounds=1
    )
