"""The overfitted ("sparse") finite mixture's posterior of the number of occupied components K+
(emvsbayes.uncertainty.sparse; the runner's ``[model_choice] sparse``).

Oracle: for a coin (binomial) mixture with Beta(a, b) thetas and Dirichlet(e0, ..., e0) weights the
allocations' posterior is known in closed form up to a constant,

    p(z | y) ∝ Gamma(K e0) / Gamma(N + K e0) prod_k Gamma(n_k + e0) / Gamma(e0)        (Dirichlet-multinomial)
               x prod_k B(a + H_k, b + T_k) / B(a, b)                                  (Beta-binomial),

n_k, H_k, T_k the sets, heads and tails allocated to coin k (the binomial coefficients do not depend on
z). With N = 6 sets and K_max = 3 all 3^6 = 729 allocations are enumerated, giving P(K+ = k | y) exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import betaln, gammaln

from emvsbayes.data import CoinData
from emvsbayes.family import get_family
from emvsbayes.runner import sparse_mixture
from emvsbayes.seeds import child_seeds
from emvsbayes.spec import validate
from emvsbayes.uncertainty.sparse import allocation_draws, occupied_components, occupied_distribution

HEADS = np.array([2, 3, 7, 8, 5, 6])
TOSSES = np.full(6, 10)
K_MAX = 3
E0 = 0.1  # small: the sparse regime (Rousseau & Mengersen's e0 < d/2 = 1/2 for one theta per coin)


def exact_occupied(heads, tosses, k, e0, a=1.0, b=1.0) -> np.ndarray:
    """P(K+ = 1..k | y) by enumerating every allocation (see the module docstring)."""
    n = len(heads)
    log_post, occupied = [], []
    for z in itertools.product(range(k), repeat=n):
        z = np.array(z)
        counts = np.bincount(z, minlength=k)
        h = np.bincount(z, weights=heads, minlength=k)
        t = np.bincount(z, weights=tosses - heads, minlength=k)
        log_post.append(gammaln(k * e0) - gammaln(n + k * e0) + np.sum(gammaln(counts + e0) - gammaln(e0))
                        + np.sum(betaln(a + h, b + t) - betaln(a, b)))
        occupied.append(np.count_nonzero(counts))
    log_post = np.array(log_post)
    weights = np.exp(log_post - log_post.max())
    return np.bincount(np.array(occupied) - 1, weights=weights / weights.sum(), minlength=k)


def test_exact_enumeration_of_one_set_per_coin():
    """The enumeration itself: one set and K coins: K+ = 1 surely; two identical sets, K = 2, e0 = 1:
    P(K+ = 1) against the two allocation classes written out by hand."""
    assert exact_occupied(np.array([3]), np.array([10]), 4, 0.3) == pytest.approx([1, 0, 0, 0])
    # two sets, K = 2, e0 = 1: P(z1 = z2) ∝ 2 x [Gamma(3) Gamma(1) / Gamma(4)] x B(1 + 2h, 1 + 2t)
    # and P(z1 != z2) ∝ 2 x [Gamma(2) Gamma(2) / Gamma(4)] x B(1 + h, 1 + t)^2, with h = 3, t = 7.
    same = 2 * 2 / 6 * np.exp(betaln(7, 15))
    apart = 2 * 1 / 6 * np.exp(2 * betaln(4, 8))
    assert exact_occupied(np.array([3, 3]), np.array([10, 10]), 2, 1.0) == pytest.approx(
        [same / (same + apart), apart / (same + apart)], rel=1e-12)


def test_allocation_draws_follow_the_membership_probabilities():
    """Each row's allocation is categorical with its probabilities: over 20,000 draws the shares are within
    5 binomial standard errors of them (false-failure rate below 1e-5 per share); K+ counts distinct values."""
    probs = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    z = allocation_draws(np.broadcast_to(probs, (20000, 2, 3)), np.random.default_rng(3))
    for i in range(2):
        share = np.bincount(z[:, i], minlength=3) / 20000
        assert np.all(np.abs(share - probs[i]) <= 5 * np.sqrt(probs[i] * (1 - probs[i]) / 20000) + 1e-12)
    np.testing.assert_array_equal(occupied_components(np.array([[0, 0, 0], [2, 0, 2], [0, 1, 2]]), 3), [1, 2, 3])
    np.testing.assert_allclose(occupied_distribution([1, 2, 2, 3], 4), [0.25, 0.5, 0.25, 0])


@pytest.mark.slow
def test_sampled_occupied_components_match_enumeration():
    """The sampler's P(K+ = k | y) (NUTS on the marginalised model, one allocation per draw from p(z | theta,
    y)) equals the enumeration within 4 Monte Carlo standard errors, each sqrt(p (1 - p) / ESS) with ESS the
    effective sample size of the indicator K+ = k over the chains (a 4-sd band: under a normal
    approximation each comparison fails by chance with probability 6e-5), plus 0.005 for the ESS estimate's
    own error when a probability is small."""
    spec = validate({"data": {"dataset": "coins_lecture"},
                     "model": {"family": "coins", "components": 2, "weights": "estimated"},
                     "bayes": {"enabled": False},
                     "model_choice": {"sparse": True, "sparse_components": K_MAX, "sparse_concentration": E0,
                                      "chains": 4, "draws": 1000, "tune": 1000}})
    data = CoinData(heads=HEADS, tosses=TOSSES, labels=tuple(str(i + 1) for i in range(len(HEADS))))
    group = sparse_mixture(get_family("coins"), spec, data, child_seeds(5), {}, None)
    exact = exact_occupied(HEADS, TOSSES, K_MAX, E0)
    estimate, mcse = group["prob"].values, group["prob_mcse"].values
    assert group["n_occupied"].shape == (4, 1000)
    assert np.all(np.isfinite(mcse)), mcse
    assert np.all(np.abs(estimate - exact) <= 4 * mcse + 0.005), (estimate, exact, mcse)
    assert group.attrs["n_divergent"] == 0


def test_equal_weight_coins_and_hmms_are_skipped_with_a_reason():
    """A family without weights to empty gives no sparse mixture, and says why."""
    from emvsbayes.runner import FamilyView

    spec = validate({"data": {"dataset": "coins_lecture"}, "model": {"family": "coins", "components": 2,
                                                                    "weights": "estimated"},
                     "bayes": {"enabled": False}, "model_choice": {"sparse": True}})
    spec["model"]["weights"] = "equal"  # past validation, which refuses it (tests/test_bad_inputs.py)
    data = get_family("coins").load_data(spec)
    group = sparse_mixture(FamilyView(get_family("coins"), data), spec, data, child_seeds(5), {}, None)
    assert "estimated weights" in group.attrs["skipped"] and not group.data_vars


@pytest.mark.parametrize("key, value, words", [("sparse_components", 1, "must be a whole number >= 2, got 1"),
                                               ("sparse_components", 0, "must be a whole number >= 2, got 0"),
                                               ("sparse_concentration", 0, "sparse_concentration"),
                                               ("lrt_bootstrap", -1, "whole number >= 0")])
def test_bad_sparse_and_lrt_keys_name_the_key_and_the_fix(key, value, words):
    from emvsbayes.errors import UserError

    with pytest.raises(UserError, match=words):
        validate({"data": {"dataset": "coins_lecture"}, "model": {"family": "coins"}, "model_choice": {key: value}})
