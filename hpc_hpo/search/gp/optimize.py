"""Maximising the acquisition over a mixed space.

1. Score many candidates at once: a scrambled Sobol sample of the space plus perturbations
   of the best observed points (valid points: ints rounded, categoricals chosen).
2. Refine the best few with L-BFGS-B on the continuous columns (floats and relaxed ints),
   all starts in one problem: their objectives are independent, so the sum is exact.
   (A prepared step folded in later scores its kept candidates instead, and refines briefly:
   :meth:`hpc_hpo.search.gp.suggester.BayesSuggester.prepare`.)
3. Snap the refined points to valid points (ints to their bins) and score them again.

The caller gets every scored point, best first, and takes the first it has not seen.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc  # noqa: F401  (imported now, with the GP code at worker set-up: 1 s on first use otherwise)

from ..sampling import sobol_engine
from .acquisition import acquisition
from .encoding import Encoding
from .model import GaussianProcess

N_SOBOL = 1024
MANY_OBSERVATIONS = 300
N_LOCAL = 256
N_STARTS = 5
N_INCUMBENT_STARTS = 3
LOCAL_STEP = 0.05
MAXITER = 40
MANY_MAXITER = 20


def candidates(encoding: Encoding, rng: np.random.Generator, best_unit: np.ndarray, n_sobol: int = N_SOBOL) -> np.ndarray:
    """Valid encoded candidates: a Sobol sample of the space and perturbations of the best points."""
    k = len(encoding.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        U = sobol_engine(k, rng).random(n_sobol)
    if len(best_unit):
        U = np.vstack([U, _perturbed(encoding, rng, best_unit)])
    return encoding.sample(U)


def local_candidates(encoding: Encoding, rng: np.random.Generator, best_unit: np.ndarray) -> np.ndarray:
    """Valid encoded perturbations of the best points only."""
    return encoding.sample(_perturbed(encoding, rng, best_unit))


def _perturbed(encoding: Encoding, rng: np.random.Generator, best_unit: np.ndarray) -> np.ndarray:
    centres = best_unit[rng.integers(len(best_unit), size=N_LOCAL)]
    local = np.clip(centres + rng.normal(0.0, LOCAL_STEP, size=centres.shape), 0.0, 1.0)
    # Categorical columns jump to a random choice now and then instead of drifting.
    categorical = ~np.array([encoding.continuous[b.start] for b in encoding.blocks])
    jump = (rng.random(local.shape) < 0.2) & categorical
    local[jump] = rng.random(int(jump.sum()))
    return local


def score(gp: GaussianProcess, X: np.ndarray, name: str, best: float, xi: float, kappa: float) -> np.ndarray:
    mean, std = gp.predict(X)
    return acquisition(name, mean, std, best, xi, kappa)[0]


def refine(gp: GaussianProcess, encoding: Encoding, starts: np.ndarray, name: str, best: float, xi: float,
           kappa: float, maxiter: int = MAXITER) -> np.ndarray:
    """L-BFGS-B from each start over the continuous columns; categorical columns stay as they are."""
    cont = encoding.continuous
    if not cont.any():
        return starts
    b, c = len(starts), int(cont.sum())
    fixed = starts.copy()

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        X = fixed.copy()
        X[:, cont] = z.reshape(b, c)
        mean, std, dmean, dstd = gp.predict_with_grad(X)
        value, dv_dmean, dv_dstd = acquisition(name, mean, std, best, xi, kappa)
        grad = dv_dmean[:, None] * dmean + dv_dstd[:, None] * dstd
        return -float(value.sum()), -grad[:, cont].ravel()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = minimize(objective, starts[:, cont].ravel(), jac=True, method="L-BFGS-B",
                          bounds=[(0.0, 1.0)] * (b * c), options={"maxiter": maxiter})
    refined = fixed.copy()
    refined[:, cont] = np.clip(result.x.reshape(b, c), 0.0, 1.0)
    return refined


def ranked_points(gp: GaussianProcess, encoding: Encoding, rng: np.random.Generator, best_unit: np.ndarray,
                  name: str, best: float, xi: float, kappa: float, X: np.ndarray | None = None,
                  n_starts: int = N_STARTS, n_incumbent_starts: int = N_INCUMBENT_STARTS,
                  maxiter: int = MAXITER) -> tuple[np.ndarray, np.ndarray]:
    """Valid encoded points and their acquisition values, best first.

    ``X``: the candidates to score (default: a Sobol sample of the space and perturbations of the
    best points). Local refinement starts from the ``n_starts`` best candidates and from the best
    observed points, so the region of the incumbent is always searched closely, however tempting
    far corners look.
    """
    many = len(gp.X_) > MANY_OBSERVATIONS
    if X is None:
        # Scoring costs n^2 per candidate; with many observations the model is sharper and fewer do.
        X = candidates(encoding, rng, best_unit, N_SOBOL // 2 if many else N_SOBOL)
    if many:  # and the refinement (n^2 an iteration: 2.5 ms at 1,000 points) needs fewer iterations from them
        maxiter = min(maxiter, MANY_MAXITER)
    values = score(gp, X, name, best, xi, kappa)
    order = np.argsort(-values)
    starts = np.vstack([X[order[:n_starts]], encoding.sample(best_unit[:n_incumbent_starts])])
    refined = encoding.project(refine(gp, encoding, starts, name, best, xi, kappa, maxiter))
    X = np.vstack([refined, X])
    values = np.concatenate([score(gp, refined, name, best, xi, kappa), values])
    order = np.argsort(-values, kind="stable")
    return X[order], values[order]
