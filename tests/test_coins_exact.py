"""The enumerated exact posterior against direct numerical integration over theta (and w)."""

import numpy as np
import pytest
from scipy import stats

from emvsbayes.coins.exact import exact_posterior, log_evidence
from emvsbayes.coins.model import CoinMixture

HEADS = np.array([2, 9, 7, 4])
TOSSES = np.array([10, 10, 8, 6])


def _midpoints(n):
    return (np.arange(n) + 0.5) / n


def test_equal_weights_against_quadrature():
    model = CoinMixture(2, weights="equal", theta_prior=(2.0, 1.5))
    post = exact_posterior(model, HEADS, TOSSES)
    g = _midpoints(1200)
    t0, t1 = np.meshgrid(g, g, indexing="ij")
    like_i = [0.5 * stats.binom.pmf(h, n, t0) + 0.5 * stats.binom.pmf(h, n, t1) for h, n in zip(HEADS, TOSSES)]
    prior = stats.beta.pdf(t0, 2.0, 1.5) * stats.beta.pdf(t1, 2.0, 1.5)
    unnorm = prior * np.prod(like_i, axis=0)
    cell = 1.0 / len(g) ** 2
    evidence = unnorm.sum() * cell
    density = unnorm / evidence
    # Midpoint rule on a 1200 x 1200 grid of smooth integrands: errors ~1e-7, far inside these tolerances.
    assert post.log_evidence == pytest.approx(np.log(evidence), abs=1e-5)
    assert post.theta_mean[0] == pytest.approx((density * t0).sum() * cell, abs=1e-5)
    assert post.theta_sorted_mean[0] == pytest.approx((density * np.minimum(t0, t1)).sum() * cell, abs=1e-4)
    assert post.theta_sorted_mean[1] == pytest.approx((density * np.maximum(t0, t1)).sum() * cell, abs=1e-4)
    sd_max = np.sqrt((density * np.maximum(t0, t1) ** 2).sum() * cell - post.theta_sorted_mean[1] ** 2)
    assert post.theta_sorted_sd[1] == pytest.approx(sd_max, abs=1e-4)
    r = 0.5 * stats.binom.pmf(HEADS[0], TOSSES[0], t0) / like_i[0]
    assert post.membership[0, 0] == pytest.approx((density * r).sum() * cell, abs=1e-5)
    # The symmetric model: per-coin summaries are equal, memberships are 1/2.
    np.testing.assert_allclose(post.theta_mean[0], post.theta_mean[1], rtol=1e-12)
    np.testing.assert_allclose(post.membership, 0.5, atol=1e-12)


def test_estimated_weights_against_quadrature():
    model = CoinMixture(2, weights="estimated", w_concentration=1.5)
    post = exact_posterior(model, HEADS, TOSSES)
    g = _midpoints(160)
    w0, t0, t1 = np.meshgrid(g, g, g, indexing="ij")
    like = np.ones_like(w0)
    for h, n in zip(HEADS, TOSSES):
        like *= w0 * stats.binom.pmf(h, n, t0) + (1 - w0) * stats.binom.pmf(h, n, t1)
    prior = stats.beta.pdf(w0, 1.5, 1.5)  # Dirichlet(1.5, 1.5) on (w0, 1 - w0); Beta(1, 1) on each theta
    unnorm = prior * like
    cell = 1.0 / len(g) ** 3
    evidence = unnorm.sum() * cell
    # Coarser 3-D grid (160^3): relative errors ~1e-4.
    assert post.log_evidence == pytest.approx(np.log(evidence), abs=2e-3)
    assert post.theta_sorted_mean[1] == pytest.approx((unnorm * np.maximum(t0, t1)).sum() * cell / evidence, abs=1e-3)
    assert post.w_mean[0] == pytest.approx(0.5, abs=1e-12)


def test_three_coins_sorted_means_are_ordered_and_membership_sums_to_one():
    model = CoinMixture(3, weights="estimated")
    post = exact_posterior(model, np.array([1, 5, 9, 2, 8, 5]), np.full(6, 10))
    assert post.n_assignments == 3**6
    assert np.all(np.diff(post.theta_sorted_mean) > 0)
    np.testing.assert_allclose(post.membership.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(post.theta_sorted_lower < post.theta_sorted_mean)
    assert np.all(post.theta_sorted_mean < post.theta_sorted_upper)


def test_too_many_assignments_is_refused():
    with pytest.raises(ValueError, match="too many"):
        exact_posterior(CoinMixture(2), np.zeros(25, dtype=int), np.full(25, 10))


@pytest.mark.parametrize("weights", ["equal", "estimated"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_log_evidence_alone_is_the_posteriors_to_the_bit(k, weights):
    # Model choice asks only for log p(data | K); computing it without the posterior's grids must not move it.
    # One coin: the Beta-binomial evidence in closed form, prod_i C(n_i, h_i) B(1 + H, 1 + T) / B(1, 1).
    model = CoinMixture(k, weights=weights)
    assert log_evidence(model, HEADS, TOSSES) == exact_posterior(model, HEADS, TOSSES).log_evidence
    if k == 1:
        from scipy.special import betaln, comb

        closed = np.log(comb(TOSSES, HEADS)).sum() + betaln(1 + HEADS.sum(), 1 + (TOSSES - HEADS).sum())
        assert log_evidence(model, HEADS, TOSSES) == pytest.approx(closed, rel=1e-12)
