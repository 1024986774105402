"""The Poisson mixture family against oracles: a direct maximisation of the likelihood, scipy.stats densities,
finite differences, and recovery of a simulated truth.

Published maximum-likelihood values for the earthquake counts exist (Zucchini & MacDonald 2009, ch. 1:
-log L = 391.9, 360.4, 356.8, 356.7 for K = 1..4); the tests do not copy them but compute the optimum
independently (scipy.optimize from many starts, and a grid for K = 2), and the EM answer must match that.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import logsumexp

from conftest import ORACLE_MODE
from emvsbayes.data import CountData, load_counts_csv, load_dataset
from emvsbayes.errors import UserError
from emvsbayes.poisson import em
from emvsbayes.poisson.family import FAMILY
from emvsbayes.poisson.model import PoissonMixture, PoissonParams, default_rate_prior


@pytest.fixture(scope="module")
def quakes() -> CountData:
    return load_dataset("earthquakes")


def scipy_loglik(w, rate, x) -> float:
    """The mixture's log-likelihood written independently of the package: scipy.stats' Poisson pmf."""
    with np.errstate(divide="ignore"):
        return float(logsumexp(np.log(w)[None, :] + stats.poisson.logpmf(np.asarray(x)[:, None], rate[None, :]),
                               axis=1).sum())


def direct_maximum(x, k: int, n_starts: int, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """The best of ``n_starts`` BFGS maximisations of the scipy log-likelihood over (log rates, weight
    log-ratios), started at rates drawn uniformly over the counts' range and Dirichlet(1) weights.

    The score is written out (d/d log rate_k = sum_i r_ik (x_i - rate_k), d/d log(w_j/w_K) = sum_i (r_ij - w_j)
    with r the posterior membership) so that BFGS need not difference numerically."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)

    def unpack(phi):
        z = np.append(phi[k:], 0.0)
        return np.exp(z - logsumexp(z)), np.exp(phi[:k])

    def neg_and_score(phi):
        w, rate = unpack(phi)
        log_joint = np.log(w)[None, :] + stats.poisson.logpmf(x[:, None], rate[None, :])
        log_norm = logsumexp(log_joint, axis=1, keepdims=True)
        r = np.exp(log_joint - log_norm)
        score = np.concatenate([(r * (x[:, None] - rate[None, :])).sum(0), (r - w[None, :]).sum(0)[:-1]])
        return -float(log_norm.sum()), -score

    best = (-np.inf, None, None)
    for _ in range(n_starts):
        w0 = rng.dirichlet(np.ones(k))
        phi0 = np.concatenate([np.log(rng.uniform(x.min() + 0.5, x.max(), size=k)), np.log(w0[:-1] / w0[-1])])
        res = optimize.minimize(neg_and_score, phi0, jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 5000})
        if -res.fun > best[0]:
            w, rate = unpack(res.x)
            order = np.argsort(rate)
            best = (-res.fun, w[order], rate[order])
    return best


def em_best(x, k: int, n_starts: int = 10, seed: int = 0, kind: str = "soft"):
    model = PoissonMixture(k)
    fits = [em.fit(model, x, init, kind=kind, tol=1e-10, max_iter=10000)
            for init in em.random_inits(model, x, n_starts, np.random.default_rng(seed))]
    return max(fits, key=lambda fit: fit.loglik), fits


# --- the EM answer is the maximum-likelihood estimate --------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_em_reaches_the_maximum_found_by_direct_optimisation(quakes, k):
    x = quakes.counts
    best, _ = em_best(x, k)
    # BFGS from 40 random starts on the same likelihood written with scipy.stats: an independent search.
    top, w, rate = direct_maximum(x, k, n_starts=40 if k > 1 else 3, seed=k)
    assert best.loglik == pytest.approx(top, abs=1e-6)
    assert best.loglik >= top - 1e-7  # EM is not worse than the direct search
    order = np.argsort(best.params.rate)
    if k <= 3:
        # A strict optimum: parameters agree to the optimiser's precision (K = 4 lies on a flat ridge, where
        # log-likelihoods equal to 1e-6 leave parameters differing in the third digit, so only it is compared).
        np.testing.assert_allclose(best.params.rate[order], rate, rtol=1e-4)
        np.testing.assert_allclose(best.params.w[order], w, atol=1e-4)
    if k == 1:
        assert best.params.rate[0] == pytest.approx(x.mean(), rel=1e-12)  # closed form: the mean count


def test_em_two_components_against_a_brute_force_grid(quakes):
    """For K = 2, the profile likelihood over a grid of (rate_0 < rate_1), step 0.25, the weight maximised at
    each grid point: the log-likelihood is concave in w, so the root of its derivative (decreasing in w) found
    by bisection is the exact maximiser. The grid's best cell holds EM's answer and its value is at most EM's."""
    x = quakes.counts
    best, _ = em_best(x, 2)
    grid = np.linspace(5.0, 40.0, 141)
    i, j = np.triu_indices(grid.size, k=1)
    pmf = stats.poisson.pmf(x[:, None], grid[None, :])  # (N, G)
    a, b = pmf[:, i], pmf[:, j]  # (N, pairs)
    lo, hi = np.zeros(i.size), np.ones(i.size)
    for _ in range(60):  # the bracket shrinks to 2**-60
        mid = (lo + hi) / 2
        slope = ((a - b) / (mid * a + (1 - mid) * b)).sum(axis=0)
        lo, hi = np.where(slope > 0, mid, lo), np.where(slope > 0, hi, mid)
    w = (lo + hi) / 2
    profile = np.log(w * a + (1 - w) * b).sum(axis=0)
    top = int(np.argmax(profile))
    assert profile[top] <= best.loglik + 1e-9
    rate = np.sort(best.params.rate)
    assert np.all(np.abs(rate - np.array([grid[i[top]], grid[j[top]]])) <= 0.25)
    assert best.loglik - profile[top] < 0.05  # within a grid step's worth of likelihood


# --- invariants of EM ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_objective_never_falls(quakes, kind):
    x = quakes.counts
    _, fits = em_best(x, 3, n_starts=10, seed=5, kind=kind)
    for fit in fits:
        path = fit.loglik_path
        assert np.all(np.diff(path) >= -1e-10 * np.abs(path[1:])), path
        assert len(path) > 2  # EM moved: the check is not vacuous


def test_hard_em_against_soft_em(quakes):
    x = quakes.counts
    model = PoissonMixture(2)
    soft, _ = em_best(x, 2, n_starts=10, kind="soft")
    hard, _ = em_best(x, 2, n_starts=10, kind="hard")
    # The classification log-likelihood is a lower bound of the observed one at the same parameters
    # (max_k <= logsumexp_k), and soft EM's optimum is at least the observed log-likelihood there.
    observed_at_hard = model.loglik(hard.params, x)
    assert hard.loglik <= observed_at_hard
    assert soft.loglik >= observed_at_hard - 1e-9
    # Hard EM's fixed point: each count goes to its most probable component, each rate is the mean of its
    # counts and each weight the share of its rows.
    labels = np.argmax(model.log_joint(hard.params, x), axis=1)
    for j in range(2):
        assert hard.params.rate[j] == pytest.approx(x[labels == j].mean(), rel=1e-12)
        assert hard.params.w[j] == pytest.approx(np.mean(labels == j), rel=1e-12)
    # The hard E-step's statistics are one-hot.
    stats_, objective = em.hard_e_step(model, x, hard.params)
    np.testing.assert_array_equal(stats_.resp, np.eye(2)[labels])
    assert objective == pytest.approx(model.log_joint(hard.params, x).max(axis=1).sum(), rel=1e-14)


def test_e_step_against_scipy_and_m_step_closed_form(quakes):
    x = quakes.counts
    model = PoissonMixture(3)
    params = PoissonParams([0.2, 0.5, 0.3], [11.0, 19.0, 30.0])
    stats_, loglik = em.e_step(model, x, params)
    assert loglik == pytest.approx(scipy_loglik(params.w, params.rate, x), rel=1e-13)
    joint = params.w[None, :] * stats.poisson.pmf(x[:, None], params.rate[None, :])
    resp = joint / joint.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(stats_.resp, resp, rtol=1e-12)
    new = em.m_step(model, stats_, params)
    np.testing.assert_allclose(new.rate, (resp * x[:, None]).sum(0) / resp.sum(0), rtol=1e-12)
    np.testing.assert_allclose(new.w, resp.mean(0), rtol=1e-12)


def test_empty_component_keeps_its_rate():
    model = PoissonMixture(2)
    x = np.array([0, 1, 2, 1])
    params = PoissonParams([1.0, 0.0], [1.0, 50.0])
    stats_, _ = em.e_step(model, x, params)
    new = em.m_step(model, stats_, params)
    assert new.rate[1] == 50.0 and new.w[1] == 0.0


def test_batched_fits_equal_single_fits(quakes):
    x = quakes.counts
    model = PoissonMixture(3)
    inits = em.random_inits(model, x, 8, np.random.default_rng(3))
    batch = FAMILY.fit_batched(model, quakes, inits, len(inits), tol=1e-10, max_iter=5000)
    for row, init in enumerate(inits):
        single = em.fit(model, x, init, tol=1e-10, max_iter=5000)
        assert batch.loglik[row] == pytest.approx(single.loglik, abs=1e-9)
        assert batch.n_iter[row] == single.n_iter
        np.testing.assert_allclose(batch.params.rate[row], single.params.rate, rtol=1e-8)
    # Row weights: a resample given as multiplicities is the same fit as the resampled rows themselves.
    rng = np.random.default_rng(9)
    rows = rng.integers(x.size, size=x.size)
    weights = np.bincount(rows, minlength=x.size)[None, :]
    weighted = FAMILY.fit_batched(model, quakes, inits[0], 1, row_weights=weights, tol=1e-10, max_iter=5000)
    direct = em.fit(model, x[rows], inits[0], tol=1e-10, max_iter=5000)
    assert weighted.loglik[0] == pytest.approx(direct.loglik, abs=1e-8)
    # One data set per fit (a parametric bootstrap): each row is the single fit of its own data.
    truth = PoissonParams([0.5, 0.5], [5.0, 20.0])
    sims = [FAMILY.simulate(PoissonMixture(2), truth, 200, child) for child in np.random.default_rng(2).spawn(3)]
    per_fit = FAMILY.fit_batched(PoissonMixture(2), sims, truth, 3, tol=1e-10, max_iter=5000)
    for row, sim in enumerate(sims):
        single = FAMILY.fit(PoissonMixture(2), sim, truth, tol=1e-10, max_iter=5000)
        assert per_fit.loglik[row] == pytest.approx(single.loglik, abs=1e-9)
        np.testing.assert_allclose(per_fit.params.rate[row], single.params.rate, rtol=1e-8)


def test_starts_are_reproducible_and_inside_the_data(quakes):
    model = PoissonMixture(3)
    first, policy = FAMILY.starts(model, quakes, {"init": "auto", "n_init": 7}, np.random.default_rng(11))
    second, _ = FAMILY.starts(model, quakes, {"init": "k-means++"}, np.random.default_rng(11))
    assert (policy.min_starts, policy.max_starts, policy.reach_best) == (7, 7, 1)  # n_init starts, every one
    a = [first() for _ in range(5)]
    b = [second() for _ in range(3)]
    for one, other in zip(a, b):
        np.testing.assert_array_equal(one.rate, other.rate)
    for start in a:
        assert np.all((start.rate >= quakes.counts.min() * 0.99) & (start.rate <= quakes.counts.max() * 1.01))
        assert len(np.unique(start.rate)) == 3
    given_start, given_policy = FAMILY.starts(model, quakes, {"init": {"rate": [10, 20, 30], "w": [1, 2, 1]}},
                                              np.random.default_rng(0))
    given = given_start()
    assert given_policy.max_starts == 1
    np.testing.assert_allclose(given.w, [0.25, 0.5, 0.25])


# --- the symbolic log-likelihood, the observed information ---------------------------------------


def _compiled(model, data):
    import pytensor
    from pytensor.gradient import grad, jacobian

    from pytensor.compile.mode import Mode

    phi, loglik = FAMILY.symbolic_loglik(model, data)
    gradient = grad(loglik, phi)
    hessian = jacobian(gradient, phi, vectorize=True)
    jac = jacobian(FAMILY.symbolic_natural(model, phi), phi, vectorize=True)
    # The Python linker, as emvsbayes.uncertainty compiles its Hessians: a cold C compile of these small
    # graphs takes minutes on a busy 2-core machine, the Python one a second.
    with pytensor.config.change_flags(cxx=""):
        return pytensor.function([phi], [loglik, gradient, hessian, jac],
                                 mode=Mode(linker="py", optimizer="fast_compile"))


def test_symbolic_loglik_equals_numpy_loglik(quakes):
    rng = np.random.default_rng(1)
    for k in (1, 3):
        model = PoissonMixture(k)
        fn = _compiled(model, quakes)
        for _ in range(3):
            params = PoissonParams(rng.dirichlet(np.ones(k)), rng.uniform(5, 40, size=k))
            phi = FAMILY.to_unconstrained(model, params)
            back = FAMILY.from_unconstrained(model, quakes, phi)
            np.testing.assert_allclose(back.w, params.w, rtol=1e-12)
            np.testing.assert_allclose(back.rate, params.rate, rtol=1e-12)
            assert float(fn(phi)[0]) == pytest.approx(scipy_loglik(params.w, params.rate, quakes.counts), rel=1e-12)
            assert float(fn(phi)[0]) == pytest.approx(model.loglik(params, quakes.counts), rel=1e-12)
        assert len(FAMILY.unconstrained_names(model)) == FAMILY.n_free_parameters(model) == 2 * k - 1


def test_hessian_standard_errors_match_finite_differences(quakes):
    x = quakes.counts
    model = PoissonMixture(2)
    best, _ = em_best(x, 2)
    fn = _compiled(model, quakes)
    phi_hat = FAMILY.to_unconstrained(model, best.params)
    _, gradient, hessian, jac = fn(phi_hat)
    assert np.max(np.abs(gradient)) < 1e-4  # a stationary point

    def loglik(phi):
        params = FAMILY.from_unconstrained(model, quakes, phi)
        return scipy_loglik(params.w, params.rate, x)

    # Central second differences of the scipy log-likelihood, step h: truncation error O(h^2) ~ 1e-6 relative
    # with h = 1e-3; rounding ~ eps * |loglik| / h^2 ~ 1e-7.
    h, p = 1e-3, phi_hat.size
    fd = np.empty((p, p))
    for i in range(p):
        for j in range(p):
            ei, ej = np.eye(p)[i] * h, np.eye(p)[j] * h
            fd[i, j] = (loglik(phi_hat + ei + ej) - loglik(phi_hat + ei - ej) - loglik(phi_hat - ei + ej)
                        + loglik(phi_hat - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(hessian, fd, rtol=1e-4, atol=1e-4)

    # Delta-method standard errors of (w, rate): from the symbolic Hessian and Jacobian, and from the
    # finite-difference Hessian with a finite-difference Jacobian of the natural variables.
    def natural(phi):
        params = FAMILY.from_unconstrained(model, quakes, phi)
        return np.concatenate([params.w, params.rate])

    fd_jac = np.stack([(natural(phi_hat + np.eye(p)[i] * 1e-6) - natural(phi_hat - np.eye(p)[i] * 1e-6)) / 2e-6
                       for i in range(p)], axis=1)
    np.testing.assert_allclose(jac, fd_jac, rtol=1e-6, atol=1e-8)
    se = np.sqrt(np.diag(jac @ np.linalg.inv(-hessian) @ jac.T))
    se_fd = np.sqrt(np.diag(fd_jac @ np.linalg.inv(-fd) @ fd_jac.T))
    np.testing.assert_allclose(se, se_fd, rtol=1e-3)
    assert np.all(se > 0)


def test_simulate_then_fit_recovers_the_truth_within_standard_errors():
    """N = 1500 counts from rates (3, 12, 30) with weights (0.3, 0.5, 0.2): each EM estimate within 4 of its
    Hessian standard errors of the truth. Under the estimator's normal approximation a parameter misses that
    band with probability 6e-5, so the 5 free parameters fail together less than 4e-4 of seeds; the seed is
    fixed, so the test is deterministic."""
    truth = PoissonParams([0.3, 0.5, 0.2], [3.0, 12.0, 30.0])
    model = PoissonMixture(3)
    data = FAMILY.simulate(model, truth, 1500, np.random.default_rng(2024))
    assert data.counts.dtype == np.int64 and np.all(np.bincount(data.true_component) > 0)
    next_start, _ = FAMILY.starts(model, data, {"init": "auto"}, np.random.default_rng(1))
    best = max((FAMILY.fit(model, data, next_start(), tol=1e-10, max_iter=5000) for _ in range(5)),
               key=lambda fit: fit.loglik)
    order = np.argsort(best.params.rate)
    estimate = best.params.permuted(order)
    fn = _compiled(model, data)
    _, _, hessian, jac = fn(FAMILY.to_unconstrained(model, estimate))
    se = np.sqrt(np.diag(jac @ np.linalg.inv(-hessian) @ jac.T))
    error = np.concatenate([estimate.w - truth.w, estimate.rate - truth.rate])
    assert np.all(np.abs(error) < 4 * se), (error, se)
    assert np.all(se < 0.5 * np.concatenate([truth.w, truth.rate]))  # the band is informative


def test_resample_and_prior_draw(quakes):
    rng = np.random.default_rng(4)
    again = FAMILY.resample(quakes, rng)
    assert again.n_rows == quakes.n_rows and set(again.counts) <= set(quakes.counts)
    model = PoissonMixture(3, rate_prior=(2.0, 0.1), ordered=True)
    draws = [FAMILY.prior_draw(model, rng) for _ in range(4000)]
    rates = np.stack([d.rate for d in draws])
    assert np.all(np.diff(rates, axis=1) >= 0)
    # The mean of all rates (sorted or not) is the Gamma's mean 20, sd 14.1: 12000 draws give a Monte Carlo
    # standard error of 0.13, and 4 of them bound a false failure at 6e-5.
    assert abs(rates.mean() - 20.0) < 4 * 14.142 / np.sqrt(rates.size)
    w = np.stack([d.w for d in draws])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


# --- the PyMC model ------------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [False, True])
def test_pymc_logp_equals_hand_written_log_prior_plus_loglik(quakes, ordered):
    from pymc.initial_point import make_initial_point_fn

    x = quakes.counts
    model_def = PoissonMixture(3, rate_prior=(2.0, 0.1), w_concentration=1.5, ordered=ordered)
    params = PoissonParams([0.3, 0.5, 0.2], [31.0, 12.5, 19.0])
    pm_model = FAMILY.pymc_model(model_def, quakes)
    start = FAMILY.initvals(model_def, [params])[0]
    point = make_initial_point_fn(model=pm_model, overrides=start, jitter_rvs=set(), return_transformed=True)(0)
    logp = float(pm_model.compile_logp(jacobian=False, mode=ORACLE_MODE)(point))
    w, rate = start["w"], start["rate"]
    if ordered:
        np.testing.assert_array_equal(rate, np.sort(params.rate))
    hand = (stats.dirichlet(np.full(3, 1.5)).logpdf(w) + stats.gamma(2.0, scale=10.0).logpdf(rate).sum()
            + scipy_loglik(w, rate, x))
    assert logp == pytest.approx(hand, rel=1e-12)
    # ... and the family's own log prior plus its log-likelihood
    start_params = PoissonParams(w, rate)
    assert logp == pytest.approx(FAMILY.log_prior(model_def, start_params) + model_def.loglik(start_params, x), rel=1e-12)
    if ordered:
        assert FAMILY.log_prior(model_def, params) == -np.inf  # unsorted rates are outside the ordered support
    # pointwise log-likelihood of the observed variable, the labels summed out
    assert set(pm_model.named_vars_to_dims["x"]) == {"obs"}


def test_data_scaled_prior_is_stated(quakes):
    alpha, beta = default_rate_prior(quakes.counts)
    assert alpha == 2.0 and alpha / beta == pytest.approx(quakes.counts.mean())
    spec = {"model": {"components": 2}, "bayes": {"rate_prior": "auto", "variant": "ordered", "w_concentration": 1.0}}
    model_def = FAMILY.model_from_spec(spec, quakes)
    assert model_def.rate_prior == (alpha, beta) and model_def.ordered


def test_membership_draws_equal_responsibilities(quakes):
    x = quakes.counts
    model = PoissonMixture(3)
    params = PoissonParams([0.3, 0.5, 0.2], [12.0, 19.0, 31.0])
    draws = {"w": np.stack([params.w, params.w[[2, 0, 1]]]), "rate": np.stack([params.rate, params.rate[[2, 0, 1]]])}
    member = FAMILY.membership_draws(model, quakes, draws)
    assert member.shape == (2, x.size, 3)
    resp = FAMILY.responsibilities(model, quakes, params)
    np.testing.assert_allclose(member[0], resp, rtol=1e-12)
    # A relabelled draw gives the same memberships, relabelled: the likelihood is label-invariant.
    np.testing.assert_allclose(member[1], resp[:, [2, 0, 1]], rtol=1e-12)
    assert model.loglik(params.permuted([2, 0, 1]), x) == pytest.approx(model.loglik(params, x), rel=1e-14)


def test_parameters_declare_label_dims(quakes):
    info = FAMILY.parameters(PoissonMixture(2), quakes)
    assert list(info) == ["w", "rate"]
    assert all(one.label_dims == ("component",) for one in info.values())
    params = PoissonParams([0.4, 0.6], [3.0, 9.0])
    back = FAMILY.params_from_variables(PoissonMixture(2), FAMILY.variables(params))
    np.testing.assert_array_equal(back.w, params.w)
    np.testing.assert_array_equal(back.rate, params.rate)
    group = FAMILY.data_group({}, quakes)
    assert group["x"].dims == ("obs",) and group.attrs["kind"] == "counts" and group["obs"].values[0] == "1900"


def test_bundled_spec_reads_through_the_family():
    import tomllib
    from pathlib import Path

    raw = tomllib.loads((Path(__file__).parents[1] / "models" / "earthquakes_mixture.toml").read_text("utf-8"))
    assert raw["model"]["family"] == FAMILY.name
    FAMILY.check_spec(raw)
    data = FAMILY.load_data({**raw, "data": {"dataset": raw["data"]["dataset"]}})
    model_def = FAMILY.model_from_spec(raw, data)
    assert model_def.n_components == 3 and raw["model_choice"]["components"] == [1, 2, 3, 4]
    assert model_def.rate_prior == default_rate_prior(data.counts)


# --- bad input -----------------------------------------------------------------------------------


def _spec(tmp_path, text: str, **data) -> dict:
    path = tmp_path / "counts.csv"
    path.write_text(text)
    return {"path": str(tmp_path / "spec.toml"),
            "data": {"dataset": None, "file": "counts.csv", "counts": "n", "label": None, "encoding": "utf-8",
                     "delimiter": "auto", **data},
            "model": {"family": "poisson", "components": 2}}


@pytest.mark.parametrize(("text", "message"), [
    ("n\n3\n-2\n5\n", "counts.csv: line 3, column 'n' is '-2', a negative count; counts are 0 or more: "
                      "fix that cell or remove that row"),
    ("n\n3\n2.5\n5\n", "counts.csv: line 3, column 'n' is '2.5', not a whole number; a Poisson model needs counts "
                       "(0, 1, 2, ...): fix that cell, or name the count column with data.counts = '...'"),
    ("n\n3\nmany\n", "counts.csv: line 3, column 'n' is 'many', not a whole number; a Poisson model needs counts "
                     "(0, 1, 2, ...): fix that cell, or name the count column with data.counts = '...'"),
    ("n\n3\n\n4\n", None),
])
def test_bad_counts_are_refused_in_one_line(tmp_path, text, message):
    spec = _spec(tmp_path, text)
    if message is None:  # a blank line is no row: the file reads as the counts around it
        assert FAMILY.load_data(spec).counts.tolist() == [3, 4]
        return
    with pytest.raises(UserError, match=f"^{re.escape(message)}$") as excinfo:
        FAMILY.load_data(spec)
    assert "\n" not in str(excinfo.value)


def test_whole_numbers_written_as_decimals_are_counts(tmp_path):
    data = load_counts_csv(_write(tmp_path, "year,n\n1,10.0\n2,1e1\n"), counts="n", label="year")
    assert data.counts.tolist() == [10, 10] and data.labels == ("1", "2")


def _write(tmp_path, text):
    path = tmp_path / "c.csv"
    path.write_text(text)
    return path


def test_missing_column_and_wrong_data_kind_are_refused(tmp_path):
    with pytest.raises(UserError, match="column 'n' is missing .*data.counts"):
        FAMILY.load_data(_spec(tmp_path, "count\n3\n"))
    spec = {"data": {"dataset": "galaxies"}, "model": {"family": "poisson", "components": 2}}
    with pytest.raises(UserError, match=r"^\[data\] galaxies does not hold counts for the poisson model; .*earthquakes"):
        FAMILY.load_data(spec)


@pytest.mark.parametrize(("section", "key", "value", "pattern"), [
    ("bayes", "rate_prior", [2, -1], r"^\[bayes\] rate_prior must be \"auto\" or \[alpha, beta\]"),
    ("bayes", "rate_prior", [2], r"^\[bayes\] rate_prior must be"),
    ("em", "init", "kmeans", r"^\[em\] init = 'kmeans' is not a Poisson start"),
    ("em", "init", [10, -3], r"^\[em\] init must list positive starting rates"),
    ("data", "counts", "", r"^\[data\] counts must name the column"),
])
def test_bad_family_keys_are_refused(section, key, value, pattern):
    spec = {"data": {"counts": "count"}, "bayes": {"rate_prior": "auto"}, "em": {"init": "auto"}}
    spec[section][key] = value
    with pytest.raises(UserError, match=pattern):
        FAMILY.check_spec(spec)


def test_checks_needing_the_data(quakes):
    spec = {"model": {"components": 200}, "model_choice": {"components": []}, "em": {"init": "auto"}}
    with pytest.raises(UserError, match=r"^\[model\] components = 200 is more than the 107 rows of counts; use at most 107$"):
        FAMILY.check_data(spec, quakes)
    # a K of model choice is named as its own (it read "components = 300", the spec's components being 2)
    spec = {"model": {"components": 2}, "model_choice": {"components": [1, 300]}, "em": {"init": "auto"}}
    with pytest.raises(UserError, match=r"^\[model_choice\] components = 300 is more than the 107 rows of counts"):
        FAMILY.check_data(spec, quakes)
    empty = CountData(np.zeros(0, dtype=np.int64), (), "n", "empty.csv")
    with pytest.raises(UserError, match="^empty.csv: no rows of counts; give a file with at least one count$"):
        FAMILY.check_data({"model": {"components": 2}, "model_choice": {"components": []}, "em": {"init": "auto"}},
                          empty)
    zeros = CountData(np.zeros(5, dtype=np.int64), tuple("abcde"), "n", "zeros.csv")
    with pytest.raises(UserError, match="every count in column 'n' is 0"):
        FAMILY.check_data({"model": {"components": 2}, "model_choice": {"components": []}, "em": {"init": "auto"}},
                          zeros)
    with pytest.raises(UserError, match=r"^\[em\] init gives 2 starting rates for components = 3; give 3$"):
        FAMILY.check_data({"model": {"components": 3}, "model_choice": {"components": []}, "em": {"init": [1, 2]}},
                          quakes)
