"""The ladder driver through the family protocol's names, on the registered families: the coin mixture
(with MAP-EM and the Bayesian bootstrap) and a 2-D Gaussian mixture (full covariances: the LKJ Cholesky
transform that ADVI's start must pass through); a family without the optional members gets no such rung
and a reason."""

import numpy as np
import pytest

from emvsbayes.coins.em import fit as coin_fit
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data.records import CoinData
from emvsbayes.family import get_family
from emvsbayes.gaussian.model import GaussianParams
from emvsbayes.coins.map_em import fit_coin_map
from emvsbayes.ladder.bayesian_bootstrap import weighted_refit
from emvsbayes.ladder.build import LadderOptions, run_ladder, sampled_labels
from emvsbayes.ladder.map_em import map_point
from emvsbayes.ladder.partition import canonical
from emvsbayes.ladder.results import RungSummary

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
    refit, _ = weighted_refit(get_family("coins"), model_def, data, em, {})
    groups = run_ladder(get_family("coins"), model_def, data, em, seed=1, options=options,
                        refit_weighted=refit, before=[mle], map_params=map_params)
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


@pytest.fixture(scope="module")
def gaussian_ladder():
    """Two well-separated 2-D clusters, EM from the truth; short ADVI (the rung's wiring, not its accuracy)."""
    family = get_family("gaussian")
    model_def, example, _ = family.example()
    # The contract example's clusters overlap; these are 16 sds apart, so every membership is 0 or 1.
    truth = GaussianParams.from_covariances(example.w, 4 * np.asarray(example.mu), example.covariances(), "full")
    data = family.simulate(model_def, truth, 80, np.random.default_rng(3))
    em = family.fit(model_def, data, truth).params
    options = LadderOptions(n_draws=200, vi_methods=("fullrank",), vi_iter=300, n_replicates=20, partition_draws=60)
    refit, reason = weighted_refit(family, model_def, data, em, {})
    assert reason == ""
    groups = run_ladder(family, model_def, data, em, seed=2, options=options, refit_weighted=refit)
    return family, model_def, data, em, groups


@pytest.mark.slow  # compiles the 2-D Gaussian model's Laplace and ADVI graphs
def test_gaussian_ladder_runs_through_the_protocol(gaussian_ladder):
    family, model_def, data, em, groups = gaussian_ladder
    ds = groups["uncertainty_ladder"]
    assert list(ds["rung"].values) == ["laplace", "advi_fullrank", "bootstrap_bayesian"]
    assert set(ds.attrs["parameters"].strip("[]").replace('"', "").split(", ")) == set(family.parameters(model_def, data))
    # The labelling of every rung is EM's: each rung's means lie within 0.5 of EM's (clusters 16 apart).
    for rung in ds["rung"].values:
        np.testing.assert_allclose(ds["mu"].sel(rung=rung).values, family.variables(em)["mu"], atol=0.5)
    # Separated clusters: the Laplace similarity matrix is EM's partition (memberships 0 or 1 to 1e-6 at
    # every draw near EM's answer), to within 0.05.
    sim = groups["coclustering"]["similarity"].sel(source="laplace").values
    labels = groups["coclustering"]["em_labels"].values
    np.testing.assert_allclose(sim, (labels[:, None] == labels[None, :]).astype(float), atol=0.05)


def test_map_em_says_why_a_family_has_no_map_rung():
    # The hidden Markov model's map_fit does not cover the stationary initial distribution (its example's) and
    # it has no weighted refit; a Gaussian model whose LKJ prior has no mode is refused.
    family = get_family("hmm")
    model_def, truth, _ = family.example()
    series = family.simulate(model_def, truth, 30, np.random.default_rng(0))
    params, reason = map_point(family, model_def, series, truth, {})
    assert params is None and reason == ('MAP-EM skipped: MAP-EM of a hidden Markov model needs initial = "estimated": '
                                         "with the stationary initial distribution the transition matrix's update has "
                                         "no closed form")
    refit, reason = weighted_refit(family, None, None, None, {})
    assert refit is None and reason == "the weighted EM refit is not written for the hmm family"
    family = get_family("gaussian")
    model_def, truth, _ = family.example()
    data = family.simulate(model_def, truth, 30, np.random.default_rng(0))
    modeless = type(model_def)(model_def.n_components, "full", priors=type(model_def.priors)(lkj_eta=0.5))
    params, reason = map_point(family, modeless, data, truth, {})
    assert params is None and reason.startswith("MAP-EM skipped: lkj_eta = 0.5") and "no mode" in reason


def test_map_em_of_the_family_fits_the_coins_as_map_em_does():
    family = get_family("coins")
    model_def = CoinMixture(n_components=2, weights="estimated", theta_prior=(2.0, 2.0), w_concentration=2.0)
    data = CoinData(HEADS, TOSSES, tuple(f"set {i + 1}" for i in range(8)))
    init = CoinParams([0.8, 0.2], [0.5, 0.5])
    params, reason = map_point(family, model_def, data, init, {"tol": 1e-12})
    direct = fit_coin_map(model_def, HEADS, TOSSES, init, tol=1e-12).params
    assert reason == ""
    np.testing.assert_allclose(params.theta, direct.theta, rtol=1e-12)
