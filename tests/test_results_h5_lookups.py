"""Writing and reading results.nc remembers h5netcdf's h5py object lookups (emvsbayes.results), and the file
is the same as h5netcdf writes it without that memory (issue 21, item 2: the lookups were half of the
1.4 s a lecture run spent writing and reading its results back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import xarray as xr

from conftest import ROOT

# (emvsbayes.results is imported inside the tests: this module's helpers also run in an interpreter without it)


def _groups() -> dict[str, xr.Dataset]:
    # Data variables on a dimension before its coordinate (h5netcdf first makes a bare dimension scale,
    # then replaces it by the coordinate variable: the one object it deletes), nested groups sharing
    # dimension names, strings, a NaN, integers, a scalar and attributes.
    rng = np.random.default_rng(4)
    posterior = xr.Dataset({"theta": (("chain", "draw", "component"), rng.random((2, 5, 3))),
                            "w": (("chain", "draw", "component"), rng.dirichlet(np.ones(3), (2, 5)))})
    posterior = posterior.assign_coords(chain=[0, 1], draw=np.arange(5), component=[0, 1, 2])
    em = xr.Dataset({"theta": ("component", [0.2, np.nan, 0.9]), "loglik": -3.5})
    em = em.assign_coords(component=[0, 1, 2])
    em.attrs.update(n_iter=7, kind="soft")
    data = xr.Dataset({"heads": ("set", np.array([5, 9, 8])), "label": ("set", np.array(["a", "b ü", "c"]))})
    data = data.assign_coords(set=["first", "second", "third"])
    return {"data": data, "em": em, "posterior": posterior, "em_trace": em.expand_dims(iteration=4).copy()}


def _structure(path) -> dict:
    """Every HDF5 object's kind, shape, dtype and attributes (dimension lists as the names they point at)."""
    out = {}
    with h5py.File(path, "r") as handle:
        def visit(name, obj):
            attrs = {}
            for key, value in obj.attrs.items():
                if key == "DIMENSION_LIST":
                    value = [[handle[ref].name for ref in refs] for refs in value]
                elif key == "REFERENCE_LIST":
                    value = sorted((handle[ref].name, int(axis)) for ref, axis in value)
                attrs[key] = repr(value)
            out[name] = [type(obj).__name__, repr(getattr(obj, "shape", None)), str(getattr(obj, "dtype", "")), attrs]
        handle.visititems(visit)
    return out


def test_results_written_with_remembered_lookups_equal_h5netcdf_own(tmp_path):
    from emvsbayes.results import build_tree

    ours = tmp_path / "ours.nc"
    build_tree(_groups(), {"title": "t"}).to_netcdf(ours, engine="h5netcdf")
    # the same tree written in a fresh interpreter that never imports emvsbayes.results: h5netcdf as released
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_results_h5_lookups import _groups, _structure
import xarray as xr
tree = xr.DataTree.from_dict({{f"/{{k}}": v for k, v in _groups().items()}})
tree.attrs.update(title="t", format="emvsbayes-results", format_version=1)
tree.to_netcdf({str(tmp_path / 'plain.nc')!r}, engine="h5netcdf")
print(json.dumps([sorted(k for k in sys.modules if k.startswith("emvsbayes")), _structure({str(tmp_path / 'plain.nc')!r})]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    imported, plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "emvsbayes.results" not in imported
    assert json.loads(json.dumps(_structure(ours))) == plain
    back = xr.open_datatree(ours, engine="h5netcdf").load()
    for name, ds in _groups().items():
        xr.testing.assert_identical(back[name].to_dataset(inherit=False), ds)


def test_writing_and_reading_results_looks_each_object_up_a_few_times(tmp_path, monkeypatch):
    # h5netcdf looked every dataset up again at each use: 1,717 h5py lookups to write and read back these 14
    # variables (13,735 for a lecture run's 173); remembered, 334 (2,867). A count, not a time: it does not
    # depend on the machine's load.
    from emvsbayes.results import build_tree, read_results, write_results

    lookups = []
    original = h5py.Group.__getitem__

    def counted(self, name):
        lookups.append(name)
        return original(self, name)

    monkeypatch.setattr(h5py.Group, "__getitem__", counted)
    groups = _groups()
    write_results(build_tree(groups, {"title": "t"}), tmp_path / "results.nc")
    tree = read_results(tmp_path / "results.nc")
    n_variables = sum(len(ds.variables) for ds in groups.values())
    assert float(tree["posterior"]["theta"].sum()) == float(groups["posterior"]["theta"].sum())
    assert len(lookups) < 40 * n_variables, (len(lookups), n_variables)
