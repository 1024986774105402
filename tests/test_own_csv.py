"""A practitioner's own CSV: the spec-key table, the defaults, the text-column error, known groups (truth)."""

import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix

from conftest import ROOT, run_cli
from emvsbayes.comparison import agreement_group, truth_agreement_group
from emvsbayes.data import load_continuous_csv
from emvsbayes.errors import UserError
from emvsbayes.report.markup import fmt
from emvsbayes.spec import SCHEMA, validate
from emvsbayes.spec_keys import BEGIN, END, family_keys, readme_block, replace_in_readme, spec_keys_markdown
from emvsbayes.uncertainty import confusion_table

# --- the table of spec keys ----------------------------------------------------------------------------


def test_readme_spec_key_table_is_the_one_generated_from_the_schema():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == readme_block(), "README's spec keys are stale: run emvsbayes spec-keys --write README.md"


def test_spec_key_table_has_one_row_per_schema_key_with_its_default():
    rows = spec_keys_markdown().splitlines()[2:]
    # one row per shared key, then one per family's own key (hmm's and poisson's priors, ...)
    assert len(rows) == sum(len(keys) for keys in SCHEMA.values()) + len(family_keys())
    assert "| [bayes] | `transition_prior` | `none` | hmm: Dirichlet concentration" in spec_keys_markdown()
    assert "| [em] | `init` | `\"auto\"` |" in spec_keys_markdown()
    assert "| [data] | `truth` | `none` |" in spec_keys_markdown()
    assert "| [model] | `family` | `required` |" in spec_keys_markdown()


def test_spec_keys_command_rewrites_a_stale_table_and_keeps_the_rest(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n\n{BEGIN}\n| old | table |\n{END}\n\nafter\n", encoding="utf-8")
    proc = run_cli("spec-keys", "--write", readme)
    assert proc.returncode == 0, proc.stderr
    assert readme.read_text(encoding="utf-8") == f"# top\n\n{readme_block()}\n\nafter\n"
    printed = run_cli("spec-keys")
    assert printed.returncode == 0 and printed.stdout.strip() == spec_keys_markdown()


def test_spec_keys_refuses_a_readme_without_markers():
    with pytest.raises(UserError, match="^the README has no spec-keys table"):
        replace_in_readme("# a README without the table\n")
    # the file given is named (it was "the README" whatever the file)
    with pytest.raises(UserError, match="^notes.md has no spec-keys table"):
        replace_in_readme("# notes\n", "notes.md")


# --- defaults as good as the bundled specs' ---------------------------------------------------------------


def test_defaults_are_those_of_the_bundled_specs():
    gaussian = validate({"data": {"file": "x.csv"}, "model": {"family": "gaussian"}})["em"]
    assert gaussian["init"] == "k-means++" and gaussian["n_init"] == 10
    assert gaussian["kinds"] == ["soft", "hard"] and gaussian["bootstrap"] == 200
    assert (gaussian["reach_best"], gaussian["max_init"]) == (3, 200)
    coins = validate({"data": {"dataset": "coins_lecture"}, "model": {"family": "coins"}})["em"]
    assert coins["init"] == "random" and coins["n_init"] == 10 and coins["kinds"] == ["soft", "hard"]
    # A spec that names its init keeps it.
    assert validate({"data": {"file": "x.csv"}, "model": {"family": "gaussian"},
                     "em": {"init": "kmeans"}})["em"]["init"] == "kmeans"


def test_truth_needs_a_csv_of_measurements():
    with pytest.raises(UserError, match=r"\[data\] truth names a column of known groups in a CSV file"):
        validate({"data": {"dataset": "galaxies", "truth": "g"}, "model": {"family": "gaussian"}})
    with pytest.raises(UserError, match=r"\[data\] truth"):
        validate({"data": {"file": "c.csv", "truth": "g"}, "model": {"family": "coins"}})


# --- the text-column error names the key that fixes it ----------------------------------------------------


def test_a_text_column_error_names_every_key_that_fixes_it(tmp_path):
    spec = tmp_path / "mine.toml"
    (tmp_path / "mine.csv").write_text("a,b,group\n1.0,2.0,gamma\n1.5,2.5,delta\n", encoding="utf-8")
    spec.write_text('[data]\nfile = "mine.csv"\n[model]\nfamily = "gaussian"\n', encoding="utf-8")
    proc = run_cli("run", spec, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert "\n" not in message
    for fix in ('[data] truth = "group"', '[data] drop = ["group"]', "[data] columns = [...]",
                '[data] categories = {"group" = {"gamma" = 0, ...}}'):
        assert fix in message, fix
    assert not (tmp_path / "out").exists()


# --- known groups: read, kept out of the fit, compared with every clustering --------------------------------


def test_truth_column_is_read_and_not_fitted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,x,kind,y\nr1,1.0,a,2.0\nr2,3.0,b,4.0\n", encoding="utf-8")
    data = load_continuous_csv(path, label="id", truth="kind")
    assert data.columns == ("x", "y") and data.truth == ("a", "b") and data.truth_column == "kind"
    with pytest.raises(UserError, match=r"column 'kind' is \[data\] truth, .* remove it from \[data\] columns"):
        load_continuous_csv(path, columns=["x", "kind"], label="id", truth="kind")
    with pytest.raises(UserError, match=r"column 'kinds' is missing .*did you mean 'kind'"):
        load_continuous_csv(path, label="id", truth="kinds")


def test_confusion_table_and_truth_agreement_match_scikit_learn():
    rng = np.random.default_rng(16)
    truth = rng.choice(["alpha", "beta", "gamma"], size=40)
    em_resp = rng.dirichlet(np.ones(3), size=40)
    kmeans = rng.integers(0, 3, size=40)
    groups, counts = confusion_table(truth, kmeans, 3)
    assert groups == ("alpha", "beta", "gamma")
    np.testing.assert_array_equal(counts, contingency_matrix(truth, kmeans))
    agreement = agreement_group("obs", np.arange(40), em_resp, None, {"k-means": kmeans})
    ds = truth_agreement_group(truth, agreement, 3, column="kind")
    assert list(ds["labelling"].values) == ["EM", "k-means"]
    np.testing.assert_allclose(ds["ari"].sel(labelling="k-means"), adjusted_rand_score(truth, kmeans), rtol=1e-12)
    np.testing.assert_allclose(ds["ari"].sel(labelling="EM"), adjusted_rand_score(truth, em_resp.argmax(1)), rtol=1e-12)
    assert ds["confusion"].sum(("truth_group", "component")).values.tolist() == [40, 40]


def test_confusion_tables_rename_components_to_match_soft_em():
    # k-means finds soft EM's partition under other names: its table is soft EM's, column for column.
    truth = np.array(["a", "a", "b", "b", "c", "c", "c"])
    em_labels = np.array([0, 0, 1, 1, 2, 2, 1])
    kmeans = np.array([2, 2, 0, 0, 1, 1, 0])
    em_resp = np.eye(3)[em_labels]
    agreement = agreement_group("obs", np.arange(7), em_resp, None, {"k-means": kmeans})
    ds = truth_agreement_group(truth, agreement, 3)
    np.testing.assert_array_equal(ds["confusion"].sel(labelling="k-means"), ds["confusion"].sel(labelling="EM"))
    np.testing.assert_array_equal(ds["confusion"].sel(labelling="EM"), [[2, 0, 0], [0, 2, 0], [0, 1, 2]])


@pytest.fixture(scope="module")
def truth_run(tmp_path_factory):
    """A small 1-D CSV with two well-separated known groups, a short posterior: the report from its file."""
    folder = tmp_path_factory.mktemp("truth")
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0.0, 1.0, 15), rng.normal(6.0, 1.0, 15)])
    kinds = ["low"] * 15 + ["high"] * 15
    kinds[0] = "high"  # one row whose known group the measurements contradict: ARI below 1
    lines = ["name,value,kind"] + [f"row{i},{v:.3f},{k}" for i, (v, k) in enumerate(zip(x, kinds, strict=True))]
    (folder / "mine.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "mine.toml").write_text(
        'seed = 3\n[data]\nfile = "mine.csv"\nlabel = "name"\ntruth = "kind"\n[model]\nfamily = "gaussian"\n'
        '[em]\nbootstrap = 0\n[bayes]\nchains = 2\ndraws = 200\ntune = 200\n', encoding="utf-8")
    proc = run_cli("run", folder / "mine.toml", "--out", folder / "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return folder / "out", x, kinds


@pytest.mark.slow
def test_a_truth_column_is_stored_and_compared_with_every_clustering(truth_run):
    out, x, kinds = truth_run
    tree = xr.open_datatree(out / "results.nc", engine="h5netcdf")
    assert tree["data"]["truth"].values.tolist() == kinds
    assert tree["data"]["x"].sizes["feature"] == 1  # the truth column was not fitted
    agreement = tree["truth_agreement"]
    assert set(agreement["labelling"].values) == {"EM", "hard EM", "k-means", "posterior mode"}
    hard = tree["membership_agreement"]["hard_label"]
    for name in agreement["labelling"].values:
        labels = hard.sel(labelling=name).values
        np.testing.assert_allclose(agreement["ari"].sel(labelling=name), adjusted_rand_score(kinds, labels), rtol=1e-12)
        # The same counts as scikit-learn's, up to the renaming of components to match soft EM's.
        confusion = agreement["confusion"].sel(labelling=name).values
        assert sorted(map(tuple, confusion.T)) == sorted(map(tuple, contingency_matrix(kinds, labels).T))
    # After the renaming, every clustering here puts each known group in the same component as soft EM does.
    np.testing.assert_array_equal(agreement["confusion"].values.argmax(axis=2),
                                  np.broadcast_to(agreement["confusion"].sel(labelling="EM").values.argmax(axis=1),
                                                  (4, 2)))
    # The one contradicted row: every clustering splits by the measurements, so ARI is that of one row moved.
    one_moved = adjusted_rand_score(kinds, np.asarray(x) > 3)
    np.testing.assert_allclose(agreement["ari"].values, one_moved, rtol=1e-12)

    page = (out / "index.html").read_text(encoding="utf-8")
    section = page[page.index("The clusters against the known groups"):]
    section = section[:section.index("<h3", 10) if "<h3" in section[10:] else len(section)]
    assert "adjusted Rand index against the known groups" in section
    for readable in ("soft EM (most likely component)", "hard EM", "k-means",
                     "posterior (most likely component, relabelled)", "known group (kind)", "component 0"):
        assert readable in section, readable
    assert section.count("<td>high</td>") == 4 and section.count("<td>low</td>") == 4  # four confusion tables
    assert f"<td>{fmt(one_moved, 3)}</td>" in section


def test_the_example_spec_for_a_csv_of_ones_own_loads_as_is():
    from emvsbayes.pipeline import check_against_data, load_data
    from emvsbayes.spec import load_spec

    spec = load_spec(ROOT / "models" / "my_data.toml")
    data = load_data(spec)
    check_against_data(spec, data)
    assert data.columns == ("length", "width")  # label, truth and the dropped text column are not fitted
    assert sorted(set(data.truth)) == ["alpha", "beta", "gamma"] and len(data.labels) == 60
    assert spec["em"]["init"] == "k-means++" and spec["em"]["bootstrap"] == 200
