"""The PyMC coin model against the exact (enumerated) posterior.

Tolerance: |posterior mean - exact mean| <= 4 MCSE, with the Monte Carlo standard error estimated by
ArviZ from the chains (it accounts for autocorrelation). Under the Markov chain CLT a 4-sigma miss has
probability about 6e-5 per comparison; the seeds are fixed, so a run either passes or fails every time.
"""

import arviz as az
import numpy as np
import pytest
import xarray as xr

from emvsbayes.coins import bayes
from emvsbayes.coins.exact import exact_posterior
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data import load_dataset
from emvsbayes.labels.groups import label_switching_groups
from emvsbayes.sampling import SamplerSettings, sample_posterior

Z = 4.0


def _sorted_draws(tree, k):
    theta = np.sort(tree["posterior"]["theta"].values, axis=-1)
    return xr.Dataset({"theta_sorted": (("chain", "draw", "rank"), theta)})


def _exact_mean_membership_strength(model, data, n_grid: int = 600) -> float:
    """E[mean_i |P(set i used coin 0 | theta) - 1/2|] under the exact posterior of the equal-weight,
    uniform-prior 2-coin model, by the midpoint rule on an n_grid x n_grid grid of (theta0, theta1)."""
    from scipy.special import logsumexp as lse
    from scipy.stats import binom

    grid = (np.arange(n_grid) + 0.5) / n_grid
    log_b = binom.logpmf(np.asarray(data.heads)[:, None], np.asarray(data.tosses)[:, None], grid[None, :])  # (N, G)
    a, b = log_b[:, :, None], log_b[:, None, :]  # coin 0 on axis 1, coin 1 on axis 2
    log_mix = np.logaddexp(a, b)  # the 1/2 weights cancel in the normalisation
    p0 = np.exp(a - log_mix)
    assert tuple(model.theta_prior) == (1.0, 1.0)  # a uniform prior: the posterior is the likelihood
    log_post = log_mix.sum(axis=0)
    weights = np.exp(log_post - lse(log_post))
    return float(np.sum(weights * np.mean(np.abs(p0 - 0.5), axis=0)))


def _check_against_exact(tree, exact, k):
    sorted_ds = _sorted_draws(tree, k)
    mean = sorted_ds["theta_sorted"].mean(("chain", "draw")).values
    mcse = az.mcse(sorted_ds)["theta_sorted"].values
    assert np.all(mcse > 0)
    np.testing.assert_array_less(np.abs(mean - exact.theta_sorted_mean), Z * mcse)
    sd = sorted_ds["theta_sorted"].std(("chain", "draw")).values
    mcse_sd = az.mcse(sorted_ds, method="sd")["theta_sorted"].values
    np.testing.assert_array_less(np.abs(sd - exact.theta_sorted_sd), Z * mcse_sd)


@pytest.fixture(scope="module")
def paper():
    return load_dataset("coins_do_batzoglou")


@pytest.mark.parametrize("sampler", ["numpyro", pytest.param("nutpie", marks=pytest.mark.slow)])
def test_symmetric_model_matches_exact_and_switches_labels(paper, sampler):
    model = CoinMixture(2, weights="equal")
    exact = exact_posterior(model, paper.heads, paper.tosses)
    pm_model = bayes.build_model(model, paper.heads, paper.tosses)
    starts = bayes.initvals_from_params(model, [CoinParams([0.8, 0.52], [0.5, 0.5])])
    tree = sample_posterior(pm_model, SamplerSettings(sampler, chains=4, draws=1000, tune=1000), 11, starts).tree
    _check_against_exact(tree, exact, 2)
    # Label switching inside chains: the per-coin means approach the exact symmetric value, and the
    # membership probabilities averaged over draws approach 1/2 although EM gives near-certain labels.
    theta = tree["posterior"]["theta"].values.reshape(-1, 2)
    probs = bayes.membership_probabilities(model, paper.heads, paper.tosses, theta, np.full_like(theta, 0.5))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-12)
    # Per-draw memberships are strongly labelled; the average over switching draws is much less so. The
    # draws' mean of mean_i |p_i - 1/2| against its exact posterior expectation (a 2-D integral, by the
    # midpoint rule), within Z Monte Carlo standard errors: a bar of 0.3 on it (the value is ~0.311)
    # passed or failed by the sampler's noise.
    per_draw = np.mean(np.abs(probs - 0.5), axis=(1, 2)).reshape(4, 1000)
    mcse = float(az.mcse(xr.Dataset({"g": (("chain", "draw"), per_draw)}))["g"])
    assert abs(per_draw.mean() - _exact_mean_membership_strength(model, paper)) < Z * mcse
    assert per_draw.mean() > 0.25  # strongly labelled per draw (0.5 would be certain, 0 undecided)
    assert np.max(np.abs(probs.mean(axis=0) - exact.membership)) < 0.25
    assert "log_likelihood" in tree.children and tree["log_likelihood"]["heads"].shape[-1] == 5

    # The switches happen inside chains, so R-hat (which compares chains) does not notice them, but the
    # label-switching diagnostics do: every chain switches, and Stephens relabels a large share of draws.
    groups = label_switching_groups(tree["posterior"].to_dataset(), probs=probs,
                                    reference={"theta": np.array([0.8, 0.52])})
    ls = groups["label_switching"]
    assert np.all(ls["rhat_before"].values < 1.05)
    assert np.all(ls["n_switches"].values > 10)
    assert ls.attrs["label_switching"] == 1 and ls.attrs["distinct_modes"] == 0
    assert 0.2 < ls.attrs["n_changed"] / ls.attrs["n_draws_total"] < 0.8
    relabelled = groups["posterior_relabelled"]["theta"].values.reshape(-1, 2)
    # After relabelling, coin 0 is the EM answer's high coin in the bulk of draws.
    assert np.mean(relabelled[:, 0] > relabelled[:, 1]) > 0.9


@pytest.mark.slow
def test_ordered_model_with_estimated_weights_matches_exact(paper):
    model = CoinMixture(2, weights="estimated", ordered=True, theta_prior=(2.0, 2.0))
    exact = exact_posterior(model, paper.heads, paper.tosses)
    pm_model = bayes.build_model(model, paper.heads, paper.tosses)
    starts = bayes.initvals_from_params(model, [CoinParams([0.8, 0.5], [0.6, 0.4])])
    # numpyro's programs, not PyMC's own NUTS: with the same seed, PyMC's sampler gave draws whose theta sd sat
    # 4.2 Monte Carlo standard errors from the exact one in some runs on one machine (AMD EPYC, 2026-12-04) and
    # passed in others, so its outcome was not fixed by the seed; the JAX programs' draws are.
    tree = sample_posterior(pm_model, SamplerSettings("numpyro", chains=2, draws=2000, tune=1000, target_accept=0.9),
                            5, starts).tree
    theta = tree["posterior"]["theta"].values
    assert np.all(theta[..., 0] <= theta[..., 1])  # the ordered transform holds in every draw
    _check_against_exact(tree, exact, 2)
    w = tree["posterior"]["w"].values.reshape(-1, 2)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
