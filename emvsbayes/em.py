"""The one EM loop shared by every model family.

A model family supplies two pure functions, bound to its data (for example with ``functools.partial``):

- ``e_step(params) -> (stats, loglik)``: sufficient statistics of the complete data given ``params``
  and the objective EM increases, evaluated at ``params`` (the observed-data log-likelihood for soft EM,
  the classification log-likelihood for hard EM);
- ``m_step(stats, params) -> params``: the parameters that maximise the expected complete-data
  log-likelihood. ``params`` (the current ones) is passed so a component that received no data can keep
  its value instead of becoming 0/0.

:func:`fit_em` owns everything else: the stopping rule, the per-iteration trace and the check that the
objective never falls (a fall is a bug in a step, raised as :class:`LikelihoodDecreasedError`, never
taken as convergence). :func:`fit_em_restarts` runs it from several starting points and keeps every
outcome, because the spread of local optima is part of what EM hides; :func:`fit_em_until` keeps starting
until a :class:`RestartPolicy` is met (several starts agree on the best log-likelihood, or a budget is spent).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from emvsbayes.errors import LikelihoodDecreasedError

P = TypeVar("P")  # a frozen parameter record
S = TypeVar("S")  # a frozen sufficient-statistics record

EStep = Callable[[P], tuple[S, float]]
MStep = Callable[[S, P], P]

# Rounding in a sum over N terms can make a converged log-likelihood wobble by a few ulps of |loglik|;
# anything larger than this relative amount is a real decrease.
DECREASE_RTOL = 1e-10


@dataclass(frozen=True, slots=True)
class EMIteration(Generic[P, S]):
    """One row of the trace: the parameters after ``iteration`` M-steps and their E-step.

    ``iteration`` 0 is the starting point. ``stats`` is ``None`` when the fit was asked not to keep
    per-iteration statistics (they hold N x K responsibilities, too large to keep for big data).
    """

    iteration: int
    params: P
    loglik: float
    stats: S | None


@dataclass(frozen=True, slots=True)
class EMFit(Generic[P, S]):
    """Outcome of one EM run.

    ``params`` and ``stats`` belong together: ``stats`` is the E-step at the returned ``params``, so
    responsibilities and labels agree with the estimate. ``loglik`` is the objective at ``params``.
    """

    params: P
    stats: S
    loglik: float
    n_iter: int
    converged: bool
    trace: tuple[EMIteration[P, S], ...]

    @property
    def init_params(self) -> P:
        return self.trace[0].params

    @property
    def loglik_path(self) -> np.ndarray:
        return np.array([row.loglik for row in self.trace])


@dataclass(frozen=True, slots=True)
class EMRestarts(Generic[P, S]):
    """Every restart's outcome and which one is best (highest final objective)."""

    fits: tuple[EMFit[P, S], ...]

    @property
    def best_index(self) -> int:
        return int(np.argmax([fit.loglik for fit in self.fits]))

    @property
    def best(self) -> EMFit[P, S]:
        return self.fits[self.best_index]


def max_abs_change(old: Any, new: Any) -> float:
    """Largest absolute change over every array field of two parameter records of the same type."""
    change = 0.0
    for field in dataclasses.fields(old):
        a, b = getattr(old, field.name), getattr(new, field.name)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            change = max(change, float(np.max(np.abs(a - b), initial=0.0)))
    return change


def fit_em(
    e_step: EStep,
    m_step: MStep,
    init_params: P,
    *,
    tol: float = 1e-8,
    param_tol: float = 1e-6,
    max_iter: int = 500,
    min_iter: int = 0,
    keep_stats: bool = True,
    param_change: Callable[[P, P], float] = max_abs_change,
    m_step_slack: Callable[[S], float] | None = None,
) -> EMFit:
    """Run EM from ``init_params`` until both the objective and the parameters stop changing.

    Parameters
    ----------
    e_step, m_step
        The model family's steps, bound to the data.
    init_params
        Starting parameters (a frozen record).
    tol
        Converged when the objective rose by less than ``tol`` in the last iteration...
    param_tol
        ... and no parameter moved by more than ``param_tol``. Both are asked for because a flat
        likelihood ridge can stall the objective while parameters still drift.
    max_iter
        Most M-steps to take; reaching it without meeting the rule gives ``converged=False``.
    min_iter
        Take at least this many M-steps (used to compare iteration by iteration with a reference).
    keep_stats
        Keep each iteration's sufficient statistics in the trace.
    m_step_slack
        For an M-step that is not the exact maximiser (scikit-learn's ``reg_covar`` added to a
        covariance): given the E-step statistics, how much expected complete-data log-likelihood the
        step gives up against the exact maximiser. EM's guarantee then reads
        loglik(new) >= loglik(old) - slack, and only a fall beyond that is an error.

    Returns
    -------
    EMFit

    Raises
    ------
    LikelihoodDecreasedError
        If the objective falls by more than rounding between two iterations.
    """
    params = init_params
    stats, loglik = e_step(params)
    trace = [EMIteration(0, params, float(loglik), stats if keep_stats else None)]
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new_params = m_step(stats, params)
        slack = m_step_slack(stats) if m_step_slack is not None else 0.0
        new_stats, new_loglik = e_step(new_params)
        gain = new_loglik - loglik
        if gain < -DECREASE_RTOL * max(1.0, abs(loglik)) - slack:
            raise LikelihoodDecreasedError(
                f"EM objective fell from {loglik!r} to {new_loglik!r} at iteration {n_iter}"
                + (f" (more than the {slack!r} the regularised M-step may give up)" if slack else "")
            )
        moved = param_change(params, new_params)
        params, stats, loglik = new_params, new_stats, float(new_loglik)
        trace.append(EMIteration(n_iter, params, loglik, stats if keep_stats else None))
        if n_iter >= min_iter and abs(gain) < tol and moved < param_tol:
            converged = True
            break
    return EMFit(params, stats, loglik, n_iter, converged, tuple(trace))


def fit_em_restarts(
    e_step: EStep,
    m_step: MStep,
    inits: Sequence[P],
    **options,
) -> EMRestarts:
    """Run :func:`fit_em` from each starting point in ``inits`` and keep every outcome."""
    if not inits:
        raise ValueError("fit_em_restarts needs at least one starting point")
    return EMRestarts(tuple(fit_em(e_step, m_step, init, **options) for init in inits))


#: Final log-likelihoods closer than this belong to the same optimum: EM stopped at tol = 1e-8 leaves
#: differences below 1e-9 between starts that reached one optimum (heroes, galaxies), while distinct optima of
#: the bundled data sets differ by 1e-2 or more.
SAME_OPTIMUM_ATOL = 1e-6


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How many EM starts to run.

    One start per draw of the initialiser finds one local optimum; on a likelihood with many optima (the
    heroes' 12 features, the galaxies with K = 4) the best is reached by only a few percent of starts, so
    a fixed handful of starts can all miss it. Start at least ``min_starts`` times, then keep starting
    until ``reach_best`` starts have ended at the best log-likelihood found so far (within
    ``loglik_atol``), or ``max_starts`` starts have been spent. A best value that several independent
    starts reached is unlikely to be beaten by one more start; one reached by a single start may well be.
    """

    min_starts: int = 1
    reach_best: int = 3
    max_starts: int = 200
    loglik_atol: float = SAME_OPTIMUM_ATOL

    def __post_init__(self):
        if not 1 <= self.min_starts <= self.max_starts or self.reach_best < 1 or not self.loglik_atol > 0:
            raise ValueError(f"RestartPolicy needs 1 <= min_starts <= max_starts, reach_best >= 1 and "
                             f"loglik_atol > 0, got {self}")

    def n_reached_best(self, logliks: Sequence[float]) -> int:
        """How many of the final log-likelihoods ``logliks`` are the best one (within ``loglik_atol``)."""
        values = np.asarray(logliks, dtype=float)
        if values.size == 0:
            return 0
        return int(np.sum(values >= values.max() - self.loglik_atol))

    def done(self, logliks: Sequence[float], n_started: int) -> bool:
        """Whether to stop after ``n_started`` starts whose successful fits ended at ``logliks``."""
        if n_started >= self.max_starts:
            return True
        return n_started >= self.min_starts and self.n_reached_best(logliks) >= self.reach_best


@dataclass(frozen=True, slots=True)
class RestartRun(Generic[P, S]):
    """The starts :func:`fit_em_until` used and what came of them.

    ``inits`` holds every starting point used, in order (also those whose fit failed, so another kind of
    EM can be run from exactly the same starts); ``restarts`` the successful fits; ``failures`` one message
    per failed start.
    """

    restarts: EMRestarts[P, S]
    inits: tuple[P, ...]
    failures: tuple[str, ...]
    policy: RestartPolicy

    @property
    def n_starts(self) -> int:
        return len(self.inits)

    @property
    def n_reached_best(self) -> int:
        return self.policy.n_reached_best([fit.loglik for fit in self.restarts.fits])

    @property
    def budget_spent(self) -> bool:
        """Stopped (by ``max_starts``, or as futile) before ``reach_best`` starts agreed on the best value."""
        return self.n_reached_best < self.policy.reach_best


def fit_em_until(
    fit_from: Callable[[P], EMFit],
    next_init: Callable[[], P],
    policy: RestartPolicy,
    *,
    skip: type[Exception] | tuple[type[Exception], ...] = (),
    futile: Callable[[EMFit], bool] | None = None,
) -> RestartRun:
    """EM from new starting points until ``policy`` is satisfied.

    Parameters
    ----------
    fit_from
        EM from one starting point (a family's ``fit`` bound to its model and data).
    next_init
        Draws the next starting point (from its own child generator, so start j is the same whatever the
        number of starts).
    policy
        When to stop.
    skip
        Exceptions that fail one start without ending the run (a component collapsing onto one point);
        if every start fails, the first such exception is raised again.
    futile
        Given the best fit after ``policy.min_starts`` starts, whether searching further is pointless (a
        degenerate answer: more starts find higher spikes on fewer points, not a better clustering).
    """
    inits, fits, failures, first_error = [], [], [], None
    while not policy.done([fit.loglik for fit in fits], len(inits)):
        if futile is not None and fits and len(inits) >= policy.min_starts and futile(max(fits, key=lambda f: f.loglik)):
            break
        init = next_init()
        inits.append(init)
        try:
            fits.append(fit_from(init))
        except skip as error:
            failures.append(str(error))
            first_error = first_error or error
    if not fits:
        raise first_error
    return RestartRun(EMRestarts(tuple(fits)), tuple(inits), tuple(failures), policy)
