"""The DHO PINN validation: the paper's loss and network, the hard-IC network, the written report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.profiles import get_profile
from targets.dho import V0, X0, DampedOscillator, oscillator_solution
from targets.dho.pinn import (
    EVAL_XIS, PAPER_MSE, GatedOscillatorPINN, evaluate, gated_residual, paper_loss, paper_network,
    paper_rel_l2,
)


class AnalyticSolution(nn.Module):
    """eq. (15) as a network of ``[z, ξ]`` (plus an optional offset), to test the losses on."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, inputs):
        return oscillator_solution(inputs[:, :1], inputs[:, 1:]) + self.offset


def _collocation(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xi = lambda: 0.1 + 0.3 * torch.rand(n, 1, generator=gen, dtype=torch.float64)  # noqa: E731
    return xi(), 20 * torch.rand(n, 1, generator=gen, dtype=torch.float64), xi()


def test_paper_network_architecture():
    net = paper_network((2, 32, 32, 32, 32, 1), torch.Generator().manual_seed(42))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 32), (32, 32), (32, 32), (32, 32), (32, 1)]
    assert sum(isinstance(m, nn.Tanh) for m in net) == 4 and not isinstance(net[-1], nn.Tanh)
    assert all(torch.all(m.bias == 0) for m in linears)
    assert sum(p.numel() for p in net.parameters()) == 3297
    # Xavier-normal: std √(2 / (fan_in + fan_out)) = √(1/32) for the 32×32 layers.
    hidden = torch.cat([m.weight.flatten() for m in linears[1:4]])
    assert hidden.std().item() == pytest.approx(32**-0.5, rel=0.05)


def test_paper_loss_vanishes_on_the_analytic_solution():
    xi_ic, z_r, xi_r = _collocation(500)
    assert paper_loss(AnalyticSolution(), xi_ic, z_r, xi_r).item() < 1e-20
    # A constant offset c breaks x(0) (c²) and the residual (c² everywhere), not x'(0).
    assert paper_loss(AnalyticSolution(0.1), xi_ic, z_r, xi_r).item() == pytest.approx(2 * 0.1**2, rel=1e-9)


def test_gated_network_has_exact_initial_conditions_and_derivatives():
    net = GatedOscillatorPINN(16, 2, torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        for p in net.parameters():  # non-trivial weights everywhere, biases included
            p.normal_(0, 0.7, generator=torch.Generator().manual_seed(p.numel()))
    xi = torch.linspace(0.1, 0.4, 7, dtype=torch.float64)
    x0, dx0, _ = net(torch.zeros_like(xi), xi)
    torch.testing.assert_close(x0, torch.full_like(xi, X0), rtol=0, atol=1e-15)
    torch.testing.assert_close(dx0, torch.full_like(xi, V0), rtol=0, atol=1e-14)
    # Forward-propagated derivatives equal nested reverse-mode autograd.
    z = torch.linspace(0.0, 20.0, 41, dtype=torch.float64).repeat(7).requires_grad_(True)
    xi = xi.repeat_interleave(41)
    x, dx, d2x = net(z, xi)
    (auto_dx,) = torch.autograd.grad(x.sum(), z, create_graph=True)
    (auto_d2x,) = torch.autograd.grad(auto_dx.sum(), z)
    torch.testing.assert_close(dx, auto_dx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d2x, auto_d2x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gated_residual(net, z, xi), d2x + 2 * xi * dx + x)


def test_evaluate_scores_mse_and_relative_l2():
    exact = evaluate(lambda z, xi: oscillator_solution(z, xi), torch.device("cpu"))
    assert max(exact.mse) < 1e-30 and max(exact.rel_l2) < 1e-15
    shifted = evaluate(lambda z, xi: oscillator_solution(z, xi) + 0.01, torch.device("cpu"))
    assert shifted.mse == pytest.approx([1e-4] * 4, rel=1e-9)
    # Relative L2 and MSE of the same error agree through mean x_ana², as in the paper column.
    implied = [(1e-4 / mse) ** 0.5 * l2 for mse, l2 in zip(PAPER_MSE, paper_rel_l2())]
    assert shifted.rel_l2 == pytest.approx(implied, rel=1e-9)


def test_smoke_validation_writes_report_and_figure(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    markdown = DampedOscillator().validate(tmp_path, get_profile("smoke"), torch.device("cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dho_validation.md", "dho_validation.png"]
    assert (tmp_path / "dho_validation.md").read_text() == markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[1].strip() for row in rows] == [str(xi) for xi in EVAL_XIS]
    assert all(f"{mse:.2e}" in row for mse, row in zip(PAPER_MSE, rows))
    assert "](dho_validation.png)" in markdown and "wall time" in markdown
    height, width, _ = image.imread(tmp_path / "dho_validation.png").shape
    assert width > height > 100
