"""The command line end to end, as a user runs it: the lecture spec, re-rendering, and bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import ROOT, run_cli


def test_lecture_spec_end_to_end(lecture_run):
    tree = xr.open_datatree(lecture_run / "results.nc", engine="h5netcdf")
    for name in ("data", "em", "em_trace", "em_hard", "em_hard_trace", "posterior", "sample_stats",
                 "log_likelihood", "exact", "posterior_membership"):
        assert name in tree.children, name
    # The same variable names and dimension on both sides.
    assert tree["em"]["theta"].dims == ("component",)
    assert tree["posterior"]["theta"].dims == ("chain", "draw", "component")
    assert tree["em_trace"]["theta"].dims == ("iteration", "component")
    # Hard EM's first step is the lesson's {A, A, B, B, A}.
    np.testing.assert_allclose(tree["em_hard_trace"]["theta"].values[1], [16 / 30, 17 / 20])
    assert tree.attrs["seed"] == 45 and "pymc" in tree.attrs["versions"]
    page = (lecture_run / "index.html").read_text(encoding="utf-8")
    for heading in ("Summary", "EM: the iteration path", "EM against the posterior", "Joint posterior",
                    "Sampler diagnostics", "Reproducibility"):
        assert heading in page
    assert "<svg" in page
    # Where the time went: every stage of the run is recorded, the sampler's split into building, JAX
    # compile and sampling, and the page adds writing the file and rendering itself.
    timings = json.loads(tree.attrs["timings"])
    for stage in ("load", "em", "em_uncertainty", "sampling_total", "sampling_build", "sampling_compile",
                  "sampling_tune", "sampling_draws", "relabel"):
        assert timings[stage] >= 0, stage
    assert timings["sampling"] == timings["sampling_tune"] + timings["sampling_draws"]
    assert timings["sampling_build"] + timings["sampling"] <= timings["sampling_total"]
    assert tree["posterior"].attrs["sampler"] == "numpyro"
    # The coin model has no scale parameter: "auto" is the plain 0.8.
    assert tree["posterior"].attrs["target_accept"] == 0.8
    assert tree["posterior"].attrs["compiled_sampler"] in ("built", "loaded")
    for label in ("Time per stage", "posterior: JAX compile", "posterior: tuning (warm-up)", "posterior: draws",
                  "write results.nc", "render this page"):
        assert label in page, label
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the report must not load anything"


def test_report_rerenders_from_results_alone(lecture_run, tmp_path):
    out = tmp_path / "again.html"
    proc = run_cli("report", lecture_run / "results.nc", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "EM against the posterior" in out.read_text(encoding="utf-8")


def test_datasets_lists_the_bundled_data():
    proc = run_cli("datasets")
    assert proc.returncode == 0
    for name in ("coins_do_batzoglou", "coins_lecture", "old_faithful", "galaxies", "heroes"):
        assert name in proc.stdout


def _spec(tmp_path, text, name="bad"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_DATA = '[data]\ndataset = "coins_lecture"\n'
BAD_CASES = {
    "unknown_key": (GOOD_DATA + '[model]\nfamily = "coins"\ncomponets = 2\n', "unknown key '[model] componets'; did you mean 'components'?"),
    "k_below_one": (GOOD_DATA + '[model]\nfamily = "coins"\ncomponents = 0\n', "[model] components must be a whole number >= 1"),
    "bad_toml": ('[model\nfamily = "coins"\n', "not valid TOML"),
    "no_family": (GOOD_DATA + '[model]\ncomponents = 2\n', "[model] family is missing"),
    "theta_out_of_range": (GOOD_DATA + '[model]\nfamily = "coins"\n[em]\ninit = [1.5, 0.2]\n', "[em] init must be"),
    "wrong_type": (GOOD_DATA + '[model]\nfamily = "coins"\n[bayes]\ndraws = "many"\n', "[bayes] draws must be a whole number >= 1, got 'many'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_spec_is_one_line_exit_2_nothing_written(case, tmp_path):
    text, expected = BAD_CASES[case]
    out = tmp_path / "out"
    proc = run_cli("run", _spec(tmp_path, text), "--out", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in lines[0]
    assert not out.exists() or not any(out.iterdir())


CSV_CASES = {
    "heads_above_tosses": ("heads,tosses\n5,10\n12,10\n", "line 3: heads is 12 but tosses is 10; heads must be between 0 and tosses"),
    "negative": ("heads,tosses\n5,10\n-1,10\n", "line 3: heads is -1 but tosses is 10"),
    "missing_column": ("heads,n\n5,10\n", "column 'tosses' is missing"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv_is_one_line_exit_2_nothing_written(case, tmp_path):
    csv, expected = CSV_CASES[case]
    (tmp_path / "tosses.csv").write_text(csv, encoding="utf-8")
    spec = _spec(tmp_path, '[data]\nfile = "tosses.csv"\n[model]\nfamily = "coins"\n')
    out = tmp_path / "out"
    proc = run_cli("run", spec, "--out", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in lines[0], lines[0]
    assert not (out / "results.nc").exists() and not (out / "index.html").exists()


def test_missing_spec_file(tmp_path):
    proc = run_cli("run", tmp_path / "nope.toml")
    assert proc.returncode == 2
    assert "no such spec file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_results_file_of_another_kind(tmp_path):
    bogus = tmp_path / "results.nc"
    xr.Dataset({"x": ("a", [1, 2])}).to_netcdf(bogus, engine="h5netcdf")
    proc = run_cli("report", bogus)
    assert proc.returncode == 2 and "not an emvsbayes results file" in proc.stderr


def test_lecture_run_has_the_uncertainty_ladder(lecture_run):
    """The lecture spec enables [ladder]: both groups are written and the page shows the ladder's table,
    its figure and the co-clustering heat maps."""
    tree = xr.open_datatree(lecture_run / "results.nc", engine="h5netcdf")
    ladder = tree["uncertainty_ladder"].to_dataset()
    assert list(ladder["rung"].values) == ["mle_wald", "bootstrap_nonparametric", "bootstrap_parametric", "map_em",
                                           "laplace", "advi_fullrank", "bootstrap_bayesian", "nuts", "exact"]
    # The three bootstraps: the run's (rows resampled), the parametric one the ladder adds, the Bayesian one. The
    # first two estimate the same sampling spread of theta from 200 replicates each (an sd's MC error is about
    # 5 %) by different means (resampled experiments, simulated ones): with 5 experiments they differ by up to a
    # third here (measured 1.32 for theta[A]), so within a factor of 2; each interval holds EM's answer.
    sd = {kind: ladder["theta_sd"].sel(rung=f"bootstrap_{kind}").values for kind in ("nonparametric", "parametric")}
    assert np.all((sd["parametric"] > sd["nonparametric"] / 2) & (sd["parametric"] < 2 * sd["nonparametric"]))
    em_theta = tree["em"]["theta"].values
    assert np.all((ladder["theta_lower"].sel(rung="bootstrap_parametric").values <= em_theta)
                  & (em_theta <= ladder["theta_upper"].sel(rung="bootstrap_parametric").values))
    # The weights are fixed (equal) in the lecture: only theta has a ladder.
    assert json.loads(ladder.attrs["parameters"]) == ["theta"] and json.loads(ladder.attrs["skipped"]) == {}
    # Its rows are the run's own numbers: EM's answer, and the exact posterior by rank on EM's coins.
    np.testing.assert_array_equal(ladder["theta"].sel(rung="mle_wald").values, tree["em"]["theta"].values)
    rank = np.argsort(np.argsort(tree["em"]["theta"].values))
    np.testing.assert_array_equal(ladder["theta"].sel(rung="exact").values,
                                  tree["exact"]["theta_sorted_mean"].values[rank])
    # MAP-EM under the lecture's uniform Beta(1, 1) priors is the MLE (tolerance: EM's stopping rule).
    np.testing.assert_allclose(ladder["theta"].sel(rung="map_em").values, tree["em"]["theta"].values, atol=1e-6)
    cocluster = tree["coclustering"].to_dataset()
    assert list(cocluster["source"].values) == ["nuts", "laplace", "advi_fullrank", "bootstrap_bayesian"]
    assert cocluster.attrs["partition_source"] == "nuts"
    assert json.loads(tree.attrs["timings"])["ladder"] > 0
    page = (lecture_run / "index.html").read_text(encoding="utf-8")
    assert 'id="ladder"' in page and '<table class="ladder">' in page and 'data-fig="ladder-theta"' in page
    assert 'id="partition"' in page and 'data-fig="coclustering"' in page


def test_summary_names_the_model_in_the_familys_words(lecture_run):
    """The summary's model line comes from the family (written into results.nc as model_description), so a
    report never calls a hidden Markov model a mixture; the page says what the results file says."""
    import xarray as xr

    with xr.open_datatree(lecture_run / "results.nc") as tree:
        description = tree.attrs["model_description"]
    assert description == "binomial (coin) mixture, K = 2, weights equal"
    assert description in (lecture_run / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_pymcs_own_sampler_forks_no_process_that_runs_jax(tmp_path):
    """sampler = "pymc" forked one process per chain from a process whose JAX (the Wald information's programs) runs
    threads: Python warned of a possible deadlock on the terminal ("os.fork() was called ... JAX is multithreaded").
    Its chains now run one after another in the process; its own progress lines stay (not --quiet)."""
    spec = tmp_path / "coins_pymc.toml"
    spec.write_text('[data]\ndataset = "coins_lecture"\n[model]\nfamily = "coins"\ncomponents = 2\n[em]\nbootstrap = 0\n'
                    '[bayes]\nsampler = "pymc"\nchains = 2\ndraws = 100\ntune = 100\n', encoding="utf-8")
    proc = run_cli("run", spec, "--out", tmp_path / "out", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "fork" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert "Sequential sampling (2 chains in 1 job)" in proc.stderr, proc.stderr
    tree = xr.open_datatree(tmp_path / "out" / "results.nc", engine="h5netcdf")
    assert tree["posterior"].sizes["chain"] == 2
