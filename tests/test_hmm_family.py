"""The hidden Markov model family: inference against brute-force enumeration, Baum-Welch against hmmlearn
iteration by iteration, invariants (the objective never falls, relabelling leaves the likelihood unchanged),
the earthquake series' best optimum against an independent optimiser, the PyMC log-density against the numpy
one plus a hand-written log prior, and the family's bad-input checks."""

from __future__ import annotations

import importlib.resources
import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import minimize
from scipy.special import gammaln, log_softmax, logsumexp

from emvsbayes.em import RestartPolicy
from emvsbayes.errors import UserError
from emvsbayes.hmm import em, inference
from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams, HMMPriors, stationary_distribution


def earthquake_counts() -> np.ndarray:
    """The bundled series of annual major-earthquake counts, 1900-2006 (107 values)."""
    text = importlib.resources.files("emvsbayes.data").joinpath("files", "earthquakes.csv").read_text("utf-8")
    rows = [line.split(",") for line in text.strip().splitlines()[1:]]
    return np.array([int(count) for _, count in rows], dtype=float)


# --------------------------------------------------------------------------------------------------
# Oracle: every one of the K^T state paths enumerated


def brute_force(log_initial, log_transition, log_emission):
    """(log p(y), P(z_t = k | y), expected transitions, best path, its log p(y, z)) by enumerating paths."""
    t_len, k = log_emission.shape
    paths = np.array(list(itertools.product(range(k), repeat=t_len)))
    log_joint = log_initial[paths[:, 0]] + log_emission[0, paths[:, 0]]
    for t in range(1, t_len):
        log_joint = log_joint + log_transition[paths[:, t - 1], paths[:, t]] + log_emission[t, paths[:, t]]
    loglik = logsumexp(log_joint)
    weight = np.exp(log_joint - loglik)
    gamma = np.zeros((t_len, k))
    for t in range(t_len):
        np.add.at(gamma[t], paths[:, t], weight)
    xi = np.zeros((k, k))
    for t in range(1, t_len):
        np.add.at(xi, (paths[:, t - 1], paths[:, t]), weight)
    best = int(np.argmax(log_joint))
    return loglik, gamma, xi, paths[best], log_joint[best]


def random_problem(rng, k, t_len, spread=3.0):
    log_initial = np.log(rng.dirichlet(np.ones(k)))
    log_transition = np.log(rng.dirichlet(np.ones(k), size=k))
    log_emission = spread * rng.standard_normal((t_len, k))
    return log_initial, log_transition, log_emission


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("t_len", [1, 2, 5, 7])
@pytest.mark.parametrize("block", [None, 1, 2, 3])
def test_forward_backward_and_viterbi_match_enumeration(k, t_len, block):
    # Blocks of 1, 2 and 3 steps put block boundaries and end padding at every position of these short series.
    rng = np.random.default_rng(100 * k + 10 * t_len + (block or 0))
    for _ in range(3):
        problem = random_problem(rng, k, t_len)
        loglik, gamma, xi, path, best = brute_force(*problem)
        smoothed = inference.forward_backward(*problem, block=block)
        assert smoothed.loglik == pytest.approx(loglik, rel=1e-13, abs=1e-13)
        np.testing.assert_allclose(smoothed.gamma, gamma, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(smoothed.xi_sum, xi, rtol=1e-12, atol=1e-14)
        total, filtered, predictive = inference.forward_filter(*problem, block=block)
        assert total == pytest.approx(loglik, rel=1e-13, abs=1e-13)
        assert predictive.sum() == pytest.approx(loglik, rel=1e-13, abs=1e-13)
        # Filtering at the last time point is smoothing there.
        np.testing.assert_allclose(filtered[-1], gamma[-1], rtol=1e-12, atol=1e-14)
        decoded, score = inference.viterbi(*problem, block=block)
        np.testing.assert_array_equal(decoded, path)
        assert score == pytest.approx(best, rel=1e-13, abs=1e-13)


def test_scaled_recursion_matches_log_space_on_a_long_series():
    # 5000 steps with a sparse transition matrix and wide emissions: the blocked, scaled recursion and the
    # plain log-space one agree (the enumeration oracle cannot reach this length).
    rng = np.random.default_rng(7)
    k, t_len = 3, 5000
    log_initial, _, log_emission = random_problem(rng, k, t_len, spread=20.0)
    transition = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.3, 0.0, 0.7]])
    with np.errstate(divide="ignore"):
        log_transition = np.log(transition)
    log_alpha = inference.forward_log(log_initial, log_transition, log_emission)
    log_beta = inference.backward_log(log_transition, log_emission)
    loglik = logsumexp(log_alpha[-1])
    smoothed = inference.forward_backward(log_initial, log_transition, log_emission)
    assert smoothed.loglik == pytest.approx(loglik, rel=1e-12)
    np.testing.assert_allclose(smoothed.gamma, np.exp(log_alpha + log_beta - loglik), atol=1e-10)


def test_underflow_falls_back_to_log_space():
    # State 1 cannot follow state 0, and the emission of time 1 is 800 nats likelier in state 1: exponentiating
    # the shifted emissions leaves state 0 with exp(-800) = 0, so the scaled recursion's normaliser is 0.
    log_initial = np.log([1.0, 1e-300])
    with np.errstate(divide="ignore"):
        log_transition = np.log([[1.0, 0.0], [0.5, 0.5]])
    log_emission = np.array([[0.0, 0.0], [-800.0, 0.0], [0.0, 0.0]])
    loglik, gamma, xi, path, best = brute_force(log_initial, log_transition, log_emission)
    smoothed = inference.forward_backward(log_initial, log_transition, log_emission)
    assert math.isfinite(smoothed.loglik)
    assert smoothed.loglik == pytest.approx(loglik, rel=1e-12)
    np.testing.assert_allclose(smoothed.gamma, gamma, atol=1e-12)
    assert inference.forward_filter(log_initial, log_transition, log_emission)[0] == pytest.approx(loglik, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Parameters, relabelling


def test_relabelling_permutes_rows_and_columns_and_keeps_the_likelihood():
    rng = np.random.default_rng(3)
    model = HiddenMarkovModel(n_components=3, emission="poisson")
    params = HMMParams(rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3), size=3), rate=np.array([5.0, 15.0, 30.0]))
    y = earthquake_counts()
    _, loglik = em.e_step(model, y, params)
    for perm in itertools.permutations(range(3)):
        permuted = params.permuted(perm)
        # New state j is old perm[j]: entry (i, j) of the new matrix is entry (perm[i], perm[j]) of the old.
        for i, j in itertools.product(range(3), repeat=2):
            assert permuted.transition[i, j] == params.transition[perm[i], perm[j]]
        assert em.e_step(model, y, permuted)[1] == pytest.approx(loglik, rel=1e-13)
    # Permuting the rows alone is a different chain with another likelihood: the columns must move too.
    rows_only = HMMParams(params.initial[[1, 0, 2]], params.transition[[1, 0, 2]], rate=params.rate[[1, 0, 2]])
    assert abs(em.e_step(model, y, rows_only)[1] - loglik) > 1e-3


def test_stationary_distribution():
    transition = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.2, 0.0, 0.8]])
    delta = stationary_distribution(transition)
    np.testing.assert_allclose(delta @ transition, delta, atol=1e-15)
    assert delta.sum() == pytest.approx(1.0)
    # The left eigenvector of eigenvalue 1, computed another way.
    values, vectors = np.linalg.eig(transition.T)
    v = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    np.testing.assert_allclose(delta, v / v.sum(), atol=1e-13)


# --------------------------------------------------------------------------------------------------
# Baum-Welch against hmmlearn, iteration by iteration


def _hmmlearn_steps(reference, x, n_iter):
    """hmmlearn's parameters after each of ``n_iter`` single iterations from its current ones."""
    out = []
    for _ in range(n_iter):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hmmlearn warns that one iteration did not converge
            reference.fit(x)
        out.append(reference)
        out[-1] = {name: np.array(getattr(reference, name), dtype=float)
                   for name in ("startprob_", "transmat_", "lambdas_", "means_", "covars_") if hasattr(reference, name)}
    return out


def test_baum_welch_matches_hmmlearn_poisson():
    from hmmlearn.hmm import PoissonHMM

    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=3, emission="poisson")
    start = HMMParams([0.5, 0.3, 0.2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], rate=[12.0, 19.0, 28.0])
    n_iter = 25
    fit = em.fit(model, y, start, min_iter=n_iter, max_iter=n_iter, tol=0.0, param_tol=0.0)
    # lambdas_prior = lambdas_weight = 0 and Dirichlet priors of 1: hmmlearn's M-step is the plain ML one.
    reference = PoissonHMM(n_components=3, n_iter=1, init_params="", params="stl", tol=0.0, implementation="log")
    reference.startprob_ = np.array(start.initial)
    reference.transmat_ = np.array(start.transition)
    reference.lambdas_ = np.array(start.rate)[:, None]
    steps = _hmmlearn_steps(reference, y.astype(int)[:, None], n_iter)
    for row, theirs in zip(fit.trace[1:], steps, strict=True):
        np.testing.assert_allclose(row.params.initial, theirs["startprob_"], rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(row.params.transition, theirs["transmat_"], rtol=1e-10)
        np.testing.assert_allclose(row.params.rate, theirs["lambdas_"][:, 0], rtol=1e-10)
    # And the log-likelihood: hmmlearn's score at the final parameters.
    assert fit.trace[-1].loglik == pytest.approx(reference.score(y.astype(int)[:, None]), rel=1e-12)


def test_baum_welch_matches_hmmlearn_gaussian():
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(11)
    model = HiddenMarkovModel(n_components=2, emission="gaussian")
    truth = HMMParams([0.5, 0.5], [[0.2, 0.8], [0.7, 0.3]], mu=[2.0, 4.3], sigma=[0.3, 0.4])
    y = simulate(model, truth, 300, rng)
    start = HMMParams([0.6, 0.4], [[0.5, 0.5], [0.5, 0.5]], mu=[1.5, 5.0], sigma=[1.0, 1.0])
    n_iter = 30
    fit = em.fit(model, y, start, min_iter=n_iter, max_iter=n_iter, tol=0.0, param_tol=0.0)
    # covars_prior = 0, means_weight = 0: hmmlearn's M-step is the plain ML one.
    reference = GaussianHMM(n_components=2, covariance_type="diag", n_iter=1, init_params="", params="stmc", tol=0.0,
                            covars_prior=0.0, means_weight=0.0, implementation="log")
    reference.startprob_ = np.array(start.initial)
    reference.transmat_ = np.array(start.transition)
    reference.means_ = np.array(start.mu)[:, None]
    reference.covars_ = np.array(start.sigma)[:, None] ** 2
    steps = _hmmlearn_steps(reference, y[:, None], n_iter)
    for row, theirs in zip(fit.trace[1:], steps, strict=True):
        np.testing.assert_allclose(row.params.initial, theirs["startprob_"], rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(row.params.transition, theirs["transmat_"], rtol=1e-10)
        np.testing.assert_allclose(row.params.mu, theirs["means_"][:, 0], rtol=1e-10)
        np.testing.assert_allclose(row.params.sigma ** 2, theirs["covars_"][:, 0, 0], rtol=1e-10)


def simulate(model: HiddenMarkovModel, params: HMMParams, t_len: int, rng) -> np.ndarray:
    """A series drawn from the chain (written here, not taken from the family, to test the family's own)."""
    states = np.empty(t_len, dtype=int)
    states[0] = rng.choice(model.n_components, p=params.initial)
    for t in range(1, t_len):
        states[t] = rng.choice(model.n_components, p=params.transition[states[t - 1]])
    if model.emission == "poisson":
        return rng.poisson(params.rate[states]).astype(float)
    return rng.normal(params.mu[states], params.sigma[states])


# --------------------------------------------------------------------------------------------------
# Invariants of EM


@pytest.mark.parametrize("emission", ["poisson", "gaussian"])
@pytest.mark.parametrize("initial", ["estimated", "stationary"])
@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_objective_never_falls(emission, initial, kind):
    # fit_em raises LikelihoodDecreasedError on any fall beyond rounding; here every iteration is checked
    # again explicitly, from 4 random starts each.
    rng = np.random.default_rng(5)
    model = HiddenMarkovModel(n_components=3, emission=emission, initial=initial)
    y = earthquake_counts() if emission == "poisson" else np.log(earthquake_counts()) + 0.1 * rng.standard_normal(107)
    for _ in range(4):
        start = em.random_start(model, y, rng)
        try:
            fit = em.fit(model, y, start, kind=kind, max_iter=200)
        except em.DegenerateFitError:
            continue
        path = fit.loglik_path
        assert np.all(np.diff(path) >= -1e-10 * np.abs(path[1:])), path
        if kind == "soft":
            assert fit.converged
            if initial == "stationary":
                np.testing.assert_allclose(fit.params.initial, stationary_distribution(fit.params.transition), atol=1e-12)


def test_viterbi_training_objective_is_the_best_paths_complete_loglik():
    y = earthquake_counts()[:7]
    model = HiddenMarkovModel(n_components=2, emission="poisson")
    params = HMMParams([0.4, 0.6], [[0.9, 0.1], [0.2, 0.8]], rate=[14.0, 25.0])
    stats_, value = em.hard_e_step(model, y, params)
    log_emission = model.log_emission(params, y)
    _, _, _, path, best = brute_force(np.log(params.initial), np.log(params.transition), log_emission)
    assert value == pytest.approx(best, rel=1e-13)
    np.testing.assert_array_equal(stats_.gamma.argmax(axis=1), path)
    assert stats_.xi_sum.sum() == len(y) - 1


# --------------------------------------------------------------------------------------------------
# The earthquake series: EM reaches the best optimum, checked by an independent optimiser


def _independent_loglik(theta, y, k):
    """Poisson-HMM log-likelihood of unconstrained ``theta`` (log rates, transition-row and initial logits),
    written afresh (log-space forward recursion with scipy's logsumexp), so it shares no code with the family."""
    log_rate = theta[:k]
    log_transition = log_softmax(np.concatenate([theta[k:k + k * (k - 1)].reshape(k, k - 1), np.zeros((k, 1))], axis=1), axis=1)
    log_initial = log_softmax(np.append(theta[k + k * (k - 1):], 0.0))
    log_emission = stats.poisson.logpmf(y[:, None], np.exp(log_rate)[None, :])
    log_alpha = log_initial + log_emission[0]
    for t in range(1, len(y)):
        log_alpha = logsumexp(log_alpha[:, None] + log_transition, axis=0) + log_emission[t]
    return logsumexp(log_alpha)


@pytest.mark.parametrize("k", [2, 3])
def test_earthquakes_em_reaches_the_best_optimum(k):
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=k, emission="poisson")
    run = em.fit_until(model, y, em.start_source(model, y, np.random.default_rng(2009)),
                       RestartPolicy(min_starts=10, reach_best=3, max_starts=100), tol=1e-10, max_iter=5000)
    best = run.restarts.best
    # An independent maximiser: BFGS on the independently written log-likelihood from 20 spread starts.
    rng = np.random.default_rng(1)
    found = -np.inf
    for _ in range(20):
        theta = np.concatenate([np.log(np.sort(rng.uniform(8, 35, size=k))), rng.normal(0, 1, size=k * (k - 1) + k - 1)])
        theta[k:k + k * (k - 1)] += 2.0 * np.eye(k, k - 1).ravel()
        result = minimize(lambda th: -_independent_loglik(th, y, k), theta, method="BFGS")
        found = max(found, -result.fun)
    # EM's best is at least as high as anything the optimiser found (to its stopping precision), and as high:
    # the two searches find the same maximum.
    assert best.loglik >= found - 1e-6
    assert best.loglik == pytest.approx(found, abs=1e-4)
    # And EM's value is the independent function's value at EM's parameters.
    theta_em = np.concatenate([np.log(best.params.rate),
                               (np.log(best.params.transition[:, :-1]) - np.log(best.params.transition[:, -1:])).ravel(),
                               np.log(np.clip(best.params.initial[:-1], 1e-300, None)) - np.log(max(best.params.initial[-1], 1e-300))])
    assert _independent_loglik(theta_em, y, k) == pytest.approx(best.loglik, abs=1e-6)


def test_distinct_optima_group_relabelled_restarts():
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=2, emission="poisson")
    start = HMMParams([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]], rate=[15.0, 25.0])
    fit = em.fit(model, y, start, tol=1e-12, max_iter=5000)
    mirror = em.fit(model, y, start.permuted([1, 0]), tol=1e-12, max_iter=5000)
    optima = em.distinct_optima([fit, mirror])
    assert len(optima) == 1 and sorted(optima[0].members) == [0, 1]
    assert optima[0].perms[1] == (1, 0)
