"""emvsbayes's Gaussian-mixture EM against scikit-learn's, in one process.

For each (N, D, K): the same seeded data, the same initial parameters (scikit-learn gets them as
weights_init / means_init / precisions_init), the same number of M-steps (tol = 0, max_iter fixed).
Reported: seconds per iteration of each (whole fit divided by iterations, so set-up is included and
amortised), their ratio, the relative difference of the final log-likelihoods (ours at the returned
parameters; scikit-learn's from ``score`` at its returned parameters), and the peak memory each
allocates during the fit (tracemalloc, in a separate shorter run, since tracing slows allocation).
Both are timed alike: after one warm-up fit of each on small data (imports and thread start-up are
not per-iteration costs), and a fit shorter than ``SHORT_FIT`` seconds is timed ``REPEATS`` times and
the best kept (a single 50 ms fit is at the mercy of the scheduler).
Target: ours / scikit-learn <= 0.1 at every size.

Then EM against two floors, at N = 1e7 with D = 2, K = 3 and with D = 10, K = 8 (``FLOOR_CASES``):

- the memory-bandwidth floor: an iteration must at least read the data once and write and read the
  N x K responsibilities, 8 N (D + 2K) bytes. The machine's streaming bandwidth is measured here (numpy
  copies of 512 MB arrays, 1 and 2 threads, counting read + write bytes; and a 2-thread sum, read only)
  and the floor is that byte count over the best bandwidth.
- the exp/log floor: a soft E-step must exponentiate at least K - 1 scores per point (the scores
  relative to one component; that component's exponential is 1) and take one log per point (its
  log-normaliser), N (K - 1) exp + N log. Timed as numpy's ``np.exp`` over an array of N (K - 1) float64
  (in place, ``out=``) plus ``np.log`` over N, split over the same 2 threads the E-step uses, best of
  ``REPEATS``. On a CPU without AVX-512 numpy's exp is several times slower per value, and this floor,
  not memory, is the bound (the CPU model and its vector extensions are printed for that reason).

Ours per iteration is the marginal cost (fit with 1 + n iterations minus fit with 1, ``tol=0``,
``min_iter`` = ``max_iter``, so set-up such as standardising the data is not counted), printed as a
ratio to both floors. Target (issue 21): within 3x the memory floor. Also printed: the multiply-adds the
E-step's two matrix products need per point, F (2K - 1) for the design's F rows (scores of K - 1
components, weighted sums of K), and the rate they ran at. ``--chunk-values A B`` times the fit with
blocks of A (then B) float64 values too (rows = values / (F + 3K + D), the package's rule with another
``CHUNK_VALUES``), in the same run, so block sizes compare as ratios under the same load.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set in the environment, pin OpenBLAS to a slower kernel
and cache size; this script then re-executes itself without them (only this process) and says so.
The BLAS that threadpoolctl reports is printed. ``--without-avx512`` instead re-executes it as on a
CPU without AVX-512 (numpy's AVX-512 loops switched off by ``NPY_DISABLE_CPU_FEATURES``, OpenBLAS's
Haswell kernel), the other kind of machine issue 21 measured.

Run: ``.venv/bin/python benchmarks/em_vs_sklearn.py [--iterations 10] [--covariance-type full]
[--floor-only] [--no-floor] [--floor-cases 2:3 10:8] [--chunk-values ...] [--without-avx512]``.
scikit-learn is only needed here and in the tests.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CASES = [(100_000, 2, 3), (1_000_000, 1, 3), (1_000_000, 2, 3), (1_000_000, 10, 8), (10_000_000, 2, 3)]
FLOOR_CASES = [(10_000_000, 2, 3), (10_000_000, 10, 8)]
# The vector extensions that decide how fast numpy's exp and log are (and which OpenBLAS kernel runs).
VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f")
# Values per block of the in-cache exp/log floor: 512 kB, well inside a core's L2 (2 MB here).
IN_CACHE_VALUES = 1 << 16
SHORT_FIT = 2.0
REPEATS = 5
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# --without-avx512: numpy's AVX-512 loops switched off (its runtime dispatch reads this variable at import)
# and OpenBLAS on its Haswell (AVX2) kernel, as on a CPU without AVX-512.
# The fused E-step (numba) compiled for Haswell too (AVX2 and FMA; numba keeps its cache per target CPU).
# NUMBA_CPU_FEATURES too: with the name alone numba keeps the host's features, AVX-512 included, and LLVM
# then emitted 512-bit code (3.3 ns a row at D = 2, K = 3 where AVX2 code takes 5.0; the figures with
# --without-avx512 before 2026-12-03 23:00 UTC were of that code).
WITHOUT_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Haswell",
                  "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,+fma,-avx512f"}


def make_data(n: int, dim: int, k: int, seed: int = 0) -> np.ndarray:
    """K Gaussian clusters with random centres and correlated covariances; seeded."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(k, dim))
    factors = rng.normal(0, 0.5, size=(k, dim, dim)) + np.eye(dim)
    labels = rng.integers(0, k, size=n)
    noise = rng.normal(size=(n, dim))
    if n * dim * dim <= 10**8:
        return centres[labels] + np.einsum("nd,nde->ne", noise, factors[labels])
    # Component by component: factors[labels] would take N D^2 floats (8 GB at N = 1e7, D = 10).
    x = np.empty((n, dim))
    for j in range(k):
        rows = labels == j
        x[rows] = centres[j] + noise[rows] @ factors[j]
    return x


def initial(x: np.ndarray, k: int, covariance_type: str, seed: int = 1):
    """Equal weights, K random data points as means, the data's precision per coordinate."""
    rng = np.random.default_rng(seed)
    dim = x.shape[1]
    mu = x[rng.choice(x.shape[0], size=k, replace=False)]
    prec_diag = 1.0 / x.var(axis=0)
    prec = {
        "full": np.broadcast_to(np.diag(prec_diag), (k, dim, dim)).copy(),
        "tied": np.diag(prec_diag),
        "diag": np.broadcast_to(prec_diag, (k, dim)).copy(),
        "spherical": np.full(k, prec_diag.mean()),
    }[covariance_type]
    return np.full(k, 1.0 / k), mu, prec


def run_ours(x, k, covariance_type, w, mu, prec, iterations, chunk_size=None):
    from emvsbayes.gaussian import GaussianMixtureModel, GaussianParams, fit

    model = GaussianMixtureModel(k, covariance_type)
    init = GaussianParams.from_precisions(w, mu, prec, covariance_type)
    result = fit(model, x, init, tol=0.0, min_iter=iterations, max_iter=iterations, keep_stats=False,
                 chunk_size=chunk_size)
    assert result.n_iter == iterations, (result.n_iter, iterations)
    return result.loglik


def run_sklearn(x, k, covariance_type, w, mu, prec, iterations):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            k,
            covariance_type=covariance_type,
            tol=0.0,
            max_iter=iterations,
            weights_init=w,
            means_init=mu,
            precisions_init=prec,
        ).fit(x)
    return gm


def timed(fn, *args):
    gc.collect()
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def cpu_timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all the process's threads) of ``fn(*args)``."""
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - start, time.process_time() - start_cpu


def best_timed(fn, *args):
    out, best = timed(fn, *args)
    if best < SHORT_FIT:
        best = min([best] + [timed(fn, *args)[1] for _ in range(REPEATS - 1)])
    return out, best


def peak_bytes(fn, *args) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def stream_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> dict[str, float]:
    """Streaming bandwidth in bytes/s: copy (read + write counted) with 1 and 2 threads, sum (read) with 2."""
    n = n_bytes // 8
    src = np.random.default_rng(0).random(n)
    dst = np.empty_like(src)
    halves = [slice(0, n // 2), slice(n // 2, n)]
    out = {}
    out["copy, 1 thread"] = 2 * n_bytes / _best_of(lambda: np.copyto(dst, src), repeats)
    with ThreadPoolExecutor(2) as pool:
        # numpy releases the GIL inside copies and reductions, so two threads stream concurrently.
        out["copy, 2 threads"] = 2 * n_bytes / _best_of(
            lambda: list(pool.map(lambda h: np.copyto(dst[h], src[h]), halves)), repeats)
        out["sum, 2 threads"] = n_bytes / _best_of(lambda: list(pool.map(lambda h: src[h].sum(), halves)), repeats)
    return out


def blas_report() -> str:
    from threadpoolctl import threadpool_info

    parts = [f"{p.get('internal_api')} {p.get('version')} kernel={p.get('architecture')} threads={p.get('num_threads')}"
             for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def cpu_report() -> str:
    """The CPU model and which of ``VECTOR_FLAGS`` it has, from /proc/cpuinfo (Linux)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "CPU: /proc/cpuinfo not readable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    have = ", ".join(f"{flag} {'yes' if flag in flags else 'NO'}" for flag in VECTOR_FLAGS)
    disabled = os.environ.get("NPY_DISABLE_CPU_FEATURES")
    numpy_loops = f"numpy's loops without {disabled}" if disabled else "numpy's loops: all the CPU has"
    return f"CPU: {fields.get('model name', 'unknown')}; {have}; {numpy_loops}"


def e_step_report(ct: str) -> str:
    """Which route the soft E-step takes here (emvsbayes.gaussian.estep_fast.fused_pays) and what numba compiles
    the fused kernels for."""
    import llvmlite.binding
    import numba

    from emvsbayes.gaussian import estep_fast, fused_unrolled

    target = os.environ.get("NUMBA_CPU_NAME") or f"host ({llvmlite.binding.get_host_cpu_name()})"
    avx512 = estep_fast.numpy_exp_is_avx512()
    generated = (f"the kernel generated per (D, K) from {fused_unrolled.MIN_ROWS:,} rows (D <= "
                 f"{fused_unrolled.MAX_FEATURES}, K <= {fused_unrolled.MAX_COMPONENTS})")
    if ct not in estep_fast.FUSED_FORMS:
        route = "the numpy route"
    elif avx512:
        route = f"{generated}, else the numpy route (numpy has its AVX-512 exp here)"
    else:
        route = f"{generated}, else the generic fused kernel, for D <= {estep_fast.FUSED_MAX_FEATURES}"
    return (f"E-step ({ct}): {route}; numba {numba.__version__}, compiled for {target}, "
            f"{numba.get_num_threads()} threads; kernels cached in {fused_unrolled.kernel_dir()}")


def kernel_start(dim: int, k: int, n: int) -> str:
    """Seconds to compile the fused kernels for (D, K), or load them from numba's cache, counted apart from the
    iterations (the benchmark's warm-up fit pays them)."""
    from emvsbayes.gaussian import fused, fused_unrolled

    start = time.perf_counter()
    data = np.random.default_rng(3).normal(size=(dim, 2 * fused.BLOCK_ROWS))
    u_t = np.broadcast_to(np.eye(dim), (k, dim, dim)).copy()
    generated = fused_unrolled.pays(dim, k, n)
    # the kernel the fit at N rows takes, on a few rows
    min_rows, fused_unrolled.MIN_ROWS = fused_unrolled.MIN_ROWS, 0 if generated else 1 << 62
    try:
        fused.soft_full_sums(data, np.zeros((k, dim)), u_t, np.zeros(k), False)
    finally:
        fused_unrolled.MIN_ROWS = min_rows
    kind = "generated" if generated else "generic"
    return f"{kind} fused kernel for D = {dim}, K = {k}: compiled or loaded in {time.perf_counter() - start:.2f} s"


def exp_log_floor(n: int, k: int, repeats: int = REPEATS) -> dict[str, float]:
    """Seconds for N (K - 1) exp and N log in float64 (best of ``repeats``): over whole arrays of that size
    (``out=``, on 1 and 2 threads, their memory traffic included), and in cache (the same count as passes
    over one block of ``IN_CACHE_VALUES`` on each of 2 threads, as the E-step's blocks are: arithmetic
    alone).

    The values are those a converging E-step exponentiates (differences of log-joints within a few tens,
    mostly negative) and logs (normalisers between 1 and K): numpy's exp and log are slower outside their
    fast range (underflow, subnormals), which the E-step avoids too.
    """
    rng = np.random.default_rng(2)
    scores = rng.uniform(-30.0, 5.0, size=n * (k - 1))
    totals = rng.uniform(1.0, float(k), size=n)
    work = np.empty_like(scores)
    logs = np.empty_like(totals)

    def one(part: int, parts: int) -> None:
        a, b = part * scores.size // parts, (part + 1) * scores.size // parts
        np.exp(scores[a:b], out=work[a:b])
        a, b = part * n // parts, (part + 1) * n // parts
        np.log(totals[a:b], out=logs[a:b])

    def in_cache(part: int) -> None:
        block = slice(part * IN_CACHE_VALUES, (part + 1) * IN_CACHE_VALUES)
        for _ in range(n * (k - 1) // (2 * IN_CACHE_VALUES)):
            np.exp(scores[block], out=work[block])
        for _ in range(n // (2 * IN_CACHE_VALUES)):
            np.log(totals[block], out=logs[block])

    from emvsbayes.gaussian import fused

    fused_block = np.minimum(scores[:IN_CACHE_VALUES], 0.0)
    fused.exp_nonpositive(fused_block, work[:IN_CACHE_VALUES])  # compiled or loaded before timing

    def fused_in_cache(part: int) -> None:
        for _ in range(n * (k - 1) // (2 * IN_CACHE_VALUES)):
            fused.exp_nonpositive(fused_block, work[part * IN_CACHE_VALUES : (part + 1) * IN_CACHE_VALUES])

    out = {"1 thread": _best_of(lambda: one(0, 1), repeats)}
    with ThreadPoolExecutor(2) as pool:
        out["2 threads"] = _best_of(lambda: list(pool.map(lambda part: one(part, 2), range(2))), repeats)
        out["in cache, 2 threads"] = _best_of(lambda: list(pool.map(in_cache, range(2))), repeats)
        # The fused E-step's own exp (emvsbayes.gaussian.fused.exp_le0) over the same N (K - 1) values, no log.
        out["fused kernel's exp alone, in cache, 2 threads"] = _best_of(
            lambda: list(pool.map(fused_in_cache, range(2))), repeats)
    return out


def memory_floor(ct: str, iterations: int, chunk_values=(None,)) -> None:
    from emvsbayes.gaussian.structures import STRUCTURES

    bandwidth = stream_bandwidth()
    best_name = max(bandwidth, key=bandwidth.get)
    print()
    print(cpu_report())
    print(e_step_report(ct))
    print("memory floor: " + ", ".join(f"{name} {bw / 1e9:.1f} GB/s" for name, bw in bandwidth.items()))
    for n, dim, k in FLOOR_CASES:
        floor_bytes = 8 * n * (dim + 2 * k)
        floor = floor_bytes / bandwidth[best_name]
        arithmetic = exp_log_floor(n, k)
        exp_floor = min(arithmetic["1 thread"], arithmetic["2 threads"])
        fused_exp = arithmetic["fused kernel's exp alone, in cache, 2 threads"]
        cache_floor = arithmetic["in cache, 2 threads"]
        # A case's iterations take about D^2 K / 12 times as long as the first case's: fewer of them.
        case_iterations = max(2, iterations if dim * dim * k <= 12 else iterations // 3)
        x = make_data(n, dim, k)
        w, mu, prec = initial(x, k, ct)
        started = kernel_start(dim, k, n) if ct == "full" else None
        run_ours(x, k, ct, w, mu, prec, 1)  # warm-up: first-touch page faults, imports
        print(f"  N={n:,} D={dim} K={k}: 8 N (D + 2K) = {floor_bytes / 1e6:.0f} MB per iteration; floor at "
              f"{bandwidth[best_name] / 1e9:.1f} GB/s ({best_name}) = {floor * 1e3:.1f} ms")
        if started:
            print(f"    ({started}; counted apart from the times below)")
        print(f"    exp/log floor: N (K - 1) = {n * (k - 1):,} exp + N = {n:,} log: "
              + ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in arithmetic.items())
              + f" ({exp_floor * 1e9 / (n * k):.2f} ns per value; in cache "
              f"{cache_floor * 2e9 / (n * k):.2f} ns per value per thread)")
        n_design = STRUCTURES[ct].n_design(dim)
        multiply_adds = n * n_design * (2 * k - 1)
        for values in chunk_values:
            chunk_size = None if values is None else max(256, values // (n_design + 3 * k + dim))
            # Wall and CPU seconds (all threads of the process) of the short and the long fit, best of 2 each.
            one, one_cpu = (min(pair) for pair in zip(*(cpu_timed(run_ours, x, k, ct, w, mu, prec, 1, chunk_size)
                                                          for _ in range(2))))
            many, many_cpu = (min(pair) for pair in zip(*(cpu_timed(run_ours, x, k, ct, w, mu, prec,
                                                                    1 + case_iterations, chunk_size)
                                                          for _ in range(2))))
            per_iter = (many - one) / case_iterations
            cpu_per_iter = (many_cpu - one_cpu) / case_iterations
            rows = "package rule" if chunk_size is None else f"{chunk_size} rows ({values} values)"
            print(f"    emvsbayes.gaussian.em.fit ({ct}, blocks: {rows}): {per_iter * 1e3:.1f} ms per iteration "
                  f"(marginal, {case_iterations} iterations; set-up {1e3 * (one - per_iter):.0f} ms) = "
                  f"{per_iter / floor:.1f}x the memory floor (target <= 3x: "
                  f"{'ok' if per_iter / floor <= 3 else 'MISSED'}), {per_iter / exp_floor:.1f}x the exp/log floor "
                  f"({per_iter / cache_floor:.1f}x in cache; {per_iter / fused_exp:.1f}x the fused kernel's exp "
                  f"alone); "
                  f"{multiply_adds / 1e9:.2f} G multiply-adds in its products (F = {n_design}) at "
                  f"{2 * multiply_adds / per_iter / 1e9:.1f} GFLOP/s",
                  flush=True)
            # Under load the wall time is mostly waiting for a core; the CPU time is the work itself.
            print(f"      CPU time {cpu_per_iter * 1e3:.1f} ms per iteration over all threads; spread over the "
                  f"{os.cpu_count()} cores it would be {cpu_per_iter / os.cpu_count() / floor:.1f}x the memory floor",
                  flush=True)
        del x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--memory-iterations", type=int, default=2)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--floor-only", action="store_true", help="only the memory-floor measurement")
    parser.add_argument("--no-floor", action="store_true", help="skip the memory-floor measurement")
    parser.add_argument("--without-avx512", action="store_true",
                        help="run as on a CPU without AVX-512: numpy's AVX-512 loops off, OpenBLAS Haswell kernel")
    parser.add_argument("--floor-cases", nargs="*", default=None, metavar="D:K",
                        help="the floor cases' D and K at N = 1e7 (default 2:3 10:8)")
    parser.add_argument("--chunk-values", type=int, nargs="*", default=[],
                        help="also time the floor cases with E-step blocks of these many float64 values")
    args = parser.parse_args()
    ct = args.covariance_type

    if args.floor_cases:
        FLOOR_CASES[:] = [(10_000_000, *map(int, case.split(":"))) for case in args.floor_cases]
    if args.without_avx512:
        if any(os.environ.get(name) != value for name, value in WITHOUT_AVX512.items()):
            os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **WITHOUT_AVX512})
        print(f"emulating a CPU without AVX-512: {WITHOUT_AVX512}")
    pinned = {name: os.environ[name] for name in OPENBLAS_PINS if name in os.environ}
    if pinned and not args.without_avx512:
        # These pin OpenBLAS to a generic kernel / small cache and slow numpy; drop them for this process only.
        print(f"note: {pinned} set in the environment slow numpy's BLAS; re-running without them", flush=True)
        env = {key: value for key, value in os.environ.items() if key not in OPENBLAS_PINS}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import numpy
    import sklearn

    print(
        f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, covariance_type={ct!r}, {args.iterations} iterations "
        f"(memory: {args.memory_iterations})"
    )
    print(f"BLAS (threadpoolctl): {blas_report()}")
    if not args.no_floor:
        memory_floor(ct, args.iterations, [None, *args.chunk_values])
    if args.floor_only:
        return
    x = make_data(2_000, 2, 3)
    for run in (run_ours, run_sklearn):
        run(x, 3, ct, *initial(x, 3, ct), 2)  # warm-up: imports and first calls are not per-iteration costs
    print()
    header = (
        f"{'N':>9} {'D':>3} {'K':>3} | {'ours s/it':>10} {'sklearn s/it':>12} {'ratio':>7} | "
        f"{'loglik rel diff':>15} | {'ours peak MB':>12} {'sklearn peak MB':>15} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for n, dim, k in CASES:
        x = make_data(n, dim, k)
        w, mu, prec = initial(x, k, ct)
        ours_loglik, ours_time = best_timed(run_ours, x, k, ct, w, mu, prec, args.iterations)
        gm, sk_time = best_timed(run_sklearn, x, k, ct, w, mu, prec, args.iterations)
        sk_loglik = gm.score(x) * n
        rel = abs(ours_loglik - sk_loglik) / abs(sk_loglik)
        ours_peak = peak_bytes(run_ours, x, k, ct, w, mu, prec, args.memory_iterations)
        sk_peak = peak_bytes(run_sklearn, x, k, ct, w, mu, prec, args.memory_iterations)
        per_ours, per_sk = ours_time / args.iterations, sk_time / args.iterations
        print(
            f"{n:>9} {dim:>3} {k:>3} | {per_ours:>10.4f} {per_sk:>12.4f} {per_ours / per_sk:>7.3f} | "
            f"{rel:>15.2e} | {ours_peak / 2**20:>12.1f} {sk_peak / 2**20:>15.1f} {ours_peak / sk_peak:>6.2f}",
            flush=True,
        )
        del x, gm
        worst = max(worst, per_ours / per_sk)
    print(f"worst time ratio ours / scikit-learn: {worst:.3f} (target <= 0.1: {'ok' if worst <= 0.1 else 'MISSED'})")
    print(f"data: {'; '.join(f'x ({n}, {d}) = {n * d * 8 / 2**20:.0f} MB' for n, d, _ in CASES)} (not counted)")


if __name__ == "__main__":
    main()
