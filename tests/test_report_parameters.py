"""The report reads its parameter list from results.nc (issue 17): a parameter the report's code never
names, declared by the family, reaches the comparison table with its EM, Wald, bootstrap and posterior
columns, and a K x K parameter shows all K x K entries, each named by both of its labels.

Before the declaration, the report kept its own tuple of names, and both parameters below vanished from
every table."""

import json

import numpy as np
import xarray as xr
from test_report import synthetic_tree

from emvsbayes.report.params import parameter_names, parameter_rows, varying_names
from emvsbayes.report.render import render_report
from emvsbayes.results import build_tree, declare_parameters, read_results, write_results

K = 2
DECLARED = {
    "w": (("component",), ("component",)),
    "mu": (("component",), ("component",)),
    "sigma": (("component",), ("component",)),
    "rate": (("component",), ("component",)),
    "P": (("component", "component_to"), ("component", "component_to")),
}
RATE = np.array([1.5, 4.0])
P = np.array([[0.9, 0.1], [0.3, 0.7]])


def _with_new_parameters(tmp_path) -> xr.DataTree:
    """The 1-D synthetic run with ``rate`` and a transition matrix ``P`` added to every parameter group,
    declared as a family would and read back from the file."""
    tree = synthetic_tree(features=("x",), k=K, chains=2, draws=100)
    groups = {name: tree[name].to_dataset() for name in tree.children}
    rng = np.random.default_rng(5)
    new = {"rate": (("component",), RATE), "P": (("component", "component_to"), P)}
    for name, (dims, value) in new.items():
        groups["em"][name] = (dims, value)
        groups["posterior"][name] = (("chain", "draw", *dims), value + 0.01 * rng.standard_normal((2, 100, *value.shape)))
        groups["posterior_relabelled"][name] = groups["posterior"][name]
        groups["em_bootstrap"][name] = (("replicate", *dims), value + 0.01 * rng.standard_normal((50, *value.shape)))
        groups["em_information"][f"se_{name}"] = (dims, np.full(value.shape, 0.05))
        groups["em_information"][f"wald_lower_{name}"] = (dims, value - 0.1)
        groups["em_information"][f"wald_upper_{name}"] = (dims, value + 0.1)
    groups["data"].attrs["component_labels"] = json.dumps(["A", "B"])
    root = {key: value for key, value in tree.attrs.items()}
    root.update(declare_parameters(groups, DECLARED, "toy"))
    path = tmp_path / "results.nc"
    write_results(build_tree(groups, root), path)
    return read_results(path)


def test_a_declared_parameter_and_a_matrix_reach_the_parameter_table(tmp_path):
    tree = _with_new_parameters(tmp_path)
    assert parameter_names(tree) == ["w", "mu", "sigma", "rate", "P"]
    rows = {row.label: row for row in parameter_rows(tree)}
    assert [label for label in rows if label.startswith(("rate", "P"))] == [
        "rate[A]", "rate[B]", "P[A, A]", "P[A, B]", "P[B, A]", "P[B, B]"]
    for (i, j), value in np.ndenumerate(P):
        row = rows[f"P[{'AB'[i]}, {'AB'[j]}]"]
        assert row.em == value
        assert row.wald == (value - 0.1, value + 0.1)
        # posterior noise 0.01 over 200 draws: the mean is within 0.01 of the value many times over
        assert abs(row.post_mean - value) < 0.01
        assert row.bootstrap[0] < value < row.bootstrap[1]
    assert rows["rate[B]"].em == RATE[1]
    assert varying_names(tree["posterior"].to_dataset()) == ["w", "mu", "sigma", "rate", "P"]

    html = render_report(tree)
    for label in ("rate[A]", "P[A, B]", "P[B, A]"):
        assert label in html, label


def test_a_results_file_without_the_declaration_reads_as_before():
    tree = synthetic_tree(features=("length", "width"), k=K, chains=2, draws=50)
    assert "parameters" not in tree.attrs
    assert parameter_names(tree) == ["w", "mu", "cov"]
    assert varying_names(tree["posterior"].to_dataset()) == ["w", "mu", "cov"]


def test_a_family_without_theta_or_mu_renders_its_restarts(tmp_path):
    """The restarts table showed ``theta`` or else ``mu`` and failed (KeyError) on any other family."""
    tree = synthetic_tree(features=("x",), k=K, chains=2, draws=50)
    groups = {}
    for name in tree.children:
        ds = tree[name].to_dataset()
        groups[name] = ds.rename({v: str(v).replace("mu", "lam") for v in ds.data_vars if "mu" in str(v)})
    assert "lam" in groups["em_restarts"] and "mu" not in groups["em_restarts"]
    declared = {"w": DECLARED["w"], "lam": DECLARED["mu"], "sigma": DECLARED["sigma"]}
    root = {**tree.attrs, **declare_parameters(groups, declared, "toy")}
    path = tmp_path / "results.nc"
    write_results(build_tree(groups, root), path)
    html = render_report(read_results(path))
    assert "<th>lam</th>" in html
    assert "lam[0]" in html
