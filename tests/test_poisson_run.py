"""A Poisson mixture end to end through the command line, as a user runs it: a small spec (own CSV of counts,
K = 2, few draws) through the generic runner, results file and report.

Checks the results file's groups and marks (every stage of the comparison wrote its group; the parameters
are named at the root and marked with their label dims) and the page (the Poisson rates appear in every
table that lists parameters, not only the weights). The EM answer is checked against scipy.stats: the
log-likelihood in the file equals the Poisson-mixture log-likelihood scipy computes at the estimates, and
the model-choice row for K = 2 reached the same optimum.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import poisson

from conftest import run_cli

#: 60 counts from two well-separated Poisson components (rates 4 and 15), drawn once with a fixed seed.
COUNTS = np.random.default_rng(19).poisson(np.repeat([4.0, 15.0], [25, 35]))

SPEC = """
title = "Two Poisson rates"
seed = 7
[data]
file = "counts.csv"
counts = "events"
label = "site"
[model]
family = "poisson"
components = 2
[em]
n_init = 4
bootstrap = 20
[bayes]
chains = 2
draws = 150
tune = 150
[model_choice]
components = [1, 2]
chains = 2
draws = 100
tune = 100
"""

GROUPS = ("data", "em", "em_hard", "em_trace", "em_restarts", "em_optima", "em_information", "em_bootstrap", "posterior",
          "posterior_relabelled", "label_switching", "posterior_membership", "membership_agreement", "model_choice")


@pytest.fixture(scope="module")
def poisson_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("poisson_run")
    rows = "".join(f"s{i},{c}\n" for i, c in enumerate(COUNTS))
    (folder / "counts.csv").write_text("site,events\n" + rows)
    (folder / "two_rates.toml").write_text(SPEC)
    out = folder / "out"
    proc = run_cli("run", folder / "two_rates.toml", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_every_stage_writes_its_group(poisson_run):
    import xarray as xr

    tree = xr.open_datatree(poisson_run / "results.nc")
    assert set(GROUPS) <= set(tree.children), sorted(tree.children)
    assert tree.attrs["family"] == "poisson" and json.loads(tree.attrs["parameters"]) == ["w", "rate"]
    for group in ("em", "posterior", "posterior_relabelled", "em_bootstrap"):
        for name in ("w", "rate"):
            assert tree[group][name].attrs["label_dims"] == "component", (group, name)
    data = tree["data"]
    np.testing.assert_array_equal(data["x"].values, COUNTS)
    assert list(data["obs"].values[:2]) == ["s0", "s1"]
    info = tree["em_information"]
    assert np.all(np.isfinite(info["se_rate"].values)) and np.all(info["se_rate"].values > 0)
    assert tree["em_bootstrap"].attrs["n_failed"] == 0
    assert list(tree["model_choice"]["K"].values) == [1, 2]
    membership = tree["posterior_membership"]["membership_relabelled"].values
    np.testing.assert_allclose(membership.sum(axis=1), 1.0, rtol=1e-12)


def test_em_answer_is_the_mixture_likelihood_scipy_computes(poisson_run):
    import xarray as xr

    tree = xr.open_datatree(poisson_run / "results.nc")
    em = tree["em"]
    w, rate = em["w"].values, em["rate"].values
    loglik = logsumexp(np.log(w)[None, :] + poisson.logpmf(COUNTS[:, None], rate[None, :]), axis=1).sum()
    assert float(em["loglik"].values) == pytest.approx(loglik, rel=1e-12)
    # The two components are found: rates near 4 and 15 (within 4 standard errors of the observed information).
    order = np.argsort(rate)
    se = tree["em_information"]["se_rate"].values[order]
    assert np.all(np.abs(rate[order] - [4.0, 15.0]) < 4 * se)
    choice = tree["model_choice"].sel(K=2)
    assert float(choice["loglik"].values) == pytest.approx(loglik, abs=1e-6)


def test_the_report_shows_the_rates(poisson_run):
    page = (poisson_run / "index.html").read_text()
    for label in ("rate[0]", "rate[1]", "w[0]"):
        assert label in page, label
    assert "weighted component probabilities of each count" in page
    assert "60 counts (events)" in page


STUDY = """
title = "Coverage, Poisson mixture K = 2"
kind = "coverage"
seed = 11
replicates = 1
[model]
family = "poisson"
[grid]
n_obs = [80, 200]
[em]
n_init = 3
[bayes]
rate_prior = [2.0, 0.2]
[intervals]
kinds = ["wald", "bootstrap"]
bootstrap = 10
"""


def test_a_poisson_cell_of_a_coverage_study(tmp_path):
    """The study spec takes the family's grid axes and priors; one replicate (no sampling) fits EM to data
    simulated at the cell's truth: rates 4 and (2 + 1.5)^2 = 12.25 (1.5 apart on the square-root scale)."""
    from emvsbayes.study.replicate import run_coverage_replicate
    from emvsbayes.study.spec import cells, load_study_spec

    path = tmp_path / "coverage.toml"
    path.write_text(STUDY)
    spec = load_study_spec(path)
    grid = cells(spec)
    assert [cell["n_obs"] for cell in grid] == [80, 200] and grid[0]["sampler"] == "nutpie"
    record = run_coverage_replicate(spec, 0, 0, grid[0])
    assert not record.get("error"), record
    truth = record["values"]["truth"]
    assert truth["rate[0]"] == pytest.approx(4.0) and truth["rate[1]"] == pytest.approx(12.25)
    assert set(record["values"]["em"]) == {"w[0]", "w[1]", "rate[0]", "rate[1]"}
