"""E-step and M-step of the Poisson mixture, soft and hard (classification) EM, and starting points.

Sufficient statistics per component: the expected number of rows it made (``n``) and the expected sum of
their counts (``total``). The M-step is closed form: ``w_k = n_k / N`` and ``rate_k = total_k / n_k``, the
weighted mean count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.special import gammaln, xlogy

from emvsbayes.em import BatchedEMFit, EMFit, fit_em, fit_em_batched, logsumexp  # SciPy's, bit for bit, without its per-call dispatch
from emvsbayes.poisson.model import PoissonMixture, PoissonParams

#: Starting points :func:`random_start` can draw.
INIT_METHODS = ("k-means++", "random")


@dataclass(frozen=True, slots=True)
class PoissonStats:
    """Expected complete-data sufficient statistics.

    ``log_resp`` (N, K): log P(z_i = k | x_i, params) (hard EM: 0 for the chosen component, -inf elsewhere);
    ``n`` (K,): expected rows per component; ``total`` (K,): expected sum of their counts.
    """

    log_resp: np.ndarray
    n: np.ndarray
    total: np.ndarray

    @property
    def resp(self) -> np.ndarray:
        return np.exp(self.log_resp)


def _stats(log_resp: np.ndarray, counts) -> PoissonStats:
    resp = np.exp(log_resp)
    return PoissonStats(log_resp, resp.sum(axis=0), resp.T @ np.asarray(counts, dtype=float))


def e_step(model: PoissonMixture, counts, params: PoissonParams) -> tuple[PoissonStats, float]:
    """Soft E-step: responsibilities in log space; returns the observed-data log-likelihood at ``params``."""
    log_joint = model.log_joint(params, counts)
    log_norm = logsumexp(log_joint, axis=1, keepdims=True)
    return _stats(log_joint - log_norm, counts), float(log_norm.sum())


def hard_e_step(model: PoissonMixture, counts, params: PoissonParams) -> tuple[PoissonStats, float]:
    """Classification E-step: each row goes wholly to its most probable component (ties to the lowest index).

    The objective returned is the classification log-likelihood sum_i max_k log(w_k Poisson(x_i | rate_k)),
    the quantity hard EM never decreases.
    """
    log_joint = model.log_joint(params, counts)
    best = np.argmax(log_joint, axis=1)
    rows = np.arange(len(best))
    log_resp = np.full(log_joint.shape, -np.inf)
    log_resp[rows, best] = 0.0
    return _stats(log_resp, counts), float(log_joint[rows, best].sum())


def m_step(model: PoissonMixture, stats: PoissonStats, params: PoissonParams) -> PoissonParams:
    """rate_k = expected total / expected rows of component k; w_k = expected share of rows.

    A component given no rows keeps its current rate: its update is 0/0 (its weight becomes 0).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(stats.n > 0, stats.total / stats.n, params.rate)
    return PoissonParams(stats.n / stats.n.sum(), rate)


E_STEPS = {"soft": e_step, "hard": hard_e_step}


def responsibilities(model: PoissonMixture, counts, params: PoissonParams) -> np.ndarray:
    """P(z_i = k | x_i, params), shape (N, K)."""
    return e_step(model, counts, params)[0].resp


def _check_start(model: PoissonMixture, counts, init: PoissonParams) -> None:
    """Every rate 0 (or every positive-weight rate 0) against a positive count makes the data impossible:
    the log-likelihood is -inf and EM cannot move."""
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = model.loglik(init, counts)
    if not np.isfinite(loglik):
        raise ValueError(f"the log-likelihood at the start rate = {init.rate.tolist()}, w = {init.w.tolist()} is "
                         f"{loglik}: the data are impossible there; start with positive rates and weights")


def fit(model: PoissonMixture, counts, init: PoissonParams, *, kind: str = "soft", **options) -> EMFit:
    """EM for the Poisson mixture from ``init``; ``kind`` is ``"soft"`` or ``"hard"``; ``options`` as
    :func:`emvsbayes.em.fit_em`."""
    if kind not in E_STEPS:
        raise ValueError(f"kind must be one of {tuple(E_STEPS)}, got {kind!r}")
    model.validate_params(init)
    _check_start(model, counts, init)
    counts = np.asarray(counts, dtype=float)
    return fit_em(partial(E_STEPS[kind], model, counts), partial(m_step, model), init, **options)


# --------------------------------------------------------------------------------------------------
# Starting points


#: Smallest starting rate: a start at rate 0 would give any positive count probability 0.
MIN_START_RATE = 0.1


def kmeans_plus_plus_start(model: PoissonMixture, counts, rng: np.random.Generator) -> PoissonParams:
    """k-means++ seeding on the counts (Arthur & Vassilvitskii 2007) as rates, with equal weights.

    The first centre is a count drawn uniformly; each next one a count drawn with probability proportional to
    its squared distance to the nearest centre so far (uniformly when every count is a centre already).
    Rates are kept at least :data:`MIN_START_RATE` and nudged apart where two centres coincide.
    """
    x = np.asarray(counts, dtype=float)
    centres = [x[rng.integers(x.size)]]
    for _ in range(1, model.n_components):
        d2 = np.min((x[:, None] - np.asarray(centres)[None, :]) ** 2, axis=1)
        total = d2.sum()
        centres.append(x[rng.choice(x.size, p=d2 / total)] if total > 0 else x[rng.integers(x.size)])
    rate = np.maximum(np.asarray(centres, dtype=float), MIN_START_RATE)
    # Two equal rates make a start from which EM keeps the two components equal for ever.
    rate = rate * (1.0 + 1e-3 * rng.standard_normal(rate.size))
    return PoissonParams(np.full(model.n_components, 1.0 / model.n_components), np.maximum(rate, MIN_START_RATE))


def uniform_random_start(model: PoissonMixture, counts, rng: np.random.Generator) -> PoissonParams:
    """Rates uniform on [min count, max count] (at least :data:`MIN_START_RATE`), weights Dirichlet(1)."""
    x = np.asarray(counts, dtype=float)
    rate = rng.uniform(x.min(), max(x.max(), x.min() + 1.0), size=model.n_components)
    return PoissonParams(rng.dirichlet(np.ones(model.n_components)), np.maximum(rate, MIN_START_RATE))


_STARTS = {"k-means++": kmeans_plus_plus_start, "random": uniform_random_start}


def random_start(model: PoissonMixture, counts, rng: np.random.Generator, method: str = "k-means++") -> PoissonParams:
    """One starting point drawn by ``method`` (:data:`INIT_METHODS`)."""
    if method not in _STARTS:
        raise ValueError(f"init method must be one of {INIT_METHODS}, got {method!r}")
    return _STARTS[method](model, counts, rng)


def random_inits(model: PoissonMixture, counts, n_init: int, rng: np.random.Generator,
                 method: str = "k-means++") -> list[PoissonParams]:
    """``n_init`` starting points, each from its own child generator of ``rng``."""
    return [random_start(model, counts, child, method) for child in rng.spawn(n_init)]


# --------------------------------------------------------------------------------------------------
# Many fits at once (restarts, bootstrap replicates): the same steps over a leading replicate axis


@dataclass(frozen=True, slots=True)
class CountSets:
    """The data of B fits run together (:func:`fit_batched`).

    ``counts`` (R, N) with R = B (one data set per fit, e.g. simulated) or R = 1 (shared by all fits);
    ``weights`` (B, N) or None: how many times fit b counts each row (a resample drawn with replacement is
    its original rows with these multiplicities).
    """

    counts: np.ndarray
    weights: np.ndarray | None = None

    def select(self, rows) -> tuple[np.ndarray, np.ndarray | None]:
        counts = self.counts if self.counts.shape[0] == 1 else self.counts[rows]
        return counts, None if self.weights is None else self.weights[rows]


@dataclass(frozen=True, slots=True)
class BatchedPoissonStats:
    """:class:`PoissonStats` of b fits without the responsibilities: ``n``, ``total`` (b, K)."""

    n: np.ndarray
    total: np.ndarray


def batched_e_step(model: PoissonMixture, data: CountSets, params: PoissonParams, rows):
    """:func:`e_step` of the fits ``rows`` at ``params`` (w, rate (b, K)); returns (stats, loglik (b,)).

    Laid out (b, K, N), components before rows: the sums over K (the log-sum-exp) are then adds of whole rows
    of N, where over a trailing axis of K = 2 to 4 numpy spends its time per row (3x the E-step's time on the
    earthquakes' bootstrap); the same numbers, element by element, as over (b, N, K)."""
    counts, weights = data.select(rows)
    with np.errstate(divide="ignore"):
        log_w = np.log(params.w)
    x = np.asarray(counts, dtype=float)[:, None, :]  # (1 or b, 1, N)
    rate = np.asarray(params.rate, dtype=float)[:, :, None]  # (b, K, 1)
    with np.errstate(divide="ignore"):
        log_joint = log_w[:, :, None] + (xlogy(x, rate) - rate - gammaln(x + 1.0))  # (b, K, N), as log_poisson
    log_norm = logsumexp(log_joint, axis=1, keepdims=True)
    resp = np.exp(log_joint - log_norm)
    log_norm = log_norm[:, 0, :]
    if weights is not None:
        resp = resp * weights[:, None, :]
        # A row not drawn adds nothing, also where its likelihood is 0 (0 x -inf).
        log_norm = np.where(weights > 0, weights * log_norm, 0.0)
    total = np.matmul(resp, np.broadcast_to(x[:, 0, :, None], (resp.shape[0], resp.shape[2], 1)))[..., 0]
    return BatchedPoissonStats(resp.sum(axis=2), total), log_norm.sum(axis=1)


def batched_m_step(model: PoissonMixture, stats: BatchedPoissonStats, params: PoissonParams, rows, iteration):
    """:func:`m_step` of b fits; returns (params, slack 0, errors None: it cannot fail)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(stats.n > 0, stats.total / stats.n, params.rate)
    return PoissonParams(stats.n / stats.n.sum(axis=1, keepdims=True), rate), 0.0, None


def fit_batched(model: PoissonMixture, data: CountSets, init, n_fits: int, **options) -> BatchedEMFit:
    """Soft EM of ``n_fits`` fits at once, each the same fit as :func:`fit` of its data from its start;
    ``options`` as :func:`emvsbayes.em.fit_em_batched`.

    ``init`` is one :class:`PoissonParams` all fits start from (bootstrap replicates), or a sequence of
    ``n_fits`` of them (restarts of one data set).
    """
    inits = [init] * n_fits if isinstance(init, PoissonParams) else list(init)
    if len(inits) != n_fits:
        raise ValueError(f"expected {n_fits} starting points, got {len(inits)}")
    for one in {id(one): one for one in inits}.values():
        model.validate_params(one)
    start = PoissonParams(np.stack([one.w for one in inits]), np.stack([one.rate for one in inits]))
    return fit_em_batched(partial(batched_e_step, model, data), partial(batched_m_step, model), start, **options)
