"""Label-free clustering summaries: who goes with whom, without naming the clusters.

A partition of the N observations needs no labels, so these summaries need no relabelling and compare
engines that label differently (or not at all):

- the posterior similarity (co-clustering) matrix P[i, j] = P(c_i = c_j | data), from membership
  probabilities per draw (S, N, K) (Rao-Blackwellised: sum_k p_ik p_jk per draw, allocations being
  independent given a draw's parameters) or from label draws (S, N); the same from bootstrap fits'
  membership probabilities is the bootstrap's "similarity";
- a point estimate of the partition minimising the posterior expected loss, Binder's (pairs put
  together that are apart, and apart that are together) or the variation of information (Meila 2007),
  found as Wade & Ghahramani (2018) and SALSO (Dahl, Johnson & Mueller 2022) do: the best of the
  candidate partitions (every sampled one, plus any given, e.g. EM's hard labels), then moves of one
  observation at a time to whichever cluster (or a new one) lowers the expected loss, until none does;
- its credible ball (Wade & Ghahramani 2018): the smallest VI ball around the estimate holding the
  credible mass of the sampled partitions, described by its horizontal bound (the sampled partitions in
  the ball furthest from the estimate) and vertical bounds (those in the ball with the fewest and the
  most clusters, furthest among them).

Expectations are over the given draws, optionally weighted (``weights`` (S,), e.g. exact enumeration's
posterior probabilities). Entropies are in bits (log base 2), as Wade & Ghahramani's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ASSUMES",
    "CredibleBall",
    "PointPartition",
    "binder_loss",
    "canonical",
    "credible_ball",
    "expected_binder",
    "expected_vi",
    "point_partition",
    "similarity",
    "variation_of_information",
]

#: What this rung assumes, one sentence for the report.
ASSUMES = ("Partition summaries: only who is clustered with whom matters (no labels), summarised by the posterior "
           "co-clustering probabilities and the partition minimising the expected loss.")

LOSSES = ("binder", "vi")


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel each row of ``labels`` (..., N) by order of first appearance (0, 1, ...), so that two label
    vectors describing the same partition become equal."""
    labels = np.asarray(labels)
    flat = labels.reshape(-1, labels.shape[-1])
    out = np.empty(flat.shape, dtype=np.int64)
    for row, values in enumerate(flat):
        _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        out[row] = rank[inverse.ravel()]
    return out.reshape(labels.shape)


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (n,) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"weights must be {n} non-negative numbers with a positive sum")
    return weights / weights.sum()


def similarity(draws: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Posterior similarity matrix (N, N): P(observations i and j in one cluster).

    ``draws`` is membership probabilities (S, N, K) (Rao-Blackwellised; e.g. a family's
    ``membership_draws``, or the responsibilities of B bootstrap fits) or integer labels (S, N).
    ``weights`` (S,) weighs the draws (default equal). Ones on the diagonal.
    """
    from emvsbayes.labels.diagnostics import coclustering

    x = np.asarray(draws)
    if weights is None:
        return coclustering(x)
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError("2-D draws must be integer labels (S, N)")
        x = (x[:, :, None] == np.arange(int(x.max()) + 1)).astype(float)
    elif x.ndim != 3:
        raise ValueError(f"expected membership probabilities (S, N, K) or labels (S, N); got shape {x.shape}")
    w = _weights(weights, x.shape[0])
    out = np.einsum("s,sik,sjk->ij", w, x, x)
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 1.0)
    return out


def binder_loss(a: np.ndarray, b: np.ndarray) -> float:
    """Binder's loss (equal costs): the number of pairs i < j together in one partition and apart in the other."""
    same_a = np.asarray(a)[:, None] == np.asarray(a)[None, :]
    same_b = np.asarray(b)[:, None] == np.asarray(b)[None, :]
    return float(np.triu(same_a != same_b, k=1).sum())


def expected_binder(candidates: np.ndarray, psm: np.ndarray) -> np.ndarray:
    """Posterior expected Binder loss of each candidate partition (C, N) (or one (N,)), from the similarity
    matrix: sum over pairs i < j of [together in c] (1 - P_ij) + [apart in c] P_ij."""
    candidates = np.atleast_2d(candidates)
    upper = np.triu(np.ones_like(psm, dtype=bool), k=1)
    together = candidates[:, :, None] == candidates[:, None, :]  # (C, N, N)
    loss = np.where(together, 1.0 - psm, psm)
    return (loss * upper).sum(axis=(1, 2))


def _n_log_n(counts: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, counts * np.log2(np.where(counts > 0, counts, 1.0)), 0.0)


def variation_of_information(a: np.ndarray, b: np.ndarray) -> float:
    """VI(a, b) = H(a) + H(b) - 2 I(a, b) in bits, for two label vectors of one length."""
    return float(_vi_to_draws(np.asarray(a)[None, :], np.asarray(b)[None, :])[0, 0])


def _vi_to_draws(candidates: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """VI between every candidate (C, N) and every draw (S, N): (C, S).

    With n_kl the contingency counts, VI = (1/N) [sum_k n_k log n_k + sum_l m_l log m_l
    - 2 sum_kl n_kl log n_kl] (the log N terms of the entropies cancel)."""
    candidates = canonical(candidates)
    draws = canonical(draws)
    n = candidates.shape[1]
    k_max = int(candidates.max()) + 1
    l_max = int(draws.max()) + 1
    out = np.empty((candidates.shape[0], draws.shape[0]))
    draw_sizes = np.stack([np.bincount(row, minlength=l_max) for row in draws])  # (S, L)
    draw_term = _n_log_n(draw_sizes).sum(axis=1)  # (S,)
    for c, cand in enumerate(candidates):
        joint = cand[None, :] * l_max + draws  # (S, N)
        flat = (np.arange(draws.shape[0])[:, None] * (k_max * l_max) + joint).ravel()
        counts = np.bincount(flat, minlength=draws.shape[0] * k_max * l_max).reshape(draws.shape[0], -1)
        cand_term = _n_log_n(np.bincount(cand, minlength=k_max)).sum()
        out[c] = (cand_term + draw_term - 2 * _n_log_n(counts).sum(axis=1)) / n
    return out


def expected_vi(candidates: np.ndarray, draws: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Posterior expected VI of each candidate partition (C, N) against the sampled partitions ``draws``
    (S, N), optionally weighted (S,)."""
    draws = np.asarray(draws)
    return _vi_to_draws(np.atleast_2d(candidates), draws) @ _weights(weights, draws.shape[0])


@dataclass(frozen=True, slots=True)
class PointPartition:
    """The partition minimising the posterior expected ``loss``: ``labels`` (N,) canonical;
    ``expected_loss``; ``n_clusters``; ``source`` where the search started from (``"sampled"`` or
    ``"given"``: one of the extra candidates) and ``n_moves`` the single-observation moves that improved it."""

    labels: np.ndarray
    loss: str
    expected_loss: float
    n_clusters: int
    source: str
    n_moves: int


def _loss_function(loss: str, label_draws, psm, weights):
    if loss == "binder":
        return lambda cands: expected_binder(cands, psm)
    if loss == "vi":
        return lambda cands: expected_vi(cands, label_draws, weights)
    raise ValueError(f"unknown loss {loss!r}: use one of {LOSSES}")


def point_partition(label_draws: np.ndarray, *, loss: str = "vi", weights: np.ndarray | None = None,
                    extra_candidates: np.ndarray | None = None, max_sweeps: int = 50) -> PointPartition:
    """Minimise the posterior expected ``loss`` (``"binder"`` or ``"vi"``) over partitions.

    ``label_draws`` (S, N) sampled partitions (labels of any naming, e.g. each draw's most probable
    component, or allocations drawn from its membership probabilities); ``extra_candidates`` (C, N)
    more starting partitions (EM's hard labels). The best candidate is improved by sweeps of
    single-observation moves (to another cluster or a new one) while the expected loss falls by more
    than rounding.
    """
    label_draws = canonical(np.asarray(label_draws))
    psm = similarity(label_draws, weights) if loss == "binder" else None
    expected = _loss_function(loss, label_draws, psm, weights)
    unique = np.unique(label_draws, axis=0)
    sources = ["sampled"] * len(unique)
    if extra_candidates is not None:
        extra = canonical(np.atleast_2d(extra_candidates))
        unique = np.concatenate([unique, extra])
        sources += ["given"] * len(extra)
    losses = expected(unique)
    best = int(np.argmin(losses))
    current, current_loss = unique[best].copy(), float(losses[best])
    n_moves = 0
    for _ in range(max_sweeps):
        moved = False
        for i in range(len(current)):
            options = np.unique(np.append(current, current.max() + 1))
            trial = np.repeat(current[None, :], len(options), axis=0)
            trial[:, i] = options
            trial_loss = expected(trial)
            j = int(np.argmin(trial_loss))
            if trial_loss[j] < current_loss - 1e-12 * max(1.0, abs(current_loss)):
                current, current_loss = canonical(trial[j]), float(trial_loss[j])
                n_moves += 1
                moved = True
        if not moved:
            break
    return PointPartition(current, loss, current_loss, int(current.max()) + 1, sources[best], n_moves)


@dataclass(frozen=True, slots=True)
class CredibleBall:
    """The smallest VI ball around ``center`` (N,) holding ``prob`` of the sampled partitions' mass.

    ``radius`` its VI radius (bits); ``horizontal`` (N,) a sampled partition in the ball furthest from the
    centre, at ``horizontal_distance``; ``upper_vertical`` (N,) among those in the ball with the fewest
    clusters, the furthest (``upper_vertical_distance``, ``upper_vertical_clusters``); ``lower_vertical``
    the same among those with the most clusters.
    """

    center: np.ndarray
    prob: float
    radius: float
    horizontal: np.ndarray
    horizontal_distance: float
    upper_vertical: np.ndarray
    upper_vertical_distance: float
    upper_vertical_clusters: int
    lower_vertical: np.ndarray
    lower_vertical_distance: float
    lower_vertical_clusters: int


def credible_ball(center: np.ndarray, label_draws: np.ndarray, *, prob: float = 0.95,
                  weights: np.ndarray | None = None) -> CredibleBall:
    """Wade & Ghahramani's (2018) credible ball in VI distance around ``center`` from sampled partitions."""
    if not 0 < prob <= 1:
        raise ValueError(f"prob = {prob} must lie in (0, 1]")
    label_draws = canonical(np.asarray(label_draws))
    w = _weights(weights, label_draws.shape[0])
    distance = _vi_to_draws(np.asarray(center)[None, :], label_draws)[0]
    order = np.argsort(distance, kind="stable")
    cumulative = np.cumsum(w[order])
    # The smallest radius whose ball holds at least prob of the mass (rounding of the cumulative sum aside).
    radius = float(distance[order][np.searchsorted(cumulative, prob - 1e-12)])
    inside = distance <= radius + 1e-12
    n_clusters = label_draws.max(axis=1) + 1

    def furthest(mask):
        index = np.flatnonzero(mask)[np.argmax(distance[mask])]
        return label_draws[index], float(distance[index]), int(n_clusters[index])

    horizontal, h_dist, _ = furthest(inside)
    upper, u_dist, u_k = furthest(inside & (n_clusters == n_clusters[inside].min()))
    lower, l_dist, l_k = furthest(inside & (n_clusters == n_clusters[inside].max()))
    return CredibleBall(canonical(np.asarray(center)), prob, radius, horizontal, h_dist, upper, u_dist, u_k, lower,
                        l_dist, l_k)
