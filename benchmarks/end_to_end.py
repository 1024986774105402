"""Whole `emvsbayes run` per bundled comparison spec, with cold and then warm compile caches.

For every ``models/*.toml`` except ``study_*`` and ``sbc_*``: ``emvsbayes run SPEC --quiet --out TMP`` in a
subprocess, first with fresh cache directories (cold: PyTensor's ``base_compiledir``, which holds PyMC's C
code and nutpie's numba code, ``NUMBA_CACHE_DIR``, JAX's persistent compilation cache, where numpyro's
compiled samplers go, and ``EMVSBAYES_PROGRAM_CACHE_DIR``, where emvsbayes stores their exported programs),
then again with the same directories (warm: the sampler is loaded, not built).
Printed: both wall times and CPU times (user + system of the process), how many files the compile directory gained in each run (0 in the warm run =
nothing recompiled), and the per-stage seconds the run records in ``results.nc`` (root attribute
``timings``, JSON), with the share of the EM bootstrap (the ``em_uncertainty`` stage: standard errors +
bootstrap replicates) and of sampling.

Then the start-up of commands that fit nothing (``--startup-repeats``, minimum printed): ``emvsbayes
datasets`` and a spec with a misspelt key (``--quiet``), which exit before any heavy import
(tests/test_startup_imports.py guards which libraries they import).

Targets: lecture_coins under 5 s warm and under 20 s cold (issue 21, item 2).

``--reference-code DIR`` (a checkout of the code to compare against, e.g. ``git worktree add /tmp/ref
main``): each spec is also run warm with ``PYTHONPATH=DIR`` on the same caches, interleaved with this
code's warm runs, and the EM uncertainty stage (standard errors + bootstrap) and the whole process of
both are printed with their ratios.

Run: ``.venv/bin/python benchmarks/end_to_end.py [--specs lecture_coins two_coins ...] [--warm-repeats 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMVSBAYES = Path(sys.executable).parent / "emvsbayes"
TARGETS = {"lecture_coins": (20.0, 5.0)}  # spec -> (cold, warm) seconds


def bundled_specs() -> list[str]:
    return sorted(p.stem for p in (ROOT / "models").glob("*.toml")
                  if not p.stem.startswith(("study_", "sbc_")))


def count_files(directory: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(directory)) if directory.exists() else 0


def run_spec(spec: str, cache: Path, out: Path, code: Path | None = None) -> dict:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    env["PYTENSOR_FLAGS"] = f"base_compiledir={cache / 'pytensor'}"
    env["NUMBA_CACHE_DIR"] = str(cache / "numba")
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache / "jax")
    env["EMVSBAYES_PROGRAM_CACHE_DIR"] = str(cache / "programs")
    before = count_files(cache)
    start, used = time.perf_counter(), _children_cpu()
    proc = subprocess.run([str(EMVSBAYES), "run", str(ROOT / "models" / f"{spec}.toml"), "--quiet", "--out", str(out)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    result = {"wall": wall, "cpu": _children_cpu() - used, "new_files": count_files(cache) - before}
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        result["error"] = (lines[-1] if lines else f"exit status {proc.returncode}")[:300]
        return result
    import xarray as xr

    with xr.open_datatree(out / "results.nc") as tree:
        result["timings"] = json.loads(tree.attrs["timings"])
        result["sampler"] = str(tree["posterior"].attrs.get("sampler", "-")) if "posterior" in tree.children else "-"
    return result


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes: on a machine others load, a process's CPU
    time moves far less than its wall time, so both are printed."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_seconds(args: list[str], repeats: int) -> float:
    """Fastest of ``repeats`` whole processes of ``emvsbayes ARGS`` (exit status 0 or 2)."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([str(EMVSBAYES), *args], capture_output=True, text=True, cwd=ROOT)
        walls.append(time.perf_counter() - start)
        assert proc.returncode in (0, 2), proc.stderr
    return min(walls)


def stage_line(timings: dict, wall: float) -> str:
    parts = sorted(timings.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {sec:.1f} s ({100 * sec / wall:.0f} %)" for name, sec in parts if sec >= 0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=bundled_specs())
    parser.add_argument("--warm-repeats", type=int, default=1)
    parser.add_argument("--reference-code", type=Path, default=None,
                        help="a checkout of the code to compare against (warm runs, PYTHONPATH=DIR)")
    parser.add_argument("--startup-repeats", type=int, default=5, help="0 to skip the start-up lines")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"command: {EMVSBAYES} run models/SPEC.toml --quiet --out TMP")
    header = (f"{'spec':<15} {'sampler':<7} | {'cold s':>7} {'CPU s':>6} {'new files':>9} | {'warm s':>7} {'CPU s':>6} "
              f"{'new files':>9} | "
              f"{'bootstrap share':>15} {'sampling share':>14} | target")
    rows, details, comparisons = [], [], []
    with tempfile.TemporaryDirectory(prefix="emvsbayes-e2e-") as root:
        for spec in args.specs:
            cache = Path(root) / spec / "cache"
            cache.mkdir(parents=True)
            cold = run_spec(spec, cache, Path(root) / spec / "cold")
            warms, references = [], []
            for i in range(args.warm_repeats):
                warms.append(run_spec(spec, cache, Path(root) / spec / f"warm{i}", ROOT))
                if args.reference_code is not None:
                    references.append(run_spec(spec, cache, Path(root) / spec / f"reference{i}", args.reference_code))
            warm = min(warms, key=lambda r: r["wall"])
            if references:
                comparisons.append(compare_line(spec, warm, min(references, key=lambda r: r["wall"])))
                print(comparisons[-1], flush=True)
            if "error" in cold or "error" in warm:
                rows.append(f"{spec:<15} FAILED: {cold.get('error') or warm.get('error')}")
                print(rows[-1], flush=True)
                continue
            t = warm["timings"]
            boot = t.get("em_uncertainty", 0.0)
            sampling = t.get("sampling_total", 0.0)
            target = ""
            if spec in TARGETS:
                cold_t, warm_t = TARGETS[spec]
                target = (f"cold < {cold_t:.0f}: {'ok' if cold['wall'] < cold_t else 'MISSED'}, "
                          f"warm < {warm_t:.0f}: {'ok' if warm['wall'] < warm_t else 'MISSED'}")
            rows.append(f"{spec:<15} {warm['sampler']:<7} | {cold['wall']:>7.1f} {cold['cpu']:>6.1f} {cold['new_files']:>9d} | "
                        f"{warm['wall']:>7.1f} {warm['cpu']:>6.1f} {warm['new_files']:>9d} | {100 * boot / warm['wall']:>14.0f}% "
                        f"{100 * sampling / warm['wall']:>13.0f}% | {target}")
            print(rows[-1], flush=True)
            details.append(f"{spec} cold: {stage_line(cold['timings'], cold['wall'])}")
            details.append(f"{spec} warm: {stage_line(warm['timings'], warm['wall'])}")
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print("\nper-stage seconds from results.nc (timings; shares of the whole process; stages nest: "
          "sampling is inside sampling_total; the rest of the wall time is start-up, imports and writing):")
    print("\n".join(details))
    if args.startup_repeats:
        with tempfile.TemporaryDirectory(prefix="emvsbayes-startup-") as root:
            misspelt = Path(root) / "misspelt.toml"
            misspelt.write_text('[data]\ndataset = "coins_lecture"\n[model]\nfamily = "coins"\ncomponets = 2\n')
            bad_run = ["run", str(misspelt), "--quiet", "--out", str(Path(root) / "out")]
            print(f"\nstart-up, fastest of {args.startup_repeats}: "
                  f"datasets {startup_seconds(['datasets'], args.startup_repeats):.2f} s, "
                  f"misspelt spec (exit 2) {startup_seconds(bad_run, args.startup_repeats):.2f} s")
    if comparisons:
        print("\nagainst the reference code (warm, best of --warm-repeats each):")
        print("\n".join(comparisons))


def compare_line(spec: str, mine: dict, reference: dict) -> str:
    if "error" in mine or "error" in reference:
        return f"{spec:<15} FAILED: {mine.get('error') or reference.get('error')}"
    ours, theirs = mine["timings"].get("em_uncertainty", 0.0), reference["timings"].get("em_uncertainty", 0.0)
    return (f"{spec:<15} EM uncertainty {theirs:.2f} s -> {ours:.2f} s ({theirs / max(ours, 1e-9):.1f}x); "
            f"whole process {reference['wall']:.1f} s -> {mine['wall']:.1f} s ({reference['wall'] / mine['wall']:.2f}x); "
            f"CPU {reference['cpu']:.1f} s -> {mine['cpu']:.1f} s ({reference['cpu'] / max(mine['cpu'], 1e-9):.2f}x)")


if __name__ == "__main__":
    main()
