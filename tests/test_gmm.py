"""gmm3d against closed forms: the paper's parameters, exact moments, autograd scores."""

from __future__ import annotations

import pytest
import torch

from targets.mixtures import GaussianMixture, gmm3d


@pytest.fixture
def target():
    return gmm3d()


def test_paper_parameters(target):
    assert target.weights.tolist() == [0.5, 0.3, 0.2]
    assert target.means.tolist() == [[2.5, 0.0, -1.5], [-2.0, 2.0, 1.0], [0.0, -2.5, 2.0]]
    assert target.stds.tolist() == [[0.60, 0.50, 0.70], [0.45, 0.65, 0.40], [0.55, 0.40, 0.60]]
    assert target.dim == 3 and target.has("score") and target.has("noised_score")


def test_sampling_is_seeded_and_matches_exact_moments(target):
    draws = target.sample(200_000, torch.Generator().manual_seed(3), dtype=torch.float64)
    again = target.sample(200_000, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(draws, again)
    # Monte-Carlo error of the mean ≈ sd / √n ≈ 5e-3 here; 4 standard errors.
    assert torch.allclose(draws.mean(0), target.mean(), atol=0.02)
    assert torch.allclose(torch.cov(draws.T), target.covariance(), atol=0.05)
    fractions = torch.bincount(target.responsibilities(draws).argmax(-1), minlength=3) / len(draws)
    assert torch.allclose(fractions.double(), target.weights, atol=0.01)


def test_log_prob_is_normalized(target):
    # Importance sampling from a broader normalized q: E_q[p(x) / q(x)] = ∫ p = 1.
    proposal = torch.distributions.MultivariateNormal(target.mean(), 2 * target.covariance())
    torch.manual_seed(1)
    draws = proposal.sample((200_000,))
    estimate = (target.log_prob(draws) - proposal.log_prob(draws)).exp().mean()
    assert estimate.item() == pytest.approx(1.0, abs=0.02)


def _autograd_score(log_density, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_density(x).sum(), x)
    return grad


def test_score_is_gradient_of_log_prob(target):
    x = target.sample(64, torch.Generator().manual_seed(0), dtype=torch.float64) * 1.3
    torch.testing.assert_close(target.score(x), _autograd_score(target.log_prob, x))


@pytest.mark.parametrize("alpha_bar", [1.0, 0.9, 0.3, 1e-3, 4e-5])
def test_noised_score_is_gradient_of_noised_mixture(target, alpha_bar):
    # q_t is itself a mixture with means √ᾱ μ_k and variances ᾱ σ_k² + 1 − ᾱ.
    a = torch.tensor(alpha_bar, dtype=torch.float64)
    noised = GaussianMixture("q", target.weights.tolist(), (a.sqrt() * target.means).tolist(),
                             (a * target.stds.square() + 1 - a).sqrt().tolist())
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    torch.testing.assert_close(target.noised_score(x, alpha_bar), _autograd_score(noised.log_prob, x))


def test_noised_score_accepts_per_sample_alpha_bar(target):
    x = torch.randn(5, 3, dtype=torch.float64)
    alpha_bar = torch.tensor([0.1, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)[:, None]
    expected = torch.stack([target.noised_score(x[i : i + 1], float(alpha_bar[i]))[0] for i in range(5)])
    torch.testing.assert_close(target.noised_score(x, alpha_bar), expected)


def test_scores_stay_finite_far_from_all_modes(target):
    # Naive responsibilities underflow to 0/0 here; log-sum-exp must not.
    x = torch.full((2, 3), 60.0)
    x[1] *= -1
    assert torch.isfinite(target.score(x)).all() and torch.isfinite(target.noised_score(x, 0.5)).all()
    assert torch.isfinite(target.log_prob(x)).all()


def test_mode_weight_metric_is_small_on_draws_and_large_on_one_mode(target):
    draws = target.sample(20_000, torch.Generator().manual_seed(2))
    assert target.extra_metrics(draws, draws)["mode_weight_tv"] < 0.02
    one_mode = target.means[0].float() + 0.1 * torch.randn(1000, 3)
    assert target.extra_metrics(one_mode, draws)["mode_weight_tv"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": [0.5, 0.6], "means": [[0.0], [1.0]], "stds": [[1.0], [1.0]]}, "sum to 1"),
        ({"weights": [1.0], "means": [[0.0]], "stds": [[0.0]]}, "positive"),
        ({"weights": [1.0], "means": [[0.0, 1.0]], "stds": [[1.0]]}, "must agree"),
    ],
)
def test_invalid_mixtures_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture("bad", **kwargs)
