"""Errors of the first four moments of the generated sample."""

from __future__ import annotations

import torch
from torch import Tensor


#: A coordinate whose reference variance is below this fraction of the largest
#: one is treated as constant (e.g. a trajectory's fixed initial value).
CONSTANT_VARIANCE = 1e-10


def _moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean ``(d,)``, unbiased covariance ``(d, d)``, skewness and excess kurtosis ``(d,)``.

    Skewness ``m3 / m2^1.5`` and excess kurtosis ``m4 / m2² - 3`` use biased
    central moments ``m_k``, as ``scipy.stats.skew`` / ``kurtosis`` do by default.
    A coordinate with no spread gets skewness 0 and excess kurtosis -3 instead of 0/0.
    """
    x = x.to(torch.float64)
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (len(x) - 1)
    m2 = (centred**2).mean(0)
    spread = m2 > 0
    safe_m2 = torch.where(spread, m2, torch.ones_like(m2))
    skew = torch.where(spread, (centred**3).mean(0) / safe_m2**1.5, 0.0)
    kurt = torch.where(spread, (centred**4).mean(0) / safe_m2**2 - 3.0, -3.0)
    return mean, cov, skew, kurt


def moment_errors(generated: Tensor, reference: Tensor) -> dict[str, float]:
    """Mean squared errors of mean, covariance, skewness and excess kurtosis.

    Args:
        generated: Shape ``(n, d)``.
        reference: Shape ``(m, d)``.

    Returns:
        ``mean_mse``, ``cov_mse`` (over the ``d²`` entries), ``skew_mse`` and
        ``kurt_mse`` (over the dimensions where the reference varies: shape
        statistics of a constant coordinate are undefined, and its errors are
        already in the mean and covariance; 0 when the reference is a single
        point), in float64.  Finite for any finite float32-range input: moments
        are taken about the mean in float64 (``(3.4e38)⁴ ≈ 1e154``).
    """
    gen_mean, gen_cov, gen_skew, gen_kurt = _moments(generated)
    ref_mean, ref_cov, ref_skew, ref_kurt = _moments(reference)
    ref_var = ref_cov.diagonal()
    varies = ref_var > CONSTANT_VARIANCE * ref_var.max().clamp_min(torch.finfo(torch.float64).tiny)

    def shape_mse(error: Tensor) -> float:
        return float((error[varies] ** 2).sum() / max(int(varies.sum()), 1))

    return {
        "mean_mse": float(((gen_mean - ref_mean) ** 2).mean()),
        "cov_mse": float(((gen_cov - ref_cov) ** 2).mean()),
        "skew_mse": shape_mse(gen_skew - ref_skew),
        "kurt_mse": shape_mse(gen_kurt - ref_kurt),
    }
