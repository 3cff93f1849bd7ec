"""The Matern-5/2 kernel with one length scale per column (ARD), and its derivatives.

    k(x, x') = s2 * (1 + sqrt(5) r + 5/3 r^2) * exp(-sqrt(5) r),   r^2 = sum_i ((x_i - x'_i) / l_i)^2
"""

from __future__ import annotations

import numpy as np

SQRT5 = np.sqrt(5.0)


def scaled_sq_dist(A: np.ndarray, B: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) squared distances after dividing each column by its length scale."""
    a = A / lengthscales
    b = B / lengthscales
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def matern52(r2: np.ndarray, s2: float) -> np.ndarray:
    r = np.sqrt(r2)
    return s2 * (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * np.exp(-SQRT5 * r)


def matern52_dr2_factor(r2: np.ndarray, s2: float) -> np.ndarray:
    """g(r) with dk = -g(r) * d(r^2) / 2, i.e. g = 5/3 s2 (1 + sqrt(5) r) exp(-sqrt(5) r)."""
    r = np.sqrt(r2)
    return s2 * (5.0 / 3.0) * (1.0 + SQRT5 * r) * np.exp(-SQRT5 * r)


def grad_wrt_query(x: np.ndarray, X: np.ndarray, lengthscales: np.ndarray, s2: float) -> tuple[np.ndarray, np.ndarray]:
    """k(x_b, X) and its gradient with respect to x_b, for a batch x (b, d).

    Returns k (b, n) and dk (b, n, d): dk/dx = -g(r) (x - X_j) / l^2.
    """
    r2 = scaled_sq_dist(x, X, lengthscales)
    k = matern52(r2, s2)
    g = matern52_dr2_factor(r2, s2)
    diff = (x[:, None, :] - X[None, :, :]) / (lengthscales**2)
    return k, -g[:, :, None] * diff
