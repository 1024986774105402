"""Bootstrap likelihood-ratio test of K components against K + 1 (McLachlan 1987, *Appl. Statist.*
36(3):318-324; mclust's ``mclustBootstrapLRT``).

The statistic is ``T = 2 (l_{K+1} - l_K)``, the two maximised log-likelihoods of the data. Its
textbook chi-squared null distribution does not hold here: under K components the K + 1 model
reaches them only at the boundary of its parameter space (a weight of 0) or on a non-identified
ridge (two equal components), so the regularity conditions of Wilks' theorem fail. The null
distribution is therefore simulated: B data sets of the observed size are drawn from the fitted K
model (a parametric bootstrap), both models are refitted to each with the same restart rule as the
data, and

    p = (1 + #{b : T_b >= T_obs}) / (B + 1),

the usual Monte Carlo p-value (Davison & Hinkley 1997, eq. 4.11), which is never 0 and whose smallest
value, 1 / (B + 1), says how many replicates were spent.

A replicate's T_b can come out negative only when the K + 1 search missed an optimum at least as good
as the K one (the K + 1 model contains the K model); such replicates are counted in
``n_search_failed`` and kept as they are, so a reader sees when the restart rule was too weak.

Randomness: replicate b of the test of K draws from its own ``SeedSequence(seed, spawn_key=(K, b))``:
the simulation and the two refits' starts come from three children of it, so adding replicates or
another K leaves every other replicate as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapLRT", "bootstrap_lrt", "lrt_p_value", "lrt_statistic"]


def lrt_statistic(loglik_k: float, loglik_k_plus_1: float) -> float:
    """``2 (l_{K+1} - l_K)``: twice the gain in maximised log-likelihood from one more component."""
    return 2.0 * (float(loglik_k_plus_1) - float(loglik_k))


def lrt_p_value(observed: float, replicates) -> float:
    """``(1 + #{T_b >= T_obs}) / (B + 1)`` over the finite replicates (a failed refit is NaN and left out)."""
    t = np.asarray(replicates, dtype=float)
    t = t[np.isfinite(t)]
    return float((1 + np.count_nonzero(t >= observed)) / (t.size + 1))


@dataclass(frozen=True, slots=True)
class BootstrapLRT:
    """The test of K against K + 1.

    Attributes
    ----------
    n_components : int
        K, the null model's number of components.
    statistic : float
        T_obs = 2 (l_{K+1} - l_K) on the data.
    replicates : ndarray, shape (B,)
        T_b per bootstrap data set (NaN where a refit failed).
    p_value : float
        (1 + #{T_b >= T_obs}) / (B + 1), B counting the finite replicates.
    n_failed : int
        Replicates whose simulation or refit failed (NaN).
    n_search_failed : int
        Replicates with T_b < 0: the K + 1 search ended below the K optimum.
    """

    n_components: int
    statistic: float
    replicates: np.ndarray
    p_value: float
    n_failed: int
    n_search_failed: int


def bootstrap_lrt(n_components: int, loglik_k: float, loglik_k_plus_1: float, n_boot: int, seed: int,
                  simulate: Callable[[np.random.Generator], object],
                  best_loglik: Callable[[object, int, np.random.Generator], float],
                  failures: tuple[type[BaseException], ...] = ()) -> BootstrapLRT:
    """The parametric-bootstrap LRT of K = ``n_components`` against K + 1.

    Parameters
    ----------
    n_components : int
        K.
    loglik_k, loglik_k_plus_1 : float
        The best log-likelihoods of the data under K and K + 1 components.
    n_boot : int
        B, bootstrap data sets (at least 1).
    seed : int
        Root of the replicates' seeds (see the module docstring).
    simulate : callable
        ``simulate(rng)``: a data set of the observed size from the fitted K model.
    best_loglik : callable
        ``best_loglik(data, k, rng)``: the best log-likelihood EM finds for ``k`` components, with the
        restart rule used on the observed data.
    failures : tuple of exception types
        What a replicate may raise when its data cannot be fitted; it is then NaN, counted in ``n_failed``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    observed = lrt_statistic(loglik_k, loglik_k_plus_1)
    replicates = np.full(n_boot, np.nan)
    for b in range(n_boot):
        sim_seed, null_seed, alt_seed = np.random.SeedSequence(seed, spawn_key=(n_components, b)).spawn(3)
        try:
            sample = simulate(np.random.default_rng(sim_seed))
            null = best_loglik(sample, n_components, np.random.default_rng(null_seed))
            alternative = best_loglik(sample, n_components + 1, np.random.default_rng(alt_seed))
        except failures:
            continue
        replicates[b] = lrt_statistic(null, alternative)
    finite = replicates[np.isfinite(replicates)]
    return BootstrapLRT(n_components=int(n_components), statistic=observed, replicates=replicates,
                        p_value=lrt_p_value(observed, replicates), n_failed=int(n_boot - finite.size),
                        n_search_failed=int(np.count_nonzero(finite < 0)))
