"""E-step and M-step of the coin mixture, soft and hard (classification) EM.

The statistics are what the lesson's table shows: per set, the responsibility of each coin; per coin,
the expected numbers of heads and tails it made and the expected number of sets it made.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.em import BatchedEMFit, EMFit, EMRestarts, fit_em, fit_em_batched, fit_em_restarts, logsumexp


@dataclass(frozen=True, slots=True)
class CoinStats:
    """Expected complete-data sufficient statistics.

    ``log_resp`` (N, K): log P(z_i = k | h_i, params) (for hard EM, 0 for the chosen coin, -inf elsewhere);
    ``heads``, ``tails`` (K,): expected heads and tails made by each coin; ``sets`` (K,): expected sets.
    """

    log_resp: np.ndarray
    heads: np.ndarray
    tails: np.ndarray
    sets: np.ndarray

    @property
    def resp(self) -> np.ndarray:
        return np.exp(self.log_resp)


def _stats_from_resp(log_resp, heads, tosses) -> CoinStats:
    resp = np.exp(log_resp)
    h = np.asarray(heads, dtype=float)
    t = np.asarray(tosses, dtype=float) - h
    return CoinStats(log_resp, resp.T @ h, resp.T @ t, resp.sum(axis=0))


def e_step(model: CoinMixture, heads, tosses, params: CoinParams) -> tuple[CoinStats, float]:
    """Soft E-step: responsibilities in log space; returns the observed-data log-likelihood at ``params``."""
    log_joint = model.log_joint(params, heads, tosses)
    log_norm = logsumexp(log_joint, axis=1, keepdims=True)
    return _stats_from_resp(log_joint - log_norm, heads, tosses), float(log_norm.sum())


def hard_e_step(model: CoinMixture, heads, tosses, params: CoinParams) -> tuple[CoinStats, float]:
    """Classification E-step: each set goes wholly to its most probable coin (ties to the lowest index).

    The objective returned is the classification log-likelihood sum_i max_k log(w_k p(h_i | theta_k)),
    the quantity hard EM never decreases.
    """
    log_joint = model.log_joint(params, heads, tosses)
    best = np.argmax(log_joint, axis=1)
    log_resp = np.full(log_joint.shape, -np.inf)
    log_resp[np.arange(len(best)), best] = 0.0
    return _stats_from_resp(log_resp, heads, tosses), float(log_joint[np.arange(len(best)), best].sum())


def m_step(model: CoinMixture, stats: CoinStats, params: CoinParams) -> CoinParams:
    """theta_k = expected heads / expected tosses of coin k; w_k = expected share of sets (or 1/K).

    A coin that was given no tosses keeps its current theta: its update is 0/0.
    """
    tosses = stats.heads + stats.tails
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.where(tosses > 0, stats.heads / tosses, params.theta)
    if model.weights == "equal":
        w = model.equal_weights
    else:
        w = stats.sets / stats.sets.sum()
    return CoinParams(theta, w)


E_STEPS = {"soft": e_step, "hard": hard_e_step}


def _check_start(model: CoinMixture, heads, tosses, init: CoinParams) -> None:
    """A start where the data have probability 0 (every coin at theta = 0 or 1 against a set with both
    heads and tails) has log-likelihood -inf and NaN responsibilities: EM cannot move from it."""
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) is the case checked for
        loglik = model.loglik(init, heads, tosses)
    if not np.isfinite(loglik):
        raise ValueError(f"the log-likelihood at the start theta = {np.asarray(init.theta).tolist()} is {loglik}: "
                         "the data are impossible there; start with theta strictly between 0 and 1")


def fit(model: CoinMixture, heads, tosses, init: CoinParams, *, kind: str = "soft", **options) -> EMFit:
    """EM for the coin mixture from ``init``; ``kind`` is ``"soft"`` or ``"hard"``."""
    model.validate_params(init)
    _check_start(model, heads, tosses, init)
    return fit_em(
        partial(E_STEPS[kind], model, heads, tosses), partial(m_step, model), init, **options
    )


def fit_restarts(model: CoinMixture, heads, tosses, inits, *, kind: str = "soft", **options) -> EMRestarts:
    for init in inits:
        model.validate_params(init)
        _check_start(model, heads, tosses, init)
    return fit_em_restarts(
        partial(E_STEPS[kind], model, heads, tosses), partial(m_step, model), inits, **options
    )


def random_inits(model: CoinMixture, n_init: int, rng: np.random.Generator) -> list[CoinParams]:
    """Starting points with theta drawn uniformly on (0.05, 0.95); weights equal (or Dirichlet(1) draws)."""
    inits = []
    for child in rng.spawn(n_init):
        theta = child.uniform(0.05, 0.95, size=model.n_components)
        w = model.equal_weights if model.weights == "equal" else child.dirichlet(np.ones(model.n_components))
        inits.append(CoinParams(theta, w))
    return inits


# --------------------------------------------------------------------------------------------------
# Many fits at once (bootstrap replicates): the same steps over a leading replicate axis


@dataclass(frozen=True, slots=True)
class CoinSets:
    """The data of B fits run together (:func:`fit_batched`).

    ``heads``, ``tosses`` (R, N) with R = B (one data set per fit, e.g. simulated) or R = 1 (shared by
    all fits), each on its own; ``counts`` (B, N) or None: how many times fit b counts each set (a resample
    drawn with replacement is its original sets with these multiplicities, so the weighted sums are
    the resample's sums).
    """

    heads: np.ndarray
    tosses: np.ndarray
    counts: np.ndarray | None = None

    def select(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(heads, tosses, counts) of the fits ``rows``; shared data stay one row."""
        heads = self.heads if self.heads.shape[0] == 1 else self.heads[rows]
        tosses = self.tosses if self.tosses.shape[0] == 1 else self.tosses[rows]
        return heads, tosses, None if self.counts is None else self.counts[rows]


@dataclass(frozen=True, slots=True)
class BatchedCoinStats:
    """:class:`CoinStats` of b fits without the responsibilities: ``heads``, ``tails``, ``sets`` (b, K)."""

    heads: np.ndarray
    tails: np.ndarray
    sets: np.ndarray


def batched_e_step(model: CoinMixture, data: CoinSets, params: CoinParams, rows) -> tuple[BatchedCoinStats, np.ndarray]:
    """:func:`e_step` of the fits ``rows`` at ``params`` (theta, w (b, K)); loglik (b,)."""
    heads, tosses, counts = data.select(rows)
    with np.errstate(divide="ignore"):
        log_w = np.log(params.w)
    log_joint = log_w[:, None, :] + model.log_component_likelihood(params.theta, heads, tosses)
    top = np.max(log_joint, axis=2, keepdims=True)
    # A set no coin can make (every component's likelihood 0: a resample's theta of 0 or 1 against a set not
    # drawn) has log_norm -inf and no responsibilities, not NaN (-inf - -inf) and a warning.
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        log_norm = top + np.log(np.sum(np.exp(log_joint - top), axis=2, keepdims=True))
    with np.errstate(invalid="ignore"):
        resp = np.where(np.isfinite(log_norm), np.exp(log_joint - log_norm), 0.0)
    log_norm = log_norm[..., 0]
    if counts is not None:
        resp *= counts[:, :, None]
        # A set not drawn adds nothing, also where its likelihood is 0 (0 x -inf).
        with np.errstate(invalid="ignore"):
            log_norm = np.where(counts > 0, counts * log_norm, 0.0)
    h = np.asarray(heads, dtype=float)
    resp_t = np.swapaxes(resp, 1, 2)
    heads_k = (resp_t @ h[:, :, None])[..., 0]
    tails_k = (resp_t @ (np.asarray(tosses, dtype=float) - h)[:, :, None])[..., 0]
    return BatchedCoinStats(heads_k, tails_k, resp.sum(axis=1)), log_norm.sum(axis=1)


def batched_m_step(model: CoinMixture, stats: BatchedCoinStats, params: CoinParams, rows, iteration):
    """:func:`m_step` of b fits; returns (params, slack 0, errors None: it cannot fail) as
    :func:`emvsbayes.em.fit_em_batched` asks."""
    tosses = stats.heads + stats.tails
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.where(tosses > 0, stats.heads / tosses, params.theta)
    if model.weights == "equal":
        w = np.broadcast_to(model.equal_weights, theta.shape)
    else:
        w = stats.sets / stats.sets.sum(axis=1, keepdims=True)
    return CoinParams(theta, w), 0.0, None


def fit_batched(model: CoinMixture, data: CoinSets, init, n_fits: int, **options) -> BatchedEMFit:
    """Soft EM of ``n_fits`` fits at once, each the same fit as :func:`fit` of its data from its start;
    ``options`` as :func:`emvsbayes.em.fit_em_batched`.

    ``data`` holds one data set per fit or one shared (:class:`CoinSets`); ``init`` is one
    :class:`CoinParams` all fits start from (bootstrap replicates), or a sequence of ``n_fits`` of
    them (restarts of one data set).
    """
    inits = [init] * n_fits if isinstance(init, CoinParams) else list(init)
    if len(inits) != n_fits:
        raise ValueError(f"expected {n_fits} starting points, got {len(inits)}")
    for one in {id(one): one for one in inits}.values():
        model.validate_params(one)
    start = CoinParams(np.stack([one.theta for one in inits]), np.stack([one.w for one in inits]))
    return fit_em_batched(partial(batched_e_step, model, data), partial(batched_m_step, model), start, **options)
