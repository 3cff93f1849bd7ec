"""A Gaussian process with a Matern-5/2 ARD kernel and a noise term, fitted by MAP.

Outputs are standardised by the caller, the worst at zero (so the zero prior mean is pessimistic:
:func:`hpc_hpo.search.gp.warping.transform`). Hyperparameters ``theta`` = (log length scales,
log signal variance, log noise variance) maximise the log marginal likelihood plus weak
log-normal priors, with analytic gradients and L-BFGS-B inside bounds; the previous fit is
a warm start. Pending points enter as fantasies through :meth:`GaussianProcess.condition_on`,
which reuses theta and the factor it has: the Cholesky factor of n + p points is the one of the n
extended by a block (:meth:`GaussianProcess.extended`: a triangular solve of n^2 p and a Cholesky of
p^2, not (n + p)^3 / 3 again; at 1,000 points and one pending point 1 ms instead of 55).

Shapes follow the notation in :mod:`hpc_hpo.search.gp`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, lapack, solve_triangular
from scipy.optimize import minimize

from .kernel import grad_wrt_query, matern52, matern52_dr2_factor, scaled_sq_dist

JITTER = 1e-8
#: Relative tolerance of the hyperparameter fit: hyperparameters need no more precision than this.
FIT_FTOL = 1e-6
#: Bounds of exp(theta): length scales, signal variance, noise variance (outputs standardised).
LENGTHSCALE_BOUNDS = (5e-3, 20.0)
SIGNAL_BOUNDS = (0.05, 20.0)
NOISE_BOUNDS = (1e-6, 2.0)
#: Log-normal priors (mean, sd) on length scale, signal variance and noise variance.
LENGTHSCALE_PRIOR = (math.log(0.5), 1.0)
SIGNAL_PRIOR = (0.0, 1.5)
NOISE_PRIOR = (math.log(1e-3), 2.5)


def default_theta(d: int) -> np.ndarray:
    return np.concatenate([np.full(d, LENGTHSCALE_PRIOR[0]), [SIGNAL_PRIOR[0], NOISE_PRIOR[0]]])


def theta_bounds(d: int) -> list[tuple[float, float]]:
    return ([tuple(map(math.log, LENGTHSCALE_BOUNDS))] * d
            + [tuple(map(math.log, SIGNAL_BOUNDS)), tuple(map(math.log, NOISE_BOUNDS))])


def _log_prior(theta: np.ndarray, d: int) -> tuple[float, np.ndarray]:
    means = np.concatenate([np.full(d, LENGTHSCALE_PRIOR[0]), [SIGNAL_PRIOR[0], NOISE_PRIOR[0]]])
    sds = np.concatenate([np.full(d, LENGTHSCALE_PRIOR[1]), [SIGNAL_PRIOR[1], NOISE_PRIOR[1]]])
    z = (theta - means) / sds
    return float(-0.5 * np.sum(z * z)), -z / sds


def negative_log_posterior(theta: np.ndarray, X: np.ndarray, y: np.ndarray, D2: np.ndarray) -> tuple[float, np.ndarray]:
    """-(log marginal likelihood + log prior) and its gradient. D2 (n, n, d): squared differences."""
    n, d = X.shape
    ell2 = np.exp(2.0 * theta[:d])
    s2, noise = math.exp(theta[d]), math.exp(theta[d + 1])
    R2 = D2 @ (1.0 / ell2)
    K = matern52(R2, s2)
    Ky = K.copy()
    Ky[np.diag_indices(n)] += noise + JITTER
    try:
        L = cholesky(Ky, lower=True, check_finite=False)
    except LinAlgError:
        return 1e25, np.zeros_like(theta)
    alpha = cho_solve((L, True), y, check_finite=False)
    lml = -0.5 * y @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * math.log(2.0 * math.pi)
    K_inv, info = lapack.dpotri(L, lower=True)  # the inverse from the Cholesky factor: a third of a solve
    if info != 0:
        return 1e25, np.zeros_like(theta)
    K_inv = np.tril(K_inv) + np.tril(K_inv, -1).T  # dpotri fills one triangle
    W = np.outer(alpha, alpha) - K_inv
    G = W * matern52_dr2_factor(R2, s2)
    grad = np.empty_like(theta)
    grad[:d] = 0.5 * np.einsum("ij,ijk->k", G, D2) / ell2  # d/dlog(l): dr2 = -2 D2 / l^2
    grad[d] = 0.5 * np.sum(W * K)
    grad[d + 1] = 0.5 * noise * np.trace(W)
    prior, prior_grad = _log_prior(theta, d)
    return -(lml + prior), -(grad + prior_grad)


class GaussianProcess:
    """A fitted GP: ``fit`` returns one; ``predict`` gives the posterior of the latent function."""

    def __init__(self, X: np.ndarray, y: np.ndarray, theta: np.ndarray, _factor: tuple | None = None):
        n, d = X.shape
        self.X_, self.y_, self.theta_ = X, y, theta
        self.lengthscales_ = np.exp(theta[:d])
        self.s2_ = math.exp(theta[d])
        self.noise_ = math.exp(theta[d + 1])
        if _factor is not None:  # (L, jitter added) of this X and theta, from :meth:`extended`
            self.L_, self._extra = _factor
        else:
            K = matern52(scaled_sq_dist(X, X, self.lengthscales_), self.s2_)
            K[np.diag_indices(n)] += self.noise_ + JITTER
            for extra in (0.0, 1e-6, 1e-4):  # add jitter only if the matrix needs it
                try:
                    self.L_ = cholesky(K + extra * np.eye(n), lower=True, check_finite=False)
                    self._extra = extra
                    break
                except LinAlgError:
                    continue
            else:
                raise LinAlgError("the GP covariance is not positive definite even with added jitter; "
                                  "are there many identical points with different values?")
        self.alpha_ = cho_solve((self.L_, True), y, check_finite=False)

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, theta0: np.ndarray | None = None, maxiter: int = 50,
            from_default: bool = True) -> GaussianProcess:
        """MAP hyperparameters from ``theta0`` (a warm start) and, if ``from_default``, the default too."""
        d = X.shape[1]
        D2 = (X[:, None, :] - X[None, :, :]) ** 2
        bounds = theta_bounds(d)
        initial = [] if theta0 is None else [theta0]
        if from_default or theta0 is None:
            initial.append(default_theta(d))
        best_value, best_theta = np.inf, initial[0]
        for start in initial:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                result = minimize(negative_log_posterior, np.clip(start, *np.array(bounds).T), args=(X, y, D2),
                                  jac=True, method="L-BFGS-B", bounds=bounds,
                                  options={"maxiter": maxiter, "ftol": FIT_FTOL})
            if result.fun < best_value:
                best_value, best_theta = result.fun, result.x
        return cls(X, y, best_theta)

    def condition_on(self, X_new: np.ndarray, y_new: np.ndarray) -> GaussianProcess:
        """The same GP (same theta) with extra points, e.g. fantasies at pending points."""
        if len(X_new) == 0:
            return self
        return self.extended(X_new, np.concatenate([self.y_, y_new]))

    def extended(self, X_new: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """The GP with the same theta over ``X_ + X_new`` and the values ``y`` (all of them: those of ``X_``
        may have changed, e.g. standardised again), its Cholesky factor this one's extended by a block.

        [[L, 0], [B^T, C]] with B = L^-1 K(X_, X_new) and C C^T = K(X_new, X_new) + noise - B^T B; where C
        does not exist in floating point (a new point next to an old one, little noise), the whole factor
        is computed again with the usual added jitter.
        """
        n, p = len(self.X_), len(X_new)
        X = np.vstack([self.X_, X_new]) if p else self.X_
        if p == 0:
            return GaussianProcess(X, y, self.theta_, _factor=(self.L_, self._extra))
        cross = matern52(scaled_sq_dist(self.X_, X_new, self.lengthscales_), self.s2_)
        corner = matern52(scaled_sq_dist(X_new, X_new, self.lengthscales_), self.s2_)
        corner[np.diag_indices(p)] += self.noise_ + JITTER + self._extra
        B = solve_triangular(self.L_, cross, lower=True, check_finite=False)
        try:
            C = cholesky(corner - B.T @ B, lower=True, check_finite=False)
        except LinAlgError:
            return GaussianProcess(X, y, self.theta_)
        L = np.zeros((n + p, n + p), order="F")  # as LAPACK returns it: cho_solve copies a C-ordered factor each call
        L[:n, :n] = self.L_
        L[n:, :n] = B.T
        L[n:, n:] = C
        return GaussianProcess(X, y, self.theta_, _factor=(L, self._extra))

    def mean(self, Xq: np.ndarray) -> np.ndarray:
        """Posterior mean at Xq (m, d), without the standard deviation's triangular solve (n^2 m)."""
        return matern52(scaled_sq_dist(Xq, self.X_, self.lengthscales_), self.s2_) @ self.alpha_

    def predict(self, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent function at Xq (m, d)."""
        Kq = matern52(scaled_sq_dist(Xq, self.X_, self.lengthscales_), self.s2_)
        mean = Kq @ self.alpha_
        v = solve_triangular(self.L_, Kq.T, lower=True, check_finite=False)
        var = np.maximum(self.s2_ - np.einsum("ij,ij->j", v, v), 1e-12)
        return mean, np.sqrt(var)

    def predict_with_grad(self, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, std and their gradients (m, d) with respect to the query points."""
        k, dk = grad_wrt_query(Xq, self.X_, self.lengthscales_, self.s2_)
        mean = k @ self.alpha_
        dmean = np.einsum("bnd,n->bd", dk, self.alpha_)
        Kinv_k = cho_solve((self.L_, True), k.T, check_finite=False).T  # (b, n)
        var = np.maximum(self.s2_ - np.einsum("bn,bn->b", k, Kinv_k), 1e-12)
        std = np.sqrt(var)
        dvar = -2.0 * np.einsum("bnd,bn->bd", dk, Kinv_k)
        return mean, std, dmean, dvar / (2.0 * std[:, None])
