"""One comparison run: spec -> data -> both engines -> ``results.nc`` -> ``index.html``.

The model family's runner does the fitting; this module owns what every run shares: seeds (one
master seed, recorded even when none was given, spawned into one child per stage), timings, run
metadata, the output folder, atomic writes, and rendering the report from the written file.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from emvsbayes import data as datasets
from emvsbayes.errors import UserError
from emvsbayes.results import build_tree, read_results, write_results
from emvsbayes.spec import resolve_data_path

#: family -> module with ``run(spec, data, seeds, timings, progress) -> groups``.
FAMILY_RUNNERS = {"coins": "emvsbayes.coins.runner", "gaussian": "emvsbayes.gaussian.runner"}
#: stages that get their own child seed
SEED_STAGES = ("em", "sampler", "bootstrap", "data")
VERSIONED_PACKAGES = ("emvsbayes", "numpy", "scipy", "xarray", "pymc", "pytensor", "nutpie", "arviz",
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


def child_seeds(seed: int) -> dict[str, int]:
    """One independent integer seed per stage, derived from the master seed."""
    children = np.random.SeedSequence(seed).spawn(len(SEED_STAGES))
    return {stage: int(child.generate_state(1, dtype=np.uint32)[0]) for stage, child in zip(SEED_STAGES, children)}


def load_data(spec: dict):
    """The data a spec names: a bundled data set or a CSV file with the spec's column options."""
    data_spec = spec["data"]
    family = spec["model"]["family"]
    if data_spec["dataset"] is not None:
        names = [info.name for info in datasets.list_datasets()]
        if data_spec["dataset"] not in names:
            raise UserError(f"[data] dataset {data_spec['dataset']!r} is not bundled; 'emvsbayes datasets' lists: {', '.join(names)}")
        loaded = datasets.load_dataset(data_spec["dataset"], **_continuous_options(data_spec, dataset=True)) \
            if family == "gaussian" else datasets.load_dataset(data_spec["dataset"])
    else:
        path = resolve_data_path(spec)
        if family == "coins":
            loaded = datasets.load_coins_csv(path, heads=data_spec["heads"], tosses=data_spec["tosses"],
                                             label=data_spec["label"], encoding=data_spec["encoding"])
        else:
            loaded = datasets.load_continuous_csv(path, **_continuous_options(data_spec, dataset=False))
    kind_ok = hasattr(loaded, "heads") if family == "coins" else hasattr(loaded, "x")
    if not kind_ok:
        wanted = "heads and tosses" if family == "coins" else "continuous measurements"
        raise UserError(f"[data] {data_spec['dataset'] or data_spec['file']} does not hold {wanted} for the {family} model; pick a data set of that kind")
    return loaded


def _continuous_options(data_spec: dict, *, dataset: bool) -> dict:
    options = {}
    if data_spec["columns"] is not None:
        options["columns"] = data_spec["columns"]
    if data_spec["standardize"]:
        options["standardize"] = True
    if not dataset:
        options.update(encoding=data_spec["encoding"], label=data_spec["label"], percent=tuple(data_spec["percent"]),
                       categories=data_spec["categories"] or None, drop=tuple(data_spec["drop"]))
    return options


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{out_dir}: cannot write the report there ({error.strerror}); choose another folder with --out") from None


def run_spec(spec: dict, out_dir: Path | None = None, *, seed: int | None = None, command: str = "",
             progress=None) -> RunOutcome:
    """Run a validated spec and write ``results.nc`` and ``index.html`` into ``out_dir``."""
    started = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else Path("reports") / spec["name"]
    check_writable(out_dir)
    if seed is None:
        seed = spec["seed"]
    if seed is None:
        # No seed given: draw one from the OS and record it, so the run can be repeated exactly.
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    seeds = child_seeds(seed)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    data = load_data(spec)
    timings["load"] = time.perf_counter() - start

    runner = importlib.import_module(FAMILY_RUNNERS[spec["model"]["family"]])
    groups = runner.run(spec, data, seeds, timings, progress)

    attrs = {
        "title": spec["title"] or spec["name"],
        "spec_name": spec["name"],
        "spec": {k: v for k, v in spec.items() if k not in ("name", "path")},
        "spec_path": spec.get("path", ""),
        "seed": seed,
        "seeds": seeds,
        "versions": package_versions(),
        "machine": machine_info(),
        "command": command or " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results_path = out_dir / "results.nc"
    # The results file records the fitting stages; writing it and rendering the page come after.
    attrs["timings"] = timings
    write_results(build_tree(groups, attrs), results_path)

    from emvsbayes.report import refresh_index, render_report_file

    report_path = out_dir / "index.html"
    tree = read_results(results_path)
    render_report_file(tree, report_path)
    refresh_index(out_dir.parent)
    return RunOutcome(results_path, report_path, time.perf_counter() - started, tree)
