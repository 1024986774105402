"""A study repeats itself to the bit, whatever the compile caches hold, the number of workers and the
order in which replicates are run (README, "Simulation studies").

The oracle is the study itself: every stored replicate's numbers (EM, bootstrap, posterior draws'
summaries, R-hat, divergences, label switching, coverage) must be equal to the last bit across runs.
Each run is a real ``LocalCluster`` of worker processes started by :func:`run_study`, the replicates
submitted in a shuffled order (``EMVSBAYES_STUDY_SHUFFLE``): two workers on empty PyTensor, JAX and
program caches (one builds the programs while the other waits, then loads them), then one worker on
the caches they filled. Before the fix the sampler's compiled log-density differed in its last bits
between a fresh compile and one loaded from PyTensor's cache (numba fastmath), so the warm run's
posterior draws differed from the cold run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ORACLE_MODE
from emvsbayes.study.run import SHUFFLE_ENV, record_path, run_study
from emvsbayes.study.spec import cells, load_study_spec

# One cell, four replicates, short chains.
SPEC = """
kind = "coverage"
seed = 20240601
replicates = 4
[model]
family = "gaussian"
covariance = "full"
[grid]
n_obs = [40]
separation = [2.0]
[em]
n_init = 2
[bayes]
chains = 2
draws = 100
tune = 100
[intervals]
kinds = ["bootstrap", "posterior"]
bootstrap = 10
"""

# Rates per second are timings; everything else a replicate stores is a result.
NOT_RESULTS = ("ess_per_second",)


def _caches(root: Path, monkeypatch) -> None:
    """Point every compile cache of this run's worker processes at new empty folders."""
    monkeypatch.setenv("PYTENSOR_FLAGS", f"base_compiledir={root / 'pytensor'}")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(root / "jax"))
    monkeypatch.setenv("EMVSBAYES_PROGRAM_CACHE_DIR", str(root / "programs"))


def _stored_results(out: Path, spec: dict) -> dict:
    """(cell, replicate) -> the replicate's stored numbers as exact text (JSON keeps every bit of a float)."""
    found = {}
    for c in range(len(cells(spec))):
        for r in range(spec["replicates"]):
            record = json.loads(record_path(out / "store", c, r).read_text(encoding="utf-8"))
            assert record["status"] == "ok", record["error"]
            scalars = {k: v for k, v in record["scalars"].items() if k not in NOT_RESULTS}
            found[c, r] = json.dumps({"values": record["values"], "scalars": scalars}, sort_keys=True)
    return found


@pytest.mark.slow
def test_every_replicate_is_bit_identical_across_caches_workers_and_order(tmp_path, monkeypatch):
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(SPEC, encoding="utf-8")
    spec = load_study_spec(spec_path)
    runs = {}
    # (name, workers, caches, shuffle seed): two workers on fresh caches (one builds and stores the programs, the
    # other waits and loads them), then one worker on those warm caches, in another order.
    for name, workers, caches, shuffle in (("fresh-2", 2, "b", 2), ("warm-1", 1, "b", 3)):
        _caches(tmp_path / f"cache-{caches}", monkeypatch)
        monkeypatch.setenv(SHUFFLE_ENV, str(shuffle))
        outcome = run_study(spec_path, out=tmp_path / name, n_workers=workers)
        assert outcome.n_computed == 4 and outcome.n_failed == 0
        runs[name] = _stored_results(tmp_path / name, spec)
    differing = sorted(key for key in runs["fresh-2"] if runs["warm-1"][key] != runs["fresh-2"][key])
    assert not differing, f"warm-1: replicates {differing} differ from fresh-2"
    # The posterior was sampled (a study without draws would agree trivially).
    assert all('"post_mean"' in text and '"rhat_max"' in text for text in runs["fresh-2"].values())


def test_data_programs_give_pymcs_log_density_for_any_data_of_their_shape(tmp_path, monkeypatch):
    """One program set, built from placeholder data, against PyMC's own log-density and gradient of
    the model built with each data set as constants (the oracle), to rounding."""
    import numpy as np

    from emvsbayes.study import replicate as rep
    from emvsbayes.study.spec import validate

    monkeypatch.setenv("EMVSBAYES_PROGRAM_CACHE_DIR", str(tmp_path / "programs"))
    spec = validate({"kind": "coverage", "seed": 3, "replicates": 2, "model": {"family": "gaussian"},
                     "grid": {"n_obs": [25]}, "bayes": {"chains": 2, "draws": 20, "tune": 20}})
    cell = cells(spec)[0]
    family = rep.study_family(spec)
    model_def = family.study_model(spec, cell, rep.cell_prior(spec, cell))
    rng = np.random.default_rng(0)
    first = {"x": rng.normal(size=(25, 1))}
    programs = rep._numpyro_programs("gaussian", model_def, first, spec)
    assert [name for name, _, _ in programs.data_inputs] == ["x_data"]
    potential_and_grad = programs.callable("potential_and_grad")
    for data in (first, {"x": 3.0 + 2.0 * rng.normal(size=(25, 1))}):
        model = family.pymc_model(model_def, family.from_arrays(data))
        logp, dlogp = model.compile_logp(mode=ORACLE_MODE), model.compile_dlogp(mode=ORACLE_MODE)
        for _ in range(3):
            start = model.initial_point()
            point = {name: rng.normal(size=np.shape(value)) for name, value in start.items()}
            names = [name for name, _, _ in programs.facts.value_vars]
            value, grads = potential_and_grad(data["x"][:, 0], *[point[name] for name in names])
            np.testing.assert_allclose(value, -logp(point), rtol=1e-10)
            by_name = dict(zip(names, grads))  # dlogp is in the model's value-variable order
            got = np.concatenate([np.ravel(by_name[v.name]) for v in model.value_vars])
            np.testing.assert_allclose(got, -dlogp(point), rtol=1e-8, atol=1e-10)
