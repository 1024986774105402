"""One comparison run: spec -> data -> both engines -> ``results.nc`` -> ``index.html``.

The model family's runner does the fitting; this module owns what every run shares: seeds (one
master seed, recorded even when none was given, spawned into one child per stage), timings, run
metadata, the output folder, atomic writes, and rendering the report from the written file.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from emvsbayes import data as datasets
from emvsbayes import limits
from emvsbayes.errors import UserError
from emvsbayes.family import get_family
from emvsbayes.outputs import META, OutputFolder, foreign, link_or_copy
from emvsbayes.paths import input_kind, not_a_folder_above, why_not_writable
from emvsbayes.seeds import SEED_STAGES, child_seeds
from emvsbayes.spec import SPEC_NAME_CHARACTERS, is_spec_name
VERSIONED_PACKAGES = ("emvsbayes", "numpy", "scipy", "xarray", "pymc", "pytensor", "numpyro", "jax", "nutpie", "arviz",
                      "arviz-base", "arviz-stats", "arviz-plots", "h5netcdf", "matplotlib")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    results_path: Path
    report_path: Path
    seconds: float
    tree: object  # the results as written, read back


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.machine(),
            "cores": len(os.sched_getaffinity(0))}


def _spec_errors_name_the_spec(check):
    """``check(spec, ...)`` whose one-line errors about a spec key (they start with its section, "[data]
    ...") begin with the spec file's path, as the spec's own validation errors do; a spec given as a dict
    (the API) has no path and its errors stay as they are."""

    @functools.wraps(check)
    def checked(spec: dict, *args):
        try:
            return check(spec, *args)
        except UserError as error:
            path = spec.get("path")
            if path and type(error) is UserError and str(error).startswith("["):
                raise UserError(f"{path}: {error}") from None
            raise

    return checked


@_spec_errors_name_the_spec
def load_data(spec: dict):
    """The data a spec names: a bundled data set or a CSV file with the spec's column options, read by
    the spec's model family."""
    data_spec = spec["data"]
    if data_spec["dataset"] is not None:
        names = [info.name for info in datasets.list_datasets()]
        if data_spec["dataset"] not in names:
            close = difflib.get_close_matches(str(data_spec["dataset"]), names, n=1)
            raise UserError(f"[data] dataset {data_spec['dataset']!r} is not bundled"
                            + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" ('emvsbayes datasets' lists: {', '.join(names)})")
    return get_family(spec["model"]["family"]).load_data(spec)


@_spec_errors_name_the_spec
def check_against_data(spec: dict, data) -> None:
    """Checks that need the data, made before any output is written or anything is fitted."""
    k = spec["model"]["components"]
    if isinstance(k, list):
        raise UserError("[model] components must be one K for the comparison; put a range in [model_choice] components")
    if get_family(spec["model"]["family"]).n_observations(data) == 0:
        raise UserError("the data have no rows (observations); give at least one row per component")
    if "soft" not in spec["em"]["kinds"]:
        raise UserError('[em] kinds must include "soft" (the EM answer compared with the posterior), e.g. kinds = ["soft", "hard"]')
    family = get_family(spec["model"]["family"])
    family.check_data(spec, data)
    if spec.get("ladder", {}).get("enabled"):
        _check_ladder_size(family.n_free_parameters(family.model_from_spec(spec, data), data))


def _check_ladder_size(n_params: int) -> None:
    """The ladder's Laplace rung (always run) holds the P x P Hessian of the log posterior and its inverse, as
    full-rank ADVI does its covariance factor: refused before the fit where one such matrix exceeds what an
    information matrix may hold (a 30-row, 200-column Gaussian with full covariances has 40,601 coordinates:
    13 GB per matrix, and the run was killed for memory after its fit)."""
    from emvsbayes.limits import format_size
    from emvsbayes.uncertainty.information import evaluation_budget, matrix_too_large

    if matrix_too_large(n_params) is None:
        return
    raise UserError(f"[ladder]: the Laplace rung holds a {n_params:,} x {n_params:,} matrix of "
                    f"{format_size(8 * n_params * n_params)}, more than the {format_size(evaluation_budget())} allowed "
                    "for it; turn the ladder off ([ladder] enabled = false) or fit fewer parameters (a diagonal or "
                    "spherical covariance, fewer columns)")


def default_out_dir(spec: dict) -> Path:
    """``reports/<spec name>``; the name is checked so that it cannot point outside ``reports``."""
    name = spec.get("name")
    if not is_spec_name(name):
        raise UserError(f"the spec's name {name!r} cannot name a report folder ({SPEC_NAME_CHARACTERS}); "
                        "load it with load_spec, or give an output folder with --out")
    return Path("reports") / name


#: R-hat above this (after relabelling) fails ``--strict``, as it is a warning in the report.
RHAT_LIMIT = 1.01


def sampler_checks(tree) -> dict:
    """The sampler checks of a results tree: divergences, the largest R-hat (after relabelling; within
    each mode when the chains sit in several, ``posterior_modes``).

    Returns a dict with ``divergences`` (int or None when there is no posterior), ``max_rhat`` (float or
    None), and ``failed``, a list of one-phrase descriptions of the checks that failed.
    """
    children = getattr(tree, "children", tree)
    checks = {"divergences": None, "max_rhat": None, "failed": []}
    if "sample_stats" in children and "diverging" in children["sample_stats"]:
        checks["divergences"] = int(np.asarray(children["sample_stats"]["diverging"].values, dtype=float).sum())
        if checks["divergences"]:
            checks["failed"].append(f"{checks['divergences']} divergent transitions")
    modes = children["posterior_modes"] if "posterior_modes" in children else None
    n_modes = int(modes.attrs.get("n_modes", 1)) if modes is not None else 1
    if n_modes > 1 and "rhat" in modes:
        # Chains in different modes differ by construction; the report summarises each mode, and
        # R-hat is checked where it means something: among the chains of one mode.
        rhat, where = np.asarray(modes["rhat"].values, dtype=float), f"within each of {n_modes} modes"
        checks["n_modes"] = n_modes
    elif "label_switching" in children and "rhat_after" in children["label_switching"]:
        rhat, where = np.asarray(children["label_switching"]["rhat_after"].values, dtype=float), "after relabelling"
    else:
        rhat, where = np.array([]), ""
    rhat = rhat[np.isfinite(rhat)]
    if rhat.size:
        checks["max_rhat"] = float(rhat.max())
        if checks["max_rhat"] > RHAT_LIMIT:
            checks["failed"].append(f"R-hat {checks['max_rhat']:.3g} > {RHAT_LIMIT} ({where})")
    return checks


def run_spec(spec: dict, out_dir: Path | None = None, *, seed: int | None = None, command: str = "",
             progress=None, report: bool = True, data=None, scheduler: str | None = None,
             n_workers: int | None = None) -> RunOutcome:
    """Run a validated spec and write ``results.nc`` and ``index.html`` into ``out_dir``.

    ``report=False`` writes the results file only (``report_path`` is then where the page would go).
    ``data`` (a ``CoinData`` or ``ContinuousData``) is fitted instead of the data the spec names: the
    Python API passes its in-memory data this way, so no CSV file is written.
    ``scheduler`` / ``n_workers``: where a spec with ``[data] store`` runs its chunked EM (an existing Dask
    scheduler's address, else a LocalCluster of ``n_workers`` processes; :mod:`emvsbayes.store`).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    if seed is not None and not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**63):
        from emvsbayes.spec import SEED_RULE

        raise UserError(f"the seed must be {SEED_RULE}, got {seed!r}")
    if seed is None:
        seed = spec["seed"]
    if seed is None:
        # No seed given: draw one from the OS and record it, so the run can be repeated exactly.
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    seed = int(seed)
    seeds = child_seeds(seed)
    timings: dict[str, float] = {}
    from emvsbayes.sampling import check_compiler_environment

    check_compiler_environment()  # JAX reads its variables after EM: a bad one is refused before

    from emvsbayes.store import uses_store

    if uses_store(spec):
        return _run_store(spec, out_dir, seed, seeds, timings, command, progress, report, started, data, scheduler,
                          n_workers)
    if scheduler is not None or n_workers is not None:
        raise UserError("--scheduler and --workers are for a spec whose data are a store ([data] store = \"x.zarr\", "
                        "fitted by chunked EM on Dask); leave them out")
    # Everything that can be checked before fitting is checked before the output folder is touched.
    start = time.perf_counter()
    data = load_data(spec) if data is None else data
    timings["load"] = time.perf_counter() - start
    check_against_data(spec, data)
    if report:
        from emvsbayes.report.workers import wanted_workers

        wanted_workers()  # EMVSBAYES_PAGE_WORKERS checked before the output folder is touched
    family = get_family(spec["model"]["family"])
    limits.check_disk(out_dir, limits.results_need(spec, *family.data_shape(data)), "results.nc and index.html")
    # Held until the results and the page are published: one writer per folder, nothing it may not replace.
    with OutputFolder(out_dir, "run", owner=spec.get("name")) as folder:
        return _fit_and_publish(spec, data, seed, seeds, timings, command, progress, report, folder, started)


def _run_store(spec, out_dir, seed, seeds, timings, command, progress, report, started, data, scheduler,
               n_workers) -> RunOutcome:
    """A spec with ``[data] store``: its EM by chunks on a Dask cluster (:mod:`emvsbayes.store`). The store is
    checked (metadata, then one pass for damaged chunks, NaN, infinities and values beyond float64's reach) before the output folder is touched."""
    from emvsbayes.cluster import cluster_client
    from emvsbayes.store import check_store_values, fit_groups, open_store

    if data is not None:
        raise UserError("a spec with [data] store reads its data from the store; pass no data, or remove [data] store")
    if isinstance(spec["model"]["components"], list):
        raise UserError("[model] components must be one K for the comparison; put a range in [model_choice] components")
    limits.check_workers(n_workers)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    start = time.perf_counter()
    data = open_store(spec)
    timings["load"] = time.perf_counter() - start
    with cluster_client(None, scheduler, n_workers) as client:
        start = time.perf_counter()
        check_store_values(spec, data, client)
        timings["check"] = time.perf_counter() - start
        with OutputFolder(out_dir, "run", owner=spec.get("name")) as folder:
            return _fit_and_publish(spec, data, seed, seeds, timings, command, progress, report, folder, started,
                                    fit=lambda: fit_groups(spec, data, client, seeds, timings, progress))


def _fit_and_publish(spec, data, seed, seeds, timings, command, progress, report, folder, started,
                     fit=None) -> RunOutcome:
    """Fit (``fit()``, else the family's runner), write ``results.nc``, render the page, publish both."""
    out_dir = folder.folder
    from emvsbayes import runner  # here: a bad input exits before xarray
    from emvsbayes.results import build_tree, declare_parameters, write_results

    family = get_family(spec["model"]["family"])
    from emvsbayes.report.workers import page_workers

    # The page's drawing code is imported by the page workers on the other core while the run fits.
    with page_workers(report) as workers:
        groups = runner.run(family, spec, data, seeds, timings, progress) if fit is None else fit()
        declaration = declare_parameters(groups, family.parameters(family.model_from_spec(spec, data), data), family.name)

        attrs = {
            # A spec validated in memory (not read by load_spec) has no file name to fall back on.
            "title": spec["title"].strip() or spec.get("name") or "emvsbayes comparison",  # blank is none
            "spec_name": spec.get("name", ""),
            "spec": {k: v for k, v in spec.items() if k not in ("name", "path")},
            "spec_path": spec.get("path", ""),
            # the family and its parameters in report order (each parameter variable carries its label_dims)
            "family": family.name,
            "model_description": runner.FamilyView(family).describe(spec),
            "parameters": list(family.parameters(family.model_from_spec(spec, data), data)),
            "seed": seed,
            "seeds": seeds,
            "versions": package_versions(),
            "machine": machine_info(),
            "command": command or " ".join(sys.argv),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **declaration,
        }
        # Results and page are written into a fresh unit folder and published together (one rename).
        unit = folder.new_unit()
        results_path = out_dir / "results.nc"
        # The results file records the fitting stages; writing it and rendering the page come after.
        attrs["timings"] = timings
        # The sampler checks are recorded with the results; --strict reads them back from the file.
        checks = sampler_checks(groups)
        attrs["checks"] = {**checks, "passed": not checks["failed"]}
        start = time.perf_counter()
        # The file as written, read back once (its checksum is computed from that reading): the page is
        # rendered from what results.nc holds, without opening and hashing it a second time.
        tree = write_results(build_tree(groups, attrs), unit / "results.nc")
        written = time.perf_counter() - start

        report_path = out_dir / "index.html"
        if not report:
            folder.publish(unit)
            return RunOutcome(results_path, report_path, time.perf_counter() - started, tree)
        from emvsbayes.report import refresh_index, render_report_file

        # Writing the file comes after its timings were recorded: the page adds it (and its own time).
        render_report_file(tree, unit / "index.html", extra_timings={"write": written}, workers=workers)
        folder.publish(unit)
        # The reports index lists the runs under a reports/ folder (the default output place). It is a
        # convenience: a parent that cannot be written does not fail a run whose results and report are
        # written, and no index is written into any other folder a user points --out into.
        parent = out_dir.resolve().parent
        if parent.name == "reports" and not (parent / "results.nc").exists():
            try:
                refresh_index(parent, known={out_dir.resolve().name: tree})
            except OSError:
                pass
        return RunOutcome(results_path, report_path, time.perf_counter() - started, tree)


def rerender_report(results_path: Path, out: Path | None = None) -> Path:
    """``emvsbayes report``: render the page of a results file, without refitting; returns the page's path.

    The page beside a run's own results (the default) is published with them as a new unit (the same
    results file, linked, and the new page), so the folder's pair stays matched. Any other ``out`` is
    written only if it is absent or a page emvsbayes wrote: never over the results being read, another
    results file, an input or another run's page.
    """
    from emvsbayes.outputs import results_format
    from emvsbayes.results import STUDY_FORMAT, read_results

    results_path = Path(results_path)
    # Only a regular file is opened to look at its format: opening a FIFO would wait for a writer.
    if input_kind(results_path) is None and results_format(results_path) == STUDY_FORMAT:
        return _rerender_study(results_path, out)
    tree = read_results(results_path)
    from emvsbayes.report.workers import page_workers

    with page_workers() as workers:  # they import the drawing code while the checks below run
        return _rerender_run_page(tree, results_path, out, workers)


def _rerender_run_page(tree, results_path: Path, out: Path | None, workers) -> Path:
    from emvsbayes.report import render_report_file
    from emvsbayes.results import is_checked, read_results

    out, own_folder = _page_destination(results_path, out, "results")
    if own_folder:
        with OutputFolder(out.parent, "run") as held:
            unit = held.new_unit()
            link_or_copy((out.parent / "results.nc").resolve(), unit / "results.nc")
            # read again under the folder's lock: another run may have published new results since the read above
            tree = read_results(unit / "results.nc")
            with _unchecked_drawn_as_refusal(tree, results_path):
                render_report_file(tree, unit / "index.html", workers=workers if is_checked(tree) else None)
            held.publish(unit)
        return out
    try:
        with _unchecked_drawn_as_refusal(tree, results_path):
            render_report_file(tree, out, workers=workers if is_checked(tree) else None)
    except OSError as error:
        raise UserError(f"{out}: cannot write the report there ({why_not_writable(out, error)}); "
                        "choose another file with --out") from None
    return out


@contextlib.contextmanager
def _unchecked_drawn_as_refusal(tree, results_path: Path):
    """Around drawing the page of a results file. A file without its checksum may have been edited into
    something no run writes (a variable removed, a weight made negative) beyond what
    :func:`emvsbayes.results.read_results` checks: for such a file, a failure or a numerical warning while
    drawing it is the file's problem, reported in one line. (It is drawn here, not in the page workers, whose
    warnings this process would not see.) With the checksum in place, the file is as a run wrote it and a
    failure is a bug, shown as one."""
    from emvsbayes.results import is_checked

    if is_checked(tree):
        yield
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            yield
    except (UserError, OSError):
        raise
    except Exception as error:
        raise UserError(f"{results_path}: cannot be drawn ({type(error).__name__}: {error}); the file has no checksum, "
                        "so it was edited or not written by this emvsbayes; rerun the spec with 'emvsbayes run'") from None


def _rerender_study(study_path: Path, out: Path | None) -> Path:
    """``emvsbayes report study.nc``: the study's page again, as :func:`rerender_report` does a run's. In the
    study's own folder the page (and ``coverage.svg``) are published with the same study file as a new unit;
    elsewhere only the page is written (the figure is inlined in it), under the same ownership rules."""
    from emvsbayes.results import read_study

    ds = read_study(study_path)
    from emvsbayes.study.report import render_study_report  # after the checks: it imports matplotlib

    out, own_folder = _page_destination(study_path, out, "study")
    if own_folder:
        with OutputFolder(out.parent, "study") as held:
            unit = held.new_unit()
            link_or_copy((out.parent / "study.nc").resolve(), unit / "study.nc")
            # read again under the folder's lock: another study may have published since the read above
            render_study_report(read_study(unit / "study.nc"), unit / "index.html")
            held.publish(unit)
        return out
    try:
        render_study_report(ds, out, figure_file=False)
    except OSError as error:
        raise UserError(f"{out}: cannot write the report there ({why_not_writable(out, error)}); "
                        "choose another file with --out") from None
    return out


def _page_destination(source: Path, out: Path | None, what: str) -> tuple[Path, bool]:
    """Where ``emvsbayes report`` writes the page of ``source`` (a ``what`` file: "results" or "study"), and
    whether that is the page of ``source``'s own output folder (then published with the same file as a new
    unit). Refused: a folder, the file being read, a file emvsbayes did not write, another output's page."""
    out = Path(out) if out is not None else source.with_name("index.html")
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give the HTML file to write, e.g. --out {out / 'index.html'}")
    in_the_way = not_a_folder_above(out)
    if in_the_way:  # before the page is drawn: it could never be written there
        raise UserError(f"{out}: cannot write the report there ({in_the_way}); choose another file with --out")
    suggestion = f"choose another file with --out, e.g. --out {source.with_name('report.html')}"
    if META in Path(os.path.abspath(out)).parts:  # a page there grew a second .emvsbayes inside a published unit
        raise UserError(f"{out}: is inside {META}, the folder where emvsbayes keeps the published outputs, so emvsbayes "
                        f"will not write over it; {suggestion}")
    if _same_file(out, source):
        raise UserError(f"{out}: is the {what} file being read, so emvsbayes will not write the report over it; {suggestion}")
    folder = out.parent
    if out.name == "index.html" and _same_file(folder / f"{what}.nc", source) and META not in folder.resolve().parts:
        return out, True
    reason = foreign(out, "page")
    if reason:
        raise UserError(f"{out}: {reason}, so emvsbayes will not write over it; {suggestion}")
    if out.name in ("index.html", "results.nc", "study.nc") and (os.path.lexists(folder / "results.nc")
                                                                 or os.path.lexists(folder / "study.nc")):
        raise UserError(f"{out}: is the page of the outputs in {folder}, not of {source}; {suggestion}")
    return out, False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
