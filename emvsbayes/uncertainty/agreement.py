"""How far two answers agree about who belongs where: memberships, entropy, adjusted Rand index.

Everything here is label-free or aligns labels first: two fits that name the same components
differently agree perfectly. Membership matrices are (N, K) with rows summing to one (EM
responsibilities, posterior mean memberships); hard labelings are (N,) integer arrays (EM's argmax,
hard EM, k-means, the posterior modal allocation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy.special import xlogy

__all__ = [
    "MembershipDifference",
    "adjusted_rand_index",
    "align_memberships",
    "ari_matrix",
    "assignment_entropy",
    "confusion_table",
    "hard_labels",
    "membership_difference",
]


def _memberships(resp, name: str) -> np.ndarray:
    resp = np.asarray(resp, dtype=float)
    if resp.ndim != 2:
        raise ValueError(f"{name} must be a membership matrix (N, K); got shape {resp.shape}")
    return resp


def hard_labels(resp) -> np.ndarray:
    """Most probable component of each observation (N,) from memberships (N, K); ties to the lowest index."""
    return np.argmax(_memberships(resp, "resp"), axis=1)


def align_memberships(reference, other) -> np.ndarray:
    """The renaming of ``other``'s components that best matches ``reference``.

    Parameters
    ----------
    reference, other : array_like, shape (N, K)

    Returns
    -------
    ndarray of int, shape (K,)
        ``perm`` with ``other[:, perm]`` aligned: column j of the aligned matrix is ``other``'s column
        ``perm[j]``. Chosen to minimise the summed absolute difference (a K x K assignment problem).
    """
    a, b = _memberships(reference, "reference"), _memberships(other, "other")
    if a.shape != b.shape:
        raise ValueError(f"membership matrices differ in shape: {a.shape} and {b.shape}")
    cost = np.abs(a[:, :, None] - b[:, None, :]).sum(axis=0)  # cost[j, k]: reference j vs other k
    from scipy.optimize import linear_sum_assignment  # imported here: a study worker needs none of SciPy's optimizers

    _, perm = linear_sum_assignment(cost)
    return perm


class MembershipDifference(NamedTuple):
    """Difference between two membership matrices after aligning components.

    Attributes
    ----------
    mean_abs : float
        Mean of |a_ik - b_ik| over all N K entries (0: identical; at most 2 / K).
    per_observation : ndarray, shape (N,)
        Total-variation distance of each observation's memberships, ``sum_k |a_ik - b_ik| / 2``
        (0: same memberships, 1: disjoint); ``mean_abs = 2 / K * per_observation.mean()``.
    perm : ndarray of int, shape (K,)
        The renaming applied to the second matrix (identity when not aligned).
    """

    mean_abs: float
    per_observation: np.ndarray
    perm: np.ndarray


def membership_difference(reference, other, *, align: bool = True) -> MembershipDifference:
    """Mean absolute difference between two membership matrices (N, K), after aligning ``other`` to
    ``reference`` (see :func:`align_memberships`) unless ``align`` is False."""
    a, b = _memberships(reference, "reference"), _memberships(other, "other")
    perm = align_memberships(a, b) if align else np.arange(b.shape[1])
    diff = np.abs(a - b[:, perm])
    return MembershipDifference(float(diff.mean()), diff.sum(axis=1) / 2, perm)


def assignment_entropy(resp, *, normalise: bool = False) -> np.ndarray:
    """Entropy of each observation's memberships, ``-sum_k r_ik log r_ik`` in nats (0 log 0 = 0).

    0 for a certain assignment, log K for a uniform one; ``normalise=True`` divides by log K (K > 1)
    to give a number in [0, 1].

    Returns
    -------
    ndarray, shape (N,)
    """
    r = _memberships(resp, "resp")
    entropy = -xlogy(r, r).sum(axis=1)
    entropy = np.maximum(entropy, 0.0)  # rounding of r log r near r = 1 can give -1e-17
    if normalise and r.shape[1] > 1:
        entropy = entropy / np.log(r.shape[1])
    return entropy


def _pair_confusion(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """Counts of ordered pairs (i != j): (same in both, same in a only, same in b only, different in both)."""
    _, a_codes = np.unique(a, return_inverse=True)
    _, b_codes = np.unique(b, return_inverse=True)
    table = np.zeros((a_codes.max() + 1, b_codes.max() + 1), dtype=np.int64)
    np.add.at(table, (a_codes, b_codes), 1)
    n = int(a.shape[0])
    # Python integers: n^2 overflows nothing, whatever N.
    sum_squares = int((table.astype(object) ** 2).sum())
    rows = int((table.sum(axis=1).astype(object) ** 2).sum())
    cols = int((table.sum(axis=0).astype(object) ** 2).sum())
    both = sum_squares - n
    a_only = rows - sum_squares
    b_only = cols - sum_squares
    neither = n * n - rows - cols + sum_squares
    return both, a_only, b_only, neither


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two hard labelings (Hubert & Arabie 1985): 1 for the same partition
    (whatever the label names), about 0 for independent ones, negative below chance.

    Computed from the pair confusion counts as ``2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn))``;
    two labelings that both put everything in one group, or both every point alone, give 1 (the
    formula's 0 / 0), as scikit-learn's ``adjusted_rand_score`` does.

    Parameters
    ----------
    labels_a, labels_b : array_like, shape (N,)
        Any hashable labels (ints, strings).

    Returns
    -------
    float
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape[0]} and {b.shape[0]}")
    if a.size == 0:
        return 1.0
    tp, fn, fp, tn = _pair_confusion(a, b)  # a is the 'truth', b the 'prediction' (the index is symmetric)
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def ari_matrix(labelings: Mapping[str, np.ndarray]) -> tuple[tuple[str, ...], np.ndarray]:
    """Adjusted Rand index between every pair of labelings, e.g. EM, hard EM, k-means, posterior mode.

    Returns
    -------
    (names, ari)
        ``ari[i, j]`` between ``names[i]`` and ``names[j]``; symmetric with ones on the diagonal.
    """
    names = tuple(labelings)
    m = len(names)
    out = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = adjusted_rand_index(labelings[names[i]], labelings[names[j]])
    return names, out


def confusion_table(truth, labels, n_components: int) -> tuple[tuple[str, ...], np.ndarray]:
    """How many observations of each known group each component holds.

    Parameters
    ----------
    truth : array_like, shape (N,)
        Known groups, any hashable values (strings from a CSV column).
    labels : array_like of int, shape (N,)
        A hard labelling with components ``0 .. n_components - 1``.
    n_components : int

    Returns
    -------
    (groups, counts)
        ``groups`` the distinct known groups in sorted order (as strings); ``counts[g, k]`` the number of
        observations of ``groups[g]`` labelled ``k``, shape (G, n_components). Rows sum to the group sizes.
    """
    truth = np.asarray(truth).ravel().astype(str)
    labels = np.asarray(labels).ravel()
    if truth.shape != labels.shape:
        raise ValueError(f"truth and labels differ in length: {truth.shape[0]} and {labels.shape[0]}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_components):
        raise ValueError(f"labels must lie in 0 .. {n_components - 1}")
    groups, codes = np.unique(truth, return_inverse=True)
    counts = np.zeros((groups.size, n_components), dtype=np.int64)
    np.add.at(counts, (codes, labels.astype(np.int64)), 1)
    return tuple(str(g) for g in groups), counts
