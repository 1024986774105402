"""Coin-mixture EM against values computed independently here, and against the published example."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from emvsbayes.coins import em
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.em import fit_em
from emvsbayes.errors import LikelihoodDecreasedError

LECTURE_HEADS = np.array([5, 7, 8, 9, 4])
PAPER_HEADS = np.array([5, 9, 8, 4, 7])
TEN = np.full(5, 10)


def test_hard_em_first_step_from_counts():
    # From (0.5, 0.9) each set goes to the coin under which its heads are likelier: 5 and 7 and 4 heads
    # to A, 8 and 9 to B -> the lesson's guess {A, A, B, B, A}; then theta is a plain ratio of counts.
    model = CoinMixture(2, weights="equal")
    fit = em.fit(model, LECTURE_HEADS, TEN, CoinParams([0.5, 0.9], [0.5, 0.5]), kind="hard")
    first = fit.trace[0].stats
    assert np.array_equal(np.argmax(first.resp, axis=1), [0, 0, 1, 1, 0])
    np.testing.assert_allclose(fit.trace[1].params.theta, [(5 + 7 + 4) / 30, (8 + 9) / 20], rtol=0, atol=1e-15)
    assert fit.converged and fit.n_iter == 2  # the assignment does not change again


def test_one_soft_step_written_out():
    model = CoinMixture(2, weights="equal")
    theta = np.array([0.6, 0.5])
    fit = em.fit(model, PAPER_HEADS, TEN, CoinParams(theta, [0.5, 0.5]), max_iter=1, tol=0, param_tol=0)
    like = np.array([[stats.binom.pmf(h, 10, t) for t in theta] for h in PAPER_HEADS])
    resp = like / like.sum(axis=1, keepdims=True)
    heads = resp.T @ PAPER_HEADS
    tails = resp.T @ (10 - PAPER_HEADS)
    np.testing.assert_allclose(fit.trace[0].stats.resp, resp, rtol=1e-12)
    np.testing.assert_allclose(fit.trace[1].params.theta, heads / (heads + tails), rtol=1e-12)
    np.testing.assert_allclose(fit.trace[0].loglik, np.log(0.5 * like.sum(axis=1)).sum(), rtol=1e-12)
    # The paper's Figure 1 prints the first E-step's expected counts: coin A made about 21.3 H and 8.6 T.
    np.testing.assert_allclose([heads[0], tails[0]], [21.3, 8.6], atol=0.05)


def test_paper_values_after_ten_iterations():
    # Do & Batzoglou (2008), Figure 1: after 10 iterations theta_A ~ 0.80 and theta_B ~ 0.52.
    fit = em.fit(CoinMixture(2), PAPER_HEADS, TEN, CoinParams([0.6, 0.5], [0.5, 0.5]), max_iter=10, tol=0, param_tol=0)
    np.testing.assert_allclose(fit.trace[10].params.theta, [0.80, 0.52], atol=0.005)


@settings(max_examples=60, deadline=None)
@given(
    heads_tosses=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30)), min_size=2, max_size=25),
    start=st.lists(st.floats(0.01, 0.99), min_size=3, max_size=3),
    weights=st.sampled_from(["equal", "estimated"]),
    kind=st.sampled_from(["soft", "hard"]),
)
def test_objective_never_decreases(heads_tosses, start, weights, kind):
    tosses = np.array([n for _, n in heads_tosses])
    heads = np.array([min(h, n) for h, n in heads_tosses])
    model = CoinMixture(3, weights=weights)
    fit = em.fit(model, heads, tosses, CoinParams(start, model.equal_weights), kind=kind, max_iter=200)
    path = fit.loglik_path
    assert np.all(np.isfinite(path))
    assert np.all(np.diff(path) >= -1e-10 * np.abs(path[:-1]).clip(1))
    assert np.all((fit.params.theta >= 0) & (fit.params.theta <= 1))
    np.testing.assert_allclose(fit.params.w.sum(), 1.0)


def test_relabelling_leaves_likelihood_unchanged():
    model = CoinMixture(2, weights="estimated")
    params = CoinParams([0.3, 0.8], [0.4, 0.6])
    assert model.loglik(params, PAPER_HEADS, TEN) == pytest.approx(model.loglik(params.permuted([1, 0]), PAPER_HEADS, TEN), rel=1e-14)
    a = em.fit(model, PAPER_HEADS, TEN, params)
    b = em.fit(model, PAPER_HEADS, TEN, params.permuted([1, 0]))
    np.testing.assert_allclose(a.params.theta, b.params.theta[::-1], rtol=1e-10)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12)


def test_estimated_weights_update_is_share_of_sets():
    model = CoinMixture(2, weights="estimated")
    fit = em.fit(model, PAPER_HEADS, TEN, CoinParams([0.6, 0.5], [0.5, 0.5]), max_iter=1, tol=0, param_tol=0)
    np.testing.assert_allclose(fit.trace[1].params.w, fit.trace[0].stats.resp.mean(axis=0), rtol=1e-12)


def test_a_decrease_is_an_error_not_convergence():
    model = CoinMixture(2)

    def bad_m_step(stats, params):  # moves away from the optimum on purpose
        return CoinParams(np.clip(params.theta + np.array([-0.2, 0.2]), 0.01, 0.99), params.w)

    from functools import partial

    with pytest.raises(LikelihoodDecreasedError):
        fit_em(partial(em.e_step, model, PAPER_HEADS, TEN), bad_m_step, CoinParams([0.8, 0.5], [0.5, 0.5]))


def test_empty_coin_keeps_its_theta_in_hard_em():
    # Every set is likelier under coin 0, so coin 1 gets no tosses: its update would be 0/0.
    model = CoinMixture(2)
    fit = em.fit(model, np.array([5, 6, 4]), np.full(3, 10), CoinParams([0.5, 0.99], [0.5, 0.5]), kind="hard")
    assert fit.params.theta[1] == 0.99
    assert np.isfinite(fit.loglik)


def test_restarts_keep_every_outcome_and_pick_the_best():
    model = CoinMixture(2)
    inits = em.random_inits(model, 6, np.random.default_rng(3))
    result = em.fit_restarts(model, PAPER_HEADS, TEN, inits)
    assert len(result.fits) == 6
    assert result.best.loglik == max(f.loglik for f in result.fits)
    # Random restarts of a symmetric model find the same optimum in both labellings.
    found = {tuple(np.round(np.sort(f.params.theta), 4)) for f in result.fits if f.converged}
    assert (0.5196, 0.7968) in found


def test_a_start_where_the_data_are_impossible_is_refused():
    """theta = (0, 1) against a set with both heads and tails: log-likelihood -inf and NaN responsibilities,
    which EM reported as a result (issue 22). A start on one boundary that the data allow still runs."""
    model = CoinMixture(2)
    heads, tosses = np.array([5, 9, 0]), np.full(3, 10)
    with pytest.raises(ValueError, match=r"log-likelihood at the start theta = \[0\.0, 1\.0\] is -inf"):
        em.fit(model, heads, tosses, CoinParams([0.0, 1.0], [0.5, 0.5]))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        em.fit_restarts(model, heads, tosses, [CoinParams([0.3, 0.6], [0.5, 0.5]), CoinParams([1.0, 0.0], [0.5, 0.5])])
    fit = em.fit(model, heads, tosses, CoinParams([0.0, 0.5], [0.5, 0.5]))
    assert np.isfinite(fit.loglik) and np.all(np.isfinite(fit.params.theta))


def _logsumexp_cases():
    """Deterministic arrays covering what the E-steps feed logsumexp and its edges: ties at the maximum,
    rows of -inf, +inf, NaN, magnitudes where exp over- and underflows, integer input, 1-D to 3-D."""
    rng = np.random.default_rng(20261203)
    cases = [np.array([[1.0, 1.0], [3.0, 3.0]]), np.array([[-np.inf, -np.inf], [0.0, -np.inf]]),
             np.array([[np.inf, 1.0], [np.nan, 0.0]]), np.array([[800.0, 799.0], [-800.0, -801.0]]),
             np.array([[1, 2], [3, 3]]), np.array([2.5]), np.array([[np.inf, np.inf], [-np.inf, np.inf]])]
    for shape in [(5, 2), (5, 3), (1, 1), (7,), (3, 4, 2), (200, 4)]:
        for trial in range(60):
            a = rng.normal(scale=(1.0, 50.0, 800.0)[trial % 3], size=shape)
            u = rng.random(shape)
            if trial % 4:
                a[u < 0.1], a[(u > 0.1) & (u < 0.13)], a[(u > 0.13) & (u < 0.15)] = -np.inf, np.inf, np.nan
            if trial % 7 == 0:
                a[...] = a.flat[0]
            if trial % 11 == 0:
                a = np.round(a)
            cases.append(a)
    return cases


def test_logsumexp_is_scipys_bit_for_bit():
    # The E-steps use emvsbayes.em.logsumexp (SciPy's algorithm in plain numpy, 5x faster per call) so that
    # every number of a run stays what SciPy's gave: the same bytes, shape and type for every case and axis.
    from scipy.special import logsumexp as scipy_logsumexp

    from emvsbayes.em import logsumexp

    compared = 0
    for a in _logsumexp_cases():
        for axis in (None, 0, -1, (0,), *((1,) if a.ndim > 1 else ())):
            for keepdims in (False, True):
                want, got = scipy_logsumexp(a, axis=axis, keepdims=keepdims), logsumexp(a, axis=axis, keepdims=keepdims)
                assert type(got) is type(want) and np.shape(got) == np.shape(want), (a, axis, keepdims)
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), (a, axis, keepdims, got, want)
                compared += 1
    assert compared > 3000


def test_coin_e_step_uses_the_fast_logsumexp():
    # The coin E-step and log-likelihood run thousands of times per run (model choice's restarts); SciPy's
    # logsumexp spent ~50 us per call there in array-namespace dispatch (issue 21 item 2).
    import emvsbayes.coins.model as coin_model
    from emvsbayes import em as em_module

    assert em.logsumexp is em_module.logsumexp and coin_model.logsumexp is em_module.logsumexp
