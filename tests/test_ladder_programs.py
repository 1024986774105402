"""The ladder's exported programs (emvsbayes.ladder.programs) against the PyMC route they replace and
against closed forms.

Oracles: a conjugate coin, whose log-odds Laplace approximation is known in closed form; PyMC's own
compiled log posterior and Laplace fit of the same two-coin mixture (the same search on the same
function: equal to the optimiser's tolerance); the exact Gaussian posterior of a conjugate linear
regression for ADVI. ADVI tolerances are 4 of q's own jitters (the sd of its mean and sd over the last
quarter of the iterations, as in test_ladder_vi: the final iterate is one draw from that stationary
spread; 4 sd fails by chance with probability 6e-5 per coordinate, and the seed is fixed).
"""

import numpy as np
import pymc as pm
import pytest

from conftest import ORACLE_MODE
from emvsbayes.coins.bayes import build_model
from emvsbayes.coins.model import CoinMixture
from emvsbayes.ladder import programs as lp
from emvsbayes.ladder.laplace import laplace, laplace_programs
from emvsbayes.ladder.vi import fit_vi_programs, pareto_k

HEADS = np.array([9, 8, 9, 10, 1, 2, 0, 1])
TOSSES = np.full(8, 10)


@pytest.fixture(scope="module")
def coin_mixture():
    model_def = CoinMixture(n_components=2, weights="estimated", theta_prior=(2.0, 2.0), w_concentration=2.0)
    model = build_model(model_def, HEADS, TOSSES)
    return model, lp.build_programs(model, lp.AdviSettings(methods=("fullrank",), n_iter=200))


def test_log_posterior_and_its_gradient_equal_pymcs_where_jitted_reverse_mode_gave_nan(coin_mixture):
    model, programs = coin_mixture
    logp = model.compile_logp(jacobian=True, mode=ORACLE_MODE)
    dlogp = model.compile_dlogp(jacobian=True, mode=ORACLE_MODE)
    # 1.2755, -2.6549, 0.2202 is where the jitted reverse-mode gradient of this log posterior was NaN in
    # w's simplex coordinate; the other points are ordinary draws.
    points = np.vstack([[1.27549596, -2.65494716, 0.22019512], np.random.default_rng(0).normal(size=(20, 3)) * 2])
    info = programs.point_map_info
    for phi in points:
        point = {"theta_logodds__": phi[:2], "w_simplex__": phi[2:]}
        np.testing.assert_allclose(programs.logp(phi), logp(point), rtol=1e-12)
        np.testing.assert_allclose(programs.grad(phi), dlogp(point), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(programs.logp_batch(points), [programs.logp(p) for p in points], rtol=1e-12)
    assert [entry[0] for entry in info] == ["theta_logodds__", "w_simplex__"]
    values = programs.constrained_values(points)
    np.testing.assert_allclose(values["theta"], 1 / (1 + np.exp(-points[:, :2])), rtol=1e-12)
    np.testing.assert_allclose(values["w"].sum(axis=1), 1.0, atol=1e-12)


def _square_root_where_positive(phi):
    # The classic reverse-mode trap: the unused branch's derivative (inf at 0, NaN below) times a zero
    # cotangent is NaN in reverse mode; forward mode selects the used branch's tangent and stays finite.
    import jax.numpy as jnp

    return jnp.sum(jnp.where(phi > 0, jnp.sqrt(phi), 0.0))


def test_gradients_fall_back_to_forward_mode_only_for_a_batch_where_reverse_mode_is_not_finite():
    import jax
    import jax.numpy as jnp

    from emvsbayes.sampling import configure_jax

    configure_jax()  # float64, as the programs run
    logp_batch, value_and_grad_batch = lp.reverse_mode_with_forward_fallback(_square_root_where_positive)
    positive = np.array([[0.25, 4.0], [1.0, 9.0]])
    assert np.isfinite(jax.vmap(jax.grad(_square_root_where_positive))(positive)).all()
    values, grads = jax.jit(value_and_grad_batch)(positive)
    np.testing.assert_allclose(values, np.sqrt(positive).sum(axis=1), rtol=1e-15)
    np.testing.assert_allclose(grads, 0.5 / np.sqrt(positive), rtol=1e-15)  # d sqrt(x) / dx

    with_zero = np.array([[0.25, 4.0], [0.0, -1.0]])
    assert not np.isfinite(jax.jit(jax.vmap(jax.grad(_square_root_where_positive)))(with_zero)).all()
    _, grads = jax.jit(value_and_grad_batch)(with_zero)
    np.testing.assert_allclose(grads, [[1.0, 0.25], [0.0, 0.0]], rtol=1e-15)
    # The derivative the ADVI loss sees through logp_batch is the same rule.
    weights = jnp.array([2.0, 3.0])
    np.testing.assert_allclose(jax.jit(jax.grad(lambda z: weights @ logp_batch(z)))(with_zero),
                               [[2.0, 0.5], [0.0, 0.0]], rtol=1e-15)


def test_the_gradient_is_reverse_mode_unless_it_fails_so_its_cost_does_not_grow_with_the_dimension():
    """Forward mode (P directional derivatives, intermediates of shape (s, P, P)) made Old Faithful's ADVI
    step 10-700 times slower than reverse mode (benchmarks/README.md); it may run only in the fallback
    branch of a ``cond``. Read from the traced program, not timed."""
    import jax
    import jax.numpy as jnp

    n_points, dim = 3, 7

    def logp(phi):
        return -0.5 * jnp.sum(phi**2) - jnp.sum(jnp.log1p(jnp.exp(phi)))

    _, value_and_grad_batch = lp.reverse_mode_with_forward_fallback(logp)
    jaxpr = jax.make_jaxpr(value_and_grad_batch)(jnp.zeros((n_points, dim))).jaxpr
    outside = [tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars]  # cond branches not entered
    assert max(int(np.prod(shape)) for shape in outside) == n_points * dim
    conds = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "cond"]
    assert len(conds) == 1
    # the fallback branch is forward mode: its (s, P, P) tangents are there
    inside = {tuple(v.aval.shape) for branch in conds[0].params["branches"] for eqn in branch.jaxpr.eqns
              for v in eqn.outvars}
    assert max(int(np.prod(shape)) for shape in inside) == n_points * dim * dim


def test_laplace_on_the_programs_is_pymcs_laplace(coin_mixture):
    model, programs = coin_mixture
    start = {"theta": np.array([0.8, 0.2]), "w": np.array([0.5, 0.5])}
    fit, reference = laplace_programs(programs, start), laplace(model, start)
    # Both polish the mode with Newton steps to a gradient of ~1e-12; the Hessians are central
    # differences of the same gradient (relative error ~1e-9).
    np.testing.assert_allclose(fit.mode, reference.mode, atol=1e-9)
    np.testing.assert_allclose(fit.cov, reference.cov, rtol=1e-6)
    np.testing.assert_allclose(fit.log_posterior, reference.log_posterior, rtol=1e-12)
    assert fit.value_names == reference.value_names


def test_a_conjugate_coin_has_the_closed_form_laplace_approximation():
    a_prior, b_prior, heads, tosses = 2.0, 3.0, 7, 20
    with pm.Model() as model:
        theta = pm.Beta("theta", a_prior, b_prior)
        pm.Binomial("heads", n=tosses, p=theta, observed=heads)
    programs = lp.build_programs(model, lp.AdviSettings(methods=(), n_iter=8))
    fit = laplace_programs(programs, {"theta": 0.9})
    a, b = a_prior + heads, b_prior + tosses - heads
    # On the log-odds scale the density is a log theta + b log(1 - theta): mode log(a / b), variance (a + b) / (a b).
    np.testing.assert_allclose(fit.mode, [np.log(a / b)], atol=1e-9)
    np.testing.assert_allclose(fit.cov, [[(a + b) / (a * b)]], rtol=1e-7)


@pytest.fixture(scope="module")
def regression():
    sigma, tau = 0.5, 10.0
    x = np.linspace(0.0, 2.0, 12)
    y = 1.0 + 0.5 * x + np.random.default_rng(0).normal(size=12) * sigma
    design = np.column_stack([np.ones_like(x), x])
    precision = design.T @ design / sigma**2 + np.eye(2) / tau**2
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ y / sigma**2
    with pm.Model() as model:
        b = pm.Normal("b", 0.0, tau, shape=2)
        pm.Normal("y", design @ b, sigma, observed=y)
    return lp.build_programs(model, lp.AdviSettings(methods=("meanfield", "fullrank"), n_iter=3000)), mean, cov, precision


def test_fullrank_advi_program_finds_the_exact_gaussian_posterior(regression):
    programs, mean, cov, _ = regression
    fit = fit_vi_programs(programs, "fullrank", seed=1)
    assert np.all(np.abs(fit.mean - mean) < 4 * fit.mean_jitter)
    assert np.all(np.abs(fit.sd - np.sqrt(np.diag(cov))) < 4 * fit.sd_jitter)
    assert abs(fit.cov[0, 1] / np.prod(fit.sd) - cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])) < 0.05
    # The ELBO rises: the last tenth's mean above the first tenth's.
    assert fit.elbo[-300:].mean() > fit.elbo[:300].mean()
    diagnostic = pareto_k(None, fit, 2000, np.random.default_rng(3), log_posterior_batch=programs.logp_batch)
    assert diagnostic.verdict == "good"


def test_meanfield_advi_program_gives_the_known_understated_spread(regression):
    programs, mean, cov, precision = regression
    fit = fit_vi_programs(programs, "meanfield", seed=1)
    assert np.all(np.abs(fit.mean - mean) < 4 * fit.mean_jitter)
    assert np.all(np.abs(fit.sd - 1 / np.sqrt(np.diag(precision))) < 4 * fit.sd_jitter)
    np.testing.assert_array_equal(fit.cov - np.diag(np.diag(fit.cov)), 0.0)


def test_stored_programs_load_and_give_the_same_answers(coin_mixture, tmp_path):
    _, programs = coin_mixture
    lp.store(programs, "k", tmp_path)
    loaded = lp.load("k", programs.settings, tmp_path)
    assert loaded is not None and loaded.facts.outputs == programs.facts.outputs
    phi = np.array([0.3, -0.4, 0.1])
    assert loaded.logp(phi) == programs.logp(phi)
    assert lp.load("k", lp.AdviSettings(methods=("fullrank",), n_iter=201), tmp_path) is None  # other settings
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert lp.load("bad", programs.settings, tmp_path) is None
