"""MAP-EM of the multivariate Gaussian mixture (every covariance structure; the LKJ ones by generalised EM)
and of the Poisson mixture, held against an oracle: scipy's BFGS on the PyMC model's own log posterior
(``compile_logp(jacobian=False)``: the density of the parameters themselves, whose maximiser on the
unconstrained scale is the constrained-scale mode), started from EM's answer (the MLE, away from the mode)
and from points around MAP-EM's answer. Every start must reach MAP-EM's answer to 1e-6, and EM's reported
objective must be PyMC's log posterior there."""

import numpy as np
import pytest
from scipy import optimize

from conftest import ORACLE_MODE
from emvsbayes.family import get_family
from emvsbayes.ladder.laplace import constrained_values, unconstrained_start

TIGHT = {"tol": 1e-13, "param_tol": 1e-10, "max_iter": 20_000}


def _optimiser_modes(model, starts, rng, n_jittered=4):
    """([(constrained variables, log posterior) that BFGS on PyMC's logp (no Jacobian) reaches from each start
    and from ``n_jittered`` points within 0.05 (unconstrained units) of the last start], PyMC's log posterior
    at the last start). Each compiled function is compiled once (compiling dominates the test's time)."""
    from pymc.blocking import DictToArrayBijection, RaveledVars

    logp, dlogp = model.compile_logp(jacobian=False, mode=ORACLE_MODE), model.compile_dlogp(jacobian=False, mode=ORACLE_MODE)
    raveled = [DictToArrayBijection.map({v.name: unconstrained_start(model, s)[v.name] for v in model.value_vars})
               for s in starts]
    info = raveled[0].point_map_info

    def as_point(phi):
        return DictToArrayBijection.rmap(RaveledVars(phi, info))

    points = [r.data for r in raveled] + [raveled[-1].data + rng.uniform(-0.05, 0.05, raveled[-1].data.shape)
                                          for _ in range(n_jittered)]
    results = [optimize.minimize(lambda p: -float(logp(as_point(p))), phi,
                                 jac=lambda p: -np.asarray(dlogp(as_point(p))), method="BFGS",
                                 options={"gtol": 1e-10, "maxiter": 20_000}) for phi in points]
    values = constrained_values(model, info, np.stack([r.x for r in results]))
    modes = [({name: value[i] for name, value in values.items()}, -r.fun) for i, r in enumerate(results)]
    return modes, float(logp(as_point(raveled[-1].data)))


def _two_clusters(n=60, seed=5):
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([-1.5, 0.0], [[0.8, 0.35], [0.35, 0.6]], n // 2)
    b = rng.multivariate_normal([1.5, 1.0], [[0.5, -0.2], [-0.2, 0.9]], n - n // 2)
    return np.vstack([a, b])


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_gaussian_2d_map_em_equals_the_optimiser_of_the_pymc_log_posterior(covariance):
    from emvsbayes.gaussian.family import as_continuous_data
    from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianPriors

    family = get_family("gaussian")
    data = as_continuous_data(_two_clusters())
    # Tight sd and mean priors and eta = 3, so the mode is well away from the MLE (a real test of the
    # priors' terms), with w_concentration 2 pulling the weights towards 1/2.
    model_def = GaussianMixtureModel(2, covariance, reg_covar=0.0,
                                     priors=GaussianPriors(w_concentration=2.0, mu_scale=(0.8,), sigma_scale=(0.5,),
                                                           lkj_eta=3.0))
    em_fit = family.fit(model_def, data, family.params_from_variables(
        model_def, {"w": np.array([0.5, 0.5]), "mu": np.array([[-1.0, 0.0], [1.0, 1.0]]),
                    "cov": np.stack([np.eye(2)] * 2)}), **TIGHT)
    fit = family.map_fit(model_def, data, em_fit.params, TIGHT)
    assert fit.converged
    ours = family.variables(fit.params)
    model = family.pymc_model(model_def, data)
    modes, logp_at_ours = _optimiser_modes(model, [family.initvals(model_def, [em_fit.params])[0],
                                                   family.initvals(model_def, [fit.params])[0]], np.random.default_rng(0))
    # EM's objective is PyMC's log posterior (constants included) at MAP-EM's answer.
    assert fit.loglik == pytest.approx(logp_at_ours, abs=1e-6)
    for values, value in modes:
        assert value == pytest.approx(fit.loglik, abs=1e-6)
        for name in ("w", "mu", "cov"):
            np.testing.assert_allclose(values[name], ours[name], atol=1e-6, err_msg=name)
    # The priors pull the answer away from the MLE.
    mle = family.variables(em_fit.params)
    assert np.max(np.abs(mle["cov"] - ours["cov"])) > 1e-2


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_gaussian_map_em_never_lowers_the_log_posterior(covariance):
    """From a poor start, every ECM / generalised-EM step keeps the log posterior from falling (fit_em raises
    otherwise) and it rises overall."""
    from emvsbayes.gaussian.family import as_continuous_data
    from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, GaussianPriors

    family = get_family("gaussian")
    data = as_continuous_data(_two_clusters(seed=9))
    model_def = GaussianMixtureModel(2, covariance, priors=GaussianPriors(w_concentration=1.0, lkj_eta=1.0))
    cov = {"full": np.stack([np.eye(2) * 4] * 2), "tied": np.eye(2) * 4, "diag": np.full((2, 2), 4.0),
           "spherical": np.full(2, 4.0)}[covariance]
    start = GaussianParams.from_covariances([0.9, 0.1], [[0.0, 0.0], [0.1, 0.1]], cov, covariance)
    fit = family.map_fit(model_def, data, start, {"max_iter": 300})
    path = fit.loglik_path
    assert np.all(np.diff(path) >= -1e-10 * np.abs(path[1:])) and path[-1] > path[0] + 1.0


def test_gaussian_priors_without_a_mode_are_refused():
    from emvsbayes.gaussian.family import as_continuous_data
    from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, GaussianPriors

    family = get_family("gaussian")
    data = as_continuous_data(_two_clusters())
    start = GaussianParams.from_covariances([0.5, 0.5], [[-1.0, 0.0], [1.0, 1.0]], np.stack([np.eye(2)] * 2))
    with pytest.raises(ValueError, match="lkj_eta = 0.5: .* no mode"):
        family.map_fit(GaussianMixtureModel(2, "full", priors=GaussianPriors(lkj_eta=0.5)), data, start, {})
    with pytest.raises(ValueError, match="w_concentration = 0.5: .* no mode"):
        family.map_fit(GaussianMixtureModel(2, "full", priors=GaussianPriors(w_concentration=0.5)), data, start, {})
    # eta has no part in a diagonal model: there it is not refused.
    diag = GaussianParams.from_covariances([0.5, 0.5], [[-1.0, 0.0], [1.0, 1.0]], np.ones((2, 2)), "diag")
    assert family.map_fit(GaussianMixtureModel(2, "diag", priors=GaussianPriors(lkj_eta=0.5)), data, diag, {}).converged


def _poisson_case():
    from emvsbayes.data.records import CountData
    from emvsbayes.poisson.model import PoissonMixture

    rng = np.random.default_rng(2)
    counts = np.concatenate([rng.poisson(2.0, 25), rng.poisson(9.0, 15)])
    data = CountData(counts, tuple(str(i) for i in range(len(counts))))
    return PoissonMixture(2, rate_prior=(3.0, 0.6), w_concentration=2.5), data


def test_poisson_map_em_equals_the_optimiser_of_the_pymc_log_posterior():
    family = get_family("poisson")
    model_def, data = _poisson_case()
    from emvsbayes.poisson.model import PoissonParams

    em_fit = family.fit(model_def, data, PoissonParams([0.5, 0.5], [1.0, 5.0]), **TIGHT)
    fit = family.map_fit(model_def, data, em_fit.params, TIGHT)
    assert fit.converged
    ours = family.variables(fit.params)
    model = family.pymc_model(model_def, data)
    modes, logp_at_ours = _optimiser_modes(model, [family.initvals(model_def, [em_fit.params])[0],
                                                   family.initvals(model_def, [fit.params])[0]], np.random.default_rng(1))
    assert fit.loglik == pytest.approx(logp_at_ours, abs=1e-6)
    for values, value in modes:
        assert value == pytest.approx(fit.loglik, abs=1e-6)
        for name in ("w", "rate"):
            np.testing.assert_allclose(values[name], ours[name], atol=1e-6, err_msg=name)
    mle = family.variables(em_fit.params)
    assert np.max(np.abs(mle["rate"] - ours["rate"])) > 1e-2


def test_poisson_priors_without_a_mode_are_refused():
    from emvsbayes.poisson.model import PoissonMixture, PoissonParams

    family = get_family("poisson")
    _, data = _poisson_case()
    start = PoissonParams([0.5, 0.5], [1.0, 5.0])
    with pytest.raises(ValueError, match="rate_prior's shape = 0.5: .* no mode"):
        family.map_fit(PoissonMixture(2, rate_prior=(0.5, 1.0)), data, start, {})
    with pytest.raises(ValueError, match="w_concentration = 0.9: .* no mode"):
        family.map_fit(PoissonMixture(2, rate_prior=(2.0, 1.0), w_concentration=0.9), data, start, {})


def test_poisson_weighted_fit_with_integer_weights_is_em_on_the_repeated_rows():
    from emvsbayes.data.records import CountData

    family = get_family("poisson")
    model_def, data = _poisson_case()
    reference = family.fit(model_def, data, family.params_from_variables(
        model_def, {"w": np.array([0.5, 0.5]), "rate": np.array([1.0, 5.0])}), **TIGHT).params
    weights = np.zeros((2, len(data.counts)))
    weights[0, :] = 1.0
    weights[1, ::2] = 2.0
    batch = family.weighted_fit(model_def, data, reference, weights, TIGHT)
    for b, row in enumerate(weights.astype(int)):
        rows = np.repeat(np.arange(len(row)), row)
        one = family.fit(model_def, CountData(data.counts[rows], tuple(str(i) for i in rows)), reference, **TIGHT).params
        np.testing.assert_allclose(batch.params.rate[b], one.rate, atol=1e-6)
        np.testing.assert_allclose(batch.params.w[b], one.w, atol=1e-6)


def _hmm_case():
    from emvsbayes.hmm.model import HiddenMarkovModel, HMMPriors

    family = get_family("hmm")
    # Priors away from flat (transition rows Dirichlet(4, 1.5) / (2, 3), initial Dirichlet(2, 2), Gamma(3, 0.6)
    # rates), so the mode is not the MLE and is inside the simplexes (every concentration above 1).
    model_def = HiddenMarkovModel(2, "poisson", "estimated",
                                  priors=HMMPriors(transition_concentration=((4.0, 1.5), (2.0, 3.0)),
                                                   initial_concentration=2.0, rate_prior=(3.0, 0.6)))
    truth = model_def.with_initial(np.array([0.5, 0.5]), np.array([[0.85, 0.15], [0.25, 0.75]]), rate=np.array([2.0, 9.0]))
    return family, model_def, family.simulate(model_def, truth, 60, np.random.default_rng(8))


def test_poisson_hmm_map_em_equals_the_optimiser_of_the_pymc_log_posterior():
    from emvsbayes.hmm.model import HMMParams

    family, model_def, data = _hmm_case()
    start = HMMParams([0.5, 0.5], [[0.8, 0.2], [0.2, 0.8]], rate=[1.0, 6.0])
    em_fit = family.fit(model_def, data, start, **TIGHT)
    fit = family.map_fit(model_def, data, em_fit.params, TIGHT)
    assert fit.converged
    ours = family.variables(fit.params)
    model = family.pymc_model(model_def, data)
    modes, logp_at_ours = _optimiser_modes(model, [family.initvals(model_def, [em_fit.params])[0],
                                                   family.initvals(model_def, [fit.params])[0]], np.random.default_rng(3))
    # EM's objective is PyMC's log posterior (constants included) at MAP-EM's answer.
    assert fit.loglik == pytest.approx(logp_at_ours, abs=1e-6)
    for values, value in modes:
        assert value == pytest.approx(fit.loglik, abs=1e-6)
        for name in ("initial", "transition", "rate"):
            np.testing.assert_allclose(values[name], ours[name], atol=1e-6, err_msg=name)
    # The priors pull the answer away from the MLE (whose initial distribution is a corner of the simplex).
    mle = family.variables(em_fit.params)
    assert np.max(np.abs(mle["rate"] - ours["rate"])) > 1e-2 and np.max(np.abs(mle["initial"] - ours["initial"])) > 0.1


def test_poisson_hmm_map_em_never_lowers_the_log_posterior_and_refuses_what_it_does_not_cover():
    import dataclasses

    from emvsbayes.hmm.model import HMMParams

    family, model_def, data = _hmm_case()
    fit = family.map_fit(model_def, data, HMMParams([0.9, 0.1], [[0.5, 0.5], [0.5, 0.5]], rate=[4.0, 4.5]),
                         {"max_iter": 300})
    path = fit.loglik_path
    assert np.all(np.diff(path) >= -1e-10 * np.abs(path[1:])) and path[-1] > path[0] + 1.0
    start = fit.params
    with pytest.raises(ValueError, match="rate_prior's shape = 0.5: .* no mode"):
        family.map_fit(dataclasses.replace(model_def, priors=dataclasses.replace(model_def.priors, rate_prior=(0.5, 1.0))),
                       data, start, {})
    with pytest.raises(ValueError, match="transition_prior = 0.5: .* no mode"):
        family.map_fit(dataclasses.replace(model_def, priors=dataclasses.replace(model_def.priors,
                                                                                  transition_concentration=0.5)),
                       data, start, {})
    with pytest.raises(ValueError, match='needs initial = "estimated"'):
        family.map_fit(dataclasses.replace(model_def, initial="stationary"), data, start, {})
