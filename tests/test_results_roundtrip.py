"""Every result group survives the trip through results.nc unchanged (values, dims, coords)."""

import numpy as np
import pytest
import xarray as xr

from emvsbayes.pipeline import child_seeds, load_data
from emvsbayes.results import build_tree, read_results, write_results
from emvsbayes.spec import validate

QUICK_BAYES = {"chains": 2, "draws": 100, "tune": 100}


def _roundtrip(spec, tmp_path):
    from emvsbayes import runner
    from emvsbayes.family import get_family

    groups = runner.run(get_family(spec["model"]["family"]), spec, load_data(spec), child_seeds(3), {}, None)
    path = tmp_path / "results.nc"
    write_results(build_tree(groups, {"title": "t", "spec": spec}), path)
    tree = read_results(path)
    for name, ds in groups.items():
        assert name in tree.children, name
        back = tree[name].to_dataset()
        for var in ds.data_vars:
            original = ds[var]
            if original.dtype == object:
                continue  # sampler messages are stored as text
            np.testing.assert_array_equal(back[var].values, original.values, err_msg=f"{name}/{var}")
            assert back[var].dims == original.dims, f"{name}/{var}"
        for coord in ds.coords:
            np.testing.assert_array_equal(back[coord].values, ds[coord].values, err_msg=f"{name}:{coord}")
    return groups


def test_coin_groups_roundtrip(tmp_path):
    spec = validate({"data": {"dataset": "coins_do_batzoglou"}, "model": {"family": "coins"},
                     "em": {"kinds": ["soft", "hard"], "init": [[0.6, 0.5], [0.3, 0.9]], "bootstrap": 8},
                     "bayes": QUICK_BAYES, "model_choice": {"components": [1, 2], "bayes": False}})
    groups = _roundtrip(spec, tmp_path)
    for name in ("em", "em_trace", "em_hard", "em_restarts", "em_optima", "em_information", "em_bootstrap", "exact",
                 "posterior", "posterior_relabelled", "label_switching", "membership_agreement", "model_choice"):
        assert name in groups, name


def test_gaussian_groups_roundtrip(tmp_path):
    spec = validate({"data": {"dataset": "galaxies"}, "model": {"family": "gaussian", "components": 2},
                     "em": {"kinds": ["soft", "hard"], "init": "k-means++", "n_init": 3, "bootstrap": 8},
                     "bayes": QUICK_BAYES, "model_choice": {"components": [1, 2], "bayes": False}})
    groups = _roundtrip(spec, tmp_path)
    for name in ("em", "em_restarts", "kmeans", "em_information", "em_bootstrap", "posterior", "log_likelihood",
                 "posterior_relabelled", "label_switching", "membership_agreement", "model_choice"):
        assert name in groups, name


def test_a_run_reads_its_results_file_once(tmp_path, monkeypatch):
    # write_results reads the file back to checksum it; that reading is what the run keeps (its outcome's
    # tree, the page's source), so the file is opened once, not a second time by read_results (issue 21
    # item 2: ~0.7 s of a warm lecture run).
    from emvsbayes import results
    from emvsbayes.pipeline import run_spec

    spec = validate({"data": {"dataset": "coins_lecture"}, "model": {"family": "coins"}, "em": {"bootstrap": 4},
                     "bayes": QUICK_BAYES, "model_choice": {"components": [1, 2], "bayes": False}})
    opened = []
    real_open = xr.open_datatree
    monkeypatch.setattr(xr, "open_datatree", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    outcome = run_spec(spec, tmp_path / "out", seed=5, report=False)
    assert len(opened) == 1, opened
    monkeypatch.setattr(xr, "open_datatree", real_open)
    again = results.read_results(tmp_path / "out" / "results.nc")
    assert outcome.tree.attrs == again.attrs and results.arrays_checksum(outcome.tree) == again.attrs["checksum"]
    for node in again.subtree:
        assert node.to_dataset(inherit=False).identical(outcome.tree[node.path].to_dataset(inherit=False)), node.path
