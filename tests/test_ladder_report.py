"""The uncertainty_ladder group and its report section, from a synthetic results tree written to netCDF
and read back (the report reads only results files)."""

import re

import numpy as np
import pytest
import xarray as xr

from emvsbayes.ladder.results import GROUP, RungSummary, draws_summary, ladder_dataset
from emvsbayes.report.ladder import ladder_section


def test_draws_summary_is_the_mean_sd_and_equal_tailed_interval_without_failed_rows():
    draws = {"theta": np.column_stack([np.arange(101.0), np.arange(101.0) * 2])}
    draws["theta"] = np.vstack([draws["theta"], [np.nan, np.nan]])
    s = draws_summary(draws, 0.9)["theta"]
    np.testing.assert_allclose(s["estimate"], [50.0, 100.0])
    np.testing.assert_allclose(s["lower"], [5.0, 10.0])
    np.testing.assert_allclose(s["upper"], [95.0, 190.0])
    np.testing.assert_allclose(s["sd"], [np.arange(101.0).std(ddof=1), 2 * np.arange(101.0).std(ddof=1)])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    rungs = [
        RungSummary("mle_wald", "EM's maximum & a Wald interval <on the logit scale>",
                    {"theta": {"estimate": np.array([0.8, 0.3]), "lower": np.array([0.7, 0.2]),
                               "upper": np.array([0.9, 0.4])},
                     "w": {"estimate": np.array([0.5, 0.5])}}, seconds=0.01),
        RungSummary("advi_fullrank", "One Gaussian.", draws_summary(
            {"theta": np.tile([0.75, 0.35], (11, 1)) + np.linspace(-0.05, 0.05, 11)[:, None],
             "w": np.tile([0.6, 0.4], (11, 1))}, 0.9), seconds=2.0, pareto_k=0.91),
        RungSummary("nuts", "The full posterior.", {"theta": {"estimate": np.array([0.78, 0.32])}}, seconds=9.0),
    ]
    ds = ladder_dataset(rungs, {"theta": ("component",), "w": ("component",)},
                        {"theta": ("component",), "w": ("component",)}, {"component": np.array(["A", "B"])}, 0.9)
    path = tmp_path_factory.mktemp("ladder") / "results.nc"
    xr.DataTree.from_dict({"/": xr.Dataset(attrs={"family": "coins"}), GROUP: ds}).to_netcdf(path, engine="h5netcdf")
    return xr.open_datatree(path, engine="h5netcdf")


def test_layout_of_the_group(tree):
    ds = tree[GROUP].to_dataset()
    assert list(ds["rung"].values) == ["mle_wald", "advi_fullrank", "nuts"]
    assert ds["theta"].dims == ("rung", "component") and ds["theta"].attrs["label_dims"] == "component"
    assert np.isnan(ds["w_lower"].sel(rung="mle_wald")).all() and np.isnan(ds["pareto_k"].sel(rung="nuts"))
    assert ds.attrs["parameters"] == '["theta", "w"]'


def test_one_table_per_parameter_with_every_rung(tree):
    html = ladder_section(tree)
    assert html.count('<table class="ladder">') == 2
    theta_table = html[html.index("<h3>theta</h3>"):html.index("<h3>w</h3>")]
    rows = re.findall(r"<tr><td>(.*?)</td>", theta_table)
    # the page names rungs in words; the file keeps the identifiers
    assert rows == ["MLE + Wald", "ADVI, full-rank", "NUTS (posterior)"]
    assert "theta[A]" in theta_table and "theta[B]" in theta_table
    assert "<td>0.8 (0.7 – 0.9)</td>" in theta_table
    assert "<td>0.78</td>" in theta_table  # NUTS here gave a point only: no interval shown
    # The assumptions are in one table of their own, as text (escaped), not repeated per parameter.
    assumes_table = html[html.index('<table class="ladder-assumes">'):html.index("<h3>theta</h3>")]
    assert "&lt;on the logit scale&gt;" in assumes_table and "on the logit scale" not in theta_table
    w_table = html[html.index("<h3>w</h3>"):]
    assert "<td>–</td>" in w_table  # NUTS gave no w: a dash
    assert '<td><span class="bad">0.91</span></td>' in html  # the VI rung's Pareto k, marked: above 0.7


def test_no_group_no_section():
    assert ladder_section(xr.DataTree.from_dict({"/": xr.Dataset()})) == ""


def test_repeated_rung_names_are_refused():
    rung = RungSummary("nuts", "x", {"theta": {"estimate": np.array([0.5])}})
    with pytest.raises(ValueError, match="repeat"):
        ladder_dataset([rung, rung], {"theta": ("component",)}, {}, {}, 0.9)


def test_coclustering_group_and_section(tmp_path):
    from emvsbayes.ladder.partition import credible_ball, point_partition, similarity
    from emvsbayes.ladder.results import PARTITION_GROUP, coclustering_dataset
    from emvsbayes.report.ladder import partition_section

    labels = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [1, 1, 0, 0, 0]])
    points = {loss: point_partition(labels, loss=loss) for loss in ("binder", "vi")}
    balls = {loss: credible_ball(p.labels, labels, prob=0.9) for loss, p in points.items()}
    ds = coclustering_dataset({"posterior": similarity(labels), "bootstrap_bayesian": np.eye(5)},
                              np.array([0, 0, 1, 1, 1]), "set", np.arange(5), points, balls)
    assert ds["similarity"].dims == ("source", "set", "set_to")
    path = tmp_path / "results.nc"
    xr.DataTree.from_dict({"/": xr.Dataset(), PARTITION_GROUP: ds}).to_netcdf(path, engine="h5netcdf")
    html = partition_section(xr.open_datatree(path, engine="h5netcdf"))
    assert html.count("<svg") == 1 and 'data-fig="coclustering"' in html
    assert re.findall(r"<tr><td>(binder|vi)</td>", html) == ["binder", "vi"]
    assert partition_section(xr.DataTree.from_dict({"/": xr.Dataset()})) == ""
