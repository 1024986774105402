"""Laplace rung: oracles are the closed-form Gaussian approximation of a conjugate coin on the log-odds
scale, and scipy's optimiser on an independent numpy log posterior of a two-coin mixture."""

import numpy as np
import pymc as pm
import pytest
from scipy import optimize, stats
from scipy.special import expit, logit

from emvsbayes.coins.bayes import build_model
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.ladder.laplace import laplace, laplace_draws, to_dataset

A_PRIOR, B_PRIOR, HEADS, TOSSES = 2.0, 3.0, 7, 20


@pytest.fixture(scope="module")
def one_coin():
    with pm.Model(coords={"coin": [0]}) as model:
        theta = pm.Beta("theta", A_PRIOR, B_PRIOR)
        pm.Binomial("heads", n=TOSSES, p=theta, observed=HEADS)
    return model, laplace(model, {"theta": 0.9})


@pytest.mark.parametrize("hessian", ["exact", "differences"])
def test_one_coin_laplace_is_the_analytic_gaussian_on_the_log_odds_scale(one_coin, hessian):
    # Posterior Beta(A, B); on eta = logit(theta) with the Jacobian theta (1 - theta) the log density is
    # A log theta + B log(1 - theta): mode log(A / B), curvature -(A + B) theta (1 - theta) = -A B / (A + B).
    a, b = A_PRIOR + HEADS, B_PRIOR + TOSSES - HEADS
    model, _ = one_coin
    fit = laplace(model, {"theta": 0.9}, hessian=hessian)
    assert fit.value_names == ("theta_logodds__",)
    np.testing.assert_allclose(fit.mode, [np.log(a / b)], atol=1e-9)
    # Central differences of the exact gradient: relative error ~ step^2 + eps / step ~ 1e-10.
    np.testing.assert_allclose(fit.cov, [[(a + b) / (a * b)]], rtol=1e-8 if hessian == "exact" else 1e-7)

    def neg_log_post(eta):
        t = expit(eta)
        return -(stats.beta.logpdf(t, a, b) + np.log(t) + np.log1p(-t))

    scipy_mode = optimize.minimize_scalar(neg_log_post, bracket=(-3, 0, 3), tol=1e-12).x
    assert abs(fit.mode[0] - scipy_mode) < 1e-6


def test_one_coin_draws_are_the_gaussian_mapped_through_the_transform(one_coin):
    model, fit = one_coin
    draws = laplace_draws(model, fit, 4000, np.random.default_rng(1))
    np.testing.assert_allclose(logit(draws["theta"]), draws["_unconstrained"][:, 0], atol=1e-9)
    assert np.all((draws["theta"] > 0) & (draws["theta"] < 1))
    # 4000 draws: the sample mean is within 4 standard errors of the mode (false-failure rate 6e-5).
    sd = np.sqrt(fit.cov[0, 0])
    assert abs(draws["_unconstrained"][:, 0].mean() - fit.mode[0]) < 4 * sd / np.sqrt(4000)
    ds = to_dataset(model, draws)
    assert ds["theta"].dims == ("draw",) and ds.sizes["draw"] == 4000


HEADS_5 = np.array([8, 9, 2, 1, 7])
TOSSES_5 = np.full(5, 10)


def _numpy_log_posterior(eta, model_def):
    """log p(eta | data) + const of the equal-weight two-coin mixture, written without PyMC."""
    theta = expit(eta)
    params = CoinParams(theta, model_def.equal_weights)
    a, b = model_def.theta_prior
    return (model_def.loglik(params, HEADS_5, TOSSES_5) + stats.beta.logpdf(theta, a, b).sum()
            + np.sum(np.log(theta) + np.log1p(-theta)))


def test_two_coin_mixture_mode_and_hessian_match_an_independent_numpy_log_posterior():
    model_def = CoinMixture(n_components=2, weights="equal", theta_prior=(2.0, 2.0))
    model = build_model(model_def, HEADS_5, TOSSES_5)
    fit = laplace(model, {"theta": np.array([0.8, 0.2])}, hessian="exact")
    np.testing.assert_allclose(laplace(model, {"theta": np.array([0.8, 0.2])}).hessian, fit.hessian, rtol=1e-6)
    result = optimize.minimize(lambda e: -_numpy_log_posterior(e, model_def), logit([0.8, 0.2]), method="BFGS",
                               options={"gtol": 1e-10})
    np.testing.assert_allclose(fit.mode, result.x, atol=1e-6)
    # Central second differences with step 1e-4: truncation ~1e-8, rounding ~1e-16 * 30 / 1e-8 ~ 3e-7.
    h = 1e-4
    f = lambda e: _numpy_log_posterior(e, model_def)  # noqa: E731
    hess = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
            hess[i, j] = (f(fit.mode + ei + ej) - f(fit.mode + ei - ej) - f(fit.mode - ei + ej)
                          + f(fit.mode - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(fit.hessian, hess, rtol=1e-4, atol=1e-5)
    # The start picks the labelling: from the mirrored start the mode is the mirror image.
    mirrored = laplace(model, {"theta": np.array([0.2, 0.8])})
    np.testing.assert_allclose(mirrored.mode, fit.mode[::-1], atol=1e-6)


def test_estimated_weights_draws_lie_on_the_simplex():
    model_def = CoinMixture(n_components=2, weights="estimated", theta_prior=(2.0, 2.0), w_concentration=2.0)
    model = build_model(model_def, HEADS_5, TOSSES_5)
    fit = laplace(model, {"theta": np.array([0.8, 0.2]), "w": np.array([0.5, 0.5])})
    assert fit.mode.size == 3 and fit.gradient_norm < 1e-8
    draws = laplace_draws(model, fit, 200, np.random.default_rng(2))
    np.testing.assert_allclose(draws["w"].sum(axis=1), 1.0, atol=1e-12)
    assert to_dataset(model, draws)["theta"].dims == ("draw", "component")


def test_a_start_outside_the_support_is_refused():
    with pm.Model() as model:
        theta = pm.Beta("theta", 2.0, 2.0)
        pm.Binomial("heads", n=3, p=theta, observed=2)
    with pytest.raises(ValueError, match="not finite at the start"):
        laplace(model, {"theta": 1.0})


def test_a_flat_direction_has_no_laplace_approximation():
    with pm.Model() as model:
        # Only x + y is seen: the log posterior is constant along x - y, its Hessian singular.
        x, y = pm.Flat("x"), pm.Flat("y")
        pm.Normal("seen", mu=x + y, sigma=1.0, observed=0.5)
    with pytest.raises(ValueError, match="not negative definite"):
        laplace(model)
