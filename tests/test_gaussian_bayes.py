"""The Gaussian mixture in PyMC: structure of the model, starting values, memberships, and seeded recovery.

Tiers (see /work/shared/STYLE.md): an oracle (memberships against scipy's densities), invariants
(memberships sum to one, finite log-density at the start for every structure, EM's covariances come back
out of the model unchanged), and seeded recovery of simulated truth by real sampling (the default, numpyro) with the
tolerance stated next to the assertion.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
import pytest
from scipy import stats

from conftest import ORACLE_MODE
from emvsbayes.gaussian import bayes
from emvsbayes.gaussian.model import COVARIANCE_TYPES, GaussianMixtureModel, GaussianParams, parameter_dims
from emvsbayes.sampling import SamplerSettings, sample_posterior

SETTINGS = SamplerSettings(chains=2, draws=500, tune=500, cores=2)  # the default sampler

# Truth of the simulations; components already increasing in the first coordinate (the ordered model's labels).
W = np.array([0.4, 0.6])
MU_1D = np.array([-2.0, 3.0])
SIGMA_1D = np.array([1.0, 0.7])
MU_2D = np.array([[-3.0, 0.0], [3.0, 1.0]])
COV_2D = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.6, -0.2], [-0.2, 0.8]]])


def _prec_chol(cov: np.ndarray) -> np.ndarray:
    """scikit-learn's precision Cholesky factor: P with P P^T = inv(cov)."""
    return np.linalg.cholesky(np.linalg.inv(cov))


def _simulate(mu, cov, w, n, seed):
    rng = np.random.default_rng(seed)
    z = rng.choice(len(w), size=n, p=w)
    x = np.stack([rng.multivariate_normal(mu[k], cov[k]) for k in z])
    return x, z


@pytest.fixture(scope="module")
def data_1d():
    x, z = _simulate(MU_1D[:, None], SIGMA_1D[:, None, None] ** 2, W, 200, seed=11)
    truth = GaussianParams(W, MU_1D[:, None], 1.0 / SIGMA_1D[:, None, None], "full")
    return x, z, truth


@pytest.fixture(scope="module")
def data_2d():
    x, z = _simulate(MU_2D, COV_2D, W, 300, seed=12)
    truth = GaussianParams(W, MU_2D, np.stack([_prec_chol(c) for c in COV_2D]), "full")
    return x, z, truth


def _fit(model_def, x, truth, seed):
    model = bayes.build_model(model_def, x)
    outcome = sample_posterior(model, SETTINGS, seed, bayes.initvals_from_params(model_def, [truth]))
    return model, outcome.tree


@pytest.fixture(scope="module")
def fit_1d(data_1d):
    x, _, truth = data_1d
    model_def = GaussianMixtureModel(2, "full", ordered=True)
    return (model_def, *_fit(model_def, x, truth, seed=21))


@pytest.fixture(scope="module")
def fit_2d(data_2d):
    x, _, truth = data_2d
    model_def = GaussianMixtureModel(2, "full", ordered=True)
    return (model_def, *_fit(model_def, x, truth, seed=22))


def _check_recovery(tree, truth: dict[str, np.ndarray]):
    """Posterior mean within 4 posterior sd + 4 MCSE of the truth, R-hat <= 1.05, for every element.

    Why that tolerance: with N in the hundreds and weak priors the posterior is close to normal around
    the MLE, and the MLE's sampling error has about the posterior sd, so (posterior mean - truth) / sd
    is about N(0, 1) over data sets; the Monte Carlo error of the mean adds MCSE. Beyond 4 sd has
    probability 6e-5 per element, about 1e-3 for the ~20 elements here; the seeds are fixed, so the
    test is deterministic and this is the chance that a correct model fails on a fresh seed.
    """
    posterior = tree["posterior"]
    rhat = az.rhat(tree, var_names=list(truth))
    mcse = az.mcse(tree, var_names=list(truth))
    for name, value in truth.items():
        draws = posterior[name]
        mean = draws.mean(("chain", "draw")).values
        sd = draws.std(("chain", "draw")).values
        tolerance = 4 * sd + 4 * mcse[name].values
        assert np.all(np.abs(mean - value) <= tolerance), (name, mean, value, tolerance)
        assert np.all(rhat[name].values <= 1.05), (name, rhat[name].values)


def test_recovers_1d_truth(fit_1d):
    _, _, tree = fit_1d
    _check_recovery(tree, {"w": W, "mu": MU_1D, "sigma": SIGMA_1D})


def test_recovers_2d_full_truth(fit_2d):
    _, _, tree = fit_2d
    _check_recovery(tree, {"w": W, "mu": MU_2D, "cov": COV_2D})


@pytest.mark.parametrize("which", ["fit_1d", "fit_2d"])
def test_posterior_names_loglik_and_predictive(which, request, data_1d, data_2d):
    _, model, tree = request.getfixturevalue(which)
    x = (data_1d if which == "fit_1d" else data_2d)[0]
    posterior = tree["posterior"]
    for name, dims in parameter_dims(x.shape[1]).items():
        assert posterior[name].dims == ("chain", "draw", *dims)
    log_lik = tree["log_likelihood"]["x"]
    assert log_lik.dims == ("chain", "draw", "obs")
    assert log_lik.shape == (SETTINGS.chains, SETTINGS.draws, x.shape[0])
    assert np.all(np.isfinite(log_lik.values))
    predictive = pm.sample_posterior_predictive(tree, model=model, random_seed=31, progressbar=False,
                                            compile_kwargs={"mode": ORACLE_MODE})
    simulated = predictive["posterior_predictive"]["x"]
    observed_shape = x.shape if x.shape[1] > 1 else x.shape[:1]
    assert simulated.shape == (SETTINGS.chains, SETTINGS.draws, *observed_shape)


@pytest.mark.parametrize("which", ["fit_1d", "fit_2d"])
def test_memberships_sum_to_one_and_match_clear_labels(which, request, data_1d, data_2d):
    model_def, _, tree = request.getfixturevalue(which)
    x, z, truth = data_1d if which == "fit_1d" else data_2d
    draws = bayes.posterior_draws(tree)
    probs = bayes.membership_probabilities(model_def, x, draws)
    assert probs.shape == (SETTINGS.chains * SETTINGS.draws, x.shape[0], 2)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-12)
    # "Well separated" = the truth itself is sure of the label (P > 0.999); there the posterior mean
    # membership must put > 0.9 on the true label (the ordered model's labels are the truth's).
    true_probs = bayes.membership_probabilities(model_def, x, _truth_draws(truth, x.shape[1]))[0]
    clear = true_probs.max(axis=1) > 0.999
    assert clear.sum() > 0.8 * x.shape[0]
    summary = bayes.membership_summary(model_def, x, draws)
    assert np.all(summary[clear, z[clear]] > 0.9)


def _truth_draws(params: GaussianParams, dim: int) -> dict[str, np.ndarray]:
    cov = bayes._covariances(params)
    draws = {"w": params.w[None], "mu": params.mu[None] if dim > 1 else params.mu[None, :, 0]}
    if dim == 1:
        draws["sigma"] = np.sqrt(cov[None, :, 0, 0])
    else:
        draws["cov"] = cov[None]
    return draws


@pytest.mark.parametrize("dim", [1, 2])
def test_memberships_match_scipy_densities(dim, data_1d, data_2d):
    x, _, truth = data_1d if dim == 1 else data_2d
    model_def = GaussianMixtureModel(2, "full")
    cov = bayes._covariances(truth)
    dens = np.stack(
        [truth.w[k] * stats.multivariate_normal(truth.mu[k], cov[k]).pdf(x) for k in range(2)], axis=1
    )
    expected = dens / dens.sum(axis=1, keepdims=True)
    probs = bayes.membership_probabilities(model_def, x, _truth_draws(truth, dim))
    np.testing.assert_allclose(probs[0], expected, rtol=1e-9, atol=1e-12)


def _params_for(structure: str, k: int, dim: int, seed: int) -> GaussianParams:
    """A random EM-like answer with the given structure (means deliberately not sorted)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(scale=3.0, size=(k, dim))
    a = rng.normal(size=(k, dim, dim))
    covs = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(dim)
    prec_chol = {
        "full": np.stack([_prec_chol(c) for c in covs]),
        "tied": _prec_chol(covs[0]),
        "diag": 1.0 / np.sqrt(np.diagonal(covs, axis1=1, axis2=2)),
        "spherical": 1.0 / np.sqrt(np.trace(covs, axis1=1, axis2=2) / dim),
    }[structure]
    w = rng.dirichlet(np.ones(k))
    return GaussianParams(w, mu, prec_chol, structure)


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("structure", COVARIANCE_TYPES)
def test_every_structure_builds_and_starts_from_em(structure, dim):
    """Finite log-density at the start, and EM's covariances come back out of the model unchanged."""
    k = 3
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, dim)) + rng.integers(0, 3, 40)[:, None] * 4.0
    params = _params_for(structure, k, dim, seed=6)
    expected_cov = bayes._covariances(params)
    order = np.argsort(params.mu[:, 0])
    for ordered in (False, True):
        model_def = GaussianMixtureModel(k, structure, ordered=ordered)
        model = bayes.build_model(model_def, x)
        assert "x" in model.named_vars and model.observed_RVs[0].name == "x"
        # The log-density (model.logp(), what compile_logp() compiles) and the parameters as outputs of one
        # compiled function: each compilation costs about half of this test's time.
        reported = "sigma" if dim == 1 else "cov"
        outs = model.replace_rvs_by_values([model["w"], model["mu"], model[reported]])
        get = model.compile_fn([model.logp(), *outs], inputs=model.value_vars, on_unused_input="ignore",
                               mode=ORACLE_MODE)
        if not ordered:
            # The symmetric model's own default start is usable; the ordered one's ties every mean.
            assert np.isfinite(get(model.initial_point())[0])
        start = bayes.initial_point(model, bayes.initvals_from_params(model_def, [params])[0])
        logp, w, mu, spread = get(start)
        assert np.isfinite(logp)
        perm = order if ordered else np.arange(k)
        np.testing.assert_allclose(w, params.w[perm] / params.w.sum(), atol=1e-12)
        np.testing.assert_allclose(mu, params.mu[perm] if dim > 1 else params.mu[perm, 0], atol=1e-12)
        if dim == 1:
            np.testing.assert_allclose(spread, np.sqrt(expected_cov[perm, 0, 0]), rtol=1e-10)
        else:
            np.testing.assert_allclose(spread, expected_cov[perm], rtol=1e-10, atol=1e-12)
        if ordered:
            assert np.all(np.diff(mu if dim == 1 else mu[:, 0]) > 0)


def test_initvals_nudge_tied_first_coordinates():
    params = GaussianParams([0.5, 0.5], [[1.0, 0.0], [1.0, 2.0]], np.eye(2), "tied")
    start = bayes.initvals_from_params(GaussianMixtureModel(2, "tied", ordered=True), [params])[0]
    assert start["mu_first"][1] > start["mu_first"][0]


def test_auto_sampler_is_numpyro_and_explicit_choices_stay():
    from emvsbayes.sampling import DEFAULT_SAMPLER, SAMPLERS, resolve_sampler

    assert resolve_sampler("auto") == DEFAULT_SAMPLER == "numpyro"
    for name in SAMPLERS:
        assert resolve_sampler(name) == name
