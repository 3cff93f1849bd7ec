"""Our Yeo-Johnson against scipy.stats.yeojohnson, which it replaces for speed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import yeojohnson

from hpc_hpo.search.gp.warping import standardise, transform, yeo_johnson, yeo_johnson_lambda


def skewed_samples():
    rng = np.random.default_rng(3)
    yield "lognormal losses", rng.lognormal(0.0, 1.5, 60)
    yield "a few diverged runs", np.r_[rng.normal(0.3, 0.01, 40), [40.0, 900.0]]
    yield "all negative", -rng.exponential(2.0, 30)
    yield "symmetric", rng.normal(size=25)
    yield "three points", np.array([1.0, 2.0, 10.0])


@pytest.mark.parametrize("name, values", list(skewed_samples()))
def test_lambda_and_transform_match_scipy(name, values):
    z = standardise(values)
    expected, expected_lambda = yeojohnson(z)
    lmbda = yeo_johnson_lambda(z)
    assert lmbda == pytest.approx(expected_lambda, abs=1e-5), name
    np.testing.assert_allclose(yeo_johnson(z, expected_lambda), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lmbda", [0.0, 2.0, 0.5, -1.0])
def test_the_special_cases_of_lambda_match_scipy(lmbda):
    z = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(yeo_johnson(z, lmbda), yeojohnson(z, lmbda), rtol=1e-10, atol=1e-12)


def test_transform_keeps_the_order_standardises_and_puts_the_worst_at_the_prior_mean():
    """The GP's prior mean is zero: with the worst value observed there, the model expects the worst far from
    every observation (a pessimistic prior mean), not the average."""
    values = np.random.default_rng(0).lognormal(0, 2, 50)
    warped = transform(values)
    assert np.array_equal(np.argsort(warped), np.argsort(values))
    assert warped.std() == pytest.approx(1) and warped.max() == 0.0 and warped[np.argmax(values)] == 0.0
    assert warped.mean() < -0.5  # the average lies below the prior mean: most points are better than the worst
    assert np.array_equal(transform(np.full(5, 3.0)), np.zeros(5))  # constant values stay put
    assert np.array_equal(transform(np.array([2.0, 1.0])), np.array([0.0, -2.0]))  # too few to warp: standardised
