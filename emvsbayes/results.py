"""The xarray edge: EM records and PyMC draws become the groups of one ``results.nc``.

Everything numerical upstream works on numpy arrays and frozen records; this module is where names
and dimensions are attached (``component`` everywhere, the same variable names in ``em``,
``em_bootstrap`` and ``posterior``), and where the file is written (atomically) and read back.
The report reads only this file. Group names follow ``shared/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from emvsbayes import lazy_imports
from emvsbayes.em import EMFit, EMRestarts
from emvsbayes.errors import UserError, quote
from emvsbayes.paths import HDF5_SIGNATURE, input_kind, packed_format

lazy_imports.install()  # before xarray builds a variable: no Dask, and no JAX through ArviZ (see there)


# -- h5netcdf's object lookups -------------------------------------------------------------------------
# h5netcdf keeps no h5py objects: every use of a variable's or dimension's dataset (its shape, its
# attributes, "is this dimension unlimited?", attaching dimension scales) looks it up again by path in
# the h5py file, and an h5py lookup opens the object and builds a Python wrapper (~60 us). Writing and
# reading back a lecture run's results (21 groups, 173 variables) made 13,735 such lookups: about half
# of the 1.4 s the file took. Here the lookups of one open file are remembered, per file. The one place
# h5netcdf replaces an object at a path it has looked up (a coordinate variable created in place of
# the dimension scale it had made for that dimension: ``Group._create_child_variable`` deletes the
# scale and creates the variable) runs with the memory switched off and emptied after it.

_H5_OBJECTS = "_emvsbayes_h5_objects"


def _h5_object(root, path: str):
    """``root._h5file[path]``, remembered for the open file ``root`` (an h5netcdf File)."""
    objects = root.__dict__.get(_H5_OBJECTS)
    if objects is None:
        if getattr(root, "_backend", None) != "h5py":  # h5pyd, pyfive: as h5netcdf does it
            return root._h5file[path]
        objects = root.__dict__[_H5_OBJECTS] = {}
    elif objects is False:  # an object may be replaced just now
        return root._h5file[path]
    found = objects.get(path)
    if found is None:
        found = objects[path] = root._h5file[path]
    return found


def _remember_h5netcdf_lookups(h5netcdf) -> None:
    """Applied right after h5netcdf is imported (see :func:`_h5_object`); a no-op for an h5netcdf of
    another layout, which then looks its objects up as it always did."""
    from h5netcdf import core, dimensions

    originals = (core.BaseObject.__dict__.get("_h5ds"), core.Group.__dict__.get("_h5group"),
                 dimensions.Dimension.__dict__.get("_h5ds"), core.Group.__dict__.get("_create_child_variable"))
    if (not str(getattr(h5netcdf, "__version__", "")).startswith("1.")
            or not all(isinstance(p, property) for p in originals[:3]) or not callable(originals[3])
            or getattr(originals[3], "_emvsbayes", False)):
        return
    create_child_variable = originals[3]

    def h5ds(self):
        return _h5_object(self._root, self._h5path)

    def dimension_h5ds(self):
        return None if self._phony else _h5_object(self._root, self._h5path)

    def create_child_variable_then_forget(self, name, *args, **kwargs):
        if name not in self._dimensions:  # h5netcdf deletes and recreates only a dimension's own scale
            return create_child_variable(self, name, *args, **kwargs)
        root = self._root
        remembered = root.__dict__.get(_H5_OBJECTS)
        root.__dict__[_H5_OBJECTS] = False
        try:
            return create_child_variable(self, name, *args, **kwargs)
        finally:
            root.__dict__[_H5_OBJECTS] = None if remembered is None else {}

    create_child_variable_then_forget._emvsbayes = True
    core.BaseObject._h5ds = property(h5ds, doc=originals[0].__doc__)
    core.Group._h5group = property(h5ds, doc=originals[1].__doc__)
    dimensions.Dimension._h5ds = property(dimension_h5ds, doc=originals[2].__doc__)
    core.Group._create_child_variable = create_child_variable_then_forget


lazy_imports.run_after_import("h5netcdf", _remember_h5netcdf_lookups)

#: Written into the root attributes; readers refuse files of another major format.
RESULTS_FORMAT = "emvsbayes-results"
#: The format tag of a study file (``study.nc``, written by :mod:`emvsbayes.study.run`).
STUDY_FORMAT = "emvsbayes-study"
RESULTS_VERSION = 1
#: root attribute holding :func:`arrays_checksum` of the file (files written before it existed have none)
CHECKSUM_ATTR = "checksum"

#: Groups every run writes; a file without them is no run's results.
REQUIRED_GROUPS = ("data", "em")

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


#: variable attribute naming the label dims of a parameter (space-separated; "" for none)
LABEL_DIMS_ATTR = "label_dims"
#: variable attribute: the family's template naming one element of a parameter (ParameterInfo.label), when it
#: gave one; written on the parameter itself only, not on its summaries (``se_transition`` is not a transition)
ELEMENT_LABEL_ATTR = "element_label"
#: prefixes and suffixes that make a parameter-shaped summary of parameter ``name`` (``se_mu``,
#: ``wald_lower_mu`` in ``em_information``, ``theta_mean`` in ``exact``); it is declared like ``name``
#: when its dims end with ``name``'s.
SUMMARY_PREFIXES = ("se_", "wald_lower_", "wald_upper_")
SUMMARY_SUFFIXES = ("_mean", "_sd")

ParameterDeclaration = Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]


def _declared_as(name: str, parameters: ParameterDeclaration) -> str | None:
    if name in parameters:
        return name
    for prefix in SUMMARY_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in parameters:
            return name[len(prefix):]
    for suffix in SUMMARY_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in parameters:
            return name[: -len(suffix)]
    return None


def declare_parameters(groups: dict[str, xr.Dataset], parameters: ParameterDeclaration, family: str) -> dict[str, object]:
    """Write the family's parameter declaration into the result groups; returns the root attributes.

    ``parameters`` is name -> (dims, label dims) in report order, as the family declares it. Every
    variable of every group that is one of them (or a summary of one, see :data:`SUMMARY_PREFIXES`) and
    whose dims end with the declared dims (after leading draw, replicate, iteration or restart dims)
    gets the attribute ``label_dims``: the dims relabelling permutes, space-separated ("" for none).
    In such a group the parameters come first, in report order, so a reader of one group shows them in
    the order of the tables. The returned root attributes are ``parameters`` (the names present in the
    results, report order) and ``family``: the report and relabelling read these, never a list of names
    of their own, so a parameter a new family declares reaches every table.
    """
    present = []
    for key, ds in list(groups.items()):
        declared = []
        for name in ds.data_vars:
            parameter = _declared_as(str(name), parameters)
            if parameter is None:
                continue
            # (dims, label dims) tuples, or the family protocol's ParameterInfo, whose first two fields they are
            dims, label_dims = parameters[parameter][0], parameters[parameter][1]
            var = ds.variables[name]
            if tuple(var.dims[len(var.dims) - len(dims):]) != tuple(dims) or len(var.dims) < len(dims):
                continue
            var.attrs[LABEL_DIMS_ATTR] = " ".join(label_dims)
            template = getattr(parameters[parameter], "label", "")
            if template and name == parameter:
                var.attrs[ELEMENT_LABEL_ATTR] = template
            declared.append(name)
            if parameter not in present:
                present.append(parameter)
        ordered = [name for name in parameters if name in declared]
        rest = [name for name in ds.data_vars if name not in ordered]
        if ordered and ordered + rest != list(ds.data_vars):
            # Selecting variables drops coordinates no kept variable uses: they are put back.
            reordered = ds[ordered + rest]
            groups[key] = reordered.assign_coords({k: v for k, v in ds.coords.items() if k not in reordered.coords})
    return {"family": family, "parameters": [name for name in parameters if name in present]}


def label_dims_of(da: xr.DataArray, declared: Mapping[str, object] | None = None,
                  component_dim: str = "component") -> tuple[str, ...]:
    """The label dims of a variable: the caller's declaration (name -> label dims, or name -> the family
    protocol's ParameterInfo, whose ``label_dims`` is read), else its ``label_dims`` attribute, else
    ``component_dim`` when the variable has it (results written before the attribute existed, and
    draws not yet declared, as in a mixture every component-indexed quantity is labelled by it)."""
    if declared is not None and da.name in declared:
        entry = declared[da.name]
        return tuple(getattr(entry, "label_dims", entry))
    attr = da.attrs.get(LABEL_DIMS_ATTR)
    if isinstance(attr, str):
        return tuple(attr.split())
    return (component_dim,) if component_dim in da.dims else ()


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
    # The writer's pid is in the name, so that a stale temporary is told from one being written.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the mode an ordinary new file would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        from emvsbayes.limits import disk_full, is_disk_full

        if isinstance(error, OSError) and is_disk_full(error):
            raise disk_full(path.parent, None, path.name) from None
        raise


def arrays_checksum(tree: xr.DataTree | xr.Dataset) -> str:
    """SHA-256 of every group's variables (name, dims, dtype, values) and attributes, as a reader decodes them.

    Computed on the file as read back, so writing and reading hash the same decoded arrays; the root's
    own ``checksum`` attribute is left out. A Dataset (``study.nc``) counts as a tree of one group.
    """
    if isinstance(tree, xr.Dataset):
        tree = xr.DataTree(dataset=tree)
    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(part if isinstance(part, bytes) else str(part).encode("utf-8", errors="surrogatepass"))
            digest.update(b"\x00")

    def add_attrs(attrs) -> None:
        for key in sorted(attrs):
            if key != CHECKSUM_ATTR:
                add("attr", key, json.dumps(np.asarray(attrs[key]).tolist(), default=str))

    for node in sorted(tree.subtree, key=lambda n: n.path):
        add("group", node.path)
        add_attrs(node.attrs)
        ds = node.to_dataset(inherit=False)
        for name in sorted(ds.variables, key=str):
            var = ds.variables[name]
            values = np.asarray(var.values)
            add("var", name, ",".join(map(str, var.dims)), values.dtype.str, values.shape)
            add_attrs(var.attrs)
            if values.dtype.kind in "OUS":
                add("\x1f".join(map(str, values.ravel().tolist())))
            else:
                add(np.ascontiguousarray(values).tobytes())
    return f"sha256:{digest.hexdigest()}"


def write_checked(data: xr.DataTree | xr.Dataset, path: str | Path) -> xr.DataTree | xr.Dataset:
    """Write a tree or a Dataset atomically with :func:`arrays_checksum` of the file in its root attributes.

    Returns the file as written, read back into memory (with its checksum attribute): what a reader of
    the file gets, so a caller that goes on to use the file (the run renders its page from it) need not
    open and hash it a second time (about 0.7 s of a warm lecture run).
    """
    read_back = []

    def write(tmp: Path) -> None:
        data.to_netcdf(tmp, engine="h5netcdf")
        # The checksum is of the file as written, read back.
        opener = xr.open_datatree if isinstance(data, xr.DataTree) else xr.open_dataset
        with opener(tmp, engine="h5netcdf") as written:
            loaded = written.load()
            checksum = arrays_checksum(loaded)
        import h5py

        with h5py.File(tmp, "r+") as handle:
            handle.attrs[CHECKSUM_ATTR] = checksum
        loaded.attrs[CHECKSUM_ATTR] = checksum
        read_back.append(loaded)

    atomic_write(Path(path), write)
    return read_back[0]


def check_checksum(data: xr.DataTree | xr.Dataset, path: Path, fix: str) -> None:
    """Refuse a file whose arrays no longer match the checksum written with them."""
    stored = data.attrs.get(CHECKSUM_ATTR)
    if stored is not None and arrays_checksum(data) != stored:
        raise UserError(f"{path}: damaged or edited (its arrays or attributes do not match the checksum written with "
                        f"them, and emvsbayes reads results only as it wrote them); {fix}")


def tree_nbytes(tree: xr.DataTree) -> int:
    """The bytes of every array in ``tree`` (what the file will hold, before compression)."""
    return sum(int(var.nbytes) for node in tree.subtree for var in node.to_dataset().variables.values())


def write_results(tree: xr.DataTree, path: str | Path) -> xr.DataTree:
    """Write ``tree`` to ``path`` (atomically, with its checksum); returns the file as written, read back."""
    from emvsbayes.limits import check_disk, disk_full, is_disk_full

    path = Path(path)
    # Checked first: HDF5 on a full disk can crash the process, past any except clause.
    need = tree_nbytes(tree)
    check_disk(path.parent, need, path.name)
    try:
        return write_checked(tree, path)
    except (OSError, RuntimeError) as error:
        if is_disk_full(error):
            raise disk_full(path.parent, need, path.name) from None
        raise


def load_quietly(path: Path, opener) -> tuple[object, str | None]:
    """``opener(path)`` (``xr.open_datatree`` or ``xr.open_dataset``) loaded into memory, or ``(None, the
    error's type name)`` when the file is not one netCDF/HDF5 can read; h5py's noise about half-opened
    files is kept off the terminal."""
    with _quiet_half_opened():
        try:
            # phony_dims given: an HDF5 file from elsewhere (datasets without dimension names) would
            # otherwise warn about the default changing; such a file is then refused by the caller's checks.
            with opener(path, engine="h5netcdf", phony_dims="access") as data:
                return data.load(), None
        except Exception as error:  # h5py raises several unrelated types for a file that is not HDF5
            return None, type(error).__name__


#: What an HDF5 file that cannot be opened is: it begins as a netCDF-4 file does, so it was cut short or damaged.
CUT_SHORT = ("is an HDF5 file that cannot be read to its end (cut short or damaged, e.g. by an interrupted copy: copy "
             "it again, or run the spec again to write a new one)")


def _head(path: Path) -> bytes | None:
    try:
        with path.open("rb") as handle:
            return handle.read(4096)
    except OSError:
        return None


def _not_results(path: Path) -> str | None:
    """What a file that netCDF cannot open is: a spec or a page given to ``report``, or an HDF5 file cut short."""
    head = _head(path)
    if head is None:
        return None
    if not head:
        return "is empty, not a results file"
    if head.startswith(HDF5_SIGNATURE):
        return CUT_SHORT
    packed = packed_format(head)
    if packed is not None:
        # a gzip-compressed results file, a netCDF-3 file (emvsbayes writes netCDF-4), a workbook, ...
        if "compressed" in packed:
            return f"is {packed}: decompress it (emvsbayes reads results.nc as it wrote it)"
        return f"is {packed}, not an emvsbayes results file (netCDF-4)"
    try:
        text = head.decode("utf-8-sig").lstrip()
    except UnicodeDecodeError:
        return None
    if not text or "\x00" in text:
        return None
    if text[:15].lower().startswith(("<!doctype html", "<html")):
        return "is an HTML page, not a results file (a page is rewritten from the results.nc beside it)"
    return ("is a text file (a spec?), not a results file (a spec is run with 'emvsbayes run SPEC', which writes "
            "results.nc)")


def read_results(path: str | Path) -> xr.DataTree:
    """Open a results file written by emvsbayes, loaded into memory; one-line errors for anything else."""
    path = Path(path)
    kind = input_kind(path)
    if kind == "missing":
        raise UserError(f"{path}: no such results file; run 'emvsbayes run SPEC' first, which writes results.nc")
    if kind is not None:
        hint = ""
        if kind == "a folder":  # the file in it, when there is one (a study's folder holds study.nc)
            inside = next((path / name for name in ("results.nc", "study.nc") if (path / name).is_file()), None)
            hint = f": {inside}" if inside is not None else " (this folder holds none)"
        raise UserError(f"{path}: is {kind}, not a results file; give a results.nc written by 'emvsbayes run' or a "
                        f"study.nc written by 'emvsbayes study'{hint}")
    tree, failure = load_quietly(path, xr.open_datatree)
    if failure is not None:
        raise UserError(f"{path}: {_not_results(path) or f'not a readable results file ({failure})'}; give a results.nc "
                        "written by emvsbayes")
    if tree.attrs.get("format") != RESULTS_FORMAT:
        raise UserError(f"{path}: not an emvsbayes results file; give a results.nc written by 'emvsbayes run'")
    version = tree.attrs.get("format_version")
    if isinstance(version, np.ndarray) and version.shape == (1,):
        version = version[0]  # netCDF stores a scalar attribute as a one-element array
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        shown = quote(version.tolist() if hasattr(version, "tolist") else version)
        raise UserError(f"{path}: results format version {shown} is not a whole number, so the file was not "
                        f"written by emvsbayes (or was edited); rerun the spec with 'emvsbayes run'")
    version = int(version)
    if version != RESULTS_VERSION:
        raise UserError(
            f"{path}: results format version {version}, this emvsbayes reads version {RESULTS_VERSION}; "
            "rerun the spec with this version"
        )
    missing = [group for group in REQUIRED_GROUPS if group not in tree.children]
    if missing:
        raise UserError(f"{path}: the results lack the group {missing[0]!r} that every run writes (the file is "
                        "incomplete or was edited); rerun the spec with 'emvsbayes run'")
    check_checksum(tree, path, "rerun the spec to write it again")
    if CHECKSUM_ATTR not in tree.attrs:
        _check_without_checksum(tree, path)
    return tree


def is_checked(tree: xr.DataTree | xr.Dataset) -> bool:
    """Whether the file carries the checksum written with it (and so was read as emvsbayes wrote it)."""
    return CHECKSUM_ATTR in tree.attrs


def _check_without_checksum(tree: xr.DataTree, path: Path) -> None:
    """What the page reads first of a results file without a checksum (written before checksums existed, or
    with the attribute removed, so nothing says its contents are as emvsbayes wrote them): a known family,
    its declared parameters in the EM answer and the posterior, finite numbers there. Anything else such a
    file lacks is found while its page is drawn (:func:`emvsbayes.pipeline.rerender_report`)."""
    from emvsbayes.family import family_names

    why = "the file has no checksum, so it was edited or not written by this emvsbayes; rerun the spec with 'emvsbayes run'"
    family = tree.attrs.get("family")
    if not isinstance(family, str) or family not in family_names():
        named = "names no model family" if family is None else f"names no model family emvsbayes knows ({quote(family)})"
        raise UserError(f"{path}: {named}; {why}")
    parameters = root_json(tree, "parameters")
    if not (isinstance(parameters, list) and parameters and all(isinstance(name, str) for name in parameters)):
        raise UserError(f"{path}: its list of parameters is missing or not a list of names; {why}")
    for group in ("em", "posterior"):
        if group not in tree.children:
            continue
        ds = tree[group].to_dataset()
        for name in parameters:
            if name not in ds.data_vars:
                raise UserError(f"{path}: the group {group!r} lacks the parameter {name!r}; {why}")
        for name, var in ds.data_vars.items():
            if np.issubdtype(var.dtype, np.number) and not np.isfinite(var.values).all():
                raise UserError(f"{path}: {group}/{name} holds values that are not finite numbers (NaN or infinite); "
                                f"{why}")


@contextlib.contextmanager
def _quiet_half_opened():
    """Open a file inside this: an h5netcdf File that failed half-way through opening a damaged file is
    released (and collected) here, quietly.

    Its ``__del__`` calls ``close()``, which fails on the attributes it never set, and Python prints that
    as "Exception ignored ... Traceback" under the one-line error. The failure to open is reported
    already; only that close of a half-built h5netcdf object is silenced, any other goes to the usual hook.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        where = getattr(unraisable.object, "__module__", "") or ""
        if not (isinstance(unraisable.exc_value, AttributeError) and where.startswith("h5netcdf")):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
        gc.collect()
    finally:
        sys.unraisablehook = previous


def root_json(tree: xr.DataTree, key: str, default=None):
    """A root attribute stored as JSON, decoded."""
    value = tree.attrs.get(key)
    if value is None:
        return default
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return value


def read_study(path) -> xr.Dataset:
    """Open a ``study.nc`` into memory; one-line errors for anything else."""
    path = Path(path)
    kind = input_kind(path)
    if kind == "missing":
        raise UserError(f"{path}: no such study file; run 'emvsbayes study SPEC' first")
    if kind is not None:
        raise UserError(f"{path}: is {kind}, not a study file; give a study.nc written by 'emvsbayes study'")
    ds, failure = load_quietly(path, xr.open_dataset)
    if failure is not None:
        cut_short = (_head(path) or b"").startswith(HDF5_SIGNATURE)
        raise UserError(f"{path}: {CUT_SHORT if cut_short else f'not a readable study file ({failure})'}")
    if ds.attrs.get("format") != STUDY_FORMAT:
        raise UserError(f"{path}: not an emvsbayes study file; give a study.nc written by 'emvsbayes study'")
    check_checksum(ds, path, "run the study again to write it again")
    return ds
