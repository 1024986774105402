"""The Gaussian mixture, defined once for both engines.

x_i ~ sum_k w_k Normal(mu_k, Sigma_k), with the covariance structures of scikit-learn:

- ``full``: each component has its own covariance, ``prec_chol`` (K, D, D);
- ``tied``: all components share one covariance, ``prec_chol`` (D, D);
- ``diag``: each component has a diagonal covariance, ``prec_chol`` (K, D) (1 / sd);
- ``spherical``: each component has one variance, ``prec_chol`` (K,) (1 / sd).

Gaussians are kept as Cholesky factors of the precision (as scikit-learn does): the log-density needs
only a triangular product and the log-determinant is the sum of the log-diagonal. :class:`GaussianMixtureModel`
holds K, the structure, ``reg_covar`` and the priors of the Bayesian fit; the EM engine
(:mod:`emvsbayes.gaussian.em`) and the PyMC engine (:mod:`emvsbayes.gaussian.bayes`) both read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


#: Name -> (dims, label dims) of each parameter of 1-D data, in report order: its dims after any leading
#: draw or replicate dims, and those of them that relabelling permutes (see :func:`parameters`).
PARAMETERS_1D: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "w": (("component",), ("component",)),
    "mu": (("component",), ("component",)),
    "sigma": (("component",), ("component",)),
}
#: The same for multivariate data: a covariance is labelled by its component only (its feature
#: axes name coordinates, which relabelling leaves alone).
PARAMETERS_MULTIVARIATE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "w": (("component",), ("component",)),
    "mu": (("component", "feature"), ("component",)),
    "cov": (("component", "feature", "feature_bis"), ("component",)),
}


def parameters(dim: int) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Name -> (dims, label dims) of each reported parameter for data of ``dim`` coordinates, in report order.

    1-D data report ``sigma`` (the component sd); multivariate data report ``cov``.
    """
    return PARAMETERS_1D if dim == 1 else PARAMETERS_MULTIVARIATE


def parameter_dims(dim: int) -> dict[str, tuple[str, ...]]:
    """Name -> dimensions of each reported parameter, shared by the EM results and the PyMC model.

    1-D data report ``sigma`` (the component sd); multivariate data report ``cov``.
    """
    return {name: dims for name, (dims, _) in parameters(dim).items()}


@dataclass(frozen=True, slots=True)
class GaussianPriors:
    """Priors of the Bayesian fit. ``None`` means "scaled to the data" (weakly informative):

    - ``w ~ Dirichlet(w_concentration)``;
    - ``mu_k ~ Normal(mu_loc, mu_scale)`` per coordinate, default loc = data mean, scale = 2 x data sd
      per coordinate;
    - scales ``~ HalfNormal(sigma_scale)``, default = data sd per coordinate (diag, spherical, 1-D, and
      the sds inside ``LKJCholeskyCov`` for full and tied);
    - correlations ``~ LKJ(lkj_eta)`` (full, tied).
    """

    w_concentration: float = 1.0
    mu_loc: tuple[float, ...] | None = None
    mu_scale: tuple[float, ...] | None = None
    sigma_scale: tuple[float, ...] | None = None
    lkj_eta: float = 2.0


@dataclass(frozen=True, slots=True)
class GaussianParams:
    """Parameters of a Gaussian mixture.

    ``w`` (K,), ``mu`` (K, D), ``prec_chol`` shaped per ``covariance_type`` (see the module docstring).
    """

    w: np.ndarray
    mu: np.ndarray
    prec_chol: np.ndarray
    covariance_type: str = "full"

    def __post_init__(self):
        for name in ("w", "mu", "prec_chol"):
            value = np.array(getattr(self, name), dtype=float)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def n_components(self) -> int:
        return self.w.shape[0]

    @property
    def n_features(self) -> int:
        return self.mu.shape[1]

    @classmethod
    def from_covariances(cls, w, mu, cov, covariance_type: str = "full") -> GaussianParams:
        """Parameters from covariances shaped as scikit-learn's ``covariances_`` for ``covariance_type``.

        ``mu`` may be (K,) for 1-D data. Raises ``numpy.linalg.LinAlgError`` if a covariance is not
        positive definite.
        """
        mu = _as_means(mu)
        return cls(w, mu, _PREC_CHOL_FROM_COV[covariance_type](np.asarray(cov, dtype=float)), covariance_type)

    @classmethod
    def from_precisions(cls, w, mu, precisions, covariance_type: str = "full") -> GaussianParams:
        """Parameters from precisions shaped as scikit-learn's ``precisions_`` (its ``precisions_init``)."""
        mu = _as_means(mu)
        prec = np.asarray(precisions, dtype=float)
        return cls(w, mu, _PREC_CHOL_FROM_PREC[covariance_type](prec), covariance_type)

    def precisions(self) -> np.ndarray:
        """Precision matrices shaped as scikit-learn's ``precisions_`` for this covariance type."""
        return _PRECISIONS[self.covariance_type](self.prec_chol)

    def covariances(self) -> np.ndarray:
        """Covariances shaped as scikit-learn's ``covariances_``: full (K, D, D), tied (D, D),
        diag (K, D), spherical (K,)."""
        return _COVARIANCES[self.covariance_type](self.prec_chol)

    def full_covariances(self) -> np.ndarray:
        """Every component's covariance as a (K, D, D) matrix, whatever the structure."""
        k, d = self.mu.shape
        cov = self.covariances()
        return {
            "full": lambda: cov,
            "tied": lambda: np.broadcast_to(cov, (k, d, d)).copy(),
            "diag": lambda: cov[:, :, None] * np.eye(d),
            "spherical": lambda: cov[:, None, None] * np.eye(d),
        }[self.covariance_type]()

    def log_det_prec_chol(self) -> np.ndarray:
        """log det of each component's precision Cholesky factor (= -1/2 log det Sigma_k), shape (K,)."""
        return _LOG_DET_CHOL[self.covariance_type](self.prec_chol, self.n_components, self.n_features)

    def permuted(self, perm) -> GaussianParams:
        """The same mixture with components renamed: new component j is old ``perm[j]``."""
        perm = np.asarray(perm)
        prec_chol = self.prec_chol if self.covariance_type == "tied" else self.prec_chol[perm]
        return GaussianParams(self.w[perm], self.mu[perm], prec_chol, self.covariance_type)

    def variables(self) -> dict[str, np.ndarray]:
        """The reported parameters, named and shaped as :func:`parameter_dims` says.

        1-D: ``w`` (K,), ``mu`` (K,), ``sigma`` (K,) the component sd. D > 1: ``w`` (K,), ``mu``
        (K, D), ``cov`` (K, D, D) whatever the structure (a tied covariance is repeated per component),
        so results of every structure and of both engines share one set of dimensions.
        """
        if self.n_features == 1:
            sigma = np.sqrt(self.full_covariances()[:, 0, 0])
            return {"w": self.w, "mu": self.mu[:, 0], "sigma": sigma}
        return {"w": self.w, "mu": self.mu, "cov": self.full_covariances()}


def _as_means(mu) -> np.ndarray:
    mu = np.asarray(mu, dtype=float)
    return mu[:, None] if mu.ndim == 1 else mu


def _upper_chol_of_inverse(cov: np.ndarray) -> np.ndarray:
    """U upper triangular with U U^T = cov^{-1}: with cov = L L^T, U = L^{-T}."""
    lower = np.linalg.cholesky(cov)
    eye = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
    return np.swapaxes(np.linalg.solve(lower, eye), -1, -2)


def _upper_chol(prec: np.ndarray) -> np.ndarray:
    """U upper triangular with U U^T = prec: the lower Cholesky factor of the index-reversed matrix,
    reversed back (reversing rows and columns turns lower into upper triangular)."""
    flipped = prec[..., ::-1, ::-1]
    return np.linalg.cholesky(flipped)[..., ::-1, ::-1].copy()


def _check_positive(values: np.ndarray) -> np.ndarray:
    if np.any(values <= 0):
        raise np.linalg.LinAlgError("variances and precisions must be positive")
    return values


_PREC_CHOL_FROM_COV = {
    "full": _upper_chol_of_inverse,
    "tied": _upper_chol_of_inverse,
    "diag": lambda cov: 1.0 / np.sqrt(_check_positive(cov)),
    "spherical": lambda cov: 1.0 / np.sqrt(_check_positive(cov)),
}
_PREC_CHOL_FROM_PREC = {
    "full": _upper_chol,
    "tied": _upper_chol,
    "diag": lambda prec: np.sqrt(_check_positive(prec)),
    "spherical": lambda prec: np.sqrt(_check_positive(prec)),
}
_PRECISIONS = {
    "full": lambda u: u @ np.swapaxes(u, -1, -2),
    "tied": lambda u: u @ u.T,
    "diag": np.square,
    "spherical": np.square,
}


def _inverse_gram(u: np.ndarray) -> np.ndarray:
    # Sigma = (U U^T)^{-1} = U^{-T} U^{-1}; inverting the triangular factor is better conditioned
    # than inverting the precision.
    u_inv = np.linalg.inv(u)
    return np.swapaxes(u_inv, -1, -2) @ u_inv


_COVARIANCES = {
    "full": _inverse_gram,
    "tied": _inverse_gram,
    "diag": lambda u: 1.0 / np.square(u),
    "spherical": lambda u: 1.0 / np.square(u),
}
_LOG_DET_CHOL = {
    "full": lambda u, k, d: np.log(np.diagonal(u, axis1=1, axis2=2)).sum(axis=1),
    "tied": lambda u, k, d: np.full(k, np.log(np.diagonal(u)).sum()),
    "diag": lambda u, k, d: np.log(u).sum(axis=1),
    "spherical": lambda u, k, d: d * np.log(u),
}
_COVARIANCE_PARAMETERS = {
    "full": lambda k, d: k * d * (d + 1) // 2,
    "tied": lambda k, d: d * (d + 1) // 2,
    "diag": lambda k, d: k * d,
    "spherical": lambda k, d: k,
}


def n_free_parameters(n_components: int, dim: int, covariance_type: str) -> int:
    """Free parameters of the mixture, counted as scikit-learn's ``_n_parameters`` (for BIC / AIC):
    K - 1 weights, K D means and the covariance entries of the structure."""
    return (
        n_components - 1
        + n_components * dim
        + _COVARIANCE_PARAMETERS[covariance_type](n_components, dim)
    )


def as_data_matrix(x) -> np.ndarray:
    """Data as a float (N, D) array; a 1-D array is N points of one feature."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"data must be (N,) or (N, D), got shape {x.shape}")
    return x


def log_component_density(params: GaussianParams, x) -> np.ndarray:
    """log Normal(x_i | mu_k, Sigma_k), shape (N, K): the definition, written plainly.

    A per-component loop over the centred data (x - mu_k) U_k; :mod:`emvsbayes.gaussian.em` has the
    fast chunked form, and tests check one against the other.
    """
    x = as_data_matrix(x)
    k, d = params.mu.shape
    out = np.empty((x.shape[0], k))
    for j in range(k):
        out[:, j] = -0.5 * np.sum(np.square(_whiten(params, x - params.mu[j], j)), axis=1)
    return out + params.log_det_prec_chol() - 0.5 * d * math.log(2 * math.pi)


def _whiten(params: GaussianParams, diff: np.ndarray, j: int) -> np.ndarray:
    """(x - mu_j) U_j for component j, whatever the structure."""
    u = params.prec_chol
    return {
        "full": lambda: diff @ u[j],
        "tied": lambda: diff @ u,
        "diag": lambda: diff * u[j],
        "spherical": lambda: diff * u[j],
    }[params.covariance_type]()


@dataclass(frozen=True, slots=True)
class GaussianMixtureModel:
    """The model: K, covariance structure, regularisation of EM's covariances, and the Bayesian priors.

    ``ordered`` selects the identified variant of the Bayesian fit (means increasing along the first
    coordinate); ``False`` is the symmetric model, whose posterior switches labels.
    """

    n_components: int = 2
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    ordered: bool = False
    priors: GaussianPriors = field(default_factory=GaussianPriors)

    def __post_init__(self):
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}")

    def n_free_parameters(self, dim: int) -> int:
        """Free parameters for D = ``dim`` features (scikit-learn's count, used by BIC / AIC)."""
        return n_free_parameters(self.n_components, dim, self.covariance_type)

    def log_joint(self, params: GaussianParams, x) -> np.ndarray:
        """log w_k + log Normal(x_i | mu_k, Sigma_k), shape (N, K)."""
        with np.errstate(divide="ignore"):
            log_w = np.log(params.w)
        return log_w + log_component_density(params, x)

    def loglik(self, params: GaussianParams, x) -> float:
        """Observed-data log-likelihood, the labels summed out."""
        return float(logsumexp(self.log_joint(params, x), axis=1).sum())

    def validate_params(self, params: GaussianParams) -> None:
        """Raise ``ValueError`` unless ``params`` fit this model: shapes, structure, weights, factors."""
        k = self.n_components
        if params.covariance_type != self.covariance_type:
            raise ValueError(
                f"parameters are {params.covariance_type!r} but the model is {self.covariance_type!r}"
            )
        if params.w.shape != (k,) or params.mu.ndim != 2 or params.mu.shape[0] != k:
            raise ValueError(f"expected w of shape ({k},) and mu of shape ({k}, D)")
        d = params.mu.shape[1]
        expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[self.covariance_type]
        if params.prec_chol.shape != expected:
            raise ValueError(
                f"{self.covariance_type} prec_chol must have shape {expected}, got {params.prec_chol.shape}"
            )
        if np.any(params.w < 0) or not np.isclose(params.w.sum(), 1.0):
            raise ValueError("w must be non-negative and sum to 1")
        diag = {
            "full": lambda u: np.diagonal(u, axis1=1, axis2=2),
            "tied": np.diagonal,
            "diag": lambda u: u,
            "spherical": lambda u: u,
        }[self.covariance_type](params.prec_chol)
        if not np.all(np.isfinite(params.mu)) or not np.all(diag > 0):
            raise ValueError("mu must be finite and the precision factors must have a positive diagonal")
