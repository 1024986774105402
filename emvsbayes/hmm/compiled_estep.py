"""The Baum-Welch E-step compiled with numba: forward-backward fused with the sufficient statistics.

:func:`estep_statistics` gives, in one forward and one backward pass over the series, the log-likelihood,
the expected transition counts ``xi_sum`` (K, K), and per state the expected count, the first smoothed
probability ``gamma_0`` and the weighted sums of the observations about a centre,
``sum_t gamma_tk (y_t - c_k)`` and ``sum_t gamma_tk (y_t - c_k)^2``: everything the Poisson and Gaussian
M-steps read. The smoothed probabilities ``gamma`` (T, K) are written out only when asked for: Baum-Welch
itself never needs them. The numpy recursions of :mod:`emvsbayes.hmm.inference` are the reference it is
tested against (tests/test_hmm_compiled_estep.py) and its fallback.

How, and why this way
---------------------
- The emissions are computed once per E-step in log space, then shifted per time point by their maximum and
  exponentiated by numpy on a (K, T) array (numpy's SIMD ``exp`` took 6 ms for 4e6 values where numba's
  scalar one took 58 ms). The shift keeps the scaling exact: the largest scaled emission of every time point
  is 1, and the shifts are added back to the log-likelihood.
- Forward: the scaled recursion (Rabiner 1989) without a ``logsumexp`` per step. alpha_t is kept up to a
  factor: rescaled to sum 1 (and the factor's log kept) only when its sum falls below
  :data:`RESCALE_BELOW`, so no division or log sits in the step-to-step dependency chain (the forward pass
  takes 7 ns a step at K = 4). log p(y) = the sum of the shifts + the logs of the factors + log sum alpha_{T-1}.
- Backward: v = A (b_t * beta_t) gives, with n_t = sum_i alpha_{t-1,i} v_i, both
  gamma_{t-1,i} = alpha_{t-1,i} v_i / n_t (normalised whatever the scales of alpha and beta) and the expected
  transitions xi_t(i, j) = alpha_{t-1,i} A_ij b_tj beta_tj / n_t (A_ij factored out of the sum over t).
  beta_{t-1} = v, rescaled as alpha is.
- Sums over the series are accumulated in blocks of :data:`FLUSH_EVERY` steps and then added to the totals,
  so their rounding grows with the block length, not with T.
- A normaliser below :data:`SMALLEST_NORMALISER` (a forbidden transition beside an emission hundreds of nats
  below its alternatives: the scaled quantities underflow) makes the kernel report failure; the caller then
  falls back to :func:`emvsbayes.hmm.inference.forward_backward`, which itself falls back to log space.

numba is imported here only: this module is imported when an HMM is fitted, never by the other families.
``cache=True`` keeps the machine code (one per K, see :func:`kernel`) in ``__pycache__`` beside this file (or
numba's user-wide cache); a process that finds neither writable compiles it in the process instead (a few
seconds per K; tests/test_hmm_compiled_estep.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

#: Time points per chunk of the emissions' numpy passes (4 x 8192 doubles, 256 kB: in L2 cache).
CHUNK = 8192
#: Steps per block of the series' sums (see the module docstring).
FLUSH_EVERY = 1024
#: alpha_t (beta_t) is rescaled to sum 1 only when its sum falls below this.
RESCALE_BELOW = 1e-50
#: A forward or backward normaliser below this is treated as underflow: the kernel gives up (the caller
#: falls back to exact recursions). Far above the smallest normal double, so the largest entry of every
#: normalised vector keeps full precision.
SMALLEST_NORMALISER = 1e-290


@dataclass(frozen=True, slots=True)
class EStepStatistics:
    """Outcome of :func:`estep_statistics` (K states).

    ``loglik`` log p(y); ``xi_sum`` (K, K) expected transitions i -> j; ``counts`` (K,) sum_t gamma_tk;
    ``first`` (K,) gamma_0k; ``sum_dev`` and ``sum_sq_dev`` (K,) sum_t gamma_tk (y_t - centre_k) and its
    square; ``gamma`` (T, K) when asked for, else None.
    """

    loglik: float
    xi_sum: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    sum_dev: np.ndarray
    sum_sq_dev: np.ndarray
    gamma: np.ndarray | None


def njit_cached(function):
    """``numba.njit(cache=True)``, or without the cache where numba finds no writable place for it (it
    raises then, at decoration: a read-only install under a read-only home)."""
    try:
        return numba.njit(cache=True)(function)
    except RuntimeError as error:
        if "cannot cache" not in str(error):
            raise
        return numba.njit(cache=False)(function)


def _fused_pass(k, initial, transition, scaled, shift, y, centre, alpha, gamma_out):
    """The fused pass (see the module docstring) for K = ``k`` states. ``scaled`` (K, T) the shifted,
    exponentiated emissions, ``shift`` (T,) the shifts; ``alpha`` (T, K) scratch for the forward vectors; ``gamma_out`` (T, K) to
    fill, or (0, K) for none.

    Returns (ok, loglik, xi_sum, counts, first, sum_dev, sum_sq_dev); ok False on underflow.
    """
    t_len = scaled.shape[1]
    store = gamma_out.shape[0] == t_len
    xi_sum = np.zeros((k, k))
    counts = np.zeros(k)
    first = np.zeros(k)
    sum_dev = np.zeros(k)
    sum_sq_dev = np.zeros(k)
    failed = (False, -math.inf, xi_sum, counts, first, sum_dev, sum_sq_dev)

    # Forward. alpha_t is kept up to a factor: rescaled (and the factor's log kept) only when its sum falls
    # below RESCALE_BELOW, so no division sits in the step-to-step dependency chain.
    norm = 0.0
    for j in range(k):
        value = initial[j] * scaled[j, 0]
        alpha[0, j] = value
        norm += value
    if not norm >= SMALLEST_NORMALISER:
        return failed
    inverse = 1.0 / norm
    for j in range(k):
        alpha[0, j] *= inverse
    loglik = 0.0
    block_sum = math.log(norm) + shift[0]
    for block_start in range(1, t_len, FLUSH_EVERY):
        for t in range(block_start, min(block_start + FLUSH_EVERY, t_len)):
            norm = 0.0
            for j in range(k):
                predicted = 0.0
                for i in range(k):
                    predicted += alpha[t - 1, i] * transition[i, j]
                value = predicted * scaled[j, t]
                alpha[t, j] = value
                norm += value
            block_sum += shift[t]
            if not norm >= RESCALE_BELOW:  # rare; also catches NaN
                if not norm >= SMALLEST_NORMALISER:
                    return failed
                inverse = 1.0 / norm
                for j in range(k):
                    alpha[t, j] *= inverse
                block_sum += math.log(norm)
        loglik += block_sum
        block_sum = 0.0
    norm = 0.0
    for j in range(k):
        norm += alpha[t_len - 1, j]
    loglik += block_sum + math.log(norm)

    # Backward, with the statistics of each time point as its gamma becomes known. beta_t too is kept up to
    # a factor (gamma and xi are normalised per time point by n_t).
    beta = np.ones(k)
    weighted = np.empty(k)
    v = np.empty(k)
    block_xi = np.zeros((k, k))
    block_counts = np.zeros(k)
    block_dev = np.zeros(k)
    block_sq_dev = np.zeros(k)
    last = t_len - 1
    inverse = 1.0 / norm  # gamma_{T-1} = alpha_{T-1} normalised
    for i in range(k):
        g = alpha[last, i] * inverse
        d = y[last] - centre[i]
        block_counts[i] += g
        block_dev[i] += g * d
        block_sq_dev[i] += g * d * d
        if store:
            gamma_out[last, i] = g
        if last == 0:
            first[i] = g
    for block_end in range(last, 0, -FLUSH_EVERY):
        for t in range(block_end, max(block_end - FLUSH_EVERY, 0), -1):
            for j in range(k):
                weighted[j] = scaled[j, t] * beta[j]
            norm = 0.0
            total = 0.0
            for i in range(k):
                s = 0.0
                for j in range(k):
                    s += transition[i, j] * weighted[j]
                v[i] = s
                total += s
                norm += alpha[t - 1, i] * s
            if not norm >= SMALLEST_NORMALISER:
                return failed
            inverse = 1.0 / norm
            y_prev = y[t - 1]
            for i in range(k):
                a = alpha[t - 1, i] * inverse
                g = a * v[i]
                d = y_prev - centre[i]
                block_counts[i] += g
                block_dev[i] += g * d
                block_sq_dev[i] += g * d * d
                if store:
                    gamma_out[t - 1, i] = g
                if t == 1:
                    first[i] = g
                for j in range(k):
                    block_xi[i, j] += a * weighted[j]
            if total >= RESCALE_BELOW:
                for i in range(k):
                    beta[i] = v[i]
            else:  # total >= norm >= SMALLEST_NORMALISER, as alpha_{t-1} sums to at most 1
                inverse = 1.0 / total
                for i in range(k):
                    beta[i] = v[i] * inverse
        for i in range(k):
            counts[i] += block_counts[i]
            sum_dev[i] += block_dev[i]
            sum_sq_dev[i] += block_sq_dev[i]
            block_counts[i] = 0.0
            block_dev[i] = 0.0
            block_sq_dev[i] = 0.0
            for j in range(k):
                xi_sum[i, j] += block_xi[i, j]
                block_xi[i, j] = 0.0
    for i in range(k):
        counts[i] += block_counts[i]
        sum_dev[i] += block_dev[i]
        sum_sq_dev[i] += block_sq_dev[i]
        for j in range(k):
            xi_sum[i, j] *= transition[i, j]
    return True, loglik, xi_sum, counts, first, sum_dev, sum_sq_dev


# Inlined into its callers (numba's IR inlining, before typing), so the closure of kernel(k) passes K as a constant
# and its loops over states are unrolled, as they were when the pass was the closure's own body.
_fused_pass_inlined = numba.njit(inline="always")(_fused_pass)


@functools.cache
def kernel(n_states: int):
    """The compiled fused pass for K = ``n_states`` states.

    K is a constant of the closure, so numba compiles (and caches, keyed by it) one machine code per K with
    the loops over states unrolled: at T = 1e6, K = 4 that took the kernel from 42 to 28 ms of CPU.
    (``numba.literally`` would do the same from one function, but re-dispatches on every call.)
    """
    k = n_states

    def forward_backward_moments(initial, transition, scaled, shift, y, centre, alpha, gamma_out):
        return _fused_pass_inlined(k, initial, transition, scaled, shift, y, centre, alpha, gamma_out)

    return njit_cached(forward_backward_moments)


def _fused_pass_batch(initial, transition, scaled, shift, y, centre):
    """:func:`_fused_pass` over each series of a batch of equal-length series (the batched bootstrap's
    simulated series): ``initial`` (B, K), ``transition`` (B, K, K), ``scaled`` (B, K, T), ``shift`` (B, T),
    ``y`` (B, T), ``centre`` (B, K); returns ok (B,), loglik (B,), xi_sum (B, K, K), counts, first, sum_dev,
    sum_sq_dev (B, K). Each series' numbers are those of its own :func:`kernel` call: the same arithmetic in
    the same order (K a constant there, a variable here: unrolling reorders nothing)."""
    rows, k = initial.shape
    t_len = shift.shape[1]
    ok = np.zeros(rows, dtype=np.bool_)
    loglik = np.full(rows, -math.inf)
    xi_sum = np.zeros((rows, k, k))
    counts = np.zeros((rows, k))
    first = np.zeros((rows, k))
    sum_dev = np.zeros((rows, k))
    sum_sq_dev = np.zeros((rows, k))
    alpha = np.empty((t_len, k))
    no_gamma = np.empty((0, k))
    for r in range(rows):
        done, value, xi, c, f, dev, sq_dev = _fused_pass_inlined(k, initial[r], transition[r], scaled[r], shift[r],
                                                                 y[r], centre[r], alpha, no_gamma)
        ok[r] = done
        loglik[r] = value
        xi_sum[r] = xi
        counts[r] = c
        first[r] = f
        sum_dev[r] = dev
        sum_sq_dev[r] = sq_dev
    return ok, loglik, xi_sum, counts, first, sum_dev, sum_sq_dev


batch_statistics = njit_cached(_fused_pass_batch)


def scaled_emissions(log_emission_of, t_len: int, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """``exp(log_emission - shift)`` as a (K, T) C-contiguous array and ``shift`` (T,), each time point's
    largest log emission, where ``log_emission_of(start, stop)`` gives the (stop - start, K) log emissions of
    those time points.

    Made :data:`CHUNK` time points at a time, so the several numpy passes over each chunk run in cache: at
    T = 1e6, K = 4 that halved their time against whole-series arrays (44 to 22 ms of CPU).
    """
    scaled = np.empty((n_states, t_len))
    shift = np.empty(t_len)
    for start in range(0, t_len, CHUNK):
        stop = min(start + CHUNK, t_len)
        by_state = np.asarray(log_emission_of(start, stop), dtype=float).T
        chunk_shift = shift[start:stop]
        np.max(by_state, axis=0, out=chunk_shift)
        out = scaled[:, start:stop]
        with np.errstate(invalid="ignore"):  # -inf - -inf: a time point impossible in every state (checked after)
            np.subtract(by_state, chunk_shift, out=out)
        np.exp(out, out=out)
    return scaled, shift


def estep_statistics(initial, transition, log_emission_of, y, centre, *, keep_gamma: bool = False) -> EStepStatistics:
    """The E-step's statistics at one set of parameters (see the module docstring).

    Parameters
    ----------
    initial : (K,) P(z_0 = k); transition : (K, K) row-stochastic; log_emission_of : ``(start, stop) ->
    (stop - start, K)`` log p(y_t | z_t = k) of those time points; y : (T,) the series; centre : (K,) the
    centre c_k of the weighted sums (the current means: the variance about the new mean then follows without
    cancellation, as ``sum_dev`` is small); keep_gamma : also return the smoothed probabilities (T, K).
    """
    # Writable C-contiguous copies of the small arrays (and of y unless it is one): numba compiles once per
    # array type, and read-only arrays (the frozen parameter records') are another type.
    initial, transition, centre = (np.array(a, dtype=float, order="C") for a in (initial, transition, centre))
    y = np.asarray(y, dtype=float)
    if not (y.flags.c_contiguous and y.flags.writeable):
        y = y.copy()
    t_len, k = y.shape[0], initial.shape[0]
    scaled, shift = scaled_emissions(log_emission_of, t_len, k)
    if np.all(np.isfinite(shift)):
        gamma = np.empty((t_len if keep_gamma else 0, k))
        # The scratch allocated by numpy, not inside the kernel: numpy asks for huge pages for large arrays,
        # and the 4 kB page faults of a 32 MB array made in the kernel cost ~10 ms per E-step at T = 1e6.
        alpha = np.empty((t_len, k))
        ok, loglik, xi_sum, counts, first, sum_dev, sum_sq_dev = kernel(k)(initial, transition, scaled, shift, y,
                                                                           centre, alpha, gamma)
        if ok and math.isfinite(loglik):
            return EStepStatistics(float(loglik), xi_sum, counts, first, sum_dev, sum_sq_dev,
                                   gamma if keep_gamma else None)
    return _reference_statistics(initial, transition, log_emission_of(0, t_len), y, centre, keep_gamma)


def _reference_statistics(initial, transition, log_emission, y, centre, keep_gamma) -> EStepStatistics:
    """The same statistics from the numpy recursions (which fall back to log space where scaling underflows)."""
    from emvsbayes.hmm.inference import forward_backward

    with np.errstate(divide="ignore"):
        smoothed = forward_backward(np.log(initial), np.log(transition), log_emission)
    gamma = smoothed.gamma
    dev = y[:, None] - centre[None, :]
    return EStepStatistics(smoothed.loglik, smoothed.xi_sum, np.ones(gamma.shape[0]) @ gamma, gamma[0].copy(),
                           np.einsum("tk,tk->k", gamma, dev), np.einsum("tk,tk->k", gamma, dev * dev),
                           gamma if keep_gamma else None)
