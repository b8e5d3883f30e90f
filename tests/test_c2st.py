"""C2ST: chance on one distribution, separation on two, and nothing but scikit-learn's cross-validation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier

from bench.errors import UsageError
from bench.metrics import c2st_accuracy, compute_metrics
from bench.metrics.c2st import LEARNING_RATE, MAX_EPOCHS, PATIENCE
from bench.seeding import derive_seed
from targets.mixtures import GaussianMixture, gmm3d

pytestmark = pytest.mark.usefixtures("single_thread")


def _gaussians(n: int, d: int, seed: int, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    return mean + std * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _draws(target, n: int, seed: int) -> torch.Tensor:
    return target.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("n", "m", "max_points"), [(300, 300, 2000), (400, 350, 300)], ids=["whole-samples", "subsampled"]
)
def test_c2st_is_scikit_learns_cross_val_score_on_reference_z_scores(n, m, max_points):
    # The oracle spells out sbibm's recipe (2 × 10·d ReLU units, Adam, 5 folds) with the documented
    # early stopping and step size: the wrapper adds only the seeded equal-size subsample (first k of a randperm
    # per side, generated first) and the z-scoring with the reference's mean and std.
    d, seed = 3, 7
    generated, reference = _gaussians(n, d, 0, mean=0.3, std=1.2), _gaussians(m, d, 1)
    points = min(n, m, max_points)
    generator = torch.Generator().manual_seed(seed)
    x, y = generated, reference
    if n != points:
        x = x[torch.randperm(n, generator=generator)[:points]]
    if m != points:
        y = y[torch.randperm(m, generator=generator)[:points]]
    x, y = x.double().numpy(), y.double().numpy()
    mean, std = y.mean(0), y.std(0, ddof=1)
    data = np.concatenate([(x - mean) / std, (y - mean) / std])
    labels = np.concatenate([np.ones(points), np.zeros(points)])
    classifier = MLPClassifier(
        hidden_layer_sizes=(10 * d, 10 * d), activation="relu", solver="adam", learning_rate_init=LEARNING_RATE,
        max_iter=MAX_EPOCHS, early_stopping=True, n_iter_no_change=PATIENCE, random_state=seed,
    )
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    expected = cross_val_score(classifier, data, labels, cv=folds, scoring="accuracy").mean()
    assert c2st_accuracy(generated, reference, seed=seed, max_points=max_points) == expected


def test_two_samples_of_one_distribution_score_chance():
    # Mean test accuracy over 2000 points has standard error ≈ 0.011; 0.05 is > 4 of them.
    target = gmm3d()
    scores = [c2st_accuracy(_draws(target, 1000, 2 * r), _draws(target, 1000, 2 * r + 1), seed=r) for r in range(3)]
    assert all(abs(score - 0.5) < 0.05 for score in scores), scores


def test_separated_samples_score_one():
    assert c2st_accuracy(_gaussians(1000, 3, 0, mean=10.0), _gaussians(1000, 3, 1), seed=0) > 0.99


@pytest.mark.parametrize(("d", "n"), [(3, 1000), (64, 800)])
def test_shifted_gaussians_score_close_to_the_bayes_accuracy(d, n):
    # N(δ, I) against N(0, I): the best classifier's accuracy is Φ(‖δ‖ / 2).  In 64-D (the
    # oscillator's) sbibm's 10·d = 640 hidden units are capped, and the network still gets close.
    shift = 0.5
    bayes = NormalDist().cdf(shift * math.sqrt(d) / 2)  # 0.667 in 3-D, 0.977 in 64-D
    score = c2st_accuracy(_gaussians(n, d, 0, mean=shift), _gaussians(n, d, 1), seed=0)
    # A held-out accuracy exceeds Bayes only by noise (standard error ≤ 0.012 over 2n points).
    assert bayes - 0.05 < score < bayes + 0.03


def test_a_grossly_wrong_mixture_scores_well_above_chance():
    # gmm3d with every mode moved by one unit per coordinate (~2 of its standard deviations).
    exact = gmm3d()
    shifted = GaussianMixture("shifted", exact.weights.tolist(), (exact.means + 1.0).tolist(), exact.stds.tolist())
    assert c2st_accuracy(_draws(shifted, 1000, 0), _draws(exact, 1000, 1), seed=0) > 0.75


def test_compute_metrics_reports_it_deterministically_from_a_derived_seed():
    a, b = _gaussians(500, 3, 0, mean=0.2), _gaussians(400, 3, 1)
    values = compute_metrics(a, b, seed=11, permutations=10)
    assert values["c2st"] == c2st_accuracy(a, b, seed=derive_seed(11, "metrics", "c2st"))


def test_a_coordinate_the_reference_holds_constant_counts_on_the_datas_scale():
    # The oscillator's x(0): constant in every target draw.  A float32-sized wobble there is
    # invisible on the scale of the other coordinates (unit variance); an offset of half a unit is not.
    def with_first(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        return torch.cat([first[:, None], x[:, 1:]], dim=1)

    reference = with_first(_gaussians(600, 3, 0), torch.full((600,), 0.7))
    wobble = with_first(_gaussians(600, 3, 1), 0.7 + 1e-5 * _gaussians(600, 1, 2)[:, 0])
    wrong = with_first(_gaussians(600, 3, 1), 1.2 + 0.1 * _gaussians(600, 1, 2)[:, 0])
    near, far = c2st_accuracy(wobble, reference, seed=0), c2st_accuracy(wrong, reference, seed=0)
    assert abs(near - 0.5) < 0.05 and far > 0.95


def test_atoms_and_point_masses_give_finite_scores():
    generator = torch.Generator().manual_seed(0)
    atoms = torch.randn(400, 3, generator=generator)
    atoms[torch.rand(400, generator=generator) < 0.8] = torch.tensor([1.0, 2.0, 3.0])
    assert math.isfinite(c2st_accuracy(atoms[:200], atoms[200:], seed=0))
    point = torch.full((100, 3), 2.5)
    assert c2st_accuracy(point, point.clone(), seed=0) == 0.5  # balanced folds, nothing to tell apart
    assert c2st_accuracy(_gaussians(100, 3, 0), point, seed=0) > 0.95


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_scaling_both_samples_leaves_the_score_unchanged(scale):
    a, b = _gaussians(300, 3, 0, mean=0.3), _gaussians(300, 3, 1)
    # z-scores agree to float32 rounding of the scaled inputs: at most a borderline point flips.
    assert c2st_accuracy(a * scale, b * scale, seed=0) == pytest.approx(c2st_accuracy(a, b, seed=0), abs=0.01)


def test_samples_far_out_are_finite_and_separated():
    reference = _gaussians(300, 3, 0)
    far = _gaussians(300, 3, 1).clamp(-3, 3) * 1e38  # near float32's largest value
    assert c2st_accuracy(far, reference, seed=0) > 0.95


@pytest.mark.parametrize("n", [2, 10])
def test_tiny_samples_give_a_score(n):
    # Too few points to hold out a validation set: fewer folds, training to convergence.
    assert 0.0 <= c2st_accuracy(_gaussians(n, 3, 0), _gaussians(n, 3, 1), seed=0) <= 1.0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="one dimension"):
        c2st_accuracy(torch.zeros(10, 3), torch.zeros(10, 2), seed=0)
    with pytest.raises(UsageError, match="folds ≥ 2"):
        c2st_accuracy(torch.zeros(10, 3), torch.zeros(10, 3), seed=0, folds=1)
