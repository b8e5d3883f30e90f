"""The PINGS generator ``g_θ(t, z)`` and its exact time derivative.

PINGS §3.2: an MLP on ``(t, z)`` with six tanh hidden layers of width 128,
Xavier-normal weights and zero biases, and a linear output of size ``d``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from samplers.nets import xavier_init_


class PingsMLP(nn.Module):
    """``g_θ(t, z)``: maps a prior draw ``z`` at time ``t`` (1 = prior, 0 = data) to a point.

    Args:
        dim: Dimension ``d`` of ``z`` and of the output.
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 6) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(1 + dim, hidden)] + [nn.Linear(hidden, hidden) for _ in range(depth - 1)]
        )
        self.output = nn.Linear(hidden, dim)
        xavier_init_([*self.layers, self.output], "normal")

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """Evaluate ``g_θ(t, z)``.

        Args:
            z: Prior draws, shape ``(n, d)``.
            t: Times, shape ``(n,)``.

        Returns:
            Points, shape ``(n, d)``.
        """
        h = torch.tanh(self.layers[0](torch.cat([t[:, None], z], dim=1)))
        for layer in self.layers[1:]:
            h = torch.tanh(layer(h))
        return self.output(h)


def value_and_time_derivative(model: nn.Module, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``g(t, z)`` and the full vector ``∂_t g(t, z)`` by forward-mode AD, both ``(n, d)``.

    One Jacobian-vector product with tangent ``ṫ = 1`` gives every component
    ``∂_t g_k`` of every row (rows are independent).  The public PINGS code uses
    ``autograd.grad(g, t, grad_outputs=ones)`` instead, which returns the scalar
    ``Σ_k ∂_t g_k`` per row; that is not the time derivative the residual needs.
    Reverse-mode gradients with respect to the parameters flow through both outputs.
    """
    return torch.func.jvp(lambda time: model(z, time), (t,), (torch.ones_like(t),))
