"""Baum-Welch per iteration, emvsbayes against hmmlearn, at T = 1e6, K = 4, 1-D Gaussian emissions (issue 19).

A 4-state Gaussian hidden Markov model series of T values is simulated (seeded); both fit it from the same
start, one iteration at a time, interleaved (hmmlearn "log", hmmlearn "scaling", emvsbayes, then the next
iteration), so the machine's load falls on all of them alike. The update is the same: estimated initial
distribution, transition matrix, means and variances (hmmlearn's ``params="stmc"`` with
``covariance_type="diag"`` on one column, ``init_params=""``, ``covars_prior=0``, ``means_weight=0``, so its
M-step is the plain maximum-likelihood one; emvsbayes's ``initial="estimated"``).

One iteration is what each fit loop repeats: hmmlearn's ``fit`` with ``n_iter=1`` (E-step at the current
parameters, then M-step; its monitor records the E-step's log-likelihood), emvsbayes's ``e_step`` then
``m_step`` (:func:`emvsbayes.hmm.em.fit` has :func:`emvsbayes.em.fit_em` call exactly these, plus bookkeeping). The log-likelihood of each
E-step is printed for all three; they follow the same parameters, so they must agree to rounding (printed:
the largest relative difference). Then the same number of iterations by ``emvsbayes.hmm.em.fit`` itself, whose
trace must give the same log-likelihoods.

Timed per iteration: wall clock (median and best over the iterations) and process CPU time. BLAS is limited
to one thread (threadpoolctl) so that hmmlearn's numpy products run on one core as emvsbayes's kernel does;
both are single-threaded. Target: emvsbayes / hmmlearn <= 0.2 per iteration (checked against both of
hmmlearn's implementations; "log" is its default).

The numba kernel's first call compiles it; that is timed separately (in a fresh numba cache directory, so it
is a real compile, and again in a fresh process that loads it from that cache) and excluded from the
per-iteration times.

Run: ``.venv/bin/python benchmarks/hmm_baum_welch.py [--length 1000000] [--iterations 6] [--seed 2026]
[--no-hmmlearn-log]``. hmmlearn is needed only here and in the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

# A fresh numba cache for this process, set before numba is imported: the first call is a real compile.
_CACHE = tempfile.mkdtemp(prefix="hmmbw-numba-")
os.environ["NUMBA_CACHE_DIR"] = _CACHE

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from emvsbayes.hmm import em  # noqa: E402
from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams  # noqa: E402

K = 4
TRUTH = HMMParams(
    initial=[0.4, 0.3, 0.2, 0.1],
    transition=[[0.95, 0.03, 0.01, 0.01], [0.02, 0.94, 0.03, 0.01], [0.01, 0.03, 0.94, 0.02], [0.02, 0.02, 0.04, 0.92]],
    mu=[-3.0, -1.0, 1.5, 4.0], sigma=[1.0, 0.8, 1.0, 1.5])
START = HMMParams(
    initial=[0.25, 0.25, 0.25, 0.25],
    transition=[[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]],
    mu=[-2.0, -0.5, 0.5, 2.0], sigma=[2.0, 2.0, 2.0, 2.0])


def simulate(params: HMMParams, t_len: int, rng: np.random.Generator) -> np.ndarray:
    """A series from the chain: the states by inverting each row's cumulative distribution."""
    cumulative = np.cumsum(params.transition, axis=1)
    u = rng.random(t_len)
    states = np.empty(t_len, dtype=np.int64)
    states[0] = np.searchsorted(np.cumsum(params.initial), u[0])
    state = states[0]
    for t in range(1, t_len):
        state = states[t] = np.searchsorted(cumulative[state], u[t])
    return rng.normal(params.mu[states], params.sigma[states])


def hmmlearn_model(implementation: str):
    from hmmlearn.hmm import GaussianHMM

    reference = GaussianHMM(n_components=K, covariance_type="diag", n_iter=1, init_params="", params="stmc", tol=0.0,
                            covars_prior=0.0, means_weight=0.0, implementation=implementation)
    reference.startprob_ = START.initial.copy()
    reference.transmat_ = START.transition.copy()
    reference.means_ = START.mu[:, None].copy()
    reference.covars_ = START.sigma[:, None] ** 2
    return reference


def timed(step):
    wall, cpu = time.perf_counter(), time.process_time()
    value = step()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def first_call_in_fresh_process() -> float:
    """Seconds for the import of the kernel's module and its first (small) call in a new process that finds
    the kernel in the numba cache this process filled."""
    code = ("import time; t = time.perf_counter()\n"
            "import numpy as np\n"
            "from emvsbayes.hmm import em\n"
            "from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams\n"
            f"m = HiddenMarkovModel(n_components={K}, emission='gaussian')\n"
            f"p = HMMParams(np.full({K}, 1 / {K}), np.full(({K}, {K}), 1 / {K}), mu=np.arange({K}.0), sigma=np.ones({K}))\n"
            "em.e_step(m, np.linspace(-1, 2, 50), p, keep_gamma=False)\n"
            "from emvsbayes.hmm.compiled_estep import kernel\n"
            f"assert sum(kernel({K}).stats.cache_hits.values()) >= 1, kernel({K}).stats\n"
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "NUMBA_CACHE_DIR": _CACHE})
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=float, default=1e6)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-hmmlearn-log", action="store_true", help="leave out hmmlearn's slow default 'log'")
    args = parser.parse_args(argv)
    t_len, n_iter = int(args.length), args.iterations
    import hmmlearn

    print(f"T = {t_len}, K = {K}, Gaussian emissions, {n_iter} iterations each; hmmlearn {hmmlearn.__version__}, "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.1f} at the start")
    y = simulate(TRUTH, t_len, np.random.default_rng(args.seed))
    model = HiddenMarkovModel(n_components=K, emission="gaussian", initial="estimated")

    # The kernel's compile (numba import included), on a short series; not part of any iteration's time.
    wall = time.perf_counter()
    em.e_step(model, y[:100], START, keep_gamma=False)
    compile_seconds = time.perf_counter() - wall
    from emvsbayes.hmm.compiled_estep import kernel

    assert sum(kernel(K).stats.cache_misses.values()) >= 1, "expected a compile in a fresh numba cache"
    print(f"numba compile of the E-step kernel (first call, numba import included): {compile_seconds:.2f} s; "
          f"a new process loading it from the cache: {first_call_in_fresh_process():.2f} s (import of emvsbayes.hmm "
          "included); neither is in the per-iteration times")

    implementations = ["scaling"] if args.no_hmmlearn_log else ["log", "scaling"]
    references = {name: hmmlearn_model(name) for name in implementations}
    logliks = {name: [] for name in [*implementations, "emvsbayes"]}
    walls = {name: [] for name in logliks}
    cpus = {name: [] for name in logliks}
    params = START
    y_sd = float(np.std(y))  # as em.fit computes it once per fit
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn warns that a 1-iteration fit did not converge
        for _ in range(n_iter):
            for name, reference in references.items():
                _, w, c = timed(lambda reference=reference: reference.fit(y[:, None]))
                logliks[name].append(reference.monitor_.history[-1])
                walls[name].append(w)
                cpus[name].append(c)

            def ours(params=params):
                stats, loglik = em.e_step(model, y, params, keep_gamma=False)
                return em.m_step(model, y, stats, params, y_sd=y_sd), loglik

            (params, loglik), w, c = timed(ours)
            logliks["emvsbayes"].append(loglik)
            walls["emvsbayes"].append(w)
            cpus["emvsbayes"].append(c)

    print("\nlog-likelihood of each iteration's E-step:")
    print("iter  " + "".join(f"{name:>26}" for name in logliks))
    for i in range(n_iter):
        print(f"{i:>4}  " + "".join(f"{logliks[name][i]:>26.10f}" for name in logliks))
    ours_ll = np.array(logliks["emvsbayes"])
    for name in implementations:
        rel = np.max(np.abs(ours_ll - np.array(logliks[name])) / np.abs(np.array(logliks[name])))
        print(f"largest relative difference emvsbayes vs hmmlearn {name}: {rel:.2e}")

    fit = em.fit(model, y, START, min_iter=n_iter - 1, max_iter=n_iter - 1, tol=0.0, param_tol=0.0)
    rel = np.max(np.abs(fit.loglik_path - ours_ll) / np.abs(ours_ll))
    print(f"emvsbayes.hmm.em.fit's trace against the stepped iterations: largest relative difference {rel:.2e}")

    print("\nseconds per iteration (median / best wall; median CPU):")
    for name in logliks:
        print(f"  {name:>18}: {statistics.median(walls[name]):.4f} / {min(walls[name]):.4f}   "
              f"{statistics.median(cpus[name]):.4f}")
    for name in implementations:
        ratio_median = statistics.median(walls["emvsbayes"]) / statistics.median(walls[name])
        ratio_best = min(walls["emvsbayes"]) / min(walls[name])
        ratio_cpu = statistics.median(cpus["emvsbayes"]) / statistics.median(cpus[name])
        verdict = "met" if max(ratio_median, ratio_best) <= 0.2 else "NOT met"
        print(f"ratio emvsbayes / hmmlearn {name}: {ratio_median:.3f} (median wall), {ratio_best:.3f} (best wall), "
              f"{ratio_cpu:.3f} (median CPU); target <= 0.2 {verdict}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
