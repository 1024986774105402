"""The four covariance structures of the Gaussian mixture, one small object each.

A structure says, for the EM steps of :mod:`emvsbayes.gaussian.em`, everything that differs between
``full``, ``tied``, ``diag`` and ``spherical`` (scikit-learn writes the same as four
``_estimate_gaussian_covariances_*`` functions):

- how the data may be standardised (``frame_scale``) and how a precision factor changes with the
  scale (``scale_factor``);
- the sufficient statistics: the rows of the design ``[1, z, second-order terms]`` whose
  responsibility-weighted sums the E-step collects (``n_design``, ``design``) and how the second
  moments are read from those sums (``second_moments``);
- the M-step: the covariance from the moments (``covariance``), where ``reg_covar`` goes
  (``reg_z``), the precision-Cholesky factor with its positive-definiteness test (``factorise``), and
  what a component that received no data keeps (``empty_as_identity``, ``keep_empty``);
- the expected complete-data log-likelihood the M-step gives up to ``reg_covar`` (``slack``);
- the count of free parameters (``n_free_parameters``, for BIC and AIC).

Every step works in standardised coordinates z = (x - centre) / scale (see
:func:`emvsbayes.gaussian.em.prepare`). Precision factors ``u`` are: full (K, D, D) upper triangular
U_k with P_k = U_k U_k^T; tied (D, D); diag (K, D) 1 / sd; spherical (K,) 1 / sd.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.linalg import get_lapack_funcs

from emvsbayes.errors import DegenerateFitError
from emvsbayes.gaussian.model import n_free_parameters

# A Cholesky pivot (a conditional variance in standardised units) smaller than this, relative to the
# second moment it was computed from, is rounding noise of E[z z^T] - mu mu^T, not a variance.
PIVOT_RTOL = 1000 * np.finfo(float).eps


@functools.cache
def upper_triangle(d: int) -> tuple[np.ndarray, np.ndarray]:
    """np.triu_indices(d), made once per D (read-only use)."""
    return np.triu_indices(d)


def degenerate_error(reg_covar: float, which: str, iteration: int | None) -> DegenerateFitError:
    """The error of a covariance that is not numerically positive definite; ``which`` names it
    ("component 2's", "the tied"), ``iteration`` 0 means at initialisation, None in a lone M-step."""
    when = "at initialisation" if iteration == 0 else f"at iteration {iteration}" if iteration else "in the M-step"
    return DegenerateFitError(
        f"{which} covariance is not positive definite {when} (a component collapsed onto too few "
        f"points): use fewer components, a larger reg_covar (now {reg_covar:g}), or scale the data"
    )


def inverse_factor(cov: np.ndarray, scale_ref: np.ndarray) -> np.ndarray | None:
    """U = L^{-T} for cov = L L^T, each of a stack (..., D, D) (``scale_ref`` (..., D)), or None when any
    of them is not numerically positive definite."""
    try:
        lower = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    if np.any(np.square(np.diagonal(lower, axis1=-2, axis2=-1)) <= PIVOT_RTOL * np.maximum(scale_ref, 1.0)):
        return None
    return np.swapaxes(lower_inverse(lower), -1, -2)


#: LAPACK's triangular solve for float64 (dtrtrs).
_TRTRS = get_lapack_funcs(("trtrs",), (np.zeros((1, 1)),))[0]


def lower_inverse(lower: np.ndarray) -> np.ndarray:
    """L^{-1} of every lower-triangular factor of a stack (..., D, D) with a nonzero diagonal.

    The very LAPACK call (dtrtrs, solving L X = I) that ``scipy.linalg.solve_triangular(lower, I, lower=True)``
    makes for each matrix, so the same bits, without its per-call wrapping: validation, batch looping and
    stacking cost ~30 us a call (37 against 5 us for K = 2, D = 1), most of an M-step on the small data of a
    study's replicate, whose EM runs hundreds of iterations (tests/test_gaussian_em.py compares the two bit for bit).
    """
    lower = np.ascontiguousarray(lower, dtype=float)
    identity = np.eye(lower.shape[-1])
    out = np.empty_like(lower)
    for index in np.ndindex(lower.shape[:-2]):
        # A C-ordered L is a Fortran-ordered L^T: SciPy solves (L^T)^T X = I, which is what is asked here.
        solution, info = _TRTRS(lower[index].T, identity, lower=0, trans=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"singular triangular factor (LAPACK dtrtrs info {info})")
        out[index] = solution
    return out


def slack_matrix(cov: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Q lost per unit weight by C + R instead of C: log|C+R| - log|C| + tr((C+R)^-1 C) - D, for (..., D, D)."""
    sign, logdet = np.linalg.slogdet(cov)
    reg_cov = cov + np.diag(reg)
    _, logdet_reg = np.linalg.slogdet(reg_cov)
    trace = np.trace(np.linalg.solve(reg_cov, cov), axis1=-2, axis2=-1)
    return np.where(sign > 0, logdet_reg - logdet + trace - cov.shape[-1], np.inf)


def slack_scalar(var: np.ndarray, reg) -> np.ndarray:
    """The same for variances: log(c+r) - log(c) + c/(c+r) - 1 (inf where c <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # over: a variance of a denormal
        out = np.log1p(reg / var) + var / (var + reg) - 1.0
    return np.where(var > 0, out, np.inf)


def _weighted(nk: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """n_k times a component's slack; an empty component gives up nothing (not 0 x inf = NaN, which would also
    switch off the decrease check)."""
    with np.errstate(invalid="ignore"):
        return np.where(nk > 0, nk * slack, 0.0)


def _per_feature_scale(var: np.ndarray) -> np.ndarray:
    sd = np.sqrt(var)
    # A constant column has nothing to scale; leaving it at 1 keeps reg_covar as its variance.
    return np.where(sd > 0, sd, 1.0)


def _factorise_elementwise(cov, second, reg_z, reg_covar, iteration):
    """1 / sd of variances ``cov + reg_z`` (diag and spherical), after the pivot test."""
    var = cov + reg_z
    bad = var <= PIVOT_RTOL * np.maximum(second, 1.0)
    if np.any(bad):
        k = int(np.argwhere(bad)[0][0])
        raise degenerate_error(reg_covar, f"component {k}'s", iteration)
    return 1.0 / np.sqrt(var)


@dataclass(frozen=True, slots=True)
class CovarianceStructure(ABC):
    """What one covariance structure contributes to the EM steps (see the module docstring).

    Arguments named as in the steps: ``nk`` (K,) expected counts, ``mu_z`` (K, D) means relative to
    the moments' shift, ``sum_zz`` the weighted second moments shaped by structure (see
    :class:`emvsbayes.gaussian.em.GaussianStats`), ``second`` the same per unit weight (the scale of
    the pivot test), ``reg_z`` ``reg_covar`` in standardised units.
    """

    name: ClassVar[str]
    #: Whether a component's moments may be taken about its own mean (all but tied, whose M-step
    #: uses the total second moment of the data).
    shifts_moments: ClassVar[bool] = True

    def frame_scale(self, var: np.ndarray) -> np.ndarray:
        """The standardising scale (D,) from the per-feature variances (D,)."""
        return _per_feature_scale(var)

    def scale_factor(self, u: np.ndarray, s) -> np.ndarray:
        """The precision factor of the data scaled by 1 / ``s``: row j of a triangular factor (or entry j
        of a diagonal one) multiplied by s_j."""
        return u * np.asarray(s)[:, None]

    def n_free_parameters(self, n_components: int, dim: int) -> int:
        return n_free_parameters(n_components, dim, self.name)

    @abstractmethod
    def n_design(self, d: int) -> int:
        raise NotImplementedError

    @abstractmethod
    def design(self, z: np.ndarray, out: np.ndarray) -> None:
        """Rows 1.. of the design of z (D, n) into ``out`` (F, n) (row 0, the ones, is the caller's)."""
        raise NotImplementedError

    @abstractmethod
    def second_moments(self, sums: np.ndarray, zz_total: np.ndarray) -> np.ndarray:
        """``sum_zz`` from the weighted design sums (K, F) (``zz_total`` (D, D): sum_i z_i z_i^T)."""
        raise NotImplementedError

    @abstractmethod
    def covariance(self, nk, mu_z, sum_zz) -> np.ndarray:
        """The maximising covariance before ``reg_covar``, in standardised units."""
        raise NotImplementedError

    @abstractmethod
    def per_unit_weight(self, second: np.ndarray, nk: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reg_z(self, reg_covar: float, scale: np.ndarray) -> np.ndarray:
        return reg_covar / np.square(scale)

    def factorise(self, cov, second, reg_z, reg_covar: float, iteration: int | None) -> np.ndarray:
        """The precision factor of ``cov + reg_z``; raises :class:`DegenerateFitError` naming the first
        covariance that is not numerically positive definite."""
        return _factorise_elementwise(cov, second, reg_z, reg_covar, iteration)

    @abstractmethod
    def empty_as_identity(self, cov, second, empty) -> tuple[np.ndarray, np.ndarray]:
        """``cov`` and ``second`` with an empty component's (``empty`` (K,)) replaced by the identity, so
        it factorises (it keeps its old factor, see :meth:`keep_empty`)."""
        raise NotImplementedError

    @abstractmethod
    def keep_empty(self, new, old, empty) -> np.ndarray:
        """The new factors, an empty component's replaced by its ``old`` one."""
        raise NotImplementedError

    @abstractmethod
    def slack(self, nk, cov, reg_z, d: int) -> float:
        """sum_k n_k / 2 [log|S_k + R| - log|S_k| + tr((S_k + R)^-1 S_k) - D] (see
        :func:`emvsbayes.gaussian.em.regularisation_slack`)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Full(CovarianceStructure):
    """A covariance per component; design [1, z, z_i z_j (i <= j)]."""

    name: ClassVar[str] = "full"

    def n_design(self, d):
        return 1 + d + d * (d + 1) // 2

    def design(self, z, out):
        d = z.shape[0]
        out[1 : 1 + d] = z
        row = 1 + d
        # Upper triangle row by row, the order of np.triu_indices(d).
        for i in range(d):
            np.multiply(z[i], z[i:], out=out[row : row + d - i])
            row += d - i

    def second_moments(self, sums, zz_total):
        d = zz_total.shape[0]
        iu, ju = upper_triangle(d)
        out = np.empty((sums.shape[0], d, d))
        out[:, iu, ju] = sums[:, 1 + d :]
        out[:, ju, iu] = sums[:, 1 + d :]
        return out

    def covariance(self, nk, mu_z, sum_zz):
        return sum_zz / nk[:, None, None] - mu_z[:, :, None] * mu_z[:, None, :]

    def per_unit_weight(self, second, nk):
        return second / nk[:, None, None]

    def factorise(self, cov, second, reg_z, reg_covar, iteration):
        cov = cov + np.diag(reg_z)
        scale_ref = np.diagonal(second, axis1=1, axis2=2)
        # All components at once (one call each into LAPACK's loop: per component, the Python overhead
        # was a twentieth of an iteration at N = 1e5); one by one only to name the first that fails.
        u = inverse_factor(cov, scale_ref)
        if u is None:
            k = next(k for k in range(cov.shape[0]) if inverse_factor(cov[k], scale_ref[k]) is None)
            raise degenerate_error(reg_covar, f"component {k}'s", iteration)
        return u

    def empty_as_identity(self, cov, second, empty):
        return (np.where(empty[:, None, None], np.eye(cov.shape[-1]), cov),
                np.where(empty[:, None, None], np.eye(cov.shape[-1]), second))

    def keep_empty(self, new, old, empty):
        return np.where(empty[:, None, None], old, new)

    def slack(self, nk, cov, reg_z, d):
        return float(np.sum(_weighted(nk, slack_matrix(cov, reg_z)))) / 2


@dataclass(frozen=True, slots=True)
class Tied(CovarianceStructure):
    """One covariance shared by all components; design [1, z] (the second moment is the data's, fixed)."""

    name: ClassVar[str] = "tied"
    shifts_moments: ClassVar[bool] = False

    def n_design(self, d):
        return 1 + d

    def design(self, z, out):
        out[1:] = z

    def second_moments(self, sums, zz_total):
        return zz_total

    def covariance(self, nk, mu_z, sum_zz):
        # sum_k sum_i r_ik (z_i - mu_k)(z_i - mu_k)^T / N = (sum_i z_i z_i^T - sum_k n_k mu_k mu_k^T) / N
        return (sum_zz - (nk[:, None] * mu_z).T @ mu_z) / nk.sum()

    def per_unit_weight(self, second, nk):
        return second / nk.sum()

    def factorise(self, cov, second, reg_z, reg_covar, iteration):
        u = inverse_factor(cov + np.diag(reg_z), np.diagonal(second))
        if u is None:
            raise degenerate_error(reg_covar, "the tied", iteration)
        return u

    def empty_as_identity(self, cov, second, empty):
        return cov, second

    def keep_empty(self, new, old, empty):
        return new

    def slack(self, nk, cov, reg_z, d):
        return float(nk.sum() * slack_matrix(cov, reg_z)) / 2


@dataclass(frozen=True, slots=True)
class Diag(CovarianceStructure):
    """A variance per component and feature; design [1, z, z^2]."""

    name: ClassVar[str] = "diag"

    def scale_factor(self, u, s):
        return u * s

    def n_design(self, d):
        return 1 + 2 * d

    def design(self, z, out):
        d = z.shape[0]
        out[1 : 1 + d] = z
        np.square(z, out=out[1 + d :])

    def second_moments(self, sums, zz_total):
        return sums[:, 1 + zz_total.shape[0] :]

    def covariance(self, nk, mu_z, sum_zz):
        return sum_zz / nk[:, None] - np.square(mu_z)

    def per_unit_weight(self, second, nk):
        return second / nk[:, None]

    def empty_as_identity(self, cov, second, empty):
        return np.where(empty[:, None], 1.0, cov), np.where(empty[:, None], 1.0, second)

    def keep_empty(self, new, old, empty):
        return np.where(empty[:, None], old, new)

    def slack(self, nk, cov, reg_z, d):
        return float(np.sum(_weighted(nk[:, None], slack_scalar(cov, reg_z)))) / 2


@dataclass(frozen=True, slots=True)
class Spherical(CovarianceStructure):
    """One variance per component; design [1, z, |z|^2]. Standardised by one common scale, under which
    alone a spherical covariance stays spherical."""

    name: ClassVar[str] = "spherical"

    def frame_scale(self, var):
        rms = float(np.sqrt(np.mean(var)))
        return np.full(var.shape[0], rms if rms > 0 else 1.0)

    def scale_factor(self, u, s):
        return u * np.asarray(s).flat[0]

    def n_design(self, d):
        return 2 + d

    def design(self, z, out):
        d = z.shape[0]
        out[1 : 1 + d] = z
        np.einsum("dn,dn->n", z, z, out=out[1 + d])

    def second_moments(self, sums, zz_total):
        return sums[:, -1]

    def covariance(self, nk, mu_z, sum_zz):
        return (sum_zz / nk - np.sum(np.square(mu_z), axis=1)) / mu_z.shape[1]

    def per_unit_weight(self, second, nk):
        return second / nk

    def reg_z(self, reg_covar, scale):
        return reg_covar / scale[0] ** 2

    def empty_as_identity(self, cov, second, empty):
        return np.where(empty, 1.0, cov), np.where(empty, 1.0, second)

    def keep_empty(self, new, old, empty):
        return np.where(empty, old, new)

    def slack(self, nk, cov, reg_z, d):
        return float(np.sum(_weighted(nk * d, slack_scalar(cov, reg_z)))) / 2


#: The structures by name (``GaussianMixtureModel.covariance_type``).
STRUCTURES: dict[str, CovarianceStructure] = {s.name: s for s in (Full(), Tied(), Diag(), Spherical())}

__all__ = ["PIVOT_RTOL", "STRUCTURES", "CovarianceStructure", "Diag", "Full", "Spherical", "Tied",
           "degenerate_error", "inverse_factor", "lower_inverse", "slack_matrix", "slack_scalar", "upper_triangle"]
