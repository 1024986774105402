"""Baum-Welch (EM for hidden Markov models) and Viterbi training, as pure E-steps and M-steps around
:func:`emvsbayes.em.fit_em`.

E-step (soft): forward-backward at the current parameters gives the expected transition counts ``xi_sum``
(K, K), the log-likelihood and the sums the M-step reads: per state sum_t gamma_tk, gamma_0k and the
gamma-weighted sums of y_t - c_k and (y_t - c_k)^2 about the current means c_k (gamma_tk = P(z_t = k | y)). It
runs compiled (:mod:`emvsbayes.hmm.compiled_estep`, numba), fused with those sums, so Baum-Welch never holds
the (T, K) smoothed probabilities (``e_step(..., keep_gamma=True)`` returns them too); the numpy recursions of
:mod:`emvsbayes.hmm.inference` are its reference in the tests and its fallback.
E-step (hard, Viterbi training): the Viterbi path as one-hot ``gamma`` and its transition counts; the
objective is the path's complete-data log-likelihood max_z log p(y, z), which Viterbi training never
decreases (the Viterbi step maximises it over paths, the M-step over parameters).

M-step: ``transition[i] = xi_sum[i] / sum_j xi_sum[i, j]``; ``initial = gamma[0]`` (estimated initial
distribution); Poisson ``rate[k] = sum_t gamma_tk y_t / sum_t gamma_tk``; Gaussian ``mu[k]`` the same
weighted mean and ``sigma[k]^2 = sum_t gamma_tk (y_t - mu_k)^2 / sum_t gamma_tk`` (from the sums about c_k:
the mean of y - c_k plus c_k, and the mean of (y - c_k)^2 less the square of the mean of y - c_k; with c_k
the previous means the two terms are of the size of the variance, so nothing is lost to cancellation).
A state that received no weight keeps its emission parameters, a state never left keeps its transition
row (their updates are 0/0).

With the stationary initial distribution, ``initial = delta(transition)`` ties the first state to the
transition matrix and the transition update has no closed form: the M-step then maximises
``sum_ij xi_ij log A_ij + sum_k gamma_0k log delta_k(A)`` numerically (Newton over the rows' log-ratios with
the closed-form gradient and Hessian, :func:`_transition_derivatives`, run compiled by
:mod:`emvsbayes.hmm.compiled_mstep`; started from the better of the current A and the counts update) and keeps
whichever of the current A, the closed-form counts update and that maximiser scores highest, so the step
never lowers the expected complete-data log-likelihood (a generalised EM step: the log-likelihood still
never falls).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from emvsbayes.em import BatchedEMFit, EMFit, RestartPolicy, RestartRun, fit_em, fit_em_batched, fit_em_until, take_rows
from emvsbayes.errors import DegenerateFitError
from emvsbayes.hmm.inference import viterbi
from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams, emission_names, stationary_distribution

#: A Gaussian state whose sd falls below this fraction of the series' sd has collapsed onto (nearly) one
#: value: the likelihood is unbounded there, and EM's answer would be that spike, not a state.
MIN_SIGMA_FRACTION = 1e-6


@dataclass(frozen=True, slots=True)
class HMMStats:
    """Expected complete-data statistics of one E-step (K states, T time points).

    ``xi_sum`` (K, K): expected transitions i -> j; ``counts`` (K,) = sum_t gamma_tk; ``first`` (K,) = gamma_0k;
    ``centre`` (K,): the emission means the sums were taken about (the parameters of the E-step);
    ``sum_dev`` and ``sum_sq_dev`` (K,): sum_t gamma_tk (y_t - centre_k) and sum_t gamma_tk (y_t - centre_k)^2;
    ``gamma`` (T, K): P(z_t = k | y) (hard EM: the Viterbi path one-hot), or None when not asked for (Baum-Welch
    reads only the sums).
    """

    xi_sum: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    centre: np.ndarray
    sum_dev: np.ndarray
    sum_sq_dev: np.ndarray
    gamma: np.ndarray | None = None


def _log_parts(model: HiddenMarkovModel, y, params: HMMParams):
    with np.errstate(divide="ignore"):
        log_transition = np.log(params.transition)
    return model.log_initial(params), log_transition, model.log_emission(params, y)


def _centre(model: HiddenMarkovModel, params: HMMParams) -> np.ndarray:
    """The emission means at ``params``: the centre of the E-step's weighted sums."""
    return params.rate if model.emission == "poisson" else params.mu


def e_step(model: HiddenMarkovModel, y, params: HMMParams, *, keep_gamma: bool = True) -> tuple[HMMStats, float]:
    """Forward-backward at ``params``; returns the statistics and the log-likelihood log p(y).

    The compiled kernel of :mod:`emvsbayes.hmm.compiled_estep` (imported here, so numba is imported only when
    an HMM is fitted); ``keep_gamma=False`` leaves out the (T, K) smoothed probabilities (:func:`fit` does).
    """
    from emvsbayes.hmm.compiled_estep import estep_statistics

    with np.errstate(divide="ignore"):
        initial = np.exp(model.log_initial(params))
    centre = _centre(model, params)
    y = np.asarray(y, dtype=float)
    out = estep_statistics(initial, params.transition, lambda start, stop: model.log_emission(params, y[start:stop]),
                           y, centre, keep_gamma=keep_gamma)
    return HMMStats(out.xi_sum, out.counts, out.first, centre, out.sum_dev, out.sum_sq_dev, out.gamma), out.loglik


def hard_e_step(model: HiddenMarkovModel, y, params: HMMParams, *, keep_gamma: bool = True) -> tuple[HMMStats, float]:
    """Viterbi path at ``params`` as one-hot statistics; returns the path's log p(y, z)."""
    y = np.asarray(y, dtype=float)
    path, best = viterbi(*_log_parts(model, y, params))
    k = model.n_components
    xi_sum = np.zeros((k, k))
    np.add.at(xi_sum, (path[:-1], path[1:]), 1.0)
    centre = _centre(model, params)
    dev = y - centre[path]
    gamma = None
    if keep_gamma:
        gamma = np.zeros((path.size, k))
        gamma[np.arange(path.size), path] = 1.0
    stats = HMMStats(xi_sum, np.bincount(path, minlength=k).astype(float), np.eye(k)[path[0]], centre,
                     np.bincount(path, weights=dev, minlength=k), np.bincount(path, weights=dev * dev, minlength=k),
                     gamma)
    return stats, best


E_STEPS = {"soft": e_step, "hard": hard_e_step}


def _expected_transition_loglik(model, transition, stats) -> float:
    """sum_ij xi_ij log A_ij (+ sum_k gamma_0k log delta_k(A) for a stationary start): the part of the
    expected complete-data log-likelihood that depends on the transition matrix."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(stats.xi_sum > 0, stats.xi_sum * np.log(transition), 0.0).sum()
        if model.stationary:
            delta = stationary_distribution(transition)
            value += np.where(stats.first > 0, stats.first * np.log(np.clip(delta, 0.0, None)), 0.0).sum()
    return float(value) if np.isfinite(value) else -math.inf


def _rows_from_counts(xi_sum: np.ndarray, current: np.ndarray) -> np.ndarray:
    totals = xi_sum.sum(axis=-1, keepdims=True)  # per row (the last axis: a batch has a leading one)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, xi_sum / totals, current)


def _transition_derivatives(model, stats, free: np.ndarray, *, hessian: bool = True):
    """The transition part of the expected complete-data log-likelihood, its gradient and (``hessian=True``)
    its Hessian over the rows' log-ratios ``free`` (K, K - 1) flattened (the last entry of each row the
    reference); (-inf, zeros, None) where the objective is not finite.

    With Q(A) = sum_ij xi_ij log A_ij + sum_k g_k log delta_k(A) (g = gamma_0), the stationary distribution
    solves delta M = 1 with M = I - A + U, so with Z = M^-1, d delta = delta dA Z and dZ = Z dA Z:
    dQ/dA_ij = delta_i w_j with w = Z (g / delta), and
    d2Q/dA_ij dA_lm = delta_l Z_mi w_j + delta_i Z_jl w_m - delta_i delta_l (Z diag(g / delta^2) Z^T)_jm.
    Row i's softmax has Jacobian P_i = diag(A_i) - A_i A_i^T (over all K logits of the row); its second
    derivative turns a gradient D over A into the block delta_ab G_ia - A_ia G_ib - A_ib G_ia with
    G_ia = A_ia (D_ia - sum_j A_ij D_ij), the gradient over the logits. The counts' part is the
    multinomial's: gradient xi_ia - n_i A_ia, Hessian -n_i P_i (n_i = sum_j xi_ij). All closed forms: Newton
    needs one evaluation a step (a forward-difference Hessian of the analytic gradient took K (K - 1) more,
    93% of Baum-Welch's time on the K = 3 earthquakes).
    """
    k = model.n_components
    logits = np.concatenate([free.reshape(k, k - 1), np.zeros((k, 1))], axis=1)
    transition = np.exp(logits - logits.max(axis=1, keepdims=True))
    transition /= transition.sum(axis=1, keepdims=True)
    xi = stats.xi_sum
    totals = xi.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.where(xi > 0, xi * np.log(transition), 0.0).sum())
    gradient = xi - totals[:, None] * transition
    rows = np.arange(k)
    full = None
    if hessian:
        # P_i for every row, (K, K, K); the Hessian over all logits as (row, logit, row, logit).
        jacobians = transition[:, :, None] * np.eye(k) - transition[:, :, None] * transition[:, None, :]
        full = np.zeros((k, k, k, k))
        full[rows, :, rows, :] = -totals[:, None, None] * jacobians
    if model.stationary:
        system = np.eye(k) - transition + 1.0
        try:
            inverse = np.linalg.inv(system)
        except np.linalg.LinAlgError:
            return -math.inf, np.zeros(free.size), None
        delta = inverse.sum(axis=0)  # 1 Z
        g = stats.first
        positive = g > 0
        if np.any(positive & ~(delta > 0)):
            return -math.inf, np.zeros(free.size), None
        safe_delta = np.where(positive, delta, 1.0)
        value += float(np.sum(np.where(positive, g * np.log(safe_delta), 0.0)))
        ratio = np.where(positive, g / safe_delta, 0.0)
        w = inverse @ ratio
        spread = transition * (w[None, :] - (transition @ w)[:, None])  # (P_i w)_a
        stationary_gradient = delta[:, None] * spread
        gradient = gradient + stationary_gradient
        if hessian:
            c = np.einsum("lbm,mi->ilb", jacobians, inverse)  # (P_l Z[:, i])_b
            s = (inverse * (ratio / safe_delta)) @ inverse.T  # Z diag(g / delta^2) Z^T
            cross = delta[None, None, :, None] * spread[:, :, None, None] * c[:, None, :, :]
            full += cross + cross.transpose(2, 3, 0, 1)
            full -= (delta[:, None, None, None] * delta[None, None, :, None]
                     * np.einsum("iaj,jm,lmb->ialb", jacobians, s, jacobians))
            block = (np.eye(k) * stationary_gradient[:, :, None]
                     - transition[:, :, None] * stationary_gradient[:, None, :]
                     - stationary_gradient[:, :, None] * transition[:, None, :])
            full[rows, :, rows, :] += block
    if not (math.isfinite(value) and np.all(np.isfinite(gradient))):
        return -math.inf, np.zeros(free.size), None
    if full is not None:
        full = full[:, :-1, :, :-1].reshape(k * (k - 1), k * (k - 1))
        if not np.all(np.isfinite(full)):
            return -math.inf, np.zeros(free.size), None
    return value, gradient[:, :-1].ravel(), full


def _transition_objective_and_grad(model, stats, free: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`_transition_derivatives` without the Hessian: the objective and its gradient."""
    value, gradient, _ = _transition_derivatives(model, stats, free, hessian=False)
    return value, gradient


def _maximise(derivatives, x0: np.ndarray, *, gtol: float, gain_tol: float, max_iter: int = 50) -> np.ndarray:
    """Maximise a smooth function of a few variables by damped Newton steps with its exact Hessian
    (``derivatives(x) -> (value, gradient, Hessian)``; shifted to negative definite only where it is not;
    backtracking until the value rises), until the largest gradient entry is at most ``gtol`` and the
    Newton step's predicted gain (half the Newton decrement g' (-H)^-1 g) at most ``gain_tol``.

    Both tests, because a transition entry next to 0 (a transition the series barely makes) has a gradient
    and a curvature of its size: the gradient test alone stopped with such entries off their maximiser by a
    factor of 2 (a gain of 6e-10 left, above Baum-Welch's tol, and in 3 of 200 bootstrap refits EM then
    stalled on a boundary face instead of leaving it); nor is -H regularised by a multiple of its largest
    entry when it is negative definite, as that swamped those entries' curvature. For the handful of
    log-ratios of a transition matrix, started next to the maximiser, this takes a few steps; scipy's
    L-BFGS-B stops at its default tolerances well before (a generalised-EM step that left Baum-Welch 10x
    more iterations) and costs milliseconds per call in its bookkeeping alone.
    """
    x = np.array(x0, dtype=float)
    value, gradient, hessian = derivatives(x)
    n = x.size
    identity = np.eye(n)
    for _ in range(max_iter):
        if not math.isfinite(value):
            break
        try:  # negative definite (the usual case near the maximum): the plain Newton step
            factor = np.linalg.cholesky(-hessian)
        except np.linalg.LinAlgError:
            shift = (max(0.0, float(np.max(np.linalg.eigvalsh(hessian))))
                     + 1e-8 * max(1.0, float(np.max(np.abs(hessian)))))
            factor = np.linalg.cholesky(-hessian + shift * identity)
        direction = np.linalg.solve(factor.T, np.linalg.solve(factor, gradient))
        if np.max(np.abs(gradient)) <= gtol and 0.5 * float(gradient @ direction) <= gain_tol:
            break
        for _ in range(60):
            trial = x + direction
            trial_value, trial_gradient, trial_hessian = derivatives(trial)
            # Next to the maximum the value changes by less than its rounding: there the gradient decides
            # (a step that halved the gradient but lost 1e-14 to rounding was refused 60 times, leaving
            # the gradient 1e4 times the tolerance).
            if trial_value >= value or (trial_value >= value - 1e-13 * abs(value)
                                        and np.max(np.abs(trial_gradient)) < np.max(np.abs(gradient))):
                break
            direction = direction / 2
        else:
            break
        x, value, gradient, hessian = trial, trial_value, trial_gradient, trial_hessian
    return x


def _stationary_transition(model, stats, current: np.ndarray) -> np.ndarray:
    """The transition update when the initial distribution is the stationary one (see the module doc), compiled
    whole: :func:`_stationary_transition_reference` as one numba call (its Newton loop in numpy spent ~0.3 ms an
    M-step in per-call overhead, most of a bootstrap refit's time); equal to it to rounding (the tests)."""
    from emvsbayes.hmm.compiled_mstep import stationary_transition

    return stationary_transition(stats.xi_sum, stats.first, current)


def _stationary_transition_reference(model, stats, current: np.ndarray) -> np.ndarray:
    """The stationary transition update in numpy around the compiled objective: the reference of the compiled
    update. The better of the current matrix and the counts update starts Newton (:func:`_maximise`); the best
    of the three is kept, so the step never lowers the objective."""
    from scipy.special import softmax

    # Compiled forms of _transition_derivatives and _expected_transition_loglik (numpy's per-call overhead
    # dominated the K x K arithmetic).
    from emvsbayes.hmm.compiled_mstep import transition_derivatives, transition_value

    k = model.n_components
    counts_update = _rows_from_counts(stats.xi_sum, current)
    candidates = [current, counts_update]
    scores = [transition_value(a, stats.xi_sum, stats.first, True) for a in candidates]
    # From the better of the two: near convergence that is next to the maximiser, and the search is short.
    start = np.clip(candidates[int(np.argmax(scores))], 1e-12, None)
    free0 = (np.log(start[:, :-1]) - np.log(start[:, -1:])).ravel()
    # The gradient scales with the transition counts: 1e-11 of them is the maximum to rounding (the objective
    # then is within ~gtol^2 / curvature of its maximum; near EM's convergence the gradient's rounding
    # noise is ~1e-10 for the earthquakes and a tighter tolerance only spins).
    gtol = 1e-11 * (1.0 + float(stats.xi_sum.sum()))
    # The predicted gain left: well below Baum-Welch's tolerances on the log-likelihood (1e-10 and up).
    gain_tol = 1e-14 * (1.0 + float(stats.xi_sum.sum()))
    found = _maximise(lambda free: transition_derivatives(free, stats.xi_sum, stats.first, True), free0, gtol=gtol,
                      gain_tol=gain_tol)
    candidates.append(softmax(np.concatenate([found.reshape(k, k - 1), np.zeros((k, 1))], axis=1), axis=1))
    scores.append(transition_value(candidates[-1], stats.xi_sum, stats.first, True))
    return candidates[int(np.argmax(scores))]


def _emission_update(model: HiddenMarkovModel, stats: HMMStats, params: HMMParams, y_sd) -> tuple[dict, np.ndarray | None]:
    """The M-step's emission parameters from the E-step's sums (any leading axes: one series, or a batch with one
    ``y_sd`` per series), and where a Gaussian state's sd fell to :data:`MIN_SIGMA_FRACTION` of the series' sd
    (bool, like the sds; None for Poisson emissions)."""
    counts = stats.counts
    has_weight = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        # The sums are about the E-step's means (close to the new ones), so the variance below loses nothing
        # to cancellation.
        mean_dev = np.where(has_weight, stats.sum_dev / counts, 0.0)
        mean = stats.centre + mean_dev
    if model.emission == "poisson":
        return {"rate": np.where(has_weight, mean, params.rate)}, None
    mu = np.where(has_weight, mean, params.mu)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.clip(stats.sum_sq_dev / counts - mean_dev**2, 0.0, None)
    sigma = np.where(has_weight, np.sqrt(np.where(has_weight, var, 1.0)), params.sigma)
    floor = MIN_SIGMA_FRACTION * np.maximum(np.asarray(y_sd, dtype=float), np.finfo(float).tiny)
    return {"mu": mu, "sigma": sigma}, sigma <= np.expand_dims(floor, -1)


def _collapse_message(sigma: np.ndarray, counts: np.ndarray) -> str:
    j = int(np.argmin(sigma))
    return (f"state {j}'s sd collapsed to {sigma[j]:.3g} (it holds {counts[j]:.3g} time points of nearly one value): "
            "the likelihood is unbounded there; use fewer states or other starts")


def m_step(model: HiddenMarkovModel, y, stats: HMMStats, params: HMMParams, *, y_sd: float | None = None) -> HMMParams:
    """The parameters maximising the expected complete-data log-likelihood (see the module docstring).

    ``y_sd`` the series' sd when already known (:func:`fit` passes it: at T = 1e6 computing it took 3 ms of
    an iteration's 70). Raises :class:`DegenerateFitError` when a Gaussian state's sd collapses (the likelihood
    is unbounded)."""
    y = np.asarray(y, dtype=float)
    if model.stationary:
        transition = _stationary_transition(model, stats, params.transition)
        initial = None
    else:
        transition = _rows_from_counts(stats.xi_sum, params.transition)
        initial = stats.first
    emission, collapsed = _emission_update(model, stats, params, float(np.std(y)) if y_sd is None else y_sd)
    if collapsed is not None and collapsed.any():
        raise DegenerateFitError(_collapse_message(emission["sigma"], stats.counts))
    if initial is None:
        return model.with_initial(None, transition, **emission)
    return HMMParams(initial, transition, **emission)


def check_start(model: HiddenMarkovModel, y, init: HMMParams) -> None:
    """A start where the series is impossible (log-likelihood -inf: a rate of 0 against a positive count,
    a forbidden transition on every path) gives EM nothing to move from."""
    model.validate_params(init)
    with np.errstate(all="ignore"):
        loglik = e_step(model, y, init, keep_gamma=False)[1]
    if not math.isfinite(loglik):
        raise ValueError(f"the log-likelihood at the start is {loglik}: the series is impossible there; "
                         "start with positive rates (or sds) and transition probabilities")


def fit(model: HiddenMarkovModel, y, init: HMMParams, *, kind: str = "soft", **options) -> EMFit:
    """Baum-Welch (``kind="soft"``) or Viterbi training (``"hard"``) from ``init``; ``options`` as
    :func:`emvsbayes.em.fit_em`."""
    y = np.asarray(y, dtype=float)
    check_start(model, y, init)
    return fit_em(partial(E_STEPS[kind], model, y, keep_gamma=False), partial(m_step, model, y, y_sd=float(np.std(y))),
                  init, **options)


# --------------------------------------------------------------------------------------------------
# Many series at once (the parametric bootstrap's simulated series)


def _batched_e_step(model: HiddenMarkovModel, ys: np.ndarray, params: HMMParams, rows: np.ndarray):
    """:func:`e_step` (``keep_gamma=False``) of the series ``ys[rows]`` at ``params`` (a record with those rows
    along its leading axis): one compiled call for the batch, each row's numbers those of :func:`e_step` on its
    own (the same emissions, the same compiled pass; a row the fast pass cannot take goes through
    :func:`e_step`, which falls back to the exact recursions)."""
    from emvsbayes.hmm.compiled_estep import batch_statistics

    y = np.ascontiguousarray(ys[rows], dtype=float)
    with np.errstate(divide="ignore"):
        initial = np.exp(model.log_initial(params))
    centre = np.array(_centre(model, params), dtype=float, order="C")
    by_state = np.ascontiguousarray(np.swapaxes(model.log_emission(params, y), -1, -2))  # (b, K, T)
    shift = by_state.max(axis=1)
    with np.errstate(invalid="ignore"):  # -inf - -inf: a time point impossible in every state (that row falls back)
        scaled = np.exp(by_state - shift[:, None, :])
    ok, loglik, xi_sum, counts, first, sum_dev, sum_sq_dev = batch_statistics(
        np.array(initial, dtype=float, order="C"), np.array(params.transition, dtype=float, order="C"), scaled, shift,
        y, centre)
    for r in np.flatnonzero(~(ok & np.isfinite(loglik) & np.isfinite(shift).all(axis=1))):
        stats, loglik[r] = e_step(model, y[r], take_rows(params, r), keep_gamma=False)
        xi_sum[r], counts[r], first[r], sum_dev[r], sum_sq_dev[r] = (stats.xi_sum, stats.counts, stats.first,
                                                                      stats.sum_dev, stats.sum_sq_dev)
    return HMMStats(xi_sum, counts, first, centre, sum_dev, sum_sq_dev), loglik


def _batched_m_step(model: HiddenMarkovModel, y_sd: np.ndarray, stats: HMMStats, params: HMMParams, rows: np.ndarray,
                    iteration: int):
    """:func:`m_step` for each row of a batch; (new parameters, slack 0, errors) as
    :func:`emvsbayes.em.fit_em_batched` asks: a row whose step fails carries the message :func:`m_step` would
    raise (and its current parameters, left out by the loop)."""
    from emvsbayes.hmm.compiled_mstep import stationary_transitions

    del iteration
    errors = np.full(rows.size, "", dtype=object)
    if model.stationary:
        transition, ok = stationary_transitions(stats.xi_sum, stats.first, params.transition)
        errors[~ok] = "LinAlgError: the transition update's Hessian is not negative definite even when shifted"
        initial = None
    else:
        transition = _rows_from_counts(stats.xi_sum, params.transition)
        initial = stats.first
    emission, collapsed = _emission_update(model, stats, params, y_sd[rows])
    if collapsed is not None:
        for r in np.flatnonzero(collapsed.any(axis=1)):
            errors[r] = f"DegenerateFitError: {_collapse_message(emission['sigma'][r], stats.counts[r])}"
            emission["sigma"][r] = params.sigma[r]  # a valid row for the record (the loop leaves it out)
    failed = errors != ""
    transition[failed] = params.transition[failed]
    if initial is not None:
        new = HMMParams(initial, transition, **emission)
    else:
        try:
            new = model.with_initial(None, transition, **emission)
        except np.linalg.LinAlgError:  # a reducible chain in some row: those rows fail, as m_step would
            initial = np.empty_like(stats.first)
            for r in range(rows.size):
                try:
                    initial[r] = model.with_initial(None, transition[r], **{n: v[r] for n, v in emission.items()}).initial
                except np.linalg.LinAlgError as error:
                    errors[r], failed[r] = f"LinAlgError: {error}", True
                    initial[r] = params.initial[r]
            new = HMMParams(initial, transition, **emission)
    return new, 0.0, (errors if failed.any() else None)


def fit_batched(model: HiddenMarkovModel, ys, init: HMMParams, **options) -> BatchedEMFit:
    """Baum-Welch from ``init`` (one start) on each of the equal-length series ``ys`` (B, T) at once, each run
    as :func:`fit` runs it on its own series (soft EM; ``options`` as :func:`emvsbayes.em.fit_em_batched`).

    A bootstrap of a short series is hundreds of fits of a few hundred numbers, where one fit at a time spends
    its time in per-call overhead: here each E-step is one compiled pass over the batch and each M-step one
    compiled loop over its rows. A start is where every series has a finite log-likelihood (an EM answer a
    series was simulated from is)."""
    ys = np.asarray(ys, dtype=float)
    model.validate_params(init)
    n_runs = ys.shape[0]
    batched = HMMParams(*(None if v is None else np.repeat(np.asarray(v, dtype=float)[None], n_runs, axis=0)
                          for v in (init.initial, init.transition, init.rate, init.mu, init.sigma)))
    y_sd = np.array([float(np.std(row)) for row in ys])
    return fit_em_batched(partial(_batched_e_step, model, ys), partial(_batched_m_step, model, y_sd), batched,
                          **options)


# --------------------------------------------------------------------------------------------------
# Starting points and restarts
# --------------------------------------------------------------------------------------------------
# Starting points and restarts


def random_start(model: HiddenMarkovModel, y, rng: np.random.Generator) -> HMMParams:
    """One random starting point.

    Transition rows ~ Dirichlet(1 + K on the diagonal, 1 elsewhere) (persistent states, as a start that
    switches state every step rarely leads anywhere useful); initial ~ Dirichlet(1) (or stationary);
    emission locations at K random quantiles of the series (distinct with probability 1), Gaussian sds a
    random fraction (0.3 to 1) of the series' sd.
    """
    k = model.n_components
    y = np.asarray(y, dtype=float)
    concentration = np.ones((k, k)) + k * np.eye(k)
    transition = np.stack([rng.dirichlet(row) for row in concentration])
    initial = rng.dirichlet(np.ones(k))
    locations = np.quantile(y, np.sort(rng.uniform(0.05, 0.95, size=k)))
    sd = float(np.std(y)) or 1.0
    locations = locations + 0.05 * sd * rng.standard_normal(k)
    if model.emission == "poisson":
        emission = {"rate": np.maximum(locations, 0.05 * max(float(np.mean(y)), 1e-3))}
    else:
        emission = {"mu": locations, "sigma": sd * rng.uniform(0.3, 1.0, size=k)}
    return model.with_initial(initial, transition, **emission)


def start_source(model: HiddenMarkovModel, y, rng: np.random.Generator) -> Callable[[], HMMParams]:
    """Draws the next starting point at each call, start j from the j-th child of ``rng`` (so start j is the
    same whatever the number of starts)."""

    def next_start() -> HMMParams:
        return random_start(model, y, rng.spawn(1)[0])

    return next_start


def fit_until(model: HiddenMarkovModel, y, next_init: Callable[[], HMMParams], policy: RestartPolicy, *,
              kind: str = "soft", **options) -> RestartRun:
    """EM from new starts until ``policy`` is met; a start whose Gaussian state collapses is recorded and
    skipped (unless every start does)."""
    return fit_em_until(partial(fit, model, y, kind=kind, **options), next_init, policy, skip=DegenerateFitError)


@dataclass(frozen=True, slots=True)
class HMMOptimum:
    """Restarts that reached one optimum up to a renaming of the states: ``members`` (restart indices, the
    first the representative), ``loglik`` the representative's, ``perms`` one permutation per member that
    renames it onto the representative."""

    loglik: float
    members: tuple[int, ...]
    perms: tuple[tuple[int, ...], ...]


def distinct_optima(fits: Sequence[EMFit], *, loglik_atol: float = 1e-6, rtol: float = 1e-4,
                    atol: float = 1e-6) -> list[HMMOptimum]:
    """Group EM restarts into distinct optima, highest log-likelihood first.

    Two restarts are one optimum when their log-likelihoods agree within ``loglik_atol`` and, for some
    permutation of the states (applied to the initial vector, the emission parameters and the rows and
    columns of the transition matrix together), every parameter agrees within ``np.isclose(rtol, atol)``.
    Every permutation is tried (K! of them: the families' K are small).
    """
    order = np.argsort([-fit.loglik for fit in fits], kind="stable")
    groups: list[tuple[int, list[int], list[tuple[int, ...]]]] = []
    for r in order:
        params = fits[r].params
        k = params.n_components
        for rep, members, perms in groups:
            if abs(fits[r].loglik - fits[rep].loglik) > loglik_atol:
                continue
            reference = fits[rep].params.variables()
            match = next((perm for perm in itertools.permutations(range(k))
                          if all(np.allclose(value, reference[name], rtol=rtol, atol=atol)
                                 for name, value in params.permuted(perm).variables().items())), None)
            if match is not None:
                members.append(int(r))
                perms.append(tuple(int(i) for i in match))
                break
        else:
            groups.append((int(r), [int(r)], [tuple(range(k))]))
    return [HMMOptimum(float(fits[rep].loglik), tuple(members), tuple(perms)) for rep, members, perms in groups]


def params_names(model: HiddenMarkovModel) -> tuple[str, ...]:
    """The parameter names of ``model``'s records, in report order."""
    return ("initial", "transition", *emission_names(model.emission))
