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
outcome, because the spread of local optima is part of what EM hides.
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
    lagged_test: bool = False,
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
    lagged_test
        Apply the rule to the iteration before the last instead of the last, so the loop stops one
        M-step after the objective's rise fell below ``tol``. This is scikit-learn's rule: its lower
        bound comes from the E-step that precedes each M-step, so its test sees each rise one iteration
        late and keeps the M-step already taken. :class:`emvsbayes.gaussian.GaussianMixture` uses it so
        that code swapping scikit-learn's estimator for ours stops at the same iteration with the same
        parameters. ``max_iter`` still counts every M-step.

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
    # |rise| and largest parameter move of the iteration before the current one (none before iteration 1,
    # so a lagged test cannot stop at iteration 1, as scikit-learn's cannot: its first change is +inf).
    previous: tuple[float, float] | None = None
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
        latest = (abs(gain), moved)
        tested, previous = (previous if lagged_test else latest), latest
        if n_iter >= min_iter and tested is not None and tested[0] < tol and tested[1] < param_tol:
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
