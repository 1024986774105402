"""Diagnostics of label switching and of multiple optima, over numpy arrays.

- :func:`chain_permutations`, :func:`switch_count`: where and how often the labels switched;
- :func:`bimodality`: Sarle's bimodality coefficient of a marginal (a switched component is bimodal);
- :func:`distinct_optima`: group EM restarts that reached the same optimum up to renaming;
- :func:`modes_up_to_permutation`: tell label switching between chains from genuinely different modes;
- :func:`sorted_summary`, :func:`coclustering`: label-invariant summaries that need no relabelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from emvsbayes.labels.relabel import apply_permutations, label_features, permute_labels, pivot, pivot_cost, solve_assignments

__all__ = [
    "BIMODALITY_THRESHOLD",
    "ChainSwitching",
    "ModeSummary",
    "Optimum",
    "SortedSummary",
    "bimodality",
    "chain_permutations",
    "coclustering",
    "distinct_optima",
    "modes_up_to_permutation",
    "sorted_summary",
    "switch_count",
]

#: Sarle's coefficient of a uniform distribution; larger values suggest two modes.
BIMODALITY_THRESHOLD = 5.0 / 9.0


class ChainSwitching(NamedTuple):
    """Permutations found per chain.

    Attributes
    ----------
    modal_perm : ndarray of int, shape (n_chains, K)
        The most common permutation in each chain (ties: the one seen first).
    modal_share : ndarray of float, shape (n_chains,)
        Share of the chain's draws that carry its modal permutation.
    n_switches : ndarray of int, shape (n_chains,)
        Draw-to-draw changes of permutation inside each chain.
    """

    modal_perm: np.ndarray
    modal_share: np.ndarray
    n_switches: np.ndarray

    def modal_tuples(self) -> list[tuple[int, ...]]:
        """The modal permutations as tuples, one per chain."""
        return [tuple(int(k) for k in row) for row in self.modal_perm]


def switch_count(perms_one_chain: np.ndarray) -> int:
    """Number of draw-to-draw changes of permutation in one chain.

    Parameters
    ----------
    perms_one_chain : ndarray of int, shape (T, K)

    Returns
    -------
    int
    """
    p = np.asarray(perms_one_chain)
    if p.ndim != 2:
        raise ValueError(f"perms_one_chain must have shape (T, K); got {p.shape}")
    return int(np.any(p[1:] != p[:-1], axis=1).sum())


def chain_permutations(perms: np.ndarray, n_chains: int) -> ChainSwitching:
    """Summarise the permutations of each chain.

    Parameters
    ----------
    perms : ndarray of int, shape (n_chains * T, K)
        Chain-major order: the T draws of chain 0, then chain 1, ...
    n_chains : int

    Returns
    -------
    ChainSwitching
    """
    perms = np.asarray(perms)
    S, K = perms.shape
    if S % n_chains:
        raise ValueError(f"{S} draws cannot be split into {n_chains} chains of equal length")
    by_chain = perms.reshape(n_chains, S // n_chains, K)
    modal = np.empty((n_chains, K), dtype=perms.dtype)
    share = np.empty(n_chains)
    for c, chain in enumerate(by_chain):
        unique, first, counts = np.unique(chain, axis=0, return_index=True, return_counts=True)
        # Break ties by first appearance so the answer does not depend on np.unique's sort order.
        best = np.lexsort((first, -counts))[0]
        modal[c] = unique[best]
        share[c] = counts[best] / chain.shape[0]
    switches = np.array([switch_count(chain) for chain in by_chain], dtype=int)
    return ChainSwitching(modal, share, switches)


def bimodality(x: np.ndarray) -> float:
    """Sarle's bimodality coefficient ``b = (g**2 + 1) / (k + 3 (n - 1)**2 / ((n - 2)(n - 3)))``.

    ``g`` is the sample skewness and ``k`` the sample excess kurtosis, both bias-corrected
    (SAS's definition; Pfister et al. 2013, *Front. Psychol.* 4:700). ``b`` is 1/3 for a normal
    sample, 5/9 (:data:`BIMODALITY_THRESHOLD`) for a uniform one, and approaches 1 for two
    well-separated modes; values above 5/9 suggest bimodality.

    Parameters
    ----------
    x : ndarray, shape (n,)
        n >= 4.

    Returns
    -------
    float
    """
    x = np.asarray(x, dtype=float).ravel()
    n = x.size
    if n < 4:
        raise ValueError(f"bimodality needs at least 4 values; got {n}")
    if np.ptp(x) == 0:
        return float("nan")
    # SciPy's stats module is imported here, where it is used: importing it takes ~1 s, and the runner
    # imports this module before anything has been fitted (a bad input exits without it).
    from scipy.stats import kurtosis, skew

    # Both are free of location and scale: taken of the standardized values, so that values on a scale near
    # float's limits (data multiplied by 1e-150) do not set off SciPy's "precision loss" warning on an accepted run.
    spread = x.std()
    if not spread > 0:  # values so small that their spread underflows
        return float("nan")
    z = (x - x.mean()) / spread
    g = skew(z, bias=False)
    k = kurtosis(z, fisher=True, bias=False)
    return float((g**2 + 1.0) / (k + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


class Optimum(NamedTuple):
    """One distinct optimum among EM restarts.

    Attributes
    ----------
    representative : int
        Index of the member restart with the highest log-likelihood; its labelling is the optimum's.
    members : ndarray of int, shape (count,)
        Restarts that reached this optimum, by decreasing log-likelihood.
    count : int
    loglik : float
        Log-likelihood of the representative.
    perms : ndarray of int, shape (count, K)
        For each member, the permutation that aligns it to the representative
        (``params[name][member][perms[m]]`` matches the representative).
    """

    representative: int
    members: np.ndarray
    count: int
    loglik: float
    perms: np.ndarray


def _single(params: Mapping[str, np.ndarray], r: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(x)[r : r + 1] for name, x in params.items()}


def _pooled_scale(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # One label-invariant scale per variable element, pooled over all fits and components, so every
    # alignment uses the same metric however many fits a group holds.
    out = {}
    for name, x in params.items():
        x = np.asarray(x, dtype=float)
        out[name] = x.reshape(x.shape[0] * x.shape[1], -1).std(axis=0)
    return out


def _group_up_to_permutation(params, order, same, label_axes=None):
    """Greedy grouping: each fit (in ``order``) joins the first group whose representative it matches.

    ``same(rep, r, perm_r)`` decides whether fit ``r``, renamed by ``perm_r``, matches representative ``rep``.
    Returns a list of (representative, [members], [perms]).
    """
    # Fits are matched on their label features (a matrix labelled on two axes: per row, its diagonal
    # element and the rest sorted), which a joint renaming only reorders by row.
    features = label_features(params, label_axes)
    scale = _pooled_scale(features)
    groups: list[tuple[int, list[int], list[np.ndarray]]] = []
    for r in order:
        for rep, members, perms in groups:
            reference = {name: np.asarray(x)[rep] for name, x in features.items()}
            perm = pivot(_single(features, r), reference, scale).perms[0]
            if same(rep, r, perm):
                members.append(r)
                perms.append(perm)
                break
        else:
            K = np.asarray(next(iter(params.values()))).shape[1]
            groups.append((r, [r], [np.arange(K)]))
    return groups


def distinct_optima(
    params: Mapping[str, np.ndarray],
    loglik: np.ndarray,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    label_axes: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Optimum]:
    """Group EM restarts that reached the same optimum up to a renaming of components.

    Parameters
    ----------
    params : mapping of str to ndarray, each (R, K, ...)
        Final parameters of the R restarts.
    loglik : ndarray, shape (R,)
        Final log-likelihoods.
    rtol, atol : float
        Two restarts are the same optimum when their log-likelihoods agree and, after aligning the
        second to the first by :func:`~emvsbayes.labels.relabel.pivot` (standardised by the spread of
        each variable over all restarts and components), every parameter agrees, both in the sense of
        ``np.isclose(a, b, rtol=rtol, atol=atol)``.
    label_axes : mapping of str to tuple of int, optional
        Label axes of a variable labelled on more than axis 1 (a transition matrix: ``(1, 2)``); every
        one of them is renamed (:func:`~emvsbayes.labels.relabel.permute_labels`).

    Returns
    -------
    list of Optimum
        Sorted by log-likelihood, highest first.
    """
    loglik = np.asarray(loglik, dtype=float)
    R = loglik.shape[0]
    for name, x in params.items():
        if np.shape(x)[0] != R:
            raise ValueError(f"params[{name!r}] has {np.shape(x)[0]} restarts but loglik has {R}")
    # Stable sort, so equal log-likelihoods keep restart order and the representative is reproducible.
    order = np.argsort(-loglik, kind="stable")

    def same(rep, r, perm):
        if not np.isclose(loglik[r], loglik[rep], rtol=rtol, atol=atol):
            return False
        return all(
            np.allclose(permute_labels(np.asarray(x)[r], perm, [a - 1 for a in (label_axes or {}).get(name, (1,))]),
                        np.asarray(x)[rep], rtol=rtol, atol=atol)
            for name, x in params.items()
        )

    if not params:
        # No parameter differs between restarts (every one ended at the same point, as K = 1 always
        # does): one optimum, with nothing to align. Its K is unknown here, so its perms are empty.
        return [Optimum(int(order[0]), order, R, float(loglik[order[0]]), np.zeros((R, 0), dtype=int))]
    groups = _group_up_to_permutation(params, order, same, label_axes)
    return [
        Optimum(rep, np.array(members), len(members), float(loglik[rep]), np.array(perms))
        for rep, members, perms in groups
    ]


class ModeSummary(NamedTuple):
    """Chains grouped by the posterior mode they explore.

    Attributes
    ----------
    mode : ndarray of int, shape (n_chains,)
        Mode id of each chain (0 is the mode of chain 0; ids in order of first appearance).
    share : ndarray of float, shape (n_modes,)
        Share of all draws in the chains of each mode.
    draw_perms : ndarray of int, shape (n_chains, T, K)
        Permutations relabelling each draw to the common pivot (labelled like chain 0's first draw).
    chain_perms : ndarray of int, shape (n_chains, K)
        Permutation that further aligns each chain's relabelled mean to its mode's first chain
        (the identity for chains of mode 0; it matters for chains of other modes, whose draws were
        matched to a pivot from a different mode).
    chain_means : dict of str to ndarray, each (n_chains, K, ...)
        Per-chain posterior means after relabelling to the common pivot, before ``chain_perms``.
    distance : ndarray of float, shape (n_chains, n_chains)
        Largest standardised difference between the chain means after best alignment.
    label_switching : bool
        Some draw needed a non-identity permutation (in ``draw_perms`` or ``chain_perms``): labels
        switched within or between chains.
    distinct_modes : bool
        Two chains differ by more than a permutation (n_modes > 1).
    """

    mode: np.ndarray
    share: np.ndarray
    draw_perms: np.ndarray
    chain_perms: np.ndarray
    chain_means: dict
    distance: np.ndarray
    label_switching: bool
    distinct_modes: bool


def _aligned_mean(draws: dict[str, np.ndarray], reference: dict[str, np.ndarray], scale=None, n_iter: int = 10,
                  label_axes=None):
    # Iterated pivoting (a K-means over permutations): align draws to the reference, re-centre on the
    # mean of the aligned draws, until the permutations settle. Re-centring also frees the result from
    # the start, which may be a single (noisy) draw.
    perms = None
    for _ in range(n_iter):
        new = pivot(draws, reference, scale, label_axes=label_axes).perms
        if perms is not None and np.array_equal(new, perms):
            break
        perms = new
        reference = {name: x.mean(axis=0) for name, x in apply_permutations(draws, perms, label_axes).items()}
    return reference, perms


def modes_up_to_permutation(chain_params: Mapping[str, np.ndarray], tol: float = 0.5,
                            label_axes: Mapping[str, tuple[int, ...]] | None = None) -> ModeSummary:
    """Tell label switching between chains from chains that sit in genuinely different modes.

    Each chain's draws are relabelled to a pivot common to all chains (the aligned mean of chain 0)
    and averaged. Two chains are in the same mode when their means, after the best renaming of
    components, differ by at most ``tol`` posterior standard deviations in every element.

    Parameters
    ----------
    chain_params : mapping of str to ndarray, each (n_chains, T, K, ...)
        Posterior draws by chain.
    tol : float
        Largest difference between chain means, in units of the within-chain posterior standard
        deviation (after within-chain relabelling, pooled over chains and components), for two chains
        to count as one mode. Chain means of one mode differ by about ``sd / sqrt(ESS)``, so 0.5 is
        generous for MCMC yet far below the gap between distinct modes.
    label_axes : mapping of str to tuple of int, optional
        Label axes of each variable in the per-chain (T, K, ...) layout, ``(1,)`` when not given; a
        transition matrix's ``(1, 2)`` renames rows and columns together.

    Returns
    -------
    ModeSummary
    """
    arrays = {name: np.asarray(x, dtype=float) for name, x in chain_params.items()}
    C, T, K = next(iter(arrays.values())).shape[:3]
    for name, x in arrays.items():
        if x.shape[:3] != (C, T, K):
            raise ValueError(f"chain_params[{name!r}] has leading shape {x.shape[:3]}, expected {(C, T, K)}")
    chains = [{name: x[c] for name, x in arrays.items()} for c in range(C)]
    # pivot's own scale (each variable's within-component spread), not the spread pooled over draws and
    # components: for components alike in a variable (near-equal sigmas or weights) that pooled spread is
    # only posterior noise, and weighing it like the means' separation mislabelled up to 70 % of draws.
    first, _ = _aligned_mean(chains[0], {name: x[0] for name, x in chains[0].items()}, label_axes=label_axes)
    means, within_sd, draw_perms = [], [], []
    for chain in chains:
        mean, perms = _aligned_mean(chain, first, label_axes=label_axes)
        means.append(mean)
        draw_perms.append(perms)
        within_sd.append({name: x.std(axis=0) for name, x in apply_permutations(chain, perms, label_axes).items()})
    draw_perms = np.stack(draw_perms)
    # Within-mode spread, pooled over chains and components, is the yardstick for chain differences.
    sd = {
        name: np.sqrt(np.mean([w[name] ** 2 for w in within_sd], axis=(0, 1))).reshape(-1)
        for name in arrays
    }
    sd = {name: np.where(s > 0, s, 1.0) for name, s in sd.items()}
    chain_means = {name: np.stack([m[name] for m in means]) for name in arrays}

    # All pairwise best-aligned distances; (C, C) assignment problems on K x K are cheap.
    distance = np.zeros((C, C))
    perm_to = np.zeros((C, C, K), dtype=np.intp)
    for a in range(C):
        reference = {name: m[a] for name, m in chain_means.items()}
        perm_to[a] = solve_assignments(pivot_cost(chain_means, reference, _feature_scale(sd, reference, label_axes),
                                                  label_axes=label_axes))
        aligned = apply_permutations(chain_means, perm_to[a], label_axes)
        diffs = [
            (np.abs(aligned[name] - reference[name][None]) / sd[name].reshape(reference[name].shape[1:]))
            .reshape(C, -1)
            .max(axis=1)
            for name in arrays
        ]
        distance[a] = np.max(diffs, axis=0)

    mode = np.full(C, -1)
    leaders: list[int] = []
    for c in range(C):
        for m, lead in enumerate(leaders):
            if distance[lead, c] <= tol:
                mode[c] = m
                break
        else:
            mode[c] = len(leaders)
            leaders.append(c)
    chain_perms = np.stack([perm_to[leaders[mode[c]], c] for c in range(C)])
    share = np.bincount(mode, minlength=len(leaders)) / C
    switching = bool(np.any(chain_perms != np.arange(K)) or np.any(draw_perms != np.arange(K)))
    return ModeSummary(mode, share, draw_perms, chain_perms, chain_means, distance, switching, len(leaders) > 1)


def _feature_scale(sd: dict[str, np.ndarray], reference: dict[str, np.ndarray], label_axes) -> dict:
    """The pooled (flattened) scales of variables labelled on several axes in their reference's shape, which
    :func:`~emvsbayes.labels.relabel.pivot_cost` turns into the label features' layout with the values;
    others as they are."""
    if not label_axes:
        return sd
    out = dict(sd)
    for name, axes in label_axes.items():
        if name in sd and any(a != 1 for a in axes):
            shape = np.shape(reference[name])
            out[name] = np.broadcast_to(sd[name].reshape(shape[1:]), shape)
    return out


class SortedSummary(NamedTuple):
    """Summary of the order statistics of a component quantity (label-invariant).

    Attributes
    ----------
    mean, sd : ndarray, shape (K,)
        Mean and standard deviation of the j-th smallest value across draws.
    quantile_probs : ndarray, shape (Q,)
    quantiles : ndarray, shape (Q, K)
    """

    mean: np.ndarray
    sd: np.ndarray
    quantile_probs: np.ndarray
    quantiles: np.ndarray


def sorted_summary(values: np.ndarray, quantile_probs=(0.05, 0.5, 0.95)) -> SortedSummary:
    """Summarise the sorted values of each draw: the j-th smallest, whatever its label.

    Parameters
    ----------
    values : ndarray, shape (S, K)
    quantile_probs : sequence of float

    Returns
    -------
    SortedSummary
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (S, K); got {values.shape}")
    ordered = np.sort(values, axis=1)
    probs = np.asarray(quantile_probs, dtype=float)
    return SortedSummary(ordered.mean(axis=0), ordered.std(axis=0, ddof=1), probs, np.quantile(ordered, probs, axis=0))


def coclustering(probs_or_allocations: np.ndarray, K: int | None = None) -> np.ndarray:
    """Posterior probability that two observations share a component; needs no relabelling.

    Parameters
    ----------
    probs_or_allocations : ndarray
        Either membership probabilities (S, N, K), giving ``mean_s sum_k p[s,i,k] p[s,j,k]`` for
        i != j (the allocations being independent given the draw's parameters), or hard
        allocations (S, N) of ints, giving the share of draws with ``z[s,i] == z[s,j]``.
    K : int, optional
        Number of components for allocations; ``max + 1`` by default.

    Returns
    -------
    ndarray, shape (N, N)
        Symmetric, with ones on the diagonal (an observation always shares its own component).
    """
    x = np.asarray(probs_or_allocations)
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError("2-D input must be integer allocations (S, N)")
        K = int(x.max()) + 1 if K is None else K
        onehot = np.zeros(x.shape + (K,))
        np.put_along_axis(onehot, x[..., None], 1.0, axis=2)
        x = onehot
    elif x.ndim != 3:
        raise ValueError(f"expected probs (S, N, K) or allocations (S, N); got shape {x.shape}")
    S, N, K = x.shape
    # Stacking draws and components into one axis makes the whole average a single (N, S*K) matmul.
    flat = np.asarray(x, dtype=float).transpose(1, 0, 2).reshape(N, S * K)
    out = flat @ flat.T / S
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 1.0)
    return out
