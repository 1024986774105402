"""nutpie and PyMC's own NUTS through ``pm.sample``, started from EM answers without jitter.

PyMC's NUTS takes one start per chain; nutpie takes a single start for all chains. Jitter is off for
both: the EM answer is a good start and jitter can push a chain out of it into a degenerate region.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np


def finite_starts(model, initvals: Sequence[dict]) -> list[dict]:
    """The starts at which the model's log-density and gradient, by PyMC's own functions, are finite.

    An EM answer can sit where the prior has no density (a covariance at the edge of positive
    definiteness, a weight of exactly 0); such a start would stop the sampler, so it is dropped and
    the chains use the other starts, or PyMC's own initial point when none is left.
    """
    if not initvals:
        return []
    from pymc.initial_point import make_initial_point_fn

    # Evaluated once per start: by each op's Python implementation (FAST_COMPILE), as numba's compilation of
    # the two functions (PyTensor's default mode) costs seconds with a cold cache, and the sampler compiles its
    # own anyway.
    logp, dlogp = model.compile_logp(mode="FAST_COMPILE"), model.compile_dlogp(mode="FAST_COMPILE")
    kept = []
    for start in initvals:
        try:
            point = make_initial_point_fn(model=model, overrides=start, jitter_rvs=set(), return_transformed=True)(0)
            value, grad = logp(point), dlogp(point)
        except (ValueError, TypeError, FloatingPointError):
            continue
        if np.isfinite(value) and np.all(np.isfinite(grad)):
            kept.append(start)
    return kept


def sample_pm(model, settings, sampler: str, seed: int, initvals: Sequence[dict], progressbar: bool,
              log_likelihood: bool, cores: int):
    """``pm.sample`` with ``nuts_sampler=sampler``; returns (tree, the sampler that ran, seconds in the call).

    Where nutpie cannot start although PyMC's log-density is finite ("All initialization points
    failed": nutpie evaluates the start with its own numba log-density), PyMC's NUTS takes over.
    """
    import pymc as pm

    kwargs: dict = dict(draws=settings.draws, tune=settings.tune, chains=settings.chains, random_seed=seed,
                        progressbar=progressbar, nuts_sampler=sampler, model=model, compute_convergence_checks=False,
                        cores=cores)
    start = time.perf_counter()
    initvals = finite_starts(model, initvals)
    if initvals:
        starts = [dict(initvals[i % len(initvals)]) for i in range(settings.chains)]
        if sampler == "nutpie":
            kwargs["initvals"] = starts[0]
            # nutpie jitters every start by U(-1, 1) on the unconstrained scale unless told not to.
            kwargs["compile_kwargs"] = {"jitter_rvs": set()}
        else:
            kwargs["initvals"] = starts
            kwargs["init"] = "adapt_diag"
    kwargs["nuts"] = {"target_accept": settings.target_accept}
    if sampler == "pymc" and cores > 1 and "jax" in sys.modules:
        # PyMC forks a process per chain, and a process that has run JAX (the Wald information's programs, the
        # ladder) holds its threads: a fork may then deadlock (Python warns so on the terminal). A forkserver or
        # spawned processes compile the model again in each (the two-coin run took 29 s against 14 s); the chains
        # run one after another here instead (14 s).
        kwargs["cores"] = 1
    with warnings.catch_warnings():
        # PyMC warns about short chains in quick runs; the report shows R-hat and ESS itself.
        warnings.filterwarnings("ignore", message=".*samples per chain.*")
        warnings.filterwarnings("ignore", message=".*number of samples is too small.*")
        try:
            tree = pm.sample(**kwargs)
        except RuntimeError as error:
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
    return tree, sampler, time.perf_counter() - start
