"""E-step and M-step of the Gaussian mixture for the four covariance structures, soft and hard EM.

How the work is laid out, and why:

- **Standardised coordinates.** The data are centred and scaled once (:func:`prepare`), the steps work
  on ``z = (x - centre) / scale`` and parameters cross the boundary in original units. Second moments
  computed as E[z z^T] - mu mu^T lose about ``|mean|^2 / variance`` of their digits; for data at 1e6
  with sd 1 that is every digit in the original units and none in standardised ones. ``scale`` is one
  number per feature, except for ``spherical``, whose structure survives only a common scale.
- **Quadratic features.** log(w_k N(z | mu_k, Sigma_k)) is a quadratic in z, so for a chunk of rows it
  is one matrix product of the design ``[1, z, z_i z_j (i <= j)]`` (F, n) with per-component
  coefficients (K, F); ``diag`` needs only ``[1, z, z^2]`` and ``spherical`` ``[1, z, |z|^2]``;
  ``tied`` shares its quadratic term, so it takes ``[1, z]`` plus one common ``|U^T z|^2``. The
  M-step's sufficient statistics are the responsibility-weighted sums of the same design, one more
  product ``resp (K, n) @ design.T``. Both happen in the E-step's single pass, so an iteration reads
  the data once and the M-step is O(K D^3).
- **Scores relative to component 0.** Responsibilities depend only on differences of log-joints, so
  where that is exact the product forms log-joint_k - log-joint_0 for k >= 1 (one row fewer, no shift
  by the largest when all are moderate) and component 0's log-joint is added back summed
  (:class:`_Scoring`).
- **Chunks, feature-major.** Data are held as (D, N) and processed in column blocks small enough to stay
  in cache: the peak memory beyond the data is the N x K responsibilities, and reductions over K run
  across contiguous rows instead of along short rows.
- **Threads.** Large data's blocks are spread over one thread per core, with BLAS held at one thread
  for the whole fit (:class:`_OneBlasThread`). Blocks are fixed by N and their sums added in block
  order, so the result is the same to the last bit whatever the number of threads.

The E-step returns :class:`GaussianStats` and the objective (observed-data log-likelihood for soft EM,
classification log-likelihood for hard EM); the M-step turns statistics into :class:`GaussianParams`.
:func:`fit` binds them to the data for the generic loop :func:`emvsbayes.em.fit_em`.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from threadpoolctl import ThreadpoolController

from emvsbayes.em import EMFit, EMRestarts, fit_em, fit_em_batched
from emvsbayes.errors import DegenerateFitError
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, as_data_matrix

LOG_2PI = math.log(2 * math.pi)

# log of a responsibility relative to the largest one below which it is flushed to zero (see
# _soft_assign); e^-700 ~ 1e-304, still a normal float after division by up to K terms.
_NEGLIGIBLE_LOG = -700.0

# Keep every iteration's statistics in the trace only while they are small: each holds N x K
# responsibilities.
KEEP_STATS_MAX = 200_000

_AVAILABLE_CORES = max(1, len(os.sched_getaffinity(0)))

# Rows per block are chosen so one block's design and (K, n) work arrays take about this many float64
# values (4 MB): large enough that the per-block Python overhead is a few percent, and that each numpy
# operation on a block takes 0.1 ms or more, which threads need: a thread waiting for the GIL is woken
# too late to catch another thread's shorter operations (measured: on blocks of 1e4 rows, two threads
# ran one after the other).
CHUNK_VALUES = 1 << 19

# The E-step runs on several threads only with at least this many blocks per thread. Data too small
# for two threads of large blocks get blocks half as large, nearer a core's L2 cache: at N = 1e5,
# D = 2, K = 3, on one thread, an iteration took 30% less than on two threads in large blocks. (A rule
# of N, D and K alone, never of the machine: blocks fix the result to the last bit.)
MIN_BLOCKS_PER_THREAD = 8

# A Cholesky pivot (a conditional variance in standardised units) smaller than this, relative to the
# second moment it was computed from, is rounding noise of E[z z^T] - mu mu^T, not a variance.
PIVOT_RTOL = 1000 * np.finfo(float).eps


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
        return mu_z, _SCALE_FACTOR[params.covariance_type](params.prec_chol, self.scale)

    def params_from_z(self, w, mu_z, prec_chol_z, covariance_type: str) -> GaussianParams:
        mu = self.centre + self.scale * mu_z
        return GaussianParams(w, mu, _SCALE_FACTOR[covariance_type](prec_chol_z, 1.0 / self.scale), covariance_type)

    @property
    def log_jacobian(self) -> float:
        """sum_j log scale_j: log p_x(x) = log p_z(z) - this."""
        return float(np.log(self.scale).sum())


_SCALE_FACTOR = {
    "full": lambda u, s: u * np.asarray(s)[:, None],
    "tied": lambda u, s: u * np.asarray(s)[:, None],
    "diag": lambda u, s: u * s,
    "spherical": lambda u, s: u * np.asarray(s).flat[0],
}


def _per_feature_scale(var: np.ndarray) -> np.ndarray:
    sd = np.sqrt(var)
    # A constant column has nothing to scale; leaving it at 1 keeps reg_covar as its variance.
    return np.where(sd > 0, sd, 1.0)


def _common_scale(var: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(var)))
    return np.full(var.shape[0], rms if rms > 0 else 1.0)


# The scale from the per-feature variances (D,). Spherical covariances stay spherical only under a
# common scale; the others survive any diagonal one.
_SCALES = {"full": _per_feature_scale, "tied": _per_feature_scale, "diag": _per_feature_scale, "spherical": _common_scale}


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
    z_t = _transposed(x)
    if frame is None:
        centre = z_t.mean(axis=1)
        z_t -= centre[:, None]
        centred_second = z_t @ z_t.T
        scale = _SCALES[model.covariance_type](np.diagonal(centred_second) / z_t.shape[1])
        frame = Frame(centre, scale)
        z_t /= scale[:, None]
        zz_total = centred_second / np.outer(scale, scale)
    else:
        z_t -= frame.centre[:, None]
        z_t /= frame.scale[:, None]
        zz_total = z_t @ z_t.T
    if chunk_size is None:
        n_design = _FORMS[model.covariance_type].n_design(x.shape[1])
        chunk_size = max(256, CHUNK_VALUES // (n_design + 3 * model.n_components + x.shape[1]))
        if x.shape[0] < 2 * MIN_BLOCKS_PER_THREAD * chunk_size:
            chunk_size = max(256, chunk_size // 2)
    return GaussianData(z_t, frame, zz_total, int(chunk_size))


# Rows per block of the transposing copy: numpy's own transposing copy strides through all of x for
# each feature; through blocks that stay in cache it is 4x faster at N = 1e6, D = 10.
TRANSPOSE_ROWS = 4096


def _transposed(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``x.T``."""
    out = np.empty(x.shape[::-1])
    for start in range(0, x.shape[0], TRANSPOSE_ROWS):
        out[:, start : start + TRANSPOSE_ROWS] = x[start : start + TRANSPOSE_ROWS].T
    return out


@dataclass(frozen=True, slots=True)
class GaussianStats:
    """Expected complete-data sufficient statistics, in the standardised coordinates of ``frame``.

    ``log_resp`` (N, K): log P(z_i = k | x_i, params) (hard EM: 0 for the chosen component, -inf
    elsewhere); ``nk`` (K,): expected counts; ``sum_z`` (K, D): weighted sums of z; ``sum_zz``: weighted
    second moments shaped by structure: full (K, D, D) sum_i r_ik z_i z_i^T, tied (D, D) sum_i z_i z_i^T
    over all points, diag (K, D) sum_i r_ik z_i^2, spherical (K,) sum_i r_ik |z_i|^2.

    ``shift`` (K, D): the point each component's moments are taken about: ``sum_z`` and ``sum_zz`` are
    moments of z - shift_k (except tied's total). It is 0 except for a component so narrow that raw
    moments would cancel (see ``_shifted``), where it is the component's current mean.

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
# The four structures


class _Form(NamedTuple):
    """What a covariance structure contributes to the shared E/M machinery.

    n_design(D) -> F; design(z (D, n), out (F, n)) fills rows 1.. (row 0 is ones);
    coefficients(log_w, mu_z, u_z) -> (coef (K, F), extra); log_joint(coef, extra, phi, z, out) -> (K, n)
    by the expanded quadratic; whiten(u, y (D, n), out (D, n)): U_k^T y for a component of the centred
    route (see :class:`_Exact`); centred_sums(y, r, work, out): the weighted sums (F - 1,) of design
    rows 1.. of y = z - shift_k for a shifted component (see ``_shifted``; None for tied, whose moments
    are never shifted); second_moments(sums (K, F), data) -> sum_zz;
    covariance(nk, mu_z, sum_zz) -> raw Sigma_z (before reg_covar); factorise(cov, second, reg_z, model,
    iteration) -> prec_chol_z.
    """

    n_design: Callable[[int], int]
    design: Callable[[np.ndarray, np.ndarray], None]
    coefficients: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, Any]]
    log_joint: Callable[[np.ndarray, Any, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    whiten: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
    centred_sums: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None] | None
    second_moments: Callable[[np.ndarray, GaussianData], np.ndarray]
    covariance: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    factorise: Callable[..., np.ndarray]


@functools.cache
def _upper_triangle(d: int) -> tuple[np.ndarray, np.ndarray]:
    """np.triu_indices(d), made once per D (read-only use)."""
    return np.triu_indices(d)


def _design_full(z: np.ndarray, out: np.ndarray) -> None:
    d = z.shape[0]
    out[1 : 1 + d] = z
    row = 1 + d
    # Upper triangle row by row, the order of np.triu_indices(d).
    for i in range(d):
        np.multiply(z[i], z[i:], out=out[row : row + d - i])
        row += d - i


def _design_linear(z: np.ndarray, out: np.ndarray) -> None:
    out[1:] = z


def _design_diag(z: np.ndarray, out: np.ndarray) -> None:
    d = z.shape[0]
    out[1 : 1 + d] = z
    np.square(z, out=out[1 + d :])


def _design_spherical(z: np.ndarray, out: np.ndarray) -> None:
    d = z.shape[0]
    out[1 : 1 + d] = z
    np.einsum("dn,dn->n", z, z, out=out[1 + d])


class _Exact(NamedTuple):
    """What the centred route needs for components too tight for the expanded quadratic.

    Expanding (z - mu)^T P (z - mu) into [1, z, z z^T] terms costs about eps * trace(P_z) * |z|^2 of
    absolute accuracy per point: nothing for components about as wide as the data, but a component
    collapsing onto a few points (trace(P_z) of 1e6 and more) would get log-densities wrong by 1e-9,
    enough for the log-likelihood to seem to fall. Those components (``tight``, usually none) are
    recomputed as base_k - 1/2 |U_k^T (z - mu_k)|^2. Per component: ``mu_z`` (K, D), ``u_z`` (K, ...) the
    precision factors as the structure's ``whiten`` takes them, ``base`` (K,) log w_k + log det U_k -
    D/2 log 2 pi.
    """

    tight: np.ndarray
    mu_z: np.ndarray
    u_z: np.ndarray
    base: np.ndarray


# trace(P_z) above which a component takes the centred route. The expansion's error per point is about
# 1e-15 x trace(P_z) for standardised data (measured), so this keeps it below about 1e-11: far below
# the log-likelihood's own rounding over N points and the loop's monotonicity test. A threshold of 1e3
# (errors below 1e-12) sent two of the eight components of the D = 10, K = 8 benchmark this route and
# took 1.6x the time per iteration.
TIGHT_TRACE = 1e4


def _exact(log_w, log_det, mu_z, factors, trace_prec) -> _Exact:
    base = log_w + log_det - 0.5 * mu_z.shape[1] * LOG_2PI
    tight = np.flatnonzero(trace_prec > TIGHT_TRACE)
    return _Exact(tight, mu_z, factors, base)


def _constant(log_w, log_det, mu_z, b) -> np.ndarray:
    # log w_k + log det U_k - D/2 log 2 pi - 1/2 mu_k^T P_k mu_k
    return log_w + log_det - 0.5 * mu_z.shape[1] * LOG_2PI - 0.5 * np.sum(mu_z * b, axis=1)


def _coefficients_full(log_w, mu_z, u):
    d = mu_z.shape[1]
    prec = u @ np.swapaxes(u, 1, 2)
    b = np.einsum("kij,kj->ki", prec, mu_z)
    log_det = np.log(np.diagonal(u, axis1=1, axis2=2)).sum(axis=1)
    iu, ju = _upper_triangle(d)
    # z^T P z = sum_i P_ii z_i^2 + 2 sum_{i<j} P_ij z_i z_j
    quad = -np.where(iu == ju, 0.5, 1.0) * prec[:, iu, ju]
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b, quad])
    # U_k^T, the left factor of the whitening product.
    return coef, _exact(log_w, log_det, mu_z, np.swapaxes(u, 1, 2), np.trace(prec, axis1=1, axis2=2))


def _coefficients_tied(log_w, mu_z, u):
    prec = u @ u.T
    b = mu_z @ prec
    log_det = np.log(np.diagonal(u)).sum()
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b])
    # U^T for every component: the shared factor.
    factors = np.broadcast_to(u.T, (len(log_w), *u.shape))
    return coef, _exact(log_w, log_det, mu_z, factors, np.full(len(log_w), np.trace(prec)))


def _coefficients_diag(log_w, mu_z, u):
    prec = np.square(u)
    b = prec * mu_z
    log_det = np.log(u).sum(axis=1)
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b, -0.5 * prec])
    return coef, _exact(log_w, log_det, mu_z, u[:, :, None], prec.sum(axis=1))


def _coefficients_spherical(log_w, mu_z, u):
    prec = np.square(u)
    b = prec[:, None] * mu_z
    log_det = mu_z.shape[1] * np.log(u)
    coef = np.column_stack([_constant(log_w, log_det, mu_z, b), b, -0.5 * prec])
    return coef, _exact(log_w, log_det, mu_z, u[:, None, None], mu_z.shape[1] * prec)


# U_k^T y for y = z - mu_k (D, n), into out (D, n), with a component's factor from _Exact.u_z: U_k^T
# (D, D) for full and tied, (D, 1) and (1, 1) for diag and spherical.
def _whiten_product(u, y, out):
    np.matmul(u, y, out=out)


def _whiten_elementwise(u, y, out):
    np.multiply(y, u, out=out)


class _TightWork:
    """Scratch for the centred route, one set per thread (see :func:`_chunks` for why blocks allocate
    nothing): ``centred`` z - mu_k and ``product`` a product of it, both (D, width).

    One component at a time, not all T in each array operation: arrays (T, D, width) spill out of the
    core's cache, and measured, the centred route then took 1.6x as long on one thread and 1.2x on two.
    """

    def __init__(self, d: int, width: int):
        self.centred = np.empty((d, width))
        self.product = np.empty((d, width))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.centred[:, :n], self.product[:, :n]


def _recompute_tight(out, exact: _Exact, z, whiten, work: _TightWork) -> None:
    """Rows ``exact.tight`` of the log-joint ``out`` (K, n) as base_k - 1/2 |U_k^T (z - mu_k)|^2."""
    if not exact.tight.size:
        return
    centred, white = work.take(z.shape[1])
    minus_half = np.full(z.shape[0], -0.5)
    for k in exact.tight:
        np.subtract(z, exact.mu_z[k][:, None], out=centred)
        whiten(exact.u_z[k], centred, white)
        # -1/2 sum_d white_d^2 as a BLAS product (faster than einsum, and it releases the GIL).
        np.dot(minus_half, np.square(white, out=white), out=out[k])
        out[k] += exact.base[k]


def _log_joint_product(coef, exact, phi, z, out):
    return np.matmul(coef, phi, out=out)


def _log_joint_tied(coef, exact, phi, z, out):
    # The quadratic term -1/2 |U^T z|^2 is the same for every component: computed once, not K times.
    # (Every row of exact.u_z is the shared U^T, see _coefficients_tied.)
    white = exact.u_z[0] @ z
    np.matmul(coef, phi, out=out)
    out -= 0.5 * np.einsum("dn,dn->n", white, white)
    return out


# The weighted sums of design rows 1.. of a shifted component's centred points y = z - shift_k (D, n)
# with its responsibilities r (n,), into out (F - 1,); ``work`` is (D, n) scratch. Formed from y
# directly rather than from its design: for full at D = 10, two BLAS products instead of 55 quadratic
# design rows per component, 2.5x faster. np.dot, not np.matmul: numpy's matmul releases the GIL only
# for a large enough output, and measured, the E-step's threads took turns at these products.
def _centred_sums_full(y, r, work, out):
    d = y.shape[0]
    out[:d] = np.dot(y, r)
    np.multiply(y, r, out=work)
    out[d:] = np.dot(work, y.T)[_upper_triangle(d)]


def _centred_sums_diag(y, r, work, out):
    d = y.shape[0]
    out[:d] = np.dot(y, r)
    out[d:] = np.dot(np.square(y, out=work), r)


def _centred_sums_spherical(y, r, work, out):
    d = y.shape[0]
    out[:d] = np.dot(y, r)
    squared_norm = work[0]
    np.einsum("dn,dn->n", y, y, out=squared_norm)
    out[d] = np.dot(squared_norm, r)


def _second_full(sums, data):
    d = data.n_features
    iu, ju = _upper_triangle(d)
    out = np.empty((sums.shape[0], d, d))
    out[:, iu, ju] = sums[:, 1 + d :]
    out[:, ju, iu] = sums[:, 1 + d :]
    return out


def _cov_full(nk, mu_z, sum_zz):
    return sum_zz / nk[:, None, None] - mu_z[:, :, None] * mu_z[:, None, :]


def _cov_tied(nk, mu_z, sum_zz):
    # sum_k sum_i r_ik (z_i - mu_k)(z_i - mu_k)^T / N = (sum_i z_i z_i^T - sum_k n_k mu_k mu_k^T) / N
    return (sum_zz - (nk[:, None] * mu_z).T @ mu_z) / nk.sum()


def _cov_diag(nk, mu_z, sum_zz):
    return sum_zz / nk[:, None] - np.square(mu_z)


def _cov_spherical(nk, mu_z, sum_zz):
    return (sum_zz / nk - np.sum(np.square(mu_z), axis=1)) / mu_z.shape[1]


def _degenerate(model: GaussianMixtureModel, which: str, iteration: int | None) -> DegenerateFitError:
    when = "at initialisation" if iteration == 0 else f"at iteration {iteration}" if iteration else "in the M-step"
    return DegenerateFitError(
        f"{which} covariance is not positive definite {when} (a component collapsed onto too few "
        f"points): use fewer components, a larger reg_covar (now {model.reg_covar:g}), or scale the data"
    )


def _inverse_factor(cov: np.ndarray, scale_ref: np.ndarray) -> np.ndarray | None:
    """U = L^{-T} for cov = L L^T, each of a stack (..., D, D) (``scale_ref`` (..., D)), or None when any
    of them is not numerically positive definite."""
    try:
        lower = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    if np.any(np.square(np.diagonal(lower, axis1=-2, axis2=-1)) <= PIVOT_RTOL * np.maximum(scale_ref, 1.0)):
        return None
    identity = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
    return np.swapaxes(solve_triangular(lower, identity, lower=True), -1, -2)


def _factorise_full(cov, second, reg_z, model, iteration):
    cov = cov + np.diag(reg_z)
    scale_ref = np.diagonal(second, axis1=1, axis2=2)
    # All components at once (one call each into LAPACK's loop: per component, the Python overhead was
    # a twentieth of an iteration at N = 1e5); one by one only to name the first that fails.
    u = _inverse_factor(cov, scale_ref)
    if u is None:
        k = next(k for k in range(cov.shape[0]) if _inverse_factor(cov[k], scale_ref[k]) is None)
        raise _degenerate(model, f"component {k}'s", iteration)
    return u


def _factorise_tied(cov, second, reg_z, model, iteration):
    u = _inverse_factor(cov + np.diag(reg_z), np.diagonal(second))
    if u is None:
        raise _degenerate(model, "the tied", iteration)
    return u


def _factorise_elementwise(cov, second, reg_z, model, iteration):
    var = cov + reg_z
    bad = var <= PIVOT_RTOL * np.maximum(second, 1.0)
    if np.any(bad):
        k = int(np.argwhere(bad)[0][0])
        raise _degenerate(model, f"component {k}'s", iteration)
    return 1.0 / np.sqrt(var)


_FORMS: dict[str, _Form] = {
    "full": _Form(
        lambda d: 1 + d + d * (d + 1) // 2,
        _design_full,
        _coefficients_full,
        _log_joint_product,
        _whiten_product,
        _centred_sums_full,
        _second_full,
        _cov_full,
        _factorise_full,
    ),
    "tied": _Form(
        lambda d: 1 + d,
        _design_linear,
        _coefficients_tied,
        _log_joint_tied,
        _whiten_product,
        None,
        lambda sums, data: data.zz_total,
        _cov_tied,
        _factorise_tied,
    ),
    "diag": _Form(
        lambda d: 1 + 2 * d,
        _design_diag,
        _coefficients_diag,
        _log_joint_product,
        _whiten_elementwise,
        _centred_sums_diag,
        lambda sums, data: sums[:, 1 + data.n_features :],
        _cov_diag,
        _factorise_elementwise,
    ),
    "spherical": _Form(
        lambda d: 2 + d,
        _design_spherical,
        _coefficients_spherical,
        _log_joint_product,
        _whiten_elementwise,
        _centred_sums_spherical,
        lambda sums, data: sums[:, -1],
        _cov_spherical,
        _factorise_elementwise,
    ),
}

# Second moments per component, for the pivot test, and where reg_covar goes, per structure.
_NORMALISED_SECOND = {
    "full": lambda second, nk: second / nk[:, None, None],
    "tied": lambda second, nk: second / nk.sum(),
    "diag": lambda second, nk: second / nk[:, None],
    "spherical": lambda second, nk: second / nk,
}
_REG_Z = {
    "full": lambda reg, scale: reg / np.square(scale),
    "tied": lambda reg, scale: reg / np.square(scale),
    "diag": lambda reg, scale: reg / np.square(scale),
    "spherical": lambda reg, scale: reg / scale[0] ** 2,
}
# Where a component that received no data keeps its current factor.
_KEEP_EMPTY = {
    "full": lambda new, old, empty: np.where(empty[:, None, None], old, new),
    "tied": lambda new, old, empty: new,
    "diag": lambda new, old, empty: np.where(empty[:, None], old, new),
    "spherical": lambda new, old, empty: np.where(empty, old, new),
}
_IDENTITY_FOR_EMPTY = {
    "full": lambda cov, second, empty: (
        np.where(empty[:, None, None], np.eye(cov.shape[-1]), cov),
        np.where(empty[:, None, None], np.eye(cov.shape[-1]), second),
    ),
    "tied": lambda cov, second, empty: (cov, second),
    "diag": lambda cov, second, empty: (np.where(empty[:, None], 1.0, cov), np.where(empty[:, None], 1.0, second)),
    "spherical": lambda cov, second, empty: (np.where(empty, 1.0, cov), np.where(empty, 1.0, second)),
}


# --------------------------------------------------------------------------------------------------
# The passes over the data


def _chunk_bounds(data: GaussianData) -> list[tuple[int, int]]:
    """The (start, stop) row ranges of the blocks: fixed by N and the chunk size alone, never by the
    number of threads, so every sum over blocks is the same whichever thread computed which block."""
    n, size = data.n_samples, data.chunk_size
    return [(start, min(start + size, n)) for start in range(0, n, size)]


class _Scoring(NamedTuple):
    """How :func:`_chunks` scores each point against each component.

    ``coef`` (rows, F) multiplies the design; ``extra`` is what the centred route needs (see
    :class:`_Exact`); ``dead`` the components of weight 0 (scored -inf). With ``reference`` None the
    scores are the log-joints log w_k + log N(z | mu_k, Sigma_k). Otherwise they are relative to
    component 0: s_k = log-joint_k - log-joint_0, so s_0 = 0 without computing it, ``coef`` holds the
    differences for components 1..K-1 and ``reference`` (F,) component 0's own coefficients, for the
    caller to add back sum_i log-joint_0(z_i) = reference . sum_i phi_i.
    """

    coef: np.ndarray
    extra: Any
    dead: np.ndarray
    reference: np.ndarray | None


def _scoring(model: GaussianMixtureModel, data: GaussianData, params: GaussianParams) -> _Scoring:
    """Log-joint scoring for ``params``."""
    form = _FORMS[model.covariance_type]
    mu_z, u_z = data.frame.params_to_z(params)
    # A component emptied by hard EM has weight 0. Its log weight -inf is kept out of the matrix
    # product (BLAS kernels may form 0 * inf = nan in padding) and put in afterwards.
    dead = params.w <= 0
    coef, extra = form.coefficients(np.log(np.where(dead, 1.0, params.w)), mu_z, u_z)
    return _Scoring(coef, extra, np.flatnonzero(dead), None)


# Structures whose scores can be relative to component 0: those whose log-joint is the design product
# alone. (tied's shared quadratic term cancels from the differences, but adding back component 0's
# sum would need it per point: not done.)
RELATIVE_FORMS = frozenset({"full", "diag", "spherical"})


def _relative_scoring(model: GaussianMixtureModel, scoring: _Scoring) -> _Scoring:
    """``scoring`` relative to component 0 where that is exact and pays (see :class:`_Scoring`), else
    ``scoring`` itself.

    Why: a point's responsibilities and its log p(z) - log-joint_0(z) depend only on the differences,
    so component 0's row is never formed (at K = 3 a third less matrix product and exponentials), and
    when every difference is moderate no shift by the largest is needed either (see
    :func:`_soft_assign`). Not with a component on the centred route (its exact row is a log-joint, not
    a difference) nor with a dead one (-inf is not a moderate difference), and not for K = 1.
    """
    if (model.covariance_type not in RELATIVE_FORMS or len(scoring.coef) < 2 or scoring.dead.size
            or scoring.extra.tight.size):
        return scoring
    reference = scoring.coef[0]
    return scoring._replace(coef=scoring.coef[1:] - reference, reference=reference)


def _chunks(
    model: GaussianMixtureModel,
    data: GaussianData,
    scoring: _Scoring,
    bounds: list[tuple[int, int]] | None = None,
    tight_work: _TightWork | None = None,
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (rows, z (D, n), design (F, n), scores (K, n)) block by block (all blocks, or those of
    ``bounds``), scored as ``scoring`` says (:func:`_scoring`: the log-joints log w_k + log N(z | mu_k,
    Sigma_k)). The centred route (see :class:`_Exact`) works in ``tight_work`` (its
    own if None), free again for the consumer once a block is yielded.

    The buffers are reused between blocks: a consumer must be done with them before the next one.
    Each call has its own buffers, so threads can each run one over different blocks.
    Reusing them matters beyond allocation: a fresh array of this size is fresh memory the kernel must
    fault in and zero, and page faults of two threads serialise on the process's memory map (measured:
    4x slower per block than the arithmetic, and two threads no faster than one).
    """
    form = _FORMS[model.covariance_type]
    coef, extra, dead, reference = scoring
    relative = reference is not None
    bounds = _chunk_bounds(data) if bounds is None else bounds
    if not bounds:
        return
    width = max(stop - start for start, stop in bounds)
    buffer = np.empty((coef.shape[1], width))
    buffer[0] = 1.0
    scores_buffer = np.empty((len(coef) + relative, width))
    if tight_work is None and extra.tight.size:
        tight_work = _TightWork(data.n_features, width)
    for start, stop in bounds:
        rows = slice(start, stop)
        z = data.z_t[:, rows]
        phi = buffer[:, : z.shape[1]]
        form.design(z, phi)
        scores = scores_buffer[:, : z.shape[1]]
        if relative:
            scores[0] = 0.0  # every block: the consumer may have overwritten it
        form.log_joint(coef, extra, phi, z, scores[relative:])
        _recompute_tight(scores, extra, z, form.whiten, tight_work)
        if dead.size:
            scores[dead] = -np.inf
        yield rows, z, phi, scores


class _OneBlasThread:
    """Context manager: BLAS limited to one thread while any fit or E-step of the process runs.

    An E-step runs one thread per core (:func:`e_step_threads`), each calling BLAS on cache-sized blocks;
    OpenBLAS's own threads on top of them oversubscribe the cores, and for these shapes even alone they
    are slower than one thread (measured at N = 1e6, D = 10, K = 8: an iteration 2.3x slower). A fit
    holds the limit from start to end, not only during its E-steps: the M-step's small BLAS calls in
    between otherwise woke OpenBLAS's threads, which then spun into the next E-step (measured at
    N = 1e7, D = 2, K = 3: iterations 25% slower). Nested and concurrent holders (E-steps inside a
    fit, fits in several of the caller's threads) share one limit: the setting found by the first is
    restored by the last. threadpoolctl's controller scans the loaded libraries, once per process (a
    millisecond); setting and restoring the limit then costs about 10 us.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._limiter = None

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._limiter = _blas_controller().limit(limits=1, user_api="blas")
            self._active += 1

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


@functools.cache
def _worker_pool(n_workers: int) -> ThreadPoolExecutor:
    """Threads kept for the E-steps of the process: starting and joining them in every E-step cost
    0.2 ms, 4% of an iteration at N = 1e5."""
    return ThreadPoolExecutor(n_workers, thread_name_prefix="emvsbayes-e-step")


_ONE_BLAS_THREAD = _OneBlasThread()


def _after_fork_in_child() -> None:
    # A forked child has the pool objects but not their threads, and may have the limit's lock held
    # by a thread that does not exist there: it starts afresh.
    global _ONE_BLAS_THREAD
    _worker_pool.cache_clear()
    _ONE_BLAS_THREAD = _OneBlasThread()


os.register_at_fork(after_in_child=_after_fork_in_child)


def e_step_threads(data: GaussianData) -> int:
    """Threads an E-step uses: one per available core, but only with at least ``MIN_BLOCKS_PER_THREAD``
    blocks per thread (numpy releases the GIL inside its array loops, so blocks run truly in parallel)."""
    return max(1, min(_AVAILABLE_CORES, len(_chunk_bounds(data)) // MIN_BLOCKS_PER_THREAD))


def _stripes(bounds: list, n_threads: int) -> list[list]:
    """``bounds`` cut into ``n_threads`` contiguous runs of (nearly) equal length."""
    return [list(part) for part in np.array_split(np.arange(len(bounds)), n_threads) if part.size]


class _AssignWork:
    """Scratch arrays for assigning one block (one set per thread), so the per-block passes allocate
    nothing (see :func:`_chunks` for why that matters)."""

    def __init__(self, k: int, width: int):
        self.shift = np.empty(width)
        self.total = np.empty(width)
        self.kept = np.empty((k, width), dtype=bool)
        self.centred = np.empty((k, width))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.shift[:n], self.total[:n], self.kept[:, :n], self.centred[:, :n]


def _soft_assign(
    scores: np.ndarray, out: np.ndarray | None, work: _AssignWork | None = None, *, first_is_zero: bool = False
) -> tuple[np.ndarray, float]:
    """Log responsibilities into ``out`` (K, n) (none if ``out`` is None); return (responsibilities
    (K, n), sum_i log sum_k e^scores_ki).

    ``scores`` are the log-joints, or anything differing from them by a term per point (the
    responsibilities are the same; the objective differs by the sum of those terms). With
    ``first_is_zero`` row 0 is known to be 0 (scores relative to component 0, see :class:`_Scoring`).

    This is logsumexp over K (shift by the largest term, exponentiate, sum, log), written out instead
    of calling ``scipy.special.logsumexp``: that function makes about fifteen passes with fancy
    indexing (it was 80% of an iteration), and here the shifted exponentials it throws away are the
    unnormalised responsibilities the M-step needs. Tests check the result against
    ``scipy.special.logsumexp``. ``scores`` is overwritten.
    """
    work = work or _AssignWork(*scores.shape)
    shift, total, kept, centred = work.take(scores.shape[1])
    free = scores[1:] if first_is_zero else scores
    # Two reads decide whether the shift can be skipped (see _assign_unshifted).
    if free.size and -UNSHIFTED_RANGE <= free.min() and free.max() <= UNSHIFTED_RANGE:
        return _assign_unshifted(scores, out, total, first_is_zero)
    centred = centred if out is None else out
    _over_rows(np.maximum, scores, shift)
    np.subtract(scores, shift, out=centred)
    # Terms below e^-700 of the largest are zero to every digit of the sums, but as subnormal numbers
    # they make each product in the M-step's matrix product take a microcode assist (10x slower), so
    # they are set to 0. Nor are they exponentiated: numpy's vectorised exp takes a slow path for
    # results that underflow (measured: 100x per value when subnormal, 5x when 0), which made a block
    # with a narrow component far from most points 8x slower to exponentiate. So the exponent is
    # clipped at e^-700 and the clipped terms multiplied by 0. Most blocks have none: one read finds out.
    if centred.min() < _NEGLIGIBLE_LOG:
        scaled = np.exp(np.maximum(centred, _NEGLIGIBLE_LOG, out=scores), out=scores)
        scaled *= np.greater_equal(centred, _NEGLIGIBLE_LOG, out=kept)
    else:
        scaled = np.exp(centred, out=scores)
    _over_rows(np.add, scaled, total)
    scaled /= total
    log_total = np.log(total, out=total)
    if out is not None:
        out -= log_total
    log_total += shift
    return scaled, float(log_total.sum())


# Scores all within +-UNSHIFTED_RANGE need no shift: their exponentials neither overflow nor
# underflow, and each responsibility e^s_k / sum_j e^s_j stays above e^-2 UNSHIFTED_RANGE / K, a
# normal float (see _soft_assign for why subnormals must not reach the M-step).
UNSHIFTED_RANGE = 350.0


def _assign_unshifted(scores, out, total, first_is_zero) -> tuple[np.ndarray, float]:
    """:func:`_soft_assign` for scores within +-``UNSHIFTED_RANGE``: exponentiated as they are, which
    saves the pass for the largest and the one subtracting it; with ``first_is_zero``, row 0's
    exponential is 1 and its responsibility 1 / total."""
    if out is not None:
        np.copyto(out, scores)
    if first_is_zero:
        free = np.exp(scores[1:], out=scores[1:])
        np.add(free[0], 1.0, out=total)
        for row in free[1:]:
            total += row
        np.divide(1.0, total, out=scores[0])
        free *= scores[0]
    else:
        np.exp(scores, out=scores)
        _over_rows(np.add, scores, total)
        scores /= total
    log_total = np.log(total, out=total)
    if out is not None:
        out -= log_total
    return scores, float(log_total.sum())


def _over_rows(ufunc, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``ufunc.reduce(rows, axis=0)`` into ``out`` as K - 1 whole-row operations, the same additions in
    the same order: for the few rows of a (K, n) block about twice as fast as numpy's reduction along
    the outer axis (measured for sums and maxima at K = 3)."""
    if len(rows) == 1:
        np.copyto(out, rows[0])
        return out
    ufunc(rows[0], rows[1], out=out)
    for row in rows[2:]:
        ufunc(out, row, out=out)
    return out


def _hard_assign(
    log_joint: np.ndarray, out: np.ndarray | None, work: _AssignWork | None = None, *, first_is_zero: bool = False
) -> tuple[np.ndarray, float]:
    """Each point wholly to its most probable component (ties to the lowest index): 0 / -inf into
    ``out`` (unless None); return (one-hot responsibilities (K, n), sum_i max_k log(w_k N(z_i | ...))),
    the classification log-likelihood, for scores that are log-joints (or differ from them by a term per
    point, which the objective then differs by; ``first_is_zero`` is not needed). ``log_joint`` is
    overwritten."""
    best = np.argmax(log_joint, axis=0)
    cols = np.arange(log_joint.shape[1])
    objective = float(log_joint[best, cols].sum())
    if out is not None:
        out.fill(-np.inf)
        out[best, cols] = 0.0
    log_joint.fill(0.0)
    log_joint[best, cols] = 1.0
    return log_joint, objective


def _stats(model, data, log_resp_t, sums, shift, recompute=None) -> GaussianStats:
    d = data.n_features
    second = _FORMS[model.covariance_type].second_moments(sums, data)
    return GaussianStats(sums[:, 0].copy(), sums[:, 1 : 1 + d].copy(), second, data.frame, shift,
                         kept_log_resp=None if log_resp_t is None else log_resp_t.T, recompute_log_resp=recompute)


def _shifted(model: GaussianMixtureModel, exact: _Exact) -> tuple[np.ndarray, np.ndarray]:
    """(components whose moments are taken about their current mean, the shift (K, D)): those on the
    centred route (``exact`` of the E-step's scoring), about their means.

    E[z z^T] - mu mu^T has the same eps * trace(P_z) trouble as the expanded log-density: for a
    collapsing component its rounding is a noticeable fraction of reg_covar and can lower the
    log-likelihood. Moments about a point near the mean do not cancel. Not for ``tied``, whose
    M-step uses the total second moment of the data.
    """
    shift = np.zeros_like(exact.mu_z)
    if model.covariance_type == "tied":
        return np.empty(0, dtype=np.intp), shift
    shift[exact.tight] = exact.mu_z[exact.tight]
    return exact.tight, shift


def _e_step(
    assign, model: GaussianMixtureModel, data: GaussianData, params: GaussianParams, keep_log_resp: bool | None = None
) -> tuple[GaussianStats, float]:
    k = params.w.shape[0]
    form = _FORMS[model.covariance_type]
    scoring = _scoring(model, data, params)
    tight, shift = _shifted(model, scoring.extra)
    scoring = _relative_scoring(model, scoring)
    reference = scoring.reference
    if keep_log_resp is None:
        keep_log_resp = data.n_samples * k <= KEEP_STATS_MAX
    # (K, N) so each block is a contiguous column range and the reduction over K runs across rows;
    # the stats expose its transpose (N, K).
    log_resp_t = np.empty((k, data.n_samples)) if keep_log_resp else None
    bounds = _chunk_bounds(data)
    # One slot per block for its weighted sums and objective; they are added up in block order after
    # all blocks are done, so the result does not depend on how many threads ran.
    block_sums = np.empty((len(bounds), form.n_design(data.n_features), k))
    objectives = np.empty(len(bounds))

    def run(indices: list[int]) -> None:
        width = max(bounds[i][1] - bounds[i][0] for i in indices)
        work = _AssignWork(k, width)
        tight_work = _TightWork(data.n_features, width)
        blocks = _chunks(model, data, scoring, [bounds[i] for i in indices], tight_work)
        for index, (rows, z, phi, scores) in zip(indices, blocks):
            resp, objectives[index] = assign(scores, log_resp_t[:, rows] if keep_log_resp else None, work,
                                             first_is_zero=reference is not None)
            block = block_sums[index]
            # np.dot, not np.matmul: see _centred_sums_full.
            np.dot(phi, resp.T, out=block)
            if reference is not None:
                # Scores relative to component 0 leave out sum_i log-joint_0(z_i) = reference . sum_i
                # phi_i, and sum_i phi_i is the block's weighted sums added over components (each
                # point's responsibilities sum to 1), taken before the shifted moments replace any.
                objectives[index] += reference @ block.sum(axis=1)
            centred, product = tight_work.take(z.shape[1])
            for j in tight:
                # Row 0 (the count) does not depend on the shift: only the moments are redone.
                np.subtract(z, shift[j][:, None], out=centred)
                form.centred_sums(centred, resp[j], product, block[1:, j])

    stripes = _stripes(bounds, e_step_threads(data))
    with _ONE_BLAS_THREAD:
        if len(stripes) == 1:
            run(stripes[0])
        else:
            # The calling thread takes the first stripe; the pool's threads the others.
            pending = [_worker_pool(len(stripes) - 1).submit(run, stripe) for stripe in stripes[1:]]
            try:
                run(stripes[0])
            finally:
                wait(pending)
            for done in pending:
                done.result()
    sums = block_sums[0].copy()
    for block in block_sums[1:]:
        sums += block
    # Back to the density of x: log p_x = log p_z - sum_j log scale_j for each point.
    total = math.fsum(objectives) - data.n_samples * data.frame.log_jacobian
    recompute = None if keep_log_resp else partial(_log_resp_again, assign, model, data, params)
    return _stats(model, data, log_resp_t, sums.T, shift, recompute), total


def _log_resp_again(assign, model, data, params) -> np.ndarray:
    return _e_step(assign, model, data, params, keep_log_resp=True)[0].log_resp


def e_step(model: GaussianMixtureModel, data: GaussianData, params: GaussianParams) -> tuple[GaussianStats, float]:
    """Soft E-step: responsibilities and weighted sums in one pass; returns the observed-data
    log-likelihood at ``params`` (original units)."""
    return _e_step(_soft_assign, model, data, params)


def hard_e_step(model: GaussianMixtureModel, data: GaussianData, params: GaussianParams) -> tuple[GaussianStats, float]:
    """Classification E-step; returns the classification log-likelihood sum_i max_k log(w_k p_k(x_i)),
    the quantity hard EM never decreases."""
    return _e_step(_hard_assign, model, data, params)


E_STEPS = {"soft": e_step, "hard": hard_e_step}


def stats_from_resp(model: GaussianMixtureModel, data: GaussianData, resp: np.ndarray) -> GaussianStats:
    """Sufficient statistics for given responsibilities ``resp`` (N, K) (an initialisation)."""
    resp = np.asarray(resp, dtype=float)
    form = _FORMS[model.covariance_type]
    d, n = data.n_features, data.n_samples
    buffer = np.empty((form.n_design(d), min(data.chunk_size, n)))
    buffer[0] = 1.0
    sums = np.zeros((resp.shape[1], buffer.shape[0]))
    for start in range(0, n, data.chunk_size):
        rows = slice(start, min(start + data.chunk_size, n))
        phi = buffer[:, : rows.stop - start]
        form.design(data.z_t[:, rows], phi)
        sums += resp[rows].T @ phi.T
    with np.errstate(divide="ignore"):
        log_resp = np.log(resp)
    shift = np.zeros((resp.shape[1], d))
    return _stats(model, data, np.ascontiguousarray(log_resp.T), sums, shift)


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
    form = _FORMS[model.covariance_type]
    nk = stats.nk
    empty = nk <= 0
    if params is None and np.any(empty):
        raise DegenerateFitError(
            f"component {int(np.argmax(empty))} starts with no points: use fewer components or another init_params"
        )
    safe_nk = np.where(empty, 1.0, nk)
    offset = stats.sum_z / safe_nk[:, None]  # the mean relative to the shift
    cov = form.covariance(safe_nk, offset, stats.sum_zz)
    mu_z = stats.shift + offset
    second = _NORMALISED_SECOND[model.covariance_type](stats.sum_zz, safe_nk)
    cov, second = _IDENTITY_FOR_EMPTY[model.covariance_type](cov, second, empty)
    reg_z = _REG_Z[model.covariance_type](model.reg_covar, stats.frame.scale)
    u_z = form.factorise(cov, second, reg_z, model, iteration)
    new = stats.frame.params_from_z(nk / nk.sum(), mu_z, u_z, model.covariance_type)
    if not np.any(empty):
        return new
    return GaussianParams(
        new.w,
        np.where(empty[:, None], params.mu, new.mu),
        _KEEP_EMPTY[model.covariance_type](new.prec_chol, params.prec_chol, empty),
        model.covariance_type,
    )


def _slack_matrix(cov: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Q lost per unit weight by C + R instead of C: log|C+R| - log|C| + tr((C+R)^-1 C) - D, for (..., D, D)."""
    sign, logdet = np.linalg.slogdet(cov)
    reg_cov = cov + np.diag(reg)
    _, logdet_reg = np.linalg.slogdet(reg_cov)
    trace = np.trace(np.linalg.solve(reg_cov, cov), axis1=-2, axis2=-1)
    return np.where(sign > 0, logdet_reg - logdet + trace - cov.shape[-1], np.inf)


def _slack_scalar(var: np.ndarray, reg) -> np.ndarray:
    """The same for variances: log(c+r) - log(c) + c/(c+r) - 1 (inf where c <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log1p(reg / var) + var / (var + reg) - 1.0
    return np.where(var > 0, out, np.inf)


def _weighted(nk: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """n_k times a component's slack; an empty component gives up nothing (not 0 x inf = NaN, which would also
    switch off the decrease check)."""
    with np.errstate(invalid="ignore"):
        return np.where(nk > 0, nk * slack, 0.0)


_SLACK = {
    "full": lambda nk, cov, reg, d: float(np.sum(_weighted(nk, _slack_matrix(cov, reg)))) / 2,
    "tied": lambda nk, cov, reg, d: float(nk.sum() * _slack_matrix(cov, reg)) / 2,
    "diag": lambda nk, cov, reg, d: float(np.sum(_weighted(nk[:, None], _slack_scalar(cov, reg)))) / 2,
    "spherical": lambda nk, cov, reg, d: float(np.sum(_weighted(nk * d, _slack_scalar(cov, reg)))) / 2,
}


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
    form = _FORMS[model.covariance_type]
    nk = np.where(stats.nk > 0, stats.nk, 0.0)
    safe_nk = np.where(nk > 0, nk, 1.0)
    cov = form.covariance(safe_nk, stats.sum_z / safe_nk[:, None], stats.sum_zz)
    reg = _REG_Z[model.covariance_type](model.reg_covar, stats.frame.scale)
    return _SLACK[model.covariance_type](nk, cov, reg, stats.sum_z.shape[1])


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
    with _ONE_BLAS_THREAD:
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
    with _ONE_BLAS_THREAD:  # see fit
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
    for rows, _, _, block in _chunks(model, data, _scoring(model, data, params)):
        out[:, rows] = block
    return (out - data.frame.log_jacobian).T


def score_samples(model: GaussianMixtureModel, params: GaussianParams, x) -> np.ndarray:
    """log p(x_i) (N,)."""
    data = prepare(model, x)
    out = np.empty(data.n_samples)
    for rows, _, _, block in _chunks(model, data, _scoring(model, data, params)):
        out[rows] = logsumexp(block, axis=0)
    return out - data.frame.log_jacobian


def log_resp(model: GaussianMixtureModel, params: GaussianParams, x) -> np.ndarray:
    """log P(component k | x_i), (N, K)."""
    joint = log_joint(model, params, x)
    return joint - logsumexp(joint, axis=1, keepdims=True)


__all__ = [
    "E_STEPS",
    "Frame",
    "GaussianData",
    "GaussianStats",
    "e_step",
    "fit",
    "fit_restarts",
    "hard_e_step",
    "log_joint",
    "log_resp",
    "m_step",
    "params_from_resp",
    "prepare",
    "score_samples",
    "stats_from_resp",
]


# --------------------------------------------------------------------------------------------------
# Many small fits at once (bootstrap replicates): the same steps over a leading replicate axis
#
# For data of a few hundred rows one fit at a time spends its time in per-call overhead, so these
# steps take B fits in each array operation, written directly (sklearn's two-pass moments about each
# component's new mean, (x - mu_k) U_k for the log-density) rather than through the chunked design
# products above, which are built for one large data set. The answers are the same fits to rounding
# (tests compare them fit by fit with :func:`fit`).


@dataclass(frozen=True, slots=True)
class GaussianSets:
    """The data of B fits run together (:func:`fit_batched`).

    ``x`` (R, N, D) with R = B (one data set per fit, e.g. simulated) or R = 1 (shared); ``counts``
    (B, N) or None: how many times fit b counts each row (a resample drawn with replacement is the
    original rows with these multiplicities); ``frame``: the original data's standardising frame, in
    which the degenerate-covariance test measures variances (as :func:`m_step` does in its frame).
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
    """:func:`e_step` of the fits ``rows`` at ``params`` (each array field with a leading b axis);
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
    """:func:`regularisation_slack` of b fits, (b,), from the unregularised covariances (original
    units: the slack does not depend on the frame)."""
    if model.reg_covar == 0:
        return np.zeros(nk.shape[0])
    reg = model.reg_covar
    structure = model.covariance_type
    if structure in ("full", "tied") and d > 1:
        lost = _slack_matrix(cov, np.full(d, reg))
        return (nk * lost).sum(axis=1) / 2 if structure == "full" else nk.sum(axis=1) * lost / 2
    if structure == "tied":  # 1-D: one variance (b, 1, 1)
        return nk.sum(axis=1) * _slack_scalar(cov[:, 0, 0], reg) / 2
    if structure == "full":  # 1-D: (b, K, 1, 1)
        return (nk * _slack_scalar(cov[..., 0, 0], reg)).sum(axis=1) / 2
    if structure == "diag":
        return (nk[:, :, None] * _slack_scalar(cov, reg)).sum(axis=(1, 2)) / 2
    return (nk * d * _slack_scalar(cov, reg)).sum(axis=1) / 2


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
    """:func:`m_step` of b fits; returns (params, :func:`regularisation_slack` (b,), errors): ``errors``
    None when every step worked, else (b,) with the :class:`DegenerateFitError` :func:`m_step` would
    raise for fit i (``""`` for the others)."""
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
            error = _degenerate(model, which, iteration)
            errors[i] = f"{type(error).__name__}: {' '.join(str(error).split())}"
    w = nk / nk.sum(axis=1, keepdims=True)
    if any_empty:
        mu = np.where(empty[:, :, None], params.mu, mu)
        if structure != "tied":
            keep = empty.reshape(empty.shape + (1,) * (u.ndim - 2))
            u = np.where(keep, params.prec_chol, u)
    return GaussianParams(w, mu, u, structure), slack, errors


def fit_batched(model: GaussianMixtureModel, data: GaussianSets, init, n_fits: int, **options):
    """Soft EM of ``n_fits`` fits at once, each the same fit as :func:`fit` of its data from its start
    (to rounding); ``options`` as :func:`emvsbayes.em.fit_em_batched`.

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
    with _ONE_BLAS_THREAD:
        return fit_em_batched(partial(batched_e_step, model, data), partial(batched_m_step, model, data), start,
                              **options)
