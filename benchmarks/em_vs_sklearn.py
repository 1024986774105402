"""emvsbayes's Gaussian-mixture EM against scikit-learn's, in one process.

For each (N, D, K): the same seeded data, the same initial parameters (scikit-learn gets them as
weights_init / means_init / precisions_init), the same number of M-steps (tol = 0, max_iter fixed).
Reported: seconds per iteration of each (whole fit divided by iterations, so set-up is included and
amortised), their ratio, the relative difference of the final log-likelihoods (ours at the returned
parameters; scikit-learn's from ``score`` at its returned parameters), and the peak memory each
allocates during the fit (tracemalloc, in a separate shorter run, since tracing slows allocation).

Run: ``.venv/bin/python benchmarks/em_vs_sklearn.py [--iterations 10] [--covariance-type full]``.
scikit-learn is only needed here and in the tests.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
import warnings

import numpy as np

CASES = [(100_000, 2, 3), (1_000_000, 1, 3), (1_000_000, 2, 3), (1_000_000, 10, 8)]


def make_data(n: int, dim: int, k: int, seed: int = 0) -> np.ndarray:
    """K Gaussian clusters with random centres and correlated covariances; seeded."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(k, dim))
    factors = rng.normal(0, 0.5, size=(k, dim, dim)) + np.eye(dim)
    labels = rng.integers(0, k, size=n)
    noise = rng.normal(size=(n, dim))
    return centres[labels] + np.einsum("nd,nde->ne", noise, factors[labels])


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


def run_ours(x, k, covariance_type, w, mu, prec, iterations):
    from emvsbayes.gaussian import GaussianMixtureModel, GaussianParams, fit

    model = GaussianMixtureModel(k, covariance_type)
    init = GaussianParams.from_precisions(w, mu, prec, covariance_type)
    result = fit(model, x, init, tol=0.0, max_iter=iterations, keep_stats=False)
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


def peak_bytes(fn, *args) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--memory-iterations", type=int, default=2)
    parser.add_argument("--covariance-type", default="full")
    args = parser.parse_args()
    ct = args.covariance_type

    import numpy
    import sklearn

    print(
        f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs, "
        f"covariance_type={ct!r}, {args.iterations} iterations (memory: {args.memory_iterations})"
    )
    header = (
        f"{'N':>9} {'D':>3} {'K':>3} | {'ours s/it':>10} {'sklearn s/it':>12} {'ratio':>7} | "
        f"{'loglik rel diff':>15} | {'ours peak MB':>12} {'sklearn peak MB':>15}"
    )
    print(header)
    print("-" * len(header))
    for n, dim, k in CASES:
        x = make_data(n, dim, k)
        w, mu, prec = initial(x, k, ct)
        ours_loglik, ours_time = timed(run_ours, x, k, ct, w, mu, prec, args.iterations)
        gm, sk_time = timed(run_sklearn, x, k, ct, w, mu, prec, args.iterations)
        sk_loglik = gm.score(x) * n
        rel = abs(ours_loglik - sk_loglik) / abs(sk_loglik)
        ours_peak = peak_bytes(run_ours, x, k, ct, w, mu, prec, args.memory_iterations)
        sk_peak = peak_bytes(run_sklearn, x, k, ct, w, mu, prec, args.memory_iterations)
        per_ours, per_sk = ours_time / args.iterations, sk_time / args.iterations
        print(
            f"{n:>9} {dim:>3} {k:>3} | {per_ours:>10.4f} {per_sk:>12.4f} {per_ours / per_sk:>7.3f} | "
            f"{rel:>15.2e} | {ours_peak / 2**20:>12.1f} {sk_peak / 2**20:>15.1f}",
            flush=True,
        )
    print(f"data: {'; '.join(f'x ({n}, {d}) = {n * d * 8 / 2**20:.0f} MB' for n, d, _ in CASES)} (not counted)")


if __name__ == "__main__":
    main()
