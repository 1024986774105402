"""The observed-information function as an exported JAX program (issue 21 items 2 and 7): the program of each
family structure against PyTensor's compiled function of the same graph (the route every run took before),
the one-coin information against its closed form, and a second process taking the stored program without
importing PyTensor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from emvsbayes.coins import family as coins
from emvsbayes.gaussian import family as gaussian
from emvsbayes.poisson import family as poisson
from emvsbayes.uncertainty.information_programs import (
    InformationGraph,
    InformationProgram,
    InformationRecipe,
    build_program,
    compile_pytensor,
    information_program,
    load,
    store,
)

#: One structure of each kind the families export: equal and estimated coin weights, every Gaussian covariance
#: type in one and several dimensions, a Poisson mixture.
STRUCTURES = [
    (coins.information_graph, (2, "equal")),
    (coins.information_graph, (3, "estimated")),
    (gaussian.information_graph, ("full", 2, 1)),
    (gaussian.information_graph, ("full", 2, 2)),
    (gaussian.information_graph, ("tied", 2, 2)),
    (gaussian.information_graph, ("diag", 3, 2)),
    (gaussian.information_graph, ("spherical", 2, 3)),
    (poisson.information_graph, (3,)),
]


def _data(build, args, n, rng):
    if build is coins.information_graph:
        tosses = rng.integers(5, 20, size=n).astype(float)
        return rng.binomial(tosses.astype(int), 0.6).astype(float), tosses
    if build is gaussian.information_graph:
        return (rng.normal(size=(n, args[2])),)
    return (rng.poisson(4.0, size=n).astype(float),)


@pytest.mark.parametrize(("build", "args"), STRUCTURES, ids=lambda v: getattr(v, "__module__", repr(v)))
def test_the_program_equals_pytensors_function_and_survives_the_store(build, args, tmp_path):
    # The same derivative graph evaluated by XLA instead of PyTensor's Python linker: only rounding differs
    # (~1e-14 relative measured); 1e-10 relative of each output's largest entry is the bound the standard
    # errors are held to. Two row counts through one program: the rows are a symbolic dimension.
    import jax

    recipe = InformationRecipe(build, args)
    exported = build_program(recipe)
    store(exported, recipe.key, tmp_path)
    loaded = load(recipe.key, tmp_path)
    reference = compile_pytensor(recipe)
    size = build(*args).phi.type.shape[0]
    rng = np.random.default_rng(2112)
    for n in (7, 40):
        phi = 0.5 * rng.normal(size=size)
        data = _data(build, args, n, rng)
        expected = reference(phi, *data)
        got = jax.jit(exported.call)(phi, *data)
        again = jax.jit(loaded.call)(phi, *data)
        assert len(got) == len(expected) == 5
        for name, a, b, c in zip(("loglik", "gradient", "hessian", "natural", "jacobian"), got, expected, again):
            scale = max(float(np.max(np.abs(b))), 1e-300)
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-10 * scale, err_msg=name)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(c), err_msg=name)


def test_one_coin_information_is_the_binomial_information():
    # One coin with fixed weight: phi = logit(theta), the log-likelihood sum_i h_i log theta + (n_i - h_i)
    # log(1 - theta) + const, whose second derivative in phi is -T theta (1 - theta) (T the tosses) for every
    # theta, not only at the maximum; the Jacobian d theta / d phi is theta (1 - theta), so the information
    # about theta is T / (theta (1 - theta)).
    program = information_program(InformationRecipe(coins.information_graph, (1, "equal")))
    heads, tosses = np.array([5.0, 7, 8, 9, 4]), np.full(5, 10.0)
    for theta in (0.2, 0.5, 0.83):
        phi = np.array([np.log(theta / (1 - theta))])
        loglik, gradient, hessian, natural, jacobian = program(phi, heads, tosses)
        t, h = tosses.sum(), heads.sum()
        np.testing.assert_allclose(gradient, [h - t * theta], rtol=1e-12)
        np.testing.assert_allclose(hessian, [[-t * theta * (1 - theta)]], rtol=1e-12)
        np.testing.assert_allclose(natural, [theta, 1.0], rtol=1e-12)
        np.testing.assert_allclose(jacobian, [[theta * (1 - theta)], [0.0]], rtol=1e-12, atol=1e-300)
        information = -hessian[0, 0] / jacobian[0, 0] ** 2
        np.testing.assert_allclose(information, t / (theta * (1 - theta)), rtol=1e-12)


def _unshaped_graph():
    # phi without a static length: JAX cannot make the derivative graph's shapes constants, so no program.
    import pytensor.tensor as pt

    phi = pt.vector("phi", dtype="float64")
    x = pt.vector("x", dtype="float64")
    return InformationGraph(phi, (x,), -0.5 * pt.sum((x[:, None] - phi[None, :]) ** 2))


def test_a_structure_that_cannot_be_exported_falls_back_to_pytensor(tmp_path, monkeypatch):
    monkeypatch.setenv("EMVSBAYES_PROGRAM_CACHE_DIR", str(tmp_path))
    with pytest.raises(Exception):  # noqa: B017 - whatever JAX raises for a shape it cannot take
        build_program(InformationRecipe(_unshaped_graph))
    program = information_program(InformationRecipe(_unshaped_graph))
    assert program.how == "pytensor" and not list(tmp_path.glob("*.npz"))
    x = np.array([1.0, 2.0, 4.0])
    loglik, gradient, hessian = program(np.array([1.5, 0.0]), x)
    np.testing.assert_allclose(gradient, [x.sum() - 3 * 1.5, x.sum()], rtol=1e-14)
    np.testing.assert_allclose(hessian, -3 * np.eye(2), rtol=1e-14)


class _NotFinite:
    """An exported program's stand-in whose every value is NaN, as XLA:CPU's compiled gradients of some
    mixture graphs were at ordinary points (emvsbayes.ladder.programs)."""

    def call(self, phi, *data):
        import jax.numpy as jnp

        p, m = phi.shape[0], 2 * 2  # two coins' theta and w
        return (jnp.nan * phi.sum(), jnp.full(p, jnp.nan), jnp.full((p, p), jnp.nan), jnp.full(m, jnp.nan),
                jnp.full((m, p), jnp.nan))


def test_a_non_finite_evaluation_is_repeated_by_pytensor():
    recipe = InformationRecipe(coins.information_graph, (2, "estimated"))
    program = InformationProgram(recipe, "loaded", _NotFinite())
    phi, heads, tosses = np.array([0.4, -1.1, 0.3]), np.array([5.0, 7, 8, 9, 4]), np.full(5, 10.0)
    expected = compile_pytensor(recipe)(phi, heads, tosses)
    for got, want in zip(program(phi, heads, tosses), expected):
        np.testing.assert_array_equal(got, want)


SECOND_PROCESS = """
import json, sys
import numpy as np
from emvsbayes.coins.family import coin_standard_errors
from emvsbayes.coins.model import CoinMixture, CoinParams
se = coin_standard_errors(CoinMixture(2, "estimated"), np.array([5, 7, 8, 9, 4, 6]), np.full(6, 10),
                          CoinParams(np.array([0.8, 0.52]), np.array([0.45, 0.55])))
print(json.dumps({"pytensor": "pytensor" in sys.modules, "se": [x.tolist() for x in se.se.values()]}))
"""


def test_a_second_process_takes_the_stored_program_without_pytensor(tmp_path):
    # Before, every process imported PyTensor and compiled the Hessian (~0.6-1 s of a warm lecture run, ~3 s
    # per Dask worker of a study); now the first stores the program and the next loads it.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "EMVSBAYES_PROGRAM_CACHE_DIR": str(tmp_path)}

    def run():
        proc = subprocess.run([sys.executable, "-c", SECOND_PROCESS], capture_output=True, text=True, cwd=ROOT,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["pytensor"] and not second["pytensor"]
    assert first["se"] == second["se"] and np.all(np.isfinite(np.concatenate(first["se"])))


@pytest.mark.parametrize("emission", ["poisson", "gaussian"])
def test_the_hidden_markov_models_program_equals_its_pytensor_scan(emission):
    # The HMM's derivatives are JAX's over the sampled model's own JAX forward recursion (PyTensor's scan does
    # not export); against PyTensor's symbolic Hessian of the scan with the series as a constant (the route
    # before: ~7 s to compile and ~5 s to evaluate at T = 400 on this machine). Rounding only: 1e-10 of each
    # output's largest entry.
    from emvsbayes.hmm import family as hmm
    from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams
    from emvsbayes.uncertainty.information import compile_information

    transition = np.array([[0.85, 0.1, 0.05], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    if emission == "poisson":
        model = HiddenMarkovModel(n_components=3, emission="poisson", initial="stationary")
        truth = model.with_initial(None, transition, rate=np.array([2.0, 6.0, 15.0]))
    else:
        model = HiddenMarkovModel(n_components=3, emission="gaussian", initial="estimated")
        truth = HMMParams(np.array([0.5, 0.3, 0.2]), transition, mu=np.array([-2.0, 0.5, 3.0]),
                          sigma=np.array([0.7, 1.0, 0.5]))
    data = hmm.FAMILY.simulate(model, truth, 60, np.random.default_rng(5))
    program = information_program(InformationRecipe(hmm.information_graph, (model,)))
    assert program.how in ("built", "loaded")
    phi_symbol, loglik = hmm.FAMILY.symbolic_loglik(model, data)
    reference = compile_information(phi_symbol, [], loglik)
    rng = np.random.default_rng(8)
    for _ in range(2):
        phi = hmm.FAMILY.to_unconstrained(model, truth) + 0.2 * rng.normal(size=len(hmm.FAMILY.unconstrained_names(model)))
        got = program(phi, np.asarray(data.y, dtype=float))
        for name, a, b in zip(("loglik", "gradient", "hessian"), got, reference(phi)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(b))), err_msg=name)
    # The family's function: the program's derivatives, the natural variables' Jacobian by central differences.
    value, gradient, hessian, natural, jacobian = hmm.FAMILY.information_function(model, data)(phi)
    assert natural.size == jacobian.shape[0] and jacobian.shape[1] == phi.size


@pytest.mark.parametrize(("build", "args"), STRUCTURES, ids=lambda v: getattr(v, "__module__", repr(v)))
def test_blocks_of_rows_give_the_whole_datas_information(build, args):
    """Rows are independent in these families, so the log-likelihood, gradient and Hessian of the data are the sums
    over blocks of rows: what summed_over_rows evaluates where all the rows at once would not fit its budget."""
    from emvsbayes.uncertainty.information import BYTES_PER_ROW_AND_ENTRY

    rng = np.random.default_rng(11)
    program = information_program(InformationRecipe(build, args))
    p = build(*args).phi.type.shape[0]
    phi, data = 0.1 * rng.normal(size=p), _data(build, args, 50, rng)
    whole = program(phi, *data)
    blocks = program.summed_over_rows(phi, *data, budget=BYTES_PER_ROW_AND_ENTRY * p * p * 7)  # 7 rows a block
    for name, a, b in zip(("loglik", "gradient", "hessian"), whole, blocks):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.max(np.abs(a)), err_msg=name)
    for a, b in zip(whole[3:], blocks[3:]):  # the natural values and their Jacobian do not depend on the data
        np.testing.assert_array_equal(a, b)


def test_an_information_too_large_for_memory_is_reported_not_computed(monkeypatch):
    """Wide data with full covariances (60 x 50: 2,651 coordinates) asked JAX for 19.8 GB at once and ended
    runs with an internal error, or the machine out of memory. Beyond its budget (an eighth of the memory limit,
    at most 1 GB) the information is not computed, and the Wald intervals say why."""
    from emvsbayes.gaussian.model import GaussianMixtureModel
    from emvsbayes.uncertainty.information import standard_errors

    family = gaussian.FAMILY
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-2, 1, size=(40, 3)), rng.normal(2, 1, size=(40, 3))])
    data = family.from_arrays({"x": x})
    model_def = GaussianMixtureModel(2, "full")
    params = family.fit(model_def, data, family.random_starts(model_def, data, 1, rng)[0]).params
    assert not standard_errors(family, model_def, data, params).singular
    # 19 coordinates: one row needs 361 x (64 + 8 K D = 48) bytes = 40 KB; a limit of 160 KB leaves 20 KB
    monkeypatch.setenv("EMVSBAYES_MEMORY_LIMIT", "160K")
    se = standard_errors(family, model_def, data, params)
    assert se.singular and all(np.isnan(v).all() for v in se.se.values())
    assert se.reason == ("the observed information of 19 coordinates would need about 39.5 KB of memory even one row "
                         "at a time, more than the 20 KB allowed for it; fewer parameters (a diagonal or spherical "
                         "covariance, fewer columns) give Wald intervals, and the bootstrap and the posterior do not "
                         "need them")
    # A matrix too large to hold is refused before its graph is built: 30 rows x 200 columns, full covariances,
    # 40,601 coordinates, whose PyTensor rewrites alone asked for 48 GB (printing their tracebacks, then exit 1 or the
    # machine's out-of-memory killer). Here with the default limit; the parameters are never looked at.
    monkeypatch.delenv("EMVSBAYES_MEMORY_LIMIT")
    wide = family.from_arrays({"x": rng.normal(size=(30, 200))})
    se = standard_errors(family, model_def, wide, params)
    assert se.singular and se.reason.startswith("the observed information of 40,601 coordinates is a matrix of 12.3 GB, "
                                                "more than the 1 GB allowed for it; fewer parameters")
    # A matrix that fits but whose evaluation would not, one row at a time: refused before its program is built
    # (10 rows x 100 columns, 10,301 coordinates: a 0.85 GB matrix, and building its program took over 20 GB)
    ten = family.from_arrays({"x": rng.normal(size=(10, 100))})
    from emvsbayes.uncertainty.information import InformationTooLarge

    with pytest.raises(InformationTooLarge, match="^the observed information of 10,301 coordinates would need about "):
        family.information_function(model_def, ten)
