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
:func:`fit_em_batched` runs many small fits (bootstrap replicates, restarts) as one, over a leading axis, with
:func:`fit_em`'s stopping rule; :func:`fit_em_until` uses it for the starts when the family gives a batched fit.
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
    per-iteration statistics (they hold N x K responsibilities, too large to keep for big data). ``params``
    is ``None`` after the starting row of a restart that is not the best (:func:`fit_em_until` keeps only
    the objective of its iterations).
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
    A restart fitted in a batch (:func:`batched_fits`) has ``stats`` None and a trace of its starting row only.
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


def logsumexp(a, axis=None, keepdims: bool = False):
    """``scipy.special.logsumexp(a, axis=axis, keepdims=keepdims)`` of a real array, bit for bit, in plain numpy.

    The same operations in the same order as SciPy's (1.15 and later): the largest element of each slice
    is taken out of the sum (``log1p`` of the rest over the count of maxima, plus their log count, plus
    the max), and a slice whose result is not finite gets ``log(sum(exp(a)))`` instead. SciPy's version
    spends ~50 us per call dispatching on array namespaces; EM calls this once per E-step, thousands of
    times in a run (a fifth of the lecture run's model-choice EM). tests/test_startup_imports.py
    compares the two bit for bit, infinities and NaN included, so a SciPy that changes its algorithm
    fails there.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    axis = tuple(range(a.ndim)) if axis is None else axis
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_max = a.max(axis=axis, keepdims=True)
        is_max = a == a_max
        count = is_max.sum(axis=axis, keepdims=True, dtype=np.float64)
        rest = a.copy()
        rest[is_max] = -np.inf
        s = np.exp(rest - a_max).sum(axis=axis, keepdims=True)
        s = np.where(s == 0, s, s / count)
        out = np.log1p(s) + np.log(count) + a_max
        finite = np.isfinite(out)
        if not finite.all():
            out = np.where(finite, out, np.log(np.exp(a).sum(axis=axis, keepdims=True)))
    if not keepdims:
        out = np.squeeze(out, axis=axis)
    return out[()] if out.ndim == 0 else out


def max_abs_change(old: Any, new: Any) -> float:
    """Largest absolute change over every array field of two parameter records of the same type."""
    change = 0.0
    for field in dataclasses.fields(old):
        a, b = getattr(old, field.name), getattr(new, field.name)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            change = max(change, float(np.max(np.abs(a - b), initial=0.0)))
    return change


# The stopping rule and the decrease test, written once for :func:`fit_em` and :func:`fit_em_batched`:
# elementwise, so the same code decides for one fit (scalars) and for a batch of fits (arrays of shape
# (B,)). A change of the rule made here moves both.


def objective_fell(loglik, gain, slack=0.0):
    """Whether the objective fell by more than rounding (and ``slack``) when it changed by ``gain``."""
    return gain < -DECREASE_RTOL * np.maximum(1.0, np.abs(loglik)) - slack


def decrease_message(loglik: float, new_loglik: float, n_iter: int, slack: float = 0.0) -> str:
    """The :class:`LikelihoodDecreasedError` message for a fall from ``loglik`` to ``new_loglik``."""
    return (
        f"EM objective fell from {loglik!r} to {new_loglik!r} at iteration {n_iter}"
        + (f" (more than the {slack!r} the regularised M-step may give up)" if slack else "")
    )


def has_converged(n_iter, gain, moved, *, tol: float, param_tol: float, min_iter: int):
    """Whether the fit stops after M-step ``n_iter``: the objective changed by ``gain`` and no parameter
    moved by ``moved`` or more (see :func:`fit_em` for the options)."""
    return (n_iter >= min_iter) & (np.abs(gain) < tol) & (moved < param_tol)


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
    # fit_em_batched runs this loop step for step over a batch: change the two together
    # (tests/test_bootstrap_batched.py compares them fit by fit).
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
        if objective_fell(loglik, gain, slack):
            raise LikelihoodDecreasedError(decrease_message(loglik, new_loglik, n_iter, slack))
        moved = param_change(params, new_params)
        params, stats, loglik = new_params, new_stats, float(new_loglik)
        trace.append(EMIteration(n_iter, params, loglik, stats if keep_stats else None))
        latest = (gain, moved)
        # scikit-learn's rule (lagged_test) tests the rise of the iteration before the last.
        tested, previous = (previous if lagged_test else latest), latest
        if tested is not None and has_converged(n_iter, tested[0], tested[1], tol=tol, param_tol=param_tol,
                                                min_iter=min_iter):
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


# --------------------------------------------------------------------------------------------------
# Many small fits at once


@dataclass(frozen=True, slots=True)
class BatchedEMFit(Generic[P]):
    """Outcome of B EM runs advanced together (:func:`fit_em_batched`).

    ``params`` is the family's parameter record with a leading replicate axis on every array field
    (B, ...); rows of failed runs are NaN. ``loglik`` (B,) the objective at ``params`` (NaN when
    failed), ``n_iter`` (B,) M-steps taken, ``converged`` (B,), ``errors`` (B,) ``""`` for a run that
    finished, else ``"<ErrorName>: <message>"``, what :func:`fit_em` would have raised for that run.
    ``init_loglik`` (B,) the objective at each starting point.
    """

    params: P
    loglik: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    errors: tuple[str, ...]
    init_loglik: np.ndarray | None = None

    @property
    def failed(self) -> np.ndarray:
        return np.array([bool(e) for e in self.errors])


def take_rows(record: Any, rows) -> Any:
    """The record with every array field cut to the leading-axis entries ``rows`` (other fields kept)."""
    values = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        values[f.name] = value[rows] if isinstance(value, np.ndarray) else value
    return type(record)(**values)


def batched_max_abs_change(old: Any, new: Any) -> np.ndarray:
    """:func:`max_abs_change` of each row of two batched records (leading axis B): shape (B,)."""
    change = None
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            row = np.max(np.abs(a - b).reshape(a.shape[0], -1), axis=1, initial=0.0)
            change = row if change is None else np.maximum(change, row)
    return change


def fit_em_batched(
    e_step: Callable[[P, np.ndarray], tuple[S, np.ndarray]],
    m_step: Callable[[S, P, np.ndarray, int], tuple[P, np.ndarray, np.ndarray]],
    init_params: P,
    *,
    tol: float = 1e-8,
    param_tol: float = 1e-6,
    max_iter: int = 500,
    min_iter: int = 0,
    keep_stats: bool = False,
    param_change: Callable[[P, P], np.ndarray] = batched_max_abs_change,
) -> BatchedEMFit:
    """:func:`fit_em` for B independent runs at once, each stopping, failing and finishing exactly as
    :func:`fit_em` would have on its own.

    Why: a bootstrap of a small data set is hundreds of fits of a few hundred numbers each, where one
    fit at a time spends its time in Python and numpy's per-call overhead, not in arithmetic. Here
    each E-step and M-step is one array operation over a leading replicate axis.

    The loop is :func:`fit_em`'s, step for step, with the same decision functions
    (:func:`objective_fell`, :func:`has_converged`); a run that stops (converged or failed) leaves the
    batch and the others go on. Tests check it against :func:`fit_em` run by run.

    Parameters
    ----------
    e_step
        ``e_step(params, rows) -> (stats, loglik (b,))`` for the runs ``rows`` (indices into 0..B-1),
        ``params`` and ``stats`` records with those runs along their leading axis.
    m_step
        ``m_step(stats, params, rows, iteration) -> (new_params, slack (b,), errors)``: ``slack`` as
        :func:`fit_em`'s ``m_step_slack`` (0 for an exact M-step); ``errors`` None when every step
        worked, else an array (b,) of str, ``""`` where the step worked and
        ``"<ErrorName>: <message>"`` where it failed (what :func:`fit_em`'s M-step would raise).
    init_params
        Starting parameters, a record with a leading axis of length B.
    tol, param_tol, max_iter, min_iter
        As :func:`fit_em`. ``keep_stats`` is accepted for the same options and ignored: no trace is kept.
    param_change
        Batched :func:`max_abs_change`: (B,) from two records.
    """
    del keep_stats
    first = next(getattr(init_params, f.name) for f in dataclasses.fields(init_params)
                 if isinstance(getattr(init_params, f.name), np.ndarray))
    n_runs = first.shape[0]
    out_params = {f.name: np.full(getattr(init_params, f.name).shape, np.nan)
                  for f in dataclasses.fields(init_params) if isinstance(getattr(init_params, f.name), np.ndarray)}
    out_loglik = np.full(n_runs, np.nan)
    out_n_iter = np.zeros(n_runs, dtype=int)
    out_converged = np.zeros(n_runs, dtype=bool)
    errors = [""] * n_runs

    def finish(params, loglik, where, n_iter, converged) -> None:
        rows_done = rows[where]
        for name, value in out_params.items():
            value[rows_done] = getattr(params, name)[where]
        out_loglik[rows_done] = loglik[where]
        out_n_iter[rows_done] = n_iter
        out_converged[rows_done] = converged

    rows = np.arange(n_runs)
    params = init_params
    stats, loglik = e_step(params, rows)
    loglik = np.asarray(loglik, dtype=float)
    init_loglik = loglik.copy()
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new_params, slack, step_errors = m_step(stats, params, rows, n_iter)
        if step_errors is not None:
            ok = np.asarray(step_errors) == ""
            for i in np.flatnonzero(~ok):
                errors[rows[i]] = str(step_errors[i])
            rows, params, new_params, loglik = rows[ok], take_rows(params, ok), take_rows(new_params, ok), loglik[ok]
            slack = np.broadcast_to(slack, ok.shape)[ok]
            if not rows.size:
                break
        new_stats, new_loglik = e_step(new_params, rows)
        new_loglik = np.asarray(new_loglik, dtype=float)
        gain = new_loglik - loglik
        fell = objective_fell(loglik, gain, slack)
        moved = param_change(params, new_params)
        done = fell | has_converged(n_iter, gain, moved, tol=tol, param_tol=param_tol, min_iter=min_iter)
        for i in np.flatnonzero(fell):
            s = float(np.broadcast_to(slack, fell.shape)[i])
            errors[rows[i]] = "LikelihoodDecreasedError: " + decrease_message(
                float(loglik[i]), float(new_loglik[i]), n_iter, s)
        params, stats, loglik = new_params, new_stats, new_loglik
        if done.any():
            finish(params, loglik, done & ~fell, n_iter, True)
            keep = ~done
            rows, params, stats, loglik = rows[keep], take_rows(params, keep), take_rows(stats, keep), loglik[keep]
            if not rows.size:
                break
    else:
        if rows.size:
            finish(params, loglik, np.ones(rows.size, dtype=bool), n_iter, False)
    record = {f.name: out_params.get(f.name, getattr(init_params, f.name)) for f in dataclasses.fields(init_params)}
    return BatchedEMFit(type(init_params)(**record), out_loglik, out_n_iter, out_converged, tuple(errors),
                        init_loglik)


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


#: A batched fit's final log-likelihood differs from :func:`fit_em`'s from the same start by rounding: at
#: most 9e-12 on the galaxies (|loglik| ~ 200, K = 3 and 4, 350 starts) and 1e-12 on the heroes (~ 960). A
#: start whose batched value is within this margin of the batched best may be :func:`fit_em`'s best (starts
#: that reach one optimum end within 1e-11 of each other at tol = 1e-10), so :func:`fit_em_until` re-runs it.
def batched_rerun_margin(best_loglik: float) -> float:
    """How far below the batched best a batched start may still be :func:`fit_em`'s best: 10 to 20 times the
    largest measured difference (5e-14 of |loglik|), and at least 1e-10."""
    return 1e-12 * max(abs(best_loglik), 100.0)


def batched_fits(batch: BatchedEMFit, inits: Sequence[P]) -> list[EMFit | None]:
    """Each run of ``batch`` as an :class:`EMFit` (``None`` for a run that failed).

    Such a fit carries what the batch knows, the final parameters, objective, iterations and convergence, and
    a trace of the starting row only (no statistics): it is not a full :func:`fit_em` trace.
    """
    out = []
    for row, init in enumerate(inits):
        if batch.errors[row]:
            out.append(None)
            continue
        init_loglik = float(batch.init_loglik[row]) if batch.init_loglik is not None else float("nan")
        out.append(EMFit(take_rows(batch.params, row), None, float(batch.loglik[row]), int(batch.n_iter[row]),
                         bool(batch.converged[row]), (EMIteration(0, init, init_loglik, None),)))
    return out


def _record_key(record: Any) -> tuple:
    """A hashable key equal for records with bitwise-equal fields (the same starting point drawn twice)."""
    return tuple((f.name, value.dtype.str, value.shape, value.tobytes()) if isinstance(value, np.ndarray) else (f.name, value)
                 for f in dataclasses.fields(record) for value in [getattr(record, f.name)])


def _chunk_size(policy: RestartPolicy, n_started: int, batch_size: int) -> int:
    """How many starts the next batch runs: the ``min_starts`` first, then a quarter of them (at least
    ``reach_best``) at a time. Starts past the one where the policy stops are run and thrown away; a batch
    costs little more than its slowest fit, so a few spare starts are cheaper than more batches."""
    wanted = policy.min_starts if n_started < policy.min_starts else max(policy.reach_best, -(-policy.min_starts // 4))
    return max(1, min(wanted, batch_size, policy.max_starts - n_started))


def fit_em_until(
    fit_from: Callable[[P], EMFit],
    next_init: Callable[[], P],
    policy: RestartPolicy,
    *,
    skip: type[Exception] | tuple[type[Exception], ...] = (),
    futile: Callable[[EMFit], bool] | None = None,
    fit_batch: Callable[[list[P]], BatchedEMFit] | None = None,
    batch_size: int = 1000,
) -> RestartRun:
    """EM from new starting points until ``policy`` is satisfied.

    Parameters
    ----------
    fit_from
        EM from one starting point (a family's ``fit`` bound to its model and data).
    next_init
        Draws the next starting point (from its own child generator, so start j is the same whatever the
        number of starts: with ``fit_batch`` it may be called for a few starts past the last one used).
    policy
        When to stop.
    skip
        Exceptions that fail one start without ending the run (a component collapsing onto one point);
        if every start fails, the first such exception is raised again.
    futile
        Given the best fit after ``policy.min_starts`` starts, whether searching further is pointless (a
        degenerate answer: more starts find higher spikes on fewer points, not a better clustering).
    fit_batch
        The same EM as ``fit_from`` from each of several starts at once (:func:`fit_em_batched`), for data
        small enough that one fit at a time costs mostly per-call overhead. The starts then run in batches
        of at most ``batch_size``; the policy is still applied start by start, in order, to the batch's
        results, so the starts used, their number and the best are those of the one-at-a-time run. A start
        the batch failed is run again by ``fit_from`` (its exception is ``fit_from``'s); every start within
        :func:`batched_rerun_margin` of the best is run again by ``fit_from`` too, so the best fit, with its
        full trace, is ``fit_from``'s. Other starts keep the batch's outcome (:func:`batched_fits`: equal to
        ``fit_from``'s to rounding, with a trace of the starting row only).
    """
    batching = fit_batch is not None and policy.max_starts > 1
    inits, fits, failures, first_error = [], [], [], None
    leader = None  # the index of the best fit so far: the only one whose trace keeps its parameters
    drawn: list[tuple[P, EMFit | None]] = []  # run by the last batch, not yet taken (last first)
    from_batch: set[int] = set()  # which of fits came from a batch
    while not policy.done([fit.loglik for fit in fits], len(inits)):
        if futile is not None and fits and len(inits) >= policy.min_starts and futile(max(fits, key=lambda f: f.loglik)):
            break
        if batching and not drawn:
            chunk = [next_init() for _ in range(_chunk_size(policy, len(inits), batch_size))]
            drawn = list(zip(chunk, batched_fits(fit_batch(chunk), chunk)))[::-1]
        init, fit = drawn.pop() if drawn else (next_init(), None)
        inits.append(init)
        if fit is not None:
            from_batch.add(len(fits))
            fits.append(fit)
            continue
        try:
            fits.append(fit_from(init))
        except skip as error:
            failures.append(str(error))
            first_error = first_error or error
            continue
        # Every iteration's parameters of every start add up (200 starts x 1,000 iterations of a 100-column
        # covariance: tens of GB); a start behind the best keeps its objective's path and its start only.
        if leader is not None and fits[-1].loglik > fits[leader].loglik:
            fits[leader], leader = _objective_trace(fits[leader]), len(fits) - 1
        elif leader is not None and fits[-1].loglik < fits[leader].loglik:
            fits[-1] = _objective_trace(fits[-1])
        elif leader is None:
            leader = len(fits) - 1
    if batching and fits:
        fits, rerun_failures = _rerun_near_best(fits, from_batch, fit_from, skip)
        failures += [str(error) for error in rerun_failures]
        first_error = first_error or (rerun_failures[0] if rerun_failures else None)
    if not fits:
        raise first_error
    best = EMRestarts(tuple(fits)).best_index
    fits = [fit if i == best else _objective_trace(fit) for i, fit in enumerate(fits)]
    return RestartRun(EMRestarts(tuple(fits)), tuple(inits), tuple(failures), policy)


def _objective_trace(fit: EMFit) -> EMFit:
    """``fit`` with a trace of its starting row and its objective at every iteration (no parameters or statistics
    after the start): what is kept of a restart that is not the best."""
    if all(row.params is None and row.stats is None for row in fit.trace[1:]):
        return fit
    rows = (fit.trace[0], *(EMIteration(row.iteration, None, row.loglik, None) for row in fit.trace[1:]))
    return dataclasses.replace(fit, trace=rows)


def _rerun_near_best(fits: list[EMFit], from_batch: set[int], fit_from: Callable[[P], EMFit],
                     skip) -> tuple[list[EMFit], list[Exception]]:
    """``fits`` with every batched fit that may be ``fit_from``'s best replaced by ``fit_from``'s own (one run
    per distinct start): their order by log-likelihood, and so the best, is then ``fit_from``'s. A re-run that
    fails where the batch did not (rounding at the edge of a degenerate covariance) is dropped and returned."""
    top = max(fit.loglik for fit in fits)
    margin = batched_rerun_margin(top)
    rerun: dict[tuple, EMFit | Exception] = {}
    out, failed = [], []
    for index, fit in enumerate(fits):
        if index in from_batch and fit.loglik >= top - margin:
            key = _record_key(fit.init_params)
            if key not in rerun:
                try:
                    rerun[key] = fit_from(fit.init_params)
                except skip as error:
                    rerun[key] = error
            if isinstance(rerun[key], Exception):
                failed.append(rerun[key])
                continue
            fit = rerun[key]
        out.append(fit)
    return out, failed
