"""The Python API (``emvsbayes.compare`` and friends): the same spec checks, the same pipeline and the
same results file as the command line, on in-memory data.

The oracles: the results file the pipeline writes (``Comparison.results`` must equal it), the command
line run of the spec ``to_spec`` emits (bit-identical numeric groups), ArviZ's own R-hat of the stored
draws, and the spec validator's messages. One coin comparison and one Gaussian comparison are sampled
once per module (chains=2, short runs) and shared.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import emvsbayes
from conftest import QUICK, ROOT, run_cli
from emvsbayes.errors import UserError
from emvsbayes.results import read_results

# The lesson's coins: heads of 10 tosses in each of five sets.
LESSON_PAIRS = [(5, 10), (7, 10), (8, 10), (9, 10), (4, 10)]
FAST = {"chains": 2, "draws": 100, "tune": 100}


def _numeric_groups_equal(a: xr.DataTree, b: xr.DataTree) -> list[str]:
    """Names of the variables that differ between two trees (values, dims, dtype), group by group."""
    differ = []
    assert set(a.children) == set(b.children)
    for name in a.children:
        da, db = a[name].to_dataset(), b[name].to_dataset()
        assert set(da.variables) == set(db.variables), name
        for var in da.variables:
            x, y = da[var], db[var]
            if x.dims != y.dims or x.dtype != y.dtype:
                differ.append(f"{name}/{var}")
            elif x.dtype.kind in "fc":
                if not np.array_equal(x.values, y.values, equal_nan=True):
                    differ.append(f"{name}/{var}")
            elif not np.array_equal(x.values, y.values):
                differ.append(f"{name}/{var}")
    return differ


@pytest.fixture(scope="module")
def coins():
    return emvsbayes.compare(LESSON_PAIRS, family="coins", components=2, init=[0.5, 0.9], kinds=["soft", "hard"],
                             bootstrap=20, seed=11, **FAST)


@pytest.fixture(scope="module")
def gaussian_frame():
    """Two separated groups in two named columns, with a row index of names and a text column."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal([-3.0, 0.0], 0.7, size=(12, 2)), rng.normal([3.0, 1.0], 0.7, size=(12, 2))])
    frame = pd.DataFrame(x, columns=["length", "width"], index=[f"row{i}" for i in range(24)])
    frame["group"] = ["a"] * 12 + ["b"] * 12
    return frame


@pytest.fixture(scope="module")
def gaussian(gaussian_frame):
    return emvsbayes.compare(gaussian_frame, family="gaussian", components=2, drop=["group"], standardize=True,
                             covariance="diag", seed=3, **FAST)


# --- the pipeline on a spec that was never a file ---------------------------------------------------------


def test_run_spec_runs_a_validated_spec_without_a_name(tmp_path):
    """Before the fix: KeyError 'name' (the title fell back on a name only load_spec sets)."""
    from emvsbayes.pipeline import run_spec
    from emvsbayes.spec import validate

    spec = validate({"data": {"dataset": "coins_do_batzoglou"}, "model": {"family": "coins"},
                     "bayes": {"enabled": False}, "seed": 1})
    outcome = run_spec(spec, tmp_path / "out", report=False)
    assert outcome.tree.attrs["title"] == "emvsbayes comparison"
    assert outcome.tree.attrs["spec_name"] == ""
    with pytest.raises(UserError, match="give an output folder"):
        run_spec(spec)  # no name and no folder: nowhere to write, said in one line


def test_import_stays_cheap_and_names_are_public():
    heavy = ("numpy", "xarray", "pandas", "pymc", "pytensor", "jax", "arviz", "matplotlib", "dask", "distributed")
    code = ("import sys, emvsbayes\n"
            f"print([m for m in {heavy!r} if m in sys.modules])\n"
            "names = [emvsbayes.compare, emvsbayes.Comparison, emvsbayes.run, emvsbayes.study, emvsbayes.load_spec,"
            " emvsbayes.load_dataset, emvsbayes.SpecError]\n"
            f"print([m for m in {heavy[3:]!r} if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    # Importing the package loads nothing; reaching every public name loads no sampler, plotting or Dask.
    assert proc.stdout.split("\n")[:2] == ["[]", "[]"]
    assert emvsbayes.SpecError is UserError
    for name in emvsbayes.__all__:
        obj = getattr(emvsbayes, name)
        if name == "study":  # the callable subpackage: its call is emvsbayes.api.study
            assert callable(obj)
            obj = emvsbayes.api.study
        if callable(obj):
            assert obj.__doc__ and (name in ("SpecError", "UserError") or "Returns" in obj.__doc__
                                    or "Attributes" in obj.__doc__), name
    assert (ROOT / "emvsbayes" / "py.typed").is_file()
    assert '"emvsbayes" = ["py.typed"]' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


# --- Comparison --------------------------------------------------------------------------------------------


def test_results_are_the_results_file(coins, tmp_path):
    assert {"data", "em", "em_hard", "em_information", "em_bootstrap", "exact", "posterior", "sample_stats",
            "posterior_relabelled"} <= set(coins.results.children)
    np.testing.assert_array_equal(coins.results["data"]["heads"].values, [5, 7, 8, 9, 4])
    saved = coins.save(tmp_path)
    assert saved == tmp_path / "results.nc"
    assert _numeric_groups_equal(coins.results, read_results(saved)) == []
    # Saving again over our own file is allowed; over anything else is not, and it is left as it was.
    coins.save(saved)
    other = tmp_path / "notes.nc"
    other.write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match=r"^save: .*notes.nc is not a results file written by emvsbayes.*choose another path$"):
        coins.save(other)
    assert other.read_text(encoding="utf-8") == "mine"


def test_summary_reads_the_tree(coins):
    import arviz_stats

    summary = coins.summary()
    assert list(summary.index) == ["theta[0]", "theta[1]", "w[0]", "w[1]"]
    tree = coins.results
    np.testing.assert_array_equal(summary["em"].values[:2], tree["em"]["theta"].values)
    np.testing.assert_array_equal(summary["wald_lower"].values[:2], tree["em_information"]["wald_lower_theta"].values)
    boot = tree["em_bootstrap"]["theta"].values
    # 89 % equal-tailed intervals (the spec's default interval_prob)
    np.testing.assert_allclose(summary["bootstrap_lower"].values[:2], np.quantile(boot, 0.055, axis=0), rtol=1e-12)
    relabelled = tree["posterior_relabelled"]["theta"].values
    np.testing.assert_allclose(summary["post_mean"].values[:2], relabelled.reshape(-1, 2).mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(summary["post_lower"].values[:2],
                               np.quantile(relabelled.reshape(-1, 2), 0.055, axis=0), rtol=1e-12)
    rhat = arviz_stats.rhat(tree["posterior"]["theta"].to_dataset()["theta"].transpose("chain", "draw", "component")).values
    np.testing.assert_allclose(summary["rhat"].values[:2], rhat, rtol=1e-12)
    # Equal, fixed weights: EM's estimate is 1/2 and the posterior has nothing to say (NaN R-hat).
    assert summary.loc["w[0]", "em"] == 0.5 and np.isnan(summary.loc["w[0]", "rhat"])
    assert summary.attrs["interval_prob"] == 0.89


def test_repr_html_is_the_small_summary_card(coins):
    html = coins._repr_html_()
    assert "<table" in html and "theta[0]" in html and "<svg" not in html and "<img" not in html
    assert len(html) < 20_000


def test_report_writes_the_page_and_never_over_a_foreign_file(coins, tmp_path):
    from emvsbayes.outputs import is_our_page

    page = coins.report(tmp_path / "page.html")
    assert is_our_page(page)
    text = page.read_text(encoding="utf-8")
    assert "EM against the posterior" in text and "Reproducibility" in text
    coins.report(page)  # ours: replaced
    assert coins.report(tmp_path) == tmp_path / "index.html"
    theirs = tmp_path / "theirs.html"
    theirs.write_text("<p>my notes</p>", encoding="utf-8")
    with pytest.raises(UserError, match="theirs.html is not a report page written by emvsbayes"):
        coins.report(theirs)
    assert theirs.read_text(encoding="utf-8") == "<p>my notes</p>"


@pytest.mark.slow
def test_save_and_report_never_break_a_published_pair(coins, tmp_path):
    """A folder that 'emvsbayes run' (or study, or report) published holds its results and page as one matched set;
    save and report wrote plain files over either, so the page no longer showed the results beside it (the
    command line's report --out refused this already). A folder of the user's own takes both."""
    from emvsbayes.outputs import OutputFolder

    published = tmp_path / "published"
    with OutputFolder(published, "run") as held:
        unit = held.new_unit()
        coins.save(unit / "results.nc")
        coins.report(unit / "index.html")
        held.publish(unit)
    before = {name: os.readlink(published / name) for name in ("results.nc", "index.html")}
    for call, target in [(coins.save, published / "results.nc"), (coins.save, published), (coins.report, published),
                         (coins.report, published / "index.html")]:
        with pytest.raises(UserError, match=f"is one of the outputs published together in {re.escape(str(published))}"):
            call(target)
    assert {name: os.readlink(published / name) for name in before} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    assert coins.save(mine) == mine / "results.nc" and coins.report(mine) == mine / "index.html"


@pytest.fixture(scope="module")
def yearly_counts():
    """The earthquake counts (1900-2006) as a pandas Series indexed by year: a Poisson mixture's rows and a hidden
    Markov model's series. Fitted with the bundled specs' K and priors and the quick runs' draws (QUICK), so the
    sampler programs are the ones the bundled pages' browser test compiles (one compile per model shape a suite)."""
    quakes = emvsbayes.load_dataset("earthquakes")
    return pd.Series(quakes.counts, index=pd.Index([int(year) for year in quakes.labels], name="year"), name="count")


@pytest.fixture(scope="module")
def poisson(yearly_counts):
    return emvsbayes.compare(yearly_counts, family="poisson", components=3, bootstrap=10, seed=5, **QUICK)


@pytest.fixture(scope="module")
def hmm(yearly_counts):
    return emvsbayes.compare(yearly_counts.reset_index(), family="hmm", components=3, label="year",
                             initial="stationary", transition_prior=1.0, rate_prior=[2.0, 0.1], bootstrap=10, seed=5,
                             **QUICK)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["coins", "gaussian", "poisson", "hmm"])
def test_to_spec_reruns_bit_identically_from_the_command_line(which, request, tmp_path):
    comparison = request.getfixturevalue(which)
    text = comparison.to_spec(data_path=tmp_path / "data.csv")
    (tmp_path / "rerun.toml").write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match="exists"):
        comparison.to_spec(data_path=tmp_path / "data.csv")  # never over a data file
    # a folder takes data.csv (it was called a data file that exists)
    (tmp_path / "folder").mkdir()
    assert f'file = "{tmp_path / "folder" / "data.csv"}"' in comparison.to_spec(data_path=tmp_path / "folder")
    assert (tmp_path / "folder" / "data.csv").read_text(encoding="utf-8") == (tmp_path / "data.csv").read_text(
        encoding="utf-8")
    proc = run_cli("run", tmp_path / "rerun.toml", "--out", tmp_path / "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    cli = read_results(tmp_path / "out" / "results.nc")
    assert _numeric_groups_equal(comparison.results, cli) == []
    assert cli.attrs["seed"] == comparison.results.attrs["seed"]
    assert cli.attrs["title"] == comparison.results.attrs["title"]


def test_dataframe_columns_rows_and_standardizing_are_kept(gaussian, gaussian_frame):
    data = gaussian.results["data"]
    assert list(data["feature"].values) == ["length", "width"]
    assert list(data["obs"].values) == list(gaussian_frame.index)
    x = gaussian_frame[["length", "width"]].to_numpy()
    np.testing.assert_allclose(data["x"].values, (x - x.mean(axis=0)) / x.std(axis=0), rtol=1e-12, atol=1e-12)
    assert gaussian.spec["model"]["covariance"] == "diag" and gaussian.spec["bayes"]["draws"] == 100
    assert {"w[0]", "mu[0, length]", "mu[1, width]"} <= set(gaussian.summary().index)


def test_a_spec_written_by_to_spec_before_it_left_out_unread_keys_still_loads(tmp_path):
    """to_spec wrote every key at its default, the coins' weights = "equal" in a Poisson spec too; written by a
    person that key is refused (the Poisson mixture estimates its weights), written by to_spec (its first line says
    so) it loads as before."""
    from emvsbayes.spec import TO_SPEC_HEADER, load_spec

    body = '[data]\ndataset = "earthquakes"\n[model]\nfamily = "poisson"\nweights = "equal"\n'
    (tmp_path / "old.toml").write_text(f"{TO_SPEC_HEADER}: run it with 'emvsbayes run THIS.toml'.\n{body}",
                                       encoding="utf-8")
    (tmp_path / "mine.toml").write_text(body, encoding="utf-8")
    assert load_spec(tmp_path / "old.toml")["model"]["family"] == "poisson"
    with pytest.raises(UserError, match=r"\[model\] weights applies to binomial \(coin\) mixtures only"):
        load_spec(tmp_path / "mine.toml")


def test_an_index_that_names_no_row_of_its_own_is_not_the_rows_names(gaussian_frame):
    """pd.concat leaves a repeated index: as row names it would name two rows alike in the membership tables and
    in the CSV a rerun reads (where [data] label refuses it), so the rows are numbered as for a default index."""
    from emvsbayes.data.memory import continuous_record as _continuous_record
    from emvsbayes.spec import validate

    data_spec = validate({"data": {"dataset": "old_faithful"}, "model": {"family": "gaussian"}})["data"]
    frame = gaussian_frame[["length", "width"]]
    record, _ = _continuous_record(frame, data_spec, "compare")
    assert record.labels == tuple(frame.index)
    for index in (list(range(12)) * 2, ["r"] * 24, [""] + [f"r{i}" for i in range(23)]):
        record, _ = _continuous_record(frame.set_axis(index), data_spec, "compare")
        assert record.labels == tuple(str(i) for i in range(1, 25))


def test_truth_names_the_known_groups_and_is_never_fitted(gaussian_frame):
    """truth= was never read: the group column was fitted as a feature (or dropped) and no clustering was
    compared with it. Now it is the CSV spec's [data] truth: left out of the features, compared with every
    clustering; never also fitted."""
    frame = gaussian_frame.assign(group=[0] * 12 + [1] * 12)  # numeric: it would have been fitted
    found = emvsbayes.compare(frame, family="gaussian", components=2, truth="group", seed=3, enabled=False, bootstrap=0)
    assert list(found.results["data"]["feature"].values) == ["length", "width"]
    assert list(found.results["data"]["truth"].values) == ["0"] * 12 + ["1"] * 12
    assert "truth_agreement" in found.results.children
    # a missing group was a group "nan" of its own; a CSV's empty cell is refused
    with pytest.raises(UserError, match=r"^compare: row 2 of column 'group' \(truth=\) is empty"):
        emvsbayes.compare(frame.assign(group=[0, None] + [1] * 22), family="gaussian", truth="group", enabled=False)
    with pytest.raises(UserError, match=r"^compare: truth='grp' is not a column of known groups .*did you mean 'group'"):
        emvsbayes.compare(frame, family="gaussian", components=2, truth="grp", enabled=False)
    for option in ("truth", "label"):
        with pytest.raises(UserError, match=rf"^compare: column 'group' is {option}=, so it cannot also be fitted"):
            emvsbayes.compare(frame, family="gaussian", components=2, columns=["length", "group"], enabled=False,
                              **{option: "group"})


def test_a_spec_dicts_data_file_may_be_a_path(tmp_path):
    # [data] file = Path(...) was refused ("got PosixPath(...)"): a dict spec takes a Path where a TOML spec has text
    shutil.copy(ROOT / "models" / "my_data.csv", tmp_path / "mine.csv")
    spec = {"data": {"file": tmp_path / "mine.csv", "label": "sample", "truth": "group", "drop": ["site"]},
            "model": {"family": "gaussian", "components": 3}, "bayes": {"enabled": False}, "em": {"bootstrap": 0}}
    found = emvsbayes.run(spec)
    assert found.results["data"].sizes["obs"] == 60 and "truth_agreement" in found.results.children


def test_a_dataarray_is_read_with_its_obs_dim_as_rows(gaussian_frame):
    # dims ("feature", "obs") were read as 2 rows of 24 columns, silently
    x = gaussian_frame[["length", "width"]].to_numpy()
    array = xr.DataArray(x.T, dims=("feature", "obs"), coords={"feature": ["length", "width"]})
    found = emvsbayes.compare(array, family="gaussian", components=2, seed=3, enabled=False, bootstrap=0)
    assert found.results["data"]["x"].shape == (24, 2)
    assert list(found.results["data"]["feature"].values) == ["length", "width"]
    np.testing.assert_array_equal(found.results["data"]["x"].values, x)
    # a MultiIndex frame's columns are named by their joined parts ("('size', 'length')" before)
    frame = pd.DataFrame(x, columns=pd.MultiIndex.from_tuples([("size", "length"), ("size", "width")]))
    found = emvsbayes.compare(frame, family="gaussian", components=2, seed=3, enabled=False, bootstrap=0)
    assert list(found.results["data"]["feature"].values) == ["size_length", "size_width"]


def test_a_series_is_its_one_named_column(gaussian_frame):
    """df["length"] was refused ("got Series") where the one-column frame df[["length"]] was fitted."""
    series = gaussian_frame["length"]
    from_series = emvsbayes.compare(series, family="gaussian", components=2, seed=3, enabled=False, bootstrap=0)
    from_frame = emvsbayes.compare(gaussian_frame[["length"]], family="gaussian", components=2, seed=3, enabled=False,
                                   bootstrap=0)
    assert list(from_series.results["data"]["feature"].values) == ["length"]
    assert list(from_series.results["data"]["obs"].values) == list(gaussian_frame.index)
    assert _numeric_groups_equal(from_series.results, from_frame.results) == []
    assert from_series.spec["title"].endswith("fitted to a Series")


@pytest.mark.slow
def test_run_and_load_spec_give_the_command_lines_numbers(tmp_path):
    spec_path = tmp_path / "coins.toml"
    spec_path.write_text('seed = 4\n[data]\ndataset = "coins_do_batzoglou"\n[model]\nfamily = "coins"\n'
                         '[bayes]\nenabled = false\n', encoding="utf-8")
    spec = emvsbayes.load_spec(spec_path)
    assert spec["name"] == "coins" and spec["em"]["max_iter"] == 500
    in_memory = emvsbayes.run(spec)
    written = emvsbayes.run(spec_path, out=tmp_path / "out")
    assert (tmp_path / "out" / "index.html").is_file()
    proc = run_cli("run", spec_path, "--out", tmp_path / "cli", "--quiet")
    assert proc.returncode == 0, proc.stderr
    cli = read_results(tmp_path / "cli" / "results.nc")
    assert _numeric_groups_equal(in_memory.results, cli) == []
    assert _numeric_groups_equal(written.results, cli) == []
    data = emvsbayes.load_dataset("coins_do_batzoglou")
    np.testing.assert_array_equal(data.heads, cli["data"]["heads"].values)


def test_inputs_of_every_kind_become_the_same_table():
    from emvsbayes.data.memory import continuous_record as _continuous_record

    options = {"columns": None, "drop": [], "standardize": False, "label": None}
    x = np.arange(12.0).reshape(6, 2)
    frame = pd.DataFrame(x, columns=["a", "b"])
    array_record, _ = _continuous_record(x, options, "compare")
    frame_record, _ = _continuous_record(frame, options, "compare")
    da = xr.DataArray(x, dims=("obs", "feature"), coords={"feature": ["a", "b"]})
    da_record, _ = _continuous_record(da, options, "compare")
    ds_record, _ = _continuous_record(frame.to_xarray().drop_vars("index"), options, "compare")
    for record in (array_record, frame_record, da_record, ds_record):
        np.testing.assert_array_equal(record.x, x)
        assert record.labels == tuple(str(i) for i in range(1, 7))
    assert array_record.columns == ("x1", "x2")
    assert frame_record.columns == da_record.columns == ds_record.columns == ("a", "b")


# --- bad input: one exception, one line naming the argument and the fix, nothing written ------------------


@pytest.fixture()
def nothing_written(tmp_path, monkeypatch):
    """Run in an empty folder with a private temporary folder; both must stay empty."""
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []


def _one_line_error(call, *pattern):
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    for part in pattern:
        assert part in message, message
    return message


FRAME = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 1.0, 0.0, 5.0], "kind": ["x", "y", "x", "y"]})


@pytest.mark.parametrize(
    ("data", "kwargs", "expected"),
    [
        (FRAME, {"family": "gaussian", "draw": 10}, ["compare: unknown option 'draw'", "did you mean 'draws'"]),
        (FRAME, {"family": "gaussian"}, ["column 'kind' is not numeric", "drop=['kind']"]),
        (FRAME, {"family": "gaussian", "drop": ["kind"], "draws": 0}, ["compare: [bayes] draws must be a whole number >= 1, got 0"]),
        (FRAME, {"family": "gaussian", "draws": 5, "bayes": {"draws": 6}}, ["both set [bayes] draws", "give it once"]),
        (FRAME, {"family": "gaussian", "bayes": 3}, ["bayes must be a dict of [bayes] keys"]),
        (FRAME, {"family": "gaussian", "em": {"n_int": 3}}, ["em={...} has unknown key 'n_int'", "did you mean 'n_init'"]),
        (FRAME, {}, ["family= is missing; give one of family='coins', family='gaussian', family='poisson', family='hmm'"]),
        (FRAME, {"family": "gaussain"}, ["[model] family must be one of 'coins', 'gaussian'"]),
        (FRAME, {"family": "gaussian", "drop": ["kind"], "components": 9}, ["components = 9 is more than the 4 rows"]),
        (FRAME, {"family": "gaussian", "file": "x.csv"}, ["file= names data to read", "emvsbayes.run(spec)"]),
        (FRAME, {"family": "gaussian", "percent": ["a"]}, ["percent= applies to reading CSV files"]),
        (FRAME, {"family": "gaussian", "columns": ["a", "c"]}, ["columns= names 'c', which is not a column"]),
        (FRAME.assign(a=[1.0, np.nan, 3.0, 4.0]), {"family": "gaussian", "drop": ["kind"]},
         ["column 'a' has a missing or infinite value in row 2", "dropna"]),
        (FRAME.assign(a=1.0), {"family": "gaussian", "drop": ["kind"], "standardize": True},
         ["column 'a' is constant", "drop = ['a']"]),
        (np.zeros((2, 2, 2)), {"family": "gaussian"}, ["1-D or 2-D array of numbers"]),
        ("faithful", {"family": "gaussian"}, ["got str"]),
        ([(11, 10)], {"family": "coins"}, ["set 1 has 11 heads of 10 tosses", "between 0 and tosses"]),
        ([(1, 0)], {"family": "coins"}, ["set 1 has 0 tosses"]),
        ([(1.5, 3)], {"family": "coins"}, ["two whole numbers (heads, tosses)"]),
        ([(5, 10)], {"family": "coins", "init": [0.5, 1.5]}, ["[em] init must be \"random\" or theta values"]),
    ],
)
def test_compare_refuses_bad_input_in_one_line_and_writes_nothing(data, kwargs, expected, nothing_written):
    _one_line_error(lambda: emvsbayes.compare(data, **kwargs), *expected)


def test_the_other_entry_points_refuse_bad_input_in_one_line(nothing_written, coins, tmp_path):
    _one_line_error(lambda: emvsbayes.load_spec("nope.toml"), "nope.toml: no such spec file")
    _one_line_error(lambda: emvsbayes.load_dataset("faithfull"), "'faithfull' is not bundled", "did you mean 'old_faithful'")
    # no close name: the data sets listed as such (they were called "known keys")
    _one_line_error(lambda: emvsbayes.load_dataset("zzzz"), "'zzzz' is not bundled; the data sets are ", "earthquakes")
    _one_line_error(lambda: emvsbayes.run({"model": {"family": "coins"}, "data": {"dataset": "coins_do_batzoglou"},
                                           "bayes": {"chain": 2}}), "run: unknown key '[bayes] chain'", "did you mean 'chains'")
    _one_line_error(lambda: emvsbayes.run(3), "run: spec must be a spec file's path or a spec dict")
    # a study spec: the fix in Python's terms (it said "run it with 'emvsbayes study ...'", the command line's)
    study_spec = str(ROOT / "models" / "study_coverage_gmm.toml")
    _one_line_error(lambda: emvsbayes.run(study_spec), f"run it with emvsbayes.study({study_spec!r})")
    _one_line_error(lambda: emvsbayes.run({"model": {"family": "coins"}, "data": {"dataset": "coins_do_batzoglou"}},
                                          seed=-1), "run: seed must be a whole number from 0 to 2**63 - 1")
    _one_line_error(lambda: coins.to_spec(3), "to_spec: data_path must be a path (a str or pathlib.Path), e.g. "
                    "data_path='data.csv', got 3")
    # a data file in a folder that does not exist: refused as save() and report() refuse it (it made the folder)
    _one_line_error(lambda: coins.to_spec("no/such/folder/d.csv"), "to_spec: folder no/such/folder does not exist")
    _one_line_error(lambda: emvsbayes.study("missing_study.toml"), "missing_study.toml")
    _one_line_error(lambda: emvsbayes.study({}, client="tcp://x"), "study: client must be a dask.distributed.Client")
    _one_line_error(lambda: coins.save("no/such/folder/results.nc"), "save: folder no/such/folder does not exist")
    _one_line_error(lambda: coins.report("no/such/folder/page.html"), "report: folder no/such/folder does not exist")
    # a path under a file: the file is named (it said "folder ... does not exist")
    user_file = tmp_path / "user.html"
    user_file.write_text("mine", encoding="utf-8")
    _one_line_error(lambda: coins.save(user_file / "x.nc"), f"save: {user_file} is a file, not a folder")
    assert user_file.read_text(encoding="utf-8") == "mine"
    # a folder that does not exist, a name too long, a NUL: a file named "newdir" was written, raw OSError/ValueError
    _one_line_error(lambda: coins.save(f"{tmp_path}/newdir/"), f"save: folder {tmp_path / 'newdir'} does not exist; "
                    "create it, or give the file to write, e.g.")
    _one_line_error(lambda: coins.report(tmp_path / ("L" * 300 + ".html")), "report: path has a name of 305 bytes")
    _one_line_error(lambda: coins.save("a\x00b.nc"), "save: path holds a NUL character")
    assert not (tmp_path / "newdir").exists()
    run_spec = json.loads(json.dumps(coins.spec))
    _one_line_error(lambda: emvsbayes.run(run_spec), "this spec's data were in memory", "to_spec(data_path=...)")


# --- the study on an existing client ------------------------------------------------------------------------


STUDY = """
kind = "coverage"
seed = 3
replicates = 2
[model]
family = "coins"
[grid]
n_sets = [8]
[bayes]
chains = 2
draws = 100
tune = 100
[intervals]
kinds = ["wald"]
"""


def test_study_runs_on_the_callers_client_and_leaves_it_open(tmp_path):
    from distributed import Client, LocalCluster

    spec = tmp_path / "tiny.toml"
    spec.write_text(STUDY, encoding="utf-8")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = emvsbayes.study(spec, client, out=tmp_path / "out")
        assert client.status == "running"
        assert client.submit(sum, [1, 2]).result() == 3
    assert outcome.n_computed == 2 and outcome.n_failed == 0
    from emvsbayes.study import read_study

    ds = read_study(outcome.results_path)
    assert ds.sizes["replicate"] == 2


# --- K = 1 (every EM restart ends at the same point) ------------------------------------------------------


def test_restarts_that_all_end_at_one_point_are_one_optimum():
    """Before the fix: StopIteration, so a Gaussian K = 1 comparison (examples/choose_k.py) crashed."""
    from emvsbayes.labels.diagnostics import distinct_optima

    optima = distinct_optima({}, np.array([-7.5, -7.5, -7.5]))
    assert len(optima) == 1 and optima[0].count == 3 and optima[0].loglik == -7.5
    np.testing.assert_array_equal(optima[0].members, [0, 1, 2])


# --- examples/ --------------------------------------------------------------------------------------------


def _run_example(name: str, folder) -> str:
    """Run ``examples/NAME`` as a user would (from a fresh folder), with short chains."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EMVSBAYES_EXAMPLE_DRAWS": "100", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, cwd=folder,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_example_coins_from_a_list(coins, tmp_path):
    out = _run_example("coins_from_a_list.py", tmp_path)
    # EM is deterministic from the lesson's start: the script's estimates are the fixture's.
    em = coins.summary()["em"]
    assert f"theta[A]   {em['theta[0]']:.3f}" in out and f"theta[B]   {em['theta[1]']:.3f}" in out
    from emvsbayes.outputs import is_our_page

    assert is_our_page(tmp_path / "coins.html")


@pytest.mark.slow
def test_example_gaussian_dataframe(tmp_path):
    out = _run_example("gaussian_dataframe.py", tmp_path)
    # The two simulated kinds are far apart (means 1.5 and 4.5, sds 0.2 and 0.4): both engines find them.
    assert "EM agrees with the known kinds on 100% of the rows" in out
    assert "posterior agrees with the known kinds on 100% of the rows" in out


@pytest.mark.slow
def test_example_choose_k(tmp_path):
    out = _run_example("choose_k.py", tmp_path)
    import re

    line = out.split("EM's BIC by K (lower is better):")[1].splitlines()[0]
    bic = {k: float(v) for k, v in re.findall(r"(\d+): ([-\d.]+)", line)}
    # Old Faithful's eruption times are bimodal: two components beat one by far.
    assert set(bic) == {"1", "2", "3"} and bic["2"] < bic["1"] - 100
    assert "sigma[2]" in out


@pytest.mark.slow
def test_lesson_notebook_runs(tmp_path, monkeypatch):
    """examples/lesson.ipynb, executed as Jupyter would (nbclient, a real kernel); a failing cell fails it."""
    import nbclient
    import nbformat

    monkeypatch.setenv("EMVSBAYES_EXAMPLE_DRAWS", "100")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    notebook = nbformat.read(ROOT / "examples" / "lesson.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    card = next(o for o in outputs if o.output_type == "execute_result")
    assert "emvsbayes-comparison" in card["data"]["text/html"]
    assert (tmp_path / "coins_lesson.html").is_file()


@pytest.mark.slow
def test_drawing_figures_leaves_a_notebooks_matplotlib_alone(monkeypatch):
    """In a Jupyter kernel (nbclient, as users run it), emvsbayes's figures switched the session's backend from the
    inline one to Agg for good (matplotlib.use at import: the user's next plots showed nothing), and a plot
    arviz-plots could not draw closed every figure of the session (plt.close("all")). The page's figures
    (Comparison.report and _repr_html_ draw in the caller's process) now leave both alone."""
    import nbclient
    import nbformat

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    drawing = """
import matplotlib
import matplotlib.pyplot as plt
mine = plt.figure()
from emvsbayes.report import figures

def fails(tree, backend):  # opens a figure, then fails as arviz-plots does on degenerate draws
    plt.figure()
    raise ValueError("degenerate")

with figures.drawing():
    svg = figures.arviz_figure(fails, None) + figures.message_figure("a figure of ours")
print(matplotlib.get_backend(), plt.fignum_exists(mine.number), plt.get_fignums() == [mine.number], svg.count("<svg"))
"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(drawing),
                                               nbformat.v4.new_code_cell("plt.plot([1, 2]);")])
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    first, second = (cell.outputs for cell in notebook.cells)
    # the text, then the user's own figure shown at the cell's end; none of ours (closed once drawn)
    assert [o.output_type for o in first] == ["stream", "display_data"], first
    assert first[1]["data"]["text/plain"] == "<Figure size 640x480 with 0 Axes>", first
    backend, kept, only_mine, n_svg = first[0]["text"].split()
    assert backend in ("inline", "module://matplotlib_inline.backend_inline") and (kept, only_mine, n_svg) == (
        "True", "True", "2"), first[0]["text"]
    # the user's next plot is shown inline, as before emvsbayes drew anything
    assert [o.output_type for o in second] == ["display_data"] and "image/png" in second[0]["data"], second


def test_counts_of_every_kind_become_the_same_record():
    """The Poisson mixture's data in memory: one column of counts, its rows named by an index, a coordinate or a
    label column; checked as the CSV reader checks a file's counts."""
    from emvsbayes.data.memory import count_record

    counts = [4, 0, 7, 12]
    years = [2001, 2002, 2003, 2004]
    frame = pd.DataFrame({"year": years, "n": counts, "site": ["a", "b", "c", "d"]})
    kinds = {
        "list": (count_record(counts, "count", None, "compare"), ("1", "2", "3", "4"), "count"),
        "array": (count_record(np.array(counts, dtype=float), "count", None, "compare"), ("1", "2", "3", "4"), "count"),
        "Series": (count_record(pd.Series(counts, index=years, name="n"), "count", None, "compare"),
                   tuple(map(str, years)), "n"),
        "DataArray": (count_record(xr.DataArray(counts, dims="year", coords={"year": years}, name="n"), "count", None,
                                   "compare"), tuple(map(str, years)), "n"),
        "DataFrame": (count_record(frame, "n", "year", "compare"), tuple(map(str, years)), "n"),
    }
    for kind, (record, labels, column) in kinds.items():
        assert record.counts.tolist() == counts and record.counts.dtype == np.int64, kind
        assert record.labels == labels and record.column == column, kind
    for data, counts_key, label, expected in (
            ([1, 2.5], "count", None, "row 2 of column 'count' is 2.5, not a whole number"),
            ([1, np.inf], "count", None, "row 2 of column 'count' is inf, a missing or infinite value"),
            ([True, False], "count", None, "got True in row 1"),  # numpy would read them as 1 and 0
            (frame, "count", None, "data has no column 'count' (columns: year, n, site); name the column with counts='...'"),
            (frame, "site", "year", "column 'site' is not numeric (text)"),
            (pd.DataFrame({"n": counts, "year": [1, 1, 2, 3]}), "n", "year", "rows 1 and 2 have the same name '1'")):
        _one_line_error(lambda: count_record(data, counts_key, label, "compare"), expected)


def test_a_series_of_every_kind_is_one_series_in_time_order():
    """The hidden Markov model's data in memory: one series, its time labels from an index (dates at midnight as ISO
    dates), a coordinate or a label column; refused with a gap, uneven or repeated times, or (Poisson emissions)
    values that are not counts, as a file's series is."""
    from emvsbayes.hmm.series import series_csv, series_from_memory

    spec = {"data": {"columns": None, "label": None, "drop": []}}
    days = pd.date_range("2024-03-30", periods=4, freq="D")
    values = [2.5, 0.0, 7.25, 1.0]
    from_dates = series_from_memory(pd.Series(values, index=days, name="v"), spec, "compare", counts=False)
    assert from_dates.time == ("2024-03-30", "2024-03-31", "2024-04-01", "2024-04-02")
    assert from_dates.y.tolist() == values and from_dates.column == "v"
    frame = pd.DataFrame({"day": list(from_dates.time), "v": values, "note": ["a", "b", "c", "d"]})
    from_frame = series_from_memory(frame, {"data": {"columns": None, "label": "day", "drop": ["note"]}}, "compare",
                                    counts=False)
    assert from_frame.time == from_dates.time and from_frame.y.tolist() == values and from_frame.time_column == "day"
    # the times' name: the index's, or the DataArray's dimension (the page's axis and the rerun's label column)
    named = series_from_memory(pd.Series(values, index=pd.Index([1990, 1991, 1992, 1993], name="year")), spec,
                               "compare", counts=False)
    along = series_from_memory(xr.DataArray(values, dims="week", coords={"week": [3, 4, 5, 6]}), spec, "compare",
                               counts=False)
    assert (named.time_column, named.time[0], along.time_column, along.time[0]) == ("year", "1990", "week", "3")
    bare = series_from_memory(values, spec, "compare", counts=False)
    assert bare.time == ("1", "2", "3", "4") and bare.column == "y"
    # back to CSV: the text the rerun's spec reads, every value the same float
    text, keys = series_csv(from_dates)
    assert text == "time,v\n2024-03-30,2.5\n2024-03-31,0\n2024-04-01,7.25\n2024-04-02,1\n"  # an unnamed index: "time"
    assert keys == {"columns": ["v"], "drop": [], "label": "time"}
    for data, counts, expected in (
            (pd.Series(values, index=days[[0, 1, 3, 2]]), False, "row 3, the index jumps from 2024-03-31 to "
             "2024-04-02 where the series steps by 1 day (a gap)"),
            (pd.Series(values, index=[5, 6, 6, 7]), False, "row 3, the index repeats the time '6' of row 2"),
            (values, True, "row 1, column 'y' is 2.5, not a whole number"),
            ([1, 2, 3e7], True, "row 3, column 'y' is 30000000, a count beyond 10,000,000"),
            (frame, False, "data has 3 columns (day, v, note); this model fits one: name it with columns=['...']")):
        _one_line_error(lambda: series_from_memory(data, spec, "compare", counts=counts), expected)


def test_a_familys_own_keys_are_options_and_another_familys_are_named():
    """counts=, emission=, initial= (keys only some families read) were "unknown options", the data section's dict
    collided with the data argument (a TypeError), and the messages of the in-memory readers advised them."""
    counts = pd.DataFrame({"n": [1, 2, 3, 10, 12, 11]})
    quick = {"enabled": False, "bootstrap": 0, "n_init": 2}
    assert emvsbayes.compare(counts, family="poisson", counts="n", **quick).spec["data"]["counts"] == "n"
    assert emvsbayes.compare(counts, family="poisson", data={"counts": "n"}, **quick).spec["data"]["counts"] == "n"
    hmm = emvsbayes.compare([0.1, 0.5, 3.2, 3.1, 0.2, 0.3], family="hmm", emission="gaussian",
                            model={"initial": "stationary"}, **quick)
    assert (hmm.spec["model"]["emission"], hmm.spec["model"]["initial"]) == ("gaussian", "stationary")
    _one_line_error(lambda: emvsbayes.compare([1.0, 2.0, 3.0], family="gaussian", emission="gaussian"),
                    "compare: emission= is an option of family='hmm', not of family='gaussian'; remove it")


def test_times_of_every_kind_are_checked_as_a_series_needs():
    """Hourly, quarterly and monthly times (an index, pandas' periods, a column of datetimes) are read in their own
    units: out of order or with a gap they were fitted as they came (the labels were not recognised as times)."""
    from emvsbayes.hmm.series import series_from_memory

    spec = {"data": {"columns": None, "label": None, "drop": []}}
    values = [1, 2, 3, 10, 12, 11, 2, 1]
    hours = pd.date_range("2020-01-01", periods=9, freq="h")
    fine = {"hourly": pd.Series(values, index=hours[:8]),
            "hourly over a DST change": pd.Series(values, index=pd.date_range("2020-03-29", periods=8, freq="h",
                                                                              tz="Europe/Berlin")),
            "quarterly periods": pd.Series(values, index=pd.period_range("2020Q1", periods=8, freq="Q")),
            "monthly periods": pd.Series(values, index=pd.period_range("2020-01", periods=8, freq="M"))}
    for kind, data in fine.items():
        assert series_from_memory(data, spec, "compare", counts=True).n_time == 8, kind
    by_day = pd.DataFrame({"c": values, "t": pd.date_range("2020-01-01", periods=8)[::-1]})
    for data, data_spec, expected in (
            (pd.Series(values, index=hours.delete(4)), spec, "row 5, the index jumps from 2020-01-01 03:00:00 to "
             "2020-01-01 05:00:00 where the series steps by 1 hour (a gap)"),
            (pd.Series(values, index=pd.period_range("2020-01", periods=8, freq="M")[::-1]), spec,
             "the index goes from 2020-08 to 2020-07 (rows 1, 2): a series must be in increasing time order"),
            (pd.Series(values, index=pd.period_range("2020Q1", periods=9, freq="Q").delete(3)), spec,
             "where the series steps by 1 quarter (a gap)"),
            (by_day, {"data": {"columns": ["c"], "label": "t", "drop": []}},
             "column 't' goes from 2020-01-08 to 2020-01-07 (rows 1, 2)"),
            (pd.Series(values, index=[1.0, 2, 3, 4, 5, 6, 7, np.nan]), spec,
             "row 8 has no time (the index is empty or missing there)")):
        _one_line_error(lambda: series_from_memory(data, data_spec, "compare", counts=True), expected)


def test_coin_sets_are_named_by_a_label_column_or_the_index():
    """label= was ignored for coin data (and a missing column accepted); a DataFrame's index was not read."""
    from emvsbayes.data.memory import coin_record

    frame = pd.DataFrame(LESSON_PAIRS, columns=["heads", "tosses"]).assign(coin=list("abcde"))
    names = {"heads": "heads", "tosses": "tosses"}
    assert coin_record(frame, {**names, "label": "coin"}, "compare").labels == tuple("abcde")
    assert coin_record(frame.set_index("coin"), {**names, "label": None}, "compare").labels == tuple("abcde")
    _one_line_error(lambda: coin_record(frame, {**names, "label": "nope"}, "compare"), "label='nope' is not a column")
    _one_line_error(lambda: coin_record(LESSON_PAIRS, {**names, "label": "coin"}, "compare"),
                    "(heads, tosses) pairs have none")
    # the label column is the data: the sets were named by their heads, and the heads fitted too
    _one_line_error(lambda: coin_record(frame, {**names, "label": "heads"}, "compare"),
                    "column 'heads' is heads=, so it cannot also be label=")
    from emvsbayes.data.memory import count_record

    _one_line_error(lambda: count_record(pd.DataFrame({"n": [3, 3, 5]}), "n", "n", "compare"),
                    "column 'n' is label=, so it cannot also be fitted")  # not "rows 1 and 2 have the same name"


def test_a_column_without_a_name_is_refused_or_named_for_the_model():
    """A Series named "" was fitted, and the spec to_spec wrote for it refused on the rerun ("counts must name the
    column"): unnamed, it takes the model's own name; a DataFrame column without one is refused."""
    from emvsbayes.data.memory import count_record

    assert count_record(pd.Series([1, 2, 3], name="  "), "count", None, "compare").column == "count"
    _one_line_error(lambda: count_record(pd.DataFrame({"": [1, 2], "b": [3, 4]}), "b", None, "compare"),
                    "a column has no name")
    # numbers held as Python objects are numbers; whole numbers beyond 2**53 are compared before any rounding
    assert count_record(pd.Series([1, 2, 3], dtype=object), "count", None, "compare").counts.tolist() == [1, 2, 3]
    _one_line_error(lambda: count_record([1, 2, 2**53 + 1], "count", None, "compare"), "is 9007199254740993, larger")


def test_to_spec_writes_the_known_groups_for_the_rerun(gaussian_frame, tmp_path):
    """The known groups (truth=) were left out of to_spec's CSV while the spec still named their column: the rerun
    ended in "column 'group' is missing". The CSV now holds them and reads back as the same record."""
    from emvsbayes.data.csv import load_continuous_csv
    from emvsbayes.data.memory import continuous_csv, continuous_record

    data_spec = {"columns": None, "drop": [], "standardize": False, "label": None, "truth": "group"}
    record, raw = continuous_record(gaussian_frame, data_spec, "compare")
    text, keys = continuous_csv(record, raw)
    (tmp_path / "d.csv").write_text(text, encoding="utf-8")
    again = load_continuous_csv(tmp_path / "d.csv", keys["columns"], label=keys["label"], drop=keys["drop"],
                                truth=keys["truth"])
    np.testing.assert_array_equal(again.x, record.x)
    assert again.truth == record.truth and again.labels == record.labels and again.columns == record.columns


def test_coin_counts_of_every_kind_become_the_same_record():
    from emvsbayes.data.memory import coin_record as _coin_record

    options = {"heads": "h", "tosses": "n"}
    pairs = [(5, 10), (7, 10), (0, 3)]
    from_list = _coin_record(pairs, options, "compare")
    from_array = _coin_record(np.array(pairs), options, "compare")
    from_frame = _coin_record(pd.DataFrame(pairs, columns=["h", "n"]), options, "compare")
    for record in (from_list, from_array, from_frame):
        np.testing.assert_array_equal(record.heads, [5, 7, 0])
        np.testing.assert_array_equal(record.tosses, [10, 10, 3])
        assert record.labels == ("set 1", "set 2", "set 3")
    _one_line_error(lambda: _coin_record(pd.DataFrame(pairs, columns=["heads", "n"]), options, "compare"),
                    "data has no column 'h'", "heads='...'")


def test_to_spec_of_a_spec_file_run_points_at_its_data(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "counts.csv").write_text("heads,tosses\n5,10\n9,10\n8,10\n", encoding="utf-8")
    (folder / "mine.toml").write_text('seed = 2\n[data]\nfile = "counts.csv"\n[model]\nfamily = "coins"\n'
                                      '[bayes]\nenabled = false\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    comparison = emvsbayes.run(folder / "mine.toml")
    text = comparison.to_spec()
    assert f'file = "{folder / "counts.csv"}"' in text
    (tmp_path / "elsewhere.toml").write_text(text, encoding="utf-8")
    again = emvsbayes.run(tmp_path / "elsewhere.toml")
    assert _numeric_groups_equal(comparison.results, again.results) == []


def test_coin_counts_in_a_dataset_or_numbered_columns_are_the_same_sets_as_pairs():
    """An xarray Dataset holds columns by name as a dict does; a DataFrame made from a list has columns 0 and 1,
    named heads="0", tosses="1" as their text (both were refused)."""
    import xarray as xr

    from emvsbayes.data.memory import coin_record as _coin_record

    pairs = _coin_record(LESSON_PAIRS, {"heads": "heads", "tosses": "tosses"}, "compare")
    heads, tosses = [h for h, _ in LESSON_PAIRS], [t for _, t in LESSON_PAIRS]
    dataset = _coin_record(xr.Dataset({"heads": ("set", heads), "tosses": ("set", tosses)}),
                           {"heads": "heads", "tosses": "tosses"}, "compare")
    numbered = _coin_record(pd.DataFrame(LESSON_PAIRS), {"heads": "0", "tosses": "1"}, "compare")
    for record in (dataset, numbered):
        assert record.heads.tolist() == pairs.heads.tolist() and record.tosses.tolist() == pairs.tosses.tolist()


def test_coin_counts_as_a_dict_of_columns_are_the_same_sets_as_pairs():
    """{"heads": [...], "tosses": [...]}, as a DataFrame holds them: the same record as the pairs (it was refused
    with "set 1 is ('h', 'e', 'a', 'd', 's')")."""
    from emvsbayes.data.memory import coin_record as _coin_record

    data_spec = {"heads": "heads", "tosses": "tosses"}
    pairs = _coin_record(LESSON_PAIRS, data_spec, "compare")
    columns = _coin_record({"heads": [h for h, _ in LESSON_PAIRS], "tosses": np.array([t for _, t in LESSON_PAIRS])},
                           data_spec, "compare")
    np.testing.assert_array_equal(columns.heads, pairs.heads)
    np.testing.assert_array_equal(columns.tosses, pairs.tosses)
    assert columns.source == "dict"
