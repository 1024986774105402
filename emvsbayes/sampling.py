"""Running PyMC's samplers the same way for every model family.

Chains start from EM answers. numpyro and PyMC's own NUTS take one starting point per chain, so
different chains can start from different EM optima (then R-hat can still see a second mode); nutpie
takes a single starting point for all chains. Jitter is turned off for all: the EM answer is a good
start and jitter can push a chain out of it into a degenerate region.

The default ("auto") is numpyro, through ``pm.sample(nuts_sampler="numpyro")`` on the same PyMC model:
in ``benchmarks/samplers.py`` it is the only engine here with both at least twice Stan's ESS per
second and a whole process no slower than Stan's on Old Faithful and galaxies, and the fastest whole
process on the coin model, because JAX keeps its compiled programs in a persistent cache (nutpie
rebuilds numba wrappers for ~7 s in every process; PyMC's NUTS samples 3-10x slower). Nothing on the
numpyro path compiles C: PyMC's initial-point function runs on PyTensor's Python linker, the
log-likelihood for LOO is computed by JAX.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLERS = ("numpyro", "nutpie", "pymc")
#: What ``sampler = "auto"`` means (see the module docstring for the measurements behind it).
DEFAULT_SAMPLER = "numpyro"
#: Virtual XLA CPU devices, so numpyro runs up to this many chains in parallel (``chain_method="parallel"``).
JAX_DEVICES = 8


def resolve_sampler(name: str) -> str:
    """The sampler a spec's ``sampler`` names: ``"auto"`` -> :data:`DEFAULT_SAMPLER`."""
    return DEFAULT_SAMPLER if name == "auto" else name


def configure_jax() -> None:
    """Set JAX up before it is first imported: several CPU devices (parallel chains) and a persistent
    compilation cache, so a second run of a model loads its compiled sampler instead of rebuilding it.

    The cache lives in ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/emvsbayes/jax``
    (``~/.cache/emvsbayes/jax``). Calling it again, or after JAX was imported, changes nothing that
    JAX has already read.
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


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """How to sample: which sampler, chains, draws after ``tune`` tuning steps, NUTS target acceptance."""

    sampler: str = DEFAULT_SAMPLER
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    target_accept: float = 0.8
    cores: int | None = None


@dataclass(frozen=True, slots=True)
class SamplingOutcome:
    """The draws (an ``xarray.DataTree`` as PyMC returns it) and how long each stage took, in seconds."""

    tree: object
    sampler: str
    seconds_sampling: float
    seconds_total: float


def available_cores() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)))


def finite_starts(model, initvals: Sequence[dict], *, backend: str = "c") -> list[dict]:
    """The starting points at which the model's log-density and its gradient are finite.

    An EM answer can sit where the prior has no density (a covariance at the edge of positive
    definiteness, a weight of exactly 0); such a start would stop the sampler, so it is dropped and
    the chains use the other starts, or PyMC's own initial point when none is left. ``backend="jax"``
    evaluates the density the way numpyro will (and compiles nothing to C).
    """
    from pymc.initial_point import make_initial_point_fn

    if not initvals:
        return []
    if backend == "jax":
        import jax
        from pymc.sampling.jax import get_jaxified_logp

        value_and_grad = jax.jit(jax.value_and_grad(get_jaxified_logp(model, negative_logp=False)))

        def is_finite(point):
            value, grads = value_and_grad([jax.numpy.asarray(v) for v in point.values()])
            return bool(np.isfinite(value)) and all(bool(np.all(np.isfinite(g))) for g in grads)
    else:
        logp = model.compile_logp()
        dlogp = model.compile_dlogp()

        def is_finite(point):
            return bool(np.isfinite(logp(point))) and bool(np.all(np.isfinite(dlogp(point))))

    kept = []
    for start in initvals:
        try:
            point = make_initial_point_fn(model=model, overrides=start, jitter_rvs=set(), return_transformed=True)(0)
            if is_finite(point):
                kept.append(start)
        except (ValueError, TypeError, FloatingPointError):
            continue
    return kept


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
    if sampler == "numpyro":
        configure_jax()
    import pymc as pm
    import pytensor

    # The sampler's own progress bar redraws with control characters: only on a terminal.
    progressbar = progressbar and sys.stdout.isatty()
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
    nuts: dict = {"target_accept": settings.target_accept}
    start = time.perf_counter()
    if sampler == "numpyro":
        import jax

        # Everything PyMC compiles on this path besides the JAX programs (the initial-point function) is
        # tiny: PyTensor's Python linker runs it at once, where a cold C compile costs ~20 s.
        no_c = pytensor.config.change_flags(cxx="")
        with no_c:
            initvals = finite_starts(model, initvals or [], backend="jax")
        nuts["jitter"] = False
        # One virtual device per chain runs the chains in parallel; with fewer (JAX imported before
        # configure_jax could set the flag) numpyro would draw them one after another.
        nuts["chain_method"] = "parallel" if jax.local_device_count() >= settings.chains else "vectorized"
        if initvals:
            kwargs["initvals"] = [dict(initvals[i % len(initvals)]) for i in range(settings.chains)]
    else:
        no_c = contextlib.nullcontext()
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
    kwargs["nuts"] = nuts
    with warnings.catch_warnings(), no_c:
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
            backend = {"numpyro": "jax"}.get(sampler)
            tree = pm.compute_log_likelihood(tree, model=model, progressbar=False, backend=backend)
    total = time.perf_counter() - start
    seconds_sampling = float(tree["posterior"].attrs.get("sampling_time", np.nan))
    return SamplingOutcome(tree, sampler, seconds_sampling, total)
