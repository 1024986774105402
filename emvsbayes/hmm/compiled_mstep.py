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


def _derivatives(free, xi, first, stationary, want_hessian):
    """(value, gradient (n,), Hessian (n, n), ok) over the log-ratios ``free`` (n = K (K - 1)); ``ok`` False
    where the objective is not finite (the stationary system singular, a stationary probability <= 0)."""
    k = xi.shape[0]
    n = k * (k - 1)
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
