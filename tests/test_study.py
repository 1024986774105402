"""Simulation studies: spec errors, pure replicates, Dask execution (worker counts, a killed worker,
resume after an interruption) and simulation-based calibration.

The Dask tests run real ``LocalCluster``s of worker processes and real numpyro sampling on tiny
studies; most share one two-worker cluster, so a cell's compiled model is reused across tests.
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from emvsbayes.errors import UserError
from emvsbayes.study import replicate as rep
from emvsbayes.study.run import record_path, run_study
from emvsbayes.study.sbc import invariant_quantities, rank_statistics, uniformity_test
from emvsbayes.study.spec import cells, load_study_spec, validate
from emvsbayes.study.task import run_task

# A tiny coin coverage study: 1 cell, 6 replicates, short chains.
COINS_COVERAGE = """
kind = "coverage"
seed = 7
replicates = 6
[model]
family = "coins"
weights = "estimated"
[grid]
n_sets = [15]
[em]
n_init = 3
[bayes]
chains = 2
draws = 150
tune = 150
[intervals]
kinds = ["wald", "bootstrap", "posterior"]
bootstrap = 15
"""

# Numbers that legitimately differ between runs: timings, which process compiled, rates per second, and
# which invocation of the study on which cluster computed a replicate (provenance).
NOT_RESULTS = ("compiled", "worker", "ess_per_second", "invocation", "invocation_cluster", "invocation_workers",
               "invocation_arrival")


def write_spec(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def results(ds):
    return ds.drop_vars([v for v in ds.data_vars if v.startswith("time_") or v in NOT_RESULTS])


# --- specs -----------------------------------------------------------------------------------------

GOOD = {"kind": "coverage", "seed": 1, "replicates": 2, "model": {"family": "gaussian"}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"replicats": 3}, "did you mean 'replicates'"),
        ({"seed": None}, "seed is missing"),
        ({"kind": "power"}, "kind must be one of"),
        ({"grid": {"n_ob": [50]}}, "did you mean 'n_obs'"),
        ({"grid": {"n_obs": 50}}, "[grid] n_obs must be a non-empty list"),
        ({"grid": {"n_obs": [50, 50]}}, "lists a value twice"),
        # one number written twice (3.0 and 3: two cells of the same numbers drew a broken coverage figure)
        ({"grid": {"separation": [3.0, 3]}}, "[grid] separation lists a value twice"),
        ({"seed": datetime.date(2020, 1, 1)}, "got 2020-01-01"),  # as written, not a Python repr
        ({"grid": {"prior": ["tight"]}}, "names no prior 'tight'"),
        ({"intervals": {"kinds": ["wold"]}}, "wold"),
        ({"sbc": {"ranks": 99}}, "belongs to a 'sbc' study"),
        ({"bayes": {"chians": 2}}, "did you mean 'chains'"),
        ({"grid": {"components": [30], "n_obs": [20]}}, "K = 30 components but only 20"),
    ],
)
def test_bad_study_specs_give_one_line_user_errors(change, expected):
    raw = {**GOOD, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(UserError) as info:
        validate(raw, source="s.toml")
    message = str(info.value)
    assert expected in message and "\n" not in message and message.startswith("s.toml: ")


def test_a_familys_own_cell_limits_are_checked(tmp_path):
    """Each family checks its own cells (Family.study_check): evenly spaced coin thetas must stay in (0, 1),
    and SBC draws Gaussian truths in 1-D only."""
    coins = 'kind = "coverage"\nseed = 1\nreplicates = 5\n[model]\nfamily = "coins"\n'
    with pytest.raises(UserError, match=r"separation 0.6 with K = 3 coins puts theta outside \(0, 1\); use a gap below 0.5"):
        load_study_spec(write_spec(tmp_path, "a", coins + "[grid]\ncomponents = [3]\nseparation = [0.6]\n"))
    load_study_spec(write_spec(tmp_path, "b", coins + "[grid]\ncomponents = [3]\nseparation = [0.4]\n"))
    gaussian = 'kind = "sbc"\nseed = 1\nreplicates = 5\n[model]\nfamily = "gaussian"\n'
    with pytest.raises(UserError, match=r"SBC supports 1-D Gaussian mixtures only"):
        load_study_spec(write_spec(tmp_path, "c", gaussian + "[grid]\ndim = [2]\n"))
    with pytest.raises(UserError, match=r"\[grid\] separation"):
        load_study_spec(write_spec(tmp_path, "d", coins + "[grid]\nseparation = [1.5]\n"))


def test_bad_sbc_specs(tmp_path):
    base = 'kind = "sbc"\nseed = 1\nreplicates = 5\n[model]\nfamily = "coins"\n'
    with pytest.raises(UserError, match="does not divide"):
        load_study_spec(write_spec(tmp_path, "a", base + "[sbc]\nranks = 99\nbins = 7\n"))
    with pytest.raises(UserError, match="chains x draws"):
        load_study_spec(write_spec(tmp_path, "b", base + "[bayes]\nchains = 1\ndraws = 50\n"))
    with pytest.raises(UserError, match="no prior 'wide'"):
        load_study_spec(write_spec(tmp_path, "c", base + "[sbc]\ndata_prior = \"wide\"\n"))
    with pytest.raises(UserError, match="not valid TOML"):
        load_study_spec(write_spec(tmp_path, "d", "kind = \n"))


def test_bundled_study_specs_are_valid():
    root = Path(__file__).resolve().parents[1] / "models"
    coverage = load_study_spec(root / "study_coverage_gmm.toml")
    assert len(cells(coverage)) == 4 and coverage["kind"] == "coverage"
    sbc = load_study_spec(root / "sbc_coins.toml")
    assert sbc["kind"] == "sbc" and sbc["replicates"] >= 50


def test_grid_cells_are_the_product_of_listed_axes_in_order():
    spec = validate({**GOOD, "grid": {"n_obs": [50, 200], "separation": [1.0, 2.0, 3.0]}})
    grid = cells(spec)
    assert len(grid) == 6
    assert [(c["n_obs"], c["separation"]) for c in grid[:3]] == [(50, 1.0), (50, 2.0), (50, 3.0)]
    assert all(c["components"] == 2 and c["sampler"] == "numpyro" for c in grid)


# --- one replicate (no sampling) ---------------------------------------------------------------------


def _coins_no_posterior():
    return validate({"kind": "coverage", "seed": 3, "replicates": 4, "model": {"family": "coins", "weights": "estimated"},
                     "grid": {"n_sets": [40]}, "intervals": {"kinds": ["wald", "bootstrap"], "bootstrap": 20}})


def test_a_replicate_is_a_pure_function_of_seed_cell_and_replicate():
    spec = _coins_no_posterior()
    cell = cells(spec)[0]
    first, again, other = (run_task(spec, 0, r, cell) for r in (1, 1, 2))
    assert first["status"] == "ok", first["error"]
    assert first["values"] == again["values"] and first["scalars"] == again["scalars"]
    assert first["values"]["em"] != other["values"]["em"]


def test_wald_intervals_of_the_coin_model_cover_the_truth_about_nominally():
    # 60 replicates at nominal 0.9: the number covering theta[0] is Binomial(60, 0.9) if the intervals
    # are right; [46, 59] holds it with probability > 0.995, so this fails < 0.5% of seeds.
    spec = validate({"kind": "coverage", "seed": 11, "replicates": 60, "model": {"family": "coins"},
                     "grid": {"n_sets": [60]}, "intervals": {"kinds": ["wald"]}})
    cell = cells(spec)[0]
    covered = [run_task(spec, 0, r, cell)["values"]["wald_covered"]["theta[0]"] for r in range(60)]
    assert 46 <= np.nansum(covered) <= 59


# --- SBC pieces ------------------------------------------------------------------------------------


def test_uniformity_test_accepts_uniform_and_rejects_piled_up_ranks():
    rng = np.random.default_rng(0)
    uniform = uniformity_test(rng.integers(0, 100, size=500), 99, 10)
    assert uniform.p_value > 0.01 and uniform.counts.sum() == 500
    piled = uniformity_test(np.minimum(rng.integers(0, 30, size=500), 99), 99, 10)
    assert piled.p_value < 1e-10


def test_invariant_quantities_and_ranks():
    draws = {"theta": np.array([[0.8, 0.2], [0.3, 0.7], [0.25, 0.9]]), "w": np.array([[0.4, 0.6], [0.5, 0.5], [0.1, 0.9]])}
    q = invariant_quantities("theta", draws)
    np.testing.assert_allclose(q["theta_sorted[0]"], [0.2, 0.3, 0.25])
    np.testing.assert_allclose(q["w_sorted[0]"], [0.6, 0.5, 0.1])
    truth = invariant_quantities("theta", {"theta": np.array([0.9, 0.26]), "w": np.array([0.5, 0.5])})
    assert truth["theta_sorted[0]"] == 0.26
    assert rank_statistics({"theta_sorted[0]": q["theta_sorted[0]"]}, truth, 3)["theta_sorted[0]"] == 2


@pytest.mark.slow
def test_the_compiled_model_is_reused_within_a_process():
    """nutpie's compiled model (no longer the coin studies' default, still a choice of the grid): compiled by the
    first replicate of a cell in a process, each later one swaps its data in."""
    spec = validate({"kind": "sbc", "seed": 5, "replicates": 3, "model": {"family": "coins"},
                     "grid": {"sampler": ["nutpie"]},
                     "bayes": {"chains": 2, "draws": 60, "tune": 60}, "sbc": {"ranks": 49, "bins": 5}})
    rep.clear_cache()
    records = [run_task(spec, 0, r, cells(spec)[0]) for r in range(3)]
    assert [r["status"] for r in records] == ["ok"] * 3, records[0]["error"]
    assert [r["compiled"] for r in records] == [1, 0, 0]
    assert rep.compile_count() == 1
    # Swapping data in gives the same draws as a freshly compiled model would.
    rep.clear_cache()
    fresh = run_task(spec, 0, 2, cells(spec)[0])
    assert fresh["compiled"] == 1 and fresh["values"] == records[2]["values"]


# --- Dask ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local, \
            Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def coins_spec(tmp_path_factory):
    return write_spec(tmp_path_factory.mktemp("spec"), "tiny_coins", COINS_COVERAGE)


@pytest.fixture(scope="module")
def one_worker_run(coins_spec, tmp_path_factory):
    """The tiny study on a LocalCluster of one worker started by run_study itself."""
    out = tmp_path_factory.mktemp("one")
    outcome = run_study(coins_spec, out=out, n_workers=1)
    from emvsbayes.study import read_study

    return outcome, read_study(outcome.results_path)


@pytest.mark.slow
def test_two_workers_give_the_same_numbers_as_one(one_worker_run, coins_spec, cluster, tmp_path, monkeypatch):
    import xarray as xr

    from emvsbayes.study import read_study
    from emvsbayes.study import run as study_run

    outcome1, ds1 = one_worker_run
    assert outcome1.n_failed == 0 and (ds1["status"] == 1).all()
    # One worker compiled the cell's model once and reused it for every replicate.
    assert int(ds1["compiled"].sum()) == 1
    # Two replicates in flight at a time (one per worker), each topped up as one ends: the window a study of
    # 10^5 replicates keeps, here smaller than the study's 6.
    monkeypatch.setattr(study_run, "SUBMIT_WINDOW_MIN", 1)
    monkeypatch.setattr(study_run, "SUBMIT_WINDOW_PER_WORKER", 1)
    outcome2 = run_study(coins_spec, out=tmp_path, scheduler=cluster[0].scheduler_address)
    ds2 = read_study(outcome2.results_path)
    assert ds2.attrs["workers"] == 2 and len(set(ds2["worker"].values.ravel())) == 2
    assert int(ds2["compiled"].sum()) <= 2
    xr.testing.assert_identical(results(ds1).drop_attrs(), results(ds2).drop_attrs())
    html = outcome2.report_path.read_text(encoding="utf-8")
    assert "Coverage against nominal" in html and "<svg" in html and "<script" not in html


@pytest.mark.slow
def test_a_study_whose_every_replicate_fails_exits_1(tmp_path):
    """Workers of a cluster given by --scheduler whose JAX has one CPU device, while the study lays its 2 chains on
    2: every replicate fails where it samples (a LocalCluster started by the study inherits this process's
    XLA_FLAGS, checked before it starts: tests/test_bad_inputs.py). Such a study exited 0, and silently with
    --quiet. Now: exit 1 and one line with the first error; study.nc and its page list them all."""
    from distributed import LocalCluster


    spec = write_spec(tmp_path, "tiny_coins_numpyro", COINS_COVERAGE.replace("n_sets = [15]", 'n_sets = [15]\nsampler = ["numpyro"]'))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}) as local:
        proc = run_cli("study", spec, "--scheduler", local.scheduler_address, "--out", tmp_path / "out", "--quiet",
                       timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "emvsbayes: error: all 6 replicate(s) run failed, the first with RuntimeError: this worker's JAX has 1 CPU "
        "device, the study's chains run on 2: start the workers with XLA_FLAGS=--xla_force_host_platform_device_count=2 "
        "or more (a worker whose JAX started before emvsbayes configured it keeps the count it started with); the "
        f"report lists every error: {tmp_path / 'out' / 'index.html'}"], proc.stderr
    from emvsbayes.study import read_study

    ds = read_study(tmp_path / "out" / "study.nc")
    assert (ds["status"] == 0).all()
    # The page says so instead of empty figures, and gives the error once per cell with its replicates' range.
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "<h2>No replicate succeeded</h2>" in page and "All 6 replicates that ran failed" in page
    assert "<h2>Coverage against nominal</h2>" not in page and "<h2>Time per stage</h2>" not in page
    assert page.count("this worker&#x27;s JAX has 1 CPU device,") == 1 and "<td>0-5</td>" in page


@pytest.mark.slow
def test_killing_a_worker_mid_study_still_completes(one_worker_run, coins_spec, cluster, tmp_path):
    from emvsbayes.study import read_study

    local, client = cluster
    pids = client.run(os.getpid)
    box = {}
    thread = threading.Thread(target=lambda: box.update(outcome=run_study(
        coins_spec, out=tmp_path, scheduler=local.scheduler_address)))
    thread.start()
    # Wait until a worker is running one of the study's tasks, then kill that worker's process.
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        busy = [address for address, keys in client.processing().items() if any("study-" in str(k) for k in keys)]
        victim = busy[0] if busy else None
        time.sleep(0.05)
    assert victim is not None, "no study task started"
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive()
    outcome = box["outcome"]
    ds = read_study(outcome.results_path)
    assert outcome.n_failed == 0 and (ds["status"] == 1).all()
    # The replicate that was running on the killed worker was run again elsewhere, with the same result.
    import xarray as xr

    xr.testing.assert_identical(results(one_worker_run[1]).drop_attrs(), results(ds).drop_attrs())


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_study_resumes_without_recomputing(coins_spec, cluster, tmp_path):
    address = cluster[0].scheduler_address
    finished = []

    def stop_after_two(message):
        if ": ok" in message:
            finished.append(message)
            if len(finished) == 2:
                raise Interrupt

    with pytest.raises(Interrupt):
        run_study(coins_spec, out=tmp_path, scheduler=address, progress=stop_after_two)
    store = tmp_path / "store"
    stored = sorted(store.glob("cell-*/rep-*.json"))
    assert len(stored) >= 2 and not list(store.rglob("*.tmp"))
    mtimes = {path: path.stat().st_mtime_ns for path in stored}

    outcome = run_study(coins_spec, out=tmp_path, scheduler=address)
    assert outcome.n_skipped == len(stored) and outcome.n_computed == 6 - len(stored) and outcome.n_failed == 0
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in mtimes.items())

    # Remove one finished replicate: only that one is run again.
    record_path(store, 0, 4).unlink()
    again = run_study(coins_spec, out=tmp_path, scheduler=address)
    assert (again.n_skipped, again.n_computed) == (5, 1)


@pytest.mark.slow
def test_a_record_copied_over_another_or_changed_is_refused(one_worker_run, coins_spec, tmp_path):
    """Issue 22's case: rep-0003 copied over rep-0005 was trusted ("6 already in store") and replicate 5
    went silently missing from study.nc. Each record carries a checksum of its content and the study's
    fingerprint and is read back only in its own place; the command stops with one line naming the file."""
    import json
    import shutil

    from test_outputs import assert_refused, run_user

    out = tmp_path / "copy"
    shutil.copytree(one_worker_run[0].results_path.parent, out, symlinks=True)
    store = out / "store"
    fix = "delete it and run the study again to recompute that replicate"
    target = record_path(store, 0, 5)
    original = target.read_bytes()
    shutil.copy(record_path(store, 0, 3), target)
    assert_refused(run_user("study", coins_spec, "--out", out),
                   f"{target}: holds cell 0 replicate 3, not cell 0 replicate 5 (copied over it?); {fix}")
    target.write_bytes(original)
    # One number changed in a record, its checksum left as it was.
    changed = record_path(store, 0, 2)
    record = json.loads(changed.read_text(encoding="utf-8"))
    name = sorted(record["scalars"])[0]
    record["scalars"][name] = 0.25 if record["scalars"][name] != 0.25 else 0.5
    changed.write_text(json.dumps(record), encoding="utf-8")
    assert_refused(run_user("study", coins_spec, "--out", out),
                   f"{changed}: damaged or from another study (it does not match its checksum); {fix}")
    # Nothing was written over: the published study is the one before the attempts.
    assert (out / "study.nc").read_bytes() == (one_worker_run[0].results_path).read_bytes()


@pytest.mark.slow
def test_a_rerun_that_finds_every_replicate_stored_reports_what_computed_them(one_worker_run, coins_spec, tmp_path):
    """A rerun of a finished study computes nothing and starts no cluster; its page said "LocalCluster with
    0 workers; 1.3 s" (the rerun's own cluster) instead of what computed the replicates. Each record now
    keeps its invocation's cluster and worker count, and study.nc and the page report those."""
    import shutil

    from emvsbayes.study import read_study

    first = read_study(one_worker_run[0].results_path)
    assert (first["invocation_workers"] == 1).all() and (first["invocation_cluster"] == "LocalCluster").all()
    assert len(set(first["invocation"].values.ravel())) == 1
    out = tmp_path / "again"
    shutil.copytree(one_worker_run[0].results_path.parent, out, symlinks=True)
    outcome = run_study(coins_spec, out=out, n_workers=2)
    assert (outcome.n_skipped, outcome.n_computed) == (6, 0)
    again = read_study(outcome.results_path)
    for name in ("invocation", "invocation_cluster", "invocation_workers", "invocation_arrival"):
        np.testing.assert_array_equal(again[name].values, first[name].values)
    html = outcome.report_path.read_text(encoding="utf-8")
    assert "LocalCluster with 1 worker: 6 replicates" in html
    assert "coverage study of binomial (coin) mixtures" in html  # the family in words, not its id
    assert "0 workers" not in html and "none computed" in html


@pytest.mark.slow
def test_a_changed_spec_does_not_mix_into_an_old_store(coins_spec, tmp_path):
    from emvsbayes.study.run import open_store

    spec = load_study_spec(coins_spec)
    open_store(tmp_path, spec)
    with pytest.raises(UserError, match="different study spec"):
        open_store(tmp_path, {**spec, "seed": spec["seed"] + 1})


def test_more_replicates_extend_a_stored_study_and_keep_its_replicates(coins_spec, tmp_path):
    """Replicate r of cell c depends on (seed, c, r) only, so raising ``replicates`` reuses the stored store:
    the same fingerprint, the same per-replicate seeds, and the old records count as done."""
    from emvsbayes.study.replicate import replicate_seeds
    from emvsbayes.study.run import done_replicates, open_store, write_record
    from emvsbayes.study.spec import fingerprint

    spec = load_study_spec(coins_spec)
    more = {**spec, "replicates": 2 * spec["replicates"]}
    assert fingerprint(more) == fingerprint(spec)
    assert fingerprint({**spec, "seed": spec["seed"] + 1}) != fingerprint(spec)
    first, again = replicate_seeds(spec["seed"], 0, 1), replicate_seeds(more["seed"], 0, 1)
    assert {k: v.generate_state(2).tolist() for k, v in first.items()} == \
        {k: v.generate_state(2).tolist() for k, v in again.items()}
    open_store(tmp_path, spec)
    write_record(tmp_path, {"cell": 0, "replicate": 1, "status": "ok", "scalars": {}, "values": {}}, fingerprint(spec))
    open_store(tmp_path, more)  # not refused as another study
    assert done_replicates(tmp_path, 1, more["replicates"], fingerprint(more)) == {(0, 1)}


SBC = """
kind = "sbc"
seed = {seed}
replicates = 40
[model]
family = "coins"
[grid]
n_sets = [12]
tosses = [10]
[em]
n_init = 2
[bayes]
chains = 2
draws = 100
tune = 150
theta_prior = {fitted}
[priors.flat]
theta_prior = [1, 1]
[sbc]
ranks = 49
bins = 5
alpha = 0.01
{data_prior}
"""


@pytest.mark.slow
def test_sbc_passes_a_correct_model_and_fails_a_wrong_prior(cluster, tmp_path):
    """Correct: data from the Beta(2, 2) prior that is fitted. The cell fails when either sorted theta's
    chi-square p-value is below 0.01 / 2, so a correct sampler fails with probability about 1% (this
    seed is fixed, so the test is deterministic; the rate is what a new seed would risk).
    Wrong: data from a flat prior, fitted with Beta(20, 20), which pulls both thetas towards 0.5: the
    smallest theta's rank piles up at the top and the largest's at the bottom."""
    from emvsbayes.study import read_study

    address = cluster[0].scheduler_address
    correct = write_spec(tmp_path, "sbc_ok", SBC.format(seed=101, fitted="[2, 2]", data_prior=""))
    wrong = write_spec(tmp_path, "sbc_wrong", SBC.format(seed=101, fitted="[20, 20]", data_prior='data_prior = "flat"'))
    ok = read_study(run_study(correct, out=tmp_path / "ok", scheduler=address).results_path)
    bad = read_study(run_study(wrong, out=tmp_path / "bad", scheduler=address).results_path)
    assert (ok["status"] == 1).all() and (bad["status"] == 1).all()
    assert int(ok["sbc_pass"].squeeze()) == 1, ok["p_value"].values
    assert int(bad["sbc_pass"].squeeze()) == 0
    assert float(bad["p_value"].min()) < 1e-4
    html = (tmp_path / "bad" / "index.html").read_text(encoding="utf-8")
    assert "Rank histograms" in html and "NO (alpha" in html


# The Poisson hidden Markov model, K = 2, ordered rates (why ordered: models/sbc_poisson_hmm.toml).
HMM_SBC = """
kind = "sbc"
seed = {seed}
replicates = 30
[model]
family = "hmm"
[grid]
n_time = [60]
variant = ["ordered"]
[em]
n_init = 2
[bayes]
chains = 2
draws = 100
tune = 150
rate_prior = {fitted}
[priors.broad]
rate_prior = [2, 0.2]
[sbc]
ranks = 49
bins = 5
alpha = 0.01
{data_prior}
"""


@pytest.mark.slow
def test_hmm_sbc_passes_a_correct_model_and_fails_a_wrong_prior(cluster, tmp_path):
    """Correct: rates, transition rows and initial distribution drawn from the Gamma(2, 0.2) / Dirichlet
    priors that are fitted. The cell fails when one of its 8 quantities' chi-square p-values is below
    0.01 / 8, so a correct sampler fails with probability about 1% (the seed is fixed, so the test is
    deterministic; that rate is what a new seed would risk).
    Wrong, by construction: the true rates come from Gamma(2, 0.2) (mean 10) but the fitted prior is
    Gamma(200, 200) (mean 1, sd 0.07), which no 60-point series can move far: a rate's posterior is about
    Gamma(200 + its counts, 200 + its time points), mean below (200 + 60 x 3) / 260 = 1.5 for a true rate
    of 3. The larger true rate exceeds 3 with prior probability 0.985, and then exceeds every draw (rank
    49, the top bin); all 30 replicates but fewer than 6 do so except with probability below 1e-6, and
    then the top bin's count alone gives a chi-square above 60 (p < 1e-11)."""
    from emvsbayes.study import read_study

    address = cluster[0].scheduler_address
    correct = write_spec(tmp_path, "hmm_ok", HMM_SBC.format(seed=19, fitted="[2, 0.2]", data_prior=""))
    wrong = write_spec(tmp_path, "hmm_wrong", HMM_SBC.format(seed=19, fitted="[200, 200]", data_prior='data_prior = "broad"'))
    ok = read_study(run_study(correct, out=tmp_path / "ok", scheduler=address).results_path)
    bad = read_study(run_study(wrong, out=tmp_path / "bad", scheduler=address).results_path)
    assert (ok["status"] == 1).all() and (bad["status"] == 1).all()
    # every parameter is ranked: both rates, the four transition entries and the initial distribution
    assert set(ok["quantity"].values) == {"rate_sorted[0]", "rate_sorted[1]", "initial_sorted[0]", "initial_sorted[1]",
                                         *(f"transition_sorted[{i},{j}]" for i in range(2) for j in range(2))}
    assert int(ok["sbc_pass"].squeeze()) == 1, ok["p_value"].values
    assert int(bad["sbc_pass"].squeeze()) == 0
    assert float(bad["p_value"].sel(quantity="rate_sorted[1]").squeeze()) < 1e-6
    assert int(bad["rank_counts"].sel(quantity="rate_sorted[1]", bin=4).squeeze()) >= 25


# --- the reports index lists studies ------------------------------------------------------------------


def _index_with_study(study_folder: Path, reports: Path) -> str:
    """Copy a study's folder (links followed) under ``reports/`` and refresh the index as run_study does."""
    import shutil

    from emvsbayes.study.run import _refresh_reports_index

    shutil.copytree(study_folder, reports / "tiny_coins", symlinks=False)
    _refresh_reports_index(reports / "tiny_coins")
    return (reports / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_study_appears_in_the_reports_index(one_worker_run, tmp_path):
    outcome, ds = one_worker_run
    reports = tmp_path / "reports"
    reports.mkdir()
    page = _index_with_study(outcome.results_path.parent, reports)
    studies = page[page.index("<section id='studies'>"):]
    assert '<a href="tiny_coins/index.html">tiny_coins</a>' in studies
    assert "coverage (coins mixture)" in studies and "6 per cell x 1 cell; 6 ok, 0 failed" in studies
    for kind in ("wald", "bootstrap", "posterior"):
        covered = np.asarray(ds[f"{kind}_covered"].values, dtype=float)
        covered = covered[np.isfinite(covered)]
        assert f"{kind} intervals cover {covered.mean():.3f} (nominal" in studies, kind
    assert "1 simulation study" in page


def test_the_index_lists_a_study_with_its_verdicts_and_refreshes_only_its_own_page(tmp_path):
    """A two-cell SBC study file (written as run_study writes it) is listed with how many cells pass;
    a reports/index.html that is not emvsbayes' index is left alone."""
    import xarray as xr

    from emvsbayes.report import refresh_index
    from emvsbayes.study.run import STUDY_FORMAT, write_study

    folder = tmp_path / "reports" / "sbc_tiny"
    folder.mkdir(parents=True)
    ds = xr.Dataset({"status": (("n_sets", "replicate"), np.array([[1, 1, 0], [1, 1, 1]], dtype=np.int8)),
                     "sbc_pass": ("n_sets", np.array([1, 0], dtype=np.int8))},
                    coords={"n_sets": [10, 20], "replicate": [0, 1, 2]},
                    attrs={"format": STUDY_FORMAT, "kind": "sbc", "family": "coins", "title": "Tiny SBC",
                           "name": "sbc_tiny", "alpha": 0.01})
    write_study(ds, folder / "study.nc")
    (folder / "index.html").write_text("<html>a study page</html>", encoding="utf-8")
    page = refresh_index(tmp_path / "reports").read_text(encoding="utf-8")
    studies = page[page.index("<section id='studies'>"):]
    assert '<a href="sbc_tiny/index.html">sbc_tiny</a>' in studies and "Tiny SBC" in studies
    assert "sbc (coins mixture)" in studies and "3 per cell x 2 cells; 5 ok, 1 failed" in studies
    assert "1 of 2 cells pass the rank uniformity test (alpha 0.01)" in studies
    assert '<span class="mark bad">check</span>' in studies
    # Someone else's page under the index's name is never written over.
    mine = tmp_path / "reports" / "index.html"
    mine.write_text("<html>my notes</html>", encoding="utf-8")
    assert refresh_index(tmp_path / "reports") is None and mine.read_text(encoding="utf-8") == "<html>my notes</html>"


def test_report_re_renders_a_study_page_from_its_study_file(tmp_path):
    """`emvsbayes report study.nc`, as a user runs it, on the bundled coverage-ladder study: in the study's
    own folder the page and coverage.svg are published again beside the same study file (its bytes
    untouched); --out elsewhere writes the page alone; the study file itself is never written over."""
    import shutil

    from conftest import ROOT, run_cli

    folder = tmp_path / "ladder"
    shutil.copytree(ROOT / "studies" / "coverage_ladder", folder)
    before = (folder / "study.nc").read_bytes()
    (folder / "index.html").write_text((folder / "index.html").read_text(encoding="utf-8").replace(
        "<main>", "<main><p>stale page</p>", 1), encoding="utf-8")
    proc = run_cli("report", folder / "study.nc")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "stale page" not in page and "coverage" in page and "<svg" in page
    assert (folder / "coverage.svg").read_text(encoding="utf-8").lstrip().startswith("<")
    assert (folder / "study.nc").read_bytes() == before

    elsewhere = tmp_path / "elsewhere" / "page.html"
    elsewhere.parent.mkdir()
    proc = run_cli("report", folder / "study.nc", "--out", elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert elsewhere.read_text(encoding="utf-8") == page
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["page.html"]

    proc = run_cli("report", folder / "study.nc", "--out", folder / "study.nc")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "is the study file being read" in proc.stderr
    assert (folder / "study.nc").read_bytes() == before


def test_one_chain_has_no_r_hat_and_no_warning():
    """A study with [bayes] chains = 1 printed numpy's "All-NaN slice encountered" for every replicate: R-hat of
    one chain is NaN (as ArviZ's); its bulk ESS is still a number."""
    import warnings

    draws = {"mu": np.random.default_rng(0).normal(size=(300, 2))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = rep.chain_diagnostics(draws, chains=1)
        two = rep.chain_diagnostics(draws, chains=2)
    assert np.isnan(one["rhat_max"]) and one["ess_bulk_min"] > 100
    assert 0.99 < two["rhat_max"] < 1.02
