"""The example plugin package: its from-scratch target against independent oracles, its torchdiffeq sampler end to end."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch
from scipy import stats

from bench.testing import check_target, run_one

if importlib.util.find_spec("pingsbench_example") is None and not os.environ.get("CI"):
    pytest.skip("example plugin not installed (pip install -e examples/pingsbench-example); required in CI",
                allow_module_level=True)

import pingsbench_example as example  # noqa: E402 - after the skip

ALPHA_BARS = (1.0, 0.9, 0.3, 0.01)

pytestmark = pytest.mark.usefixtures("single_thread")


def torch_mixture(target: example.RotatedGaussians, alpha_bar: float) -> torch.distributions.Distribution:
    """The ᾱ-noised target built by torch.distributions: components N(√ᾱ μ_k, ᾱ Σ_k + (1-ᾱ) I)."""
    cos, sin = target.angles.cos(), target.angles.sin()
    rotations = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    covariances = rotations @ torch.diag_embed(target.scales.square()) @ rotations.mT
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=target.weights),
        torch.distributions.MultivariateNormal(
            math.sqrt(alpha_bar) * target.means, alpha_bar * covariances + (1 - alpha_bar) * torch.eye(2, dtype=torch.float64)),
    )


@pytest.fixture(scope="module")
def ellipses() -> example.RotatedGaussians:
    return example.RotatedGaussians()


@pytest.fixture(scope="module")
def draws(ellipses) -> torch.Tensor:
    return ellipses.sample(200_000, torch.Generator().manual_seed(0), dtype=torch.float64)


def test_from_scratch_target_keeps_the_contract(ellipses):
    check_target(ellipses)


@pytest.mark.oracle
@pytest.mark.parametrize("alpha_bar", ALPHA_BARS)
def test_density_and_noised_score_match_torch_distributions(ellipses, alpha_bar):
    x = torch_mixture(ellipses, 0.5).sample((512,))  # points spread over both components and between them
    oracle = torch_mixture(ellipses, alpha_bar)
    leaf = x.clone().requires_grad_(True)
    (oracle_score,) = torch.autograd.grad(oracle.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(ellipses.noised_score(x, alpha_bar), oracle_score, rtol=1e-9, atol=1e-10)
    if alpha_bar == 1.0:
        torch.testing.assert_close(ellipses.log_prob(x), oracle.log_prob(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ellipses.score(x), oracle_score, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("alpha_bar", ALPHA_BARS[1:])
def test_noised_score_is_the_score_of_the_vp_noised_draws(ellipses, draws, alpha_bar):
    # Stein's identity for the density q of x_t = √ᾱ x_0 + √(1-ᾱ) ε: E[∇log q(x_t)] = 0 and
    # E[∇log q(x_t) x_tᵀ] = -I; checked on Monte-Carlo draws of x_t, within 5 standard errors.
    noise = torch.randn(draws.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_t = math.sqrt(alpha_bar) * draws + math.sqrt(1 - alpha_bar) * noise
    score = ellipses.noised_score(x_t, alpha_bar)
    products = score[:, :, None] * x_t[:, None, :]
    for values, expected in ((score, torch.zeros(2)), (products, -torch.eye(2))):
        error = (values.mean(0) - expected).abs()
        standard_error = values.std(0) / math.sqrt(len(values))
        assert bool((error < 5 * standard_error).all()), (error, standard_error)


def test_exact_draws_have_the_mixture_moments(ellipses, draws):
    n = len(draws)
    mean, covariance = ellipses.mean(), ellipses.covariance()
    torch.testing.assert_close(mean, torch_mixture(ellipses, 1.0).mean, rtol=1e-12, atol=1e-12)
    mean_error = (draws.mean(0) - mean).abs()
    assert bool((mean_error < 5 * covariance.diagonal().sqrt() / math.sqrt(n)).all()), mean_error
    centred = draws - mean
    products = centred[:, :, None] * centred[:, None, :]
    covariance_error = (products.mean(0) - covariance).abs()
    assert bool((covariance_error < 5 * products.std(0) / math.sqrt(n)).all()), covariance_error


@pytest.mark.oracle
@pytest.mark.parametrize("direction", [(1.0, 0.0), (0.0, 1.0), (0.6, -0.8)])
def test_exact_draws_projected_follow_the_mixture_law(ellipses, draws, direction):
    # A projection u·x of the mixture is a 1-D Gaussian mixture with known CDF: Kolmogorov–Smirnov on 20 000 draws.
    u = torch.tensor(direction, dtype=torch.float64)
    oracle = torch_mixture(ellipses, 1.0)
    locations = oracle.component_distribution.mean @ u
    spreads = (u @ oracle.component_distribution.covariance_matrix @ u).sqrt()
    weights = ellipses.weights.numpy()

    def cdf(values):
        return sum(w * stats.norm.cdf(values, loc=float(m), scale=float(s))
                   for w, m, s in zip(weights, locations, spreads))

    assert stats.kstest((draws[:20_000] @ u).numpy(), cdf).pvalue > 1e-3


def test_default_fingerprint_sees_every_parameter(ellipses):
    # No fingerprint() override: the default one hashes the public attributes, so a shifted mean is a new model id.
    assert ellipses.fingerprint() == example.RotatedGaussians().fingerprint()
    assert ellipses.fingerprint() != example.RotatedGaussians(means=((-1.5, 0.0), (1.5, 1.1))).fingerprint()


def test_pf_ode_family_names_and_bad_values():
    family = example.ProbabilityFlowODEFamily()
    sampler = family.resolve("pf-ode-rk4-8")
    assert (sampler.method, sampler.steps) == ("rk4", 8)
    assert family.resolve("pf-ode-heun-8") is None
    assert all(family.resolve(name) is not None for name in (*family.defaults, *family.sweep))
    with pytest.raises(ValueError, match="at least 1"):
        family.resolve("pf-ode-rk4-0")


@pytest.fixture
def registry(pingsbench_registry):
    return pingsbench_registry(example)


def test_pf_ode_rk4_row_is_counted_and_at_the_noise_floor(registry, ellipses):
    row = run_one(registry, "pf-ode-rk4-8", "ellipses2d", n=2_000)
    # rk4 evaluates the vector field 4 times per step; odeint calls it with a 0-d time and (n, 2) states.
    assert row["nfe"] == pytest.approx(32.0)
    assert row["nfe"] == registry.sampler("pf-ode-rk4-8").expected_nfe(ellipses)
    assert row["fit"]["artifacts"]["solver"] == "torchdiffeq rk4"
    # Indistinguishable from the target at this n, while a moment-matched Gaussian is not (the test has power).
    assert row["metrics"]["mmd2_pvalue"] > 0.05
    gaussian = run_one(registry, "gaussian-fit", "ellipses2d", n=2_000)
    assert gaussian["metrics"]["mmd2_pvalue"] < 0.02  # the smallest p-value 100 permutations give is 1/101
    assert row["metrics"]["mmd2"] < gaussian["metrics"]["mmd2"] / 10


def test_pf_ode_euler_nfe_is_the_number_of_steps(registry):
    assert run_one(registry, "pf-ode-euler-8", "ring2d", n=300)["nfe"] == pytest.approx(8.0)


def test_pf_ode_is_skipped_on_a_target_without_noised_score(registry):
    row = run_one(registry, "pf-ode-rk4-8", "dho", n=300, check=False)
    assert row["status"] == "skipped" and "noised_score" in row["error"]
