"""The xarray edge: EM records and PyMC draws become the groups of one ``results.nc``.

Everything numerical upstream works on numpy arrays and frozen records; this module is where names
and dimensions are attached (``component`` everywhere, the same variable names in ``em``,
``em_bootstrap`` and ``posterior``), and where the file is written (atomically) and read back.
The report reads only this file. Group names follow ``shared/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from emvsbayes import lazy_imports
from emvsbayes.em import EMFit, EMRestarts
from emvsbayes.errors import UserError

lazy_imports.install()  # before xarray builds a variable: no Dask, and no JAX through ArviZ (see there)

#: Written into the root attributes; readers refuse files of another major format.
RESULTS_FORMAT = "emvsbayes-results"
RESULTS_VERSION = 1

VariablesOf = Callable[[object], Mapping[str, np.ndarray]]


def dataset_from_variables(
    variables: Mapping[str, np.ndarray], dims: Mapping[str, tuple[str, ...]], coords=None, *, lead=()
) -> xr.Dataset:
    """A Dataset whose variable ``name`` has dimensions ``lead + dims[name]``."""
    data_vars = {name: ((*lead, *dims[name]), np.asarray(value)) for name, value in variables.items()}
    ds = xr.Dataset(data_vars)
    if coords:
        ds = ds.assign_coords({k: v for k, v in coords.items() if k in ds.dims})
    return ds


def em_estimate(fit: EMFit, variables_of: VariablesOf, dims, coords, *, kind: str = "soft") -> xr.Dataset:
    """The EM answer: parameters, objective, iterations, convergence."""
    ds = dataset_from_variables(variables_of(fit.params), dims, coords)
    ds["loglik"] = fit.loglik
    ds.attrs.update(n_iter=fit.n_iter, converged=int(fit.converged), kind=kind)
    return ds


def em_trace(
    fit: EMFit, variables_of: VariablesOf, dims, coords, *, stats_of: Callable | None = None, stats_dims=None
) -> xr.Dataset:
    """The parameters (and, where kept, the statistics) of every iteration, along ``iteration``."""
    rows = fit.trace
    stacked = {
        name: np.stack([np.asarray(variables_of(row.params)[name]) for row in rows])
        for name in variables_of(rows[0].params)
    }
    ds = dataset_from_variables(stacked, dims, coords, lead=("iteration",))
    ds["loglik"] = ("iteration", fit.loglik_path)
    if stats_of is not None and all(row.stats is not None for row in rows):
        stat_arrays = [stats_of(row.stats) for row in rows]
        for name in stat_arrays[0]:
            ds[name] = (("iteration", *stats_dims[name]), np.stack([s[name] for s in stat_arrays]))
    ds = ds.assign_coords(iteration=np.arange(len(rows)))
    ds.attrs.update(n_iter=fit.n_iter, converged=int(fit.converged))
    return ds


def em_restarts(restarts: EMRestarts, variables_of: VariablesOf, dims, coords) -> xr.Dataset:
    """Every restart's final parameters, objective, iterations and convergence, along ``restart``."""
    fits = restarts.fits
    stacked = {
        name: np.stack([np.asarray(variables_of(fit.params)[name]) for fit in fits])
        for name in variables_of(fits[0].params)
    }
    ds = dataset_from_variables(stacked, dims, coords, lead=("restart",))
    ds["loglik"] = ("restart", np.array([fit.loglik for fit in fits]))
    ds["n_iter"] = ("restart", np.array([fit.n_iter for fit in fits]))
    ds["converged"] = ("restart", np.array([fit.converged for fit in fits], dtype=np.int8))
    ds["init_loglik"] = ("restart", np.array([fit.trace[0].loglik for fit in fits]))
    ds = ds.assign_coords(restart=np.arange(len(fits)))
    ds.attrs["best_restart"] = restarts.best_index
    return ds


def _netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    """netCDF cannot hold Python objects (nutpie's divergence messages): store them as strings."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.dtype == object:
            out[name] = var.astype(str)
    for key, value in list(out.attrs.items()):
        if key == "sample_dims":
            # ArviZ reads this list; netCDF stores a list of strings as an array attribute.
            out.attrs[key] = [str(v) for v in value]
        elif isinstance(value, (dict, list, tuple)) or value is None or isinstance(value, bool):
            out.attrs[key] = json.dumps(value, default=str)
    return out


def build_tree(groups: Mapping[str, xr.Dataset], attrs: Mapping[str, object]) -> xr.DataTree:
    """One DataTree from named groups; root attributes carry run metadata (JSON for nested values)."""
    tree = xr.DataTree.from_dict({f"/{name}": _netcdf_safe(ds) for name, ds in groups.items()})
    tree.attrs.update(
        {k: (json.dumps(v, default=str) if isinstance(v, (dict, list, tuple, bool)) or v is None else v)
         for k, v in attrs.items()}
    )
    tree.attrs["format"] = RESULTS_FORMAT
    tree.attrs["format_version"] = RESULTS_VERSION
    return tree


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and rename it into place.

    A crash or interrupt at any point leaves either the old complete file or the new complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the mode an ordinary new file would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_results(tree: xr.DataTree, path: str | Path) -> None:
    atomic_write(Path(path), lambda tmp: tree.to_netcdf(tmp, engine="h5netcdf"))


def read_results(path: str | Path) -> xr.DataTree:
    """Open a results file written by emvsbayes, loaded into memory; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such results file; run 'emvsbayes run SPEC' first, which writes results.nc")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as tree:
            tree = tree.load()
    except Exception as error:  # h5py raises several unrelated types for a file that is not HDF5
        raise UserError(f"{path}: not a readable results file ({type(error).__name__}); give a results.nc written by emvsbayes") from None
    if tree.attrs.get("format") != RESULTS_FORMAT:
        raise UserError(f"{path}: not an emvsbayes results file; give a results.nc written by 'emvsbayes run'")
    version = int(tree.attrs.get("format_version", -1))
    if version != RESULTS_VERSION:
        raise UserError(
            f"{path}: results format version {version}, this emvsbayes reads version {RESULTS_VERSION}; "
            "rerun the spec with this version"
        )
    return tree


def root_json(tree: xr.DataTree, key: str, default=None):
    """A root attribute stored as JSON, decoded."""
    value = tree.attrs.get(key)
    if value is None:
        return default
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return value
