"""Classifier two-sample test (C2ST): can a classifier tell generated points from target draws?

The score is the cross-validated accuracy of a classifier trained to label each
point as generated or reference (Lopez-Paz & Oquab, 2017): 0.5 means the two
samples are indistinguishable to it, 1 that it separates them perfectly.  The
recipe is sbibm's (Lueckmann et al., 2021, ``sbibm.metrics.c2st``): both
samples z-scored with the *reference's* mean and standard deviation, a
scikit-learn ``MLPClassifier`` with two ReLU hidden layers of ``10·d`` units
trained with Adam, and the mean test accuracy over 5 shuffled folds.

What differs, so that the cost stays bounded (≤ 2 s per pair at n = 10⁴ on two
cores in 3 and 64 dimensions) and the value defined for any finite input:

* **Capped size.** Hidden layers have ``min(10·d, MAX_HIDDEN)`` units, so the
  cost stops growing with the dimension past ``d = MAX_HIDDEN / 10``; each side
  is a seeded random subsample of at most ``MAX_POINTS`` points.  Both sides
  are cut to the same size, so that chance is 0.5 (sbibm compares equal sizes),
  and the folds are stratified, so each holds the two sides in equal parts.
* **Early stopping.** Training stops once the accuracy on 10 % of the training
  fold, held out, has not improved for ``PATIENCE`` epochs (scikit-learn's
  ``early_stopping``; at most ``MAX_EPOCHS``), with Adam's step ``LEARNING_RATE``
  (3× scikit-learn's default) so that it gets there in fewer epochs.  sbibm
  trains until the training loss converges (≤ 10⁴ epochs): on two samples of
  one distribution the network then memorises its training fold, at 20-70× the
  cost, for no accuracy on the test fold.  Samples too small to hold out a
  validation set (fewer than ``MIN_EARLY_STOPPING_POINTS`` per side) stop on
  the training loss instead.  Early stopping ends on a small validation set's
  first perfect score, so well-separated samples of a few hundred points read
  0.97-0.99 rather than 1.
* **Degenerate coordinates.** sbibm divides by the reference's standard
  deviation, which is 0 on a coordinate the target holds constant (the
  oscillator's ``x(0)``).  Such a coordinate (variance below
  :data:`~bench.metrics.moments.CONSTANT_VARIANCE` times the largest, as for the
  moment errors) is divided by the reference's largest standard deviation
  instead, so that deviations there count in the units of the data, not of
  zero; a reference of one point uses the pooled sample's, a pool of one point 1.
* **Far-out points.** Beyond ``±LINEAR_ZSCORE`` z-scores grow logarithmically,
  ``sign(z) (L + log(1 + |z| - L))``: a no-op for points on the reference's
  scale, while samples of size 1e38 next to unit-scale draws still give the
  network inputs it can train on (they are separated, not overflowed).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from torch import Tensor

from bench.errors import UsageError
from bench.metrics.moments import CONSTANT_VARIANCE
from bench.metrics.pairwise import check_pair

#: Cross-validation folds (sbibm's).
FOLDS = 5
#: Hidden-layer width cap; sbibm's ``10·d`` would be 640 units in the oscillator's 64 dimensions.
MAX_HIDDEN = 32
#: Points per side the classifier sees at most (a seeded random subsample of each side).
MAX_POINTS = 2000
#: Epochs without a better validation accuracy before training stops.
PATIENCE = 5
#: Adam's step size (scikit-learn's default: 1e-3).
LEARNING_RATE = 3e-3
#: Training epochs at most; early stopping typically ends after 10-40.
MAX_EPOCHS = 100
#: Below this many points per side no validation set is held out for early stopping.
MIN_EARLY_STOPPING_POINTS = 50
#: Z-scores beyond ± this grow logarithmically.
LINEAR_ZSCORE = 10.0


def c2st_classifier(dim: int, seed: int, points: int) -> MLPClassifier:
    """The classifier :func:`c2st_accuracy` cross-validates: sbibm's MLP with the changes above.

    Args:
        dim: Dimension ``d`` of the data.
        seed: ``random_state`` (weights, batches, validation split); taken modulo 2³².
        points: Points per side the classifier is trained and tested on.
    """
    width = min(10 * dim, MAX_HIDDEN)
    return MLPClassifier(
        hidden_layer_sizes=(width, width),
        activation="relu",
        solver="adam",
        learning_rate_init=LEARNING_RATE,
        max_iter=MAX_EPOCHS,
        early_stopping=points >= MIN_EARLY_STOPPING_POINTS,
        n_iter_no_change=PATIENCE,
        random_state=seed % 2**32,
    )


def z_score(generated: Tensor, reference: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Both samples in float64, centred on the reference's mean and divided by its per-coordinate std.

    Coordinates the reference holds constant are divided by its largest
    standard deviation, and z-scores beyond ``±LINEAR_ZSCORE`` grow
    logarithmically (see the module's docstring).

    Args:
        generated: Shape ``(n, d)``.
        reference: Shape ``(m, d)``, ``m ≥ 2``.

    Returns:
        The z-scored ``generated`` and ``reference``, float64 arrays of shapes
        ``(n, d)`` and ``(m, d)``; finite for finite float32-range input.
    """
    generated, reference = generated.to(torch.float64), reference.to(torch.float64)
    mean, std = reference.mean(0), reference.std(0)
    largest = std.max()
    if largest == 0:
        largest = torch.cat([generated, reference]).std(0).max()
    if largest == 0:
        largest = torch.ones((), dtype=torch.float64)
    scale = torch.where(std.square() > CONSTANT_VARIANCE * largest.square(), std, largest)

    def standardise(x: Tensor) -> np.ndarray:
        z = (x - mean) / scale
        size = z.abs()
        return (z.sign() * (size.clamp(max=LINEAR_ZSCORE) + (size - LINEAR_ZSCORE).clamp(min=0.0).log1p())).numpy()

    return standardise(generated), standardise(reference)


def c2st_accuracy(
    generated: Tensor,
    reference: Tensor,
    *,
    seed: int,
    folds: int = FOLDS,
    max_points: int = MAX_POINTS,
) -> float:
    """Classifier two-sample test accuracy: 0.5 = indistinguishable, 1 = separated.

    Each side is cut to ``k = min(n, m, max_points)`` points (a seeded random
    subsample; all points in their order when ``n = m ≤ max_points``), both are
    z-scored with the kept reference points' statistics (:func:`z_score`), and the score
    is the mean test-fold accuracy of :func:`c2st_classifier` over
    ``min(folds, k)`` stratified, shuffled folds.  Deterministic for a given
    ``seed`` (and BLAS thread count).

    Args:
        generated: Sampler output, shape ``(n, d)``.
        reference: Exact target draws, shape ``(m, d)``.
        seed: Seeds the subsample, the folds and the classifier.
        folds: Number ``k`` of cross-validation folds, ≥ 2.
        max_points: Points per side at most, ≥ 2.

    Returns:
        The mean accuracy, in ``[0, 1]``; ≈ 0.5 when ``generated ~ reference``.

    Raises:
        ValueError: If the samples are not ``(n, d)`` and ``(m, d)`` with ``n, m ≥ 2``.
        UsageError: If ``folds`` or ``max_points`` is below 2.
    """
    check_pair(generated, reference)
    if folds < 2 or max_points < 2:
        raise UsageError(f"c2st needs folds ≥ 2 and max_points ≥ 2, got folds = {folds}, max_points = {max_points}")
    points = min(len(generated), len(reference), max_points)
    generator = torch.Generator().manual_seed(seed)

    def subsample(x: Tensor) -> Tensor:
        return x if len(x) == points else x[torch.randperm(len(x), generator=generator)[:points]]

    generated_z, reference_z = z_score(subsample(generated), subsample(reference))
    data = np.concatenate([generated_z, reference_z])
    labels = np.concatenate([np.ones(points), np.zeros(points)])
    splitter = StratifiedKFold(n_splits=min(folds, points), shuffle=True, random_state=seed % 2**32)
    classifier = c2st_classifier(generated.shape[1], seed, points)
    with warnings.catch_warnings():
        # Stopping at MAX_EPOCHS is the cap doing its job, not a fault of the sampler.
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(classifier, data, labels, cv=splitter, scoring="accuracy", error_score="raise")
    return float(np.mean(scores))
