"""Approximate leave-future-out cross-validation (PSIS-LFO-CV, Bürkner, Gabry & Vehtari 2020) against the exact
leave-future-out score of a model whose posterior after every prefix is computed exactly.

The oracle model: a 2-state Poisson hidden Markov model with known rates (2 and 9), the stationary start, and one
unknown parameter, the probability p of staying in a state (transition [[p, 1-p], [1-p, p]]), whose prior is
uniform on G values. The posterior given any prefix is then a distribution on G points, computed exactly by the
forward recursion at each point (written here in probability space with scaling, independently of the package's
log-space one), and so is the exact 1-step-ahead predictive p(y_t | y_<t) = sum_g p(g | y_<t) p(y_t | y_<t, g).
The "refits" the estimator asks for are exact draws from that discrete posterior (numpy's categorical sampling,
a real sampler, not a stand-in), whose per-draw one-step densities come from the package's
``one_step_predictive``.

Tolerance: the estimator returns its Monte Carlo standard error (each term's delta-method sd, self-normalised
importance sampling for weighted terms, added over terms as if perfectly correlated: an upper bound on the sd of
the sum). The test allows 4 of them, a false-failure rate below 1e-4 for a normal error, plus the bias of a log of
a mean, about sd^2 / 2 per term, bounded here by the same sds squared.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import poisson

from emvsbayes.hmm.bayes import one_step_predictive
from emvsbayes.hmm.model import HiddenMarkovModel
from emvsbayes.uncertainty import LFO_PARETO_K_THRESHOLD, lfo_first, psis_lfo

RATES = np.array([2.0, 9.0])
GRID = (np.arange(400) + 0.5) / 400  # the G values of p, uniform prior
T = 60
DRAWS = 4000


def simulate(rng) -> np.ndarray:
    state, y = rng.integers(2), []
    for _ in range(T):
        y.append(rng.poisson(RATES[state]))
        state = state if rng.random() < 0.85 else 1 - state
    return np.array(y, dtype=float)


def one_step_by_scaled_forward(y: np.ndarray, p: float) -> np.ndarray:
    """log p(y_t | y_<t, p), (T,): the textbook scaled forward recursion in probability space (the oracle's own)."""
    transition = np.array([[p, 1 - p], [1 - p, p]])
    alpha = np.array([0.5, 0.5])  # stationary distribution of a symmetric chain
    out = np.empty(y.size)
    for t in range(y.size):
        predicted = alpha if t == 0 else alpha @ transition
        joint = predicted * poisson.pmf(y[t], RATES)
        out[t] = np.log(joint.sum())
        alpha = joint / joint.sum()
    return out


@pytest.fixture(scope="module")
def oracle():
    y = simulate(np.random.default_rng(20200101))
    log_pred = np.stack([one_step_by_scaled_forward(y, p) for p in GRID])  # (G, T)
    log_prefix = np.concatenate([np.zeros((GRID.size, 1)), np.cumsum(log_pred, axis=1)], axis=1)  # log p(y_<n | g)
    model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")

    def exact_term(t: int) -> float:
        log_post = log_prefix[:, t] - logsumexp(log_prefix[:, t])
        return float(logsumexp(log_post + log_pred[:, t]))

    # the package's one-step densities at every value of p (a draw is one of them: computed once, then indexed)
    draws = {"transition": np.stack([np.stack([GRID, 1 - GRID], -1), np.stack([1 - GRID, GRID], -1)], axis=1),
             "rate": np.broadcast_to(RATES, (GRID.size, 2))}
    package = one_step_predictive(model, y, draws)  # (G, T)

    def sampler(seed: int):
        rng = np.random.default_rng(seed)

        def one_step_given_prefix(n: int) -> np.ndarray:
            log_post = log_prefix[:, n] - logsumexp(log_prefix[:, n])
            return package[rng.choice(GRID.size, size=DRAWS, p=np.exp(log_post))]

        return one_step_given_prefix

    return y, log_pred, exact_term, sampler


def tolerance(result) -> float:
    sds = 4 * result.mcse
    return sds + result.mcse ** 2


@pytest.mark.parametrize("threshold", [LFO_PARETO_K_THRESHOLD, np.inf, -np.inf],
                         ids=["paper's 0.7", "importance weights only", "refit every step"])
def test_psis_lfo_matches_the_exact_leave_future_out_score(oracle, threshold):
    y, log_pred, exact_term, sampler = oracle
    first = lfo_first(T, 1)
    exact = np.array([exact_term(t) for t in range(first, T)])
    result = psis_lfo(sampler(7), T, first, threshold=threshold)
    assert result.first == first == 15
    assert np.isnan(result.pointwise[:first]).all() and np.isfinite(result.pointwise[first:]).all()
    assert abs(result.elpd_lfo - exact.sum()) < tolerance(result), (result.elpd_lfo, exact.sum(), result.mcse)
    # every term within its own share of the error (4 sds of the bound, the terms' sds summing to mcse)
    assert np.all(np.abs(result.pointwise[first:] - exact) < 4 * result.mcse)
    if threshold == -np.inf:  # every term from a posterior sampled on exactly its prefix
        assert result.refits == tuple(range(first, T)) and np.isnan(result.pareto_k).all()
    elif threshold == np.inf:  # one fit on the first L points, every later prefix reached by weights
        assert result.refits == (first,) and np.isfinite(result.pareto_k[first + 1:]).all()
    else:  # the paper's rule: every weighted term trusted (with one parameter, weights suffice on this series)
        assert result.n_bad_k == 0 and np.nanmax(result.pareto_k) <= threshold
    # the one-step densities are the package's: their sum per draw is the forward algorithm's log-likelihood
    draws = {"transition": np.array([[[0.85, 0.15], [0.15, 0.85]]]), "rate": RATES[None]}
    package = one_step_predictive(HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary"), y, draws)[0]
    np.testing.assert_allclose(package, one_step_by_scaled_forward(y, 0.85), rtol=1e-10)


def test_refits_exhausted_are_counted_as_untrustworthy(oracle):
    """With no refit allowed after the first and a threshold every weight breaks, each weighted term is flagged."""
    *_, sampler = oracle
    result = psis_lfo(sampler(3), T, 15, threshold=-np.inf, max_refits=0)
    assert result.refits == (15,)
    assert result.n_bad_k == T - 15 - 1  # every term but the first, which comes from the fit's own draws


def test_first_must_leave_a_point_to_predict():
    with pytest.raises(ValueError, match="first"):
        psis_lfo(lambda n: np.zeros((2, 5)), 5, 5)
    assert lfo_first(107, 9) == 27 and lfo_first(10, 20) == 9


# --- the hidden Markov model's refits: one model of the whole series counting a prefix ------------------------


def _hmm(emission: str):
    from emvsbayes.hmm.model import HiddenMarkovModel, HMMPriors

    # priors given as numbers: the data-scaled defaults would differ between a prefix and the whole series
    priors = HMMPriors(transition_concentration=2.0, rate_prior=(2.0, 0.2), mu_loc=0.0, mu_scale=5.0, sigma_scale=2.0)
    model_def = HiddenMarkovModel(n_components=3, emission=emission, initial="stationary", priors=priors)
    rng = np.random.default_rng(4)
    y = rng.poisson(np.repeat([3.0, 12.0], 20)).astype(float) if emission == "poisson" else rng.normal(0, 2, 40)
    return model_def, y


@pytest.mark.parametrize("emission", ["poisson", "gaussian"])
def test_the_model_counting_a_prefix_is_the_model_of_the_prefix(emission):
    """Leave-future-out's refits of the HMM sample one model of the whole series whose likelihood counts its first
    n points (one compiled program for every refit). Its log-density equals, at random points, that of the model
    built on the first n points alone (PyMC's own log-density of each: the oracle), for n = 1, 17 and T."""
    import pymc as pm

    from conftest import ORACLE_MODE
    from emvsbayes.hmm import bayes

    model_def, y = _hmm(emission)
    rng = np.random.default_rng(5)
    masked = bayes.build_model(model_def, y, prefix_container="counted")
    logp_masked = masked.compile_logp(mode=ORACLE_MODE)
    for n in (1, 17, y.size):
        prefix = bayes.build_model(model_def, y[:n])
        logp_prefix = prefix.compile_logp(mode=ORACLE_MODE)
        pm.set_data({"counted": (np.arange(y.size) < n).astype(float)}, model=masked)
        for _ in range(3):
            point = {name: rng.normal(size=np.shape(value)) for name, value in prefix.initial_point().items()}
            np.testing.assert_allclose(logp_masked(point), logp_prefix(point), rtol=1e-12)


def test_every_refit_runs_on_one_compiled_program(tmp_path, monkeypatch):
    """Two prefixes: the programs are built for the first and loaded for the second, and the counted points given
    as data reach them (same seed, different draws; each recorded with its own data)."""
    from emvsbayes.family import get_family
    from emvsbayes.hmm.series import Series
    from emvsbayes.sampling import SamplerSettings, sample_posterior

    monkeypatch.setenv("EMVSBAYES_PROGRAM_CACHE_DIR", str(tmp_path / "programs"))
    model_def, y = _hmm("poisson")
    family = get_family("hmm")
    recipe, container, counted = family.prefix_recipe(model_def, Series(y, "count", tuple(map(str, range(y.size)))))
    settings = SamplerSettings(sampler="numpyro", chains=2, draws=50, tune=50)
    outcomes = {n: sample_posterior(recipe, settings, 3, log_likelihood=False, data={container: counted(n)})
                for n in (20, 40)}
    assert [outcomes[n].compiled for n in (20, 40)] == ["built", "loaded"]
    for n, outcome in outcomes.items():
        assert outcome.tree["constant_data"][container].values.sum() == n
    # same seed and starts: the draws differ only because the counted points reached the programs
    assert not np.array_equal(outcomes[20].tree["posterior"]["rate"].values, outcomes[40].tree["posterior"]["rate"].values)
