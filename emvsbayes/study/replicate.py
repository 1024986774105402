"""One replicate of a study as a pure function of (spec, cell index, replicate index).

:func:`run_task` is what a Dask worker runs. Everything random comes from
``np.random.SeedSequence(spec["seed"], spawn_key=(cell_index, replicate))`` (the truth of a cell from
``spawn_key=(cell_index,)``), so a replicate's numbers do not depend on the worker, the number of
workers or the order in which replicates finish.

A coverage replicate: simulate data from the cell's truth; EM from ``n_init`` starts (and the number of
distinct optima they reach); the EM answer aligned to the truth (its labels are arbitrary); Wald
(coins), bootstrap and posterior intervals; posterior draws relabelled by pivoting to the EM answer or
to the truth; bias, squared error, coverage and width per parameter; R-hat, ESS per second,
divergences and label switching of the chains; time per stage.

A cell's sampler is obtained once per worker process and kept in a module-level cache
(:data:`_SAMPLERS`), keyed by everything that shapes it; replicates pass their data to it. numpyro
(the Gaussian default): the exported programs of :mod:`emvsbayes.sampling.programs` with the observed
data as an argument, stored on disk under the model's shape, so the first worker to need them builds
them and every other loads them; keys come from the replicate's sampler seed only. nutpie and PyMC's
NUTS: the PyMC model with ``pm.Data`` containers (``with_data`` for nutpie's compiled model,
``pm.set_data`` for PyMC's), nutpie compiled without numba's fastmath so that a fresh compile and a
cached one give the same bits. :func:`compile_count` reports how many samplers this process obtained.

Everything a replicate needs of its model family comes from the family (:mod:`emvsbayes.family`): the
cell's model, truth and data (``study_model``, ``study_truth``, ``study_data``), EM, the Wald intervals
(:func:`emvsbayes.uncertainty.standard_errors`) and the bootstrap
(:func:`emvsbayes.uncertainty.run_bootstrap`, as a run computes them). The sampler takes the data as
named arrays (``family.as_arrays``).

Records are plain JSON-able dicts (see :func:`record`), stored one file per replicate by
:mod:`emvsbayes.study.run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np

from emvsbayes.em import RestartPolicy, fit_em_until
from emvsbayes.errors import DegenerateFitError
from emvsbayes.family import Family, get_family
from emvsbayes.labels import apply_permutations, chain_permutations, distinct_optima, pivot
from emvsbayes.sampling.convergence import ess_bulk, rhat_rank
from emvsbayes.seeds import int_seed, stage_seeds
from emvsbayes.study.spec import LADDER_KINDS, program_spec
from emvsbayes.uncertainty import run_bootstrap, standard_errors

#: Stages that get their own child seed, in this order (adding a stage at the end keeps old streams).
SEED_STAGES = ("data", "em", "bootstrap", "sampler", "ladder")

#: A failed EM restart or bootstrap refit is skipped; these are the failures that mean "this start
#: or resample cannot be fitted", not bugs.
FIT_FAILURES = (DegenerateFitError, np.linalg.LinAlgError, FloatingPointError)


# --------------------------------------------------------------------------------------------------
# Seeds


def replicate_seeds(study_seed: int, cell_index: int, replicate: int) -> dict[str, np.random.SeedSequence]:
    """One independent seed sequence per stage of replicate ``replicate`` of cell ``cell_index``."""
    return stage_seeds(np.random.SeedSequence(study_seed, spawn_key=(cell_index, replicate)), SEED_STAGES)


def cell_rng(study_seed: int, cell_index: int) -> np.random.Generator:
    """The generator of a cell's truth, shared by all its replicates."""
    return np.random.default_rng(np.random.SeedSequence(study_seed, spawn_key=(cell_index,)))


def study_family(spec: dict) -> Family:
    return get_family(spec["model"]["family"])


def cell_prior(spec: dict, cell: dict) -> dict:
    return spec["priors"][cell["prior"]]


# --------------------------------------------------------------------------------------------------
# EM


@dataclass(frozen=True, slots=True)
class EMOutcome:
    """The best EM fit, every successful restart's fit, and how many restarts failed."""

    best: object
    fits: tuple
    n_failed: int


def em_options(spec: dict) -> dict:
    em = spec["em"]
    return dict(tol=em["tol"], param_tol=em["param_tol"], max_iter=em["max_iter"], keep_stats=False)


def fit_em(family: Family, model_def, data, spec: dict, rng: np.random.Generator) -> EMOutcome:
    """EM from ``n_init`` starts; a start that cannot be fitted (a collapsing component) is skipped.

    The starts run as one batch where the family batches restarts (``restart_batches``: the Gaussian and
    Poisson soft EM of a small data set), through :func:`emvsbayes.em.fit_em_until` with a policy of exactly
    these starts, as a run's restarts do: one fit at a time spends ~1-3 ms per iteration in per-call
    overhead, and a replicate's 4 starts of up to 500 iterations were the largest stage of the bundled study.
    What a replicate records stays the one-at-a-time answer: every start whose batched log-likelihood is
    within :func:`emvsbayes.em.batched_rerun_margin` of the best (so may be the best one at a time), and every
    start the batch failed, is fitted again on its own, so the best fit, its log-likelihood, iterations and
    the sampler's starting point are bit for bit those of fitting the starts one after another (which of
    several starts that reach one optimum is "best" turns on the last bits). The other starts keep the
    batch's fit, equal to their own to rounding (1.2e-12 in log-likelihood on the bundled study): they
    only count the distinct optima (``n_distinct_optima``, 1e-3 apart) and the failed starts.
    """
    inits = family.random_starts(model_def, data, spec["em"]["n_init"], rng)
    if not inits:
        raise RuntimeError(f"every EM start failed (0 of {spec['em']['n_init']})")
    options = em_options(spec)
    restart_batches = getattr(family, "restart_batches", None)
    fit_batch, batch_size = restart_batches(model_def, data, options) if restart_batches is not None else (None, 1)
    queue = iter(inits)
    try:
        run = fit_em_until(partial(family.fit, model_def, data, **options), lambda: next(queue),
                           RestartPolicy(min_starts=len(inits), reach_best=1, max_starts=len(inits)),
                           skip=FIT_FAILURES, fit_batch=fit_batch, batch_size=batch_size)
    except FIT_FAILURES:
        raise RuntimeError(f"every EM start failed ({len(inits)} of {spec['em']['n_init']})") from None
    return EMOutcome(run.restarts.best, run.restarts.fits, len(run.failures))


def n_distinct_optima(family: Family, model_def, fits) -> int:
    stacked = {}
    for name in family.estimated_variables(model_def, fits[0].params):
        stacked[name] = np.stack([np.asarray(family.estimated_variables(model_def, f.params)[name]) for f in fits])
    # Constant variables carry no label information (and have no spread to standardise by).
    stacked = {name: value for name, value in stacked.items() if np.ptp(value) > 0} or stacked
    return len(distinct_optima(stacked, np.array([f.loglik for f in fits]), rtol=1e-3, atol=1e-4))


def align(family: Family, model_def, params, reference_vars: Mapping[str, np.ndarray]):
    """``params`` with its components renamed to match ``reference_vars`` best (a pivot)."""
    current = family.estimated_variables(model_def, params)
    draws = {name: np.asarray(value)[None] for name, value in current.items() if name in reference_vars}
    perm = pivot(draws, {name: np.asarray(reference_vars[name]) for name in draws}).perms[0]
    return params.permuted(perm)


# --------------------------------------------------------------------------------------------------
# Intervals besides the posterior's


def bootstrap_intervals(family: Family, model_def, data, estimate, spec: dict, seed) -> tuple[dict, int]:
    """Percentile intervals from the nonparametric bootstrap a run makes, or the parametric one for a family
    whose observations cannot be resampled (:func:`emvsbayes.uncertainty.run_bootstrap`: resample
    observations or simulate from the EM answer, refit EM from the EM answer,
    rename the refit's components to match it, in batches where that pays), quantiles of the estimated
    variables.

    Returns (name -> (lower, upper)), number of refits that failed.
    """
    prob = spec["intervals"]["prob"]
    reference = family.estimated_variables(model_def, estimate)
    # A family whose rows are dependent (a series) has no resample: its bootstrap simulates from the fit, as
    # a run's does (resampling the time points of a series would break its chain).
    kind = "parametric" if family.resample(data, np.random.default_rng(0)) is None else "nonparametric"
    result = run_bootstrap(family, model_def, data, estimate, n_boot=spec["intervals"]["bootstrap"], seed=seed,
                           kind=kind, n_workers=1, em_options=em_options(spec))
    kept = ~result.failed
    failed = int(result.failed.sum())
    if kept.sum() < 2:
        return {name: (np.full(np.shape(v), np.nan), np.full(np.shape(v), np.nan)) for name, v in reference.items()}, failed
    tail = (1 - prob) / 2
    return {name: tuple(np.quantile(result.draws[name][kept], [tail, 1 - tail], axis=0)) for name in reference}, failed


# --------------------------------------------------------------------------------------------------
# Sampling with a model compiled once per cell and worker

#: key (JSON of the model's shape-defining settings) -> _CellSampler, per worker process
_SAMPLERS: dict[str, _CellSampler] = {}
_SAMPLERS_LOCK = threading.Lock()
_COMPILE_COUNT = 0


def compile_count() -> int:
    """How many cell models this process has built and compiled."""
    return _COMPILE_COUNT


def clear_cache() -> None:
    """Forget the compiled models of this process (tests use it to count compilations)."""
    global _COMPILE_COUNT
    _SAMPLERS.clear()
    _COMPILE_COUNT = 0


@dataclass
class _CellSampler:
    """A cell's PyMC model with ``pm.Data`` in place of the observed data, and the compiled sampler.

    ``shared`` maps a data key (``"heads"``, ``"x"``) to the name of its data container.
    ``programs`` are numpyro's exported programs taking the containers' data as arguments (then
    ``model`` is None: a worker that loads them from disk never builds the PyMC model);
    ``compiled`` is nutpie's compiled model; ``step`` PyMC's NUTS (its compiled log-density and
    gradient are reused; PyMC resets the step's tuning at the start of every chain).
    """

    model: object
    shared: dict[str, str]
    sampler: str
    compiled: object = None
    step: object = None
    value_names: tuple[str, ...] = ()
    programs: object = None


def _observed_array(model, name: str, value: np.ndarray) -> np.ndarray:
    """The data as the observed variable holds it (a 1-D Gaussian's x is observed as a vector); a model
    whose family put its data in containers itself (no observed variable ``name``) holds it as its container."""
    holder = model[name] if name in model.named_vars else model[_container_name(name)]
    shape = tuple(int(s) for s in holder.shape.eval())
    return np.asarray(value).reshape(shape)


def _container_name(obs_name: str) -> str:
    return f"{obs_name}_data"


def model_with_containers(family_name: str, model_def, data: dict):
    """The cell's PyMC model with each observed variable's data in a ``pm.Data`` container named
    :func:`_container_name` (module level: numpyro's program recipe names it)."""
    import pymc as pm
    import pytensor

    family = get_family(family_name)
    with_containers = getattr(family, "pymc_model_with_containers", None)
    if with_containers is not None:
        # The family's likelihood is no observed variable (a hidden Markov model's is a potential of the
        # forward algorithm), so pm.observe has nothing to replace: the family builds its model with each
        # data array in the container named here.
        return with_containers(model_def, family.from_arrays(data),
                               {key: _container_name(obs) for obs, key in family.observed.items()})
    model = family.pymc_model(model_def, family.from_arrays(data))
    for obs_name, data_key in family.observed.items():
        container = pytensor.shared(_observed_array(model, obs_name, data[data_key]), name=_container_name(obs_name))
        dims = model.named_vars_to_dims.get(obs_name)
        # pm.observe replaces the constant observed values by the container; registering it makes it
        # a pm.Data container of the new model (pm.set_data works on it).
        model = pm.observe(model, {obs_name: container})
        model.register_data_var(container, dims=dims)
    return model


def _numpyro_programs(family_name: str, model_def, data: dict, spec: dict):
    """The cell's exported programs with the observed data as arguments: loaded from the program
    cache (:func:`emvsbayes.sampling.programs.cache_dir`) or built from the model and stored there.

    The recipe holds the data's shapes, not its values (observed arrays are zeros of the same shape,
    other data, such as the tosses of each coin set, are fixed by the cell and kept), so every
    replicate of a cell, on every worker, finds the same programs.
    """
    from emvsbayes.sampling import DEVICE_COUNT_FLAG, ModelRecipe, configure_jax
    from emvsbayes.sampling import programs as prog
    from emvsbayes.sampling.numpyro_nuts import build_with_data, obtain_programs

    configure_jax()
    import jax

    settings = program_spec(spec)
    if jax.local_device_count() < settings.layout.devices:
        have = jax.local_device_count()
        raise RuntimeError(f"this worker's JAX has {have} CPU device{'' if have == 1 else 's'}, the study's chains run on "
                           f"{settings.layout.devices}: start the workers with XLA_FLAGS="
                           f"--{DEVICE_COUNT_FLAG}={settings.layout.devices} or more (a worker whose JAX started "
                           "before emvsbayes configured it keeps the count it started with)")
    family = get_family(family_name)
    shaped = {key: (np.zeros_like(value) if key in family.observed.values() else np.asarray(value))
              for key, value in data.items()}
    recipe = ModelRecipe(model_with_containers, (family_name, model_def, shaped))
    names = [_container_name(obs) for obs in family.observed]
    with _one_builder(prog, recipe, settings):
        programs, obtained = obtain_programs(recipe, settings, build_with_data(names))
        if obtained == "built":
            _compile_executables(programs)
        return programs


def _compile_executables(programs) -> None:
    """Call each program a replicate calls once, on zero data, so that their XLA executables are compiled and
    stored in JAX's cache while the builder still holds the lock (:func:`_one_builder`): with cold caches the
    other workers waiting there then load the executables instead of each compiling them at once (a cold
    study on 2 workers compiled 51-63 s summed against 17 s on 1). The draws are thrown away; a replicate's
    own calls run the same executables (same shapes, dtypes and shardings), so its numbers do not change."""
    from functools import partial

    import jax

    from emvsbayes.sampling import programs as prog
    from emvsbayes.sampling.numpyro_nuts import _advance, data_arguments

    chains, block = programs.spec.layout.chains, programs.spec.block
    zeros = {name: np.zeros(shape) for name, shape, _ in programs.data_inputs}
    args, per_chain = data_arguments(programs, zeros, chains)
    fallback = programs.facts.fallback_point
    point = [np.asarray(fallback[name]) for name, _, _ in programs.facts.value_vars]
    programs.callable("potential_and_grad")(*args, *point)
    programs.callable("to_unconstrained")(*prog.free_rv_arrays(programs.facts, programs.facts.default_start))
    init = prog.stacked_values([point], chains)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), chains))
    state = programs.callable("init")(keys, *per_chain, *init)
    _, samples, _ = _advance(partial(programs.callable("steps"), *per_chain), state, 1, True)
    draws = programs.spec.draws // block * block
    full = [np.zeros((s.shape[0], draws, *s.shape[2:]), dtype=s.dtype) for s in samples]
    programs.callable("constrain")(*args, *full)


@contextlib.contextmanager
def _one_builder(prog, recipe, program_spec):
    """Held while a worker obtains a cell's programs: with cold caches, the workers' first replicates
    (often of cells of one model shape) would each build and store the same programs at once, every
    one importing PyMC and tracing the model while the others do the same. Under an exclusive lock on
    a file beside the stored programs, the first builds and stores them and the others wait, then
    load them. Without a key or a writable cache there is no lock (each builds, as before)."""
    if recipe.key is None:
        yield
        return
    directory = prog.cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / f"{prog.program_key(recipe.key, program_spec)}.lock", "a+b")  # noqa: SIM115
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_sampler(family_name: str, model_def, data: dict, sampler: str, spec: dict) -> _CellSampler:
    family = get_family(family_name)
    shared = {key: _container_name(obs) for obs, key in family.observed.items()}
    if sampler == "numpyro":
        return _CellSampler(None, shared, sampler, programs=_numpyro_programs(family_name, model_def, data, spec))
    import pymc as pm
    import pytensor

    model = model_with_containers(family_name, model_def, data)
    cell = _CellSampler(model, shared, sampler)
    logging.getLogger("pymc").setLevel(logging.ERROR)
    if sampler == "nutpie":
        import nutpie

        # numba's fastmath lets LLVM reassociate arithmetic differently in a fresh compile and in
        # code loaded from PyTensor's cache: the log-density's last bits then depend on the cache's
        # state, and NUTS turns those bits into different draws.
        with pytensor.config.change_flags(numba__fastmath=False):
            cell.compiled = nutpie.compile_pymc_model(model)
        cell.value_names = tuple(model.rvs_to_values[rv].name for rv in model.free_RVs)
    else:
        cell.step = pm.NUTS(model=model, target_accept=spec["bayes"]["target_accept"])
    return cell


def cell_sampler(family: Family, model_def, data: dict, cell: dict, spec: dict) -> tuple[_CellSampler, bool]:
    """The cached sampler of this model shape, built on first use; returns (sampler, compiled_now)."""
    global _COMPILE_COUNT
    family_name = spec["model"]["family"]
    key = json.dumps([repr(model_def), {k: np.shape(v) for k, v in data.items()}, cell["sampler"],
                      spec["bayes"]["target_accept"], spec["bayes"]["chains"], spec["bayes"]["tune"],
                      spec["bayes"]["draws"]], default=str)
    with _SAMPLERS_LOCK:  # threads of one worker process must not build the same model twice
        if key in _SAMPLERS:
            return _SAMPLERS[key], False
        _SAMPLERS[key] = _build_sampler(family_name, model_def, data, cell["sampler"], spec)
        _COMPILE_COUNT += 1
        return _SAMPLERS[key], True


@dataclass(frozen=True, slots=True)
class Draws:
    """Posterior draws of the reported variables, chain-major: name -> (chains * draws, K, ...)."""

    values: dict[str, np.ndarray]
    chains: int
    divergences: int
    seconds: float
    compile_seconds: float = 0.0  # JAX compiling (or loading from its cache) inside the call, not in ``seconds``


def sample(cell: _CellSampler, family: Family, model_def, data: dict, start, spec: dict, seed: int) -> Draws:
    """Swap ``data`` into the cell's model and sample, starting every chain at ``start`` (parameters)."""
    bayes = spec["bayes"]
    initvals = family.initvals(model_def, [start])[0]
    if cell.sampler == "numpyro":
        # No PyMC here: a worker that loads the cell's programs never imports it (a second per worker).
        return _sample_numpyro(cell, family, data, initvals, list(family.estimated_variables(model_def, start)), seed)
    import pymc as pm
    from pymc.initial_point import make_initial_point_fn

    values = {cell.shared[key]: _observed_array(cell.model, obs, data[key]) for obs, key in family.observed.items()}
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*samples per chain.*")
        warnings.filterwarnings("ignore", message=".*number of samples is too small.*")
        if cell.sampler == "nutpie":
            import nutpie

            point = make_initial_point_fn(model=cell.model, overrides=initvals, jitter_rvs=set(), return_transformed=True)(0)
            flat = np.concatenate([np.ravel(point[name]) for name in cell.value_names]).astype(float)
            compiled = dataclasses.replace(cell.compiled.with_data(**values), initial_point_func=lambda _seed: flat.copy())
            tree = nutpie.sample(compiled, draws=bayes["draws"], tune=bayes["tune"], chains=bayes["chains"], cores=1,
                                 seed=seed, progress_bar=False)
        else:
            pm.set_data(values, model=cell.model)
            tree = pm.sample(draws=bayes["draws"], tune=bayes["tune"], chains=bayes["chains"], cores=1,
                             random_seed=seed, step=cell.step, initvals=[initvals] * bayes["chains"],
                             model=cell.model, progressbar=False, compute_convergence_checks=False)
    seconds = time.perf_counter() - began
    posterior = tree["posterior"]
    names = family.estimated_variables(model_def, start)
    out = {}
    for name in names:
        da = posterior[name].transpose("chain", "draw", ...)
        out[name] = np.asarray(da.values, dtype=float).reshape(-1, *da.shape[2:])
    divergences = int(np.asarray(tree["sample_stats"]["diverging"].values).sum())
    return Draws(out, int(posterior.sizes["chain"]), divergences, seconds)


def _sample_numpyro(cell: _CellSampler, family: Family, data: dict, initvals: dict, names, seed: int) -> Draws:
    """The cell's numpyro programs on this replicate's data: chains start at ``initvals`` (dropped for
    PyMC's initial point if its log-density is not finite), keys from ``seed`` alone."""
    from functools import partial

    import jax

    from emvsbayes.sampling.numpyro_nuts import CompileClock, _advance, _start_values, data_arguments

    programs = cell.programs
    chains = programs.spec.layout.chains
    args, per_chain = data_arguments(programs, {_container_name(obs): data[key] for obs, key in family.observed.items()},
                                     chains)
    began = time.perf_counter()
    with CompileClock() as clock:  # a worker's first replicate of a cell compiles (or loads) each program
        init = _start_values(programs, [initvals], chains, args)
        keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), chains))
        state = programs.callable("init")(keys, *per_chain, *init)
        steps = partial(programs.callable("steps"), *per_chain)
        block = programs.spec.block
        state = _advance(steps, state, programs.spec.tune // block, False)[0]
        state, samples, stats = _advance(steps, state, programs.spec.draws // block, True)
        values = programs.callable("constrain")(*args, *samples)
        posterior = {name: np.asarray(v) for name, v in zip(programs.facts.posterior_vars, values)}
    seconds = time.perf_counter() - began - clock.seconds
    # (chains, draws, ...) -> chain-major (chains * draws, ...)
    out = {name: posterior[name].astype(float).reshape(-1, *posterior[name].shape[2:]) for name in names}
    return Draws(out, chains, int(np.sum(stats["diverging"])), seconds, clock.seconds)


def chain_diagnostics(values: Mapping[str, np.ndarray], chains: int) -> dict[str, float]:
    """Largest rank-normalised split R-hat and smallest bulk ESS over every element of every variable.

    Computed by :mod:`emvsbayes.sampling.convergence` (ArviZ's numbers, to rounding), not by ArviZ: its
    import would bring xarray, pandas and SciPy's stats into every worker process."""
    stacked = np.concatenate([v.reshape(v.shape[0], -1) for v in values.values()], axis=1)  # (S, P)
    varying = np.ptp(stacked, axis=0) > 0
    if not np.any(varying):
        return {"rhat_max": np.nan, "ess_bulk_min": np.nan}
    by_chain = stacked[:, varying].T.reshape(-1, chains, stacked.shape[0] // chains)  # (P, chain, draw)
    rhat = rhat_rank(by_chain)
    ess = ess_bulk(by_chain)
    # One chain has no R-hat (NaN, as ArviZ's): np.nanmax of all NaN warns on the terminal ("All-NaN slice").
    return {"rhat_max": float(np.nanmax(rhat)) if np.isfinite(rhat).any() else np.nan,
            "ess_bulk_min": float(np.nanmin(ess)) if np.isfinite(ess).any() else np.nan}


# --------------------------------------------------------------------------------------------------
# The uncertainty ladder's rungs (issue 20): one interval per rung and replicate.
#
# A coverage study lists the rungs it wants among ``[intervals] kinds`` (:data:`emvsbayes.study.spec.LADDER_KINDS`):
#
# - ``laplace``: :func:`emvsbayes.ladder.laplace.laplace` at the posterior mode found from the EM answer,
#   ``LADDER_DRAWS`` draws mapped back to the constrained scale;
# - ``advi_meanfield``, ``advi_fullrank``: :func:`emvsbayes.ladder.vi.fit_vi` (``VI_ITER`` iterations, started at
#   the EM answer), ``LADDER_DRAWS`` draws, and the Pareto k of the approximation (PSIS) as a scalar;
# - ``bootstrap_bayesian``: :func:`emvsbayes.ladder.bayesian_bootstrap.bayesian_bootstrap` with
#   ``[intervals] bootstrap`` Dirichlet-weighted EM refits from the EM answer, all in one batch.
#
# Every interval is the equal-tailed ``[intervals] prob`` interval of the rung's draws (the same probability
# as the run's intervals), on the labelling of the EM answer aligned to the truth (every rung starts there).
#
# Cost: a replicate must not compile its model again. The cell's PyMC model (data in ``pm.Data``
# containers) is built once per worker process, and :class:`CompiledOnce` keeps every function the ladder
# compiles from it (log-density, gradient, constrained values; PyMC's initial-point function, small, is
# still built per replicate): a replicate swaps its data into the containers, so the compiled functions of
# the first replicate serve every later one. ADVI's
# ``pm.fit`` compiles its step function on each call (PyMC offers no reuse), so the ADVI rungs cost
# seconds per replicate; the timings say how many.

#: Draws from the Laplace and VI approximations per replicate: a 90% interval's end points from 1000
#: draws are off by about 0.01 posterior sds, far below the Monte Carlo error of a coverage estimate.
LADDER_DRAWS = 1000
#: ADVI iterations (the ladder's own default, :class:`emvsbayes.ladder.build.LadderOptions`).
VI_ITER = 3000


class CompiledOnce:
    """A PyMC model whose compiled functions are kept: ``compile_logp``, ``compile_dlogp``,
    ``compile_d2logp`` and ``compile_fn`` return the function compiled by the first call with the same
    arguments. Everything else is the model's. The functions read the model's data containers, so
    ``pm.set_data`` on the model changes what they compute, not whether they must be compiled again.
    """

    def __init__(self, model):
        self._model = model
        self._compiled: dict[str, object] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __getitem__(self, key):  # model["mu"]: PyMC looks variables up by name
        return self._model[key]

    def __contains__(self, key):
        return key in self._model

    @staticmethod
    def _names(value) -> object:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [getattr(v, "name", repr(v)) for v in value]
        return getattr(value, "name", repr(value))

    def _once(self, what: str, args: tuple, kwargs: dict, build):
        key = json.dumps([what, [self._names(a) for a in args],
                          {k: self._names(v) if not isinstance(v, (bool, int, float, str)) else v
                           for k, v in sorted(kwargs.items())}], default=repr)
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = build()
            return self._compiled[key]

    def compile_logp(self, *args, **kwargs):
        return self._once("logp", args, kwargs, lambda: self._model.compile_logp(*args, **kwargs))

    def compile_dlogp(self, *args, **kwargs):
        return self._once("dlogp", args, kwargs, lambda: self._model.compile_dlogp(*args, **kwargs))

    def compile_d2logp(self, *args, **kwargs):
        return self._once("d2logp", args, kwargs, lambda: self._model.compile_d2logp(*args, **kwargs))

    def compile_fn(self, *args, **kwargs):
        return self._once("fn", args, kwargs, lambda: self._model.compile_fn(*args, **kwargs))

    @property
    def n_compiled(self) -> int:
        return len(self._compiled)


class _CellLadder:
    """A cell's model with data containers (``model``, for ``pm.fit``) and its :class:`CompiledOnce` view."""

    def __init__(self, model, shared: dict[str, str]):
        self.model = model
        self.compiled = CompiledOnce(model)
        self.shared = shared
        self.initial_point = {}  # constrained start's keys -> PyMC's initial-point function


#: key (the model's shape-defining settings) -> _CellLadder, per worker process
_LADDERS: dict[str, _CellLadder] = {}
_LADDERS_LOCK = threading.Lock()


def cell_ladder(family, model_def, arrays: dict) -> tuple[_CellLadder, bool]:
    """The cached ladder model of this model shape, built on first use; returns (ladder, built_now)."""
    key = json.dumps([repr(model_def), family.name, {k: np.shape(v) for k, v in arrays.items()}], default=str)
    with _LADDERS_LOCK:
        if key in _LADDERS:
            return _LADDERS[key], False
        model = model_with_containers(family.name, model_def, arrays)
        _LADDERS[key] = _CellLadder(model, {key: _container_name(obs) for obs, key in family.observed.items()})
        return _LADDERS[key], True


def clear_ladder_cache() -> None:
    """Forget this process's ladder models (tests count compilations with it)."""
    _LADDERS.clear()


def _set_data(ladder: _CellLadder, family, arrays: dict) -> None:
    import pymc as pm

    values = {ladder.shared[key]: _observed_array(ladder.model, obs, arrays[key]) for obs, key in family.observed.items()}
    pm.set_data(values, model=ladder.model)


def _interval(draws: Mapping[str, np.ndarray], names, prob: float) -> tuple[dict, dict]:
    tail = (1 - prob) / 2
    lower = {name: np.quantile(np.asarray(draws[name], dtype=float), tail, axis=0) for name in names}
    upper = {name: np.quantile(np.asarray(draws[name], dtype=float), 1 - tail, axis=0) for name in names}
    return lower, upper


def _missing(reference: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    nan = {name: np.full(np.shape(value), np.nan) for name, value in reference.items()}
    return nan, dict(nan)


def ladder_intervals(family, model_def, data, arrays: dict, estimate, kinds, spec: dict,
                     seed: np.random.SeedSequence) -> tuple[dict[str, tuple[dict, dict]], dict[str, float], dict[str, float]]:
    """Each ladder rung in ``kinds``: (lower, upper) of every estimated variable, name -> array.

    ``estimate`` is the EM answer aligned to the truth: every rung starts there (the Laplace mode and ADVI's
    mean are found from it, the Bayesian bootstrap's refits start from it and are relabelled to it), so the
    intervals are on the truth's labelling. A rung that fails on these data (a Hessian that is not negative
    definite, ADVI leaving the support) gives NaN intervals, counted in the scalar ``{rung}_failed``.

    Returns (rung -> (lower, upper)), scalars (failures, VI's Pareto k), seconds per rung.
    """
    from emvsbayes.ladder import bayesian_bootstrap as bb
    from emvsbayes.ladder import laplace as lp
    from emvsbayes.ladder import vi

    prob = spec["intervals"]["prob"]
    reference = {name: np.asarray(value) for name, value in family.estimated_variables(model_def, estimate).items()}
    names = list(reference)
    children = dict(zip(("laplace", "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"), seed.spawn(4)))
    intervals: dict[str, tuple[dict, dict]] = {}
    scalars: dict[str, float] = {}
    seconds: dict[str, float] = {}
    wanted = [kind for kind in kinds if kind in children]
    if not wanted:
        return intervals, scalars, seconds

    started = time.perf_counter()
    ladder, _ = cell_ladder(family, model_def, arrays)
    _set_data(ladder, family, arrays)
    start = family.initvals(model_def, [estimate])[0]
    setup = time.perf_counter() - started

    for kind in wanted:
        began = time.perf_counter()
        rng = np.random.default_rng(children[kind])
        try:
            if kind == "laplace":
                fit = lp.laplace(ladder.compiled, start)
                draws = lp.laplace_draws(ladder.compiled, fit, LADDER_DRAWS, rng)
            elif kind.startswith("advi_"):
                method = kind.removeprefix("advi_")
                fitted = vi.fit_vi(ladder.model, method, VI_ITER, int(rng.integers(2**31)), start=start)
                draws = vi.vi_draws(ladder.compiled, fitted, LADDER_DRAWS, rng)
                scalars[f"{kind}_khat"] = vi.pareto_k(ladder.compiled, fitted, LADDER_DRAWS, rng).khat
            else:
                refit, reason = bb.weighted_refit(family, model_def, data, estimate, em_options(spec))
                if refit is None:
                    raise ValueError(reason)
                weights = bb.dirichlet_weights(family.n_observations(data), spec["intervals"]["bootstrap"],
                                               int(children[kind].generate_state(1)[0]))
                # Aligned on every variable (a coin mixture's fixed equal weights too: the refits carry them).
                result = bb.bayesian_bootstrap(refit, {k: np.asarray(v) for k, v in family.variables(estimate).items()},
                                               weights)
                scalars[f"{kind}_refits_failed"] = float((~result.ok).sum())
                if result.ok.sum() < 2:
                    raise ValueError("fewer than 2 weighted refits succeeded")
                draws = {name: value[result.ok] for name, value in result.draws.items()}
            intervals[kind] = _interval(draws, names, prob)
            scalars[f"{kind}_failed"] = 0.0
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            intervals[kind] = _missing(reference)
            scalars[f"{kind}_failed"] = 1.0
        seconds[kind] = time.perf_counter() - began
    # The shared set-up (building the cell's model on a worker's first replicate) is the first rung's cost.
    seconds[wanted[0]] += setup
    return intervals, scalars, seconds


# --------------------------------------------------------------------------------------------------
# One coverage replicate


def flat_elements(variables: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Every element as ``"mu[0]"``, ``"cov[1,0,1]"`` -> value."""
    out = {}
    for name, value in variables.items():
        value = np.asarray(value, dtype=float)
        for index in np.ndindex(value.shape):
            out[f"{name}[{','.join(map(str, index))}]"] = float(value[index])
    return out


def _interval_metrics(kind: str, lower: Mapping, upper: Mapping, truth: Mapping) -> dict[str, dict[str, float]]:
    lo, hi, true = flat_elements(lower), flat_elements(upper), flat_elements(truth)
    covered = {p: (float(lo[p] <= true[p] <= hi[p]) if np.isfinite(lo[p]) and np.isfinite(hi[p]) else np.nan) for p in true}
    return {f"{kind}_lower": lo, f"{kind}_upper": hi, f"{kind}_covered": covered,
            f"{kind}_width": {p: hi[p] - lo[p] for p in true}}


def run_coverage_replicate(spec: dict, cell_index: int, replicate: int, cell: dict) -> dict:
    family = study_family(spec)
    model_def = family.study_model(spec, cell, cell_prior(spec, cell))
    seeds = replicate_seeds(spec["seed"], cell_index, replicate)
    timings: dict[str, float] = {}
    began = time.perf_counter()

    truth = family.study_truth(spec, cell, model_def, cell_rng(spec["seed"], cell_index))
    data = family.study_data(model_def, truth, cell, np.random.default_rng(seeds["data"]))
    arrays = family.as_arrays(data)
    truth_vars = family.estimated_variables(model_def, truth)
    timings["simulate"] = time.perf_counter() - began

    start = time.perf_counter()
    em = fit_em(family, model_def, data, spec, np.random.default_rng(seeds["em"]))
    estimate = align(family, model_def, em.best.params, truth_vars)
    em_vars = family.estimated_variables(model_def, estimate)
    scalars = {
        "em_loglik": em.best.loglik,
        "em_converged": float(em.best.converged),
        "em_n_iter": float(em.best.n_iter),
        "em_failed_starts": float(em.n_failed),
        "n_optima": float(n_distinct_optima(family, model_def, em.fits)),
    }
    timings["em"] = time.perf_counter() - start

    truth_flat, em_flat = flat_elements(truth_vars), flat_elements(em_vars)
    values: dict[str, dict[str, float]] = {
        "truth": truth_flat,
        "em": em_flat,
        "em_error": {p: em_flat[p] - truth_flat[p] for p in truth_flat},
    }
    kinds = spec["intervals"]["kinds"]
    prob = spec["intervals"]["prob"]
    if "wald" in kinds:
        start = time.perf_counter()
        wald = standard_errors(family, model_def, data, estimate, level=prob)
        values |= _interval_metrics("wald", wald.lower, wald.upper, truth_vars)
        timings["wald"] = time.perf_counter() - start
    if "bootstrap" in kinds:
        start = time.perf_counter()
        boot, failed = bootstrap_intervals(family, model_def, data, estimate, spec, seeds["bootstrap"])
        values |= _interval_metrics("bootstrap", {n: v[0] for n, v in boot.items()}, {n: v[1] for n, v in boot.items()}, truth_vars)
        scalars["bootstrap_failed"] = float(failed)
        timings["bootstrap"] = time.perf_counter() - start

    compiled_now = False
    if "posterior" in kinds:
        start = time.perf_counter()
        sampler, compiled_now = cell_sampler(family, model_def, arrays, cell, spec)
        timings["compile"] = time.perf_counter() - start
        draws = sample(sampler, family, model_def, arrays, estimate, spec, int_seed(seeds["sampler"]))
        timings["sampling"] = draws.seconds
        timings["compile"] += draws.compile_seconds

        start = time.perf_counter()
        reference = truth_vars if spec["bayes"]["relabel"] == "truth" else em_vars
        used = {name: value for name, value in draws.values.items() if np.ptp(value) > 0}
        perms = pivot(used, {name: np.asarray(reference[name]) for name in used}).perms
        relabelled = apply_permutations(draws.values, perms)
        switching = chain_permutations(perms, draws.chains)
        identity = np.arange(perms.shape[1])
        raw = chain_diagnostics(draws.values, draws.chains)
        fixed = chain_diagnostics(relabelled, draws.chains)
        scalars |= {
            "rhat_max": fixed["rhat_max"],
            "rhat_max_raw": raw["rhat_max"],
            "ess_bulk_min": fixed["ess_bulk_min"],
            "ess_per_second": fixed["ess_bulk_min"] / draws.seconds if draws.seconds > 0 else np.nan,
            "divergences": float(draws.divergences),
            "switch_share": float(np.mean(np.any(perms != identity, axis=1))),
            "switches_per_chain": float(np.mean(switching.n_switches)),
        }
        tail = (1 - prob) / 2
        post_mean = {name: value.mean(axis=0) for name, value in relabelled.items()}
        lower = {name: np.quantile(value, tail, axis=0) for name, value in relabelled.items()}
        upper = {name: np.quantile(value, 1 - tail, axis=0) for name, value in relabelled.items()}
        mean_flat = flat_elements(post_mean)
        values["post_mean"] = mean_flat
        values["post_error"] = {p: mean_flat[p] - truth_flat[p] for p in truth_flat}
        values |= _interval_metrics("posterior", lower, upper, truth_vars)
        timings["relabel"] = time.perf_counter() - start
    rungs = [kind for kind in kinds if kind in LADDER_KINDS]
    if rungs:
        intervals, ladder_scalars, ladder_seconds = ladder_intervals(family, model_def, data, arrays, estimate, rungs,
                                                                     spec, seeds["ladder"])
        for kind, (lower, upper) in intervals.items():
            values |= _interval_metrics(kind, lower, upper, truth_vars)
        scalars |= ladder_scalars
        timings |= ladder_seconds
    timings["total"] = time.perf_counter() - began
    return record(cell_index, replicate, values=values, scalars=scalars, timings=timings, compiled=compiled_now)


# --------------------------------------------------------------------------------------------------
# The task


def record(cell_index, replicate, *, values=None, scalars=None, timings=None, compiled=False, error=None) -> dict:
    return {
        "cell": int(cell_index),
        "replicate": int(replicate),
        "status": "failed" if error else "ok",
        "error": error,
        "values": values or {},
        "scalars": {k: float(v) for k, v in (scalars or {}).items()},
        "timings": {k: float(v) for k, v in (timings or {}).items()},
        "compiled": int(bool(compiled)),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
