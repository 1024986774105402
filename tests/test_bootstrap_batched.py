"""The batched bootstrap against its oracle, the per-replicate path (one :func:`emvsbayes.em.fit_em` per
replicate, today's code kept as ``route="per-replicate"``), and the batched EM loop against
:func:`emvsbayes.em.fit_em` fit by fit.

Both paths draw every replicate's data from the same generator calls, so the comparisons are replicate by
replicate (no Monte Carlo tolerance): equal to rounding. The one way they may part is EM's stopping
decision when a replicate's last gain lies within rounding of ``tol`` (the two paths sum the
log-likelihood in different orders); the fit-level tests then re-run the per-replicate fit for exactly
the batched number of iterations, which must land on the same parameters, and the bootstrap-level ones
allow one replicate whose ``converged`` differs (its values still equal to rounding).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from emvsbayes.coins import em as coin_em
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data import load_dataset, simulate_gaussian_mixture
from emvsbayes.em import fit_em, fit_em_batched, take_rows
from emvsbayes.errors import LikelihoodDecreasedError
from emvsbayes.gaussian import em as gaussian_em
from emvsbayes.gaussian import init as gaussian_init
from emvsbayes.gaussian.model import COVARIANCE_TYPES, GaussianMixtureModel
from emvsbayes.uncertainty import bootstrap as bootstrap_module
from emvsbayes.coins.family import coin_bootstrap
from emvsbayes.gaussian.family import gaussian_bootstrap

# The options the runners pass (spec defaults of the bundled 1-D and coin specs).
RUN_OPTIONS = {"tol": 1e-10, "param_tol": 1e-6, "max_iter": 2000}
# Rounding of two different summation orders, relative to max(1, |value|).
ROUNDING = 1e-10


def _assert_same_bootstrap(one, other):
    np.testing.assert_array_equal(one.failed, other.failed)
    assert one.messages == other.messages
    # EM's stopping decision: a replicate still gaining about tol per iteration when max_iter ends it may count as
    # converged in one summation order and not in the other (galaxies' replicate 11 at seed 42 on an AMD EPYC
    # machine: converged batched, not one at a time; w 3.9e-12 apart). Its values are held to rounding below like
    # every other replicate's; a run may have one such replicate, not more.
    assert np.count_nonzero(one.converged != other.converged) <= 1, (one.converged, other.converged)
    np.testing.assert_array_equal(one.perms, other.perms)
    for name in one.draws:
        a, b = one.draws[name], other.draws[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b) / np.maximum(1.0, np.abs(a)), initial=0.0) < ROUNDING, name
    np.testing.assert_allclose(one.loglik, other.loglik, rtol=ROUNDING, atol=0)


def _coin_reference(dataset: str, init) -> tuple[CoinMixture, np.ndarray, np.ndarray, CoinParams]:
    data = load_dataset(dataset)
    model = CoinMixture(2, "equal")
    reference = coin_em.fit(model, data.heads, data.tosses, CoinParams(init, [0.5, 0.5]), tol=1e-10).params
    return model, data.heads, data.tosses, reference


@pytest.mark.parametrize("kind", ["nonparametric", "parametric"])
@pytest.mark.parametrize(("dataset", "init"), [("coins_lecture", [0.5, 0.9]), ("coins_do_batzoglou", [0.6, 0.5])])
def test_coin_bootstrap_batched_equals_per_replicate(dataset, init, kind):
    model, heads, tosses, reference = _coin_reference(dataset, init)
    run = partial(coin_bootstrap, model, heads, tosses, reference, n_boot=30, seed=41, kind=kind,
                  em_options={"tol": 1e-10, "max_iter": 500})
    _assert_same_bootstrap(run(route="per-replicate"), run(route="batched"))


def _galaxies_reference():
    x = load_dataset("galaxies").x
    model = GaussianMixtureModel(3, "full")
    # Start from a split by velocity (the three groups the bundled spec finds), not a random one.
    init = gaussian_em.params_from_resp(model, x, np.eye(3)[np.digitize(x[:, 0], [15.0, 26.0])])
    return model, x, gaussian_em.fit(model, x, init, **RUN_OPTIONS).params


@pytest.mark.parametrize("kind", ["nonparametric", "parametric"])
def test_gaussian_bootstrap_batched_equals_per_replicate(kind):
    model, x, reference = _galaxies_reference()
    calls = []
    run = partial(gaussian_bootstrap, model, x, reference, n_boot=40, seed=42, kind=kind, em_options=RUN_OPTIONS)
    batched = run(route="batched", progress=lambda done, total: calls.append((done, total)))
    _assert_same_bootstrap(run(route="per-replicate"), batched)
    assert calls[-1] == (40, 40)
    # The default route for data this small is the batched one.
    auto = run()
    for name in batched.draws:
        np.testing.assert_array_equal(auto.draws[name], batched.draws[name])


def _resample_counts(seeds, n):
    counts, rows = [], []
    for seed in seeds:
        drawn = np.random.default_rng(seed).integers(0, n, size=n)  # the bootstrap's own call
        rows.append(drawn)
        counts.append(np.bincount(drawn, minlength=n).astype(float))
    return np.stack(counts), rows


def _assert_fits_agree(model, x, reference, batched, rows, options):
    """Each batched fit against :func:`gaussian_em.fit` of its resample; returns the replicates whose
    stopping iteration differed (compared then at the batched iteration count)."""
    flips = []
    for b, drawn in enumerate(rows):
        assert not batched.errors[b], batched.errors[b]
        single = gaussian_em.fit(model, x[drawn], reference, **options)
        if single.n_iter != batched.n_iter[b]:
            flips.append(b)
            n_iter = int(batched.n_iter[b])
            single = gaussian_em.fit(model, x[drawn], reference, **{**options, "min_iter": n_iter, "max_iter": n_iter})
        assert single.converged == batched.converged[b] or b in flips
        mine, theirs = take_rows(batched.params, b).variables(), single.params.variables()
        for name in theirs:
            gap = np.abs(mine[name] - theirs[name]) / np.maximum(1.0, np.abs(theirs[name]))
            assert np.max(gap) < ROUNDING, (b, name, np.max(gap))
        assert abs(batched.loglik[b] - single.loglik) < ROUNDING * max(1.0, abs(single.loglik))
    return flips


def test_gaussian_fits_equal_on_bundled_enzyme_data():
    # enzyme's fits stop on gains hovering at tol = 1e-10, where the two paths' rounding can decide
    # one iteration apart: those replicates are compared at the batched iteration count.
    x = load_dataset("enzyme").x
    model = GaussianMixtureModel(2, "full")
    init = gaussian_em.params_from_resp(model, x, np.eye(2)[(x[:, 0] > 0.6).astype(int)])
    reference = gaussian_em.fit(model, x, init, **RUN_OPTIONS).params
    counts, rows = _resample_counts(np.random.SeedSequence(43).spawn(30), len(x))
    sets = gaussian_em.GaussianSets(x[None], counts, gaussian_em.prepare(model, x).frame)
    batched = gaussian_em.fit_batched(model, sets, reference, 30, **RUN_OPTIONS)
    flips = _assert_fits_agree(model, x, reference, batched, rows, RUN_OPTIONS)
    assert len(flips) <= 3


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dim", [1, 3])
def test_gaussian_fits_equal_for_every_structure(covariance_type, dim):
    cov = np.stack([np.eye(3), [[0.5, 0.2, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.4]]])
    x = simulate_gaussian_mixture(120, [0.4, 0.6], [[0.0, 0.0, 0.0], [3.0, 1.0, 0.0]], cov,
                                  np.random.default_rng(44)).x[:, :dim] * 10.0 + 100.0
    model = GaussianMixtureModel(2, covariance_type)
    init = gaussian_em.params_from_resp(model, x, np.eye(2)[(x[:, 0] > 115.0).astype(int)])
    options = {"tol": 1e-8, "param_tol": 1e-6, "max_iter": 500}
    reference = gaussian_em.fit(model, x, init, **options).params
    counts, rows = _resample_counts(np.random.SeedSequence(45).spawn(12), len(x))
    sets = gaussian_em.GaussianSets(x[None], counts, gaussian_em.prepare(model, x).frame)
    batched = gaussian_em.fit_batched(model, sets, reference, 12, **options)
    assert _assert_fits_agree(model, x, reference, batched, rows, options) == []


def _coin_steps(heads, tosses, model):
    return partial(coin_em.e_step, model, heads, tosses), partial(coin_em.m_step, model)


@pytest.mark.parametrize("options", [{"tol": 1e-10, "max_iter": 500}, {"max_iter": 3}, {"min_iter": 40, "tol": 1e-4}])
def test_batched_loop_matches_fit_em_fit_by_fit(options):
    # The same stopping rule, iteration count and answer as fit_em, run by run: if fit_em's loop or its
    # rule changes without the batched loop, this fails.
    rng = np.random.default_rng(46)
    model = CoinMixture(2, "estimated")
    heads = rng.binomial(10, rng.choice([0.3, 0.8], size=(8, 12)))
    tosses = np.full(12, 10)
    init = CoinParams([0.4, 0.6], [0.5, 0.5])
    batched = coin_em.fit_batched(model, coin_em.CoinSets(heads, np.broadcast_to(tosses, heads.shape)), init, 8,
                                  **options)
    for b in range(8):
        single = fit_em(*_coin_steps(heads[b], tosses, model), init, **options)
        assert single.n_iter == batched.n_iter[b] and single.converged == batched.converged[b]
        np.testing.assert_allclose(batched.params.theta[b], single.params.theta, rtol=0, atol=1e-13)
        np.testing.assert_allclose(batched.loglik[b], single.loglik, rtol=1e-13)
        np.testing.assert_allclose(batched.init_loglik[b], single.trace[0].loglik, rtol=1e-13)


def test_batched_loop_fails_a_run_as_fit_em_raises():
    # A broken M-step (it moves replicate 1's theta away from the optimum at iteration 3) makes the
    # objective fall: fit_em raises; the batched loop records the same message for that run only.
    heads = np.array([[5, 9, 8, 4, 7], [6, 8, 9, 3, 7], [2, 9, 8, 5, 6]])
    tosses = np.full(5, 10)
    model = CoinMixture(2, "equal")
    init = CoinParams([0.6, 0.5], [0.5, 0.5])

    def broken_batched(rows, params):
        theta = np.array(params.theta)
        theta[rows == 1, 0] = 0.05
        return CoinParams(theta, params.w)

    def batched_m_step(stats, params, rows, iteration):
        new, slack, errors = coin_em.batched_m_step(model, stats, params, rows, iteration)
        return (broken_batched(rows, new) if iteration == 3 else new), slack, errors

    def single_m_step(stats, params, calls=[]):
        calls.append(1)
        new = coin_em.m_step(model, stats, params)
        return CoinParams([0.05, new.theta[1]], new.w) if len(calls) == 3 else new

    batched = fit_em_batched(partial(coin_em.batched_e_step, model, coin_em.CoinSets(heads, tosses[None])),
                             batched_m_step, init_batch(init, 3), tol=1e-10)
    assert [bool(e) for e in batched.errors] == [False, True, False]
    assert np.all(np.isnan(batched.params.theta[1])) and np.isnan(batched.loglik[1])
    with pytest.raises(LikelihoodDecreasedError) as raised:
        fit_em(partial(coin_em.e_step, model, heads[1], tosses), single_m_step, init, tol=1e-10)
    assert batched.errors[1].startswith("LikelihoodDecreasedError: EM objective fell from ")
    assert batched.errors[1].endswith("at iteration 3") and str(raised.value).endswith("at iteration 3")
    for b in (0, 2):
        single = fit_em(*_coin_steps(heads[b], tosses, model), init, tol=1e-10)
        np.testing.assert_allclose(batched.params.theta[b], single.params.theta, atol=1e-13)


def init_batch(params: CoinParams, n: int) -> CoinParams:
    return CoinParams(np.broadcast_to(params.theta, (n, 2)), np.broadcast_to(params.w, (n, 2)))


def test_failed_replicates_match_the_per_replicate_path():
    # Component 1 is three points; with reg_covar = 0 a resample that draws only one of them leaves it a
    # zero variance, which the M-step refuses (DegenerateFitError): the same replicates fail, with the
    # same message, on both routes.
    rng = np.random.default_rng(30)
    x = np.r_[rng.standard_normal(37), 10.0, 10.5, 11.0]
    model = GaussianMixtureModel(2, "full", reg_covar=0.0)
    init = gaussian_em.params_from_resp(model, x, np.eye(2)[(x > 5).astype(int)])
    params = gaussian_em.fit(model, x, init).params
    run = partial(gaussian_bootstrap, model, x, params, n_boot=30, seed=31)
    batched = run(route="batched")
    assert 0 < batched.n_failed < 30
    assert all("DegenerateFitError: component 1's covariance is not positive definite at iteration" in m
               for m in batched.messages)
    _assert_same_bootstrap(run(route="per-replicate"), batched)


def test_replicates_do_not_depend_on_batching(monkeypatch):
    model, heads, tosses, reference = _coin_reference("coins_lecture", [0.5, 0.9])
    run = partial(coin_bootstrap, model, heads, tosses, reference, seed=47, em_options={"tol": 1e-10})
    whole = run(n_boot=30)
    # Groups of 4 replicates instead of one batch; and replicate b is the same in a longer bootstrap.
    monkeypatch.setattr(bootstrap_module, "BATCH_VALUES", 4 * len(heads) * model.n_components)
    grouped = run(n_boot=30)
    longer = run(n_boot=50)
    for name in whole.draws:
        np.testing.assert_array_equal(whole.draws[name], grouped.draws[name])
        np.testing.assert_array_equal(whole.draws[name], longer.draws[name][:30])


def test_batched_route_refuses_options_it_cannot_run():
    model, heads, tosses, reference = _coin_reference("coins_lecture", [0.5, 0.9])
    with pytest.raises(ValueError, match="batched route runs soft EM"):
        coin_bootstrap(model, heads, tosses, reference, n_boot=4, seed=1, route="batched", em_options={"kind": "hard"})
    # route="auto" takes hard EM one replicate at a time.
    hard = coin_bootstrap(model, heads, tosses, reference, n_boot=4, seed=1, em_options={"kind": "hard"})
    assert hard.n_boot == 4


def test_batched_restarts_equal_fit_restarts():
    # Restarts are the other many-small-fits case: one data set, a start per fit.
    x = load_dataset("galaxies").x
    model = GaussianMixtureModel(3, "full")
    inits = gaussian_init.initial_params_restarts(model, x, 8, "k-means++", np.random.default_rng(48))
    options = {"tol": 1e-8, "param_tol": 1e-6, "max_iter": 500}
    single = gaussian_em.fit_restarts(model, x, inits, **options)
    sets = gaussian_em.GaussianSets(x[None], None, gaussian_em.prepare(model, x).frame)
    batched = gaussian_em.fit_batched(model, sets, inits, len(inits), **options)
    for b, fit in enumerate(single.fits):
        assert fit.n_iter == batched.n_iter[b] and fit.converged == batched.converged[b]
        for name, value in fit.params.variables().items():
            np.testing.assert_allclose(take_rows(batched.params, b).variables()[name], value, rtol=ROUNDING, atol=ROUNDING)
        np.testing.assert_allclose(batched.loglik[b], fit.loglik, rtol=ROUNDING)
        np.testing.assert_allclose(batched.init_loglik[b], fit.trace[0].loglik, rtol=ROUNDING)



# --- hidden Markov models: the parametric bootstrap's simulated series refitted together -------------------------


def _hmm_reference(emission: str, initial: str):
    """A bundled series (earthquake counts, Old Faithful's waiting times) and its Baum-Welch answer from a seeded
    random start, as the bundled HMM specs fit them (tol 1e-10)."""
    from emvsbayes.hmm import em as hmm_em
    from emvsbayes.hmm.model import HiddenMarkovModel

    y = (load_dataset("earthquakes").counts.astype(float) if emission == "poisson"
         else load_dataset("old_faithful").x[:, 0])  # eruption lengths, in the order of the eruptions
    model = HiddenMarkovModel(3 if emission == "poisson" else 2, emission, initial)
    start = hmm_em.random_start(model, y, np.random.default_rng(3))
    return model, y, hmm_em.fit(model, y, start, tol=1e-10, max_iter=5000).params


@pytest.mark.parametrize(("emission", "initial"), [("poisson", "stationary"), ("gaussian", "estimated")])
def test_hmm_bootstrap_batched_equals_per_replicate(emission, initial):
    from emvsbayes.hmm.family import FAMILY as HMM
    from emvsbayes.hmm.series import Series

    model, y, reference = _hmm_reference(emission, initial)
    series = Series(y=y, column="y", time=tuple(str(t) for t in range(y.size)), source="test")
    run = partial(bootstrap_module.run_bootstrap, HMM, model, series, reference, n_boot=16, seed=5, kind="parametric",
                  n_workers=1, em_options={"tol": 1e-10, "max_iter": 5000})
    batched = run(route="batched")
    assert batched.n_failed == 0
    # The same compiled E-step pass and M-step on the same numbers: every replicate as its own fit gives it.
    _assert_same_bootstrap(run(route="per-replicate"), batched)
    # The default route for a series this short is the batched one.
    auto = run()
    for name in batched.draws:
        np.testing.assert_array_equal(auto.draws[name], batched.draws[name])


def test_hmm_batched_fit_fails_a_series_as_fit_raises():
    # A Gaussian HMM whose second series is one value but for two points: a state's sd collapses (fit raises
    # DegenerateFitError); the batch records that message for that series and fits the others as fit does.
    from emvsbayes.errors import DegenerateFitError
    from emvsbayes.hmm import em as hmm_em
    from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams

    model = HiddenMarkovModel(2, "gaussian", "stationary")
    rng = np.random.default_rng(0)
    good = np.concatenate([rng.normal(0, 1, 40), rng.normal(5, 1, 40)])
    flat = np.full(80, 3.0)
    flat[[10, 50]] = [2.0, 9.0]
    ys = np.stack([good, flat, good[::-1]])
    start = HMMParams([0.5, 0.5], [[0.9, 0.1], [0.1, 0.9]], mu=[0.5, 4.0], sigma=[1.0, 1.0])
    batched = hmm_em.fit_batched(model, ys, start, tol=1e-10, max_iter=500)
    with pytest.raises(DegenerateFitError) as excinfo:
        hmm_em.fit(model, flat, start, tol=1e-10, max_iter=500)
    assert batched.errors[1] == f"DegenerateFitError: {excinfo.value}"
    for row in (0, 2):
        single = hmm_em.fit(model, ys[row], start, tol=1e-10, max_iter=500)
        assert not batched.errors[row] and batched.n_iter[row] == single.n_iter
        for name, value in single.params.variables().items():
            np.testing.assert_allclose(take_rows(batched.params, row).variables()[name], value, rtol=ROUNDING, atol=0)


def test_compiled_stationary_update_is_the_numpy_reference():
    # At E-step statistics of the bundled earthquake series along Baum-Welch from random starts, the compiled
    # update (Newton in numba) and the numpy reference reach the same maximiser, to rounding.
    from emvsbayes.hmm import em as hmm_em
    from emvsbayes.hmm.model import HiddenMarkovModel

    y = load_dataset("earthquakes").counts.astype(float)
    rng = np.random.default_rng(11)
    for k in (2, 3, 4):
        model = HiddenMarkovModel(k, "poisson", "stationary")
        params = hmm_em.random_start(model, y, rng)
        for _ in range(15):
            stats, _ = hmm_em.e_step(model, y, params, keep_gamma=False)
            compiled = hmm_em._stationary_transition(model, stats, params.transition)
            reference = hmm_em._stationary_transition_reference(model, stats, params.transition)
            np.testing.assert_allclose(compiled, reference, rtol=0, atol=1e-9)
            assert (hmm_em._expected_transition_loglik(model, compiled, stats)
                    >= hmm_em._expected_transition_loglik(model, reference, stats) - 1e-12 * stats.xi_sum.sum())
            params = hmm_em.m_step(model, y, stats, params)
