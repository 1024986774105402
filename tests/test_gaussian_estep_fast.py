"""The fast route of the Gaussian E-step (:mod:`emvsbayes.gaussian.estep_fast`: blocks, threads, scores relative
to component 0, the centred route) and the batched steps (:mod:`emvsbayes.gaussian.batched`) against the plain
definition, on seeded random problems of every covariance structure.

The oracle is the definition written out: log w_k + log N(x_i | mu_k, Sigma_k) per component
(:meth:`GaussianMixtureModel.log_joint`, a loop over components on the centred data), ``scipy``'s
``logsumexp``, and the responsibility-weighted sums taken directly. The routes differ only in the order of
floating-point operations, so they agree to rounding: 1e-12 relative (the expanded quadratic's error is about
1e-15 x trace(P_z) per point, and these problems keep trace(P_z) below 1e2).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from emvsbayes.gaussian import em as gem
from emvsbayes.gaussian import estep_fast as fast
from emvsbayes.gaussian.model import COVARIANCE_TYPES, GaussianMixtureModel, GaussianParams
from emvsbayes.gaussian.structures import STRUCTURES

RTOL = 1e-12


def random_problem(covariance_type: str, n: int, dim: int, k: int, seed: int, params_seed: int | None = None):
    """Data from k clusters and random parameters near them (not the fitted ones; drawn from ``params_seed``
    if given, so several parameter sets go with the same data)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, size=(k, dim)) + 100.0  # away from the origin: standardising matters
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=dim)
    if params_seed is not None:
        rng = np.random.default_rng(params_seed)
    w = rng.dirichlet(np.full(k, 5.0))
    mu = centres + rng.normal(0.0, 0.5, size=(k, dim))

    def spd():
        a = rng.normal(size=(dim, dim))
        return a @ a.T / dim + 0.5 * np.eye(dim)

    prec = {
        "full": lambda: np.stack([spd() for _ in range(k)]),
        "tied": spd,
        "diag": lambda: rng.uniform(0.3, 2.0, size=(k, dim)),
        "spherical": lambda: rng.uniform(0.3, 2.0, size=k),
    }[covariance_type]()
    return GaussianMixtureModel(k, covariance_type), x, GaussianParams.from_precisions(w, mu, prec, covariance_type)


def plain_moments(covariance_type: str, resp: np.ndarray, z: np.ndarray):
    """(n_k, sum_z, sum_zz) by definition from responsibilities (N, K) and standardised data (N, D)."""
    sum_zz = {
        "full": lambda: np.einsum("nk,nd,ne->kde", resp, z, z),
        "tied": lambda: z.T @ z,
        "diag": lambda: resp.T @ np.square(z),
        "spherical": lambda: resp.T @ np.square(z).sum(axis=1),
    }[covariance_type]()
    return resp.sum(axis=0), resp.T @ z, sum_zz


def assert_close(actual, expected, rtol=RTOL):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, float(np.abs(expected).max())))


CASES = [(1, 2, 11), (2, 3, 12), (5, 4, 13)]  # (D, K, seed)


@pytest.mark.parametrize("cores", [1, 2])
@pytest.mark.parametrize(("dim", "k", "seed"), CASES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fast_soft_e_step_equals_the_plain_definition(covariance_type, dim, k, seed, cores, monkeypatch):
    monkeypatch.setattr(fast, "_AVAILABLE_CORES", cores)
    model, x, params = random_problem(covariance_type, 1500, dim, k, seed)
    data = gem.prepare(model, x, chunk_size=64)  # 24 blocks, a ragged last one: both threads busy at cores=2
    assert fast.e_step_threads(data) == cores
    joint = model.log_joint(params, x)
    log_norm = logsumexp(joint, axis=1, keepdims=True)
    resp = np.exp(joint - log_norm)

    stats, loglik = gem.e_step(model, data, params)

    assert loglik == pytest.approx(float(log_norm.sum()), rel=RTOL)
    assert_close(stats.log_resp, joint - log_norm, rtol=1e-10)  # log of small responsibilities: absolute
    z = (x - data.frame.centre) / data.frame.scale
    nk, sum_z, sum_zz = plain_moments(covariance_type, resp, z)
    assert_close(stats.nk, nk)
    assert_close(stats.sum_z, sum_z)
    assert_close(stats.sum_zz, sum_zz)
    assert_close(stats.sum_x, resp.T @ x)
    # The public scoring functions take the same route.
    assert_close(gem.log_joint(model, params, x), joint)
    assert_close(gem.score_samples(model, params, x), log_norm[:, 0])


@pytest.mark.parametrize(("dim", "k", "seed"), CASES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fast_hard_e_step_equals_the_plain_classification(covariance_type, dim, k, seed):
    model, x, params = random_problem(covariance_type, 1500, dim, k, seed)
    data = gem.prepare(model, x, chunk_size=64)
    joint = model.log_joint(params, x)
    best = np.argmax(joint, axis=1)
    one_hot = np.eye(k)[best]

    stats, objective = gem.hard_e_step(model, data, params)

    assert objective == pytest.approx(float(joint[np.arange(len(x)), best].sum()), rel=RTOL)
    np.testing.assert_array_equal(stats.labels, best)
    z = (x - data.frame.centre) / data.frame.scale
    for actual, expected in zip((stats.nk, stats.sum_z, stats.sum_zz), plain_moments(covariance_type, one_hot, z)):
        assert_close(actual, expected)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fast_m_step_from_e_step_equals_the_plain_updates(covariance_type):
    # One whole iteration by the fast route against the textbook updates in original units.
    dim, k = 3, 3
    model, x, params = random_problem(covariance_type, 1500, dim, k, 21)
    model = GaussianMixtureModel(k, covariance_type, reg_covar=1e-6)
    stats, _ = gem.e_step(model, gem.prepare(model, x, chunk_size=64), params)
    new = gem.m_step(model, stats, params)
    joint = model.log_joint(params, x)
    resp = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    nk = resp.sum(axis=0)
    mu = resp.T @ x / nk[:, None]
    scatter = np.einsum("nk,nkd,nke->kde", resp, x[:, None] - mu, x[:, None] - mu)
    cov = {
        "full": lambda: scatter / nk[:, None, None] + 1e-6 * np.eye(dim),
        "tied": lambda: scatter.sum(axis=0) / nk.sum() + 1e-6 * np.eye(dim),
        "diag": lambda: np.diagonal(scatter, axis1=1, axis2=2) / nk[:, None] + 1e-6,
        "spherical": lambda: np.trace(scatter, axis1=1, axis2=2) / (dim * nk) + 1e-6,
    }[covariance_type]()
    assert_close(new.w, nk / nk.sum())
    assert_close(new.mu, mu)
    assert_close(new.covariances(), cov, rtol=1e-11)  # through the factor and back: two more roundings


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batched_steps_equal_the_fast_route_fit_by_fit(covariance_type):
    # B = 3 fits, each its own random parameters on a resample of the same data (counts): the batched E-step's
    # log-likelihood and weighted responsibilities, and its M-step, against e_step / m_step of the resample.
    dim, k, n_fits = 2, 3, 3
    model, x, _ = random_problem(covariance_type, 400, dim, k, 31)
    starts = [random_problem(covariance_type, 400, dim, k, 31, params_seed=40 + j)[2] for j in range(n_fits)]
    rng = np.random.default_rng(32)
    counts = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=n_fits)
    sets = gem.GaussianSets(x[None], counts, gem.prepare(model, x).frame)
    stacked = GaussianParams(*(np.stack([getattr(s, name) for s in starts]) for name in ("w", "mu", "prec_chol")),
                             covariance_type)
    rows = np.arange(n_fits)

    batched_stats, batched_loglik = gem.batched_e_step(model, sets, stacked, rows)
    batched_new, _, errors = gem.batched_m_step(model, sets, batched_stats, stacked, rows, iteration=1)

    assert errors is None
    for j, start in enumerate(starts):
        resample = np.repeat(x, counts[j], axis=0)
        stats, loglik = gem.e_step(model, gem.prepare(model, resample, frame=sets.frame, chunk_size=64), start)
        assert batched_loglik[j] == pytest.approx(loglik, rel=RTOL)
        assert_close(batched_stats.resp[j].sum(axis=1), stats.nk)
        assert_close(batched_stats.resp[j] @ x, stats.sum_x)
        single = gem.m_step(model, stats, start)
        assert_close(batched_new.w[j], single.w)
        assert_close(batched_new.mu[j], single.mu)
        assert_close(batched_new.prec_chol[j], single.prec_chol, rtol=1e-11)


def test_every_structure_object_is_complete_and_counts_parameters_as_the_model():
    # One object per structure carries the whole M-step; its design has the rows its statistics read.
    for name, structure in STRUCTURES.items():
        assert structure.name == name
        for dim in (1, 3):
            z = np.arange(2.0 * dim).reshape(dim, 2)
            design = np.ones((structure.n_design(dim), 2))
            structure.design(z, design)
            np.testing.assert_array_equal(design[1 : 1 + dim], z)
            assert structure.n_free_parameters(3, dim) == GaussianMixtureModel(3, name).n_free_parameters(dim)
