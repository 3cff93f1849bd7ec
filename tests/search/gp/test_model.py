"""The GP against scikit-learn and finite differences; the acquisition functions against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from hpc_hpo.search.gp.acquisition import acquisition, log_ei, log_pi, ucb
from hpc_hpo.search.gp.model import JITTER, GaussianProcess, _log_prior, default_theta, negative_log_posterior

#: Absolute rounding error allowed in one evaluation of a prediction or an acquisition (values of order 1):
#: ten thousand machine epsilons, room for a Cholesky solve done by another BLAS kernel.
ROUNDING = 1e4 * np.finfo(float).eps


def central_gradient(f, x, h=1e-5):
    """The gradient of ``f`` at ``x`` by central differences, and a bound on its error.

    Central differences err by about h**2 * (third derivative) / 6 (truncation) plus ROUNDING / h;
    the truncation part is estimated from the same differences at 2h (Richardson: (D(2h) - D(h)) / 3).
    Forward differences with h = 1e-7 were dominated by rounding: they failed with OpenBLAS's Haswell kernels.
    """
    x = np.asarray(x, dtype=float)
    gradient, error = np.empty_like(x), np.empty_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = h
        d1 = (f(x + step) - f(x - step)) / (2 * h)
        d2 = (f(x + 2 * step) - f(x - 2 * step)) / (4 * h)
        gradient[i] = d1
        error[i] = abs(d2 - d1) / 3 + ROUNDING / h
    return gradient, error


def assert_gradient(analytic, f, x):
    numeric, error = central_gradient(f, x)
    assert np.all(np.abs(np.asarray(analytic) - numeric) <= 10 * error), (analytic, numeric, error)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.random((40, 3))
    y = np.sin(5 * X[:, 0]) + X[:, 1] ** 2 + 0.01 * rng.normal(size=40)
    return X, (y - y.mean()) / y.std()


def test_posterior_matches_scikit_learn_with_the_same_hyperparameters(data):
    X, y = data
    theta = np.log(np.array([0.3, 0.7, 2.0, 1.3, 1e-3]))
    gp = GaussianProcess(X, y, theta)
    kernel = (ConstantKernel(1.3, "fixed") * Matern([0.3, 0.7, 2.0], "fixed", nu=2.5)
              + WhiteKernel(1e-3 + JITTER, "fixed"))
    reference = GaussianProcessRegressor(kernel, optimizer=None, alpha=0.0).fit(X, y)
    Xq = np.random.default_rng(1).random((25, 3))
    mean, std = gp.predict(Xq)
    ref_mean, ref_std = reference.predict(Xq, return_std=True)
    assert np.allclose(mean, ref_mean, atol=1e-8)
    # scikit-learn's std includes the white noise; ours is the latent function's.
    assert np.allclose(std**2 + 1e-3 + JITTER, ref_std**2, atol=1e-8)
    # Without the prior, our objective is scikit-learn's log marginal likelihood.
    D2 = (X[:, None, :] - X[None, :, :]) ** 2
    prior_free = -negative_log_posterior(theta, X, y, D2)[0]

    assert math.isclose(prior_free - _log_prior(theta, 3)[0], reference.log_marginal_likelihood_value_, rel_tol=1e-8)


def test_hyperparameter_gradient_matches_finite_differences(data):
    X, y = data
    D2 = (X[:, None, :] - X[None, :, :]) ** 2
    for shift in (0.0, 0.5, -0.7):
        theta = default_theta(3) + shift
        error = check_grad(lambda t: negative_log_posterior(t, X, y, D2)[0],
                           lambda t: negative_log_posterior(t, X, y, D2)[1], theta)
        assert error < 1e-4 * max(1.0, np.abs(negative_log_posterior(theta, X, y, D2)[1]).max())


def test_fit_recovers_relevant_and_irrelevant_dimensions(data):
    X, y = data  # y depends on x0 strongly, x1 mildly, x2 not at all
    gp = GaussianProcess.fit(X, y)
    lengthscales = gp.lengthscales_
    assert lengthscales[0] < lengthscales[1] < lengthscales[2]
    assert lengthscales[2] > 3.0
    assert gp.noise_ < 1e-2


def test_interpolates_observations_and_is_uncertain_far_away(data):
    X, y = data
    gp = GaussianProcess.fit(X, y)
    mean, std = gp.predict(X)
    assert np.abs(mean - y).max() < 0.05 and std.max() < 0.1
    _, far_std = gp.predict(np.array([[3.0, 3.0, 3.0]]))
    assert far_std[0] > 0.9 * math.sqrt(gp.s2_)


def test_prediction_gradients_match_finite_differences(data):
    X, y = data
    gp = GaussianProcess.fit(X, y)
    x0 = np.array([[0.31, 0.62, 0.47]])
    _, _, dmean, dstd = gp.predict_with_grad(x0)
    assert_gradient(dmean[0], lambda x: gp.predict(x[None])[0][0], x0[0])
    assert_gradient(dstd[0], lambda x: gp.predict(x[None])[1][0], x0[0])


def test_fantasies_remove_uncertainty_at_pending_points(data):
    X, y = data
    gp = GaussianProcess.fit(X, y)
    P = np.array([[0.9, 0.1, 0.5], [0.05, 0.95, 0.2]])
    believed = gp.predict(P)[0]
    with_fantasies = gp.condition_on(P, believed)
    mean, std = with_fantasies.predict(P)
    assert np.allclose(mean, believed, atol=1e-3) and std.max() < 0.05
    assert with_fantasies.theta_ is gp.theta_  # no refit


def test_a_factor_extended_by_new_points_gives_the_posterior_of_a_gp_built_from_scratch(data):
    X, y = data
    theta = np.log(np.array([0.3, 0.7, 2.0, 1.3, 1e-3]))
    rng = np.random.default_rng(1)
    base = GaussianProcess(X[:25], y[:25], theta)
    y_again = y + 0.1  # all values may change (standardised again): only X and theta must be the same
    grown = base.extended(X[25:], y_again)
    scratch = GaussianProcess(X, y_again, theta)
    assert grown.X_.shape == (40, 3) and grown.L_.flags.f_contiguous  # as LAPACK returns it: no copy per solve
    assert np.allclose(grown.L_, scratch.L_, atol=1e-10) and np.allclose(grown.alpha_, scratch.alpha_, atol=1e-8)
    Q = rng.random((7, 3))
    for got, want in zip(grown.predict(Q), scratch.predict(Q), strict=True):
        assert np.allclose(got, want, atol=1e-10)
    assert np.allclose(grown.mean(Q), scratch.predict(Q)[0], atol=1e-10)
    same = base.extended(X[:0], y[:25] - 1.0)  # nothing new: the same factor, new values
    assert same.L_ is base.L_ and np.allclose(same.alpha_, GaussianProcess(X[:25], y[:25] - 1.0, theta).alpha_)


def test_a_factor_extended_by_a_point_already_in_it_matches_the_gp_built_from_scratch():
    X = np.array([[0.1, 0.2], [0.5, 0.5], [0.9, 0.3]])
    theta = np.log(np.array([0.5, 0.5, 1.0, 1e-6]))  # the smallest noise allowed: a repeated point is nearly singular
    y = np.array([0.0, 1.0, -1.0, 1.0])
    grown = GaussianProcess(X, y[:3], theta).extended(X[1:2], y)
    scratch = GaussianProcess(np.vstack([X, X[1:2]]), y, theta)
    Q = np.array([[0.5, 0.5], [0.3, 0.3]])
    for got, want in zip(grown.predict(Q), scratch.predict(Q), strict=True):
        assert np.isfinite(got).all() and np.allclose(got, want, atol=1e-6)


def test_expected_improvement_against_the_closed_form():
    mean, std = np.array([0.5, -0.2, 3.0, 10.0]), np.array([1.0, 0.3, 0.5, 0.4])
    best = 0.0
    z = (best - mean) / std
    closed = (best - mean) * norm.cdf(z) + std * norm.pdf(z)
    value, _, _ = log_ei(mean, std, best, 0.0)
    assert np.allclose(value[:3], np.log(closed[:3]), rtol=1e-9)
    assert np.isfinite(value[3]) and value[3] < -200  # z = -25: EI underflows, log EI does not
    assert np.allclose(log_pi(mean, std, best, 0.0)[0][:3], np.log(norm.cdf(z[:3])))
    assert np.allclose(ucb(mean, std, 2.0)[0], 2.0 * std - mean)


@pytest.mark.parametrize("name", ["ei", "pi", "ucb"])
def test_acquisition_gradients_match_finite_differences(name):
    for m, s in [(0.3, 0.5), (-1.0, 0.2), (4.0, 0.3), (9.0, 0.2)]:
        _, d_mean, d_std = acquisition(name, np.array([m]), np.array([s]), 0.0, 0.01, 2.0)
        assert_gradient(d_mean, lambda v, s=s: acquisition(name, v, np.array([s]), 0.0, 0.01, 2.0)[0][0], np.array([m]))
        assert_gradient(d_std, lambda v, m=m: acquisition(name, np.array([m]), v, 0.0, 0.01, 2.0)[0][0], np.array([s]))
