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
from conftest import ORACLE_MODE, run_cli


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
    # A stack of matrices (posterior draws): each its own stationary distribution.
    stack = np.stack([transition, transition[::-1, ::-1], np.eye(3) * 0.5 + 0.5 / 3])
    batched = stationary_distribution(stack)
    assert batched.shape == (3, 3)
    for matrix, row in zip(stack, batched, strict=True):
        np.testing.assert_allclose(row, stationary_distribution(matrix), atol=1e-15)



@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_symbolic_stationary_distribution_and_its_gradient_on_the_simplex(k):
    # The sampled model's stationary distribution (GTH, no solve) against two oracles: the left eigenvector of
    # eigenvalue 1 (computed another way than either), and the gradient implicit differentiation of
    # delta (I - A + U) = 1 gives, d(g . delta)/dA = outer(delta, solve(I - A + U, g)). Only its component along
    # each row's simplex (row sums fixed) is defined by the distribution on transition matrices, so the two
    # gradients are compared after removing each row's mean. Near-absorbing and zero entries included.
    import pytensor
    import pytensor.tensor as pt

    from emvsbayes.hmm.bayes import stationary_symbolic

    matrix = pt.dmatrix("transition")
    weights = np.arange(1.0, k + 1.0)
    delta = stationary_symbolic(matrix, k)
    value = pytensor.function([matrix], delta, on_unused_input="ignore", mode=ORACLE_MODE)
    gradient = pytensor.function([matrix], pytensor.grad(pt.dot(delta, weights), matrix, disconnected_inputs="ignore"),
                                 on_unused_input="ignore", mode=ORACLE_MODE)
    rng = np.random.default_rng(k)
    matrices = [rng.dirichlet(np.full(k, 0.3), size=k) for _ in range(20)]
    sticky = 0.999999 * np.eye(k) + 1e-6 / max(k - 1, 1) * (1 - np.eye(k)) if k > 1 else np.ones((1, 1))
    matrices.append(sticky)
    if k == 3:
        matrices.append(np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.2, 0.0, 0.8]]))
    for transition in matrices:
        eigenvalues, vectors = np.linalg.eig(transition.T)
        v = np.real(vectors[:, np.argmin(np.abs(eigenvalues - 1))])
        np.testing.assert_allclose(value(transition), v / v.sum(), rtol=1e-9, atol=1e-14)
        expected = np.outer(stationary_distribution(transition),
                            np.linalg.solve(np.eye(k) - transition + 1.0, weights))
        got = gradient(transition)
        # Entry by entry to 1e-7 relative; near 0 to 1e-10 of the largest (a near-absorbing chain has
        # derivatives ~1e6, known to the solve's ~cond x eps only).
        np.testing.assert_allclose(got - got.mean(axis=1, keepdims=True),
                                   expected - expected.mean(axis=1, keepdims=True),
                                   rtol=1e-7, atol=1e-10 * max(1.0, np.abs(expected).max()))

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
    # again explicitly, from a few random starts each.
    rng = np.random.default_rng(5)
    model = HiddenMarkovModel(n_components=3, emission=emission, initial=initial)
    y = earthquake_counts() if emission == "poisson" else np.log(earthquake_counts()) + 0.1 * rng.standard_normal(107)
    # The stationary M-step is a numerical maximisation: fewer starts and iterations keep the test short.
    n_starts, max_iter = (2, 60) if initial == "stationary" else (4, 200)
    for _ in range(n_starts):
        start = em.random_start(model, y, rng)
        try:
            fit = em.fit(model, y, start, kind=kind, max_iter=max_iter)
        except em.DegenerateFitError:
            continue
        path = fit.loglik_path
        assert np.all(np.diff(path) >= -1e-10 * np.abs(path[1:])), path
        if kind == "soft" and initial == "estimated":
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
    """Stationary Poisson-HMM log-likelihood of unconstrained ``theta`` (log rates, then transition-row logits),
    written afresh so it shares no code with the family: the stationary distribution as the eigenvector of
    eigenvalue 1 (not the family's linear solve), scipy's Poisson pmf, and the scaled forward recursion of
    Zucchini & MacDonald (2016, 3.2) in probability space."""
    rate = np.exp(theta[:k])
    logits = np.concatenate([theta[k:].reshape(k, k - 1), np.zeros((k, 1))], axis=1)
    transition = np.exp(logits - logits.max(axis=1, keepdims=True))
    transition /= transition.sum(axis=1, keepdims=True)
    values, vectors = np.linalg.eig(transition.T)
    delta = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    delta /= delta.sum()
    probs = stats.poisson.pmf(y[:, None], rate[None, :])
    phi = delta * probs[0]
    total = np.log(phi.sum())
    phi /= phi.sum()
    for t in range(1, len(y)):
        v = (phi @ transition) * probs[t]
        norm = v.sum()
        total += np.log(norm)
        phi = v / norm
    return total


@pytest.mark.parametrize("k", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_earthquakes_em_reaches_the_best_optimum(k):
    # The stationary model, as Zucchini & MacDonald fit this series.
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=k, emission="poisson", initial="stationary")
    run = em.fit_until(model, y, em.start_source(model, y, np.random.default_rng(2009)),
                       RestartPolicy(min_starts=6, reach_best=3, max_starts=30), tol=1e-10, max_iter=2000)
    best = run.restarts.best
    # An independent maximiser: BFGS on the independently written log-likelihood from 8 spread starts.
    rng = np.random.default_rng(1)
    found = -np.inf
    for _ in range(8):
        theta = np.concatenate([np.log(np.sort(rng.uniform(8, 35, size=k))), rng.normal(0, 1, size=k * (k - 1))])
        theta[k:] += 2.0 * np.eye(k, k - 1).ravel()
        result = minimize(lambda th: -_independent_loglik(th, y, k), theta, method="BFGS")
        found = max(found, -result.fun)
    # EM's best is at least as high as anything the optimiser found (to its stopping precision), and as high:
    # the two searches find the same maximum.
    assert best.loglik >= found - 1e-6
    assert best.loglik == pytest.approx(found, abs=1e-4)
    # And EM's value is the independent function's value at EM's parameters.
    log_a = np.log(best.params.transition)
    theta_em = np.concatenate([np.log(best.params.rate), (log_a[:, :-1] - log_a[:, -1:]).ravel()])
    assert _independent_loglik(theta_em, y, k) == pytest.approx(best.loglik, abs=1e-8)


@pytest.mark.parametrize("initial", ["estimated", "stationary"])
def test_stationary_m_step_gradient_and_maximum(initial):
    # The transition M-step's analytic gradient against central differences of the objective (step 1e-6:
    # error ~1e-9 relative), and the stationary M-step's answer a maximum of the expected complete-data
    # log-likelihood: no random nearby matrix scores higher, and it scores at least as high as the counts update.
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=3, emission="poisson", initial=initial)
    params = model.with_initial(np.array([0.2, 0.5, 0.3]), np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]]),
                                rate=np.array([13.0, 20.0, 30.0]))
    stats, _ = em.e_step(model, y, params)
    free = np.random.default_rng(3).normal(size=6)
    value, gradient = em._transition_objective_and_grad(model, stats, free)
    h = 1e-6
    for i in range(free.size):
        step = np.eye(free.size)[i] * h
        numeric = (em._transition_objective_and_grad(model, stats, free + step)[0]
                   - em._transition_objective_and_grad(model, stats, free - step)[0]) / (2 * h)
        assert gradient[i] == pytest.approx(numeric, rel=1e-6, abs=1e-7)
    if initial == "stationary":
        best = em._stationary_transition(model, stats, params.transition)
        score = em._expected_transition_loglik(model, best, stats)
        assert score >= em._expected_transition_loglik(model, em._rows_from_counts(stats.xi_sum, params.transition), stats)
        rng = np.random.default_rng(4)
        for _ in range(50):
            nearby = best * np.exp(1e-3 * rng.standard_normal(best.shape))
            nearby /= nearby.sum(axis=1, keepdims=True)
            assert em._expected_transition_loglik(model, nearby, stats) <= score + 1e-12


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("initial", ["estimated", "stationary"])
def test_transition_m_step_hessian_and_newton_maximiser(k, initial):
    # The closed-form Hessian Newton uses against central differences of the analytic gradient (step 1e-5:
    # truncation error ~1e-10 of the entries, rounding ~1e-11 / 1e-5; the gradient itself is checked against
    # the objective above), at a random point far from the maximum; then the stationary M-step's answer is a
    # maximiser: its gradient over the log-ratios vanishes to the M-step's tolerance and its Hessian is
    # negative definite there.
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=k, emission="poisson", initial=initial)
    params = em.random_start(model, y, np.random.default_rng(10 + k))
    stats, _ = em.e_step(model, y, params)
    free = np.random.default_rng(5).normal(size=k * (k - 1))
    value, gradient, hessian = em._transition_derivatives(model, stats, free)
    assert (value, gradient.tolist()) == (em._transition_objective_and_grad(model, stats, free)[0],
                                          em._transition_objective_and_grad(model, stats, free)[1].tolist())
    h = 1e-5
    numeric = np.empty_like(hessian)
    for i in range(free.size):
        step = np.eye(free.size)[i] * h
        numeric[:, i] = (em._transition_derivatives(model, stats, free + step)[1]
                         - em._transition_derivatives(model, stats, free - step)[1]) / (2 * h)
    np.testing.assert_allclose(hessian, numeric, rtol=0, atol=1e-7 * np.max(np.abs(numeric)))
    np.testing.assert_allclose(hessian, hessian.T, rtol=0, atol=1e-13 * np.max(np.abs(hessian)))  # to rounding
    # The compiled kernel the M-step runs is the same function (to rounding: the sums are in another order).
    from emvsbayes.hmm.compiled_mstep import transition_derivatives

    compiled = transition_derivatives(free, stats.xi_sum, stats.first, model.stationary)
    assert compiled[0] == pytest.approx(value, rel=1e-14, abs=1e-13)
    np.testing.assert_allclose(compiled[1], gradient, rtol=0, atol=1e-13 * (1 + np.max(np.abs(gradient))))
    np.testing.assert_allclose(compiled[2], hessian, rtol=0, atol=1e-13 * np.max(np.abs(hessian)))
    from emvsbayes.hmm.compiled_mstep import transition_value

    for matrix in (params.transition, em._rows_from_counts(stats.xi_sum, params.transition)):
        assert transition_value(matrix, stats.xi_sum, stats.first, model.stationary) == pytest.approx(
            em._expected_transition_loglik(model, matrix, stats), rel=1e-13)
    if initial == "stationary":
        best = em._stationary_transition(model, stats, params.transition)
        log_best = np.log(best)
        _, best_gradient, best_hessian = em._transition_derivatives(model, stats, (log_best[:, :-1] - log_best[:, -1:]).ravel())
        assert np.max(np.abs(best_gradient)) <= 1e-11 * (1 + stats.xi_sum.sum()) * 10
        assert np.max(np.linalg.eigvalsh(best_hessian)) < 0


def test_stationary_m_step_resolves_transition_entries_next_to_zero():
    # Transitions the series barely makes (expected counts 1e-9, as on a boundary face of the earthquake
    # fits): such an entry's gradient and curvature are both of its size, so a test on the absolute gradient
    # alone is met with the entry still a factor ~2 off its maximiser (the M-step then loses more than
    # Baum-Welch's tol, and EM stalled on the face in 3 of 200 bootstrap refits). At the maximiser the
    # gradient over each log-ratio vanishes relative to the entry's own expected count: required to 1e-6.
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=3, emission="poisson", initial="stationary")
    params = model.with_initial(None, np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]]),
                                rate=np.array([13.0, 20.0, 30.0]))
    stats, _ = em.e_step(model, y, params)
    xi = stats.xi_sum.copy()
    xi[1, 2] = xi[2, 1] = 1e-9
    stats = em.HMMStats(xi, stats.counts, stats.first, stats.centre, stats.sum_dev, stats.sum_sq_dev)
    start = params.transition.copy()
    start[1, 2], start[2, 1] = 2e-10, 1e-10  # near the boundary, as EM's previous iterate would be
    start /= start.sum(axis=1, keepdims=True)
    best = em._stationary_transition(model, stats, start)
    log_best = np.log(best)
    _, gradient, _ = em._transition_derivatives(model, stats, (log_best[:, :-1] - log_best[:, -1:]).ravel(),
                                                hessian=False)
    gradient = np.concatenate([gradient.reshape(3, 2), np.zeros((3, 1))], axis=1)
    # The last column is each row's reference: its log-ratio is not free, and its entries are not small.
    assert np.all(np.abs(gradient[:, :-1]) <= 1e-6 * xi[:, :-1] + 1e-13)


def test_distinct_optima_group_relabelled_restarts():
    y = earthquake_counts()
    model = HiddenMarkovModel(n_components=2, emission="poisson")
    start = HMMParams([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]], rate=[15.0, 25.0])
    fit = em.fit(model, y, start, tol=1e-12, max_iter=5000)
    mirror = em.fit(model, y, start.permuted([1, 0]), tol=1e-12, max_iter=5000)
    optima = em.distinct_optima([fit, mirror])
    assert len(optima) == 1 and sorted(optima[0].members) == [0, 1]
    assert optima[0].perms[1] == (1, 0)


# --------------------------------------------------------------------------------------------------
# The PyMC model and the symbolic log-likelihood against the numpy forward algorithm

from emvsbayes.hmm import bayes  # noqa: E402
from emvsbayes.hmm.family import FAMILY  # noqa: E402
from emvsbayes.hmm.series import Series, suggest_series_columns  # noqa: E402


def _series(y) -> Series:
    y = np.asarray(y, dtype=float)
    return Series(y=y, column="y", time=tuple(str(t) for t in range(y.size)))


def _numpy_loglik(model, y, params):
    return em.e_step(model, y, params)[1]


POINTS = {
    ("poisson", "estimated"): HMMParams([0.2, 0.5, 0.3], [[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.05, 0.25, 0.7]],
                                        rate=[11.0, 18.5, 29.0]),
    ("poisson", "stationary"): HMMParams([1 / 3] * 3, [[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.05, 0.25, 0.7]],
                                         rate=[11.0, 18.5, 29.0]),
    ("gaussian", "estimated"): HMMParams([0.3, 0.2, 0.5], [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]],
                                         mu=[2.5, 2.9, 3.3], sigma=[0.2, 0.15, 0.3]),
    ("gaussian", "stationary"): HMMParams([1 / 3] * 3, [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]],
                                          mu=[2.5, 2.9, 3.3], sigma=[0.2, 0.15, 0.3]),
}


def _series_for(emission):
    y = earthquake_counts()
    return y if emission == "poisson" else np.log(y)


@pytest.mark.parametrize("emission", ["poisson", "gaussian"])
@pytest.mark.parametrize("initial", ["estimated", "stationary"])
@pytest.mark.parametrize("ordered", [False, True])
def test_pymc_logp_is_forward_loglik_plus_log_prior(emission, initial, ordered):
    import pymc as pm

    model = HiddenMarkovModel(n_components=3, emission=emission, initial=initial, ordered=ordered,
                              priors=HMMPriors(transition_concentration=1.5, initial_concentration=2.0))
    y = _series_for(emission)
    params = model.with_initial(POINTS[emission, initial].initial, POINTS[emission, initial].transition,
                                **{name: getattr(POINTS[emission, initial], name) for name in
                                   (("rate",) if emission == "poisson" else ("mu", "sigma"))})
    pymc_model = bayes.build_model(model, y)
    point = bayes.initvals_from_params(model, [params])[0]
    # Natural-scale density (no Jacobians) at the point: model.logp(jacobian=False) on the transformed values.
    transformed = {}
    for rv in pymc_model.free_RVs:
        value_var = pymc_model.rvs_to_values[rv]
        transform = pymc_model.rvs_to_transforms.get(rv)
        natural = np.asarray(point[rv.name], dtype=float)
        transformed[value_var.name] = (transform.forward(natural, *rv.owner.inputs).eval() if transform is not None
                                       else natural)
    # The density (model.logp(jacobian=False), what compile_logp(jacobian=False) compiles) and the likelihood
    # part alone (the potential) as outputs of one compiled function: each compilation costs ~1.5 s.
    [potential] = pymc_model.replace_rvs_by_values(pymc_model.potentials)
    both = pymc_model.compile_fn([pymc_model.logp(jacobian=False), potential], inputs=pymc_model.value_vars,
                                 on_unused_input="ignore", mode=ORACLE_MODE)
    logp, likelihood = both(transformed)
    expected = _numpy_loglik(model, y, params) + bayes.log_prior(model, y, params)
    assert float(logp) == pytest.approx(expected, rel=1e-10)
    assert float(likelihood) == pytest.approx(_numpy_loglik(model, y, params), rel=1e-11)
    assert pm is not None


def test_forward_op_gradient_and_jax_form_match_the_numpy_loglik():
    # The sampled model's forward-algorithm Op: its gradient (smoothed probabilities) equals central
    # differences of the numpy log-likelihood (step 1e-6: error ~1e-8), and its JAX form (the numpyro path)
    # gives the same value and gradient to rounding.
    import jax
    import pytensor
    import pytensor.tensor as pt

    from emvsbayes.sampling import configure_jax

    configure_jax()
    rng = np.random.default_rng(5)
    t_len, k = 12, 3
    log_initial = np.log(rng.dirichlet(np.ones(k)))
    log_transition = np.log(rng.dirichlet(np.ones(k), size=k))
    log_emission = rng.normal(size=(t_len, k)) * 3
    op = bayes._forward_loglik_op()
    inputs = [pt.dvector(), pt.dmatrix(), pt.dmatrix()]
    out = op(*inputs)
    # PyTensor's default mode (numba), as PyMC's and nutpie's samplers compile the Op: its Python perform
    # through numba's object mode
    fn = pytensor.function(inputs, [out, *pytensor.grad(out, inputs)])
    value, *grads = fn(log_initial, log_transition, log_emission)
    assert float(value) == pytest.approx(inference.log_likelihood(log_initial, log_transition, log_emission), rel=1e-12)
    args = [log_initial, log_transition, log_emission]
    h = 1e-6
    for a, g in enumerate(grads):
        for index in np.ndindex(args[a].shape):
            up, down = [x.copy() for x in args], [x.copy() for x in args]
            up[a][index] += h
            down[a][index] -= h
            numeric = (inference.log_likelihood(*up) - inference.log_likelihood(*down)) / (2 * h)
            assert g[index] == pytest.approx(numeric, rel=1e-6, abs=1e-7)
    jax_value, jax_grads = jax.value_and_grad(bayes.forward_log_jax, argnums=(0, 1, 2))(*args)
    assert float(jax_value) == pytest.approx(float(value), rel=1e-12)
    for g, jg in zip(grads, jax_grads):
        np.testing.assert_allclose(np.asarray(jg), g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("emission", ["poisson", "gaussian"])
@pytest.mark.parametrize("initial", ["estimated", "stationary"])
def test_symbolic_loglik_and_unconstrained_round_trip(emission, initial):
    from emvsbayes.uncertainty.information import _compile  # the Python-linker compile the information uses

    model = HiddenMarkovModel(n_components=3, emission=emission, initial=initial)
    y = _series_for(emission)
    params = POINTS[emission, initial]
    params = model.with_initial(params.initial, params.transition,
                                **{name: getattr(params, name) for name in (("rate",) if emission == "poisson" else ("mu", "sigma"))})
    data = _series(y)
    phi_value = FAMILY.to_unconstrained(model, params)
    assert len(phi_value) == len(FAMILY.unconstrained_names(model, data)) == model.n_free_parameters()
    back = FAMILY.from_unconstrained(model, data, phi_value)
    for name, value in params.variables().items():
        np.testing.assert_allclose(back.variables()[name], value, rtol=1e-12, atol=1e-15)
    phi, loglik = FAMILY.symbolic_loglik(model, data)
    import pytensor.tensor as pt
    from pytensor.gradient import grad

    fn = _compile([phi], [loglik, grad(loglik, phi)])
    value, gradient = fn(phi_value)
    assert float(value) == pytest.approx(_numpy_loglik(model, y, params), rel=1e-12)
    # The gradient against central differences of the numpy log-likelihood.
    h = 1e-6
    for i in range(phi_value.size):
        step = np.zeros_like(phi_value)
        step[i] = h
        up = _numpy_loglik(model, y, FAMILY.from_unconstrained(model, data, phi_value + step))
        down = _numpy_loglik(model, y, FAMILY.from_unconstrained(model, data, phi_value - step))
        assert float(gradient[i]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-5)
    assert pt is not None


def test_symbolic_hessian_matches_finite_differences_of_the_numpy_loglik():
    # The observed information comes from this Hessian: at EM's answer for the earthquakes (K = 2, stationary)
    # it equals the central second differences of the numpy forward log-likelihood (step 1e-4: truncation
    # error ~ h^2 times the fourth derivative, ~1e-6 relative; rounding ~ eps |f| / h^2 ~ 1e-5 absolute).
    from pytensor.gradient import grad, jacobian

    from emvsbayes.uncertainty.information import _compile

    y = earthquake_counts()
    data = _series(y)
    model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")
    start = model.with_initial(None, np.array([[0.9, 0.1], [0.1, 0.9]]), rate=np.array([15.0, 25.0]))
    best = em.fit(model, y, start, tol=1e-12, max_iter=5000).params
    phi, loglik = FAMILY.symbolic_loglik(model, data)
    phi0 = FAMILY.to_unconstrained(model, best)
    hessian = _compile([phi], [jacobian(grad(loglik, phi), phi, vectorize=True)])(phi0)[0]
    f = lambda v: _numpy_loglik(model, y, FAMILY.from_unconstrained(model, data, v))  # noqa: E731
    h, p = 1e-4, phi0.size
    numeric = np.empty((p, p))
    for i in range(p):
        for j in range(p):
            ei, ej = np.eye(p)[i] * h, np.eye(p)[j] * h
            numeric[i, j] = (f(phi0 + ei + ej) - f(phi0 + ei - ej) - f(phi0 - ei + ej) + f(phi0 - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(hessian, numeric, rtol=1e-4, atol=1e-3)
    # A maximum: the information (minus the Hessian) is positive definite.
    assert np.all(np.linalg.eigvalsh(-hessian) > 0)


def test_parameters_declare_both_transition_dims_as_label_dims():
    model = HiddenMarkovModel(n_components=2, emission="gaussian")
    info = FAMILY.parameters(model, None)
    assert list(info) == ["initial", "transition", "mu", "sigma"]
    assert info["transition"].dims == ("component", "component_to")
    assert info["transition"].label_dims == ("component", "component_to")
    assert info["mu"].label_dims == ("component",)
    assert FAMILY.obs_dim == "time"
    assert FAMILY.resample(_series([1.0, 2.0]), np.random.default_rng(0)) is None


def test_state_probabilities_per_draw_match_enumeration():
    model = HiddenMarkovModel(n_components=2, emission="poisson")
    y = earthquake_counts()[:6]
    rng = np.random.default_rng(4)
    draws = {"initial": rng.dirichlet(np.ones(2), size=5), "transition": rng.dirichlet(np.ones(2), size=(5, 2)),
             "rate": rng.uniform(8, 30, size=(5, 2))}
    probs = FAMILY.membership_draws(model, _series(y), draws)
    predictive = bayes.one_step_predictive(model, y, draws)
    assert probs.shape == (5, 6, 2)
    for s in range(5):
        params = HMMParams(draws["initial"][s], draws["transition"][s], rate=draws["rate"][s])
        loglik, gamma, *_ = brute_force(np.log(params.initial), np.log(params.transition), model.log_emission(params, y))
        np.testing.assert_allclose(probs[s], gamma, rtol=1e-12)
        assert predictive[s].sum() == pytest.approx(loglik, rel=1e-13)


# --------------------------------------------------------------------------------------------------
# Simulation, prior draws, recovery


def test_simulated_chain_has_the_transition_frequencies():
    # 20000 steps of a 2-state chain: the empirical transition frequencies' Monte Carlo sd is at most
    # sqrt(0.25 / 6000) ~ 0.0065 per row (each row visited >= 6000 times); 5 sd is the tolerance.
    model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")
    params = model.with_initial(None, np.array([[0.9, 0.1], [0.25, 0.75]]), rate=np.array([3.0, 12.0]))
    series = FAMILY.simulate(model, params, 20000, np.random.default_rng(8))
    z = series.true_states
    counts = np.zeros((2, 2))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), params.transition, atol=0.033)
    assert np.all(series.y == np.round(series.y))


def test_simulate_then_fit_recovers_the_truth():
    # T = 2000, well-separated Poisson states: EM's estimates lie within 5 standard errors (from the observed
    # information, computed here by finite differences of the numpy log-likelihood) of the truth.
    model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")
    truth = model.with_initial(None, np.array([[0.95, 0.05], [0.1, 0.9]]), rate=np.array([5.0, 15.0]))
    series = FAMILY.simulate(model, truth, 2000, np.random.default_rng(12))
    run = em.fit_until(model, series.y, FAMILY.starts(model, series, {}, np.random.default_rng(0))[0],
                       RestartPolicy(min_starts=5, reach_best=2, max_starts=20), tol=1e-10)
    best = run.restarts.best.params
    best = best.permuted(np.argsort(best.rate))
    phi = FAMILY.to_unconstrained(model, best)
    h = 1e-4
    p = phi.size
    hessian = np.empty((p, p))
    f = lambda v: _numpy_loglik(model, series.y, FAMILY.from_unconstrained(model, series, v))  # noqa: E731
    for i in range(p):
        for j in range(p):
            ei, ej = np.eye(p)[i] * h, np.eye(p)[j] * h
            hessian[i, j] = (f(phi + ei + ej) - f(phi + ei - ej) - f(phi - ei + ej) + f(phi - ei - ej)) / (4 * h * h)
    se = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    z = np.abs(phi - FAMILY.to_unconstrained(model, truth)) / se
    assert np.all(z < 5), z


def test_prior_draw_is_in_the_support_and_ordered():
    model = HiddenMarkovModel(n_components=3, emission="gaussian", ordered=True)
    data = _series(np.log(earthquake_counts()))
    for seed in range(5):
        params = FAMILY.prior_draw(model, np.random.default_rng(seed), data)
        model.validate_params(params)
        assert np.all(np.diff(params.mu) > 0)


# --------------------------------------------------------------------------------------------------
# Bad input: one line naming the problem and the fix


def _spec(tmp_path, text, **data):
    path = tmp_path / "series.csv"
    path.write_text(text, encoding="utf-8")
    spec = {"path": str(tmp_path / "spec.toml"),
            "data": {"dataset": None, "file": "series.csv", "label": "year", "columns": None, "drop": [],
                     "delimiter": "auto", "encoding": "utf-8", **data},
            "model": {"family": "hmm", "components": 2, "emission": "poisson", "initial": "estimated"},
            "em": {"init": "auto"}, "bayes": {"variant": "symmetric"}, "model_choice": {"components": []}}
    return spec


@pytest.mark.parametrize("text, message", [
    ("year,count\n1900,3\n1901,\n1902,5\n", "line 3, column 'count' has no value"),
    ("year,count\n1900,3\n1901,NA\n1902,5\n", "has no value"),
    ("year,count\n1900,3\n1901,4\n1903,5\n", "jumps from 1901 to 1903"),
    ("year,count\n1900,3\n1901,-4\n1902,5\n", "a negative count"),
    ("year,count\n1900,3\n1901,4.5\n1902,5\n", "not a whole number"),
    ("year,count\n1902,3\n1901,4\n1900,5\n", "increasing time order"),
    ("year,count\n1900,3\n1900,4\n1901,5\n", "repeats the time"),
    # ISO dates: their gaps are found too (in days, or in months where every date is one day of its month)
    ("year,count\n2020-01-01,3\n2020-01-02,4\n2020-01-03,5\n2020-01-05,2\n",
     "jumps from 2020-01-03 to 2020-01-05 where the series steps by 1 day (a gap)"),
    ("year,count\n2020-01-31,3\n2020-02-29,4\n2020-04-30,5\n", "jumps from 2020-02-29 to 2020-04-30"),
    ("year,count\n2020-01-01,3\n2020-02-01,4\n2020-04-01,5\n", "steps by 1 month (a gap)"),
    # months and hours as pandas writes them (2020-01; 2020-01-01 06:00:00): read as names before, in any order
    ("year,count\n2020-03,3\n2020-02,4\n2020-01,5\n", "goes from 2020-03 to 2020-02 (lines 2, 3): a series must be "
     "in increasing time order"),
    ("year,count\n2020-01-01 06:00:00,3\n2020-01-01 07:00:00,4\n2020-01-01 09:00:00,5\n", "steps by 1 hour (a gap)"),
    # one time that does not read as the others do switched every check off (the labels were taken for names)
    ("year,count\n2020-02-27,3\n2020-02-28,4\n2020-02-30,5\n2020-03-05,1\n", "line 4, column 'year' is '2020-02-30', "
     "which does not read as a time of the series' kind (dates, as '2020-02-27'); fix it"),
    ("year,count\n2020-11,3\n2020-12,4\n2020-13,5\n2021-02,1\n", "'2020-13', which does not read as a time"),
    ("year,count\n1,3\n2,4\ninf,5\n4,1\n", "line 4, column 'year' is 'inf', not a finite time"),
    ("year,count\n2020-03-29 01:00:00,3\n2020-03-29 03:00:00+02:00,4\n2020-03-29 04:00:00,5\n",
     "the times mix date-times with and without a UTC offset"),
    # the same time written twice in two ways, and steps compared exactly (1e-12 of tolerance hid this gap)
    ("year,count\n2003,3\n2004,4\n2004.0,5\n2005,1\n", "line 4, column 'year' repeats the time 2004 of line 3 "
     "(written '2004.0')"),
    ("year,count\n1e-15,3\n2e-15,4\n3e-15,5\n10e-15,1\n", "jumps from 3e-15 to 10e-15 where the series steps by 1e-15 "
     "(a gap)"),
    # local clock times across the change to summer time: 02:00 never was, so the fix is an offset, not a value
    ("year,count\n2020-03-29 00:00:00,3\n2020-03-29 01:00:00,4\n2020-03-29 03:00:00,5\n",
     "(local clock times across a change to or from summer time? give each its UTC offset"),
    ("year,count\n1900,3\n,4\n1902,5\n", "line 3, column 'year' has no time"),
])
def test_bad_series_are_refused_in_one_line(tmp_path, text, message):
    spec = _spec(tmp_path, text)
    with pytest.raises(UserError) as info:
        FAMILY.check_data(spec, FAMILY.load_data(spec))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_evenly_spaced_dates_are_a_series(tmp_path):
    for text in ("year,count\n2020-01-01,3\n2020-02-01,4\n2020-03-01,5\n2020-04-01,2\n",  # monthly: 31, 29, 31 days
                 "year,count\n2019-01-01,3\n2020-01-01,4\n2021-01-01,5\n",  # yearly, a leap year between
                 "year,count\n2020-02-27,3\n2020-02-28,4\n2020-02-29,5\n2020-03-01,2\n",  # daily over a month's end
                 # month ends, as pandas' "ME" dates fall (29, 31, 30 days apart: refused as uneven days before)
                 "year,count\n2020-01-31,3\n2020-02-29,4\n2020-03-31,5\n2020-04-30,2\n",
                 # steps compared exactly: 0.1 s, 0.1 at 1e8, 1 at 1e17 (float64 called them uneven or unsorted)
                 "year,count\n2020-01-01 00:00:00.000,3\n2020-01-01 00:00:00.100,4\n2020-01-01 00:00:00.200,5\n",
                 "year,count\n100000000.1,3\n100000000.2,4\n100000000.3,5\n",
                 "year,count\n100000000000000000,3\n100000000000000001,4\n100000000000000002,5\n",
                 "year,count\n20200130,3\n20200131,4\n20200201,5\n",  # dates without separators
                 "year,count\n2020-03-29 01:00:00+01:00,3\n2020-03-29 03:00:00+02:00,4\n2020-03-29 04:00:00+02:00,5\n",
                 "year,count\n2020Q3,3\n2020Q4,4\n2021Q1,5\n"):
        assert FAMILY.load_data(_spec(tmp_path, text)).n_time == text.count("\n") - 1  # the time labels are checked here


def test_more_states_than_time_points_is_refused(tmp_path):
    spec = _spec(tmp_path, "year,count\n1900,3\n1901,4\n1902,5\n")
    spec["model"]["components"] = 4
    data = FAMILY.load_data(spec)
    with pytest.raises(UserError, match=r"components = 4 is more than the 3 time points"):
        FAMILY.check_data(spec, data)


@pytest.mark.parametrize("prior, message", [
    ([[1.0, 1.0], [1.0, 1.0]], "is 2 x 2 but \\[model\\] components = 3"),
    ([[1.0, 1.0, 1.0], [1.0, 1.0]], "is 2 rows of 3, 2 numbers but \\[model\\] components = 3"),
    ([[1.0, -1.0, 1.0]] * 3, "positive number or a K x K table"),
    (0.0, "must be > 0"),
])
def test_transition_prior_of_the_wrong_shape_is_refused(tmp_path, prior, message):
    spec = _spec(tmp_path, "year,count\n1900,3\n1901,4\n1902,5\n")
    spec["model"]["components"] = 3
    spec["bayes"]["transition_prior"] = prior
    with pytest.raises(UserError, match=message):
        FAMILY.check_spec(spec)


def test_transition_matrix_prior_with_several_k_is_refused(tmp_path):
    spec = _spec(tmp_path, "year,count\n1900,3\n1901,4\n1902,5\n")
    spec["model_choice"]["components"] = [2, 3]
    spec["bayes"]["transition_prior"] = [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(UserError, match="fits one K only, but the spec fits K = 2, 3; give one number"):
        FAMILY.check_spec(spec)


def test_gaussian_series_loads_fractional_values(tmp_path):
    spec = _spec(tmp_path, "year,level\n1900,3.5\n1901,-4.25\n1902,5\n")
    spec["model"]["emission"] = "gaussian"
    data = FAMILY.load_data(spec)
    np.testing.assert_array_equal(data.y, [3.5, -4.25, 5.0])
    assert data.time == ("1900", "1901", "1902")


# --------------------------------------------------------------------------------------------------
# Figures from a results tree


def _results_tree(with_posterior: bool):
    import xarray as xr

    y = earthquake_counts()
    data = Series(y=y, column="count", time=tuple(str(1900 + t) for t in range(y.size)), time_column="year")
    model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")
    start = model.with_initial(None, np.array([[0.9, 0.1], [0.1, 0.9]]), rate=np.array([15.0, 25.0]))
    fit = em.fit(model, y, start, tol=1e-10)
    groups = {"data": FAMILY.data_group({}, data),
              "em": xr.Dataset({name: (FAMILY.parameters(model)[name].dims, value)
                                for name, value in fit.params.variables().items()})}
    groups |= FAMILY.extra_groups({}, model, data, fit)
    if with_posterior:
        # Stand-in draws around EM's answer (2 chains x 50 draws): the figures only summarise them.
        rng = np.random.default_rng(0)
        draws = rng.dirichlet(50 * fit.params.transition[0], size=(2, 50, 1)), rng.dirichlet(50 * fit.params.transition[1], size=(2, 50, 1))
        transition = np.concatenate(draws, axis=2)
        groups["posterior"] = xr.Dataset({"transition": (("chain", "draw", "component", "component_to"), transition)})
        probs = groups["decoding"]["smoothed"].values[::-1].copy()  # any other (T, K) probabilities
        groups["posterior_membership"] = xr.Dataset({"membership_relabelled": (("time", "component"), probs)})
    return xr.DataTree.from_dict(groups), fit, model


@pytest.mark.parametrize("with_posterior", [False, True])
def test_report_figures_from_a_results_tree(with_posterior):
    from emvsbayes.hmm import report

    tree, fit, model = _results_tree(with_posterior)
    probs, source = report.state_probabilities(tree)
    if with_posterior:
        assert source == "posterior"
        np.testing.assert_array_equal(probs, tree["posterior_membership"]["membership_relabelled"].values)
    else:
        np.testing.assert_allclose(probs, em.e_step(model, earthquake_counts(), fit.params)[0].gamma, rtol=1e-12)
    summary = report.transition_summary(tree, prob=0.8)
    np.testing.assert_array_equal(summary["em"], fit.params.transition)
    if with_posterior:
        flat = tree["posterior"]["transition"].values.reshape(-1, 2, 2)
        np.testing.assert_allclose(summary["lower"], np.quantile(flat, 0.1, axis=0))
        np.testing.assert_allclose(summary["mean"], flat.mean(axis=0))
    else:
        assert np.all(np.isnan(summary["mean"]))
    import matplotlib.pyplot as plt

    for fig in (report.series_figure(tree), report.transition_figure(tree, 0.8), report.decoding_figure(tree)):
        assert fig.axes
        plt.close(fig)
    fig = report.transition_figure(tree, 0.8)
    assert [ax.get_title() for ax in fig.axes] == ["EM"] + ["posterior mean [80% interval]"] * with_posterior
    plt.close(fig)
    decoding = tree["decoding"]
    assert decoding["viterbi"].dims == ("time",)
    # Viterbi's path is a valid path of the fitted chain and scores its recorded log joint.
    path = decoding["viterbi"].values
    log_joint = (model.log_initial(fit.params)[path[0]] + np.log(fit.params.transition[path[:-1], path[1:]]).sum()
                 + model.log_emission(fit.params, earthquake_counts())[np.arange(path.size), path].sum())
    assert log_joint == pytest.approx(decoding.attrs["viterbi_log_joint"], rel=1e-12)


@pytest.mark.parametrize("with_posterior", [False, True])
def test_report_page_shows_the_series_transitions_and_decodings(with_posterior):
    """The page asks the results' family for its sections (no report module names a family): the series
    coloured by state, the transition matrix as a figure and a table, the decodings and the note on what an
    independent mixture misses; no histogram of the series as independent rows; no raw variable names in
    the headings."""
    import re

    from emvsbayes.hmm.model import stationary_distribution
    from emvsbayes.report.render import render_report

    tree, fit, model = _results_tree(with_posterior)
    tree["em"] = tree["em"].to_dataset().assign(loglik=fit.loglik)  # the generic sections read EM's log-likelihood
    tree.attrs["family"] = "hmm"
    page = render_report(tree)
    figures = re.findall(r'data-fig="([^"]+)"', page)
    assert [name for name in figures if name.startswith("hmm-")] == ["hmm-series", "hmm-transition", "hmm-decoding"]
    assert "data" not in figures  # the mixtures' histogram of rows
    # every figure in vector form: a raster (imshow's heat map) would be an embedded data: PNG, which the browser
    # test refuses as a request other than the page itself
    assert "data:image" not in page and "<image" not in page
    # sections in page order: the series first, the decodings after the transition matrix
    anchors = re.findall(r'<section id="([^"]+)"', page)
    assert anchors.index("series") < anchors.index("transitions") < anchors.index("decoding")
    # the transition table: one row per entry, EM's value to 3 decimals (and the posterior's when there is one)
    table = page[page.index('id="transitions"'):page.index('id="decoding"')]
    header = re.findall(r"<th>([^<]*)</th>", table)
    assert header == ["from", "to", "EM"] + ["posterior mean", "89% interval"] * with_posterior
    rows = re.findall(r"<tr><td>(state \d)</td><td>(state \d)</td><td>([^<]*)</td>", table)
    assert [(a, b) for a, b, _ in rows] == [(f"state {i}", f"state {j}") for i in (1, 2) for j in (1, 2)]
    assert [float(v) for _, _, v in rows] == pytest.approx(fit.params.transition.ravel(), abs=5e-4)
    # the independence note quotes the stationary shares a mixture would give as its chance of staying
    shares = stationary_distribution(fit.params.transition)
    assert "What an independent mixture misses" in page
    for share in shares:
        assert f"would give {share:.2f}" in page
    headings = re.findall(r"<h[1-4][^>]*>([^<]*)</h[1-4]>", page) + re.findall(r"<th>([^<]*)</th>", page)
    raw = [h for h in headings if re.search(r"\b(transition|rate|initial|viterbi|smoothed|component_to|y)\b", h)]
    assert [h for h in raw if h != "Transition matrix: EM against the posterior"] == []


def test_chains_start_once_per_optimum_up_to_renaming_rows_and_columns():
    # Two restarts at one answer in two state orders (the transition matrix permuted in its rows and columns)
    # are one optimum: the chains must not count the copy as a second one to start from. A third restart at
    # a different answer is a second optimum. (Renaming only the rows, as for a mixture's means, would see
    # the permuted copy as a different answer.)
    from emvsbayes.comparison import start_points
    from emvsbayes.em import EMFit, EMRestarts

    model = HiddenMarkovModel(n_components=3, emission="poisson")
    y = earthquake_counts()
    best = HMMParams([0.2, 0.5, 0.3], [[0.90, 0.07, 0.03], [0.04, 0.93, 0.03], [0.0, 0.19, 0.81]],
                     rate=np.array([13.1, 19.7, 29.7]))
    other = HMMParams([0.5, 0.3, 0.2], [[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]], rate=np.array([10.0, 18.0, 26.0]))
    fits = [EMFit(p, None, em.e_step(model, y, p)[1], 10, True, ()) for p in (best, best.permuted((2, 0, 1)), other)]
    assert fits[0].loglik == pytest.approx(fits[1].loglik, rel=1e-13) and fits[2].loglik < fits[0].loglik
    declared = FAMILY.parameters(model, _series(y))
    starts = start_points(FAMILY.variables, EMRestarts(tuple(fits)), declared=declared)
    assert len(starts) == 2
    np.testing.assert_array_equal(starts[1].rate, other.rate)
    assert len(start_points(FAMILY.variables, EMRestarts(tuple(fits)))) == 3  # without the label dims


def test_a_minimal_hmm_spec_bootstraps_parametrically_by_default(tmp_path):
    # The shared default (resample rows) cannot hold a series' chain: an HMM spec that does not name the kind
    # gets the family's default, not a refusal of a value the user never wrote; naming rows is still refused.
    from emvsbayes.spec import load_spec

    (tmp_path / "y.csv").write_text("count\n" + "\n".join(str(v) for v in earthquake_counts()[:30]) + "\n")
    spec_path = tmp_path / "s.toml"
    spec_path.write_text('[data]\nfile = "y.csv"\n[model]\nfamily = "hmm"\ncomponents = 2\n')
    assert load_spec(spec_path)["em"]["bootstrap_kind"] == "parametric"
    spec_path.write_text('[data]\nfile = "y.csv"\n[model]\nfamily = "hmm"\ncomponents = 2\n[em]\nbootstrap_kind = "nonparametric"\n')
    with pytest.raises(UserError, match='bootstrap_kind must be "parametric"'):
        load_spec(spec_path)
    spec_path.write_text('[data]\nfile = "y.csv"\n[model]\nfamily = "hmm"\ncomponents = 2\n[em]\nbootstrap_kind = "both"\n')
    with pytest.raises(UserError, match="bootstrap_kind"):
        load_spec(spec_path)
    (tmp_path / "c.csv").write_text("heads,tosses\n5,10\n9,10\n")
    spec_path.write_text('[data]\nfile = "c.csv"\n[model]\nfamily = "coins"\ncomponents = 2\n')
    assert load_spec(spec_path)["em"]["bootstrap_kind"] == "nonparametric"


def test_an_unnamed_series_column_is_suggested_by_what_is_not_time(tmp_path):
    """A table of several columns and no [data] columns, run as a user runs it: the hint names a value
    column (a table's first column is often its time labels, which a user pasting the hint would otherwise
    fit as counts) and the time column as the label."""
    (tmp_path / "series.csv").write_text("year,count\n1900,3\n1901,4\n1902,5\n1903,2\n", encoding="utf-8")
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text('[data]\nfile = "series.csv"\n[model]\nfamily = "hmm"\ncomponents = 2\nemission = "poisson"\n',
                         encoding="utf-8")
    proc = run_cli("run", spec_path, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].endswith("columns = ['count'] and label = 'year' (the time column)"), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("candidates, time, suggestion", [
    (["count", "Year"], None, "columns = ['count'] and label = 'Year' (the time column)"),
    (["quakes", "deaths"], None, "columns = ['quakes']"),
    (["t", "date"], None, "columns = ['date']"),
    (["count", "deaths"], "year", "columns = ['count']"),
    ([], None, "columns = ['value']"),
])
def test_the_series_suggestion_prefers_columns_not_named_for_time(candidates, time, suggestion):
    assert suggest_series_columns(candidates, time) == suggestion
