"""Acquisition functions for minimisation, with their gradients in the posterior mean and std.

Each returns (value, d value / d mean, d value / d std) for arrays of means and stds, in
standardised units. EI and PI are used in log form: the same maximiser, but no flat
zero landscape far from the incumbent, so the optimiser always has a slope to follow
(as in "Unexpected improvements to expected improvement", Ament et al., 2023).

    ei   log E[max(best - f - xi, 0)]
    pi   log P(f < best - xi)
    ucb  kappa * std - mean        (a lower confidence bound, for minimisation)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx, log_ndtr

from ..bayes_options import ACQUISITIONS

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_PI_2 = math.sqrt(math.pi / 2.0)
_SQRT2 = math.sqrt(2.0)


def _log_h(z: np.ndarray) -> np.ndarray:
    """log(phi(z) + z Phi(z)), accurate for every z.

    For z < -1, h = phi(z) (1 + z R(z)) with R = Phi / phi = sqrt(pi/2) erfcx(-z / sqrt(2)),
    which never underflows; beyond z = -1000, where 1 + z R loses its digits, the asymptotic
    series phi(z) / z^2 (1 - 3/z^2) is exact to 1e-11.
    """
    out = np.empty_like(z)
    direct = z > -1.0
    zd = z[direct]
    out[direct] = np.log(np.exp(-0.5 * zd * zd - _LOG_SQRT_2PI) + zd * np.exp(log_ndtr(zd)))
    mills = (z <= -1.0) & (z > -1000.0)
    zm = z[mills]
    ratio = _SQRT_PI_2 * erfcx(-zm / _SQRT2)
    out[mills] = -0.5 * zm * zm - _LOG_SQRT_2PI + np.log1p(zm * ratio)
    far = z <= -1000.0
    zf = z[far]
    out[far] = -0.5 * zf * zf - _LOG_SQRT_2PI - 2.0 * np.log(-zf) + np.log1p(-3.0 / zf**2)
    return out


def log_ei(mean: np.ndarray, std: np.ndarray, best: float, xi: float):
    z = (best - mean - xi) / std
    log_h = _log_h(z)
    value = np.log(std) + log_h
    # EI = std h(z): dEI/dmean = -Phi(z), dEI/dstd = phi(z); divide by EI for the log.
    ratio_cdf = np.exp(log_ndtr(z) - log_h)
    ratio_pdf = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_h)
    return value, -ratio_cdf / std, ratio_pdf / std


def log_pi(mean: np.ndarray, std: np.ndarray, best: float, xi: float):
    z = (best - mean - xi) / std
    value = log_ndtr(z)
    inv_mills = np.exp(-0.5 * z * z - _LOG_SQRT_2PI - value)  # phi(z) / Phi(z)
    return value, -inv_mills / std, -inv_mills * z / std


def ucb(mean: np.ndarray, std: np.ndarray, kappa: float):
    return kappa * std - mean, -np.ones_like(mean), np.full_like(std, kappa)


def acquisition(name: str, mean: np.ndarray, std: np.ndarray, best: float, xi: float, kappa: float):
    if name == "ei":
        return log_ei(mean, std, best, xi)
    if name == "pi":
        return log_pi(mean, std, best, xi)
    if name == "ucb":
        return ucb(mean, std, kappa)
    raise ValueError(f"unknown acquisition {name!r} (allowed: {', '.join(ACQUISITIONS)})")
