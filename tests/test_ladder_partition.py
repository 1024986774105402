"""Partition rung: oracles are exact enumeration of a small coin posterior (every assignment of sets to
coins, written out here independently of emvsbayes.coins.exact and checked against its memberships) and
brute force over all 203 partitions of 6 observations."""

import itertools
import math

import numpy as np
import pytest
from scipy.special import betaln, logsumexp

from emvsbayes.coins.bayes import membership_probabilities
from emvsbayes.coins.exact import exact_posterior
from emvsbayes.coins.model import CoinMixture
from emvsbayes.ladder.partition import (
    binder_loss,
    canonical,
    credible_ball,
    expected_binder,
    expected_vi,
    point_partition,
    similarity,
    variation_of_information,
)

HEADS = np.array([9, 8, 5, 2, 1, 6])
TOSSES = np.full(6, 10)


def _enumerated(model_def):
    """Every assignment z (K^N, N) and its posterior probability, for fixed equal weights."""
    k, n = model_def.n_components, len(HEADS)
    a, b = model_def.theta_prior
    z = np.array(list(itertools.product(range(k), repeat=n)))
    log_w = np.zeros(len(z))
    for row, assignment in enumerate(z):
        for coin in range(k):
            mine = assignment == coin
            log_w[row] += betaln(a + HEADS[mine].sum(), b + (TOSSES - HEADS)[mine].sum()) - betaln(a, b)
    return z, np.exp(log_w - logsumexp(log_w))


@pytest.fixture(scope="module")
def coins():
    model_def = CoinMixture(n_components=2, weights="equal", theta_prior=(1.0, 1.0))
    z, w = _enumerated(model_def)
    # The enumeration here is the one emvsbayes.coins.exact does: same memberships.
    onehot = z[:, :, None] == np.arange(2)
    np.testing.assert_allclose(np.einsum("z,znk->nk", w, onehot), exact_posterior(model_def, HEADS, TOSSES).membership,
                               atol=1e-12)
    return model_def, z, w


def test_similarity_of_weighted_label_draws_is_the_enumerated_coclustering(coins):
    _, z, w = coins
    n = z.shape[1]
    expected = np.array([[sum(w[s] for s in range(len(z)) if z[s, i] == z[s, j]) for j in range(n)] for i in range(n)])
    np.testing.assert_allclose(similarity(z, weights=w), expected, atol=1e-12)


def test_similarity_from_membership_draws_of_the_exact_posterior_matches_enumeration(coins):
    model_def, z, w = coins
    rng = np.random.default_rng(7)
    s = 4000
    # Exact posterior draws: an assignment by its probability, then each theta_k from its conjugate Beta.
    picks = z[rng.choice(len(z), size=s, p=w)]
    heads_k = np.stack([(picks == k) @ HEADS for k in range(2)], axis=1)
    tails_k = np.stack([(picks == k) @ (TOSSES - HEADS) for k in range(2)], axis=1)
    theta = rng.beta(1.0 + heads_k, 1.0 + tails_k)
    probs = membership_probabilities(model_def, HEADS, TOSSES, theta, np.full((s, 2), 0.5))
    psm = similarity(probs)
    exact = similarity(z, weights=w)
    # Per-entry Monte Carlo standard error from the per-draw values sum_k p_ik p_jk; 4.5 SE over the 15
    # distinct pairs fails by chance with probability about 1e-4.
    per_draw = np.einsum("sik,sjk->sij", probs, probs)
    se = per_draw.std(axis=0, ddof=1) / np.sqrt(s)
    off = ~np.eye(6, dtype=bool)
    assert np.all(np.abs(psm - exact)[off] <= 4.5 * se[off] + 1e-12)


def _all_partitions(n):
    """Restricted growth strings: every partition of n items once (Bell(n) of them)."""
    out = [[0]]
    for _ in range(n - 1):
        out = [p + [v] for p in out for v in range(max(p) + 2)]
    return np.array(out)


def _naive_vi(a, b):
    """VI = 2 H(a, b) - H(a) - H(b), from the definition with proportions."""
    h = 0.0
    for x in (a, b):
        for c in set(x):
            p = np.mean(np.asarray(x) == c)
            h += p * math.log2(p)
    for ca in set(a):
        for cb in set(b):
            p = np.mean((np.asarray(a) == ca) & (np.asarray(b) == cb))
            if p > 0:
                h -= 2 * p * math.log2(p)
    return h


@pytest.fixture(scope="module")
def three_coin_posterior():
    """The posterior over partitions of 6 sets under 3 coins: the 729 assignments merged into the partitions
    they make (relabellings of one partition have one probability)."""
    z, w = _enumerated(CoinMixture(n_components=3, weights="equal", theta_prior=(1.0, 1.0)))
    parts, inverse = np.unique(canonical(z), axis=0, return_inverse=True)
    return parts, np.bincount(inverse.ravel(), weights=w)


def test_partition_count_and_known_distances():
    parts = _all_partitions(6)
    assert len(parts) == 203 and len(np.unique(canonical(parts), axis=0)) == 203
    together, apart = np.zeros(6, dtype=int), np.arange(6)
    assert variation_of_information(together, apart) == pytest.approx(math.log2(6), abs=1e-12)
    assert binder_loss(together, apart) == 15
    assert variation_of_information([0, 0, 1, 1], [5, 5, 2, 2]) == pytest.approx(0.0, abs=1e-12)


def test_expected_losses_equal_brute_force_and_the_search_finds_the_minimum(three_coin_posterior):
    z, w = three_coin_posterior
    parts = _all_partitions(6)
    binder_brute = np.array([sum(w[s] * binder_loss(p, z[s]) for s in range(len(z))) for p in parts])
    vi_brute = np.array([sum(w[s] * _naive_vi(list(p), list(z[s])) for s in range(len(z))) for p in parts])
    np.testing.assert_allclose(expected_binder(parts, similarity(z, weights=w)), binder_brute, atol=1e-10)
    np.testing.assert_allclose(expected_vi(parts, z, weights=w), vi_brute, atol=1e-10)
    for loss, brute in (("binder", binder_brute), ("vi", vi_brute)):
        found = point_partition(z, loss=loss, weights=w)
        assert found.expected_loss == pytest.approx(brute.min(), abs=1e-10)
        assert any((canonical(found.labels) == p).all() for p in parts[np.isclose(brute, brute.min(), atol=1e-10)])


def test_moves_reach_a_minimiser_that_no_draw_is():
    # Three equally weighted draws (found by a seeded search) whose expected-loss minimiser, for both
    # losses, is none of them: only the single-observation moves can reach it.
    draws = np.array([[0, 1, 2, 1, 1, 2], [0, 1, 0, 2, 1, 1], [0, 1, 1, 0, 1, 2]])
    parts = _all_partitions(6)
    for loss, brute in (("binder", np.array([np.mean([binder_loss(p, d) for d in draws]) for p in parts])),
                        ("vi", np.array([np.mean([_naive_vi(list(p), list(d)) for d in draws]) for p in parts]))):
        assert brute.min() < min(brute[[np.flatnonzero((parts == canonical(d)).all(axis=1))[0] for d in draws]])
        found = point_partition(draws, loss=loss)
        assert found.expected_loss == pytest.approx(brute.min(), abs=1e-12) and found.n_moves > 0
        assert point_partition(draws, loss=loss, max_sweeps=0).expected_loss > brute.min() + 0.1


def test_credible_ball_radius_and_bounds():
    center = np.array([0, 0, 0, 1, 1, 1])
    split = np.array([0, 0, 1, 2, 2, 2])    # 3 clusters
    merged = np.zeros(6, dtype=int)         # 1 cluster
    moved = np.array([0, 0, 0, 0, 0, 1])    # 2 clusters, furthest
    draws = np.stack([center, split, merged, moved])
    weights = np.array([0.5, 0.3, 0.05, 0.15])
    d = [_naive_vi(list(center), list(p)) for p in draws]
    assert d[0] == 0 and d[1] < d[2] < d[3]  # 0, 0.459, 1, 1.268 bits
    ball = credible_ball(center, draws, prob=0.8, weights=weights)
    assert ball.radius == pytest.approx(d[1])
    np.testing.assert_array_equal(ball.horizontal, split)
    ball = credible_ball(center, draws, prob=0.85, weights=weights)
    assert ball.radius == pytest.approx(d[2]) and ball.horizontal_distance == pytest.approx(d[2])
    ball = credible_ball(center, draws, prob=0.95, weights=weights)
    assert ball.radius == pytest.approx(d[3])
    np.testing.assert_array_equal(ball.horizontal, moved)
    assert (ball.upper_vertical_clusters, ball.lower_vertical_clusters) == (1, 3)
    np.testing.assert_array_equal(ball.upper_vertical, merged)
    np.testing.assert_array_equal(ball.lower_vertical, split)
    # Unweighted: each draw a quarter; half the mass is within the split's distance.
    assert credible_ball(center, draws, prob=0.5).radius == pytest.approx(d[1])
    with pytest.raises(ValueError, match="must lie in"):
        credible_ball(center, draws, prob=0.0)
