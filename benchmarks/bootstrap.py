"""The EM bootstrap of every bundled 1-D or coin spec (mixtures and hidden Markov models): batched against
today's per-replicate path.

For each spec: the spec's data, EM answer (its own restarts and options, as ``emvsbayes run`` fits them),
seed and B (200 in every bundled spec), then ``run_bootstrap`` by both routes,
interleaved:

- ``per-replicate``: one ``fit_em`` per replicate, in this process (``n_workers=1``) and, as
  ``emvsbayes run`` calls it, with ``n_workers=None`` (worker processes when the first chunk's time says
  they pay);
- ``batched``: all replicates as one EM over a leading replicate axis (the default route for data this
  small).

Printed per spec and kind: best-of-``--repeats`` seconds of each, the ratio per-replicate / batched, and
the largest difference between the two routes' replicates (relative to max(1, |value|)) with the count
of replicates beyond 1e-10 (those whose stopping decision fell within rounding of ``tol``: the two
routes sum the log-likelihood in different orders).

Target: the batched bootstrap of every spec under 1 s.

Run: ``.venv/bin/python benchmarks/bootstrap.py [--specs two_coins ...] [--kinds nonparametric parametric]
[--repeats 2] [--no-workers]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emvsbayes.pipeline import child_seeds, load_data  # noqa: E402
from emvsbayes.spec import load_spec  # noqa: E402
from emvsbayes.family import get_family  # noqa: E402
from emvsbayes.runner import fit_until  # noqa: E402
from emvsbayes.uncertainty import run_bootstrap  # noqa: E402

SPECS = ("two_coins", "lecture_coins", "galaxies", "acidity", "enzyme", "earthquakes_mixture", "earthquakes_hmm",
         "faithful_hmm")
TARGET_SECONDS = 1.0


def reference_and_call(name: str):
    """(B, a function kind, route, n_workers -> BootstrapResult) for the spec, EM fitted as the runner fits it."""
    spec = load_spec(ROOT / "models" / f"{name}.toml")
    data = load_data(spec)
    seeds = child_seeds(spec["seed"])
    em_spec = spec["em"]
    options = dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"])
    n_boot = em_spec["bootstrap"]
    family = get_family(spec["model"]["family"])
    model = family.model_from_spec(spec, data)
    next_init, policy = family.starts(model, data, em_spec, np.random.default_rng(seeds["em"]))
    best = fit_until(family, model, data, next_init, policy, em_spec).restarts.best.params

    def call(kind, route, n_workers):
        return run_bootstrap(family, model, data, best, n_boot=n_boot, seed=seeds["bootstrap"], kind=kind,
                             n_workers=n_workers, em_options=options, route=route)
    # a series (the hidden Markov models) is only simulated: its time points cannot be resampled
    kinds = ("parametric",) if getattr(family, "auto_bootstrap_kind", "") == "parametric" else ("nonparametric", "parametric")
    return n_boot, call, kinds


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def largest_difference(one, other) -> tuple[float, int]:
    worst = np.zeros(one.n_boot)
    for name in one.draws:
        a, b = one.draws[name].reshape(one.n_boot, -1), other.draws[name].reshape(one.n_boot, -1)
        gap = np.abs(a - b) / np.maximum(1.0, np.abs(a))
        gap = np.where(np.isnan(a) & np.isnan(b), 0.0, np.where(np.isnan(a) != np.isnan(b), np.inf, gap))
        worst = np.maximum(worst, gap.max(axis=1))
    return float(worst.max()), int((worst > 1e-10).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=list(SPECS))
    parser.add_argument("--kinds", nargs="+", default=["nonparametric", "parametric"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-workers", action="store_true", help="skip the per-replicate run with n_workers=None")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'spec':<14} {'kind':<13} {'B':>4} | {'per-rep 1 proc':>14} {'per-rep auto':>12} {'batched':>8} | "
          f"{'ratio':>6} {'ratio auto':>10} | {'max diff':>8} {'>1e-10':>6} | target < {TARGET_SECONDS:g} s")
    for name in args.specs:
        n_boot, call, kinds = reference_and_call(name)
        for kind in (kind for kind in args.kinds if kind in kinds):
            times = {"per": [], "auto": [], "batched": []}
            for _ in range(args.repeats):
                seconds, per = timed(lambda: call(kind, "per-replicate", 1))
                times["per"].append(seconds)
                if not args.no_workers:
                    times["auto"].append(timed(lambda: call(kind, "per-replicate", None))[0])
                seconds, batched = timed(lambda: call(kind, "batched", 1))
                times["batched"].append(seconds)
            best = {key: min(value) if value else float("nan") for key, value in times.items()}
            diff, beyond = largest_difference(per, batched)
            verdict = "met" if best["batched"] < TARGET_SECONDS else "MISSED"
            print(f"{name:<14} {kind:<13} {n_boot:>4} | {best['per']:>14.3f} {best['auto']:>12.3f} "
                  f"{best['batched']:>8.3f} | {best['per'] / best['batched']:>6.1f} "
                  f"{best['auto'] / best['batched']:>10.1f} | {diff:>8.1e} {beyond:>6} | {verdict}", flush=True)


if __name__ == "__main__":
    main()
