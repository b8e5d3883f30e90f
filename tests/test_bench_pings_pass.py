"""pytest-benchmark: one PINGS pass at n = 10⁴ against the bare matmul + tanh chain of the same network.

Run with ``pytest tests/test_bench_pings_pass.py --benchmark-only`` (skipped otherwise).  Both
benchmarks share one group, so pytest-benchmark's table gives their ratio: what the sampler adds to
the network's arithmetic (drawing ``Z``, the ``t = 0`` column, module calls).  Issue 18's goal is a
ratio ≤ 1.2 on the CPU.  Both run in inference mode on the same weights, with torch's thread count.
"""

from __future__ import annotations

import pytest
import torch

from samplers.pings.model import PingsMLP
from samplers.pings.sample import one_pass_sampler

N = 10_000
DIM = 3


@pytest.fixture(scope="module")
def network() -> PingsMLP:
    torch.manual_seed(0)
    return PingsMLP(DIM).eval()


def test_pings_pass(benchmark, network):
    benchmark.group = f"pings-pass-n{N}"
    sample = one_pass_sampler(network, DIM, torch.float32)

    def call():
        with torch.inference_mode():
            return sample(N, torch.Generator().manual_seed(0))

    benchmark.pedantic(call, rounds=20, warmup_rounds=3)


def test_bare_matmul_tanh_chain(benchmark, network):
    benchmark.group = f"pings-pass-n{N}"
    hidden = [(layer.weight.detach().T.contiguous(), layer.bias.detach()) for layer in network.layers]
    output = (network.output.weight.detach().T.contiguous(), network.output.bias.detach())
    inputs = torch.cat([torch.zeros(N, 1), torch.randn(N, DIM, generator=torch.Generator().manual_seed(0))], 1)

    def chain():
        with torch.inference_mode():
            h = inputs
            for weight, bias in hidden:
                h = torch.tanh(torch.addmm(bias, h, weight))
            return torch.addmm(output[1], h, output[0])

    benchmark.pedantic(chain, rounds=20, warmup_rounds=3)
