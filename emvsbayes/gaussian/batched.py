"""Many small Gaussian-mixture fits at once (bootstrap replicates, restarts): the EM steps over a leading
replicate axis.

For data of a few hundred rows one fit at a time spends its time in per-call overhead, so these steps
take B fits in each array operation, written directly (sklearn's two-pass moments about each
component's new mean, (x - mu_k) U_k for the log-density) rather than through the blocked design
products of :mod:`emvsbayes.gaussian.estep_fast`, which are built for one large data set. The answers
are the same fits to rounding (tests compare them fit by fit with :func:`emvsbayes.gaussian.em.fit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from emvsbayes.em import fit_em_batched
from emvsbayes.gaussian import estep_fast
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams
from emvsbayes.gaussian.structures import PIVOT_RTOL, degenerate_error, slack_matrix, slack_scalar

if TYPE_CHECKING:  # annotations only: em imports this module
    from emvsbayes.gaussian.em import Frame

LOG_2PI = math.log(2 * math.pi)

@dataclass(frozen=True, slots=True)
class GaussianSets:
    """The data of B fits run together (:func:`fit_batched`).

    ``x`` (R, N, D) with R = B (one data set per fit, e.g. simulated) or R = 1 (shared); ``counts``
    (B, N) or None: how many times fit b counts each row (a resample drawn with replacement is the
    original rows with these multiplicities); ``frame``: the original data's standardising frame, in
    which the degenerate-covariance test measures variances (as :func:`emvsbayes.gaussian.em.m_step` does in its frame).
    """

    x: np.ndarray
    counts: np.ndarray | None
    frame: Frame

    def select(self, rows) -> tuple[np.ndarray, np.ndarray | None]:
        x = self.x if self.x.shape[0] == 1 else self.x[rows]
        return x, None if self.counts is None else self.counts[rows]


@dataclass(frozen=True, slots=True)
class BatchedGaussianStats:
    """``resp`` (b, K, N): responsibilities times the rows' counts (what the M-step sums)."""

    resp: np.ndarray


def _batched_whiten(covariance_type: str, diff: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(x - mu_k) U_k for differences (b, K, N, D) and factors with a leading b axis."""
    b, k, _, d = diff.shape
    if covariance_type == "full":
        return diff * u.reshape(b, k, 1, 1) if d == 1 else np.matmul(diff, u)
    if covariance_type == "tied":
        return diff * u.reshape(b, 1, 1, 1) if d == 1 else np.matmul(diff, u[:, None])
    if covariance_type == "diag":
        return diff * u[:, :, None, :]
    return diff * u[:, :, None, None]


def _batched_log_det(covariance_type: str, u: np.ndarray, k: int, d: int) -> np.ndarray:
    """log det U_k, (b, K)."""
    if covariance_type == "full":
        return np.log(np.diagonal(u, axis1=-2, axis2=-1)).sum(axis=-1)
    if covariance_type == "tied":
        return np.repeat(np.log(np.diagonal(u, axis1=-2, axis2=-1)).sum(axis=-1)[:, None], k, axis=1)
    if covariance_type == "diag":
        return np.log(u).sum(axis=-1)
    return d * np.log(u)


def batched_e_step(model: GaussianMixtureModel, data: GaussianSets, params: GaussianParams, rows):
    """:func:`emvsbayes.gaussian.em.e_step` of the fits ``rows`` at ``params`` (each array field with a leading b axis);
    returns (:class:`BatchedGaussianStats`, observed-data log-likelihood (b,))."""
    x, counts = data.select(rows)
    k, d = params.mu.shape[1:]
    diff = x[:, None, :, :] - params.mu[:, :, None, :]
    white = _batched_whiten(model.covariance_type, diff, params.prec_chol)
    squared = white[..., 0] ** 2 if d == 1 else np.einsum("bknd,bknd->bkn", white, white)
    if params.w.all():
        log_w = np.log(params.w)
    else:
        with np.errstate(divide="ignore"):
            log_w = np.log(params.w)
    constant = log_w + _batched_log_det(model.covariance_type, params.prec_chol, k, d) - 0.5 * d * LOG_2PI
    log_joint = constant[:, :, None] - 0.5 * squared
    top = np.max(log_joint, axis=1, keepdims=True)
    scaled = np.exp(log_joint - top)
    total = scaled.sum(axis=1, keepdims=True)
    resp = scaled / total
    log_norm = (top + np.log(total))[:, 0, :]
    if counts is not None:
        resp *= counts[:, None, :]
        log_norm = counts * log_norm
    return BatchedGaussianStats(resp), log_norm.sum(axis=1)


def _batched_slack(model: GaussianMixtureModel, nk: np.ndarray, cov: np.ndarray, d: int) -> np.ndarray:
    """:func:`emvsbayes.gaussian.em.regularisation_slack` of b fits, (b,), from the unregularised covariances (original
    units: the slack does not depend on the frame)."""
    if model.reg_covar == 0:
        return np.zeros(nk.shape[0])
    reg = model.reg_covar
    structure = model.covariance_type
    if structure in ("full", "tied") and d > 1:
        lost = slack_matrix(cov, np.full(d, reg))
        return (nk * lost).sum(axis=1) / 2 if structure == "full" else nk.sum(axis=1) * lost / 2
    if structure == "tied":  # 1-D: one variance (b, 1, 1)
        return nk.sum(axis=1) * slack_scalar(cov[:, 0, 0], reg) / 2
    if structure == "full":  # 1-D: (b, K, 1, 1)
        return (nk * slack_scalar(cov[..., 0, 0], reg)).sum(axis=1) / 2
    if structure == "diag":
        return (nk[:, :, None] * slack_scalar(cov, reg)).sum(axis=(1, 2)) / 2
    return (nk * d * slack_scalar(cov, reg)).sum(axis=1) / 2


def _batched_cholesky(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower factors, failed (...,)) of a stack of matrices (..., D, D); failed ones get the identity."""
    try:
        return np.linalg.cholesky(cov), np.zeros(cov.shape[:-2], dtype=bool)
    except np.linalg.LinAlgError:
        pass
    lower = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape).copy()
    failed = np.zeros(cov.shape[:-2], dtype=bool)
    for index in np.ndindex(*cov.shape[:-2]):
        try:
            lower[index] = np.linalg.cholesky(cov[index])
        except np.linalg.LinAlgError:
            failed[index] = True
    return lower, failed


def batched_m_step(model: GaussianMixtureModel, data: GaussianSets, stats: BatchedGaussianStats,
                   params: GaussianParams, rows, iteration: int):
    """:func:`emvsbayes.gaussian.em.m_step` of b fits; returns (params, the regularisation slack (b,),
    errors): ``errors`` None when every step worked, else (b,) with the
    :class:`emvsbayes.errors.DegenerateFitError` ``m_step`` would raise for fit i (``""`` for the others)."""
    structure = model.covariance_type
    x, _ = data.select(rows)
    resp = stats.resp
    b, k, _ = resp.shape
    d = x.shape[2]
    nk = resp.sum(axis=2)
    empty = nk <= 0
    # Only hard EM empties a component, but the steps keep fit_em's rule for it; the np.where calls it
    # needs are skipped when none is empty (a few microseconds each, in a loop of thousands of steps).
    any_empty = bool(empty.any())
    safe_nk = np.where(empty, 1.0, nk) if any_empty else nk
    used_nk = np.where(empty, 0.0, nk) if any_empty else nk
    mu = np.matmul(resp, x) / safe_nk[:, :, None]
    diff = x[:, None, :, :] - mu[:, :, None, :]
    weighted = resp[..., None] * diff
    scale, centre = data.frame.scale, data.frame.centre
    # Second moments about the frame's centre in its units, per component and feature: the scale of
    # the degenerate-covariance test (the pivot of a variance against the moment it came from).
    if structure in ("full", "tied") and d > 1:
        scatter = np.matmul(np.swapaxes(weighted, 2, 3), diff)  # (b, K, D, D)
        spread = np.diagonal(scatter, axis1=2, axis2=3)
    else:
        spread = np.einsum("bknd,bknd->bkd", weighted, diff)  # (b, K, D)
        scatter = spread[..., None] if d == 1 else None
    if structure == "tied":
        second = (spread.sum(axis=1) + np.einsum("bk,bkd->bd", nk, np.square(mu - centre))) / nk.sum(axis=1)[:, None]
        second = second / np.square(scale)
    else:
        second = (spread / safe_nk[:, :, None] + np.square(mu - centre)) / np.square(scale)
    if structure in ("full", "tied"):
        if structure == "full":
            cov = scatter / safe_nk[:, :, None, None]
            if any_empty:
                cov = np.where(empty[:, :, None, None], np.eye(d), cov)
                second = np.where(empty[:, :, None], 1.0, second)
        else:
            cov = scatter.sum(axis=1) / nk.sum(axis=1)[:, None, None]
        slack = _batched_slack(model, used_nk, cov, d)
        if d == 1:  # the factor of a variance is its square root
            var = cov + model.reg_covar
            bad = (var[..., 0] / np.square(scale) <= PIVOT_RTOL * np.maximum(second, 1.0))[..., 0]
            u = 1.0 / np.sqrt(np.where(bad[..., None, None], 1.0, var))
        else:
            lower, bad = _batched_cholesky(cov + model.reg_covar * np.eye(d))
            pivots = np.square(np.diagonal(lower, axis1=-2, axis2=-1)) / np.square(scale)
            bad = bad | np.any(pivots <= PIVOT_RTOL * np.maximum(second, 1.0), axis=-1)
            lower = np.where(bad[..., None, None], np.eye(d), lower)
            u = np.swapaxes(np.linalg.inv(lower), -1, -2)
    else:
        if structure == "diag":
            cov = spread / safe_nk[:, :, None]
            if any_empty:
                cov = np.where(empty[:, :, None], 1.0, cov)
                second = np.where(empty[:, :, None], 1.0, second)
            var = cov + model.reg_covar
            bad_entries = var / np.square(scale) <= PIVOT_RTOL * np.maximum(second, 1.0)
        else:
            cov = spread.sum(axis=2) / (safe_nk * d)
            second = second.sum(axis=2)
            if any_empty:
                cov = np.where(empty, 1.0, cov)
                second = np.where(empty, 1.0, second)
            var = cov + model.reg_covar
            bad_entries = var / np.square(scale[0]) <= PIVOT_RTOL * np.maximum(second, 1.0)
        slack = _batched_slack(model, used_nk, cov, d)
        bad = bad_entries.reshape(b, k, -1).any(axis=2)
        u = 1.0 / np.sqrt(np.where(bad_entries, 1.0, var))
    errors = None
    if bad.any():
        errors = np.full(b, "", dtype=object)
        for i in np.flatnonzero(bad.reshape(b, -1).any(axis=1)):
            which = "the tied" if structure == "tied" else f"component {int(np.argmax(bad[i]))}'s"
            error = degenerate_error(model.reg_covar, which, iteration)
            errors[i] = f"{type(error).__name__}: {' '.join(str(error).split())}"
    w = nk / nk.sum(axis=1, keepdims=True)
    if any_empty:
        mu = np.where(empty[:, :, None], params.mu, mu)
        if structure != "tied":
            keep = empty.reshape(empty.shape + (1,) * (u.ndim - 2))
            u = np.where(keep, params.prec_chol, u)
    return GaussianParams(w, mu, u, structure), slack, errors


def fit_batched(model: GaussianMixtureModel, data: GaussianSets, init, n_fits: int, **options):
    """Soft EM of ``n_fits`` fits at once, each the same fit as :func:`emvsbayes.gaussian.em.fit` of its data
    from its start (to rounding); ``options`` as :func:`emvsbayes.em.fit_em_batched`.

    ``data`` holds one data set per fit or one shared (:class:`GaussianSets`); ``init`` is one
    :class:`GaussianParams` all fits start from (bootstrap replicates), or a sequence of ``n_fits``
    of them (restarts of one data set).

    Returns
    -------
    emvsbayes.em.BatchedEMFit
        ``params`` a :class:`GaussianParams` with a leading axis of length ``n_fits`` on each array.
    """
    inits = [init] * n_fits if isinstance(init, GaussianParams) else list(init)
    if len(inits) != n_fits:
        raise ValueError(f"expected {n_fits} starting points, got {len(inits)}")
    for one in {id(one): one for one in inits}.values():
        model.validate_params(one)
    start = GaussianParams(*(np.stack([getattr(one, name) for one in inits]) for name in ("w", "mu", "prec_chol")),
                           model.covariance_type)
    with estep_fast.ONE_BLAS_THREAD:
        return fit_em_batched(partial(batched_e_step, model, data), partial(batched_m_step, model, data), start,
                              **options)
