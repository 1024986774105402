"""The ladder driver through the family protocol's names, on the coin mixture (a minimal adapter here
stands in for the coins FAMILY until the protocol's registry exists)."""

from typing import NamedTuple

import numpy as np
import pytest

from emvsbayes.coins.bayes import build_model, initvals_from_params, membership_probabilities
from emvsbayes.coins.em import fit as coin_fit
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data.records import CoinData
from emvsbayes.ladder.bayesian_bootstrap import coin_refit
from emvsbayes.ladder.build import LadderOptions, run_ladder, sampled_labels
from emvsbayes.ladder.map_em import fit_coin_map
from emvsbayes.ladder.partition import canonical
from emvsbayes.ladder.results import RungSummary


class _Info(NamedTuple):
    dims: tuple
    label_dims: tuple
    scale: str


class _Coins:
    """The protocol's members run_ladder uses, for the coin mixture."""

    name, obs_dim = "coins", "set"

    def parameters(self, model_def, data):
        return {"theta": _Info(("component",), ("component",), "logit"),
                "w": _Info(("component",), ("component",), "simplex")}

    def variables(self, params):
        return params.variables()

    def pymc_model(self, model_def, data):
        return build_model(model_def, data.heads, data.tosses)

    def initvals(self, model_def, params_list):
        return initvals_from_params(model_def, params_list)

    def n_observations(self, data):
        return len(data.heads)

    def membership_draws(self, model_def, data, draws):
        return membership_probabilities(model_def, data.heads, data.tosses, draws["theta"], draws["w"])

    def responsibilities(self, model_def, data, params):
        return np.exp(model_def.log_joint(params, data.heads, data.tosses)
                      - np.logaddexp.reduce(model_def.log_joint(params, data.heads, data.tosses), axis=1,
                                            keepdims=True))


HEADS = np.array([9, 8, 9, 10, 1, 2, 0, 1])
TOSSES = np.full(8, 10)


def test_sampled_labels_follow_the_probabilities():
    probs = np.broadcast_to([0.2, 0.5, 0.3], (20000, 1, 3))
    labels = sampled_labels(probs, np.random.default_rng(0))[:, 0]
    # Binomial SE of each share at most sqrt(0.25 / 20000) = 0.0035; 4 SE.
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / 20000, [0.2, 0.5, 0.3], atol=0.014)


@pytest.fixture(scope="module")
def ladder():
    model_def = CoinMixture(n_components=2, weights="estimated", theta_prior=(2.0, 2.0), w_concentration=2.0)
    data = CoinData(HEADS, TOSSES, tuple(f"set {i + 1}" for i in range(8)))
    em = coin_fit(model_def, HEADS, TOSSES, CoinParams([0.8, 0.2], [0.5, 0.5])).params
    mle = RungSummary("mle_wald", "EM's maximum.", {"theta": {"estimate": em.theta}, "w": {"estimate": em.w}})
    options = LadderOptions(n_draws=300, vi_methods=("fullrank",), vi_iter=1500, n_replicates=50, partition_draws=100)
    map_params = fit_coin_map(model_def, HEADS, TOSSES, em).params
    groups = run_ladder(_Coins(), model_def, data, em, seed=1, options=options,
                        refit_weighted=coin_refit(model_def, HEADS, TOSSES, em), before=[mle], map_params=map_params)
    return em, groups


@pytest.mark.slow  # compiles the coin model's Laplace and ADVI graphs: ~30 s warm, 2 min cold
def test_rungs_in_order_with_their_assumptions(ladder):
    em, groups = ladder
    ds = groups["uncertainty_ladder"]
    assert list(ds["rung"].values) == ["mle_wald", "map_em", "laplace", "advi_fullrank", "bootstrap_bayesian"]
    assert all(len(str(s)) > 20 for s in ds["assumes"].values[1:])
    assert np.isnan(ds["theta_lower"].sel(rung="map_em")).all()  # a point: no interval
    assert np.isfinite(ds["pareto_k"].sel(rung="advi_fullrank")) and np.isnan(ds["pareto_k"].sel(rung="laplace"))
    # Every rung keeps EM's labelling (starts and alignment from EM's answer): coin 0 is the heads-heavy one.
    assert np.all(ds["theta"].sel(component=0) > ds["theta"].sel(component=1))
    lower, upper = ds["theta_lower"].sel(rung="laplace"), ds["theta_upper"].sel(rung="laplace")
    assert np.all((lower < ds["theta"].sel(rung="laplace")) & (ds["theta"].sel(rung="laplace") < upper))


@pytest.mark.slow
def test_coclustering_of_separated_coins_recovers_em_partition(ladder):
    _, groups = ladder
    ds = groups["coclustering"]
    assert list(ds["source"].values) == ["laplace", "advi_fullrank", "bootstrap_bayesian"]
    # Eight sets from two very different coins: every engine puts the first four together and apart from
    # the last four, and the point partitions are EM's.
    sim = ds["similarity"].values
    assert np.all(sim[:, :4, :4] > 0.9) and np.all(sim[:, :4, 4:] < 0.1)
    for labels in ds["point_labels"].values:
        np.testing.assert_array_equal(canonical(labels), canonical(ds["em_labels"].values))
