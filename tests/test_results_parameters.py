"""The family's parameter declaration written into results.nc (issue 17): every parameter variable of every
group carries ``label_dims``, the root carries ``parameters`` (report order) and ``family``, and they
survive the trip through the file."""

import json
from typing import NamedTuple

import numpy as np
import xarray as xr

from emvsbayes.coins.model import PARAMETERS as COIN_PARAMETERS
from emvsbayes.gaussian.model import parameter_dims, parameters
from emvsbayes.results import build_tree, declare_parameters, label_dims_of, read_results, write_results

K = 2
#: a family with a transition matrix and a parameter without label dims, beside a mixture's
DECLARED = {
    "theta": (("component",), ("component",)),
    "P": (("component", "component_to"), ("component", "component_to")),
    "nu": ((), ()),
}


def _groups():
    rng = np.random.default_rng(0)
    return {
        "data": xr.Dataset({"heads": ("set", [1, 2, 3]), "tosses": ("set", [5, 5, 5])}),
        "em": xr.Dataset({"loglik": -3.0, "P": (("component", "component_to"), np.eye(K)), "theta": ("component", [0.2, 0.7]),
                          "nu": 1.5, "resp": (("set", "component"), np.full((3, K), 0.5))},
                         coords={"component": ["A", "B"], "unused": ("other", [1, 2, 3])}),
        "em_trace": xr.Dataset({"theta": (("iteration", "component"), rng.random((4, K)))}),
        "em_information": xr.Dataset({"se_theta": ("component", [0.1, 0.1]),
                                      "wald_lower_P": (("component", "component_to"), np.zeros((K, K)))}),
        "exact": xr.Dataset({"theta_mean": ("component", [0.2, 0.7]), "theta_sorted_mean": ("rank", [0.2, 0.7]),
                             "theta_density": (("component", "grid"), rng.random((K, 5)))}),
        "posterior": xr.Dataset({"theta": (("chain", "draw", "component"), rng.random((2, 3, K))),
                                 "P": (("chain", "draw", "component", "component_to"), rng.random((2, 3, K, K)))}),
    }


def test_declare_parameters_marks_every_parameter_variable_and_orders_them(tmp_path):
    groups = _groups()
    root = declare_parameters(groups, DECLARED, "toy")
    assert root == {"family": "toy", "parameters": ["theta", "P", "nu"]}
    em = groups["em"]
    assert list(em.data_vars) == ["theta", "P", "nu", "loglik", "resp"]
    assert em["P"].attrs["label_dims"] == "component component_to"
    assert em["theta"].attrs["label_dims"] == "component"
    assert em["nu"].attrs["label_dims"] == ""
    assert "label_dims" not in em["resp"].attrs and "label_dims" not in em["loglik"].attrs
    assert "unused" in em.coords  # reordering keeps a coordinate no variable uses
    assert groups["em_trace"]["theta"].attrs["label_dims"] == "component"
    assert groups["em_information"]["se_theta"].attrs["label_dims"] == "component"
    assert groups["em_information"]["wald_lower_P"].attrs["label_dims"] == "component component_to"
    assert groups["exact"]["theta_mean"].attrs["label_dims"] == "component"
    # a summary whose dims are not the parameter's (sorted, or along a grid) is not declared
    assert "label_dims" not in groups["exact"]["theta_sorted_mean"].attrs
    assert "label_dims" not in groups["exact"]["theta_density"].attrs
    assert list(groups["posterior"].data_vars) == ["theta", "P"]

    path = tmp_path / "results.nc"
    write_results(build_tree(groups, root), path)
    tree = read_results(path)
    assert json.loads(tree.attrs["parameters"]) == ["theta", "P", "nu"]
    assert tree.attrs["family"] == "toy"
    assert label_dims_of(tree["posterior"]["P"]) == ("component", "component_to")
    assert label_dims_of(tree["em"]["nu"]) == ()
    assert list(tree["em"].data_vars)[:3] == ["theta", "P", "nu"]


def test_label_dims_of_falls_back_to_the_component_dim():
    da = xr.DataArray(np.zeros((2, K)), dims=("draw", "component"), name="mu")
    assert label_dims_of(da) == ("component",)
    assert label_dims_of(da.rename(component="state")) == ()
    assert label_dims_of(da, {"mu": ("component",)}) == ("component",)

    class ParameterInfo(NamedTuple):  # the family protocol's record: its label_dims is read, not its dims
        dims: tuple
        label_dims: tuple
        scale: str

    matrix = xr.DataArray(np.zeros((2, K, K)), dims=("draw", "component", "component_to"), name="P")
    info = ParameterInfo(("component", "component_to"), ("component", "component_to"), "simplex")
    assert label_dims_of(matrix, {"P": info}) == ("component", "component_to")
    groups = {"em": xr.Dataset({"P": (("component", "component_to"), np.eye(K))})}
    assert declare_parameters(groups, {"P": info}, "toy")["parameters"] == ["P"]
    assert groups["em"]["P"].attrs["label_dims"] == "component component_to"


def test_the_families_declare_what_their_results_hold():
    assert list(COIN_PARAMETERS) == ["theta", "w"]
    for dim in (1, 3):
        declared = parameters(dim)
        assert {name: dims for name, (dims, _) in declared.items()} == parameter_dims(dim)
        for dims, label_dims in declared.values():
            assert label_dims == ("component",) and set(label_dims) <= set(dims)
    assert list(parameters(1)) == ["w", "mu", "sigma"]
    assert list(parameters(2)) == ["w", "mu", "cov"]
