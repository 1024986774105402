"""Running a study on ``dask.distributed``: one task per (cell, replicate), a store, resume, ``study.nc``.

- **Cluster.** By default a ``LocalCluster`` sized to the machine (one process per core, one thread per
  worker: PyMC and numpy must not share a worker's thread), started and stopped here. With
  ``scheduler="tcp://host:8786"`` the same tasks go to an existing cluster (its workers need this
  emvsbayes installed); nothing else changes.
- **Purity.** A task is :func:`emvsbayes.study.replicate.run_task` of (spec, cell, replicate): its seed
  is derived from the study seed and (cell, replicate), so results do not depend on the workers.
- **Nothing lost.** Each finished replicate is written as soon as its result arrives, one small JSON
  file per replicate (``store/cell-CCC/rep-RRRR.json``), atomically (temporary file + rename). A study
  started again skips replicates already stored with status "ok" (failed ones are tried again). A
  store made by a different spec (another fingerprint) is refused rather than mixed in. Each record
  carries a checksum of its content and the store's fingerprint; a record that is damaged, from
  another study or in another replicate's place (copied over it) stops the study with a one-line
  error naming the file to delete, instead of being trusted.
- **One writer, one unit.** The output folder is locked for the study (:mod:`emvsbayes.outputs`);
  ``study.nc`` and its page are published together, so a reader never sees one without the other.
  Records are written by the client, not the workers, so a remote cluster needs no shared disk.
- **Failures.** A worker that dies is replaced by its nanny and Dask reschedules its tasks; a task that
  raises is retried ``retries`` times; a replicate that still fails is stored with its error and the
  study goes on.
- **Provenance.** Each record says which invocation of the study computed it (its start, the cluster
  and its number of workers, and when the record arrived), so a study resumed on another cluster, or
  rerun with every replicate stored, reports what computed its replicates, not the last invocation's
  cluster (``invocation*`` variables of ``study.nc``).
- **Results.** :func:`assemble` turns the store into one ``xarray.Dataset`` with the grid's axes and
  ``replicate`` as dimensions (plus per-cell summaries), written to ``study.nc``; the report
  (:mod:`emvsbayes.study.report`) is rendered from that file alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr

from emvsbayes import limits
from emvsbayes.cluster import check_scheduler_address, connect, default_workers
from emvsbayes.errors import UserError, quote
from emvsbayes.family import get_family
from emvsbayes.outputs import OutputFolder
from emvsbayes.paths import input_kind
from emvsbayes.results import STUDY_FORMAT, atomic_write, check_checksum, load_quietly, read_study, write_checked
from emvsbayes.study.spec import cells, check_devices, fingerprint, grid_axes, load_study_spec

STUDY_VERSION = 1
MANIFEST = "study.json"
#: Replicates in flight at once (per worker, with a floor): enough to keep every worker busy while records are
#: written, few enough that a large study does not flood the scheduler.
SUBMIT_WINDOW_PER_WORKER = 8
SUBMIT_WINDOW_MIN = 64
#: Environment variable (tests only): an integer seed to shuffle the order in which replicates are submitted.
SHUFFLE_ENV = "EMVSBAYES_STUDY_SHUFFLE"


@dataclass(frozen=True, slots=True)
class StudyOutcome:
    """Where the results went and what this run did: replicates found done in the store (skipped),
    computed now, and failed (stored with their error)."""

    results_path: Path
    report_path: Path
    store: Path
    n_tasks: int
    n_skipped: int
    n_computed: int
    n_failed: int
    seconds: float
    #: The error of the first replicate that failed in this run ("" if none did).
    first_error: str = ""


# --------------------------------------------------------------------------------------------------
# The store


def record_path(store: Path, cell: int, replicate: int) -> Path:
    return store / f"cell-{cell:03d}" / f"rep-{replicate:04d}.json"


def record_checksum(record: dict, study_fingerprint: str) -> str:
    """SHA-256 of a record's content (without its checksum) and of the study it belongs to."""
    content = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(content, sort_keys=True, allow_nan=True)
    return hashlib.sha256(f"{study_fingerprint}\n{text}".encode()).hexdigest()


def write_record(store: Path, record: dict, study_fingerprint: str) -> Path:
    path = record_path(store, record["cell"], record["replicate"])
    record = {**record, "checksum": record_checksum(record, study_fingerprint)}
    text = json.dumps(record, allow_nan=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def read_record(path: Path) -> dict | None:
    """A stored JSON file, or None if it is unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_record(store: Path, cell: int, replicate: int, study_fingerprint: str) -> dict | None:
    """The checked record of (cell, replicate), None when none is stored; a one-line error for a record
    that cannot be trusted (damaged, of another study, or of another replicate copied into its place)."""
    path = record_path(store, cell, replicate)
    if not path.is_file():
        return None
    fix = "delete it and run the study again to recompute that replicate"
    record = read_record(path)
    if not isinstance(record, dict):
        raise UserError(f"{path}: damaged (not a readable record); {fix}")
    if (record.get("cell"), record.get("replicate")) != (cell, replicate):
        raise UserError(f"{path}: holds cell {record.get('cell')} replicate {record.get('replicate')}, not cell {cell} "
                        f"replicate {replicate} (copied over it?); {fix}")
    # Records written before checksums existed have none; their place is still checked above.
    if "checksum" in record and record["checksum"] != record_checksum(record, study_fingerprint):
        raise UserError(f"{path}: damaged or from another study (it does not match its checksum); {fix}")
    return record


def open_store(store: Path, spec: dict) -> bool:
    """Create the store, or check that an existing one belongs to this spec; whether it was created here."""
    manifest = store / MANIFEST
    mark = {"format": STUDY_FORMAT, "fingerprint": fingerprint(spec), "name": spec.get("name", "")}
    if manifest.is_file():
        found = read_record(manifest) or {}
        if found.get("fingerprint") != mark["fingerprint"]:
            raise UserError(f"{store}: this store holds replicates of a different study spec (changed since it was run); "
                            "delete the folder or give another --out")
        return False
    text = json.dumps(mark)
    atomic_write(manifest, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return True


def _remove_empty_store(store: Path) -> None:
    """A store this command created and that holds no replicate: removed, so a study refused before its first
    replicate (an unreachable scheduler, say) leaves nothing behind."""
    if any(store.glob("cell-*/rep-*.json")):
        return
    (store / MANIFEST).unlink(missing_ok=True)
    for folder in sorted(store.glob("cell-*"), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        store.rmdir()


def done_replicates(store: Path, n_cells: int, replicates: int, study_fingerprint: str) -> set[tuple[int, int]]:
    done = set()
    for cell in range(n_cells):
        for rep in range(replicates):
            record = load_record(store, cell, rep, study_fingerprint)
            if record is not None and record.get("status") == "ok":
                done.add((cell, rep))
    return done


# --------------------------------------------------------------------------------------------------
# Running


def run_study(
    spec_path,
    *,
    scheduler: str | None = None,
    out=None,
    n_workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    retries: int = 2,
    client=None,
) -> StudyOutcome:
    """Run (or resume) the study of ``spec_path``; write ``OUT/study.nc`` and ``OUT/index.html``.

    Parameters
    ----------
    spec_path
        A study spec file (or an already validated spec dict, as :func:`load_study_spec` returns).
    scheduler
        Address of an existing Dask scheduler; ``None`` starts a ``LocalCluster`` for this run.
    out
        Output folder (default ``reports/<spec name>``); the store is ``OUT/store``.
    n_workers
        Worker processes of the ``LocalCluster`` (default: one per core); ignored with ``scheduler``.
    progress
        Called with a one-line message as replicates finish.
    retries
        Times Dask retries a task that raised (a worker that died is rescheduled regardless).
    client
        An existing ``dask.distributed.Client`` to run on (left open afterwards); overrides ``scheduler``.
    """
    began = time.perf_counter()
    spec = spec_path if isinstance(spec_path, dict) else load_study_spec(spec_path)
    limits.check_workers(n_workers)
    if scheduler is not None:
        check_scheduler_address(scheduler, n_workers)
    limits.check_study(spec)
    if scheduler is None and client is None:
        check_devices(spec)  # the LocalCluster's workers inherit this environment's XLA_FLAGS
    out = Path(out) if out is not None else Path("reports") / spec["name"]
    store = out / "store"
    closing: list[threading.Thread] = []
    try:
        return _run(spec, out, store, scheduler, n_workers, say_to=progress, retries=retries, client=client,
                    began=began, closing=closing)
    finally:
        for thread in closing:  # the cluster closing while study.nc and its page were written
            thread.join()


def _run(spec, out, store, scheduler, n_workers, *, say_to, retries, client, began, closing) -> StudyOutcome:
    with OutputFolder(out, "study") as folder:
        created = open_store(store, spec)
        try:
            total, n_done, n_todo, n_failed, first_error = _compute_and_publish(spec, store, scheduler, n_workers, folder,
                                                                   say_to=say_to, retries=retries, client=client,
                                                                   began=began, closing=closing)
        except BaseException:
            if created:  # refused or interrupted before its first replicate: no empty store left behind
                _remove_empty_store(store)
            raise
    results_path, report_path = out / "study.nc", out / "index.html"
    _refresh_reports_index(out)
    return StudyOutcome(results_path, report_path, store, total, n_done, n_todo, n_failed, time.perf_counter() - began,
                        first_error)


def _compute_and_publish(spec, store, scheduler, n_workers, folder, *, say_to, retries, client, began,
                         closing) -> tuple[int, int, int, int, str]:
    """The replicates not yet in the store, then study.nc and its page published together; (replicates in all,
    found done, computed, failed, the first failure's error)."""
    grid_cells = cells(spec)
    replicates = spec["replicates"]
    done = done_replicates(store, len(grid_cells), replicates, fingerprint(spec))
    todo = [(c, r) for c in range(len(grid_cells)) for r in range(replicates) if (c, r) not in done]
    say = say_to or (lambda message: None)
    say(f"study {spec['name']}: {len(grid_cells)} cells x {replicates} replicates; "
        f"{len(done)} already in {store}, {len(todo)} to run")

    n_failed, workers_used, first_error = 0, 0, ""
    if todo:
        n_failed, workers_used, first_error = _compute(spec, grid_cells, todo, store, scheduler, n_workers, retries, say, client,
                                          began, closing)
    ds = assemble(spec, store)
    ds.attrs.update(run_attrs(spec, scheduler, workers_used, time.perf_counter() - began))
    ds.attrs["computed"] = len(todo)
    from emvsbayes.study.report import render_study_report

    # study.nc and its page are written into a fresh unit and published together.
    unit = folder.new_unit()
    # The page is rendered from the file as written and read back (its checksum computed on it), not
    # from the Dataset in memory; reading and hashing it again would cost a second after the last replicate.
    render_study_report(write_study(ds, unit / "study.nc"), unit / "index.html")
    folder.publish(unit)
    return len(grid_cells) * replicates, len(done), len(todo), n_failed, first_error


def _refresh_reports_index(out: Path) -> None:
    """List the study in ``reports/index.html`` when it was written under a reports/ folder, as runs are.

    A convenience: a parent that cannot be written does not fail a finished study, and the index is
    written only over an index page of ours (see :func:`~emvsbayes.report.refresh_index`).
    """
    parent = Path(out).resolve().parent
    if parent.name != "reports" or (parent / "results.nc").exists() or (parent / "study.nc").exists():
        return
    from emvsbayes.report import refresh_index

    try:
        refresh_index(parent)
    except OSError:
        pass


def _compute(spec, grid_cells, todo, store, scheduler, n_workers, retries, say, given_client=None,
             began: float | None = None, closing: list | None = None) -> tuple[int, int, str]:
    """Run ``todo`` on the cluster, storing each record as it arrives; (failed, workers, the first failure's error).

    With ``closing`` (a list), a cluster started here that computed every replicate is closed in a thread
    appended to it (closing waits for the worker processes to stop, a second or more), so that the caller
    writes study.nc and its page meanwhile; the caller joins it. Otherwise the cluster is closed here."""
    from distributed import as_completed

    from emvsbayes.study.task import run_task  # light: the replicate's code is imported by the workers only

    # A client the caller gave stays theirs: it is neither made nor closed here.
    # Ctrl-C is held back while the cluster starts: its event-loop thread and worker processes inherit
    # the block and so never see the SIGINT a terminal sends to the whole process group (they would
    # print tracebacks and the nanny its restarts); this process alone handles it, by closing the
    # cluster below. A Ctrl-C pressed during the start arrives as soon as the block is lifted.
    _sigint_blocked(True)
    try:
        client, cluster = (given_client, None) if given_client is not None else connect(scheduler, n_workers)
    except BaseException:
        _sigint_blocked(False)
        raise
    futures = []
    completed = False
    try:
        _sigint_blocked(False)
        workers_used = len(client.scheduler_info(n_workers=-1)["workers"])
        began = time.perf_counter() if began is None else began
        # What computed these replicates, stored with each record: a later invocation that finds them
        # stored (or resumes on another cluster) reports this, not its own cluster.
        invocation = {
            "invocation": f"{datetime.now(UTC).isoformat(timespec='seconds')} pid {os.getpid()}",
            "invocation_cluster": scheduler or (_client_address(given_client) if given_client is not None
                                                else "LocalCluster"),
            "invocation_workers": workers_used,
        }
        prefix = f"study-{fingerprint(spec)}"
        # Submitted replicate by replicate (replicate 0 of every cell, then replicate 1, ...): a study stopped
        # early then holds the first replicates of every cell, not all of some cells and none of others. A
        # worker still compiles each cell's model once (its caches keep every cell's). Tests shuffle the
        # order (SHUFFLE_ENV) to show that a replicate does not depend on what its worker ran before.
        todo = sorted(todo, key=lambda cell_replicate: (cell_replicate[1], cell_replicate[0]))
        if os.environ.get(SHUFFLE_ENV):
            order = np.random.default_rng(int(os.environ[SHUFFLE_ENV])).permutation(len(todo))
            todo = [todo[i] for i in order]
        where = {}

        def submit(c: int, r: int):
            future = client.submit(run_task, spec, c, r, grid_cells[c], key=f"{prefix}-{c}-{r}", retries=retries,
                                   pure=False)
            where[future.key] = (c, r)
            futures.append(future)
            return future

        # A window of tasks in flight, topped up as each ends, not every replicate at once: a study of 10^5
        # replicates would hand the scheduler 10^5 tasks (each with the spec) before the first ends.
        window = max(SUBMIT_WINDOW_MIN, SUBMIT_WINDOW_PER_WORKER * workers_used)
        pending = iter(todo)
        in_flight = as_completed([submit(c, r) for c, r in itertools.islice(pending, window)])
        _import_meanwhile("emvsbayes.study.report", "h5netcdf")
        n_failed, first_error = 0, ""
        for finished, future in enumerate(in_flight, start=1):
            following = next(pending, None)
            if following is not None:
                in_flight.add(submit(*following))
            try:
                record = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. KilledWorker after repeated worker deaths
                from emvsbayes.study.replicate import record as _record

                c, r = where[future.key]
                record = _record(c, r, error=f"{type(error).__name__}: {error}".replace("\n", " ")[:500])
            record = {**record, **invocation, "invocation_arrival": time.perf_counter() - began}
            write_record(store, record, fingerprint(spec))
            future.release()
            if record["status"] != "ok":
                n_failed += 1
                first_error = first_error or record["error"]
            say(f"[{finished}/{len(todo)}] cell {record['cell']} replicate {record['replicate']}: {record['status']}"
                + (f" ({record['error']})" if record["error"] else ""))
        completed = True
        return n_failed, workers_used, first_error
    finally:
        _sigint_blocked(True)  # a second Ctrl-C must not cut the closing short (half-closed clusters print tracebacks)
        try:
            for future in futures:
                future.cancel()

            def close() -> None:
                if given_client is None:
                    client.close()
                if cluster is not None:
                    cluster.close()

            if completed and closing is not None and given_client is None:
                # Started with SIGINT blocked, the thread keeps it blocked.
                thread = threading.Thread(target=close, name="emvsbayes-close-cluster")
                thread.start()
                closing.append(thread)
            else:
                close()
        finally:
            _sigint_blocked(False)


def _client_address(client) -> str:
    """The scheduler address of a client the caller gave (``"a given client"`` if it has none)."""
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return "a given client"


def _import_meanwhile(*modules: str) -> None:
    """Import what writing study.nc and its page needs (matplotlib, the report, h5netcdf: seconds) in a
    thread while the workers compute, instead of after the last replicate, when every worker is idle and
    only this process works. A failed import is left for the main thread to meet and report."""
    import importlib

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S110 - imported again (and reported) where it is used
                pass

    threading.Thread(target=load, name="emvsbayes-imports", daemon=True).start()


def _sigint_blocked(block: bool) -> None:
    """Block (or unblock) SIGINT in this thread; threads and processes started meanwhile inherit the block."""
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK, {signal.SIGINT})


# --------------------------------------------------------------------------------------------------
# The Dataset


def _union(keys_lists) -> list[str]:
    seen: dict[str, None] = {}
    for keys in keys_lists:
        for key in keys:
            seen.setdefault(key, None)
    return list(seen)


def assemble(spec: dict, store: Path) -> xr.Dataset:
    """All stored records as one Dataset over (grid axes..., replicate[, parameter or quantity]).

    A replicate missing from the store has ``status`` -1 and NaN everywhere; a failed one 0 and its
    ``error``. Per-cell summaries are added by :func:`summarise`.
    """
    grid_cells = cells(spec)
    axes = grid_axes(spec)
    grid_shape = tuple(len(spec["grid"][a]) for a in axes)
    replicates = spec["replicates"]
    study_fingerprint = fingerprint(spec)
    records = [load_record(store, c, r, study_fingerprint) for c in range(len(grid_cells)) for r in range(replicates)]
    present = [rec for rec in records if rec is not None]
    inner = "quantity" if spec["kind"] == "sbc" else "parameter"
    labels = _union(by_label.keys() for rec in present for by_label in rec["values"].values())
    metrics = _union(rec["values"].keys() for rec in present)
    scalars = _union(rec["scalars"].keys() for rec in present)
    stages = _union(rec["timings"].keys() for rec in present)
    shape = (*grid_shape, replicates)
    label_index = {label: i for i, label in enumerate(labels)}

    arrays = {m: np.full((*shape, len(labels)), np.nan) for m in metrics}
    arrays |= {s: np.full(shape, np.nan) for s in scalars}
    arrays |= {f"time_{t}": np.full(shape, np.nan) for t in stages}
    status = np.full(shape, -1, dtype=np.int8)
    compiled = np.zeros(shape, dtype=np.int8)
    error = np.full(shape, "", dtype=object)
    worker = np.full(shape, "", dtype=object)
    # Provenance (records written before it was kept have none: "" and 0, NaN).
    invocation = {name: np.full(shape, "", dtype=object) for name in ("invocation", "invocation_cluster")}
    invocation_workers = np.zeros(shape, dtype=np.int32)
    invocation_arrival = np.full(shape, np.nan)
    for rec in present:
        at = (*np.unravel_index(rec["cell"], grid_shape), rec["replicate"]) if grid_shape else (rec["replicate"],)
        status[at] = 1 if rec["status"] == "ok" else 0
        compiled[at] = rec.get("compiled", 0)
        error[at] = rec.get("error") or ""
        worker[at] = rec.get("worker", "")
        for name, array in invocation.items():
            array[at] = rec.get(name) or ""
        invocation_workers[at] = rec.get("invocation_workers", 0)
        invocation_arrival[at] = rec.get("invocation_arrival", np.nan)
        for m, by_label in rec["values"].items():
            for label, value in by_label.items():
                arrays[m][(*at, label_index[label])] = np.nan if value is None else value
        for s, value in rec["scalars"].items():
            arrays[s][at] = np.nan if value is None else value
        for t, value in rec["timings"].items():
            arrays[f"time_{t}"][at] = value
    dims = (*axes, "replicate")
    data_vars = {}
    for name, array in arrays.items():
        data_vars[name] = ((*dims, inner), array) if name in metrics else (dims, array)
    data_vars |= {"status": (dims, status), "compiled": (dims, compiled),
                  "error": (dims, error.astype(str)), "worker": (dims, worker.astype(str))}
    data_vars |= {name: (dims, array.astype(str)) for name, array in invocation.items()}
    data_vars |= {"invocation_workers": (dims, invocation_workers), "invocation_arrival": (dims, invocation_arrival)}
    coords = {axis: spec["grid"][axis] for axis in axes} | {"replicate": np.arange(replicates), inner: labels}
    ds = xr.Dataset(data_vars, coords=coords)
    return summarise(ds, spec)


def summarise(ds: xr.Dataset, spec: dict) -> xr.Dataset:
    """Per-cell summaries over replicates (failed and missing replicates are NaN and left out)."""
    ok = ds["status"] == 1
    ds["n_ok"] = ok.sum("replicate")
    if spec["kind"] == "coverage":
        for kind in spec["intervals"]["kinds"]:
            if f"{kind}_covered" in ds:
                ds[f"coverage_{kind}"] = ds[f"{kind}_covered"].mean("replicate", skipna=True)
                ds[f"width_{kind}"] = ds[f"{kind}_width"].mean("replicate", skipna=True)
                ds[f"n_intervals_{kind}"] = ds[f"{kind}_covered"].notnull().sum("replicate")
                # Monte Carlo standard error of each coverage estimate: a share of n independent replicates.
                p, n = ds[f"coverage_{kind}"], ds[f"n_intervals_{kind}"]
                ds[f"coverage_mcse_{kind}"] = np.sqrt(p * (1 - p) / n.where(n > 0))
        for estimator in ("em", "post"):
            if f"{estimator}_error" in ds:
                err = ds[f"{estimator}_error"]
                ds[f"bias_{estimator}"] = err.mean("replicate", skipna=True)
                ds[f"rmse_{estimator}"] = np.sqrt((err**2).mean("replicate", skipna=True))
        ds.attrs["nominal"] = spec["intervals"]["prob"]
    else:
        from emvsbayes.study.sbc import uniformity_test

        sbc = spec["sbc"]
        ranks = ds["rank"]
        outer = [d for d in ranks.dims if d not in ("replicate", "quantity")]
        counts = np.zeros((*[ds.sizes[d] for d in outer], ds.sizes["quantity"], sbc["bins"]), dtype=np.int64)
        stat = np.full((*[ds.sizes[d] for d in outer], ds.sizes["quantity"]), np.nan)
        pval = np.full_like(stat, np.nan)
        values = ranks.transpose(*outer, "quantity", "replicate").values
        for index in np.ndindex(*values.shape[:-1]):
            test = uniformity_test(values[index], sbc["ranks"], sbc["bins"])
            counts[index], stat[index], pval[index] = test.counts, test.statistic, test.p_value
        ds["rank_counts"] = ((*outer, "quantity", "bin"), counts)
        ds["chi2"] = ((*outer, "quantity"), stat)
        ds["p_value"] = ((*outer, "quantity"), pval)
        n_quantities = ds["p_value"].notnull().sum("quantity")
        # A cell passes when no quantity's p-value is below alpha / (number of quantities) (Bonferroni).
        ds["sbc_pass"] = (ds["p_value"].min("quantity") >= sbc["alpha"] / n_quantities.clip(min=1)).astype(np.int8)
        ds = ds.assign_coords(bin=np.arange(sbc["bins"]))
        ds.attrs.update(ranks=sbc["ranks"], bins=sbc["bins"], alpha=sbc["alpha"])
    return ds


def run_attrs(spec: dict, scheduler: str | None, workers: int, seconds: float) -> dict:
    from emvsbayes.pipeline import machine_info, package_versions

    spec_record = {k: v for k, v in spec.items() if k != "path"}
    return {
        "format": STUDY_FORMAT,
        "format_version": STUDY_VERSION,
        "kind": spec["kind"],
        "family": spec["model"]["family"],
        "family_title": get_family(spec["model"]["family"]).title,
        "title": spec.get("title") or spec.get("name", ""),
        "name": spec.get("name", ""),
        "seed": spec["seed"],
        "fingerprint": fingerprint(spec),
        "grid_axes": json.dumps(grid_axes(spec)),
        "spec": json.dumps(spec_record, default=str),
        "scheduler": scheduler or "LocalCluster",
        "workers": workers,
        "seconds": seconds,
        "versions": json.dumps(package_versions()),
        "machine": json.dumps(machine_info()),
        "command": " ".join(["emvsbayes", *sys.argv[1:]]) if sys.argv and "emvsbayes" in sys.argv[0] else "",
    }


def write_study(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """Write ``study.nc`` (atomically, with its checksum); returns the file as written, read back."""
    return write_checked(ds, path)
