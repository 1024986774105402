"""How the cost of EM (with its bootstrap) and of the posterior (NUTS) grows with N, and where it goes.

The same model for every N: a 1-D Gaussian mixture, K = 2, the bundled specs' defaults (``[em]``: k-means++
starts, n_init = 10 and more until three agree, bootstrap = 200 nonparametric replicates; ``[bayes]``: the
default sampler, numpyro's NUTS as ``emvsbayes run`` drives it, 4 chains x 1000 warm-up + 1000 draws,
target acceptance "auto"). Data: N draws from 0.6 N(0, 1) + 0.4 N(3, 0.7^2), seeded, a prefix of one stream.

Each stage is called as :mod:`emvsbayes.gaussian.runner` calls it (the runner's own restart loop, the same
bootstrap call, :func:`emvsbayes.sampling.sample_posterior` with the same recipe, settings and starts), and
timed:

- EM: the restarts (``em``) and the 200-replicate bootstrap (``bootstrap``);
- NUTS: obtaining the exported programs (``build``: building them from the PyMC model, since every N is a new
  data set), JAX's compiling (``compile``), warm-up (``tune``), sampling (``draws``), turning draws back into
  the model's variables and the pointwise log-likelihood (``constrain``).

emvsbayes's program cache and JAX's compilation cache point at a fresh folder (a new data set is a new program: what a user pays the first time;
PyTensor's cache is kept: the numpyro path builds without its C compiler). One process for all N, smallest first, so the
imports are paid once before the first N (reported apart). The pointwise log-likelihood (4000 x N numbers) is
computed only up to N = 1e4 (``--log-likelihood-max``): at 1e5 it and the posterior membership of the full
pipeline (4000 x N x K) are 3 and 6 GB, more than a shared machine should be asked for.

N = 1e6 is sampled only if N = 1e5's sampling (tune + draws) took under ``--max-sampling-seconds``, and fitted
by EM only if N = 1e5's restarts and bootstrap took under ``--max-em-seconds``; otherwise its time is
extrapolated (linear in N from 1e5: each gradient and each E-step is a sum over points; build and compile
kept at 1e5's) and marked so.

Writes ``cost_vs_n.json`` and ``cost_vs_n.png`` to ``--out`` (default ``/tmp/cost-vs-n``) and prints a
markdown table. Run: ``.venv/bin/python benchmarks/cost_vs_n.py [--sizes 1e2 1e3 1e4 1e5 1e6] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 20261203
WEIGHTS, MEANS, SDS = np.array([0.6, 0.4]), np.array([0.0, 3.0]), np.array([1.0, 0.7])


def make_data(n: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    labels = rng.choice(2, size=10**6, p=WEIGHTS)[:n]
    noise = rng.standard_normal(10**6)[:n]
    return (MEANS[labels] + SDS[labels] * noise)[:, None]


def default_spec() -> dict:
    """The validated spec ``emvsbayes.compare(x, family="gaussian", components=2)`` runs."""
    from emvsbayes.api import _spec_from_options
    from emvsbayes.spec import validate

    return validate(_spec_from_options("gaussian", 2, {"seed": SEED}, "cost_vs_n"), source="cost_vs_n")


def time_em(spec: dict, x: np.ndarray) -> tuple[dict, object]:
    """Seconds of the restarts and of the bootstrap, as the runner runs them; and the restarts."""
    from emvsbayes.gaussian import runner
    from emvsbayes.uncertainty import gaussian_bootstrap

    model_def = runner.model_from_spec(spec)
    em_spec = spec["em"]
    rng = np.random.default_rng(SEED)
    began = time.perf_counter()
    soft = runner._fit_until(model_def, x, *runner._start_source(model_def, x, em_spec, rng), em_spec)
    seconds = {"em": time.perf_counter() - began}
    began = time.perf_counter()
    gaussian_bootstrap(model_def, x, soft.restarts.best.params, n_boot=em_spec["bootstrap"], seed=SEED,
                       kind=em_spec["bootstrap_kind"], n_workers=None,
                       em_options=dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"]))
    seconds["bootstrap"] = time.perf_counter() - began
    return seconds, soft.restarts


def time_nuts(spec: dict, x: np.ndarray, restarts, log_likelihood: bool) -> dict:
    """Seconds of each stage of the default sampler, started as the runner starts it."""
    from functools import partial

    from emvsbayes.gaussian import bayes, em, runner
    from emvsbayes.sampling import ModelRecipe, SamplerSettings, resolve_sampler, sample_posterior

    model_def = runner.model_from_spec(spec)
    b, em_spec = spec["bayes"], spec["em"]
    starts = runner._start_points(model_def, restarts, partial(em.fit, model_def, x, tol=em_spec["tol"],
                                                               param_tol=em_spec["param_tol"],
                                                               max_iter=em_spec["max_iter"]))
    settings = SamplerSettings(sampler=resolve_sampler(b["sampler"]), chains=b["chains"], draws=b["draws"],
                               tune=b["tune"], target_accept=runner._target_accept(b["target_accept"],
                                                                                   restarts.best.params, x))
    recipe = ModelRecipe(bayes.build_model, (model_def, x), {"columns": ["x"]})
    outcome = sample_posterior(recipe, settings, SEED, bayes.initvals_from_params(model_def, starts),
                               log_likelihood=log_likelihood)
    stages = dict(outcome.stages)
    divergences = int(np.asarray(outcome.tree["sample_stats"]["diverging"]).sum())
    return {"build": stages.get("build", np.nan), "compile": stages.get("compile", np.nan),
            "tune": stages.get("tune", np.nan), "draws": stages.get("draws", np.nan),
            "constrain": stages.get("constrain_and_log_likelihood", np.nan), "total": outcome.seconds_total,
            "divergences": divergences, "sampler": outcome.sampler}


EM_STAGES = ("em", "bootstrap")
NUTS_STAGES = ("build", "compile", "tune", "draws", "constrain")


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    n = np.array([row["n"] for row in rows], dtype=float)
    measured = np.array([not row.get("extrapolated") for row in rows])
    em_total = np.array([row["em"] + row["bootstrap"] for row in rows])
    nuts_total = np.array([sum(row[s] for s in NUTS_STAGES if np.isfinite(row[s])) for row in rows])
    for axis, title, stages, total, colour in ((left, "EM + 200-replicate bootstrap", EM_STAGES, em_total, "C0"),
                                               (right, "NUTS (numpyro, 4 x (1000 + 1000))", NUTS_STAGES, nuts_total, "C3")):
        axis.plot(n[measured], total[measured], "o-", color=colour, lw=2.5, label="total")
        if (~measured).any():
            axis.plot(n, total, ":", color=colour, lw=1.5, label="total, extrapolated")
        for i, stage in enumerate(stages):
            values = np.array([row[stage] for row in rows], dtype=float)
            keep = measured & np.isfinite(values) & (values > 0)
            axis.plot(n[keep], values[keep], "s--", ms=4, lw=1, color=f"C{i + 4}", label=stage)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("N (rows)")
        axis.set_title(title, fontsize=10)
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylabel("seconds (wall, 2-core machine)")
    fig.suptitle("1-D Gaussian mixture, K = 2: where the time goes", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict]) -> str:
    head = ("| N | EM restarts | bootstrap (200) | EM total | NUTS build | compile | warm-up | sampling | "
            "constrain + log-lik | NUTS total | NUTS / EM |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        em_total = row["em"] + row["bootstrap"]
        nuts_total = sum(row[s] for s in NUTS_STAGES if np.isfinite(row[s]))
        mark = f" ({row['extrapolated_what']} extrapolated)" if row.get("extrapolated") else ""

        def cell(value):
            return "-" if not np.isfinite(value) else f"{value:.2f}"

        lines.append(f"| {row['n']:.0e}{mark} | {cell(row['em'])} | {cell(row['bootstrap'])} | {em_total:.2f} | "
                     + " | ".join(cell(row[s]) for s in NUTS_STAGES)
                     + f" | {nuts_total:.1f} | {nuts_total / em_total:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e2, 1e3, 1e4, 1e5, 1e6])
    parser.add_argument("--out", type=Path, default=Path("/tmp/cost-vs-n"))
    parser.add_argument("--max-sampling-seconds", type=float, default=180.0,
                        help="sample N = 1e6 only if N = 1e5's warm-up + sampling took less than this")
    parser.add_argument("--max-em-seconds", type=float, default=120.0,
                        help="fit N = 1e6 by EM only if N = 1e5's restarts + bootstrap took less than this")
    parser.add_argument("--log-likelihood-max", type=float, default=1e4)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    caches = Path(tempfile.mkdtemp(prefix="cost-vs-n-caches-"))
    os.environ["EMVSBAYES_PROGRAM_CACHE_DIR"] = str(caches / "programs")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(caches / "jax")

    began = time.perf_counter()
    import emvsbayes.gaussian.runner  # noqa: F401  (the imports a run pays once)
    import emvsbayes.sampling.numpyro_nuts  # noqa: F401

    spec = default_spec()
    imports = time.perf_counter() - began
    load = os.getloadavg()
    print(f"{len(os.sched_getaffinity(0))} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start; "
          f"imports {imports:.1f} s; caches in {caches}", flush=True)
    rows = []
    for size in sorted(args.sizes):
        n = int(size)
        previous = rows[-1] if rows else None
        if n >= 10**6 and previous is not None:
            scale = n / previous["n"]
            sample = previous["tune"] + previous["draws"] <= args.max_sampling_seconds
            fit_em = previous["em"] + previous["bootstrap"] <= args.max_em_seconds
            if not (sample and fit_em):
                row = {"n": n, "extrapolated": True}
                if fit_em:
                    spent, restarts = time_em(spec, make_data(n))
                    row.update(spent, extrapolated_what="NUTS")
                else:
                    row.update(em=previous["em"] * scale, bootstrap=previous["bootstrap"] * scale,
                               extrapolated_what="EM and NUTS")
                row.update(build=previous["build"], compile=previous["compile"], tune=previous["tune"] * scale,
                           draws=previous["draws"] * scale, constrain=np.nan)
                rows.append(row)
                print(f"N = {n:.0e}: {row['extrapolated_what']} extrapolated linearly from N = {previous['n']:.0e}",
                      flush=True)
                continue
        x = make_data(n)
        spent, restarts = time_em(spec, x)
        nuts = time_nuts(spec, x, restarts, log_likelihood=n <= args.log_likelihood_max)
        row = {"n": n, **spent, **{s: nuts[s] for s in NUTS_STAGES}, "nuts_total": nuts["total"],
               "divergences": nuts["divergences"], "sampler": nuts["sampler"]}
        if n > args.log_likelihood_max:
            row["constrain_note"] = "draws constrained, no pointwise log-likelihood"
        rows.append(row)
        print(f"N = {n:.0e}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()
                                           if k in EM_STAGES + NUTS_STAGES and np.isfinite(v))
              + f"; divergences {nuts['divergences']}", flush=True)
        (args.out / "cost_vs_n.json").write_text(json.dumps({"imports": imports, "rows": rows}, indent=1, default=float))
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at end")
    (args.out / "cost_vs_n.json").write_text(json.dumps({"imports": imports, "rows": rows}, indent=1, default=float))
    figure(rows, args.out / "cost_vs_n.png")
    print(table(rows))
    print(f"figure: {args.out / 'cost_vs_n.png'}")


if __name__ == "__main__":
    sys.exit(main())
