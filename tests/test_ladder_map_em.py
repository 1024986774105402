"""MAP-EM rung: the answer equals scipy's maximiser of the PyMC model's own log posterior (no Jacobian:
the mode of the density of theta and w themselves) to 1e-6, and its objective is that log posterior."""

import numpy as np
import pytest
from scipy import optimize

from conftest import ORACLE_MODE
from emvsbayes.coins.bayes import build_model
from emvsbayes.coins.em import fit as mle_fit
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.ladder.laplace import constrained_values, unconstrained_start
from emvsbayes.coins.map_em import fit_coin_map

HEADS = np.array([9, 8, 7, 2, 1, 3, 8, 2, 5])
TOSSES = np.array([10, 10, 10, 10, 10, 10, 12, 8, 10])
TIGHT = {"tol": 1e-13, "param_tol": 1e-11, "max_iter": 20_000}


def _scipy_map(model_def, start):
    from pymc.blocking import DictToArrayBijection, RaveledVars

    model = build_model(model_def, HEADS, TOSSES)
    point = unconstrained_start(model, start)
    raveled = DictToArrayBijection.map({v.name: point[v.name] for v in model.value_vars})
    logp = model.compile_logp(jacobian=False, mode=ORACLE_MODE)
    dlogp = model.compile_dlogp(jacobian=False, mode=ORACLE_MODE)

    def as_point(phi):
        return DictToArrayBijection.rmap(RaveledVars(phi, raveled.point_map_info))

    result = optimize.minimize(lambda p: -float(logp(as_point(p))), raveled.data,
                               jac=lambda p: -np.asarray(dlogp(as_point(p))), method="BFGS",
                               options={"gtol": 1e-11, "maxiter": 10_000})
    values = constrained_values(model, raveled.point_map_info, result.x)
    return {name: value[0] for name, value in values.items()}, -result.fun


@pytest.mark.parametrize("weights", ["estimated", "equal"])
def test_map_em_equals_scipy_on_the_pymc_log_posterior(weights):
    model_def = CoinMixture(n_components=2, weights=weights, theta_prior=(2.0, 3.0), w_concentration=3.0)
    init = CoinParams([0.7, 0.3], [0.5, 0.5])
    fit = fit_coin_map(model_def, HEADS, TOSSES, init, **TIGHT)
    assert fit.converged
    start = {"theta": np.array([0.7, 0.3])} | ({"w": np.array([0.5, 0.5])} if weights == "estimated" else {})
    scipy_values, scipy_logp = _scipy_map(model_def, start)
    np.testing.assert_allclose(fit.params.theta, scipy_values["theta"], atol=1e-6)
    if weights == "estimated":
        np.testing.assert_allclose(fit.params.w, scipy_values["w"], atol=1e-6)
    # The objective EM reports is PyMC's log posterior (normalising constants included); the two differ
    # by a constant 4.7e-8 here, PyMC's log binomial coefficients against scipy's gammaln.
    assert fit.loglik == pytest.approx(scipy_logp, abs=1e-6)
    # The priors pull the answer: it is not the MLE.
    mle = mle_fit(model_def, HEADS, TOSSES, init, **TIGHT).params
    assert np.max(np.abs(mle.theta - fit.params.theta)) > 1e-3


def test_flat_priors_give_the_mle():
    model_def = CoinMixture(n_components=2, weights="estimated", theta_prior=(1.0, 1.0), w_concentration=1.0)
    init = CoinParams([0.7, 0.3], [0.5, 0.5])
    np.testing.assert_allclose(fit_coin_map(model_def, HEADS, TOSSES, init, **TIGHT).params.theta,
                               mle_fit(model_def, HEADS, TOSSES, init, **TIGHT).params.theta, atol=1e-9)


def test_priors_without_a_mode_are_refused():
    with pytest.raises(ValueError, match="no mode"):
        fit_coin_map(CoinMixture(theta_prior=(0.5, 1.0)), HEADS, TOSSES, CoinParams([0.7, 0.3], [0.5, 0.5]))
    with pytest.raises(ValueError, match="no mode"):
        fit_coin_map(CoinMixture(weights="estimated", w_concentration=0.5), HEADS, TOSSES,
                     CoinParams([0.7, 0.3], [0.5, 0.5]))


@pytest.mark.parametrize("covariance", ["full", "tied"])
def test_gaussian_1d_map_em_equals_scipy_on_the_pymc_log_posterior(covariance):
    from pymc.blocking import DictToArrayBijection, RaveledVars

    from emvsbayes.gaussian.bayes import build_model as gaussian_model
    from emvsbayes.gaussian.bayes import initvals_from_params
    from emvsbayes.gaussian.em import fit as gaussian_fit
    from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, GaussianPriors
    from emvsbayes.gaussian.map_em import fit_gaussian_map

    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(-1.5, 0.6, 12), rng.normal(1.0, 1.0, 15)])
    # 1-D "full" has one HalfNormal sd per component, "tied" one shared sd (sigma_tied).
    model_def = GaussianMixtureModel(n_components=2, covariance_type=covariance, reg_covar=0.0,
                                     priors=GaussianPriors(w_concentration=3.0, sigma_scale=(0.5,)))
    cov = [[[1.0]], [[1.0]]] if covariance == "full" else [[1.0]]
    init = GaussianParams.from_covariances([0.5, 0.5], [[-1.0], [1.0]], cov, covariance)
    fit = fit_gaussian_map(model_def, x, init, **TIGHT)
    assert fit.converged
    model = gaussian_model(model_def, x)
    values = fit.params.variables()
    point = unconstrained_start(model, initvals_from_params(model_def, [fit.params])[0])
    raveled = DictToArrayBijection.map({v.name: point[v.name] for v in model.value_vars})
    logp, dlogp = model.compile_logp(jacobian=False, mode=ORACLE_MODE), model.compile_dlogp(jacobian=False, mode=ORACLE_MODE)

    def as_point(phi):
        return DictToArrayBijection.rmap(RaveledVars(phi, raveled.point_map_info))

    # The objective EM reports is PyMC's log posterior at EM's answer.
    assert fit.loglik == pytest.approx(float(logp(as_point(raveled.data))), abs=1e-6)
    # scipy from a start away from EM's answer reaches the same mode.
    away = unconstrained_start(model, initvals_from_params(model_def, [init])[0])
    start = DictToArrayBijection.map({v.name: away[v.name] for v in model.value_vars}).data
    result = optimize.minimize(lambda p: -float(logp(as_point(p))), start,
                               jac=lambda p: -np.asarray(dlogp(as_point(p))), method="BFGS",
                               options={"gtol": 1e-11, "maxiter": 10_000})
    found = {name: value[0] for name, value in constrained_values(model, raveled.point_map_info, result.x).items()}
    for name in ("w", "mu", "sigma"):
        np.testing.assert_allclose(values[name], found[name], atol=1e-6)
    # The sd prior (HalfNormal(0.5)) pulls the sds below the MLE's.
    mle = gaussian_fit(model_def, x, init, **TIGHT).params.variables()
    assert np.all(values["sigma"] < mle["sigma"] - 1e-3)
