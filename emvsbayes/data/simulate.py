"""Simulate mixture data with known truth, for recovery tests and examples.

Every function takes an explicit ``numpy.random.Generator``: there is no default seed, so the same
generator state always gives the same data and a caller decides how streams are split.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from emvsbayes.data.records import CoinData, ContinuousData
from emvsbayes.errors import UserError

__all__ = [
    "GaussianMixtureParams",
    "separated_gaussian_mixture",
    "simulate_coins",
    "simulate_gaussian_mixture",
]


class GaussianMixtureParams(NamedTuple):
    """Parameters of a Gaussian mixture, unpackable as ``w, mu, cov``.

    Attributes
    ----------
    w : np.ndarray, shape (K,)
        Mixture weights, summing to one.
    mu : np.ndarray, shape (K, D)
        Component means.
    cov : np.ndarray, shape (K, D, D)
        Component covariance matrices.
    """

    w: np.ndarray
    mu: np.ndarray
    cov: np.ndarray


def _require_generator(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, e.g. np.random.default_rng(seed); got {type(rng).__name__}"
        )
    return rng


def _weights(w: object) -> np.ndarray:
    """Mixture weights as a (K,) float array, checked to be a probability vector."""
    weights = np.asarray(w, dtype=np.float64)
    if weights.ndim != 1 or weights.size == 0:
        raise UserError(f"w must be a list of mixture weights, one per component; got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise UserError(f"w must be non-negative weights; got {weights.tolist()}")
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-8):
        raise UserError(f"w must sum to 1; it sums to {weights.sum():.6g}")
    return weights / weights.sum()  # remove the rounding that the tolerance above allowed


def simulate_coins(
    theta: object,
    w: object,
    tosses: int | object,
    rng: np.random.Generator,
    *,
    n_sets: int | None = None,
) -> CoinData:
    """Draw sets of coin tosses from a mixture of K coins.

    Each set first picks its coin k with probability ``w[k]``, then tosses it ``tosses`` times
    with head probability ``theta[k]``.

    Parameters
    ----------
    theta : array_like, shape (K,)
        Head probability of each coin, in [0, 1].
    w : array_like, shape (K,)
        Probability that a set is made with each coin; sums to one.
    tosses : int or array_like of int, shape (N,)
        Tosses per set: one count for every set (then `n_sets` gives N), or one count per set.
    rng : numpy.random.Generator
        Source of randomness; required.
    n_sets : int, optional
        Number of sets N when `tosses` is a single count.

    Returns
    -------
    CoinData
        ``heads`` and ``tosses`` of shape (N,), ``true_coin`` of shape (N,) with the coin of each set.
    """
    rng = _require_generator(rng)
    head_probability = np.asarray(theta, dtype=np.float64)
    weights = _weights(w)
    if head_probability.shape != weights.shape:
        raise UserError(f"theta and w must have one entry per coin; got {head_probability.size} and {weights.size}")
    if not np.all((head_probability >= 0) & (head_probability <= 1)):
        raise UserError(f"theta must be head probabilities in [0, 1]; got {head_probability.tolist()}")

    tosses_array = np.asarray(tosses)
    if tosses_array.ndim == 0:
        if n_sets is None:
            raise UserError("with one tosses count for every set, give the number of sets as n_sets")
        tosses_array = np.full(n_sets, tosses_array)
    elif n_sets is not None and n_sets != tosses_array.shape[0]:
        raise UserError(f"n_sets is {n_sets} but tosses has {tosses_array.shape[0]} entries; give one or the other")
    if tosses_array.ndim != 1 or tosses_array.size == 0:
        raise UserError(f"tosses must be a count or a list of counts, one per set; got shape {tosses_array.shape}")
    if not np.all(np.mod(tosses_array, 1) == 0) or np.any(tosses_array < 1):
        raise UserError("tosses must be whole numbers of at least 1")
    tosses_array = tosses_array.astype(np.int64)

    true_coin = rng.choice(weights.size, size=tosses_array.size, p=weights).astype(np.int64)
    heads = rng.binomial(tosses_array, head_probability[true_coin]).astype(np.int64)
    return CoinData(
        heads=heads,
        tosses=tosses_array,
        labels=tuple(f"set {i}" for i in range(1, heads.size + 1)),
        true_coin=true_coin,
        source=f"simulated coin mixture (K={weights.size}, N={heads.size})",
    )


def simulate_gaussian_mixture(
    n: int, w: object, mu: object, cov: object, rng: np.random.Generator
) -> ContinuousData:
    """Draw `n` rows from a mixture of K multivariate Gaussians.

    Parameters
    ----------
    n : int
        Number of rows N.
    w : array_like, shape (K,)
        Mixture weights; sum to one.
    mu : array_like, shape (K, D)
        Component means.
    cov : array_like, shape (K, D, D)
        Component covariance matrices, each symmetric positive definite.
    rng : numpy.random.Generator
        Source of randomness; required.

    Returns
    -------
    ContinuousData
        ``x`` of shape (N, D), columns ``"x1"`` .. ``"xD"``, ``true_component`` of shape (N,).
    """
    rng = _require_generator(rng)
    if int(n) != n or n < 1:
        raise UserError(f"n must be a positive whole number of rows; got {n}")
    n = int(n)
    weights = _weights(w)
    means = np.asarray(mu, dtype=np.float64)
    covariances = np.asarray(cov, dtype=np.float64)
    n_components = weights.size
    if means.ndim != 2 or means.shape[0] != n_components:
        raise UserError(f"mu must have shape (K, D) = ({n_components}, D); got {means.shape}")
    dim = means.shape[1]
    if covariances.shape != (n_components, dim, dim):
        raise UserError(f"cov must have shape (K, D, D) = ({n_components}, {dim}, {dim}); got {covariances.shape}")
    if not np.allclose(covariances, np.swapaxes(covariances, 1, 2)):
        raise UserError("cov must be symmetric matrices")
    try:
        cov_cholesky = np.linalg.cholesky(covariances)  # (K, D, D), lower triangular
    except np.linalg.LinAlgError:
        raise UserError("cov must be positive definite for every component; one is not") from None

    true_component = rng.choice(n_components, size=n, p=weights).astype(np.int64)
    standard_normal = rng.standard_normal((n, dim))
    x = means[true_component] + np.einsum("nij,nj->ni", cov_cholesky[true_component], standard_normal)
    return ContinuousData(
        x=x,
        columns=tuple(f"x{d}" for d in range(1, dim + 1)),
        labels=tuple(str(i) for i in range(1, n + 1)),
        true_component=true_component,
        source=f"simulated Gaussian mixture (K={n_components}, D={dim}, N={n})",
    )


def separated_gaussian_mixture(
    n_components: int, dim: int, separation: float, rng: np.random.Generator
) -> GaussianMixtureParams:
    """Parameters of a Gaussian mixture whose neighbouring means are `separation` sds apart.

    The means lie on a line through the origin in a random direction u, centred on the origin,
    neighbours ``separation`` apart. Each covariance has a random orientation and eigenvalues
    between 0.5 and 2 (before scaling), then is scaled so that its standard deviation along u is
    exactly 1: `separation` is then the distance between neighbouring means in units of the
    within-component sd in the direction that separates them. Weights are equal.

    Parameters
    ----------
    n_components : int
        Number of components K (at least 1).
    dim : int
        Dimension D (at least 1).
    separation : float
        Distance between neighbouring means in within-component sds (non-negative).
    rng : numpy.random.Generator
        Source of randomness; required.

    Returns
    -------
    GaussianMixtureParams
        ``w`` (K,), ``mu`` (K, D), ``cov`` (K, D, D); unpack as ``w, mu, cov`` and pass to
        :func:`simulate_gaussian_mixture`.
    """
    rng = _require_generator(rng)
    if int(n_components) != n_components or n_components < 1:
        raise UserError(f"n_components must be a whole number of at least 1; got {n_components}")
    if int(dim) != dim or dim < 1:
        raise UserError(f"dim must be a whole number of at least 1; got {dim}")
    if not np.isfinite(separation) or separation < 0:
        raise UserError(f"separation must be a non-negative number of sds; got {separation}")
    n_components, dim = int(n_components), int(dim)

    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    offsets = separation * (np.arange(n_components) - (n_components - 1) / 2)  # (K,), centred
    means = offsets[:, None] * direction[None, :]

    covariances = np.empty((n_components, dim, dim))
    for k in range(n_components):
        # QR of a Gaussian matrix gives a random rotation; the sign fix makes it uniformly distributed.
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        rotation = q * np.sign(np.diag(r))
        eigenvalues = rng.uniform(0.5, 2.0, size=dim)
        covariance = (rotation * eigenvalues) @ rotation.T
        covariance = (covariance + covariance.T) / 2  # exact symmetry, for Cholesky-based consumers
        covariances[k] = covariance / (direction @ covariance @ direction)
    weights = np.full(n_components, 1.0 / n_components)
    return GaussianMixtureParams(w=weights, mu=means, cov=covariances)
