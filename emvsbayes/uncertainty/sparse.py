"""The number of occupied components of an overfitted ("sparse") finite mixture.

Malsiner-Walli, Frühwirth-Schnatter & Grün (2016, *Stat. Comput.* 26:303-324) fit a mixture with more
components than the data need, K_max, and a symmetric Dirichlet(e0, ..., e0) prior on the weights
with e0 small. Rousseau & Mengersen (2011, *JRSS B* 73:689-710) showed that for e0 < d / 2 (d the
number of parameters of one component) the posterior empties the superfluous components instead of
splitting a group between two. The number of clusters is then not K but K+, the number of components
that hold at least one observation, and its posterior answers "how many clusters" with an uncertainty.

The PyMC models here marginalise the allocations z. A draw of z given a posterior draw theta_s from
its full conditional ``p(z | theta_s, y) = prod_i p(z_i | theta_s, y_i)`` (each row categorical with its
membership probabilities) makes (theta_s, z_s) a draw from the joint posterior, so
``K+_s = #{k : some z_si = k}`` is a draw from the posterior of K+. The draws of z come from an
explicit generator, one uniform per row and draw.
"""

from __future__ import annotations

import numpy as np

__all__ = ["allocation_draws", "occupied_components", "occupied_distribution"]


def allocation_draws(membership, rng: np.random.Generator) -> np.ndarray:
    """One allocation per row and draw from membership probabilities ``(S, N, K)``: ints ``(S, N)``.

    Inverse-CDF sampling: row i of draw s goes to the first k whose cumulative probability exceeds a
    uniform; the cumulative sum is rescaled by its last entry so rounding cannot leave a uniform past it.
    """
    probs = np.asarray(membership, dtype=float)
    cumulative = np.cumsum(probs, axis=-1)
    cumulative /= cumulative[..., -1:]
    u = rng.random(probs.shape[:-1])
    z = (u[..., None] >= cumulative).sum(axis=-1)
    return np.minimum(z, probs.shape[-1] - 1)


def occupied_components(allocations, n_components: int) -> np.ndarray:
    """K+ per draw from allocations ``(S, N)`` with values in 0..K-1: the count of distinct components."""
    z = np.asarray(allocations)
    occupied = np.zeros((z.shape[0], n_components), dtype=bool)
    occupied[np.arange(z.shape[0])[:, None], z] = True
    return occupied.sum(axis=1)


def occupied_distribution(n_occupied, n_components: int) -> np.ndarray:
    """P(K+ = k), k = 1..K, the share of draws with k occupied components: ``(K,)``."""
    counts = np.bincount(np.asarray(n_occupied, dtype=int), minlength=n_components + 1)[1:n_components + 1]
    return counts / max(counts.sum(), 1)
