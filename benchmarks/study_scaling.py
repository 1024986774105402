"""The bundled coverage study on 1 and 2 Dask workers, this code against a baseline commit, side by side.

Issue 21 item 7: the bundled coverage study (``models/study_coverage_gmm.toml``, 4 cells x 8 replicates)
took 167 s on 1 worker and 127 s on 2 (0.66 of linear). Targets: scaling efficiency T1 / (2 T2) >= 0.85
from 1 to 2 workers, and the study at least 4x faster than the code of then.

Every configuration is ``emvsbayes study SPEC --workers N --out FRESH_DIR --quiet`` in its own
subprocess (a ``LocalCluster`` of N worker processes x 1 thread, as the command starts it), in a fresh
output folder; the wall time is the whole process (imports, cluster start, replicates, ``study.nc`` and
its page). Configurations:

- **this code** (the checkout this script belongs to), 1 and 2 workers, with **warm** caches (a private
  set of cache directories, primed by the first cold run) and **cold** ones (fresh directories: the
  program cache ``EMVSBAYES_PROGRAM_CACHE_DIR``, JAX's ``JAX_COMPILATION_CACHE_DIR``, PyTensor's
  ``base_compiledir`` and ``NUMBA_CACHE_DIR``);
- **the baseline** (``--baseline COMMIT``, default ``ebfa74d``: the last commit before the batched
  bootstrap and before studies sampled on exported programs; studies then compiled nutpie per cell and
  worker), checked out with ``git worktree add`` into a temporary folder and run with ``PYTHONPATH``
  pointing at it in the same venv, 1 and 2 workers with its own warm caches (``--baseline-cold`` adds
  cold runs).

Configurations are interleaved round by round (``--rounds``), so load from other work falls on all of
them alike; the load average is printed beside every run. Printed per configuration: the median wall
time, the study's own seconds (``study.nc``'s ``seconds``: from the start of ``run_study``, cluster start
included), and the per-stage sums over the 32 replicates the study records (``time_em``, ``time_wald``, ``time_bootstrap``,
``time_compile``, ``time_sampling``, ``time_total``, from ``study.nc``). Then the scaling efficiency
T1 / (2 T2) of each code and cache state, and the speed-up baseline / this at 1 and 2 workers, with the
targets beside them.

Run: ``.venv/bin/python benchmarks/study_scaling.py [--rounds 2] [--baseline ebfa74d] [--baseline-cold]``
(``--skip-baseline`` for this code only, ``--baseline-rounds 1`` for the baseline in the first round only;
``--workdir DIR`` keeps the baseline's checkout and both codes' warm caches there for a later run: remove the
checkout with ``git worktree remove DIR/baseline-code`` when done).
The CPU column is user + system time of the whole process tree (client, cluster, workers): it moves far
less with other work on the machine than wall time does, and its ratio 2 workers / 1 worker shows the
start-up work every worker repeats.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = "models/study_coverage_gmm.toml"
BASELINE = "ebfa74d"
EFFICIENCY_TARGET = 0.85
SPEEDUP_TARGET = 4.0
STAGES = ("em", "wald", "bootstrap", "compile", "sampling", "total")


def cache_env(cache: Path) -> dict[str, str]:
    return {
        "PYTENSOR_FLAGS": f"base_compiledir={cache / 'pytensor'}",
        "NUMBA_CACHE_DIR": str(cache / "numba"),
        "JAX_COMPILATION_CACHE_DIR": str(cache / "jax"),
        "EMVSBAYES_PROGRAM_CACHE_DIR": str(cache / "programs"),
    }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_study(code: Path, spec: Path, workers: int, cache: Path, out: Path) -> dict:
    """One whole ``emvsbayes study`` process; its wall time and what its study.nc recorded."""
    env = dict(os.environ) | cache_env(cache) | {"PYTHONPATH": str(code)}
    # A folder left by an earlier run of this script in the same --workdir holds every replicate: the study
    # would resume, compute nothing and be timed at a few seconds.
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()[0]
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "emvsbayes", "study", str(spec), "--workers", str(workers),
                           "--out", str(out), "--quiet"], env=env, capture_output=True, text=True, cwd=code)
    wall = time.perf_counter() - start
    result = {"wall": wall, "cpu": _children_cpu() - cpu, "load": (load_before + os.getloadavg()[0]) / 2}
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        result["error"] = (lines[-1] if lines else f"exit status {proc.returncode}")[:300]
        return result
    import numpy as np
    import xarray as xr

    with xr.open_dataset(out / "study.nc", engine="h5netcdf") as ds:
        result["seconds"] = float(ds.attrs.get("seconds", np.nan))
        result["workers"] = int(ds.attrs.get("workers", 0))
        result["n_ok"] = int((ds["status"] == 1).sum())
        result["stages"] = {s: float(ds[f"time_{s}"].sum()) if f"time_{s}" in ds else float("nan") for s in STAGES}
        result["processes"] = len(set(np.asarray(ds["worker"]).ravel()) - {""}) if "worker" in ds else 0
        # Phases: outside the study's own seconds (interpreter start, imports, then writing study.nc and
        # rendering its page: ``seconds`` is taken before those), from run_study's start until the last
        # record arrived (spec, cluster start, workers' start-up, replicates) and from then to assembling
        # the Dataset; the busiest worker's replicate seconds (time_total summed per worker process).
        result["before"] = wall - result["seconds"]
        last = float(np.nanmax(ds["invocation_arrival"])) if "invocation_arrival" in ds else np.nan
        result["until_last"] = last
        result["after"] = result["seconds"] - last
        per_worker: dict[str, float] = {}
        for who, seconds in zip(np.asarray(ds["worker"]).ravel(), np.asarray(ds["time_total"]).ravel()):
            per_worker[who] = per_worker.get(who, 0.0) + float(seconds)
        result["busiest"] = max(per_worker.values())
    return result


def summary(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error", "no run") if runs else "no run"}
    med = lambda key: statistics.median(r[key] for r in ok)  # noqa: E731
    phases = {key: statistics.median(r.get(key, float("nan")) for r in ok)
              for key in ("before", "until_last", "after", "busiest")}
    return {"wall": med("wall"), "seconds": med("seconds"), "cpu": med("cpu"), "load": med("load"), "phases": phases,
            "walls": [r["wall"] for r in ok], "n_ok": ok[0]["n_ok"], "processes": ok[0]["processes"],
            "stages": {s: statistics.median(r["stages"][s] for r in ok) for s in STAGES}}


def line(name: str, s: dict) -> str:
    if "error" in s:
        return f"{name:<24} FAILED: {s['error']}"
    walls = ", ".join(f"{w:.1f}" for w in s["walls"])
    stages = "  ".join(f"{s['stages'][k]:7.1f}" for k in STAGES)
    return (f"{name:<24} {s['wall']:7.1f} {s['seconds']:7.1f} {s['cpu']:7.1f} | {stages} | {s['n_ok']:3d} "
            f"{s['processes']:2d} | load {s['load']:4.1f} | walls {walls}")


def ratio_line(what: str, value: float, target: float) -> str:
    verdict = "met" if value >= target else "MISSED"
    return f"{what:<48} {value:6.2f}   (target >= {target:g}: {verdict})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=SPEC)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each runs every configuration once)")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare against")
    parser.add_argument("--baseline-cold", action="store_true", help="also run the baseline with cold caches")
    parser.add_argument("--baseline-rounds", type=int, default=None,
                        help="run the baseline in the first N rounds only (default: every round)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--no-cold", action="store_true", help="this code with warm caches only")
    parser.add_argument("--workdir", type=Path, default=None, help="where caches and outputs go (default: a temporary folder)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="study-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    baseline_code = work / "baseline-code"
    codes = {"this": ROOT}
    if not args.skip_baseline:
        if not baseline_code.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline_code), args.baseline],
                           check=True, capture_output=True)
        codes["baseline"] = baseline_code

    # (code, caches, workers); 1 and 2 workers of one code and cache state run one after the other.
    configs: list[tuple[str, str, int]] = []
    for caches in ("warm", "cold"):
        for code in codes:
            colds = code == "this" and not args.no_cold or code == "baseline" and args.baseline_cold
            if caches == "warm" or colds:
                configs += [(code, caches, 1), (code, caches, 2)]
    runs: dict[tuple[str, str, int], list[dict]] = {c: [] for c in configs}
    # The baseline's warm caches from an earlier run of this script in the same --workdir are warm already (its
    # code is a fixed commit); this code's are primed again: its stored programs are keyed by a digest of every
    # emvsbayes module, so after any change the first run would rebuild them inside a timed run.
    primed: set[str] = {code for code in codes if code == "baseline" and (work / f"cache-warm-{code}").exists()}
    counter = 0
    print(f"spec {args.spec}; baseline {args.baseline}; work folder {work}; CPUs {os.cpu_count()}", flush=True)
    try:
        for round_ in range(args.rounds):
            for code, caches, workers in configs:
                if code == "baseline" and args.baseline_rounds is not None and round_ >= args.baseline_rounds:
                    continue
                counter += 1
                if caches == "warm" and code not in primed:
                    # The warm caches are primed by one untimed run (or by the first cold run, below).
                    print(f"priming warm caches of {code} ...", flush=True)
                    run_study(codes[code], codes[code] / args.spec, 1, work / f"cache-warm-{code}", work / f"out-prime-{code}")
                    primed.add(code)
                cache = work / f"cache-warm-{code}" if caches == "warm" else work / f"cache-cold-{counter}"
                if caches == "cold" and code not in primed:
                    cache = work / f"cache-warm-{code}"  # the first cold run fills the warm caches
                    primed.add(code)
                result = run_study(codes[code], codes[code] / args.spec, workers, cache, work / f"out-{counter}")
                if caches == "cold" and cache.name.startswith("cache-cold"):
                    shutil.rmtree(cache, ignore_errors=True)
                runs[(code, caches, workers)].append(result)
                shown = result.get("error") or f"{result['wall']:.1f} s (study {result['seconds']:.1f} s)"
                print(f"round {round_ + 1}: {code:<8} {caches} caches, {workers} worker(s): {shown}; "
                      f"load {result['load']:.1f}", flush=True)
    finally:
        if baseline_code.exists() and args.workdir is None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_code)], capture_output=True)

    sums = {c: summary(r) for c, r in runs.items()}
    print(f"\nmedian of {args.rounds} round(s); seconds; stage columns are sums over the replicates (study.nc time_*)")
    print(f"{'configuration':<24} {'wall':>7} {'study':>7} {'CPU':>7} | "
          + "  ".join(f"{k[:7]:>7}" for k in STAGES) + " |  ok procs")
    for (code, caches, workers), s in sums.items():
        print(line(f"{code} {caches} {workers}w", s))
    print("\nphases (median s): outside the study's seconds (start-up, study.nc, page) | until the last record "
          "arrived | then to the Dataset | busiest worker's replicates")
    for (code, caches, workers), s in sums.items():
        if "error" not in s:
            ph = s["phases"]
            print(f"{code} {caches} {workers}w".ljust(24) + f"{ph['before']:7.1f} | {ph['until_last']:7.1f} | "
                  f"{ph['after']:7.1f} | {ph['busiest']:7.1f}")
    print()
    for code in codes:
        for caches in ("warm", "cold"):
            one, two = sums.get((code, caches, 1)), sums.get((code, caches, 2))
            if one and two and "error" not in one and "error" not in two:
                print(ratio_line(f"{code} {caches}: efficiency T1 / (2 T2), whole process", one["wall"] / (2 * two["wall"]),
                                 EFFICIENCY_TARGET))
                print(f"{'':<48} {one['seconds'] / (2 * two['seconds']):6.2f}   (study seconds)")
                print(f"{'':<48} {two['cpu'] / one['cpu']:6.2f}   (CPU seconds 2 workers / 1 worker: work the "
                      f"second worker repeats)")
    for workers in (1, 2):
        for caches in ("warm", "cold"):
            base, this = sums.get(("baseline", caches, workers)), sums.get(("this", caches, workers))
            if base and this and "error" not in base and "error" not in this:
                print(ratio_line(f"speed-up baseline / this, {caches}, {workers} worker(s)", base["wall"] / this["wall"],
                                 SPEEDUP_TARGET))
        base, this = sums.get(("baseline", "warm", workers)), sums.get(("this", "cold", workers))
        if base and this and "error" not in base and "error" not in this:
            print(ratio_line(f"speed-up baseline warm / this cold, {workers} w", base["wall"] / this["wall"], SPEEDUP_TARGET))


if __name__ == "__main__":
    main()
