"""Relabelling algorithms for mixture output, as pure functions over numpy arrays.

A mixture's likelihood does not change when its components are renamed, so MCMC draws, bootstrap
replicates and EM restarts come back with permuted labels. Every function here returns a
:class:`Relabelling` whose ``perms`` (S, K) say how to rename: the relabelled draw ``s`` of an array
``x`` of shape (S, K, ...) is ``x[s, perms[s]]``, i.e. new component ``j`` is old component
``perms[s, j]``. Nothing is relabelled in place; :func:`apply_permutations` and
:func:`permute_probs` apply a result.

The methods follow the reference implementations of R's ``label.switching`` package
(Papastamoulis 2016, *J. Stat. Softw.* 69(1)):

- :func:`order_by`: an ordering constraint imposed after sampling;
- :func:`pivot`: best match of every draw to one reference parameter set (EM answer, MAP draw);
- :func:`ecr`, :func:`ecr_iterative`: equivalence classes representatives
  (Papastamoulis & Iliopoulos 2010), on hard allocations;
- :func:`stephens`: Stephens (2000), Kullback-Leibler on membership probabilities.

All of them reduce to one problem per draw: given a cost ``cost[s, j, k]`` of calling old component
``k`` new component ``j``, pick the permutation with the least total cost. :func:`solve_assignments`
solves it for every draw at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import permutations
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "Relabelling",
    "agreement",
    "all_permutations",
    "apply_permutations",
    "count_changed",
    "ecr",
    "ecr_iterative",
    "invert_permutations",
    "order_by",
    "permute_probs",
    "pivot",
    "pivot_cost",
    "relabel",
    "solve_assignments",
    "stephens",
    "METHODS",
]

#: Largest K for which the assignment problem is solved by enumerating all K! permutations at once
#: (720 for K = 6); above it, scipy's ``linear_sum_assignment`` is called draw by draw.
ENUMERATION_MAX_K = 6

#: Probabilities are clipped at this value before a logarithm so that 0 * log 0 stays 0.
PROB_FLOOR = 1e-300


class Relabelling(NamedTuple):
    """The outcome of a relabelling method.

    Attributes
    ----------
    perms : ndarray of int, shape (S, K)
        ``perms[s, j]`` is the old component that becomes new component ``j`` in draw ``s``.
    n_changed : int
        Number of draws whose permutation is not the identity.
    method : str
        Name of the method, as accepted by :func:`relabel`.
    loss_trace : ndarray of float, shape (iterations + 1,), or None
        Objective after each iteration for the iterative methods, starting with the value at the
        initial permutations: the Kullback-Leibler loss for :func:`stephens`, the number of
        disagreements with the pivot allocation for :func:`ecr_iterative`; ``None`` otherwise.
    iterations : int
        Permutation updates performed by an iterative method; 0 for the one-pass methods.
    """

    perms: np.ndarray
    n_changed: int
    method: str
    loss_trace: np.ndarray | None = None
    iterations: int = 0


# --------------------------------------------------------------------------------------------------
# permutation utilities


def all_permutations(K: int) -> np.ndarray:
    """All permutations of ``range(K)`` in lexicographic order, identity first.

    Returns
    -------
    ndarray of int, shape (K!, K)
    """
    return np.array(list(permutations(range(K))), dtype=np.intp).reshape(-1, K)


def invert_permutations(perms: np.ndarray) -> np.ndarray:
    """Inverse of each row: ``inv[s, perms[s, j]] = j``.

    Parameters
    ----------
    perms : ndarray of int, shape (S, K)

    Returns
    -------
    ndarray of int, shape (S, K)
    """
    perms = np.asarray(perms)
    inv = np.empty_like(perms)
    np.put_along_axis(inv, perms, np.broadcast_to(np.arange(perms.shape[-1]), perms.shape), axis=-1)
    return inv


def count_changed(perms: np.ndarray) -> int:
    """Number of rows of ``perms`` (S, K) that are not the identity permutation."""
    perms = np.asarray(perms)
    return int(np.any(perms != np.arange(perms.shape[-1]), axis=-1).sum())


def _check_perms(perms: np.ndarray, S: int | None = None, K: int | None = None) -> np.ndarray:
    perms = np.asarray(perms)
    if perms.ndim != 2 or not np.issubdtype(perms.dtype, np.integer):
        raise ValueError(f"perms must be a 2-D integer array (S, K); got {perms.dtype} {perms.shape}")
    if S is not None and perms.shape[0] != S:
        raise ValueError(f"perms has {perms.shape[0]} rows but the draws have S = {S}")
    if K is not None and perms.shape[1] != K:
        raise ValueError(f"perms has {perms.shape[1]} columns but the draws have K = {K}")
    if not np.array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(perms.shape[1]), perms.shape)):
        raise ValueError("every row of perms must be a permutation of 0..K-1")
    return perms


def apply_permutations(draws: Mapping[str, np.ndarray], perms: np.ndarray) -> dict[str, np.ndarray]:
    """Rename the components of every array: ``out[name][s] = draws[name][s, perms[s]]``.

    Parameters
    ----------
    draws : mapping of str to ndarray, each of shape (S, K, ...)
        Component axis 1; any trailing dimensions (e.g. (D, D) covariances) ride along.
    perms : ndarray of int, shape (S, K)

    Returns
    -------
    dict of str to ndarray
        New arrays with the same shapes as the inputs.
    """
    out = {}
    for name, x in draws.items():
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"draws[{name!r}] must have shape (S, K, ...); got {x.shape}")
        p = _check_perms(perms, S=x.shape[0], K=x.shape[1])
        out[name] = x[np.arange(x.shape[0])[:, None], p]
    return out


def permute_probs(probs: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Rename the components of membership probabilities: ``out[s, i, j] = probs[s, i, perms[s, j]]``.

    Parameters
    ----------
    probs : ndarray, shape (S, N, K)
    perms : ndarray of int, shape (S, K)

    Returns
    -------
    ndarray, shape (S, N, K)
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (S, N, K); got {probs.shape}")
    p = _check_perms(perms, S=probs.shape[0], K=probs.shape[2])
    return np.take_along_axis(probs, p[:, None, :], axis=2)


def _relabel_allocations(allocations: np.ndarray, perms: np.ndarray) -> np.ndarray:
    # Old label perms[s, j] becomes j, so an observation's new label is the inverse applied to its old one.
    inv = invert_permutations(perms)
    return np.take_along_axis(inv, allocations, axis=1)


# --------------------------------------------------------------------------------------------------
# the per-draw assignment problem


def solve_assignments(cost: np.ndarray, current: np.ndarray | None = None, rtol: float = 1e-12) -> np.ndarray:
    """Least-cost permutation for every draw.

    Parameters
    ----------
    cost : ndarray, shape (S, K, K)
        ``cost[s, j, k]``: cost of making old component ``k`` the new component ``j`` in draw ``s``.
    current : ndarray of int, shape (S, K), optional
        Permutations in use. A draw keeps its current permutation unless another one is cheaper by
        more than ``rtol`` (relative): without this, ties could flip between equally good
        permutations and an iterative method would never see its permutations settle.
    rtol : float
        Relative margin used with ``current``.

    Returns
    -------
    ndarray of int, shape (S, K)
        ``perms[s]`` minimises ``sum_j cost[s, j, perms[s, j]]``.
    """
    cost = np.asarray(cost, dtype=float)
    S, K, K2 = cost.shape
    if K != K2:
        raise ValueError(f"cost must have shape (S, K, K); got {cost.shape}")
    if K <= ENUMERATION_MAX_K:
        # Enumerating K! candidates as one array operation beats S calls into scipy by orders of
        # magnitude for the small K of mixture models; summing one column at a time keeps memory at (S, K!).
        candidates = all_permutations(K)
        total = np.zeros((S, len(candidates)))
        for j in range(K):
            total += cost[:, j, candidates[:, j]]
        best = candidates[np.argmin(total, axis=1)]
    else:
        best = np.empty((S, K), dtype=np.intp)
        for s in range(S):
            rows, cols = linear_sum_assignment(cost[s])
            best[s, rows] = cols
    if current is None:
        return best
    current = np.asarray(current)
    rows = np.arange(S)[:, None]
    cols = np.arange(K)[None, :]
    best_total = cost[rows, cols, best].sum(axis=1)
    current_total = cost[rows, cols, current].sum(axis=1)
    improves = best_total < current_total - rtol * np.abs(current_total)
    return np.where(improves[:, None], best, current)


def _result(perms: np.ndarray, method: str, loss_trace=None, iterations: int = 0) -> Relabelling:
    perms = np.asarray(perms, dtype=np.intp)
    trace = None if loss_trace is None else np.asarray(loss_trace, dtype=float)
    return Relabelling(perms, count_changed(perms), method, trace, iterations)


# --------------------------------------------------------------------------------------------------
# the methods


def order_by(values: np.ndarray) -> Relabelling:
    """Ordering constraint imposed after sampling: sort the components of each draw by ``values``.

    Parameters
    ----------
    values : ndarray, shape (S, K)
        The quantity to order by (e.g. the means ``mu``); new component 0 has the smallest value.

    Returns
    -------
    Relabelling
        ``method="order"``. Ties keep their original order (stable sort).

    Notes
    -----
    Only sound when the ordered quantity separates the components in every draw; where the
    posteriors of two components overlap, ordering distorts both (Stephens 2000; Jasra et al. 2005).
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"order_by needs values of shape (S, K); got {values.shape}")
    return _result(np.argsort(values, axis=1, kind="stable"), "order")


def _flatten_features(draws: Mapping[str, np.ndarray]) -> tuple[int, int, dict[str, np.ndarray]]:
    flat = {}
    S = K = None
    for name, x in draws.items():
        x = np.asarray(x, dtype=float)
        if x.ndim < 2:
            raise ValueError(f"draws[{name!r}] must have shape (S, K, ...); got {x.shape}")
        if S is None:
            S, K = x.shape[:2]
        elif x.shape[:2] != (S, K):
            raise ValueError(f"draws[{name!r}] has leading shape {x.shape[:2]}, expected {(S, K)}")
        flat[name] = x.reshape(S, K, -1)
    if S is None:
        raise ValueError("draws is empty")
    return S, K, flat


def pivot_cost(
    draws: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    scale: Mapping[str, np.ndarray | float] | None = None,
) -> np.ndarray:
    """Standardised squared distance between every draw's components and the reference components.

    Parameters
    ----------
    draws : mapping of str to ndarray, each (S, K, ...)
    reference : mapping of str to ndarray, each (K, ...)
        Same names as ``draws`` (extra names are ignored).
    scale : mapping of str to float or ndarray broadcastable to the trailing shape ``...``, optional
        Divides the differences of each variable. A variable missing from ``scale`` (or all of
        them, when ``scale`` is None) is divided by its standard deviation pooled over draws and
        components, which is label-invariant, so the scale does not depend on the labelling being
        fixed; an element with zero spread gets scale 1.

    Returns
    -------
    ndarray, shape (S, K, K)
        ``cost[s, j, k] = sum over variables and elements of ((draws[s, k] - reference[j]) / scale)**2``.
    """
    S, K, flat = _flatten_features(draws)
    scale = {} if scale is None else scale
    cost = np.zeros((S, K, K))
    for name, x in flat.items():
        if name not in reference:
            raise ValueError(f"reference has no {name!r}; it needs every variable in draws")
        ref = np.asarray(reference[name], dtype=float)
        if ref.shape[0] != K or ref.size != K * x.shape[2]:
            raise ValueError(f"reference[{name!r}] has shape {ref.shape}; expected (K, ...) matching draws")
        ref = ref.reshape(K, -1)
        if name in scale:
            sd = np.broadcast_to(np.asarray(scale[name], dtype=float).reshape(-1), (x.shape[2],))
        else:
            sd = x.reshape(S * K, -1).std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        xs, rs = x / sd, ref / sd
        # |x - r|^2 expanded so the (S, K, K) cost comes from one batched matmul instead of an (S, K, K, F) array.
        cross = np.einsum("skf,jf->sjk", xs, rs)
        cost += (xs**2).sum(axis=2)[:, None, :] + (rs**2).sum(axis=1)[None, :, None] - 2.0 * cross
    return np.maximum(cost, 0.0)


def pivot(
    draws: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    scale: Mapping[str, np.ndarray | float] | None = None,
) -> Relabelling:
    """Match every draw to a reference parameter set (an EM answer or the MAP draw).

    Parameters
    ----------
    draws : mapping of str to ndarray, each (S, K, ...)
        e.g. ``{"mu": (S, K), "w": (S, K), "cov": (S, K, D, D)}``.
    reference : mapping of str to ndarray, each (K, ...)
        The labelling to match; its component ``j`` defines new component ``j``.
    scale : mapping of str to float or ndarray, optional
        Per-variable scale of the differences; see :func:`pivot_cost`.

    Returns
    -------
    Relabelling
        ``method="pivot"``; each draw's permutation minimises the standardised squared distance
        to the reference (a K x K assignment problem per draw).
    """
    return _result(solve_assignments(pivot_cost(draws, reference, scale)), "pivot")


def _check_allocations(allocations: np.ndarray, K: int) -> np.ndarray:
    allocations = np.asarray(allocations)
    if allocations.ndim != 2 or not np.issubdtype(allocations.dtype, np.integer):
        raise ValueError(f"allocations must be an integer array (S, N); got {allocations.dtype} {allocations.shape}")
    if allocations.size and (allocations.min() < 0 or allocations.max() >= K):
        raise ValueError(f"allocations must lie in 0..K-1 = 0..{K - 1}")
    return allocations


def agreement(allocations: np.ndarray, pivot_allocation: np.ndarray, K: int) -> np.ndarray:
    """Agreement counts between each draw's allocation and the pivot allocation.

    Parameters
    ----------
    allocations : ndarray of int, shape (S, N)
    pivot_allocation : ndarray of int, shape (N,)
    K : int

    Returns
    -------
    ndarray of int, shape (S, K, K)
        ``A[s, j, k]`` = number of observations with pivot label ``j`` and label ``k`` in draw ``s``.
    """
    allocations = _check_allocations(allocations, K)
    pivot_allocation = _check_allocations(np.asarray(pivot_allocation)[None, :], K)[0]
    S, N = allocations.shape
    if pivot_allocation.shape != (N,):
        raise ValueError(f"pivot_allocation must have shape (N,) = ({N},); got {pivot_allocation.shape}")
    # One bincount over flat (draw, pivot label, draw label) indices builds all S contingency tables at once.
    flat = (np.arange(S)[:, None] * K + pivot_allocation[None, :]) * K + allocations
    return np.bincount(flat.ravel(), minlength=S * K * K).reshape(S, K, K)


def ecr(allocations: np.ndarray, pivot_allocation: np.ndarray, K: int) -> Relabelling:
    """ECR algorithm (Papastamoulis & Iliopoulos 2010) with a fixed pivot allocation.

    Parameters
    ----------
    allocations : ndarray of int, shape (S, N)
        Hard labels of the N observations in each draw (sampled or MAP allocations).
    pivot_allocation : ndarray of int, shape (N,)
        Labels that define the new components (e.g. the allocation of the MAP draw).
    K : int
        Number of components.

    Returns
    -------
    Relabelling
        ``method="ecr"``; each draw's permutation maximises the number of observations whose
        relabelled label equals the pivot label.
    """
    return _result(solve_assignments(-agreement(allocations, pivot_allocation, K)), "ecr")


def _mode_allocation(allocations: np.ndarray, K: int) -> np.ndarray:
    S, N = allocations.shape
    counts = np.bincount((np.arange(N)[None, :] * K + allocations).ravel(), minlength=N * K).reshape(N, K)
    return np.argmax(counts, axis=1)


def ecr_iterative(
    allocations: np.ndarray,
    K: int,
    max_iter: int = 100,
    pivot_allocation: np.ndarray | None = None,
) -> Relabelling:
    """Iterative ECR: relabel to a pivot, replace the pivot by the modal relabelled allocation, repeat.

    Parameters
    ----------
    allocations : ndarray of int, shape (S, N)
    K : int
    max_iter : int
        Most permutation updates.
    pivot_allocation : ndarray of int, shape (N,), optional
        Starting pivot; the first draw's allocation by default.

    Returns
    -------
    Relabelling
        ``method="ecr_iterative"``. ``loss_trace`` holds the total number of disagreements
        ``S * N - sum_s agreement`` with the current pivot, first for the initial pivot with identity
        permutations, then after each iteration; both steps are coordinate ascent on agreement, so it
        never rises. Stops when the permutations no longer change.
    """
    allocations = _check_allocations(allocations, K)
    S, N = allocations.shape
    current_pivot = allocations[0] if pivot_allocation is None else np.asarray(pivot_allocation)
    perms = np.broadcast_to(np.arange(K), (S, K)).copy()
    rows, cols = np.arange(S)[:, None], np.arange(K)[None, :]
    agree = agreement(allocations, current_pivot, K)
    trace = [S * N - agree[rows, cols, perms].sum()]
    iterations = 0
    for _ in range(max_iter):
        new_perms = solve_assignments(-agree, current=perms)
        iterations += 1
        changed = not np.array_equal(new_perms, perms)
        perms = new_perms
        current_pivot = _mode_allocation(_relabel_allocations(allocations, perms), K)
        agree = agreement(allocations, current_pivot, K)
        trace.append(S * N - agree[rows, cols, perms].sum())
        if not changed:
            break
    return _result(perms, "ecr_iterative", trace, iterations)


def _stephens_q(probs: np.ndarray, perms: np.ndarray) -> np.ndarray:
    return permute_probs(probs, perms).mean(axis=0)


def stephens(
    probs: np.ndarray,
    max_iter: int = 100,
    init_perms: np.ndarray | None = None,
) -> Relabelling:
    """Stephens' (2000) Kullback-Leibler relabelling of membership probabilities.

    Minimises ``L = sum_s KL(p_s permuted || q)`` over the permutations and over ``q`` (N, K), by
    alternating: ``q`` = average of the permuted ``p``'s, then for each draw the permutation
    minimising ``cost[s, j, k] = sum_i p[s, i, k] * (log p[s, i, k] - log q[i, j])``.

    Parameters
    ----------
    probs : ndarray, shape (S, N, K)
        Membership probabilities of the N observations under each draw's parameters.
    max_iter : int
        Most permutation updates.
    init_perms : ndarray of int, shape (S, K), optional
        Starting permutations (e.g. from :func:`ecr` or :func:`pivot`); identities by default.

    Returns
    -------
    Relabelling
        ``method="stephens"``. ``loss_trace[0]`` is ``L`` at the starting permutations and
        ``loss_trace[t]`` after update ``t``; it never rises because each half-step minimises ``L``
        over its own argument. Iteration stops when no draw's permutation changes (then the loss
        has stopped falling) or after ``max_iter`` updates.

    Notes
    -----
    The cost needs only one batched matmul per iteration: ``sum_i p[s, i, k] log q[i, j]`` is
    ``P_s^T log q``; the entropy term ``sum_i p log p`` does not depend on the labelling and is
    computed once.
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (S, N, K); got {probs.shape}")
    S, N, K = probs.shape
    perms = (
        np.broadcast_to(np.arange(K), (S, K)).copy()
        if init_perms is None
        else _check_perms(init_perms, S=S, K=K).astype(np.intp)
    )
    neg_entropy = np.einsum("sik,sik->sk", probs, np.log(np.clip(probs, PROB_FLOOR, None)))  # (S, K)
    probs_t = np.ascontiguousarray(probs.transpose(0, 2, 1))  # (S, K, N), for the matmul
    rows, cols = np.arange(S)[:, None], np.arange(K)[None, :]

    def cost_given(q):
        cross = np.matmul(probs_t, np.log(np.clip(q, PROB_FLOOR, None)))  # (S, K_old, K_new)
        return neg_entropy[:, None, :] - cross.transpose(0, 2, 1)  # cost[s, j_new, k_old]

    cost = cost_given(_stephens_q(probs, perms))
    trace = [cost[rows, cols, perms].sum()]
    iterations = 0
    for _ in range(max_iter):
        new_perms = solve_assignments(cost, current=perms)
        iterations += 1
        changed = not np.array_equal(new_perms, perms)
        perms = new_perms
        cost = cost_given(_stephens_q(probs, perms))
        trace.append(cost[rows, cols, perms].sum())
        if not changed:
            break
    return _result(perms, "stephens", trace, iterations)


# --------------------------------------------------------------------------------------------------
# dispatch


def _need(name: str, value, method: str):
    if value is None:
        raise ValueError(f"relabel({method!r}) needs the {name!r} argument")
    return value


def _n_components(method, probs, K):
    if K is not None:
        return int(K)
    if probs is not None:
        return int(np.shape(probs)[-1])
    raise ValueError(f"relabel({method!r}) needs K=... (or probs, whose last axis gives K)")


def _allocations(method, allocations, probs):
    if allocations is not None:
        return allocations
    if probs is not None:
        # MAP allocations, as label.switching builds them when only probabilities are given.
        return np.argmax(np.asarray(probs), axis=2)
    raise ValueError(f"relabel({method!r}) needs allocations (or probs to take their argmax)")


def _run_order(*, draws, probs, allocations, reference, by, **kw):
    values = by if not isinstance(by, str) else _need("draws", draws, "order")[by]
    return order_by(_need("by", values, "order"), **kw)


def _run_pivot(*, draws, probs, allocations, reference, by, **kw):
    return pivot(_need("draws", draws, "pivot"), _need("reference", reference, "pivot"), **kw)


def _run_ecr(*, draws, probs, allocations, reference, by, K=None, **kw):
    return ecr(
        _allocations("ecr", allocations, probs),
        _need("reference", reference, "ecr"),
        _n_components("ecr", probs, K),
        **kw,
    )


def _run_ecr_iterative(*, draws, probs, allocations, reference, by, K=None, **kw):
    return ecr_iterative(
        _allocations("ecr_iterative", allocations, probs),
        _n_components("ecr_iterative", probs, K),
        pivot_allocation=reference,
        **kw,
    )


def _run_stephens(*, draws, probs, allocations, reference, by, **kw):
    return stephens(_need("probs", probs, "stephens"), **kw)


#: Method name -> runner taking the keyword arguments of :func:`relabel`.
METHODS: dict[str, Callable[..., Relabelling]] = {
    "order": _run_order,
    "pivot": _run_pivot,
    "ecr": _run_ecr,
    "ecr_iterative": _run_ecr_iterative,
    "stephens": _run_stephens,
}


def relabel(
    method: str,
    *,
    draws: Mapping[str, np.ndarray] | None = None,
    probs: np.ndarray | None = None,
    allocations: np.ndarray | None = None,
    reference=None,
    by: str | np.ndarray | None = None,
    **kw,
) -> Relabelling:
    """Run one relabelling method by name.

    Parameters
    ----------
    method : {"order", "pivot", "ecr", "ecr_iterative", "stephens"}
    draws : mapping of str to ndarray (S, K, ...), optional
        Needed by ``"pivot"``, and by ``"order"`` when ``by`` is a variable name.
    probs : ndarray (S, N, K), optional
        Needed by ``"stephens"``; ``"ecr"`` / ``"ecr_iterative"`` take its argmax when
        ``allocations`` is not given, and read K from it.
    allocations : ndarray of int (S, N), optional
    reference : optional
        ``"pivot"``: mapping of str to (K, ...) arrays; ``"ecr"``: the pivot allocation (N,);
        ``"ecr_iterative"``: an optional starting pivot allocation.
    by : str or ndarray (S, K), optional
        ``"order"``: name of a variable in ``draws``, or the values themselves.
    **kw
        Passed to the method (``scale``, ``K``, ``max_iter``, ``init_perms``).

    Returns
    -------
    Relabelling
    """
    try:
        runner = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown relabelling method {method!r}; choose one of {sorted(METHODS)}") from None
    return runner(draws=draws, probs=probs, allocations=allocations, reference=reference, by=by, **kw)
