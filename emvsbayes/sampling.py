"""Running PyMC's samplers the same way for every model family.

Chains start from EM answers. numpyro and PyMC's own NUTS take one starting point per chain, so
different chains can start from different EM optima (then R-hat can still see a second mode); nutpie
takes a single starting point for all chains. Jitter is turned off for all: the EM answer is a good
start and jitter can push a chain out of it into a degenerate region.

The default ("auto") is numpyro's NUTS on the PyMC model's JAX log-density (the same program
``pm.sample(nuts_sampler="numpyro")`` runs, driven here directly: see ``_sample_numpyro``). In
``benchmarks/samplers.py`` it samples fastest per second on the Gaussian models and has the shortest
whole process of the PyMC engines on every model, because JAX keeps its compiled programs in a
persistent cache (nutpie rebuilds numba wrappers for ~7 s in every process; PyMC's NUTS samples
3-10x slower). Nothing on the numpyro path compiles C: PyMC's initial-point function runs on
PyTensor's Python linker, the log-likelihood for LOO is computed by JAX.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SAMPLERS = ("numpyro", "nutpie", "pymc")
#: NUTS's target acceptance rate by default. Higher than Stan's and PyMC's 0.8: mixture posteriors have
#: narrow regions (a small component's scale) where 0.8's step size diverges and chains stall. On
#: galaxies K = 3 (ordered, 4 seeds, benchmarks/README.md) 0.8 gave max R-hat 1.009-1.052 and 4-25
#: divergences, 0.95 gave 1.004-1.013 and 0-1, at 1.5x the sampling time, which numpyro can afford.
TARGET_ACCEPT = 0.95
#: What ``sampler = "auto"`` means (see the module docstring for the measurements behind it).
DEFAULT_SAMPLER = "numpyro"
#: Virtual XLA CPU devices, so numpyro runs up to this many chains in parallel (``chain_method="parallel"``).
JAX_DEVICES = 8


def resolve_sampler(name: str) -> str:
    """The sampler a spec's ``sampler`` names: ``"auto"`` -> :data:`DEFAULT_SAMPLER`."""
    return DEFAULT_SAMPLER if name == "auto" else name


def configure_jax() -> None:
    """Set JAX up before its first computation: several CPU devices (parallel chains) and a persistent
    compilation cache for every program, so a second run of a model loads its compiled sampler
    instead of rebuilding it.

    The cache lives in ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/emvsbayes/jax``
    (``~/.cache/emvsbayes/jax``). The device count cannot change once JAX has computed anything.
    """
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={JAX_DEVICES}".strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(base, "emvsbayes", "jax")
    # JAX caches only programs that took longer than a second to compile unless told otherwise; the
    # samplers here are many small programs whose compile time adds up.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # PyMC imports part of JAX, which reads its configuration then: set the cache through the config
    # too (the device count is read later, when JAX first starts its backend).
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """How to sample: which sampler, chains, draws after ``tune`` tuning steps, NUTS target acceptance."""

    sampler: str = DEFAULT_SAMPLER
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    target_accept: float = TARGET_ACCEPT
    cores: int | None = None


@dataclass(frozen=True, slots=True)
class SamplingOutcome:
    """The draws (an ``xarray.DataTree`` as PyMC returns it) and how long each stage took, in seconds.

    ``seconds_sampling``: tuning + draws; ``seconds_total``: the whole call. ``stages`` splits the call
    where the sampler lets us see inside (numpyro: ``build`` = the JAX log-density and the start checks,
    ``compile`` = JAX's tracing, lowering and compiling or loading from its cache, ``tune_and_draws``
    (one compiled loop), ``constrain_and_log_likelihood`` (draws back to the model's variables, pointwise
    log-likelihood)); each without the compiling inside it; empty otherwise.
    """

    tree: object
    sampler: str
    seconds_sampling: float
    seconds_total: float
    stages: dict = field(default_factory=dict)


def available_cores() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)))


def _finite_points(model, initvals: Sequence[dict], value_and_grad) -> list[tuple[dict, dict]]:
    """(start, its point on the unconstrained scale) for the starts at which ``value_and_grad(point)``
    gives a finite log-density and gradient.

    An EM answer can sit where the prior has no density (a covariance at the edge of positive
    definiteness, a weight of exactly 0); such a start would stop the sampler, so it is dropped and
    the chains use the other starts, or PyMC's own initial point when none is left.
    """
    from pymc.initial_point import make_initial_point_fn

    kept = []
    for start in initvals:
        try:
            point = make_initial_point_fn(model=model, overrides=start, jitter_rvs=set(), return_transformed=True)(0)
            value, grads = value_and_grad(point)
        except (ValueError, TypeError, FloatingPointError):
            continue
        if np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads):
            kept.append((start, point))
    return kept


def finite_starts(model, initvals: Sequence[dict]) -> list[dict]:
    """The starts at which the model's log-density and gradient, by PyMC's C functions, are finite
    (see :func:`_finite_points`; the numpyro path checks with its JAX log-density)."""
    if not initvals:
        return []
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    return [start for start, _ in _finite_points(model, initvals, lambda point: (logp(point), [dlogp(point)]))]


def sample_posterior(
    model,
    settings: SamplerSettings,
    seed: int,
    initvals: Sequence[dict] | None = None,
    *,
    progressbar: bool = False,
    log_likelihood: bool = True,
) -> SamplingOutcome:
    """Sample ``model`` (a ``pymc.Model``) and add its pointwise log-likelihood.

    Parameters
    ----------
    model
        The PyMC model.
    settings
        Sampler choice and sizes.
    seed
        Integer seed for the sampler.
    initvals
        Starting points, one dict per chain (cycled if fewer). nutpie uses only the first.
    """
    sampler = resolve_sampler(settings.sampler)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}")
    # The sampler's own progress bar redraws with control characters: only on a terminal.
    progressbar = progressbar and sys.stdout.isatty()
    if sampler == "numpyro":
        return _sample_numpyro(model, settings, seed, initvals or [], progressbar, log_likelihood)
    import pymc as pm

    kwargs: dict = dict(
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        random_seed=seed,
        progressbar=progressbar,
        nuts_sampler=sampler,
        model=model,
        compute_convergence_checks=False,
    )
    start = time.perf_counter()
    kwargs["cores"] = settings.cores or min(settings.chains, available_cores())
    initvals = finite_starts(model, initvals or [])
    if initvals:
        starts = [dict(initvals[i % len(initvals)]) for i in range(settings.chains)]
        if sampler == "nutpie":
            kwargs["initvals"] = starts[0]
            # nutpie jitters every start by U(-1, 1) on the unconstrained scale unless told not to;
            # that can throw a chain from the EM answer into a degenerate mode.
            kwargs["compile_kwargs"] = {"jitter_rvs": set()}
        else:
            kwargs["initvals"] = starts
            kwargs["init"] = "adapt_diag"
    kwargs["nuts"] = {"target_accept": settings.target_accept}
    with warnings.catch_warnings():
        # PyMC warns about short chains in quick runs; the report shows R-hat and ESS itself.
        warnings.filterwarnings("ignore", message=".*samples per chain.*")
        warnings.filterwarnings("ignore", message=".*number of samples is too small.*")
        try:
            tree = pm.sample(**kwargs)
        except RuntimeError as error:
            # nutpie evaluates the start with its own (numba) log-density; where that fails although
            # PyMC's is finite ("All initialization points failed"), PyMC's NUTS takes over the run.
            if sampler != "nutpie" or "initializ" not in str(error):
                raise
            sampler = "pymc"
            kwargs.update(nuts_sampler="pymc", init="adapt_diag")
            kwargs.pop("compile_kwargs", None)
            if initvals:
                kwargs["initvals"] = [dict(initvals[i % len(initvals)]) for i in range(settings.chains)]
            tree = pm.sample(**kwargs)
        if log_likelihood:
            tree = pm.compute_log_likelihood(tree, model=model, progressbar=False)
    total = time.perf_counter() - start
    seconds_sampling = float(tree["posterior"].attrs.get("sampling_time", np.nan))
    return SamplingOutcome(tree, sampler, seconds_sampling, total)


# --------------------------------------------------------------------------------------------------
# numpyro, driven directly
#
# pm.sample(nuts_sampler="numpyro") does the same sampling, but in a fresh process it also builds PyMC's
# own step methods (a gradient graph numpyro never uses, ~1.3 s) and the JAX log-density twice (once
# more for any start check, ~1.1 s each): a quarter of a warm whole run on Old Faithful. Here the
# log-density is built once and serves the start check and the sampler, and JAX's compile time
# (tracing, lowering, loading from the persistent cache) is counted apart from sampling. The pieces
# taken from PyMC (JAX graph of the model, the transformation of draws back to the constrained
# variables, coordinates, observed data) are those pm.sample's own numpyro path uses.


class _CompileClock:
    """Seconds JAX spends compiling (tracing, lowering, XLA compile or cache load) while installed."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, event: str, duration: float, **_) -> None:
        if event in self.EVENTS:
            self.seconds += duration

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        from jax._src import monitoring

        monitoring.unregister_event_duration_listener(self)


def _start_points(model, initvals: Sequence[dict], logp_fn, chains: int) -> list[np.ndarray] | None:
    """Chain-major unconstrained starting values (one array per value variable, leading axis the
    chain) from the EM answers at which numpyro's log-density and gradient are finite; None if there
    are none (numpyro then starts from PyMC's initial point)."""
    import jax

    # Compiled (and cached) rather than run eagerly: eagerly, JAX compiles and loads every operation on
    # its own, 1.1-1.4 s on Old Faithful against 0.4 s (measured, warm cache).
    value_and_grad = jax.jit(jax.value_and_grad(logp_fn))

    def evaluate(point):
        return value_and_grad([jax.numpy.asarray(point[v.name]) for v in model.value_vars])

    points = [[np.asarray(point[v.name]) for v in model.value_vars]
              for _, point in _finite_points(model, initvals, evaluate)]
    if not points:
        return None
    chosen = [points[c % len(points)] for c in range(chains)]
    return [np.stack([p[i] for p in chosen]) for i in range(len(model.value_vars))]


def _sample_numpyro(model, settings: SamplerSettings, seed: int, initvals: Sequence[dict], progressbar: bool,
                    log_likelihood: bool) -> SamplingOutcome:
    import pytensor

    configure_jax()
    started = time.perf_counter()
    stages: dict[str, float] = {}
    # Everything PyMC compiles here besides the JAX programs (the initial-point functions) is tiny:
    # PyTensor's Python linker runs it at once, where a cold C compile costs ~20 s.
    with pytensor.config.change_flags(cxx=""), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*There are not enough devices.*")
        import jax
        import numpyro
        from arviz_base import from_dict, make_attrs
        from numpyro.infer import MCMC, NUTS
        from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants, find_observations
        from pymc.sampling.jax import _numpyro_stats_to_dict, _postprocess_samples, get_jaxified_graph, get_jaxified_logp
        from pymc.util import get_default_varnames

        with _CompileClock() as clock:
            logp_fn = get_jaxified_logp(model, negative_logp=False)
            init_params = _start_points(model, initvals, logp_fn, settings.chains)
            if init_params is None:
                point = model.initial_point()
                init_params = [np.broadcast_to(point[v.name], (settings.chains, *np.shape(point[v.name]))).copy()
                               for v in model.value_vars]
            # One virtual device per chain runs the chains in parallel; with fewer (JAX initialised
            # before configure_jax could set the flag) the chains run vectorised on one device.
            chain_method = "parallel" if jax.local_device_count() >= settings.chains else "vectorized"
            kernel = NUTS(potential_fn=logp_fn, target_accept_prob=settings.target_accept, adapt_step_size=True,
                          adapt_mass_matrix=True, dense_mass=False)
            mcmc = MCMC(kernel, num_warmup=settings.tune, num_samples=settings.draws, num_chains=settings.chains,
                        chain_method=chain_method, progress_bar=progressbar)
            keys = jax.random.split(jax.random.PRNGKey(seed), settings.chains)
            setup_compile = clock.seconds
            # Each stage's wall time less the JAX compiling inside it, which has a stage of its own.
            stages["build"] = time.perf_counter() - started - setup_compile

            # Warm-up and draws run as one compiled loop: as two calls (warmup(), then run()) each would be
            # traced and compiled on its own, 0.6 s more per run (measured, galaxies, warm cache), so the
            # sampler's clock covers both.
            begin = time.perf_counter()
            mcmc.run(keys, init_params=init_params,
                     extra_fields=("num_steps", "potential_energy", "energy", "adapt_state.step_size",
                                   "accept_prob", "diverging"))
            raw = mcmc.get_samples(group_by_chain=True)
            jax.block_until_ready(raw)
            run_wall, run_compile = time.perf_counter() - begin, clock.seconds - setup_compile
            sample_stats = _numpyro_stats_to_dict(mcmc)

            begin, compiled_before = time.perf_counter(), clock.seconds
            names = list(get_default_varnames(model.unobserved_value_vars, include_transformed=False))
            constrain = get_jaxified_graph(inputs=model.value_vars, outputs=names)
            raw_list = [raw[v.name] if isinstance(raw, dict) else raw[i] for i, v in enumerate(model.value_vars)]
            values = _postprocess_samples(constrain, raw_list, postprocessing_vectorize="vmap")
            posterior = {v.name: np.asarray(r) for v, r in zip(names, values)}
            log_lik = None
            if log_likelihood:
                pointwise = model.logp(model.observed_RVs, sum=False)
                per_point = get_jaxified_graph(inputs=model.value_vars, outputs=pointwise)
                log_lik = {v.name: np.asarray(r) for v, r in
                           zip(model.observed_RVs, _postprocess_samples(per_point, raw_list, postprocessing_vectorize="vmap"))}
            stages["constrain_and_log_likelihood"] = time.perf_counter() - begin - (clock.seconds - compiled_before)
        stages["compile"] = clock.seconds
        stages["tune_and_draws"] = run_wall - run_compile

        coords, dims = coords_and_dims_for_inferencedata(model)
        groups = {"posterior": posterior, "sample_stats": {k: np.asarray(v) for k, v in sample_stats.items()}}
        if log_lik is not None:
            groups["log_likelihood"] = log_lik
        observed = find_observations(model)
        if observed is not None:
            groups["observed_data"] = observed
        constant = find_constants(model)
        if constant is not None:
            groups["constant_data"] = constant
        seconds_sampling = stages["tune_and_draws"]
        attrs = {"posterior": make_attrs({"sampling_time": seconds_sampling, "tuning_steps": settings.tune},
                                         inference_library=numpyro)}
        tree = from_dict(data=groups, coords=coords, dims=dims, sample_dims=["chain", "draw"], attrs=attrs)
    return SamplingOutcome(tree, "numpyro", seconds_sampling, time.perf_counter() - started, stages)
