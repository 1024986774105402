"""Uncertainty of the EM side: information-based standard errors, bootstrap, agreement, model choice.

Tiers (see /work/shared/STYLE.md):

- oracles: the exact Hessian against central finite differences of the model's own numpy
  log-likelihood; the adjusted Rand index against scikit-learn; BIC against scikit-learn's
  ``GaussianMixture.bic``;
- invariants: ICL >= BIC for any responsibilities (hypothesis), ARI and membership differences unchanged
  by renaming, bootstrap results independent of the number of workers and aligned to a permuted reference;
- seeded recovery: information-based standard errors against the bootstrap standard deviation on large
  simulated data; LOO prefers the true K;
- flags: singular information on the boundary, with a near-empty component, at a flat direction.

Every tolerance says where it comes from next to the assertion.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import adjusted_rand_score
from scipy.special import expit, logit
from sklearn.mixture import GaussianMixture

from emvsbayes.coins.em import fit as coin_fit
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.comparison import information_group
from emvsbayes.data import separated_gaussian_mixture, simulate_coins, simulate_gaussian_mixture
from emvsbayes.gaussian.em import fit as gaussian_fit
from emvsbayes.gaussian.em import params_from_resp
from emvsbayes.gaussian.model import COVARIANCE_TYPES, GaussianMixtureModel, GaussianParams, parameter_dims
from emvsbayes.coins.family import (
    coin_bootstrap,
    coin_criteria,
    coin_from_unconstrained,
    coin_standard_errors,
    coin_unconstrained,
)
from emvsbayes.gaussian.family import (
    gaussian_bootstrap,
    gaussian_criteria,
    gaussian_from_unconstrained,
    gaussian_standard_errors,
    gaussian_unconstrained,
)
from emvsbayes.uncertainty import (
    adjusted_rand_index,
    align_to_reference,
    ari_matrix,
    assignment_entropy,
    degenerate_components,
    information_criteria,
    loo_waic,
    membership_difference,
    min_component_points,
    standard_errors_from_hessian,
)

# Tight EM stopping so the answer is a maximum to ~1e-8 and the comparisons below are not blurred by it.
TIGHT = {"tol": 1e-10, "param_tol": 1e-8, "max_iter": 5000}


# --------------------------------------------------------------------------------------------------
# helpers: finite differences of the model's own log-likelihood


def fd_hessian(f, phi: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central second differences: H_ij ~ [f(+i+j) - f(+i-j) - f(-i+j) + f(-i-j)] / (4 h^2)."""
    p = phi.size
    out = np.empty((p, p))
    eye = np.eye(p) * h
    for i in range(p):
        for j in range(i, p):
            value = (
                f(phi + eye[i] + eye[j]) - f(phi + eye[i] - eye[j]) - f(phi - eye[i] + eye[j]) + f(phi - eye[i] - eye[j])
            ) / (4 * h * h)
            out[i, j] = out[j, i] = value
    return out


def fd_jacobian(g, phi: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central first differences of a vector function: (M, P)."""
    cols = [(g(phi + e) - g(phi - e)) / (2 * h) for e in np.eye(phi.size) * h]
    return np.stack(cols, axis=1)


def flat_variables(params) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in params.variables().values()])


def assert_matches_finite_differences(se, loglik_of_phi, natural_of_phi, phi):
    hessian = fd_hessian(loglik_of_phi, phi)
    # Error of the FD Hessian: truncation O(h^2 f'''') ~ 1e-8 relative, rounding ~ eps |loglik| / h^2
    # ~ 1e-16 * 1e3 / 1e-8 = 1e-5 absolute on entries of order N ~ 1e2..1e3: about 1e-7 relative to the
    # largest entry. 1e-5 of the largest entry leaves two orders of margin.
    scale = np.max(np.abs(hessian))
    np.testing.assert_allclose(se.information, -hessian, rtol=0, atol=1e-5 * scale)
    reference = standard_errors_from_hessian(
        hessian, fd_jacobian(natural_of_phi, phi), se.estimate, se.unconstrained, level=se.level
    )
    assert not reference.singular, reference.reason
    for name in se.se:
        # The Hessian's relative error (<= 1e-5) passes to the SEs multiplied by at most the condition
        # number of the correlation-form information (< 10 in these well-separated fits): 1e-4.
        np.testing.assert_allclose(se.se[name], reference.se[name], rtol=1e-4, atol=1e-12, err_msg=name)


# --------------------------------------------------------------------------------------------------
# information-based standard errors against finite differences


@pytest.fixture(scope="module")
def small_coins():
    data = simulate_coins([0.3, 0.75], [0.4, 0.6], 10, np.random.default_rng(20), n_sets=80)
    return data.heads, data.tosses


@pytest.mark.parametrize("weights", ["equal", "estimated"])
def test_coin_standard_errors_match_finite_difference_hessian(small_coins, weights):
    heads, tosses = small_coins
    model = CoinMixture(2, weights)
    params = coin_fit(model, heads, tosses, CoinParams([0.4, 0.6], [0.5, 0.5]), **TIGHT).params
    se = coin_standard_errors(model, heads, tosses, params)
    assert not se.singular, se.reason
    phi = coin_unconstrained(model, params)
    np.testing.assert_allclose(flat_variables(coin_from_unconstrained(model, phi)), flat_variables(params), rtol=1e-12)
    assert_matches_finite_differences(
        se,
        lambda p: model.loglik(coin_from_unconstrained(model, p), heads, tosses),
        lambda p: flat_variables(coin_from_unconstrained(model, p)),
        phi,
    )
    if weights == "equal":
        assert np.all(se.se["w"] == 0.0)  # fixed weights are not parameters
    assert se.max_abs_score < 1e-4  # converged to ~1e-8 in the parameters (TIGHT)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(21)
    out = {}
    for dim in (1, 2):
        _, mu, cov = separated_gaussian_mixture(2, dim, 4.0, rng)
        out[dim] = simulate_gaussian_mixture(300, [0.4, 0.6], mu, cov, rng)
    return out


def _gaussian_em(model, data):
    init = params_from_resp(model, data.x, np.eye(model.n_components)[data.true_component])
    return gaussian_fit(model, data.x, init, **TIGHT).params


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gaussian_standard_errors_match_finite_difference_hessian(gaussian_data, covariance_type, dim):
    data = gaussian_data[dim]
    model = GaussianMixtureModel(2, covariance_type)
    params = _gaussian_em(model, data)
    se = gaussian_standard_errors(model, data.x, params)
    assert not se.singular, se.reason
    phi = gaussian_unconstrained(model, params)
    back = gaussian_from_unconstrained(model, phi, dim)
    np.testing.assert_allclose(flat_variables(back), flat_variables(params), rtol=1e-10, atol=1e-12)
    assert_matches_finite_differences(
        se,
        lambda p: model.loglik(gaussian_from_unconstrained(model, p, dim), data.x),
        lambda p: flat_variables(gaussian_from_unconstrained(model, p, dim)),
        phi,
    )
    expected = {1: {"w", "mu", "sigma"}, 2: {"w", "mu", "cov"}}[dim]
    assert set(se.se) == expected
    ds = se.to_dataset()
    assert list(ds["stat"].values) == ["estimate", "se", "lower", "upper"]


def test_unconstrained_map_accepts_any_square_root_of_the_precision(gaussian_data):
    # A lower-triangular factor (as np.linalg.cholesky(inv(cov)) gives) is the same model; it must map
    # to the same coordinates as the canonical upper factor.
    data = gaussian_data[2]
    model = GaussianMixtureModel(2, "full")
    params = _gaussian_em(model, data)
    lower = np.linalg.cholesky(params.precisions())
    same = GaussianParams(params.w, params.mu, lower, "full")
    np.testing.assert_allclose(gaussian_unconstrained(model, same), gaussian_unconstrained(model, params), atol=1e-10)


# --------------------------------------------------------------------------------------------------
# Wald intervals formed on unconstrained scales stay inside each parameter's range

Z95 = 1.959963984540054  # normal quantile of 0.975


def test_free_weight_coin_intervals_stay_in_range_and_are_the_logit_scale_wald_intervals():
    # The case: Do & Batzoglou's five sets with free weights. EM puts w = (0.52, 0.48) with se 0.41,
    # so estimate +- 1.96 se was [-0.28, 1.33].
    from emvsbayes.data import load_dataset

    data = load_dataset("coins_do_batzoglou")
    model = CoinMixture(2, "estimated")
    params = coin_fit(model, data.heads, data.tosses, CoinParams([0.6, 0.5], [0.5, 0.5]), **TIGHT).params
    se = coin_standard_errors(model, data.heads, data.tosses, params)
    assert not se.singular, se.reason
    assert np.any(se.estimate["w"] - Z95 * se.se["w"] < 0)  # the natural-scale interval would leave [0, 1]
    for name in ("theta", "w"):
        assert np.all((0 < se.lower[name]) & (se.lower[name] < se.estimate[name])), name
        assert np.all((se.estimate[name] < se.upper[name]) & (se.upper[name] < 1)), name
    assert se.interval_scale == {"theta": "logit", "w": "logit"}

    # Oracle, independent of the package's Hessian: central finite differences of the model's numpy
    # log-likelihood in phi = (logit theta_0, logit theta_1, log(w_0 / w_1)); for K = 2 the last is
    # logit(w_0), and logit(w_1) = -logit(w_0). Each interval is expit(phi_j +- z sqrt([H^-1]_jj)).
    phi = coin_unconstrained(model, params)
    hessian = fd_hessian(lambda p: model.loglik(coin_from_unconstrained(model, p), data.heads, data.tosses), phi)
    se_phi = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    expected_lower = expit(phi - Z95 * se_phi)
    expected_upper = expit(phi + Z95 * se_phi)
    # The FD Hessian's relative error (~1e-7, see assert_matches_finite_differences) moves se_phi by about
    # as much times the condition number (< 100 here) and an endpoint by less than that: 1e-5 is ample.
    np.testing.assert_allclose(se.lower["theta"], expected_lower[:2], rtol=1e-5)
    np.testing.assert_allclose(se.upper["theta"], expected_upper[:2], rtol=1e-5)
    np.testing.assert_allclose(se.lower["w"], [expected_lower[2], 1 - expected_upper[2]], rtol=1e-5)
    np.testing.assert_allclose(se.upper["w"], [expected_upper[2], 1 - expected_lower[2]], rtol=1e-5)


def test_one_coin_interval_is_the_closed_form_logit_interval():
    # One coin, H heads in T tosses: theta_hat = H / T and the observed information of eta = logit(theta)
    # is T theta (1 - theta) (d2/deta2 of H log theta + (T - H) log(1 - theta)), exactly.
    heads, tosses = np.array([1, 0, 2, 1]), np.full(4, 3)  # 4 of 12: theta_hat = 1/3
    model = CoinMixture(1, "estimated")
    theta = heads.sum() / tosses.sum()
    se = coin_standard_errors(model, heads, tosses, CoinParams([theta], [1.0]), level=0.9)
    z = 1.6448536269514722  # normal quantile of 0.95
    se_eta = 1 / math.sqrt(tosses.sum() * theta * (1 - theta))
    np.testing.assert_allclose(se.se["theta"], [math.sqrt(theta * (1 - theta) / tosses.sum())], rtol=1e-12)
    np.testing.assert_allclose(se.lower["theta"], [expit(logit(theta) - z * se_eta)], rtol=1e-12)
    np.testing.assert_allclose(se.upper["theta"], [expit(logit(theta) + z * se_eta)], rtol=1e-12)
    # w = 1 is determined (se 0): its interval is the point, not logit(1) = inf mapped back
    assert se.se["w"][0] == 0 and se.lower["w"][0] == 1 and se.upper["w"][0] == 1


def test_one_gaussian_intervals_are_the_closed_form_log_scale_intervals():
    # At the maximum-likelihood estimate of one normal, the observed information equals the expected one:
    # var(mu_j) = S_jj / N, var(log S_jj) = 2 / N, var(S_ij) = (S_ii S_jj + S_ij^2) / N (i != j), and
    # var(log sigma) = 1 / (2 N) in one dimension. N = 6 is small enough that the natural-scale interval
    # of a variance, S (1 -+ 1.96 sqrt(2 / 6)), would go below 0.
    x = np.random.default_rng(25).normal(size=(6, 2)) @ np.array([[1.0, 0.5], [0.0, 2.0]])
    n = x.shape[0]
    mu = x.mean(axis=0)
    cov = (x - mu).T @ (x - mu) / n
    model = GaussianMixtureModel(1, "full")
    se = gaussian_standard_errors(model, x, GaussianParams.from_covariances([1.0], mu[None], cov[None], "full"))
    assert not se.singular, se.reason
    assert se.interval_scale["cov"] == "log-diagonal"
    variances = np.diag(cov)
    assert np.all(variances * (1 - Z95 * math.sqrt(2 / n)) < 0)
    np.testing.assert_allclose(np.diag(se.lower["cov"][0]), variances * np.exp(-Z95 * math.sqrt(2 / n)), rtol=1e-8)
    np.testing.assert_allclose(np.diag(se.upper["cov"][0]), variances * np.exp(Z95 * math.sqrt(2 / n)), rtol=1e-8)
    off = Z95 * math.sqrt((cov[0, 0] * cov[1, 1] + cov[0, 1] ** 2) / n)
    np.testing.assert_allclose(se.lower["cov"][0][[0, 1], [1, 0]], cov[0, 1] - off, rtol=1e-8)
    np.testing.assert_allclose(se.upper["cov"][0][[0, 1], [1, 0]], cov[0, 1] + off, rtol=1e-8)
    np.testing.assert_allclose(se.lower["mu"][0], mu - Z95 * np.sqrt(variances / n), rtol=1e-8)

    sigma = x[:, 0].std()
    se_1d = gaussian_standard_errors(
        model, x[:, 0], GaussianParams.from_covariances([1.0], [[x[:, 0].mean()]], [[[sigma**2]]], "full")
    )
    np.testing.assert_allclose(se_1d.lower["sigma"], [sigma * math.exp(-Z95 / math.sqrt(2 * n))], rtol=1e-8)
    np.testing.assert_allclose(se_1d.upper["sigma"], [sigma * math.exp(Z95 / math.sqrt(2 * n))], rtol=1e-8)
    np.testing.assert_allclose(se_1d.se["sigma"], [sigma / math.sqrt(2 * n)], rtol=1e-8)  # natural scale


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gaussian_intervals_stay_in_range_for_every_covariance_type(covariance_type):
    # 12 points in 2-D, two components: few enough that a natural-scale interval of a variance crosses 0
    # when each component has its own variances (full, diag).
    rng = np.random.default_rng(26)
    x = np.vstack([rng.normal(size=(6, 2)), rng.normal(size=(6, 2)) + [6.0, 0.0]])
    model = GaussianMixtureModel(2, covariance_type)
    params = gaussian_fit(model, x, params_from_resp(model, x, np.repeat(np.eye(2), 6, axis=0)), **TIGHT).params
    se = gaussian_standard_errors(model, x, params)
    assert not se.singular, se.reason
    assert np.all((0 < se.lower["w"]) & (se.lower["w"] < se.estimate["w"]))
    assert np.all((se.estimate["w"] < se.upper["w"]) & (se.upper["w"] < 1))
    diagonal = np.arange(2)
    if covariance_type in ("full", "diag"):
        natural_lower = se.estimate["cov"] - Z95 * se.se["cov"]
        assert np.any(natural_lower[:, diagonal, diagonal] < 0)
    variance_lower = se.lower["cov"][:, diagonal, diagonal]
    assert np.all((0 < variance_lower) & (variance_lower < se.estimate["cov"][:, diagonal, diagonal]))
    assert np.all(se.lower["cov"] <= se.estimate["cov"]) and np.all(se.estimate["cov"] <= se.upper["cov"])
    ds = information_group(se, parameter_dims(2), {})
    assert ds.attrs["wald_scale_w"] == "logit scale" and ds.attrs["wald_scale_mu"] == "natural scale"
    assert ds.attrs["wald_scale_cov"] == "log scale for the variances, natural scale for the covariances"
    assert se.to_dataset().attrs["wald_scale_cov"] == ds.attrs["wald_scale_cov"]


# --------------------------------------------------------------------------------------------------
# singular information is flagged, not turned into numbers


def test_theta_on_the_boundary_is_flagged():
    # 30 sets that are all heads make the second coin's theta go to 1.
    heads = np.r_[np.full(30, 10), np.random.default_rng(22).binomial(10, 0.3, size=30)]
    tosses = np.full(60, 10)
    model = CoinMixture(2, "estimated")
    params = coin_fit(model, heads, tosses, CoinParams([0.3, 0.9], [0.5, 0.5]), **TIGHT).params
    assert params.theta[1] > 1 - 1e-9
    se = coin_standard_errors(model, heads, tosses, params)
    assert se.singular
    assert se.reason.startswith("theta[1] is on the boundary")
    assert "the information is singular there" in se.reason
    assert all(np.all(np.isnan(v)) for v in se.se.values())
    assert all(np.all(np.isnan(v)) for v in se.lower.values())

    exact = coin_standard_errors(model, heads, tosses, CoinParams([0.3, 1.0], [0.5, 0.5]))
    assert exact.reason == "theta[1] is on the boundary (1.0): the information is singular there"


def test_component_with_almost_no_weight_is_flagged(gaussian_data):
    data = gaussian_data[1]
    model = GaussianMixtureModel(2, "full")
    params = GaussianParams([1 - 1e-12, 1e-12], [[0.0], [5.0]], [[[1.0]], [[1.0]]], "full")
    se = gaussian_standard_errors(model, data.x, params)
    assert se.singular
    assert se.reason.startswith("w[1] = 1e-12 carries")
    assert np.all(np.isnan(se.se["mu"]))

    heads, tosses = np.array([3, 4, 8, 2]), np.full(4, 10)
    coin = coin_standard_errors(CoinMixture(2, "estimated"), heads, tosses, CoinParams([0.3, 0.7], [1 - 1e-12, 1e-12]))
    assert coin.singular and coin.reason.startswith("w[1]")


def test_flat_direction_and_ill_conditioning_are_flagged(small_coins):
    heads, tosses = small_coins
    # Two identical coins: the log-likelihood does not depend on the weights, so their curvature is 0.
    se = coin_standard_errors(CoinMixture(2, "estimated"), heads, tosses, CoinParams([0.5, 0.5], [0.3, 0.7]))
    assert se.singular and "not positive definite" in se.reason

    estimate = {"a": np.zeros(2)}
    nearly_collinear = -np.array([[1.0, 1 - 1e-12], [1 - 1e-12, 1.0]])
    flagged = standard_errors_from_hessian(nearly_collinear, np.eye(2), estimate, ("a0", "a1"))
    assert flagged.singular and "near-singular (condition number" in flagged.reason
    indefinite = standard_errors_from_hessian(-np.array([[1.0, 2.0], [2.0, 1.0]]), np.eye(2), estimate, ("a0", "a1"))
    assert indefinite.singular and "not positive definite" in indefinite.reason


# --------------------------------------------------------------------------------------------------
# information-based SEs against the bootstrap on large data


def _relative_gaps(se, boot) -> dict[str, np.ndarray]:
    sd = boot.sd()
    return {name: np.abs(sd[name] / se.se[name] - 1.0) for name in se.se if np.all(se.se[name] > 0)}


# B = 400: the bootstrap sd's own Monte Carlo error is about sd / sqrt(2B) = 3.5 %, so the 10 % bound is
# about 2.8 of its standard deviations (~0.5 % false failures per element for an arbitrary seed; the
# seeds here are fixed). The parametric bootstrap is used because it estimates the same model-based
# sampling variance the observed information does; the nonparametric one also contains the sandwich
# part and is checked against it with a looser 15 % in the coin case.
N_BOOT = 400


def test_coin_information_matches_bootstrap_sd():
    data = simulate_coins([0.3, 0.75], [0.4, 0.6], 20, np.random.default_rng(23), n_sets=400)
    model = CoinMixture(2, "estimated")
    params = coin_fit(model, data.heads, data.tosses, CoinParams([0.4, 0.6], [0.5, 0.5]), **TIGHT).params
    se = coin_standard_errors(model, data.heads, data.tosses, params)
    assert not se.singular
    for kind, bound in (("parametric", 0.10), ("nonparametric", 0.15)):
        boot = coin_bootstrap(
            model, data.heads, data.tosses, params, n_boot=N_BOOT, seed=24, kind=kind, n_workers=2, em_options=TIGHT
        )
        assert boot.n_failed == 0 and boot.n_unconverged == 0
        for name, gap in _relative_gaps(se, boot).items():
            assert np.all(gap < bound), (kind, name, gap)


def test_gaussian_information_matches_bootstrap_sd():
    data = simulate_gaussian_mixture(
        2000, [0.4, 0.6], [[-2.0], [2.0]], [[[1.0]], [[0.64]]], np.random.default_rng(25)
    )
    model = GaussianMixtureModel(2, "full")
    params = _gaussian_em(model, data)
    se = gaussian_standard_errors(model, data.x, params)
    assert not se.singular
    boot = gaussian_bootstrap(model, data.x, params, n_boot=N_BOOT, seed=26, kind="parametric", n_workers=2, em_options=TIGHT)
    assert boot.n_failed == 0
    for name, gap in _relative_gaps(se, boot).items():
        assert np.all(gap < 0.10), (name, gap)


# --------------------------------------------------------------------------------------------------
# bootstrap mechanics


def test_alignment_undoes_random_permutations():
    rng = np.random.default_rng(27)
    reference = {"mu": np.array([-3.0, 0.0, 4.0]), "w": np.array([0.2, 0.3, 0.5])}
    draws = {name: x + 0.05 * rng.standard_normal((50, 3)) for name, x in reference.items()}
    perms = np.stack([rng.permutation(3) for _ in range(50)])
    scrambled = {name: np.take_along_axis(x, perms, axis=1) for name, x in draws.items()}
    aligned, found = align_to_reference(scrambled, reference)
    for name in draws:
        np.testing.assert_array_equal(aligned[name], draws[name])


def test_bootstrap_follows_a_permuted_reference(small_coins):
    heads, tosses = small_coins
    model = CoinMixture(2, "estimated")
    params = coin_fit(model, heads, tosses, CoinParams([0.4, 0.6], [0.5, 0.5]), **TIGHT).params
    swapped = params.permuted([1, 0])
    straight = coin_bootstrap(model, heads, tosses, params, n_boot=40, seed=28, em_options=TIGHT)
    mirrored = coin_bootstrap(model, heads, tosses, swapped, n_boot=40, seed=28, em_options=TIGHT)
    for name in ("theta", "w"):
        # The same resamples refitted from mirrored starts: the same optima up to EM's stopping rule
        # (param_tol 1e-8 in TIGHT), with components in the reference's order.
        np.testing.assert_allclose(mirrored.draws[name], straight.draws[name][:, ::-1], atol=1e-7)
        assert np.all(np.abs(np.nanmean(mirrored.draws[name], axis=0) - mirrored.reference[name]) < 0.05)


def test_bootstrap_is_identical_with_one_and_two_workers(gaussian_data):
    data = gaussian_data[2]
    model = GaussianMixtureModel(2, "full")
    params = _gaussian_em(model, data)
    calls = []
    # The per-replicate route, the one that starts workers (data this small are batched by default).
    one = gaussian_bootstrap(model, data.x, params, n_boot=16, seed=29, n_workers=1, route="per-replicate")
    two = gaussian_bootstrap(
        model, data.x, params, n_boot=16, seed=29, n_workers=2, progress=lambda done, total: calls.append((done, total)),
        route="per-replicate",
    )
    for name in one.draws:
        np.testing.assert_array_equal(one.draws[name], two.draws[name])
    np.testing.assert_array_equal(one.loglik, two.loglik)
    assert calls[-1] == (16, 16) and [c[0] for c in calls] == sorted(c[0] for c in calls)
    ds = two.to_dataset()
    assert ds["cov"].dims == ("replicate", "component", "feature", "feature_bis")
    assert ds["mu"].dims == ("replicate", "component", "feature")
    lower, upper = two.intervals(0.9)["mu"]
    assert np.all(lower <= upper)
    # n_workers=None times the first chunk here and decides; the draws are the same either way.
    auto = gaussian_bootstrap(model, data.x, params, n_boot=16, seed=29, n_workers=None, route="per-replicate")
    for name in one.draws:
        np.testing.assert_array_equal(one.draws[name], auto.draws[name])


def test_workers_are_started_only_when_they_save_time():
    from emvsbayes.uncertainty.bootstrap import WORKER_START_SECONDS, _worth_workers

    assert not _worth_workers(1.6, 2)  # 200 two-coin replicates: 1.6 s here, 2.5 s on two workers
    assert _worth_workers(4 * WORKER_START_SECONDS, 2)
    assert not _worth_workers(100.0, 1)


def test_failed_replicates_are_recorded_not_raised():
    # Component 1 is three points; with reg_covar = 0 a resample that draws only one of them leaves it a
    # zero variance, which the M-step refuses (DegenerateFitError).
    rng = np.random.default_rng(30)
    x = np.r_[rng.standard_normal(37), 10.0, 10.5, 11.0]
    model = GaussianMixtureModel(2, "full", reg_covar=0.0)
    init = params_from_resp(model, x, np.eye(2)[(x > 5).astype(int)])
    params = gaussian_fit(model, x, init).params
    boot = gaussian_bootstrap(model, x, params, n_boot=30, seed=31)
    assert 0 < boot.n_failed < 30
    assert all("DegenerateFitError" in m for m in boot.messages)
    assert np.all(np.isnan(boot.draws["mu"][boot.failed]))
    assert np.all(np.isfinite(boot.draws["mu"][~boot.failed]))
    assert boot.to_dataset().attrs["n_failed"] == boot.n_failed


# --------------------------------------------------------------------------------------------------
# agreement


def test_ari_matches_scikit_learn_and_ignores_label_names():
    rng = np.random.default_rng(32)
    for n, ka, kb in itertools.product((1, 2, 7, 60), (1, 2, 4), (1, 3)):
        a, b = rng.integers(0, ka, n), rng.integers(0, kb, n)
        # Both are the same rational expression evaluated in float64: agreement to rounding.
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
        renamed = rng.permutation(max(ka, 1) + 3)[a] * 10 + 5
        assert adjusted_rand_index(renamed, b) == pytest.approx(adjusted_rand_index(a, b), abs=1e-12)
    labels = rng.integers(0, 3, 40)
    assert adjusted_rand_index(labels, (labels + 1) % 3) == 1.0
    names, matrix = ari_matrix({"em": labels, "kmeans": (labels + 1) % 3, "noise": rng.integers(0, 3, 40)})
    assert names == ("em", "kmeans", "noise") and matrix[0, 1] == 1.0 and np.allclose(matrix, matrix.T)


def test_membership_difference_and_entropy():
    rng = np.random.default_rng(33)
    resp = rng.dirichlet(np.ones(3), size=25)
    diff = membership_difference(resp, resp[:, [2, 0, 1]])
    assert diff.mean_abs == 0.0 and list(diff.perm) == [1, 2, 0]
    other = rng.dirichlet(np.ones(3), size=25)
    d = membership_difference(resp, other, align=False)
    assert d.mean_abs == pytest.approx(np.abs(resp - other).mean())
    assert d.mean_abs == pytest.approx(2 / 3 * d.per_observation.mean())
    np.testing.assert_allclose(assignment_entropy(np.full((4, 3), 1 / 3)), math.log(3))
    np.testing.assert_array_equal(assignment_entropy(np.eye(3)), 0.0)
    np.testing.assert_allclose(assignment_entropy(np.full((2, 4), 0.25), normalise=True), 1.0)


# --------------------------------------------------------------------------------------------------
# model choice


@st.composite
def responsibilities(draw):
    n = draw(st.integers(1, 30))
    k = draw(st.integers(1, 5))
    raw = draw(arrays(np.float64, (n, k), elements=st.floats(0.0, 1.0)))
    raw = raw + 1e-300 * (raw.sum(axis=1, keepdims=True) == 0)
    return raw / raw.sum(axis=1, keepdims=True)


@settings(max_examples=200, deadline=None)
@given(resp=responsibilities(), loglik=st.floats(-1e6, 0.0), p=st.integers(0, 50))
def test_icl_is_never_below_bic(resp, loglik, p):
    crit = information_criteria(loglik, p, resp.shape[0], resp)
    assert crit.icl >= crit.bic
    hard = np.eye(resp.shape[1])[np.argmax(resp, axis=1)]
    hard_crit = information_criteria(loglik, p, resp.shape[0], hard)
    assert hard_crit.icl == hard_crit.bic


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bic_and_aic_match_scikit_learn(gaussian_data, covariance_type):
    x = gaussian_data[2].x
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(x)
    params = GaussianParams.from_precisions(gm.weights_, gm.means_, gm.precisions_, covariance_type)
    crit = gaussian_criteria(GaussianMixtureModel(2, covariance_type), x, params)
    # Same formula and parameter count; the log-likelihoods differ only by summation order (~1e-13 relative).
    assert crit.bic == pytest.approx(gm.bic(x), rel=1e-10)
    assert crit.aic == pytest.approx(gm.aic(x), rel=1e-10)
    assert crit.icl >= crit.bic


def test_coin_criteria_count_weights_only_when_estimated(small_coins):
    heads, tosses = small_coins
    params = CoinParams([0.3, 0.7], [0.5, 0.5])
    equal = coin_criteria(CoinMixture(2, "equal"), heads, tosses, params)
    estimated = coin_criteria(CoinMixture(2, "estimated"), heads, tosses, params)
    assert (equal.n_params, estimated.n_params) == (2, 3)
    assert estimated.bic - equal.bic == pytest.approx(math.log(len(heads)))
    assert equal.icl > equal.bic


@pytest.mark.slow
def test_loo_prefers_the_true_number_of_components():
    from emvsbayes.gaussian import bayes
    from emvsbayes.sampling import SamplerSettings, sample_posterior

    data = simulate_gaussian_mixture(150, [0.5, 0.5], [[-2.5], [2.5]], [[[1.0]], [[1.0]]], np.random.default_rng(34))
    sampler = SamplerSettings(sampler="numpyro", chains=2, draws=300, tune=300, cores=1)
    starts = {
        1: GaussianParams([1.0], [[0.0]], [[[1 / 2.7]]]),
        2: GaussianParams([0.5, 0.5], [[-2.5], [2.5]], [[[1.0]], [[1.0]]]),
    }
    fits = {}
    for k, start in starts.items():
        model_def = GaussianMixtureModel(k, "full", ordered=True)
        model = bayes.build_model(model_def, data.x)
        tree = sample_posterior(model, sampler, 35, bayes.initvals_from_params(model_def, [start])).tree
        fits[k] = loo_waic(tree)
    gap = fits[2].elpd_loo - fits[1].elpd_loo
    # Two unit-variance components 5 sds apart against one wide normal: the gap is ~40 nats (seen
    # 43 with PyMC's NUTS, 39.7 with the default sampler and this seed), several times the se of either
    # elpd (4-8); requiring 2 combined se (16 here) is far from the edge. The default sampler, not PyMC's
    # NUTS: the test is about LOO, and PyMC's NUTS compiles its model with numba (~15 s on a cold cache).
    assert gap > 2 * math.hypot(fits[1].se_loo, fits[2].se_loo)
    assert fits[2].elpd_waic > fits[1].elpd_waic
    for fit in fits.values():
        assert fit.n_obs == 150 and fit.n_draws == 600 and fit.pareto_k.shape == (150,)
        assert fit.n_bad_k == 0
        # With no influential points WAIC and PSIS-LOO agree to well under one nat (Vehtari et al. 2017).
        assert abs(fit.elpd_waic - fit.elpd_loo) < 1.0


# --- degenerate fits in the choice of K (issue 15, item 4) ---------------------------------------------


def _galaxies() -> np.ndarray:
    from emvsbayes.data import load_dataset

    return np.asarray(load_dataset("galaxies").x, dtype=float)


def _sklearn_fit_from(x: np.ndarray, counts, means, sds) -> GaussianMixture:
    """scikit-learn's EM run to tol 1e-12 from the given groups (expected counts, means, sds)."""
    counts, sds = np.asarray(counts, dtype=float), np.asarray(sds, dtype=float)
    return GaussianMixture(len(counts), tol=1e-12, max_iter=100_000, weights_init=counts / counts.sum(),
                           means_init=np.asarray(means, dtype=float).reshape(-1, 1),
                           precisions_init=(1 / sds**2).reshape(-1, 1, 1)).fit(x)


def test_points_needed_per_component():
    assert [min_component_points(c, 1) for c in ("full", "diag", "spherical", "tied")] == [3, 3, 3, 1]
    assert min_component_points("full", 12) == 14
    np.testing.assert_array_equal(degenerate_components([2.49, 2.51, 3.0, 40.0], "full", 1), [0])
    np.testing.assert_array_equal(degenerate_components([13.4, 13.6], "full", 12), [0])
    assert degenerate_components([0.6, 50.0], "tied", 3).size == 0


def test_spikes_on_two_galaxies_are_degenerate_and_the_three_galaxy_group_is_not():
    """The galaxies' best K = 6 fit (independently by scikit-learn from its known group centres) puts two
    components on two galaxies each, sd 0.02-0.04; the best K = 4 fit keeps the real group of three galaxies
    near 33 (Roeder 1990) and is not flagged."""
    x = _galaxies()
    six = _sklearn_fit_from(x, [7, 2, 33, 35, 2, 3], [9.71, 16.13, 19.79, 22.92, 26.98, 33.04],
                            [0.42, 0.04, 0.67, 1.2, 0.02, 0.92])
    assert six.score(x) * len(x) == pytest.approx(-182.5745049, abs=1e-5)
    counts = six.predict_proba(x).sum(axis=0)
    flagged = degenerate_components(counts, "full", 1)
    np.testing.assert_allclose(counts[flagged], [2.0, 2.0], atol=0.01)
    assert np.all(np.sqrt(six.covariances_.ravel()[flagged]) < 0.05)
    four = _sklearn_fit_from(x, [7, 17, 55, 3], [9.71, 19.75, 21.92, 33.04], [0.42, 0.44, 2.28, 0.92])
    assert four.score(x) * len(x) == pytest.approx(-197.7103112, abs=1e-5)
    assert degenerate_components(four.predict_proba(x).sum(axis=0), "full", 1).size == 0


def test_model_choice_names_the_best_among_non_degenerate_rows():
    from emvsbayes.comparison import model_choice_group, model_choice_row

    def criteria(loglik, p):
        return information_criteria(loglik, p, 82)

    rows = {3: model_choice_row(criteria(-203.48, 8), degenerate=False),
            4: model_choice_row(criteria(-197.71, 11), degenerate=False),
            6: model_choice_row(criteria(-182.57, 17), degenerate=True)}
    choice = model_choice_group(rows)
    assert (choice.attrs["best_by_bic"], choice.attrs["best_by_aic"]) == (3, 4)
    assert choice.attrs["degenerate_best_by_bic"] == 6 and choice.attrs["degenerate_best_by_aic"] == 6
    assert choice.attrs["agree"] == 0
    np.testing.assert_array_equal(choice["degenerate"].values, [0, 0, 1])


def test_heroes_k30_is_flagged_and_not_aics_best():
    """The heroes lesson's K = 30 full covariances on 69 rows: every component holds a couple of heroes, so
    its AIC is lowest only through singular covariances (reg_covar); it must be flagged and not chosen."""
    from emvsbayes.family import get_family
    from emvsbayes.pipeline import child_seeds, load_data
    from emvsbayes.runner import model_choice
    from emvsbayes.spec import load_spec
    from conftest import ROOT

    spec = load_spec(ROOT / "models" / "heroes.toml")
    spec["model_choice"].update(components=[1, 2, 30], bayes=False)
    spec["em"].update(n_init=3)  # enough for the flag; the policy stops a degenerate search after n_init starts
    choice = model_choice(get_family("gaussian"), spec, load_data(spec), child_seeds(spec["seed"]), {}, None)
    assert choice["degenerate"].sel(K=30).item() == 1 and choice["degenerate"].sel(K=1).item() == 0
    assert choice["min_expected_count"].sel(K=30).item() < 14
    assert "degenerate" in str(choice["note"].sel(K=30).item())
    assert choice.attrs["degenerate_best_by_aic"] == 30
    assert choice.attrs["best_by_aic"] != 30


def test_singular_components_are_those_held_up_by_reg_covar():
    """Closed form: a covariance's smallest eigenvalue against twice reg_covar."""
    from emvsbayes.uncertainty import singular_components

    reg = 1e-6
    rotation = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    covs = np.stack([rotation @ np.diag([2.0, lam]) @ rotation.T for lam in (reg, 1.9 * reg, 2.1 * reg, 0.5)])
    assert singular_components(covs, reg).tolist() == [0, 1]


def test_a_cluster_sharing_one_value_of_a_two_valued_column_is_flagged_degenerate():
    """Many points, yet no cluster: 60 rows whose 0/1 column is 0 throughout beside 60 with both values. Soft EM
    with full covariances puts a component on the first group whose variance on that column is reg_covar (its
    likelihood there grows as reg_covar shrinks). Its expected count (60) passes the count rule; the singular rule
    flags it, and the row's note says why. Diagonal covariances collapse the same way; spherical ones do not."""
    from emvsbayes.data import ContinuousData
    from emvsbayes.family import get_family
    from emvsbayes.pipeline import child_seeds
    from emvsbayes.runner import model_choice
    from emvsbayes.spec import validate

    rng = np.random.default_rng(7)
    x = np.column_stack([np.concatenate([rng.normal(-3, 1, 60), rng.normal(3, 1, 60)]),
                         np.concatenate([np.zeros(60), rng.integers(0, 2, 60)])])
    family = get_family("gaussian")
    for covariance, flagged in (("full", 1), ("diag", 1), ("spherical", 0)):
        spec = validate({"data": {"dataset": "galaxies"}, "model": {"family": "gaussian", "covariance": covariance},
                         "em": {"n_init": 5, "max_init": 5, "reach_best": 1, "bootstrap": 0},
                         "model_choice": {"components": [2], "bayes": False}})
        data = ContinuousData(x=x, columns=("a", "b"), labels=tuple(str(i) for i in range(len(x))))
        choice = model_choice(family, spec, data, child_seeds(1), {}, None)
        assert choice["min_expected_count"].sel(K=2).item() > 50, covariance
        assert choice["degenerate"].sel(K=2).item() == flagged, covariance
        if flagged:
            assert "singular but for reg_covar = 1e-06" in str(choice["note"].sel(K=2).item())


def test_a_main_fit_whose_component_collapsed_is_a_finding_on_its_page():
    """The same collapse in the comparison's own fit (not only in model choice): the em group records why
    (attribute ``degenerate``) and the summary warns, naming the fix; a sound fit records "" and gets no warning."""
    from emvsbayes.data import ContinuousData
    from emvsbayes.family import get_family
    from emvsbayes.gaussian import em as gaussian_em
    from emvsbayes.gaussian.model import GaussianMixtureModel
    import xarray as xr

    from emvsbayes.report.summary import build_summary
    from emvsbayes.results import build_tree

    rng = np.random.default_rng(7)
    x = np.column_stack([np.concatenate([rng.normal(-3, 1, 60), rng.normal(3, 1, 60)]),
                         np.concatenate([np.zeros(60), rng.integers(0, 2, 60)])])
    data = ContinuousData(x=x, columns=("a", "b"), labels=tuple(str(i) for i in range(len(x))))
    family = get_family("gaussian")
    for covariance, collapsed in (("full", True), ("spherical", False)):
        model = GaussianMixtureModel(2, covariance)
        start = gaussian_em.params_from_resp(model, x, np.eye(2)[(x[:, 0] > 0).astype(int)])
        fit = gaussian_em.fit(model, x, start, tol=1e-10, max_iter=2000)
        attrs = family.estimate_attrs(model, data, fit, [])
        assert ("singular but for reg_covar" in attrs["degenerate"]) is collapsed, covariance
        em = xr.Dataset({"loglik": fit.loglik}, attrs={**attrs, "converged": 1, "n_iter": fit.n_iter})
        texts = [w.problem for w in build_summary(build_tree({"em": em}, {})).warnings]
        assert any(t.startswith("EM's answer is degenerate: the covariance of component 0") for t in texts) is collapsed
