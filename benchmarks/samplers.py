"""The same mixture models sampled by PyMC's NUTS, nutpie, numpyro and Stan (pystan), in one run.

Models (data and priors as emvsbayes builds them; Stan programs in ``benchmarks/stan/``, priors passed
as data from :func:`emvsbayes.gaussian.bayes.prior_values`):

- ``galaxies_ordered``, ``galaxies_symmetric``: galaxies, 1-D, K = 3, means ordered or exchangeable;
- ``faithful_ordered``: Old Faithful standardised, K = 2, full covariances, LKJ(2), ordered;
- ``coins``: the two-coin model of Do & Batzoglou, theta ~ Beta(1, 1), equal fixed weights (symmetric);
- ``earthquakes_hmm``: ``models/earthquakes_hmm.toml`` (major earthquakes 1900-2006, Poisson HMM, K = 3,
  stationary initial distribution, symmetric), built as a run builds it: the spec's family, model, EM
  restart rule and seeds (the run's ``em`` child seed), chains started from the EM optima that
  :func:`emvsbayes.comparison.start_points` picks, the family's ``target_accept`` and ``ModelRecipe``; Stan's
  program ``poisson_hmm.stan`` sums the states out with ``hmm_marginal``; draws relabelled by Stephens'
  algorithm on the per-draw smoothed state probabilities (the run's ``relabel = "auto"``), the transition
  matrix's rows and columns permuted together.

Every (model, engine) runs in its own subprocess (so "whole process" is real: imports, EM for the
starting points, compilation, sampling, diagnostics), first with cold caches (fresh directories for
PyTensor's C and numba code, ``NUMBA_CACHE_DIR``, JAX's persistent cache, emvsbayes's stored samplers
and httpstan's model cache via ``XDG_CACHE_HOME``), then warm (the same directories again), engines interleaved so that load on this
shared machine hits them alike. All engines start every chain from EM answers (the best first, then
other distinct optima, cycled over chains; nutpie takes only the first) without jitter, as
:func:`emvsbayes.sampling.sample_posterior` does; pymc, nutpie and numpyro go through that very function with
emvsbayes's default :class:`SamplerSettings` and the pipeline's ``target_accept = "auto"`` rule (0.95 when
an EM component holds fewer than 30 points, else 0.8), the model given as a ``ModelRecipe`` as the
pipeline gives it (numpyro, the default: its exported programs are stored in the cache directory and
loaded by the warm runs; per-chain starts), Stan through ``stan.build`` / ``sample`` with the same
chains, draws and tuning length, at its own default ``adapt_delta`` 0.8.

Printed per (model, engine): min bulk and tail ESS over the reported parameters (w, mu, sigma / cov,
theta; symmetric models relabelled by Stephens' algorithm first), the same per chain (within-chain ESS,
summed over chains and the worst chain), the number of modes the chains sit in
(:func:`emvsbayes.labels.modes_up_to_permutation`) with the worst within-mode R-hat, max R-hat over all
chains, divergences, seconds of sampling (tuning + draws, without compiling: Stan's and nutpie's own
clocks, PyMC's ``sampling_time``, and for numpyro the wall time of its warm-up and draw programs less
the JAX compile time JAX reports inside them), ESS per second of sampling, and whole-process seconds cold and warm. On models whose chains sit in different modes (galaxies) pooled ESS and R-hat
measure the modes, not the sampler: the speed figure there is within-chain ESS per second.

Then the emvsbayes default (the sampler the pipeline's ``sampler = "auto"`` picks for the model) is set
against Stan: ratio of ESS/s of sampling (target >= 2), whole process warm (target <= 1), diagnostics.

Run: ``.venv/bin/python benchmarks/samplers.py [--models ...] [--engines ...] [--warm-repeats 2]
[--draws 1000 --tune 1000] [--seed 1]``; extras: ``.venv/bin/pip install -e .[bench]``.
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

import numpy as np

HERE = Path(__file__).resolve().parent
STAN_DIR = HERE / "stan"
ENGINES = ("pymc", "nutpie", "numpyro", "stan")
STAN_DEFAULT_DELTA = 0.8

MODELS = {
    "galaxies_ordered": dict(family="gaussian", dataset="galaxies", k=3, ordered=True, n_init=20, max_iter=2000,
                             stan="gmm_1d_ordered.stan", seed=1990),
    "galaxies_symmetric": dict(family="gaussian", dataset="galaxies", k=3, ordered=False, n_init=20, max_iter=2000,
                               stan="gmm_1d.stan", seed=1990),
    "faithful_ordered": dict(family="gaussian", dataset="old_faithful", options={"standardize": True}, k=2,
                             ordered=True, n_init=10, max_iter=1000, stan="gmm_full_ordered.stan", seed=1990),
    "coins": dict(family="coins", dataset="coins_do_batzoglou", k=2, ordered=False, init=(0.6, 0.5),
                  stan="coins.stan", seed=20081001),
    "earthquakes_hmm": dict(family="hmm", spec="models/earthquakes_hmm.toml", k=3, ordered=False,
                            stan="poisson_hmm.stan"),
}
REPO = HERE.parent

# A chain is "degenerate" when a component holds fewer than this many points on average, or its sd is
# below this share of the data's sd: the collapsed modes a mixture sampler must not get stuck in.
DEGENERATE_POINTS = 1.5
DEGENERATE_SD_SHARE = 0.02


# --------------------------------------------------------------------------------------------------
# Worker: one (model, engine) in this process


def _load(cfg):
    if cfg["family"] == "hmm":
        from emvsbayes.pipeline import load_data
        from emvsbayes.spec import load_spec

        return load_data(load_spec(REPO / cfg["spec"]))
    from emvsbayes.data import load_dataset

    return load_dataset(cfg["dataset"], **cfg.get("options", {}))


def _gaussian_setup(cfg, data):
    """Model definition, data (N, D), EM starting points (GaussianParams, best first)."""
    from emvsbayes.gaussian import GaussianMixtureModel, GaussianPriors, em, initial_params_restarts
    from emvsbayes.comparison import start_points

    x = np.asarray(data.x, dtype=float)
    model_def = GaussianMixtureModel(cfg["k"], "full", ordered=cfg["ordered"], priors=GaussianPriors(lkj_eta=2.0))
    inits = initial_params_restarts(model_def, x, cfg["n_init"], "k-means++", np.random.default_rng(cfg["seed"]))
    restarts = em.fit_restarts(model_def, x, inits, tol=1e-10, max_iter=cfg["max_iter"])
    return model_def, x, start_points(lambda params: params.variables(), restarts)


def _coins_setup(cfg, data):
    from emvsbayes.coins import em
    from emvsbayes.coins.model import CoinMixture, CoinParams

    model_def = CoinMixture(cfg["k"], "equal", (1.0, 1.0), ordered=cfg["ordered"])
    fit = em.fit(model_def, data.heads, data.tosses, CoinParams(np.array(cfg["init"]), model_def.equal_weights),
                 tol=1e-10, max_iter=500)
    return model_def, fit.params


def _hmm_setup(cfg, data):
    """As :func:`emvsbayes.runner.run` and ``bayes_groups`` do for the spec: (model, EM starting points (best
    first), chain starts, the smallest expected state occupancy for the ``"auto"`` target acceptance)."""
    from functools import partial

    from emvsbayes.comparison import start_points
    from emvsbayes.family import get_family
    from emvsbayes.runner import FamilyView, em_options, fit_until
    from emvsbayes.seeds import child_seeds
    from emvsbayes.spec import load_spec

    spec = load_spec(REPO / cfg["spec"])
    family = FamilyView(get_family(spec["model"]["family"]), data)
    model_def = family.model_from_spec(spec, data)
    rng = np.random.default_rng(child_seeds(spec["seed"])["em"])
    soft = fit_until(family, model_def, data, *family.starts(model_def, data, spec["em"], rng), spec["em"])
    starts = start_points(family.variables, soft.restarts, partial(family.fit, model_def, data, **em_options(spec["em"])))
    best = soft.restarts.best.params
    # HMMFamily.target_accept's occupancy: the smallest expected stay in a state over the series
    fewest_points = float(np.min(best.transition.diagonal())) * data.n_time
    return model_def, starts, family.initvals(model_def, starts), fewest_points


def _default_engine(cfg, n_starts: int, dim: int) -> str:
    """What the pipeline's ``sampler = "auto"`` picks (the same for every model)."""
    from emvsbayes.sampling import resolve_sampler

    return resolve_sampler("auto")


def _stan_data_and_inits(cfg, model_def, data, x, pm_starts):
    if cfg["family"] == "hmm":
        from emvsbayes.hmm.bayes import prior_values

        prior = prior_values(model_def, data.y)
        shape, rate = prior["rate_prior"]
        stan_data = dict(T=int(data.n_time), K=cfg["k"], y=[int(v) for v in data.y],
                         transition_concentration=prior["transition_concentration"].tolist(),
                         rate_shape=float(shape), rate_rate=float(rate))
        return stan_data, [{"transition": s["transition"].tolist(), "rate": list(s["rate"])} for s in pm_starts]
    if cfg["family"] == "coins":
        stan_data = dict(N=len(data.heads), K=cfg["k"], heads=[int(h) for h in data.heads],
                         tosses=[int(t) for t in data.tosses], a=1.0, b=1.0, w=list(model_def.equal_weights))
        return stan_data, [{"theta": list(s["theta"])} for s in pm_starts]
    from emvsbayes.gaussian.bayes import prior_values

    prior = prior_values(model_def, x)
    n, dim = x.shape
    common = dict(N=n, K=cfg["k"], w_concentration=model_def.priors.w_concentration)
    if dim == 1:
        stan_data = common | dict(x=list(x[:, 0]), mu_loc=float(prior["mu_loc"][0]),
                                  mu_scale=float(prior["mu_scale"][0]), sigma_scale=float(prior["sigma_scale"][0]))
        inits = [{"w": list(s["w"]), "mu": list(s["mu"]), "sigma": list(s["sigma"])} for s in pm_starts]
        return stan_data, inits
    stan_data = common | dict(D=dim, x_t=x.T.tolist(), mu_loc=list(prior["mu_loc"]), mu_scale=list(prior["mu_scale"]),
                              sigma_scale=list(prior["sigma_scale"]), lkj_eta=model_def.priors.lkj_eta)
    inits = []
    for s in pm_starts:
        init = {"w": list(s["w"])}
        if cfg["ordered"]:
            init["mu_first"] = list(s["mu_first"])
            init["mu_rest"] = [list(r) for r in s["mu_rest"]]
        else:
            init["mu"] = [list(r) for r in s["mu"]]
        tau, corr = [], []
        for j in range(cfg["k"]):
            chol = np.zeros((dim, dim))
            chol[np.tril_indices(dim)] = s[f"chol_cov_{j}"]
            cov = chol @ chol.T
            sd = np.sqrt(np.diag(cov))
            tau.append(list(sd))
            corr.append(np.linalg.cholesky(cov / np.outer(sd, sd)).tolist())
        inits.append(init | {"tau": tau, "L_corr": corr})
    return stan_data, inits


def _tree_draws(tree, names) -> dict[str, np.ndarray]:
    post = tree["posterior"]
    return {name: post[name].transpose("chain", "draw", ...).values for name in names if name in post.data_vars}


def _stan_draws(fit, names, chains: int) -> dict[str, np.ndarray]:
    """fit[name] is (*dims, draws * chains) with draw t of chain c at t * chains + c (stan.fit.Fit)."""
    out = {}
    for name in names:
        if name not in fit:
            continue
        values = fit[name]
        values = np.asarray(values)
        dims = values.shape[:-1]
        values = values.reshape(*dims, -1, chains)  # (*dims, T, C)
        out[name] = np.moveaxis(values, (-1, -2), (0, 1))
    return out


def _run_engine(engine, cfg, model_def, data, x, pm_starts, fewest_points, args):
    """Sample; returns (draws name -> (C, T, K, ...), divergences, seconds of sampling, seconds in call).

    The PyMC engines get emvsbayes's defaults, target acceptance by the pipeline's ``"auto"`` rule
    (``fewest_points``: the smallest EM component's expected number of points)."""
    from emvsbayes.sampling import SamplerSettings, resolve_target_accept

    base = SamplerSettings()
    chains = args.chains or base.chains
    draws = args.draws or base.draws
    tune = args.tune or base.tune
    target_accept = args.target_accept or resolve_target_accept("auto", fewest_points)
    names = {"coins": ("theta",), "hmm": ("initial", "transition", "rate")}.get(cfg["family"], ("w", "mu", "sigma", "cov"))
    if engine == "stan":
        import stan

        stan_data, inits = _stan_data_and_inits(cfg, model_def, data, x, pm_starts)
        code = (STAN_DIR / cfg["stan"]).read_text()
        start = time.perf_counter()
        posterior = stan.build(code, data=stan_data, random_seed=args.seed)
        built = time.perf_counter()
        # Stan at its own default adapt_delta (0.8) unless --target-accept is given: the reference is
        # Stan as its users run it, not Stan at emvsbayes's (higher) default.
        delta = args.target_accept or STAN_DEFAULT_DELTA
        fit = posterior.sample(num_chains=chains, num_samples=draws, num_warmup=tune, delta=delta,
                               init=[inits[c % len(inits)] for c in range(chains)])
        done = time.perf_counter()
        divergences = int(np.asarray(fit["divergent__"]).sum())
        return _stan_draws(fit, names, chains), divergences, done - built, done - start

    from emvsbayes.sampling import ModelRecipe, sample_posterior

    if cfg["family"] == "hmm":
        from emvsbayes.family import get_family

        recipe = get_family("hmm").model_recipe(model_def, data)
    else:
        if cfg["family"] == "coins":
            from emvsbayes.coins.bayes import build_model
        else:
            from emvsbayes.gaussian.bayes import build_model
        args_model = (data.heads, data.tosses) if cfg["family"] == "coins" else (x,)
        # As the pipeline passes it: a recipe, built only when its compiled sampler is not stored yet.
        recipe = ModelRecipe(build_model, (model_def, *args_model))
    settings = SamplerSettings(sampler=engine, chains=chains, draws=draws, tune=tune, target_accept=target_accept)
    outcome = sample_posterior(recipe, settings, args.seed, pm_starts, log_likelihood=False)
    tree = outcome.tree
    seconds_sampling, seconds_call = outcome.seconds_sampling, outcome.seconds_total
    divergences = int(tree["sample_stats"]["diverging"].values.sum())
    return _tree_draws(tree, names), divergences, seconds_sampling, seconds_call


def _relabel(cfg, model_def, data, x, draws):
    """Stephens' relabelling of a symmetric model's draws (C, T, K, ...), chains kept apart."""
    from emvsbayes.labels import apply_permutations, relabel

    c, t = next(iter(draws.values())).shape[:2]
    flat = {name: v.reshape(c * t, *v.shape[2:]) for name, v in draws.items()}
    label_axes = None
    if cfg["family"] == "hmm":
        from emvsbayes.hmm.bayes import state_probabilities

        probs = state_probabilities(model_def, data.y, flat)  # (S, T, K): smoothed state probabilities per draw
        label_axes = {"transition": (1, 2)}
    elif cfg["family"] == "coins":
        from emvsbayes.coins.bayes import membership_probabilities

        w = np.broadcast_to(model_def.equal_weights, flat["theta"].shape)
        probs = membership_probabilities(model_def, data.heads, data.tosses, flat["theta"], w)
    else:
        from emvsbayes.gaussian.bayes import membership_probabilities

        probs = membership_probabilities(model_def, x, flat)
    perms = relabel("stephens", probs=probs).perms
    out = apply_permutations(flat, perms, label_axes)
    return {name: v.reshape(c, t, *v.shape[1:]) for name, v in out.items()}


def _matrix(draws) -> np.ndarray:
    """(C, T, P): every scalar of every reported variable."""
    c, t = next(iter(draws.values())).shape[:2]
    return np.concatenate([v.reshape(c, t, -1) for v in draws.values()], axis=2)


def _diagnostics(cfg, model_def, x, draws) -> dict:
    from arviz_stats.base import array_stats

    from emvsbayes.labels import modes_up_to_permutation

    values = _matrix(draws)  # (C, T, P)
    values = values[:, :, np.ptp(values.reshape(-1, values.shape[2]), axis=0) > 0]
    arr = np.moveaxis(values, 2, 0)  # (P, C, T)
    c = arr.shape[1]
    bulk = array_stats.ess(arr, method="bulk")
    tail = array_stats.ess(arr, method="tail", prob=(0.05, 0.95))
    rhat = array_stats.rhat(arr)
    per_chain_bulk = np.array([np.nanmin(array_stats.ess(arr[:, i : i + 1], method="bulk")) for i in range(c)])
    per_chain_tail = np.array([np.nanmin(array_stats.ess(arr[:, i : i + 1], method="tail", prob=(0.05, 0.95))) for i in range(c)])
    # per-chain layout (T, K, ...): a transition matrix's rows and columns are axes 1 and 2
    label_axes = {"transition": (1, 2)} if cfg["family"] == "hmm" else None
    modes = modes_up_to_permutation(draws, label_axes=label_axes).mode if c > 1 else np.zeros(1, dtype=int)
    mode_rhat, mode_ess = [], []
    for m in np.unique(modes):
        members = np.flatnonzero(modes == m)
        sub = arr[:, members]
        mode_rhat.append(float(np.nanmax(array_stats.rhat(sub))))
        mode_ess.append(float(np.nanmin(array_stats.ess(sub, method="bulk"))))
    degenerate = []
    if cfg["family"] == "gaussian":
        n = x.shape[0]
        sd_data = x.std(axis=0)
        w_mean = draws["w"].mean(axis=1)  # (C, K)
        if "sigma" in draws:
            sd_share = (draws["sigma"].mean(axis=1) / sd_data[0]).min(axis=1)
        else:
            diag = np.diagonal(draws["cov"], axis1=-2, axis2=-1)  # (C, T, K, D)
            sd_share = (np.sqrt(diag).mean(axis=1) / sd_data).min(axis=(1, 2))
        degenerate = [int(i) for i in np.flatnonzero((w_mean.min(axis=1) * n < DEGENERATE_POINTS)
                                                     | (sd_share < DEGENERATE_SD_SHARE))]
    return dict(ess_bulk=float(np.nanmin(bulk)), ess_tail=float(np.nanmin(tail)), rhat=float(np.nanmax(rhat)),
                chain_ess_bulk=per_chain_bulk.tolist(), chain_ess_tail=per_chain_tail.tolist(),
                modes=[int(m) for m in modes], mode_rhat=mode_rhat, mode_ess_bulk=mode_ess,
                degenerate_chains=degenerate)


def worker(args) -> None:
    wall_start = time.perf_counter()
    cfg = MODELS[args.model]
    data = _load(cfg)
    if cfg["family"] == "hmm":
        model_def, _, pm_starts, fewest_points = _hmm_setup(cfg, data)
        x, dim = None, 1
    elif cfg["family"] == "coins":
        from emvsbayes.coins.bayes import initvals_from_params

        model_def, params = _coins_setup(cfg, data)
        x, pm_starts, dim = None, initvals_from_params(model_def, [params]), 1
        fewest_points = float("inf")  # no scale parameters: see emvsbayes.coins.family.CoinFamily.target_accept
    else:
        from emvsbayes.gaussian.bayes import initvals_from_params

        model_def, x, start_params = _gaussian_setup(cfg, data)
        pm_starts, dim = initvals_from_params(model_def, start_params), x.shape[1]
        fewest_points = float(np.min(start_params[0].w)) * x.shape[0]
    seconds_setup = time.perf_counter() - wall_start
    draws, divergences, seconds_sampling, seconds_call = _run_engine(args.engine, cfg, model_def, data, x,
                                                                     pm_starts, fewest_points, args)
    if not cfg["ordered"]:
        draws = _relabel(cfg, model_def, data, x, draws)
    result = _diagnostics(cfg, model_def, x, draws)
    result |= dict(model=args.model, engine=args.engine, divergences=divergences, seconds_sampling=seconds_sampling,
                   seconds_call=seconds_call, seconds_em=seconds_setup, n_starts=len(pm_starts),
                   default_engine=_default_engine(cfg, len(pm_starts), dim),
                   seconds_worker=time.perf_counter() - wall_start)
    Path(args.json).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------------
# Parent: subprocesses, cold and warm, and the tables


def cache_env(cache: Path) -> dict[str, str]:
    """Environment pointing every compile cache at ``cache`` (a fresh directory = cold)."""
    env = dict(os.environ)
    env |= {
        "PYTENSOR_FLAGS": f"base_compiledir={cache / 'pytensor'}",  # PyMC's C code and nutpie's numba code
        "NUMBA_CACHE_DIR": str(cache / "numba"),  # numba's own cache=True functions
        "XDG_CACHE_HOME": str(cache / "xdg"),  # httpstan's compiled Stan models
        "JAX_COMPILATION_CACHE_DIR": str(cache / "jax"),
        "EMVSBAYES_PROGRAM_CACHE_DIR": str(cache / "programs"),  # emvsbayes's exported numpyro samplers
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",  # numpyro: chains in parallel on CPU
        "PYTHONWARNINGS": "ignore",
    }
    return env


def run_one(model: str, engine: str, cache: Path, args, tag: str, *, retries: int = 2) -> dict:
    """One worker subprocess with its caches under ``cache``; its output is kept in ``cache/*.log``. The
    result's ``cache`` is the directory the successful attempt used (the warm runs reuse it)."""
    out = cache / f"{model}_{engine}_{tag}.json"
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--engine", engine, "--seed", str(args.seed),
           "--json", str(out)]
    for name in ("chains", "draws", "tune", "target_accept"):
        if getattr(args, name):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=cache_env(cache), capture_output=True, text=True)
    wall = time.perf_counter() - start
    (cache / f"{model}_{engine}_{tag}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        error = (lines[-1] if lines else f"exit status {proc.returncode}")[:300]
        if retries:
            # pystan 3.14 now and then fails to parse its own server's output (orjson "unexpected content
            # after document"), and its client gives up on a compile that takes over 5 minutes (aiohttp
            # TimeoutError: a cold build on the loaded machine); another attempt (cold: in a fresh cache)
            # normally succeeds.
            fresh = cache / f"retry-{tag}" if tag == "cold" else cache
            fresh.mkdir(exist_ok=True)
            result = run_one(model, engine, fresh, args, tag, retries=retries - 1)
            result["retried_after"] = error
            return result
        return dict(model=model, engine=engine, error=error, wall=wall)
    result = json.loads(out.read_text())
    result["wall"] = wall
    result["cache"] = str(cache)
    return result


def _fmt(value, spec=".0f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, spec)


def print_table(model: str, results: dict) -> None:
    print(f"\n== {model} ==")
    header = (f"{'engine':<9}{'default':>8} | {'bulk':>6} {'tail':>6} {'R-hat':>6} {'div':>4} | {'chain bulk sum':>14} "
              f"{'min':>5} | {'modes':>9} {'mode R-hat':>10} | {'sampling s':>10} {'bulk/s':>7} {'chain/s':>8} | "
              f"{'cold s':>7} {'warm s':>7} | degenerate")
    print(header)
    print("-" * len(header))
    for engine, r in results.items():
        cold, warm = r.get("cold"), r.get("warm", [])
        if cold is None or "error" in cold:
            error = (cold or {}).get("error", "not run")
            print(f"{engine:<9}{'':>8} | FAILED: {error}")
            continue
        ok = [w for w in warm if "error" not in w]
        best = ok[0] if ok else cold
        warm_s = float(np.median([w["wall"] for w in ok])) if ok else float("nan")
        retried = [r["retried_after"] for r in [cold, *warm] if "retried_after" in r]
        rate = best["ess_bulk"] / best["seconds_sampling"]
        chain_rate = sum(best["chain_ess_bulk"]) / best["seconds_sampling"]
        counts = np.bincount(best["modes"])
        print(f"{engine:<9}{'yes' if best['default_engine'] == engine else '':>8} | {best['ess_bulk']:>6.0f} "
              f"{best['ess_tail']:>6.0f} {best['rhat']:>6.3f} {best['divergences']:>4d} | "
              f"{sum(best['chain_ess_bulk']):>14.0f} {min(best['chain_ess_bulk']):>5.0f} | "
              f"{'+'.join(map(str, counts)):>9} {np.nanmax(best['mode_rhat']):>10.3f} | {best['seconds_sampling']:>10.2f} "
              f"{rate:>7.0f} {chain_rate:>8.0f} | {cold['wall']:>7.1f} {warm_s:>7.1f} | "
              f"{best['degenerate_chains'] or 'none'}{'; retried after: ' + retried[0] if retried else ''}"
              f"{''.join('; a warm run failed: ' + w['error'] for w in warm if 'error' in w)}")


def _summary(r: dict) -> tuple[dict | None, float]:
    """The first successful warm run (else the cold one) and the median warm whole-process seconds."""
    ok = [w for w in r.get("warm", []) if "error" not in w]
    first = ok[0] if ok else r.get("cold")
    if first is None or "error" in first:
        return None, np.nan
    return first, (float(np.median([w["wall"] for w in ok])) if ok else np.nan)


def print_ratios(all_results: dict) -> None:
    print("\n== each engine / Stan (targets for the emvsbayes default, marked *: ESS/s of sampling >= 2, "
          "whole process <= 1, within-mode R-hat <= 1.01, no degenerate chain) ==")
    header = (f"{'model':<20} {'engine':<9} | {'pooled bulk/s':>13} {'chain bulk/s':>12} | {'warm wall':>9} "
              f"{'cold wall':>9} | {'mode R-hat':>10} {'degenerate':>10}")
    print(header)
    print("-" * len(header))
    for model, results in all_results.items():
        s, s_warm = _summary(results.get("stan", {}))
        if s is None:
            print(f"{model:<20} (Stan failed: no ratios)")
            continue
        s_cold = results["stan"]["cold"].get("wall", np.nan)
        for engine, r in results.items():
            o, o_warm = _summary(r)
            if engine == "stan" or o is None:
                continue
            mark = "*" if o["default_engine"] == engine else ""
            pooled = (o["ess_bulk"] / o["seconds_sampling"]) / (s["ess_bulk"] / s["seconds_sampling"])
            chain = (sum(o["chain_ess_bulk"]) / o["seconds_sampling"]) / (sum(s["chain_ess_bulk"]) / s["seconds_sampling"])
            print(f"{model:<20} {engine + mark:<9} | {pooled:>13.2f} {chain:>12.2f} | {o_warm / s_warm:>9.2f} "
                  f"{r['cold'].get('wall', np.nan) / s_cold:>9.2f} | {np.nanmax(o['mode_rhat']):>10.3f} "
                  f"{str(o['degenerate_chains'] or 'none'):>10}")


def versions() -> str:
    out = []
    for name in ("pymc", "nutpie", "numpyro", "jax", "stan", "httpstan"):
        try:
            module = __import__(name)
            out.append(f"{name} {getattr(module, '__version__', '?')}")
        except Exception as error:  # noqa: BLE001 - reported, the benchmark goes on without it
            out.append(f"{name}: NOT AVAILABLE ({type(error).__name__}: {error})")
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--warm-repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--tune", type=int, default=None)
    parser.add_argument("--target-accept", type=float, default=None)
    parser.add_argument("--json-out", default=None, help="write every raw result here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {versions()}")
    print("sampling s = tuning + draws; bulk/s = min bulk-ESS / sampling s; chain/s = sum over chains of each "
          "chain's own min bulk-ESS / sampling s; cold/warm s = whole subprocess")
    all_results: dict = {}
    with tempfile.TemporaryDirectory(prefix="emvsbayes-samplers-") as root:
        for model in args.models:
            results = {engine: {} for engine in args.engines}
            caches = {engine: Path(root) / f"{model}-{engine}" for engine in args.engines}
            for engine in args.engines:
                caches[engine].mkdir()
                results[engine]["cold"] = run_one(model, engine, caches[engine], args, "cold")
                # warm = the caches the successful cold attempt filled (a retried cold run used a fresh one)
                caches[engine] = Path(results[engine]["cold"].get("cache", caches[engine]))
            for rep in range(args.warm_repeats):
                for engine in args.engines:
                    results[engine].setdefault("warm", []).append(run_one(model, engine, caches[engine], args,
                                                                          f"warm{rep}"))
            all_results[model] = results
            print_table(model, results)
            sys.stdout.flush()
    print_ratios(all_results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(all_results, indent=1))


if __name__ == "__main__":
    main()
