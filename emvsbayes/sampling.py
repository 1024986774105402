"""Running PyMC's samplers the same way for every model family.

Chains start from EM answers. PyMC's own NUTS takes one starting point per chain, so different chains
can start from different EM optima (then R-hat can still see a second mode); nutpie takes a single
starting point for all chains. Jitter is turned off for both: the EM answer is a good start and
jitter can push a chain out of it into a degenerate region.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLERS = ("nutpie", "pymc")


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """How to sample: which sampler, chains, draws after ``tune`` tuning steps, NUTS target acceptance."""

    sampler: str = "nutpie"
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


def finite_starts(model, initvals: Sequence[dict]) -> list[dict]:
    """The starting points at which the model's log-density and its gradient are finite.

    An EM answer can sit where the prior has no density (a covariance at the edge of positive
    definiteness, a weight of exactly 0); such a start would stop the sampler, so it is dropped and
    the chains use the other starts, or PyMC's own initial point when none is left.
    """
    from pymc.initial_point import make_initial_point_fn

    if not initvals:
        return []
    logp = model.compile_logp()
    dlogp = model.compile_dlogp()
    kept = []
    for start in initvals:
        try:
            point = make_initial_point_fn(model=model, overrides=start, jitter_rvs=set(), return_transformed=True)(0)
            if np.isfinite(logp(point)) and np.all(np.isfinite(dlogp(point))):
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
    import pymc as pm

    if settings.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}")
    cores = settings.cores or min(settings.chains, available_cores())
    # The sampler's own progress bar redraws with control characters: only on a terminal.
    progressbar = progressbar and sys.stdout.isatty()
    kwargs: dict = dict(
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        cores=cores,
        random_seed=seed,
        progressbar=progressbar,
        nuts_sampler=settings.sampler,
        model=model,
        compute_convergence_checks=False,
    )
    initvals = finite_starts(model, initvals or [])
    if initvals:
        starts = [dict(initvals[i % len(initvals)]) for i in range(settings.chains)]
        if settings.sampler == "nutpie":
            kwargs["initvals"] = starts[0]
            # nutpie jitters every start by U(-1, 1) on the unconstrained scale unless told not to;
            # that can throw a chain from the EM answer into a degenerate mode.
            kwargs["compile_kwargs"] = {"jitter_rvs": set()}
        else:
            kwargs["initvals"] = starts
            kwargs["init"] = "adapt_diag"
    kwargs["nuts"] = {"target_accept": settings.target_accept}
    start = time.perf_counter()
    with warnings.catch_warnings():
        # PyMC warns about short chains in quick runs; the report shows R-hat and ESS itself.
        warnings.filterwarnings("ignore", message=".*samples per chain.*")
        warnings.filterwarnings("ignore", message=".*number of samples is too small.*")
        sampler = settings.sampler
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
