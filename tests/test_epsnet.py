"""The ε-net (PINGS §5.4.1) and the exact ε: embedding, architecture, optimality, training, caching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.cache import ModelCache
from bench.contracts import FitContext
from bench.counting import count_evaluations
from bench.profiles import get_profile
from samplers.diffusion.model import EpsNet, ExactEps
from samplers.diffusion.train import get_epsnet, train_epsnet
from samplers.diffusion.schedule import DiscreteVPSchedule
from samplers.nets import SinusoidalEmbedding
from targets.mixtures import GaussianMixture, gmm3d

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def smoke_context(seed: int = 0) -> FitContext:
    return FitContext(torch.device("cpu"), torch.float32, seed, get_profile("smoke"), ModelCache(None))


def mixture_5d() -> GaussianMixture:
    return GaussianMixture("gmm5d", [0.6, 0.4], [[1.0, -1, 0, 2, 0], [-2, 1, 1, 0, -1]], [[0.5] * 5, [0.8] * 5])


def test_time_embedding_frequencies_are_geometric_and_sane():
    embed = SinusoidalEmbedding(64)
    freqs = embed.freqs.double()
    ratios = freqs[1:] / freqs[:-1]
    torch.testing.assert_close(ratios, ratios.mean().expand_as(ratios), rtol=1e-5, atol=0)
    assert freqs.min() >= 0.5 and freqs.max() <= 2e3, "frequencies must suit t in [0, 1] (not 2π·2³¹)"
    # It resolves neighbouring DDPM steps: t = i/T and (i+1)/T embed to clearly different vectors.
    t = torch.arange(1, 1001, dtype=torch.float32) / 1000
    emb = embed(t)
    assert emb.shape == (1000, 64)
    assert (emb[1:] - emb[:-1]).norm(dim=-1).min() > 0.5


@pytest.mark.parametrize("activation", ["tanh", "silu"])
@pytest.mark.parametrize("dim", [3, 64])
def test_epsnet_architecture(dim, activation):
    net = EpsNet(dim, DiscreteVPSchedule(), activation=activation)
    linears = [m for m in net.mlp if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [128] * 6 + [dim]
    assert linears[0].in_features == dim + 64
    expected = {"tanh": nn.Tanh, "silu": nn.SiLU}[activation]
    assert sum(isinstance(m, expected) for m in net.mlp) == 6
    for layer in linears:  # Xavier-uniform weights, zero biases
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert not layer.bias.any()
    out = net(torch.randn(7, dim), torch.rand(7))
    assert out.shape == (7, dim) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="activation"):
        EpsNet(dim, DiscreteVPSchedule(), activation="relu6")


@pytest.mark.parametrize("t", [0.005, 0.1, 0.5, 1.0])
def test_exact_eps_is_the_conditional_mean_of_the_noise(t):
    # ε* = E[ε | x_t], so the residual ε - ε* is orthogonal to every function of x_t, ε* included.
    target, schedule = gmm3d(), DiscreteVPSchedule()
    gen = torch.Generator().manual_seed(1)
    n = 100_000
    x0 = target.sample(n, gen, dtype=F64)
    noise = torch.randn(n, 3, generator=gen, dtype=F64)
    tt = torch.full((n,), t, dtype=F64)
    x_t = schedule.alpha(tt)[:, None] * x0 + schedule.sigma(tt)[:, None] * noise
    exact = ExactEps(target, schedule)(x_t, tt)

    def z_score(prediction):
        inner = ((noise - prediction) * prediction).sum(-1)
        return float(inner.mean() / (inner.std() / math.sqrt(n)))

    assert abs(z_score(exact)) < 4
    assert abs(z_score(1.5 * exact)) > 8, "the check must be able to fail"


def test_exact_eps_is_one_counted_network_call():
    eps = ExactEps(gmm3d())
    with count_evaluations() as counter:
        eps(torch.randn(11, 3), torch.full((11,), 0.3))
    assert (counter.calls, counter.rows) == (1, 11)


@pytest.fixture(scope="module")
def smoke_epsnet():
    ctx = smoke_context()
    net = get_epsnet(gmm3d(), ctx)
    return net, ctx


def test_training_loss_decreases_and_eps_error_is_reported(smoke_epsnet):
    net, ctx = smoke_epsnet
    info = ctx.models[0]
    assert info["kind"] == "epsnet" and info["source"] == "trained"
    steps, loss = info["history"]["step"], info["history"]["loss"]
    assert len(steps) == len(loss) <= 500 and steps[-1] == 200
    fifth = len(loss) // 5
    assert sum(loss[-fifth:]) / fifth < 0.6 * sum(loss[:fifth]) / fifth
    # Better than predicting zero noise, whose RMSE is the RMS of ε* itself.
    target, schedule = gmm3d(), net.schedule
    gen = torch.Generator().manual_seed(2)
    t = torch.randint(1, 1001, (20_000,), generator=gen).float() / 1000
    x_t = schedule.alpha(t)[:, None] * target.sample(20_000, gen) + schedule.sigma(t)[:, None] * torch.randn(
        20_000, 3, generator=gen
    )
    zero_rmse = float(ExactEps(target, schedule)(x_t, t).square().mean().sqrt())
    assert 0 < info["eps_rmse"] < 0.5 * zero_rmse
    assert 0 < info["loss_floor"] < 1


def test_epsnet_is_trained_once_and_shared(smoke_epsnet):
    net, ctx = smoke_epsnet
    assert get_epsnet(gmm3d(), ctx) is net
    assert ctx.models[-1]["source"] == "memory"
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_training_is_seeded_and_works_in_any_dimension():
    target = mixture_5d()
    runs = []
    for steps in (501, 40, 40):
        ctx = smoke_context(seed=3)
        torch.manual_seed(ctx.seed_for("init"))
        net = EpsNet(target.dim, DiscreteVPSchedule())
        info = train_epsnet(net, target, ctx, steps=steps, batch=4)
        assert all(math.isfinite(v) for v in info["history"]["loss"]) and math.isfinite(info["eps_rmse"])
        runs.append((info, torch.cat([p.detach().flatten() for p in net.parameters()])))
    history = runs[0][0]["history"]
    assert len(history["step"]) <= 500 and history["step"][-1] == 501
    torch.testing.assert_close(runs[1][1], runs[2][1], rtol=0, atol=0)
    assert runs[1][0] == runs[2][0]
