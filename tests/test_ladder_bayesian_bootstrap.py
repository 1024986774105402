"""Bayesian bootstrap rung: the weights' distribution, the one-component Gaussian's closed form (the
weighted mean, whose Bayesian-bootstrap variance is s_n^2 / (N + 1)), integer weights reproducing EM on
the repeated rows, and alignment to the reference."""

import numpy as np
import pytest

from emvsbayes.coins.em import fit as coin_fit
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data.records import CoinData
from emvsbayes.family import get_family
from emvsbayes.gaussian.family import as_continuous_data
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams
from emvsbayes.ladder.bayesian_bootstrap import bayesian_bootstrap, dirichlet_weights, weighted_refit


def coin_refit(model, heads, tosses, reference):
    data = CoinData(heads, tosses, tuple(f"set {i + 1}" for i in range(len(heads))))
    refit, reason = weighted_refit(get_family("coins"), model, data, reference, {})
    assert reason == ""
    return refit


def gaussian_refit(model, x, reference):
    refit, reason = weighted_refit(get_family("gaussian"), model, as_continuous_data(x), reference, {})
    assert reason == ""
    return refit


def test_weights_sum_to_n_and_have_the_dirichlet_moments():
    n, b = 20, 4000
    w = dirichlet_weights(n, b, seed=3)
    np.testing.assert_allclose(w.sum(axis=1), n, rtol=1e-12)
    assert np.all(w > 0)
    # Replicate b's weights come from its own child seed: the first 10 do not depend on B.
    np.testing.assert_array_equal(dirichlet_weights(n, 10, seed=3), w[:10])
    # N * D_i with D ~ Dirichlet(1, ..., 1): mean 1, variance (N - 1) / (N + 1). Over the B * N weights
    # (dependent within a row only through the sum constraint) the mean's SE is at most sqrt(var / B).
    var = (n - 1) / (n + 1)
    assert abs(w[:, 0].mean() - 1.0) < 4 * np.sqrt(var / b)
    # SE of a sample variance of Exponential-like values: sqrt((m4 - var^2) / B), m4 <= 9 for Exp(1).
    assert abs(w[:, 0].var(ddof=1) - var) < 4 * np.sqrt((9 - var**2) / b)


@pytest.fixture(scope="module")
def one_gaussian():
    x = np.random.default_rng(11).normal(2.0, 1.5, size=30)
    model = GaussianMixtureModel(n_components=1, covariance_type="full")
    reference = GaussianParams.from_covariances([1.0], [[x.mean()]], [[[x.var()]]], "full")
    weights = dirichlet_weights(len(x), 2000, seed=5)
    result = bayesian_bootstrap(gaussian_refit(model, x, reference), reference.variables(), weights)
    return x, weights, result


def test_one_component_gaussian_replicate_means_are_the_weighted_means(one_gaussian):
    x, weights, result = one_gaussian
    assert result.ok.all() and result.converged.all()
    # K = 1: the weighted MLE of mu is the weighted mean, of sigma^2 the weighted variance (+ reg_covar).
    mu = weights @ x / len(x)
    np.testing.assert_allclose(result.draws["mu"][:, 0], mu, atol=1e-9)
    var = weights @ x**2 / len(x) - mu**2
    np.testing.assert_allclose(result.draws["sigma"][:, 0] ** 2, var + 1e-6, rtol=1e-8)


def test_one_component_gaussian_mean_and_variance_match_theory(one_gaussian):
    x, _, result = one_gaussian
    n, b = len(x), result.weights.shape[0]
    mu = result.draws["mu"][:, 0]
    # E[sum_i D_i x_i] = x-bar and Var = sum_i (x_i - x-bar)^2 / (N (N + 1)) = s_n^2 / (N + 1).
    theory_var = x.var() / (n + 1)
    assert abs(mu.mean() - x.mean()) < 4 * np.sqrt(theory_var / b)
    # The weighted mean of N = 30 rows is close to normal: SE of a sample variance ~ var sqrt(2 / (B - 1)).
    assert abs(mu.var(ddof=1) - theory_var) < 4 * theory_var * np.sqrt(2 / (b - 1))


HEADS = np.array([9, 8, 7, 2, 1, 3, 8, 2])
TOSSES = np.full(8, 10)


def test_integer_weights_reproduce_em_on_the_repeated_rows():
    model = CoinMixture(n_components=2, weights="estimated")
    reference = coin_fit(model, HEADS, TOSSES, CoinParams([0.7, 0.3], [0.5, 0.5])).params
    counts = np.array([[2, 0, 1, 1, 0, 3, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=float)
    result = bayesian_bootstrap(coin_refit(model, HEADS, TOSSES, reference), reference.variables(), counts)
    for row, c in enumerate(counts.astype(int)):
        rows = np.repeat(np.arange(8), c)
        one = coin_fit(model, HEADS[rows], TOSSES[rows], reference).params
        np.testing.assert_allclose(result.draws["theta"][row], one.theta, atol=1e-6)
        np.testing.assert_allclose(result.draws["w"][row], one.w, atol=1e-6)


def test_replicates_are_aligned_to_the_reference():
    model = CoinMixture(n_components=2, weights="estimated")
    reference = coin_fit(model, HEADS, TOSSES, CoinParams([0.7, 0.3], [0.5, 0.5])).params
    weights = dirichlet_weights(8, 200, seed=1)
    result = bayesian_bootstrap(coin_refit(model, HEADS, TOSSES, reference), reference.variables(), weights)
    mirrored = reference.permuted([1, 0])
    # Refits start from the mirrored answer; alignment to the original reference undoes the renaming.
    again = bayesian_bootstrap(coin_refit(model, HEADS, TOSSES, mirrored), reference.variables(), weights)
    np.testing.assert_allclose(again.draws["theta"], result.draws["theta"], atol=1e-6)
    assert np.all(result.draws["theta"][:, 0] > result.draws["theta"][:, 1])
    assert np.all(again.perms == [1, 0])
    ds = result.to_dataset({"theta": ("component",), "w": ("component",)})
    assert ds["theta"].dims == ("replicate", "component") and ds.sizes["replicate"] == 200
