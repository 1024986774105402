"""The stationary M-step's objective, gradient and Hessian compiled with numba.

:func:`transition_derivatives` is :func:`emvsbayes.hmm.em._transition_derivatives` (the numpy reference, its
formulas in that docstring) written as loops over K x K arrays: for K = 3 numpy's per-call overhead made one
evaluation about 140 microseconds, of which the arithmetic is a few hundred nanoseconds, and Newton takes
a few evaluations per Baum-Welch iteration (tests/test_hmm_family.py compares the two).

numba is already imported on this path (the E-step, :mod:`emvsbayes.hmm.compiled_estep`, whose compile helper
this module shares: machine code cached beside the file where that is writable).
"""

from __future__ import annotations

import math

import numpy as np

from emvsbayes.hmm.compiled_estep import njit_cached


@njit_cached
def _transition_from_free(free, k):
    """The transition matrix whose row i has the log-ratios ``free[i (K - 1):(i + 1)(K - 1)]`` against its last
    entry (each row's softmax, its largest logit taken out first)."""
    a = np.empty((k, k))
    for i in range(k):
        top = 0.0
        for j in range(k - 1):
            top = max(top, free[i * (k - 1) + j])
        total = 0.0
        for j in range(k):
            e = math.exp((free[i * (k - 1) + j] if j < k - 1 else 0.0) - top)
            a[i, j] = e
            total += e
        for j in range(k):
            a[i, j] /= total
    return a


def _derivatives(free, xi, first, stationary, want_hessian):
    """(value, gradient (n,), Hessian (n, n), ok) over the log-ratios ``free`` (n = K (K - 1)); ``ok`` False
    where the objective is not finite (the stationary system singular, a stationary probability <= 0)."""
    k = xi.shape[0]
    n = k * (k - 1)
    a = _transition_from_free(free, k)
    value = 0.0
    grad = np.empty((k, k))
    for i in range(k):
        row_total = 0.0
        for j in range(k):
            row_total += xi[i, j]
        for j in range(k):
            if xi[i, j] > 0:
                value += xi[i, j] * math.log(a[i, j])
        for j in range(k):
            grad[i, j] = xi[i, j] - row_total * a[i, j]
    full = np.zeros((k, k, k, k))
    # P_i = diag(A_i) - A_i A_i^T
    p = np.empty((k, k, k))
    for i in range(k):
        for r in range(k):
            for c in range(k):
                p[i, r, c] = (a[i, r] if r == c else 0.0) - a[i, r] * a[i, c]
    if want_hessian:
        for i in range(k):
            row_total = 0.0
            for j in range(k):
                row_total += xi[i, j]
            for r in range(k):
                for c in range(k):
                    full[i, r, i, c] = -row_total * p[i, r, c]
    if stationary:
        system = np.empty((k, k))
        for i in range(k):
            for j in range(k):
                system[i, j] = (1.0 if i == j else 0.0) - a[i, j] + 1.0
        # numba's inv raises on an exactly singular system, and an exception caught inside compiled code can
        # leave Python's error indicator set (the next compiled call then fails): an LU pivot of exactly 0
        # (the determinant 0) is refused first.
        if np.linalg.det(system) == 0.0:
            return -math.inf, np.zeros(n), np.zeros((n, n)), False
        inverse = np.linalg.inv(system)
        delta = np.zeros(k)
        for i in range(k):
            for j in range(k):
                delta[j] += inverse[i, j]
        ratio = np.zeros(k)
        curvature = np.zeros(k)
        for j in range(k):
            if first[j] > 0:
                if not delta[j] > 0:
                    return -math.inf, np.zeros(n), np.zeros((n, n)), False
                value += first[j] * math.log(delta[j])
                ratio[j] = first[j] / delta[j]
                curvature[j] = ratio[j] / delta[j]
        w = inverse @ ratio
        spread = np.empty((k, k))
        for i in range(k):
            mean_w = 0.0
            for j in range(k):
                mean_w += a[i, j] * w[j]
            for j in range(k):
                spread[i, j] = a[i, j] * (w[j] - mean_w)
                grad[i, j] += delta[i] * spread[i, j]
        if want_hessian:
            # c[i, l, b] = (P_l Z[:, i])_b; s = Z diag(g / delta^2) Z^T; q[i, r, m] = (P_i s)[r, m]
            c = np.zeros((k, k, k))
            for i in range(k):
                for l in range(k):
                    for b in range(k):
                        acc = 0.0
                        for m in range(k):
                            acc += p[l, b, m] * inverse[m, i]
                        c[i, l, b] = acc
            s = np.zeros((k, k))
            for j in range(k):
                for m in range(k):
                    acc = 0.0
                    for t in range(k):
                        acc += inverse[j, t] * curvature[t] * inverse[m, t]
                    s[j, m] = acc
            q = np.zeros((k, k, k))
            for i in range(k):
                for r in range(k):
                    for m in range(k):
                        acc = 0.0
                        for j in range(k):
                            acc += p[i, r, j] * s[j, m]
                        q[i, r, m] = acc
            for i in range(k):
                for r in range(k):
                    for l in range(k):
                        for b in range(k):
                            acc = 0.0
                            for m in range(k):
                                acc += q[i, r, m] * p[l, m, b]
                            full[i, r, l, b] += (delta[l] * spread[i, r] * c[i, l, b]
                                                 + delta[i] * spread[l, b] * c[l, i, r]
                                                 - delta[i] * delta[l] * acc)
            for i in range(k):
                for r in range(k):
                    for b in range(k):
                        g_r = delta[i] * spread[i, r]
                        g_b = delta[i] * spread[i, b]
                        full[i, r, i, b] += (g_r if r == b else 0.0) - a[i, r] * g_b - g_r * a[i, b]
    gradient = np.empty(n)
    hessian = np.empty((n, n))
    for i in range(k):
        for r in range(k - 1):
            gradient[i * (k - 1) + r] = grad[i, r]
            for l in range(k):
                for b in range(k - 1):
                    hessian[i * (k - 1) + r, l * (k - 1) + b] = full[i, r, l, b]
    ok = math.isfinite(value)
    for x in range(n):
        if not math.isfinite(gradient[x]):
            ok = False
        for y in range(n):
            if not math.isfinite(hessian[x, y]):
                ok = False
    return value, gradient, hessian, ok


_derivatives_compiled = njit_cached(_derivatives)


def transition_derivatives(free: np.ndarray, xi: np.ndarray, first: np.ndarray, stationary: bool,
                           want_hessian: bool = True):
    """The compiled kernel (see the module docstring); (-inf, zeros, None) where the objective is not finite
    or the stationary system is singular."""
    try:
        value, gradient, hessian, ok = _derivatives_compiled(np.ascontiguousarray(free, dtype=np.float64),
                                                             np.ascontiguousarray(xi, dtype=np.float64),
                                                             np.ascontiguousarray(first, dtype=np.float64),
                                                             bool(stationary), bool(want_hessian))
    except np.linalg.LinAlgError:
        return -math.inf, np.zeros(np.size(free)), None
    if not ok:
        return -math.inf, np.zeros(np.size(free)), None
    return value, gradient, (hessian if want_hessian else None)


def _value_at(a, xi, first, stationary):
    """sum_ij xi_ij log A_ij (+ sum_k g_k log delta_k(A)) at a transition matrix ``a``; -inf where not finite
    (a used transition of probability 0, a stationary probability <= 0 where g_k > 0)."""
    k = xi.shape[0]
    value = 0.0
    for i in range(k):
        for j in range(k):
            if xi[i, j] > 0:
                value += xi[i, j] * math.log(a[i, j]) if a[i, j] > 0 else -math.inf
    if stationary:
        system = np.empty((k, k))
        for i in range(k):
            for j in range(k):
                system[i, j] = (1.0 if i == j else 0.0) - a[i, j] + 1.0
        if np.linalg.det(system) == 0.0:  # as in _derivatives
            return -math.inf
        inverse = np.linalg.inv(system)
        for j in range(k):
            if first[j] > 0:
                delta = 0.0
                for i in range(k):
                    delta += inverse[i, j]
                value += first[j] * math.log(delta) if delta > 0 else -math.inf
    return value if math.isfinite(value) else -math.inf


_value_at_compiled = njit_cached(_value_at)


def transition_value(transition: np.ndarray, xi: np.ndarray, first: np.ndarray, stationary: bool) -> float:
    """:func:`emvsbayes.hmm.em._expected_transition_loglik` compiled (the M-step scores its candidates with it)."""
    try:
        return float(_value_at_compiled(np.ascontiguousarray(transition, dtype=np.float64),
                                        np.ascontiguousarray(xi, dtype=np.float64),
                                        np.ascontiguousarray(first, dtype=np.float64), bool(stationary)))
    except np.linalg.LinAlgError:
        return -math.inf


# --------------------------------------------------------------------------------------------------
# The whole stationary transition update: emvsbayes.hmm.em._stationary_transition_reference (numpy: the
# candidates, Newton from the better one, the best of three) as one compiled call. Newton's loop in numpy
# cost ~0.3 ms an M-step in per-call overhead (a Cholesky factor and two solves of a 6 x 6 system a step):
# most of a bootstrap refit's time. One row here, and a loop over a batch of rows (the batched bootstrap).

#: Newton steps at most per M-step, and halvings of a step at most (as the reference's).
NEWTON_STEPS = 50
HALVINGS = 60


@njit_cached
def _derivatives_or_nothing(free, xi, first):
    """_derivatives with the Hessian; value -inf where it is not finite or the stationary system is singular."""
    n = free.shape[0]
    value, gradient, hessian, ok = _derivatives_compiled(free, xi, first, True, True)
    if not ok:
        return -math.inf, np.zeros(n), np.zeros((n, n))
    return value, gradient, hessian


@njit_cached
def _score(a, xi, first):
    return _value_at_compiled(a, xi, first, True)


@njit_cached
def _cholesky_lower(matrix):
    """(L, ok): the lower Cholesky factor of a symmetric matrix, ok False where it is not positive definite."""
    n = matrix.shape[0]
    factor = np.zeros((n, n))
    for j in range(n):
        diagonal = matrix[j, j]
        for m in range(j):
            diagonal -= factor[j, m] * factor[j, m]
        if not diagonal > 0.0:
            return factor, False
        factor[j, j] = math.sqrt(diagonal)
        for i in range(j + 1, n):
            acc = matrix[i, j]
            for m in range(j):
                acc -= factor[i, m] * factor[j, m]
            factor[i, j] = acc / factor[j, j]
    return factor, True


@njit_cached
def _newton_direction(factor, gradient):
    """(L L^T)^-1 gradient by forward and back substitution."""
    n = gradient.shape[0]
    z = np.empty(n)
    for i in range(n):
        acc = gradient[i]
        for m in range(i):
            acc -= factor[i, m] * z[m]
        z[i] = acc / factor[i, i]
    out = np.empty(n)
    for i in range(n - 1, -1, -1):
        acc = z[i]
        for m in range(i + 1, n):
            acc -= factor[m, i] * out[m]
        out[i] = acc / factor[i, i]
    return out


@njit_cached
def _largest_abs(values):
    top = 0.0
    for v in values.ravel():
        top = max(top, abs(v))
    return top


@njit_cached
def _maximise_compiled(free, xi, first, gtol, gain_tol):
    """emvsbayes.hmm.em._maximise on the stationary objective: damped Newton with the exact Hessian (shifted
    to negative definite where it is not), until the gradient is within gtol and the predicted gain within
    gain_tol. Returns (x, ok); ok False where even the shifted Hessian could not be factorised."""
    n = free.shape[0]
    x = free.copy()
    value, gradient, hessian = _derivatives_or_nothing(x, xi, first)
    for _ in range(NEWTON_STEPS):
        if not math.isfinite(value):
            break
        negative = -hessian
        factor, ok = _cholesky_lower(negative)
        if not ok:
            shift = max(0.0, np.max(np.linalg.eigvalsh(hessian))) + 1e-8 * max(1.0, _largest_abs(hessian))
            for i in range(n):
                negative[i, i] += shift
            factor, ok = _cholesky_lower(negative)
            if not ok:
                return x, False
        direction = _newton_direction(factor, gradient)
        gain = 0.0
        for i in range(n):
            gain += gradient[i] * direction[i]
        if _largest_abs(gradient) <= gtol and 0.5 * gain <= gain_tol:
            break
        accepted = False
        trial = x
        trial_value, trial_gradient, trial_hessian = value, gradient, hessian
        for _ in range(HALVINGS):
            trial = x + direction
            trial_value, trial_gradient, trial_hessian = _derivatives_or_nothing(trial, xi, first)
            # Next to the maximum the value changes by less than its rounding: there the gradient decides.
            if trial_value >= value or (trial_value >= value - 1e-13 * abs(value)
                                        and _largest_abs(trial_gradient) < _largest_abs(gradient)):
                accepted = True
                break
            direction = direction / 2
        if not accepted:
            break
        x, value, gradient, hessian = trial, trial_value, trial_gradient, trial_hessian
    return x, True


@njit_cached
def _stationary_update(xi, first, current):
    """(the transition update, ok) at one E-step's statistics: the best of the current matrix, the counts update
    and Newton's maximiser started from the better of those two (see emvsbayes.hmm.em's module docstring)."""
    k = xi.shape[0]
    counts_update = np.empty((k, k))
    for i in range(k):
        total = 0.0
        for j in range(k):
            total += xi[i, j]
        for j in range(k):
            counts_update[i, j] = xi[i, j] / total if total > 0 else current[i, j]
    current_score = _score(current, xi, first)
    counts_score = _score(counts_update, xi, first)
    start = counts_update if counts_score > current_score else current
    free0 = np.empty(k * (k - 1))
    grand_total = 0.0
    for i in range(k):
        last = math.log(max(start[i, k - 1], 1e-12))
        for j in range(k - 1):
            free0[i * (k - 1) + j] = math.log(max(start[i, j], 1e-12)) - last
        for j in range(k):
            grand_total += xi[i, j]
    # gtol: the gradient scales with the transition counts, 1e-11 of them is the maximum to rounding; gain_tol:
    # well below Baum-Welch's tolerances on the log-likelihood (the reference's reasons)
    found, ok = _maximise_compiled(free0, xi, first, 1e-11 * (1.0 + grand_total), 1e-14 * (1.0 + grand_total))
    if not ok:
        return current, False
    newton = _transition_from_free(found, k)
    newton_score = _score(newton, xi, first)
    best, best_score = current, current_score
    if counts_score > best_score:
        best, best_score = counts_update, counts_score
    if newton_score > best_score:
        best = newton
    return best.copy(), True


@njit_cached
def _stationary_updates(xi, first, current):
    """:func:`_stationary_update` for each row of a batch: (transitions (B, K, K), ok (B,))."""
    rows, k = xi.shape[0], xi.shape[1]
    out = np.empty((rows, k, k))
    ok = np.zeros(rows, dtype=np.bool_)
    for r in range(rows):
        out[r], ok[r] = _stationary_update(xi[r], first[r], current[r])
    return out, ok



def stationary_transition(xi: np.ndarray, first: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The stationary M-step's transition update (one E-step's ``xi_sum`` and ``first``, the current matrix);
    numpy's LinAlgError where Newton's Hessian could not be factorised even shifted."""
    out, ok = _stationary_update(*(np.ascontiguousarray(a, dtype=np.float64) for a in (xi, first, current)))
    if not ok:
        raise np.linalg.LinAlgError("the transition update's Hessian is not negative definite even when shifted")
    return out


def stationary_transitions(xi: np.ndarray, first: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stationary_transition` for a batch (B, K, K), (B, K), (B, K, K): (updates, ok (B,)); a row that
    failed keeps its current matrix."""
    return _stationary_updates(*(np.ascontiguousarray(a, dtype=np.float64) for a in (xi, first, current)))
