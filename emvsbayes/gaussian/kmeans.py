"""Lloyd's k-means and k-means++ seeding: the hard-clustering baseline and EM's default starting point.

Distances are computed as |x|^2 - 2 x.c + |c|^2 (one matrix product per block of rows) on data
centred at their mean first: k-means is translation invariant, and the expansion loses about
|mean|^2 / spread^2 of its digits on data far from the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emvsbayes.gaussian.model import as_data_matrix

# Rows per block of the distance computation (a block holds rows x K distances).
CHUNK_ROWS = 8192


@dataclass(frozen=True, slots=True)
class KMeansResult:
    """Outcome of Lloyd's algorithm.

    ``centres`` (K, D); ``labels`` (N,) the nearest centre of each point (ties to the lowest index),
    consistent with ``centres``; ``inertia``: sum of squared distances to the nearest centre;
    ``n_iter``: centre updates made; ``converged``: the labels stopped changing or the centres moved
    less than the tolerance.
    """

    centres: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool


def nearest(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), squared distance to the nearest centre (N,)) for centred ``x`` (N, D)."""
    n = x.shape[0]
    labels = np.empty(n, dtype=np.intp)
    dist = np.empty(n)
    centre_sq = np.einsum("kd,kd->k", centres, centres)
    for start in range(0, n, CHUNK_ROWS):
        block = x[start : start + CHUNK_ROWS]
        d2 = centre_sq - 2.0 * (block @ centres.T)
        best = np.argmin(d2, axis=1)
        labels[start : start + CHUNK_ROWS] = best
        # |x|^2 added after the argmin: it does not change the nearest centre. Clipped at 0 because
        # the expansion can round a zero distance to a tiny negative.
        dist[start : start + CHUNK_ROWS] = np.maximum(
            d2[np.arange(block.shape[0]), best] + np.einsum("nd,nd->n", block, block), 0.0
        )
    return labels, dist


def _squared_distances(x: np.ndarray, point: np.ndarray) -> np.ndarray:
    diff = x - point
    return np.einsum("nd,nd->n", diff, diff)


def kmeans_plusplus(
    x, n_clusters: int, rng: np.random.Generator, *, n_local_trials: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii 2007).

    The first centre is a uniformly drawn point; each next one is the best (lowest total squared
    distance) of ``n_local_trials`` candidates drawn with probability proportional to the squared
    distance to the nearest centre chosen so far (default 2 + floor(log K), as scikit-learn).

    Parameters
    ----------
    x
        Data (N,) or (N, D).
    n_clusters
        K.
    rng
        The generator to draw from.

    Returns
    -------
    centres : (K, D) array
    indices : (K,) array of the rows of ``x`` chosen
    """
    x = as_data_matrix(x)
    n = x.shape[0]
    if n_clusters > n:
        raise ValueError(f"k-means++ needs at least {n_clusters} points, got {n}")
    trials = 2 + int(math.log(n_clusters)) if n_local_trials is None else n_local_trials
    xc = x - x.mean(axis=0)
    indices = [int(rng.integers(n))]
    closest = _squared_distances(xc, xc[indices[0]])
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0:
            # Fewer distinct points than clusters: any unused row will do.
            unused = np.setdiff1d(np.arange(n), indices)
            indices.append(int(rng.choice(unused)))
            continue
        cumulative = np.cumsum(closest)
        candidates = np.searchsorted(cumulative, rng.uniform(size=trials) * cumulative[-1], side="right")
        candidates = np.minimum(candidates, n - 1)
        best_pot, best_index, best_closest = np.inf, -1, None
        for candidate in candidates:
            new_closest = np.minimum(closest, _squared_distances(xc, xc[candidate]))
            pot = new_closest.sum()
            if pot < best_pot:
                best_pot, best_index, best_closest = pot, int(candidate), new_closest
        indices.append(best_index)
        closest = best_closest
    indices = np.array(indices)
    return x[indices].copy(), indices


def kmeans(x, init_centres, *, max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
    """Lloyd's algorithm from ``init_centres`` (K, D).

    Each iteration assigns every point to its nearest centre and moves each centre to the mean of its
    points; a centre that gets no points stays where it is. Stops when the labels do not change, or
    when the summed squared centre shift is at most ``tol`` times the mean per-feature variance of the
    data (scikit-learn's rule), or after ``max_iter`` updates.
    """
    x = as_data_matrix(x)
    centre = x.mean(axis=0)
    xc = x - centre
    centres = np.array(init_centres, dtype=float).reshape(-1, x.shape[1]) - centre
    k = centres.shape[0]
    shift_tol = tol * float(np.mean(xc.var(axis=0)))
    labels = None
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new_labels, _ = nearest(xc, centres)
        counts = np.bincount(new_labels, minlength=k)
        sums = np.zeros_like(centres)
        _sum_by_label(sums, new_labels, xc)
        new_centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if labels is not None and np.array_equal(new_labels, labels):
            # Same labels as the last update: the centres are already their means.
            converged = True
            break
        shift = float(np.sum(np.square(new_centres - centres)))
        centres, labels = new_centres, new_labels
        if shift <= shift_tol:
            converged = True
            break
    labels, dist = nearest(xc, centres)
    return KMeansResult(centres + centre, labels, float(dist.sum()), n_iter, converged)


def _sum_by_label(sums: np.ndarray, labels: np.ndarray, xc: np.ndarray) -> None:
    # One bincount per feature is much faster than np.add.at for large N.
    for j in range(xc.shape[1]):
        sums[:, j] = np.bincount(labels, weights=xc[:, j], minlength=sums.shape[0])
