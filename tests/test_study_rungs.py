"""The uncertainty ladder's rungs in a coverage study: an exact oracle for the Laplace rung's intervals and
coverage, compiled functions reused across replicates, and a tiny rung-coverage study on a real Dask cluster.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from emvsbayes.study import replicate as rungs
from emvsbayes.study.spec import cells, validate
from emvsbayes.study.task import run_task

# One coin (K = 1): the posterior of theta is Beta(a + H, b + n - H), H the heads of all n tosses. On the
# log-odds scale phi (the model's own transform, Jacobian included) the log posterior is
# (a + H) log theta + (b + n - H) log(1 - theta): its mode is theta* = (a + H) / (n + a + b) and its
# curvature -(n + a + b) theta* (1 - theta*), so the Laplace interval is logistic(phi* +/- z sd) in closed
# form, and its exact coverage of the true theta is a sum over the n + 1 values of H.
PRIOR = (2.0, 3.0)
N_SETS, TOSSES = 8, 5
ONE_COIN = {"kind": "coverage", "seed": 20261203, "replicates": 40, "model": {"family": "coins"},
            "grid": {"components": [1], "n_sets": [N_SETS], "tosses": [TOSSES]},
            "bayes": {"theta_prior": list(PRIOR)}, "em": {"n_init": 1},
            "intervals": {"kinds": ["laplace"], "prob": 0.9}}


def laplace_interval(heads: int, n: int, prob: float) -> tuple[float, float, float]:
    """(lower, upper) of the closed-form Laplace interval on the log-odds scale, and its sd there."""
    a, b = PRIOR
    mode = (a + heads) / (n + a + b)
    sd = 1 / np.sqrt((n + a + b) * mode * (1 - mode))
    z = stats.norm.ppf(0.5 + prob / 2)
    centre = np.log(mode / (1 - mode))
    return centre - z * sd, centre + z * sd, sd


def exact_coverage(theta: float, n: int, prob: float) -> float:
    logit = np.log(theta / (1 - theta))
    heads = np.arange(n + 1)
    inside = [lo <= logit <= hi for lo, hi, _ in (laplace_interval(h, n, prob) for h in heads)]
    return float(np.sum(stats.binom.pmf(heads, n, theta) * np.array(inside)))


def test_laplace_rung_gives_the_closed_form_interval_and_its_exact_coverage():
    from emvsbayes.study.replicate import replicate_seeds, study_family

    spec = validate(ONE_COIN)
    cell = cells(spec)[0]
    family = study_family(spec)
    model_def = family.study_model(spec, cell, spec["priors"]["default"])
    truth = family.study_truth(spec, cell, model_def, None)
    theta, n = float(truth.theta[0]), N_SETS * TOSSES
    records = [run_task(spec, 0, r, cell) for r in range(spec["replicates"])]
    assert all(rec["status"] == "ok" for rec in records), records[0]["error"]
    covered = []
    for r, rec in enumerate(records):
        data = family.study_data(model_def, truth, cell, np.random.default_rng(replicate_seeds(spec["seed"], 0, r)["data"]))
        lo, hi, sd = laplace_interval(int(np.sum(data.heads)), n, 0.9)
        got_lo, got_hi = (np.log(v / (1 - v)) for v in (rec["values"]["laplace_lower"]["theta[0]"],
                                                          rec["values"]["laplace_upper"]["theta[0]"]))
        # The rung's ends are quantiles of 1000 Gaussian draws: the 5% quantile's sd is
        # sqrt(0.05 * 0.95 / 1000) / pdf(1.645) = 0.067 sd; 0.3 sd is 4.5 of those.
        assert abs(got_lo - lo) <= 0.3 * sd and abs(got_hi - hi) <= 0.3 * sd, (r, got_lo, lo, got_hi, hi)
        covered.append(rec["values"]["laplace_covered"]["theta[0]"])
        if min(abs(np.log(theta / (1 - theta)) - end) for end in (lo, hi)) > 0.3 * sd:
            assert covered[-1] == float(lo <= np.log(theta / (1 - theta)) <= hi)
    # The share covered is a Binomial(40, c) / 40 with c the exact coverage: within 3 of its MCSE
    # sqrt(c (1 - c) / 40) but for 0.3% of seeds.
    c = exact_coverage(theta, n, 0.9)
    assert 0.8 < c < 0.98  # the closed form is not trivially 0 or 1 here
    assert abs(np.mean(covered) - c) <= 3 * np.sqrt(c * (1 - c) / len(covered))


def test_exact_coverage_oracle_is_the_binomial_sum():
    # The oracle itself, against brute-force simulation of H (200,000 draws: MCSE < 0.001).
    rng = np.random.default_rng(0)
    heads = rng.binomial(40, 0.5, size=200_000)
    logit = 0.0
    ends = np.array([laplace_interval(h, 40, 0.9)[:2] for h in range(41)])
    simulated = np.mean((ends[heads, 0] <= logit) & (logit <= ends[heads, 1]))
    assert abs(simulated - exact_coverage(0.5, 40, 0.9)) < 0.004


def test_a_cells_laplace_functions_are_compiled_once():
    from emvsbayes.study.replicate import cell_prior, replicate_seeds, study_family

    spec = validate({**ONE_COIN, "intervals": {"kinds": ["laplace", "bootstrap_bayesian"], "bootstrap": 10}})
    cell = cells(spec)[0]
    rungs.clear_ladder_cache()
    family = study_family(spec)
    model_def = family.study_model(spec, cell, cell_prior(spec, cell))
    truth = family.study_truth(spec, cell, model_def, None)
    counts = []
    for r in range(3):
        data = family.study_data(model_def, truth, cell, np.random.default_rng(r))
        out, scalars, seconds = rungs.ladder_intervals(family, model_def, data, family.as_arrays(data), truth,
                                                       ["laplace", "bootstrap_bayesian"], spec,
                                                       replicate_seeds(spec["seed"], 0, r)["ladder"])
        assert scalars["laplace_failed"] == 0 and scalars["bootstrap_bayesian_failed"] == 0
        assert set(seconds) == {"laplace", "bootstrap_bayesian"}
        (ladder,) = rungs._LADDERS.values()
        counts.append(ladder.compiled.n_compiled)
    assert counts[0] > 0 and counts == [counts[0]] * 3


TINY = """
kind = "coverage"
seed = 5
replicates = 3
[model]
family = "coins"
weights = "estimated"
[grid]
n_sets = [12, 24]
[em]
n_init = 2
[intervals]
kinds = ["wald", "laplace", "bootstrap_bayesian"]
bootstrap = 10
"""


@pytest.mark.slow
def test_a_tiny_rung_coverage_study_on_a_dask_cluster(tmp_path):
    from distributed import Client, LocalCluster

    from emvsbayes.study import read_study
    from emvsbayes.study.run import run_study

    spec_path = tmp_path / "tiny_rungs.toml"
    spec_path.write_text(TINY, encoding="utf-8")
    # The scheduler's HTTP server on any free port (not 8787, which another test's cluster may hold: a warning).
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as local, Client(local) as client:
        outcome = run_study(spec_path, out=tmp_path / "out", client=client)
    assert outcome.n_failed == 0
    ds = read_study(outcome.results_path)
    for kind in ("wald", "laplace", "bootstrap_bayesian"):
        p, n = ds[f"coverage_{kind}"], ds[f"n_intervals_{kind}"]
        assert int(n.min()) == 3
        np.testing.assert_allclose(ds[f"coverage_mcse_{kind}"], np.sqrt(p * (1 - p) / n))
        assert np.isfinite(ds[f"time_{kind}"]).all() if kind != "wald" else True
    assert (ds["laplace_failed"] == 0).all()
    page = outcome.report_path.read_text(encoding="utf-8")
    assert "Coverage, width and cost by interval" in page and "Bayesian bootstrap" in page and " ± " in page
    svg = (outcome.results_path.parent / "coverage.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg


@pytest.mark.slow
def test_advi_rungs_give_intervals_and_a_pareto_k():
    spec = validate({**ONE_COIN, "replicates": 1, "grid": {"n_sets": [20]}, "em": {"n_init": 2},
                     "intervals": {"kinds": ["advi_meanfield"], "prob": 0.9}})
    rec = run_task(spec, 0, 0, cells(spec)[0])
    assert rec["status"] == "ok", rec["error"]
    lo, hi = rec["values"]["advi_meanfield_lower"]["theta[0]"], rec["values"]["advi_meanfield_upper"]["theta[0]"]
    assert 0 < lo < hi < 1
    assert np.isfinite(rec["scalars"]["advi_meanfield_khat"])


def test_the_kept_ladder_study_is_the_result_of_the_bundled_spec():
    """studies/coverage_ladder/study.nc (the README's answer) was made by models/study_coverage_ladder.toml as it
    stands: same fingerprint, every replicate ok, and every rung's per-parameter MCSE is sqrt(p(1 - p)/n)."""
    from pathlib import Path

    from emvsbayes.study import read_study
    from emvsbayes.study.spec import fingerprint, load_study_spec

    root = Path(__file__).resolve().parents[1]
    spec = load_study_spec(root / "models" / "study_coverage_ladder.toml")
    ds = read_study(root / "studies" / "coverage_ladder" / "study.nc")
    assert ds.attrs["fingerprint"] == fingerprint(spec)
    assert int((ds["status"] == 1).sum()) == len(cells(spec)) * spec["replicates"]
    for kind in spec["intervals"]["kinds"]:
        p, n = ds[f"coverage_{kind}"], ds[f"n_intervals_{kind}"]
        assert int(n.min()) == spec["replicates"]
        np.testing.assert_allclose(ds[f"coverage_mcse_{kind}"], np.sqrt(p * (1 - p) / n))
