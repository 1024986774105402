"""VI rung: ADVI against the exact Gaussian posterior of a conjugate linear regression, and PSIS's Pareto k
on that easy posterior and on a symmetric two-component mixture's bimodal one.

Tolerances: the answer is the last iterate of a stochastic optimiser, which keeps moving; fit_vi records
the sd of q's mean and sd over the last quarter of the iterations (the jitter). The final iterate is one
draw from that stationary spread, so it lies within 4 jitters of the optimum unless the optimiser has not
converged (which the test is there to catch); 4 sd of a roughly normal spread fails by chance with
probability 6e-5 per coordinate, and the seeds are fixed.
"""

import numpy as np
import pymc as pm
import pytest

from conftest import ORACLE_MODE
from emvsbayes.ladder.vi import ASSUMES, elbo_window_means, fit_vi, pareto_k, smoothed_weights, vi_draws

SIGMA, TAU = 0.5, 10.0


@pytest.fixture(scope="module")
def regression():
    """y = b0 + b1 x + N(0, 0.5^2), b ~ N(0, 10^2 I): the exact posterior is a correlated bivariate normal."""
    x = np.linspace(0.0, 2.0, 12)
    y = 1.0 + 0.5 * x + np.random.default_rng(0).normal(size=12) * SIGMA
    design = np.column_stack([np.ones_like(x), x])
    precision = design.T @ design / SIGMA**2 + np.eye(2) / TAU**2
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ y / SIGMA**2
    with pm.Model() as model:
        b = pm.Normal("b", 0.0, TAU, shape=2)
        pm.Normal("y", design @ b, SIGMA, observed=y)
    return model, mean, cov, precision


@pytest.fixture(scope="module")
def fullrank(regression):
    return fit_vi(regression[0], "fullrank", 3000, seed=1, compile_mode=ORACLE_MODE)


def test_fullrank_advi_finds_the_exact_gaussian_posterior(regression, fullrank):
    _, mean, cov, _ = regression
    assert np.all(np.abs(fullrank.mean - mean) < 4 * fullrank.mean_jitter)
    assert np.all(np.abs(fullrank.sd - np.sqrt(np.diag(cov))) < 4 * fullrank.sd_jitter)
    # The correlation (-0.85 here) is what full rank is for.
    assert abs(fullrank.cov[0, 1] / np.prod(fullrank.sd) - cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])) < 0.05


def test_meanfield_advi_gives_the_known_understated_spread(regression):
    model, mean, cov, precision = regression
    fit = fit_vi(model, "meanfield", 3000, seed=1, compile_mode=ORACLE_MODE)
    # The mean-field optimum for a Gaussian posterior: the exact mean and sd 1 / sqrt(precision_ii),
    # about half the marginal sd at this correlation.
    assert np.all(np.abs(fit.mean - mean) < 4 * fit.mean_jitter)
    assert np.all(np.abs(fit.sd - 1 / np.sqrt(np.diag(precision))) < 4 * fit.sd_jitter)
    assert np.all(fit.sd < 0.6 * np.sqrt(np.diag(cov)))
    np.testing.assert_array_equal(fit.cov - np.diag(np.diag(fit.cov)), 0.0)


def test_pareto_k_is_small_when_q_is_the_posterior(regression, fullrank):
    diagnostic = pareto_k(regression[0], fullrank, 2000, np.random.default_rng(3))
    assert diagnostic.khat < 0.5 and diagnostic.verdict == "good"
    draws = vi_draws(regression[0], fullrank, 50, np.random.default_rng(4))
    np.testing.assert_allclose(draws["b"], draws["_unconstrained"])


def test_smoothed_weights_follow_exp_of_the_log_ratios_and_their_known_tail():
    """q = N(0, 1), p = N(0, s^2). The ratio p/q = exp(c x^2) (c = (1 - 1/s^2) / 2) has, under q, the tail
    P(w > t) ~ t^(-1/(2c)): Pareto shape k = 2c = 1 - 1/s^2 (Vehtari et al. 2024, PSIS). s = 2: k = 0.75,
    an unreliable q; s = 1/2: the ratio is bounded (k <= 0), a safe q. The slowly varying factor of a
    Gaussian tail biases k-hat low at 4000 draws (measured 0.59 for s = 2), hence the bounds."""
    from scipy import stats

    x = np.random.default_rng(11).normal(size=4000)
    for s, low, high in ((2.0, 0.5, 0.95), (0.5, -np.inf, 0.2)):
        log_ratios = stats.norm.logpdf(x, scale=s) - stats.norm.logpdf(x)
        log_weights, khat = smoothed_weights(log_ratios)
        assert low < khat < high, (s, khat)
        # the smoothed weights keep the order of the raw ratios (they only truncate the largest)
        order = np.argsort(log_ratios)
        assert np.all(np.diff(log_weights[order]) >= -1e-12)


@pytest.fixture(scope="module")
def mixture():
    """Two unit-variance components at -1 and +1, equal weights, symmetric prior on the means: a bimodal
    posterior (the two labellings) with much mass between the modes."""
    x = np.random.default_rng(5).normal(size=40) + np.repeat([-1.0, 1.0], 20)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 3.0, shape=2)
        pm.NormalMixture("x", w=np.array([0.5, 0.5]), mu=mu, sigma=1.0, observed=x)
    return model, fit_vi(model, "fullrank", 3000, seed=1, start={"mu": np.array([-1.0, 1.0])}, compile_mode=ORACLE_MODE)


def test_elbo_increases_on_a_small_mixture(mixture):
    _, fit = mixture
    windows = elbo_window_means(fit.elbo, 6)
    width = len(fit.elbo) // 6
    # Standard error of a window mean from the last window's own spread (the noisiest estimate is the
    # first window's; its values only add to the gap).
    se = fit.elbo[-width:].std(ddof=1) / np.sqrt(width)
    assert windows[-1] - windows[0] > 4 * se
    assert windows[-1] > windows[:3].max()


def test_pareto_k_flags_a_q_locked_onto_one_labelling(mixture):
    """Mean-field ADVI locks onto one labelling (mu near (-1, +0.4)): the posterior's mass at the mirror mode
    lies in q's far tail, the ratios p/q are heavy-tailed and k-hat flags q (measured 1.04 with these seeds).
    Full-rank ADVI here spreads q across both labellings (its mean near (-0.3, -0.3)): wider than the posterior,
    bounded ratios, k-hat well under 0.7 (measured 0.34); PSIS cannot see a missed mode, only a narrow q."""
    model, fullrank_fit = mixture
    locked = fit_vi(model, "meanfield", 3000, seed=1, start={"mu": np.array([-1.0, 1.0])},
                    compile_mode=ORACLE_MODE)
    diagnostic = pareto_k(model, locked, 2000, np.random.default_rng(3))
    assert diagnostic.khat > 0.7 and diagnostic.verdict == "unreliable"
    assert pareto_k(model, fullrank_fit, 2000, np.random.default_rng(3)).khat < 0.6


def test_unknown_method_and_assumptions():
    with pytest.raises(ValueError, match="unknown VI method"):
        fit_vi(None, "pathfinder", 100, seed=0)
    assert set(ASSUMES) == {"meanfield", "fullrank"}


def test_too_few_iterations_for_a_jitter_give_nan_not_a_warning(regression):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit = fit_vi(regression[0], "meanfield", 20, seed=1, compile_mode=ORACLE_MODE)
    assert np.isnan(fit.mean_jitter).all() and np.isnan(fit.sd_jitter).all() and len(fit.elbo) == 20
