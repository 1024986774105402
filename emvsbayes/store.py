"""``emvsbayes run`` on data larger than memory: ``[data] store = "x.zarr"``, fitted by chunked EM on Dask.

A Zarr store (an array, or a group with ``[data] store_array`` naming the array) of N rows by D float
columns is read chunk by chunk, by its own row chunks, on the Dask cluster the studies use (a
``LocalCluster`` of this machine, or ``emvsbayes run --scheduler ADDRESS``), and fitted by
the family's ``fit_chunked`` (:func:`emvsbayes.gaussian.chunked.fit`): the same EM, stopping rule, trace and restart rule as the
in-memory run, and the same answers to rounding.

What such a run does not do, and why: everything else a run does needs all N rows in memory, or many
passes per iteration (the posterior's sampler evaluates the likelihood of every row at every leapfrog
step, hundreds of thousands of passes; the bootstrap refits B resampled copies; the observed information
and k-means hold N x K arrays; the report's tables and figures are per row). Rather than skip them
silently, a spec with a store must switch them off itself (``[bayes] enabled = false``, ``[em] bootstrap
= 0``, ``[em] information = false``, ``[em] kmeans = false``; no ``[ladder]`` or ``[model_choice]``): the
check names each key still on, in one line, before anything is read. Starting points are drawn from a
random sample of at most :data:`SAMPLE_ROWS` rows (k-means++ by default, as in memory) or given in
``[em] init``; every fit from them runs on all N rows.

The results file has the EM groups (``em``, ``em_trace``, ``em_hard``, restarts) and a ``data`` group
without rows (the store's path, N, D and column names); no responsibilities (N x K numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emvsbayes.errors import UserError, quote

#: Rows drawn at random from the store to choose starting points (k-means++ or k-means on them).
SAMPLE_ROWS = 10_000

def uses_store(spec: dict) -> bool:
    return spec.get("data", {}).get("store") is not None


def store_path(spec: dict) -> Path:
    """``[data] store``, relative to the spec file's folder."""
    path = Path(spec["data"]["store"])
    if not path.is_absolute():
        path = Path(spec.get("path", ".")).parent / path
    return path


def open_store(spec: dict):
    """The store's array as a :class:`StoreData`: a dask array (N, D) of float64 chunked by whole rows, and its
    column names (the array's ``columns`` attribute when it names each column once, else x1, x2, ...);
    a one-line :class:`UserError` for a path that is missing or is no Zarr store, a group without a named
    array, an array that is not 2-D or not of floats, or fewer rows than components. Reads metadata only."""
    import numpy as np

    path, name = store_path(spec), spec["data"]["store_array"]
    where = f"[data] store {str(path)!r}"
    if not path.exists():
        raise UserError(f"{where}: no such file or folder; give the path of a Zarr store, relative to the spec's folder")
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception:  # zarr's errors for a non-store differ by version and cause: all mean the same here
        raise UserError(f"{where}: not a Zarr store; write the data with "
                        "zarr or dask.array.to_zarr, or give a CSV as file = \"data.csv\"") from None
    if isinstance(node, zarr.Group):
        arrays = sorted(key for key, _ in node.arrays())
        if name is None:
            listed = ", ".join(map(repr, arrays)) if arrays else "none"
            raise UserError(f"{where}: is a Zarr group; name the array to fit with [data] store_array (arrays: {listed})")
        try:
            node = node[name.strip("/")]
        except KeyError:
            raise UserError(f"{where}: has no array {quote(name)}; arrays: {', '.join(map(repr, arrays)) or 'none'}") from None
        if not isinstance(node, zarr.Array):
            raise UserError(f"{where}: {quote(name)} is a group, not an array; name an array with [data] store_array")
        where = f"{where} array {quote(name)}"
    elif name is not None:
        raise UserError(f"{where}: is a single array, not a group; remove [data] store_array")
    if node.ndim != 2:
        raise UserError(f"{where}: has shape {tuple(node.shape)}; give a 2-D array, one row per point and one column "
                        "per measurement")
    if np.dtype(node.dtype).kind != "f":
        raise UserError(f"{where}: holds {np.dtype(node.dtype).name} values; store the measurements as floats "
                        "(float64 or float32)")
    n, d = node.shape
    k = spec["model"]["components"]
    if n == 0:
        raise UserError(f"{where}: has no rows; write the data into the store")
    if isinstance(k, int) and n < k:
        raise UserError(f"{where}: has {n} rows, fewer than [model] components = {k}; use at most {n} components")
    if d < 1:
        raise UserError(f"{where}: has no columns; give a 2-D array with at least one column")
    columns = node.attrs.get("columns")
    if not (isinstance(columns, list) and len(columns) == d and all(isinstance(c, str) and c for c in columns)
            and len(set(columns)) == d):
        columns = [f"x{j + 1}" for j in range(d)]
    import dask.array as da

    # float64 and whole rows per chunk: every E-step reads whole rows
    x = da.from_zarr(node).astype(np.float64)
    if len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})
    return StoreData(x, tuple(columns), str(path))


def _scan_rows(path: str, name: str | None, start: int, stop: int):
    """(rows holding NaN or an infinity, the largest finite magnitude of each column, None) of rows
    ``start:stop``, or (0, None, the problem) when they cannot be read (a damaged chunk). Run on a worker:
    a failed read is returned, not raised, so no worker logs a traceback to the user's terminal."""
    import numpy as np
    import zarr

    try:
        node = zarr.open(path, mode="r")
        if name is not None:
            node = node[name.strip("/")]
        block = np.asarray(node[start:stop], dtype=np.float64)
    except Exception as error:  # zarr's and the codecs' errors for damaged bytes differ by cause and version
        return 0, None, " ".join(f"{type(error).__name__}: {error}".split())
    finite = np.isfinite(block)
    return int((~finite).any(axis=1).sum()), np.where(finite, np.abs(block), 0.0).max(axis=0, initial=0.0), None


def check_store_values(spec: dict, data: StoreData, client) -> None:
    """One pass over the store on ``client``, by its row chunks: refuse a chunk that cannot be read, rows
    holding NaN or an infinity, and a column whose scale float64 cannot carry, each in one line."""
    import numpy as np

    from emvsbayes.data.csv import check_magnitudes

    where = f"[data] store {str(store_path(spec))!r}"
    bounds = np.cumsum((0, *data.x.chunks[0]))
    futures = client.map(_scan_rows, [data.source] * (len(bounds) - 1), [spec["data"]["store_array"]] * (len(bounds) - 1),
                         bounds[:-1].tolist(), bounds[1:].tolist(), pure=False)
    results = client.gather(futures)
    for (_, _, problem), start, stop in zip(results, bounds[:-1], bounds[1:]):
        if problem is not None:
            raise UserError(f"{where}: rows {start:,} to {stop - 1:,} cannot be read ({problem}); the store is damaged, "
                            "write it again")
    bad = sum(result[0] for result in results)
    if bad:
        raise UserError(f"{where}: {bad:,} of {data.x.shape[0]:,} rows hold NaN or an infinity; remove or impute them "
                        "and write the store again")
    top = np.max([result[1] for result in results], axis=0)
    check_magnitudes(top[None, :], data.columns, where, leave_out="write the store without it")


@dataclass(frozen=True, slots=True)
class StoreData:
    """A store's data as a run passes it around: ``x`` the lazy (N, D) dask array, never loaded whole."""

    x: object
    columns: tuple[str, ...]
    source: str
    #: no row labels: the rows stay in the store (a family's coords() then names no observation)
    labels: tuple = ()


def data_group(data: StoreData):
    """The results file's ``data`` group for a store: where the rows are and their shape, not the rows."""
    import xarray as xr

    n, d = data.x.shape
    group = xr.Dataset(coords={"feature": list(data.columns)})
    group.attrs.update(source=data.source, kind="store", n_rows=int(n), n_features=int(d),
                       chunk_rows=int(max(data.x.chunks[0])), n_chunks=len(data.x.chunks[0]))
    return group


def fit_groups(spec: dict, data: StoreData, client, seeds: dict, timings: dict, progress=None) -> dict:
    """The EM result groups of a store (:func:`emvsbayes.runner.run`'s EM stage, every fit on all rows by
    the family's ``fit_chunked`` on ``client``)."""
    import time
    from functools import partial

    import numpy as np

    from emvsbayes.em import fit_em_until
    from emvsbayes.errors import DegenerateFitError
    from emvsbayes.family import get_family
    from emvsbayes.runner import FamilyView, em_kind_groups, em_options, fit_all

    family = FamilyView(get_family(spec["model"]["family"]), data)
    em_spec = spec["em"]
    model_def = family.model_from_spec(spec, data)
    declared = family.parameters(model_def, data)
    dims = {name: info.dims for name, info in declared.items()}
    coords = family.coords(spec, model_def, data)
    coords.pop(family.obs_dim, None)  # the rows are not written out
    rng = np.random.default_rng(seeds["em"])
    start = time.perf_counter()
    n = data.x.shape[0]
    # Starting points from a random sample of rows (sorted: each chunk is read once); the fits use every row.
    rows = np.sort(rng.choice(n, size=min(n, SAMPLE_ROWS), replace=False))
    sample = client.compute(data.x[rows]).result()
    next_init, policy = family.starts(model_def, StoreData(sample, data.columns, data.source), em_spec, rng)
    timings["em_starts"] = time.perf_counter() - start

    def fit_from(init, kind):
        return family.fit_chunked(model_def, data.x, init, kind=kind, client=client, **em_options(em_spec))

    start = time.perf_counter()
    soft = fit_em_until(partial(fit_from, kind="soft"), next_init, policy, skip=DegenerateFitError)
    groups = {"data": data_group(data)}
    for kind in em_spec["kinds"]:
        restarts, failures = ((soft.restarts, list(soft.failures)) if kind == "soft"
                              else fit_all(partial(fit_from, kind=kind), soft.inits))
        groups.update(em_kind_groups(family, model_def, data, soft, kind, restarts, failures, dims, coords, declared))
    groups["em"].attrs.update(start_sample_rows=len(rows))
    timings["em"] = time.perf_counter() - start
    if progress:
        progress(f"EM on {n:,} rows of the store in {len(data.x.chunks[0])} chunk(s): {soft.n_starts} start(s), "
                 f"{soft.n_reached_best} of them at the best log-likelihood {groups['em']['loglik'].item():.4f}")
    return groups


__all__ = ["StoreData", "data_group", "fit_groups", "SAMPLE_ROWS", "check_store_values", "open_store", "store_path", "uses_store"]
