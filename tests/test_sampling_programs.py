"""numpyro's NUTS as stored programs (emvsbayes.sampling.programs, numpyro_nuts) and model recipes.

Oracles: numpyro's own ``MCMC`` driver with the same kernel, keys and starts (the programs run exactly
its steps: the same trees, positions equal to rounding); the same programs before and after a trip
through the disk cache (equal to the bit); chains laid out on one device each or vectorised on one
device.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emvsbayes.coins import bayes
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.data import load_dataset
from emvsbayes.sampling import ModelRecipe, SamplerSettings, configure_jax, sample_posterior
from emvsbayes.sampling import programs as prog
from emvsbayes.sampling.numpyro_nuts import obtain_programs, sample_numpyro
from emvsbayes.sampling.recipe import as_recipe

MODEL = CoinMixture(2, weights="estimated", ordered=True)
START = CoinParams(np.array([0.52, 0.8]), np.array([0.45, 0.55]))


@pytest.fixture(scope="module")
def paper():
    return load_dataset("coins_do_batzoglou")


@pytest.fixture
def program_dir(tmp_path, monkeypatch):
    directory = tmp_path / "programs"
    monkeypatch.setenv("EMVSBAYES_PROGRAM_CACHE_DIR", str(directory))
    return directory


def _recipe(paper, model=MODEL):
    return ModelRecipe(bayes.build_model, (model, paper.heads, paper.tosses))


def test_recipe_key_names_the_model_and_nothing_else(paper):
    key = _recipe(paper).key
    assert key == _recipe(paper).key and len(key) == 64
    assert _recipe(paper, dataclasses.replace(MODEL, w_concentration=2.0)).key != key
    other = ModelRecipe(bayes.build_model, (MODEL, paper.heads, paper.tosses + 1))
    assert other.key != key
    # Same numbers as another dtype are other data.
    assert ModelRecipe(bayes.build_model, (MODEL, paper.heads.astype(float), paper.tosses)).key != key
    assert ModelRecipe(bayes.build_model, (MODEL, paper.heads, paper.tosses), {"set_labels": ["a"] * 5}).key != key
    # Something without a content digest: no key, so never stored.
    assert ModelRecipe(bayes.build_model, (MODEL, object(), paper.tosses)).key is None
    assert as_recipe(bayes.build_model(MODEL, paper.heads, paper.tosses)).key is None


def test_programs_run_numpyros_own_steps(paper, program_dir):
    """Warm-up and draws in blocks (tune 30, draws 20: 3 + 2 calls of 10 steps) against MCMC.run."""
    import jax
    from numpyro.infer import MCMC, NUTS
    from pymc.sampling.jax import get_jaxified_logp

    configure_jax()
    settings = SamplerSettings(chains=2, tune=30, draws=20, target_accept=0.8)
    recipe = _recipe(paper)
    start = bayes.initvals_from_params(MODEL, [START])
    ours = sample_numpyro(recipe, settings, 5, start, log_likelihood=False).tree

    model = recipe.model()
    programs, _ = obtain_programs(recipe, prog.ProgramSpec(prog.ChainLayout.for_chains(2, jax.local_device_count()),
                                                           30, 20, 0.8))
    to_unconstrained = programs.callable("to_unconstrained")
    point = [np.asarray(v) for v in to_unconstrained(*prog.free_rv_arrays(programs.facts, start[0]))]
    kernel = NUTS(potential_fn=get_jaxified_logp(model, negative_logp=False), target_accept_prob=0.8)
    mcmc = MCMC(kernel, num_warmup=30, num_samples=20, num_chains=2, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.split(jax.random.PRNGKey(5), 2), init_params=[np.stack([p, p]) for p in point],
             extra_fields=("num_steps",))
    raw = mcmc.get_samples(group_by_chain=True)
    names = [v.name for v in model.value_vars]
    reference = dict(zip(names, raw)) if not isinstance(raw, dict) else raw
    constrain = programs.callable("constrain")
    values = dict(zip(programs.facts.posterior_vars, constrain(*[np.asarray(reference[n]) for n in names])))
    # The same trajectories: every tree has the same number of leapfrog steps, and the positions agree
    # to rounding (XLA fuses the two programs' arithmetic differently, so the last bits differ and the
    # difference grows along the 50 steps: 5e-8 relative was seen).
    np.testing.assert_array_equal(ours["sample_stats"]["n_steps"].values,
                                  np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"]))
    np.testing.assert_allclose(ours["posterior"]["theta"].values, np.asarray(values["theta"]), rtol=1e-6)


def test_stored_programs_give_the_same_draws_and_need_no_pymc(paper, program_dir):
    settings = SamplerSettings(chains=2, tune=50, draws=50)
    start = bayes.initvals_from_params(MODEL, [START])
    first = sample_posterior(_recipe(paper), settings, 3, start)
    assert first.compiled == "built" and len(list(program_dir.glob("*.npz"))) == 1
    # A fresh recipe (nothing built in memory) is sampled from the stored programs alone.
    fresh = _recipe(paper)
    second = sample_posterior(fresh, settings, 3, start)
    assert second.compiled == "loaded" and "_model" not in fresh.__dict__
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        a, b = first.tree[group].to_dataset(), second.tree[group].to_dataset()
        assert list(a.data_vars) == list(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)
            assert a[name].dims == b[name].dims
    assert second.tree["posterior"].attrs["compiled_sampler"] == "loaded"
    # Another seed reuses them too.
    assert sample_posterior(_recipe(paper), settings, 4, start).compiled == "loaded"
    # A built model (no recipe) is sampled all the same, and not stored.
    unnamed = sample_posterior(bayes.build_model(MODEL, paper.heads, paper.tosses), settings, 3, start)
    assert unnamed.compiled.startswith("built (not stored")
    np.testing.assert_array_equal(unnamed.tree["posterior"]["theta"].values, first.tree["posterior"]["theta"].values)


def test_unreadable_store_is_rebuilt(paper, program_dir):
    settings = SamplerSettings(chains=2, tune=20, draws=20)
    start = bayes.initvals_from_params(MODEL, [START])
    sample_posterior(_recipe(paper), settings, 3, start)
    (path,) = program_dir.glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    again = sample_posterior(_recipe(paper), settings, 3, start)
    assert again.compiled == "built"
    assert sample_posterior(_recipe(paper), settings, 3, start).compiled == "loaded"


def test_chains_vectorised_on_one_device_match_one_device_each(paper):
    import jax

    configure_jax()
    recipe = _recipe(paper)
    start = bayes.initvals_from_params(MODEL, [START, CoinParams(np.array([0.4, 0.7]), np.array([0.5, 0.5]))])
    draws = {}
    for layout in (prog.ChainLayout(2, 2, 1), prog.ChainLayout(2, 1, 2)):
        programs = prog.build_programs(recipe.model(), prog.ProgramSpec(layout, 20, 20, 0.8))
        init = [np.stack([v, w]) for v, w in zip(*[[np.asarray(a) for a in programs.callable("to_unconstrained")(
            *prog.free_rv_arrays(programs.facts, s))] for s in start])]
        state = programs.callable("init")(np.asarray(jax.random.split(jax.random.PRNGKey(2), 2)), *init)
        state = programs.callable("steps")(*state)[0]
        _, samples, stats = programs.callable("steps")(*state)
        draws[layout.per_device] = np.asarray(samples[0]), np.asarray(stats["n_steps"])
    # Vectorised chains take the same trees; positions agree to rounding (different fusions).
    np.testing.assert_array_equal(draws[1][1], draws[2][1])
    np.testing.assert_allclose(draws[1][0], draws[2][0], rtol=1e-6)


def test_a_start_outside_the_support_is_dropped(paper, program_dir):
    settings = SamplerSettings(chains=2, tune=30, draws=30)
    bad = {"theta": np.array([0.9, 0.2]), "w": np.array([0.5, 0.5])}  # not increasing: ordered log-density -inf
    good = bayes.initvals_from_params(MODEL, [START])[0]
    tree = sample_posterior(_recipe(paper), settings, 3, [bad, good]).tree
    theta = tree["posterior"]["theta"].values
    assert np.all(np.isfinite(theta)) and np.all(np.diff(theta, axis=-1) > 0)
    import jax

    spec = prog.ProgramSpec(prog.ChainLayout.for_chains(2, jax.local_device_count()), 30, 30, 0.8)
    programs, obtained = obtain_programs(_recipe(paper), spec)
    assert obtained == "loaded"
    with pytest.raises(ValueError, match="unknown variables"):
        prog.free_rv_arrays(programs.facts, {"thetta": [0.1, 0.2]})
