"""Inference in a hidden Markov model given its parameters: the numpy core.

Inputs are always in log space: ``log_initial`` (K,), ``log_transition`` (K, K) and ``log_emission`` (T, K)
(log p(y_t | z_t = k)). From them:

- :func:`forward_backward`: the log-likelihood log p(y_{0:T-1}), the smoothed state probabilities
  P(z_t = k | y) (T, K) and the expected transition counts sum_t P(z_{t-1} = i, z_t = j | y) (K, K): the
  E-step of Baum-Welch, which EM runs compiled (:mod:`emvsbayes.hmm.compiled_estep`; this is its reference
  and its fallback);
- :func:`forward_filter`: the filtered probabilities P(z_t = k | y_{0:t}) and the one-step-ahead predictive
  log densities log p(y_t | y_{0:t-1}) (their sum is the log-likelihood);
- :func:`viterbi`: the most probable state path and its log joint probability log p(y, z).

How, and why this way
---------------------
The recursions run in scaled probability space (Rabiner 1989; Zucchini & MacDonald 2016, 3.2): the
emission rows are shifted by their maximum before exponentiating (so no time point underflows as a whole),
and each forward (backward) vector is normalised at every step, its normaliser's log kept. That is exact up
to rounding, as the log-space recursion is, and needs no ``logsumexp`` per step. Where the scaled recursion
would underflow (a normaliser of 0 while the log-space value is finite: a forbidden transition next to an
emission more than ~700 nats below its alternatives) it falls back to :func:`forward_log`, the plain
log-space recursion.

A Python loop over T costs a few microseconds per step, seconds at T = 1e6. So the series is cut into
``n_blocks`` blocks of ``block`` steps and the loop runs over the steps within a block, vectorised across
the blocks: (1) the product of each block's step matrices ``A diag(B_t)`` (normalised as it grows), in
``block`` steps; (2) the forward (backward) vector at each block's start (end) from those products, in
``n_blocks`` steps; (3) every forward (backward) vector inside the blocks from those, in ``block`` steps.
With ``block`` about sqrt(T) that is ~3 sqrt(T) numpy calls instead of ~5 T. The products of step (1)
serve both directions (``alpha_end = alpha_start P`` and ``beta_start = P beta_end``). Viterbi uses the same
blocking in the max-plus algebra, with the back-pointers composed block by block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp


@dataclass(frozen=True, slots=True)
class Smoothed:
    """Outcome of :func:`forward_backward`.

    ``loglik`` log p(y); ``gamma`` (T, K) P(z_t = k | y); ``xi_sum`` (K, K) expected number of transitions
    i -> j, sum over t >= 1 of P(z_{t-1} = i, z_t = j | y).
    """

    loglik: float
    gamma: np.ndarray
    xi_sum: np.ndarray


def block_length(n_steps: int) -> int:
    """Steps per block for a series of ``n_steps`` transitions: about sqrt(n), balancing the in-block loops
    against the loop over blocks (at T = 1e6, K = 4, blocks of 500 to 4000 steps timed within 30 % of each
    other, 1000 the fastest)."""
    return max(1, min(n_steps, int(math.ceil(math.sqrt(max(n_steps, 1))))))


def _row_sums(a: np.ndarray) -> np.ndarray:
    """Sums over the last (short, K) axis of a long (T, K) array as a matrix-vector product: numpy's own
    reduction over a short inner axis is several times slower than BLAS here."""
    return a @ np.ones(a.shape[-1])


def _times(a: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``a @ matrix`` for a tall (N, K) ``a`` and a small (K, K) matrix, computed as ``(matrix^T a^T)^T``:
    the same numbers (each entry is the same K-term dot product), but numpy hands this orientation to BLAS
    efficiently, while ``a @ matrix`` with N = 1e6, K = 4 ran 28 times slower."""
    return (matrix.T @ a.T).T


def _row_max(a: np.ndarray) -> np.ndarray:
    """Maxima over the last (short) axis of a (T, K) array, one column at a time (as :func:`_row_sums`)."""
    out = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        np.maximum(out, a[:, j], out=out)
    return out


def _scaled_emission(log_emission: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(log_emission - shift)`` and ``shift`` (T,), the row maxima (-inf rows left as 0 rows)."""
    shift = _row_max(log_emission)
    finite = np.isfinite(shift)
    safe = np.where(finite, shift, 0.0)
    with np.errstate(invalid="ignore"):
        scaled = np.exp(log_emission - safe[:, None])
    scaled[~finite] = 0.0
    return scaled, shift


def _blocks(emission: np.ndarray, block: int) -> np.ndarray:
    """The step emissions B_1 .. B_{T-1} as (block, K, n_blocks): entry [j, k, b] is state k at time
    b * block + j + 1.

    Step-major and with the blocks last, so each step of the in-block loops is one (K, K) by (K, n_blocks)
    matrix product on a contiguous slab (the orientation in which numpy's BLAS call is fast, see
    :func:`_times`). Padded at the end with rows of ones: a step with emission 1 in every state changes
    neither the forward normalisers (rows of A sum to 1) nor the backward vectors (A 1 = 1).
    """
    steps = emission[1:]
    k = emission.shape[1]
    n_blocks = -(-steps.shape[0] // block)
    padded = np.ones((n_blocks * block, k))
    padded[: steps.shape[0]] = steps
    return np.ascontiguousarray(padded.reshape(n_blocks, block, k).transpose(1, 2, 0))


def _block_products(transition: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """P_b = prod over the block's steps of ``A diag(B_t)``, each scaled to entries summing to 1
    (n_blocks, K, K)."""
    block, k, n_blocks = steps.shape
    # Kept transposed, [j, b, i] = P[b, i, j], as one (K, n_blocks * K) matrix: one BLAS product per step.
    product = np.broadcast_to(np.eye(k)[:, None, :], (k, n_blocks, k)).copy()
    transition_t = np.ascontiguousarray(transition.T)
    ones = np.ones(k)
    for j in range(block):
        product = (transition_t @ product.reshape(k, n_blocks * k)).reshape(k, n_blocks, k)
        product *= steps[j][:, :, None]
        # Each block's total by two matrix-vector products (a reduction over the short axes is slower).
        total = (ones @ product.reshape(k, n_blocks * k)).reshape(n_blocks, k) @ ones
        product /= total[None, :, None]
    return product.transpose(1, 2, 0)


def _forward_scaled(initial, transition, emission, block, steps=None):
    """Normalised forward vectors (T, K) and log normalisers (T,), for probability-space inputs; ``steps``
    the :func:`_blocks` of ``emission`` when already made."""
    t_len, k = emission.shape
    alpha = np.empty((t_len, k))
    log_norm = np.empty(t_len)
    first = initial * emission[0]
    norm = first.sum()
    alpha[0], log_norm[0] = first / norm, math.log(norm) if norm > 0 else -math.inf
    if t_len == 1:
        return alpha, log_norm, None
    steps = _blocks(emission, block) if steps is None else steps
    n_blocks = steps.shape[2]
    products = _block_products(transition, steps) if n_blocks > 1 else None
    starts = np.empty((n_blocks, k))
    starts[0] = alpha[0]
    for b in range(1, n_blocks):
        v = starts[b - 1] @ products[b - 1]
        starts[b] = v / v.sum()
    out = np.empty((block, k, n_blocks))
    out_norm = np.empty((block, n_blocks))
    ones = np.ones(k)
    transition_t = np.ascontiguousarray(transition.T)
    current = np.ascontiguousarray(starts.T)  # (K, n_blocks)
    for j in range(block):
        v = (transition_t @ current) * steps[j]
        norm = ones @ v
        current = v / norm
        out[j], out_norm[j] = current, norm
    alpha[1:] = out.transpose(2, 0, 1).reshape(-1, k)[: t_len - 1]
    with np.errstate(divide="ignore"):
        log_norm[1:] = np.log(out_norm.T.reshape(-1)[: t_len - 1])
    return alpha, log_norm, products


def _backward_scaled(transition, emission, block, products, steps=None):
    """Backward vectors (T, K), each normalised to sum 1 (their scale cancels in every use)."""
    t_len, k = emission.shape
    beta = np.empty((t_len, k))
    if t_len == 1:
        beta[0] = 1.0 / k
        return beta
    steps = _blocks(emission, block) if steps is None else steps
    n_blocks = steps.shape[2]
    ends = np.empty((n_blocks, k))  # beta at the end of each block
    ends[-1] = 1.0 / k
    for b in range(n_blocks - 1, 0, -1):
        v = products[b] @ ends[b]
        ends[b - 1] = v / v.sum()
    out = np.empty((block, k, n_blocks))
    ones = np.ones(k)
    current = np.ascontiguousarray(ends.T)  # (K, n_blocks)
    for j in range(block - 1, -1, -1):
        v = transition @ (steps[j] * current)
        current = v / (ones @ v)
        out[j] = current
    # out[j, :, b] is beta at time b * block + j; the last block's end (time n_blocks * block) closes the tiling.
    beta[:] = np.concatenate([out.transpose(2, 0, 1).reshape(-1, k), ends[-1:]])[:t_len]
    return beta


def _inputs(log_initial, log_transition, log_emission):
    log_emission = np.asarray(log_emission, dtype=float)
    if log_emission.ndim != 2:
        raise ValueError(f"log_emission must be (T, K), got shape {log_emission.shape}")
    initial = np.exp(np.asarray(log_initial, dtype=float))
    transition = np.exp(np.asarray(log_transition, dtype=float))
    emission, shift = _scaled_emission(log_emission)
    return initial, transition, emission, shift


def _forward_ok(log_norm: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(log_norm)))


def forward_filter(log_initial, log_transition, log_emission, *, block: int | None = None):
    """Filtered state probabilities and one-step-ahead predictive log densities.

    Returns
    -------
    loglik : float
        log p(y_0, ..., y_{T-1}); -inf when the data are impossible under the parameters.
    filtered : ndarray (T, K)
        P(z_t = k | y_0..y_t).
    log_predictive : ndarray (T,)
        log p(y_t | y_0..y_{t-1}) (t = 0: log p(y_0)); sums to ``loglik``.
    """
    initial, transition, emission, shift = _inputs(log_initial, log_transition, log_emission)
    block = block or block_length(emission.shape[0] - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha, log_norm, _ = _forward_scaled(initial, transition, emission, block)
    if not _forward_ok(log_norm + shift):
        log_alpha = forward_log(log_initial, log_transition, log_emission)
        return _from_log_alpha(log_alpha)
    log_predictive = log_norm + shift
    return float(log_predictive.sum()), alpha, log_predictive


def _from_log_alpha(log_alpha):
    """(loglik, filtered, log_predictive) from unnormalised log forward vectors."""
    log_marginal = logsumexp(log_alpha, axis=1)  # log p(y_0..y_t)
    with np.errstate(invalid="ignore"):
        filtered = np.exp(log_alpha - log_marginal[:, None])
    log_predictive = np.diff(log_marginal, prepend=0.0)
    return float(log_marginal[-1]), filtered, log_predictive


def forward_log(log_initial, log_transition, log_emission) -> np.ndarray:
    """The plain log-space forward recursion: log p(y_0..y_t, z_t = k), (T, K). The reference the scaled
    recursion is tested against, and its fallback where scaling underflows."""
    log_emission = np.asarray(log_emission, dtype=float)
    log_transition = np.asarray(log_transition, dtype=float)
    out = np.empty_like(log_emission)
    out[0] = np.asarray(log_initial, dtype=float) + log_emission[0]
    for t in range(1, log_emission.shape[0]):
        out[t] = logsumexp(out[t - 1][:, None] + log_transition, axis=0) + log_emission[t]
    return out


def backward_log(log_transition, log_emission) -> np.ndarray:
    """The plain log-space backward recursion: log p(y_{t+1}..y_{T-1} | z_t = k), (T, K)."""
    log_emission = np.asarray(log_emission, dtype=float)
    log_transition = np.asarray(log_transition, dtype=float)
    out = np.zeros_like(log_emission)
    for t in range(log_emission.shape[0] - 2, -1, -1):
        out[t] = logsumexp(log_transition + (log_emission[t + 1] + out[t + 1])[None, :], axis=1)
    return out


def log_likelihood(log_initial, log_transition, log_emission) -> float:
    """log p(y) by the forward algorithm."""
    return forward_filter(log_initial, log_transition, log_emission)[0]


def forward_backward(log_initial, log_transition, log_emission, *, block: int | None = None) -> Smoothed:
    """The E-step: log-likelihood, smoothed state probabilities and expected transition counts."""
    initial, transition, emission, shift = _inputs(log_initial, log_transition, log_emission)
    t_len, k = emission.shape
    block = block or block_length(t_len - 1)
    steps = _blocks(emission, block) if t_len > 1 else None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha, log_norm, products = _forward_scaled(initial, transition, emission, block, steps)
        loglik = float(np.sum(log_norm + shift))
        if not math.isfinite(loglik):
            return _forward_backward_log(log_initial, log_transition, log_emission)
        beta = _backward_scaled(transition, emission, block, products, steps)
        gamma = alpha * beta
        gamma /= _row_sums(gamma)[:, None]
        if t_len > 1:
            weighted = emission[1:] * beta[1:]  # B_t beta_t, (T-1, K)
            norm = _row_sums(_times(alpha[:-1], transition) * weighted)
            xi_sum = transition * (alpha[:-1].T @ (weighted / norm[:, None]))
        else:
            xi_sum = np.zeros((k, k))
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(xi_sum))):
        return _forward_backward_log(log_initial, log_transition, log_emission)
    return Smoothed(loglik, gamma, xi_sum)


def _forward_backward_log(log_initial, log_transition, log_emission) -> Smoothed:
    """:func:`forward_backward` by the log-space recursions (slow; the underflow fallback)."""
    log_alpha = forward_log(log_initial, log_transition, log_emission)
    log_beta = backward_log(log_transition, log_emission)
    loglik = float(logsumexp(log_alpha[-1]))
    k = log_alpha.shape[1]
    if not math.isfinite(loglik):
        return Smoothed(loglik, np.full(log_alpha.shape, np.nan), np.full((k, k), np.nan))
    log_gamma = log_alpha + log_beta - loglik
    log_emission = np.asarray(log_emission, dtype=float)
    log_xi = (log_alpha[:-1, :, None] + np.asarray(log_transition)[None]
              + (log_emission[1:] + log_beta[1:])[:, None, :] - loglik)
    xi_sum = np.exp(logsumexp(log_xi, axis=0)) if log_xi.shape[0] else np.zeros((k, k))
    return Smoothed(loglik, np.exp(log_gamma), xi_sum)


def smoothed_probabilities(log_initial, log_transition, log_emission) -> np.ndarray:
    """P(z_t = k | y), (T, K)."""
    return forward_backward(log_initial, log_transition, log_emission).gamma


def viterbi(log_initial, log_transition, log_emission, *, block: int | None = None) -> tuple[np.ndarray, float]:
    """The most probable state path (T,) int and its log joint probability max_z log p(y, z).

    Ties go to the lowest state index. Blocked as the forward recursion is: the max-plus products of each
    block's steps give the best score at each block's start; inside the blocks the scores and back-pointers
    run vectorised across blocks; the back-pointers are composed within each block (a map from the state
    at a block's end to the state at its start), so the trace-back also takes ~3 sqrt(T) steps.
    """
    log_emission = np.asarray(log_emission, dtype=float)
    log_transition = np.asarray(log_transition, dtype=float)
    t_len, k = log_emission.shape
    first = np.asarray(log_initial, dtype=float) + log_emission[0]
    if t_len == 1:
        state = int(np.argmax(first))
        return np.array([state]), float(first[state])
    block = block or block_length(t_len - 1)
    steps = log_emission[1:]
    n_blocks = -(-steps.shape[0] // block)
    # Padding steps: emission log 1 and a transition that stays put (its back-pointer is the identity),
    # so the best path through the padding is the best path to T - 1 followed by standing still.
    padded = np.zeros((n_blocks * block, k))
    padded[: steps.shape[0]] = steps
    # Step-major (block, n_blocks, K), as :func:`_blocks`: each step reads one contiguous slab.
    padded = np.ascontiguousarray(padded.reshape(n_blocks, block, k).transpose(1, 0, 2))
    real = (np.arange(n_blocks * block) < steps.shape[0]).reshape(n_blocks, block).T
    stay = np.where(np.eye(k, dtype=bool), 0.0, -np.inf)
    starts = np.empty((n_blocks, k))
    starts[0] = first
    if n_blocks > 1:
        # Max-plus product of every block but the last: P[b, i, j] = best log score from i at the block's
        # start to j at its end.
        product = np.where(np.eye(k, dtype=bool), 0.0, -np.inf)[None].repeat(n_blocks - 1, axis=0)
        for j in range(block):
            product = np.max(product[:, :, :, None] + log_transition[None, None], axis=2) + padded[j, :-1, None, :]
        for b in range(1, n_blocks):
            starts[b] = np.max(starts[b - 1][:, None] + product[b - 1], axis=0)
    pointers = np.empty((block, n_blocks, k), dtype=np.intp)
    current = starts
    for j in range(block):
        step_transition = log_transition[None] if real[j].all() else np.where(real[j, :, None, None], log_transition[None], stay[None])
        scores = current[:, :, None] + step_transition  # (n_blocks, from, to)
        pointers[j] = np.argmax(scores, axis=1)
        current = np.take_along_axis(scores, pointers[j][:, None, :], axis=1)[:, 0] + padded[j]
    end_state = int(np.argmax(current[-1]))
    best = float(current[-1, end_state])
    # Back-pointer maps composed per block: start_of[b, s] = state at the block's start given s at its end.
    start_of = np.broadcast_to(np.arange(k), (n_blocks, k)).copy()
    for j in range(block - 1, -1, -1):
        start_of = np.take_along_axis(pointers[j], start_of, axis=1)
    ends = np.empty(n_blocks, dtype=np.intp)
    ends[-1] = end_state
    for b in range(n_blocks - 1, 0, -1):
        ends[b - 1] = start_of[b, ends[b]]
    path = np.empty((block + 1, n_blocks), dtype=np.intp)
    path[block] = ends
    for j in range(block - 1, -1, -1):
        path[j] = np.take_along_axis(pointers[j], path[j + 1, :, None], axis=1)[:, 0]
    # path[j, b] is the state at time b * block + j; rows 0..block-1 tile times 0.., the last block's end closes.
    states = np.concatenate([path[:block].T.reshape(-1), path[block, -1:]])[:t_len]
    return states.astype(np.int64), best
