"""EM for the Gaussian mixture, four covariance structures, soft and hard: the statistics and the steps.

- **Standardised coordinates.** The data are centred and scaled once (:func:`prepare`), the steps work
  on ``z = (x - centre) / scale`` and parameters cross the boundary in original units. Second moments
  computed as E[z z^T] - mu mu^T lose about ``|mean|^2 / variance`` of their digits; for data at 1e6
  with sd 1 that is every digit in the original units and none in standardised ones. ``scale`` is one
  number per feature, except for ``spherical``, whose structure survives only a common scale.
- **Sufficient statistics** (:class:`GaussianStats`): the expected counts n_k and the
  responsibility-weighted sums of the structure's design ``[1, z, second-order terms]``
  (:mod:`emvsbayes.gaussian.structures`), in standardised coordinates.
- **The E-step** (:func:`e_step`, :func:`hard_e_step`): responsibilities r_ik = P(k | x_i) and those
  sums, with the objective (observed-data log-likelihood for soft EM, classification log-likelihood
  for hard EM). One pass over the data, computed by :mod:`emvsbayes.gaussian.estep_fast` (blocks,
  threads, scores relative to one component); its tests hold it to the plain definition.
- **The M-step** (:func:`m_step`): w_k = n_k / N, mu_k = sum_z_k / n_k, and the covariance, its
  ``reg_covar`` and its precision-Cholesky factor from the structure's object.
- **The slack** (:func:`regularisation_slack`): what ``reg_covar`` costs the M-step, the amount by which
  EM's objective may fall.

:func:`fit` binds the steps to the data for the generic loop :func:`emvsbayes.em.fit_em`;
:func:`fit_batched` (from :mod:`emvsbayes.gaussian.batched`) runs many small fits at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy.special import logsumexp

from emvsbayes.em import EMFit, EMRestarts, fit_em
from emvsbayes.errors import DegenerateFitError
from emvsbayes.gaussian import estep_fast as fast
from emvsbayes.gaussian.batched import (
    BatchedGaussianStats,
    GaussianSets,
    batched_e_step,
    batched_m_step,
    fit_batched,
)
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, as_data_matrix
from emvsbayes.gaussian.structures import PIVOT_RTOL, STRUCTURES


# Keep every iteration's statistics in the trace only while they are small: each holds N x K
# responsibilities.
KEEP_STATS_MAX = 200_000


# --------------------------------------------------------------------------------------------------
# Data and statistics records


@dataclass(frozen=True, slots=True)
class Frame:
    """The affine map between original and standardised coordinates: ``x = centre + scale * z``.

    ``centre`` (D,), ``scale`` (D,) (all entries equal for ``spherical``).
    """

    centre: np.ndarray
    scale: np.ndarray

    def params_to_z(self, params: GaussianParams) -> tuple[np.ndarray, np.ndarray]:
        """(mu_z (K, D), prec_chol_z) of ``params`` in standardised coordinates.

        With Sigma_z = S^-1 Sigma S^-1 (S = diag(scale)), the precision factor becomes S U: row j of a
        triangular factor (or entry j of a diagonal one) is multiplied by scale_j.
        """
        mu_z = (params.mu - self.centre) / self.scale
        return mu_z, STRUCTURES[params.covariance_type].scale_factor(params.prec_chol, self.scale)

    def params_from_z(self, w, mu_z, prec_chol_z, covariance_type: str) -> GaussianParams:
        mu = self.centre + self.scale * mu_z
        return GaussianParams(w, mu, STRUCTURES[covariance_type].scale_factor(prec_chol_z, 1.0 / self.scale),
                              covariance_type)

    @property
    def log_jacobian(self) -> float:
        """sum_j log scale_j: log p_x(x) = log p_z(z) - this."""
        return float(np.log(self.scale).sum())


@dataclass(frozen=True, slots=True)
class GaussianData:
    """Data prepared for the steps.

    ``z_t`` (D, N): standardised data, feature-major; ``frame``: the map back to original units;
    ``zz_total`` (D, D): sum_i z_i z_i^T (the tied M-step needs it and it never changes);
    ``chunk_size``: rows per block.
    """

    z_t: np.ndarray
    frame: Frame
    zz_total: np.ndarray
    chunk_size: int

    @property
    def n_samples(self) -> int:
        return self.z_t.shape[1]

    @property
    def n_features(self) -> int:
        return self.z_t.shape[0]


def prepare(model: GaussianMixtureModel, x, *, frame: Frame | None = None, chunk_size: int | None = None) -> GaussianData:
    """Standardise ``x`` (N,) or (N, D) for ``model``'s structure (or with a given ``frame``)."""
    x = as_data_matrix(x)
    # Feature-major from the start: one transposing copy, which then becomes z in place, and every
    # reduction runs along contiguous rows (means and deviations down the short rows of (N, D) took
    # twice as long as an E-step at N = 1e5).
    z_t = fast.transposed(x)
    if frame is None:
        centre = z_t.mean(axis=1)
        z_t -= centre[:, None]
        centred_second = z_t @ z_t.T
        scale = STRUCTURES[model.covariance_type].frame_scale(np.diagonal(centred_second) / z_t.shape[1])
        frame = Frame(centre, scale)
        z_t /= scale[:, None]
        zz_total = centred_second / np.outer(scale, scale)
    else:
        z_t -= frame.centre[:, None]
        z_t /= frame.scale[:, None]
        zz_total = z_t @ z_t.T
    if chunk_size is None:
        chunk_size = fast.chunk_size_for(model.covariance_type, x.shape[0], x.shape[1], model.n_components)
    return GaussianData(z_t, frame, zz_total, int(chunk_size))


@dataclass(frozen=True, slots=True)
class GaussianStats:
    """Expected complete-data sufficient statistics, in the standardised coordinates of ``frame``.

    ``log_resp`` (N, K): log P(z_i = k | x_i, params) (hard EM: 0 for the chosen component, -inf
    elsewhere); ``nk`` (K,): expected counts; ``sum_z`` (K, D): weighted sums of z; ``sum_zz``: weighted
    second moments shaped by structure: full (K, D, D) sum_i r_ik z_i z_i^T, tied (D, D) sum_i z_i z_i^T
    over all points, diag (K, D) sum_i r_ik z_i^2, spherical (K,) sum_i r_ik |z_i|^2.

    ``shift`` (K, D): the point each component's moments are taken about: ``sum_z`` and ``sum_zz`` are
    moments of z - shift_k (except tied's total). It is 0 except for a component so narrow that raw
    moments would cancel (see :func:`emvsbayes.gaussian.estep_fast.shifted`), where it is the component's current mean.

    For large data (N K above ``KEEP_STATS_MAX``) the E-step does not keep the N x K log
    responsibilities: the M-step needs only the sums, and writing N K numbers per iteration that no one
    reads was a quarter of an iteration's time. ``log_resp`` then recomputes them (one more pass over
    the data, with the same parameters) on first access and keeps them.
    """

    nk: np.ndarray
    sum_z: np.ndarray
    sum_zz: np.ndarray
    frame: Frame
    shift: np.ndarray
    kept_log_resp: np.ndarray | None = field(default=None, repr=False)
    recompute_log_resp: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def log_resp(self) -> np.ndarray:
        """log P(z_i = k | x_i, params), (N, K)."""
        if self.kept_log_resp is None:
            # Frozen record, filled once: the value is fixed by the record's own parameters and data.
            object.__setattr__(self, "kept_log_resp", self.recompute_log_resp())
        return self.kept_log_resp

    @property
    def resp(self) -> np.ndarray:
        return np.exp(self.log_resp)

    @property
    def labels(self) -> np.ndarray:
        """Most responsible component of each point (N,)."""
        return np.argmax(self.log_resp, axis=1)

    @property
    def sum_x(self) -> np.ndarray:
        """Weighted sums of x in original units (K, D)."""
        sum_z = self.sum_z + self.nk[:, None] * self.shift
        return self.nk[:, None] * self.frame.centre + self.frame.scale * sum_z


# --------------------------------------------------------------------------------------------------
# The E-step


def _stats(model, data, log_resp_t, sums, shift, recompute=None) -> GaussianStats:
    d = data.n_features
    second = STRUCTURES[model.covariance_type].second_moments(sums, data.zz_total)
    return GaussianStats(sums[:, 0].copy(), sums[:, 1 : 1 + d].copy(), second, data.frame, shift,
                         kept_log_resp=None if log_resp_t is None else log_resp_t.T, recompute_log_resp=recompute)


def _e_step(
    assign, model: GaussianMixtureModel, data: GaussianData, params: GaussianParams, keep_log_resp: bool | None = None
) -> tuple[GaussianStats, float]:
    """The E-step with ``assign`` turning each point's scores into responsibilities (soft or hard)."""
    if keep_log_resp is None:
        keep_log_resp = data.n_samples * params.w.shape[0] <= KEEP_STATS_MAX
    sums, shift, log_resp_t, objective_z = fast.weighted_sums(assign, model, data, params, keep_log_resp)
    # Back to the density of x: log p_x = log p_z - sum_j log scale_j for each point.
    total = objective_z - data.n_samples * data.frame.log_jacobian
    recompute = None if keep_log_resp else partial(_log_resp_again, assign, model, data, params)
    return _stats(model, data, log_resp_t, sums.T, shift, recompute), total


def _log_resp_again(assign, model, data, params) -> np.ndarray:
    return _e_step(assign, model, data, params, keep_log_resp=True)[0].log_resp


def e_step(model: GaussianMixtureModel, data: GaussianData, params: GaussianParams) -> tuple[GaussianStats, float]:
    """Soft E-step: responsibilities r_ik = w_k N(x_i | k) / sum_j w_j N(x_i | j) and the weighted sums in
    one pass; returns the observed-data log-likelihood sum_i log sum_k w_k N(x_i | k) at ``params``
    (original units)."""
    return _e_step(fast.soft_assign, model, data, params)


def hard_e_step(model: GaussianMixtureModel, data: GaussianData, params: GaussianParams) -> tuple[GaussianStats, float]:
    """Classification E-step: each point wholly to its most probable component; returns the
    classification log-likelihood sum_i max_k log(w_k p_k(x_i)), the quantity hard EM never decreases."""
    return _e_step(fast.hard_assign, model, data, params)


E_STEPS = {"soft": e_step, "hard": hard_e_step}


def stats_from_resp(model: GaussianMixtureModel, data: GaussianData, resp: np.ndarray) -> GaussianStats:
    """Sufficient statistics for given responsibilities ``resp`` (N, K) (an initialisation)."""
    resp = np.asarray(resp, dtype=float)
    structure = STRUCTURES[model.covariance_type]
    d, n = data.n_features, data.n_samples
    buffer = np.empty((structure.n_design(d), min(data.chunk_size, n)))
    buffer[0] = 1.0
    sums = np.zeros((resp.shape[1], buffer.shape[0]))
    for start in range(0, n, data.chunk_size):
        rows = slice(start, min(start + data.chunk_size, n))
        phi = buffer[:, : rows.stop - start]
        structure.design(data.z_t[:, rows], phi)
        sums += resp[rows].T @ phi.T
    with np.errstate(divide="ignore"):
        log_resp = np.log(resp)
    shift = np.zeros((resp.shape[1], d))
    return _stats(model, data, np.ascontiguousarray(log_resp.T), sums, shift)


# --------------------------------------------------------------------------------------------------
# The M-step and its slack


def m_step(
    model: GaussianMixtureModel,
    stats: GaussianStats,
    params: GaussianParams | None,
    *,
    iteration: int | None = None,
) -> GaussianParams:
    """Weights, means and covariances that maximise the expected complete-data log-likelihood.

    w_k = n_k / N; mu_k = sum_z_k / n_k; Sigma_k from the second moments, plus ``reg_covar`` on the
    diagonal in original units. A component with n_k = 0 (possible in hard EM) keeps its mean and
    covariance from ``params`` and gets weight 0. ``iteration`` only goes into the error message.

    Raises
    ------
    DegenerateFitError
        If a covariance is not numerically positive definite.
    """
    structure = STRUCTURES[model.covariance_type]
    nk = stats.nk
    empty = nk <= 0
    if params is None and np.any(empty):
        raise DegenerateFitError(
            f"component {int(np.argmax(empty))} starts with no points: use fewer components or another init_params"
        )
    safe_nk = np.where(empty, 1.0, nk)
    offset = stats.sum_z / safe_nk[:, None]  # the mean relative to the shift
    cov = structure.covariance(safe_nk, offset, stats.sum_zz)
    mu_z = stats.shift + offset
    second = structure.per_unit_weight(stats.sum_zz, safe_nk)
    cov, second = structure.empty_as_identity(cov, second, empty)
    reg_z = structure.reg_z(model.reg_covar, stats.frame.scale)
    u_z = structure.factorise(cov, second, reg_z, model.reg_covar, iteration)
    new = stats.frame.params_from_z(nk / nk.sum(), mu_z, u_z, model.covariance_type)
    if not np.any(empty):
        return new
    return GaussianParams(
        new.w,
        np.where(empty[:, None], params.mu, new.mu),
        structure.keep_empty(new.prec_chol, params.prec_chol, empty),
        model.covariance_type,
    )


def regularisation_slack(model: GaussianMixtureModel, stats: GaussianStats) -> float:
    """Expected complete-data log-likelihood the M-step gives up by adding ``reg_covar``.

    With S_k the exact covariance update and R the regularisation (both in the scaled frame, where
    Q differences are the same as in original units), component k loses
    n_k / 2 [log|S_k + R| - log|S_k| + tr((S_k + R)^-1 S_k) - D] >= 0 (for spherical, D times the
    scalar form). EM's monotonicity then holds up to this amount; infinite when S_k is singular
    (fewer points than dimensions), where the unregularised step has no maximiser at all.
    """
    if model.reg_covar == 0:
        return 0.0
    structure = STRUCTURES[model.covariance_type]
    nk = np.where(stats.nk > 0, stats.nk, 0.0)
    safe_nk = np.where(nk > 0, nk, 1.0)
    cov = structure.covariance(safe_nk, stats.sum_z / safe_nk[:, None], stats.sum_zz)
    reg = structure.reg_z(model.reg_covar, stats.frame.scale)
    return structure.slack(nk, cov, reg, stats.sum_z.shape[1])


def _numbered_m_step(model: GaussianMixtureModel) -> Callable[[GaussianStats, GaussianParams], GaussianParams]:
    """The M-step for one run, counting its calls so a degenerate covariance names its iteration."""
    counter = itertools.count(1)

    def step(stats: GaussianStats, params: GaussianParams) -> GaussianParams:
        return m_step(model, stats, params, iteration=next(counter))

    return step


def params_from_resp(model: GaussianMixtureModel, x, resp: np.ndarray) -> GaussianParams:
    """The M-step applied to given responsibilities ``resp`` (N, K) (how inits become parameters)."""
    data = prepare(model, x)
    return m_step(model, stats_from_resp(model, data, resp), None, iteration=0)


# --------------------------------------------------------------------------------------------------
# Fitting and prediction


def _options(data: GaussianData, n_components: int, options: dict) -> dict:
    options = dict(options)
    options.setdefault("keep_stats", data.n_samples * n_components <= KEEP_STATS_MAX)
    return options


def fit(
    model: GaussianMixtureModel,
    x,
    init: GaussianParams,
    *,
    kind: str = "soft",
    chunk_size: int | None = None,
    **options,
) -> EMFit:
    """EM for the Gaussian mixture from ``init``; ``kind`` is ``"soft"`` or ``"hard"`` (classification EM).

    Parameters
    ----------
    model
        K, structure and ``reg_covar``.
    x
        Data (N,) or (N, D).
    init
        Starting parameters in original units.
    options
        Passed to :func:`emvsbayes.em.fit_em` (``tol``, ``param_tol``, ``max_iter``, ``min_iter``,
        ``keep_stats``; the latter defaults to N K <= ``KEEP_STATS_MAX``).
    """
    model.validate_params(init)
    with fast.ONE_BLAS_THREAD:
        data = prepare(model, x, chunk_size=chunk_size)
        return fit_em(
            partial(E_STEPS[kind], model, data), _numbered_m_step(model), init,
            m_step_slack=partial(regularisation_slack, model), **_options(data, model.n_components, options)
        )


def fit_restarts(
    model: GaussianMixtureModel,
    x,
    inits,
    *,
    kind: str = "soft",
    chunk_size: int | None = None,
    **options,
) -> EMRestarts:
    """:func:`fit` from each of ``inits``; every outcome is kept."""
    inits = list(inits)
    for init in inits:
        model.validate_params(init)
    with fast.ONE_BLAS_THREAD:  # see fit
        data = prepare(model, x, chunk_size=chunk_size)
        options = _options(data, model.n_components, options)
        e = partial(E_STEPS[kind], model, data)
        # A fresh iteration counter per restart, so error messages name the right iteration.
        slack = partial(regularisation_slack, model)
        fits = tuple(fit_em(e, _numbered_m_step(model), init, m_step_slack=slack, **options) for init in inits)
    return EMRestarts(fits)


def log_joint(model: GaussianMixtureModel, params: GaussianParams, x) -> np.ndarray:
    """log w_k + log N(x_i | mu_k, Sigma_k), (N, K), by the fast chunked route."""
    data = prepare(model, x)
    out = np.empty((params.w.shape[0], data.n_samples))
    for rows, _, _, block in fast.chunks(model, data, fast.scoring_for(model, data, params)):
        out[:, rows] = block
    return (out - data.frame.log_jacobian).T


def score_samples(model: GaussianMixtureModel, params: GaussianParams, x) -> np.ndarray:
    """log p(x_i) (N,)."""
    data = prepare(model, x)
    out = np.empty(data.n_samples)
    for rows, _, _, block in fast.chunks(model, data, fast.scoring_for(model, data, params)):
        out[rows] = logsumexp(block, axis=0)
    return out - data.frame.log_jacobian


def log_resp(model: GaussianMixtureModel, params: GaussianParams, x) -> np.ndarray:
    """log P(component k | x_i), (N, K)."""
    joint = log_joint(model, params, x)
    return joint - logsumexp(joint, axis=1, keepdims=True)


__all__ = [
    "E_STEPS",
    "KEEP_STATS_MAX",
    "PIVOT_RTOL",
    "BatchedGaussianStats",
    "Frame",
    "GaussianData",
    "GaussianSets",
    "GaussianStats",
    "batched_e_step",
    "batched_m_step",
    "e_step",
    "fit",
    "fit_batched",
    "fit_restarts",
    "hard_e_step",
    "log_joint",
    "log_resp",
    "m_step",
    "params_from_resp",
    "prepare",
    "regularisation_slack",
    "score_samples",
    "stats_from_resp",
]
