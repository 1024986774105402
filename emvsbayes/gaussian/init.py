"""Starting points for Gaussian-mixture EM.

Every method except "given parameters" produces responsibilities (N, K), and the M-step turns them
into parameters, so a start is always a valid mixture for the model's structure and ``reg_covar``:

- ``"kmeans"``: labels of Lloyd's k-means seeded by k-means++ (scikit-learn's default);
- ``"k-means++"``: labels of the nearest k-means++ seed;
- ``"random_from_data"``: labels of the nearest of K distinct random data points;
- ``"random"``: uniform random responsibilities, normalised per point.

Parameters given by the user (``weights_init``, ``means_init``, ``precisions_init``, scikit-learn's
names) replace the computed ones; with all three given no randomness is used. Restarts draw from child
generators (``rng.spawn``), so restart j is the same whatever the number of restarts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from emvsbayes.gaussian.em import params_from_resp
from emvsbayes.gaussian.kmeans import kmeans, kmeans_plusplus
from emvsbayes.gaussian.kmeans import nearest as _nearest
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, as_data_matrix


def _one_hot(labels: np.ndarray, n_components: int, anchors: np.ndarray | None) -> np.ndarray:
    resp = np.zeros((labels.shape[0], n_components))
    labels = labels.copy()
    # Each seed point belongs to its own component, so no component starts empty even when seeds
    # coincide (duplicated points).
    if anchors is not None:
        labels[anchors] = np.arange(n_components)
    resp[np.arange(labels.shape[0]), labels] = 1.0
    return resp


def _nearest_labels(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    centre = x.mean(axis=0)
    return _nearest(x - centre, centres - centre)[0]


def resp_kmeans(x: np.ndarray, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """One-hot responsibilities (N, K) from Lloyd's k-means seeded by k-means++."""
    seeds, indices = kmeans_plusplus(x, n_components, rng)
    result = kmeans(x, seeds)
    return _one_hot(result.labels, n_components, _anchors(result.labels, indices, n_components))


def _anchors(labels: np.ndarray, indices: np.ndarray, n_components: int) -> np.ndarray | None:
    # Only when k-means left a component empty: it gets its seed point back, the others keep one of
    # their own points (so their labels do not change).
    counts = np.bincount(labels, minlength=n_components)
    if np.all(counts > 0):
        return None
    return np.array([np.flatnonzero(labels == k)[0] if counts[k] else indices[k] for k in range(n_components)])


def resp_kmeans_plusplus(x: np.ndarray, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """One-hot responsibilities (N, K): each point to its nearest k-means++ seed."""
    seeds, indices = kmeans_plusplus(x, n_components, rng)
    return _one_hot(_nearest_labels(x, seeds), n_components, indices)


def resp_random_from_data(x: np.ndarray, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """One-hot responsibilities (N, K): each point to the nearest of K random distinct data points."""
    indices = rng.choice(x.shape[0], size=n_components, replace=False)
    return _one_hot(_nearest_labels(x, x[indices]), n_components, indices)


def resp_random(x: np.ndarray, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform(0, 1) responsibilities (N, K), normalised per point (scikit-learn's ``"random"``)."""
    resp = rng.uniform(size=(x.shape[0], n_components))
    return resp / resp.sum(axis=1, keepdims=True)


INIT_METHODS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "kmeans": resp_kmeans,
    "k-means++": resp_kmeans_plusplus,
    "random_from_data": resp_random_from_data,
    "random": resp_random,
}


def initial_params(
    model: GaussianMixtureModel,
    x,
    method: str,
    rng: np.random.Generator,
    *,
    weights_init=None,
    means_init=None,
    precisions_init=None,
) -> GaussianParams:
    """One starting point for ``model`` on data ``x`` (N,) or (N, D).

    Parameters
    ----------
    method
        A key of :data:`INIT_METHODS`; not used when all three ``*_init`` are given.
    rng
        Generator for the method's random draws.
    weights_init, means_init, precisions_init
        Given weights (K,), means (K, D) and precisions shaped as scikit-learn's ``precisions_``;
        each replaces the computed value.
    """
    x = as_data_matrix(x)
    if method not in INIT_METHODS:
        raise ValueError(f"init_params must be one of {sorted(INIT_METHODS)}, got {method!r}")
    if x.shape[0] < model.n_components:
        raise ValueError(f"need at least n_components = {model.n_components} points, got {x.shape[0]}")
    given = (weights_init, means_init, precisions_init)
    if any(value is None for value in given):
        computed = params_from_resp(model, x, INIT_METHODS[method](x, model.n_components, rng))
        w = computed.w if weights_init is None else weights_init
        mu = computed.mu if means_init is None else np.asarray(means_init, dtype=float).reshape(model.n_components, -1)
        if precisions_init is None:
            params = GaussianParams(w, mu, computed.prec_chol, model.covariance_type)
        else:
            params = GaussianParams.from_precisions(w, mu, precisions_init, model.covariance_type)
    else:
        mu = np.asarray(means_init, dtype=float).reshape(model.n_components, -1)
        params = GaussianParams.from_precisions(weights_init, mu, precisions_init, model.covariance_type)
    model.validate_params(params)
    return params


def initial_params_restarts(
    model: GaussianMixtureModel,
    x,
    n_init: int,
    method: str,
    rng: np.random.Generator,
    **given,
) -> list[GaussianParams]:
    """``n_init`` starting points, restart j drawn from the j-th child of ``rng``."""
    x = as_data_matrix(x)
    return [initial_params(model, x, method, child, **given) for child in rng.spawn(n_init)]


def initial_params_source(
    model: GaussianMixtureModel,
    x,
    method: str,
    rng: np.random.Generator,
    **given,
) -> Callable[[], GaussianParams]:
    """A function that draws one more starting point per call, call j from the j-th child of ``rng``:
    the same starts as :func:`initial_params_restarts`, for a caller that decides as it goes how many it needs."""
    x = as_data_matrix(x)

    def next_start() -> GaussianParams:
        return initial_params(model, x, method, rng.spawn(1)[0], **given)

    return next_start
