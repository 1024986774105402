"""The Poisson mixture: K Poisson rates and their weights, one definition read by EM and by PyMC.

x_i ~ sum_k w_k Poisson(rate_k), independently for i = 1..N. Bayesian priors:
rate_k ~ Gamma(alpha, beta) (shape alpha, rate beta, mean alpha / beta), w ~ Dirichlet(w_concentration).

The default rate prior is scaled to the data (:func:`default_rate_prior`): shape 2 and mean equal to the
mean count. Shape 2 puts zero density at rate 0, so a component that holds almost no data is not pulled onto
a rate of 0 (where its log density has a pole with shape < 1); its central 95 % runs from 0.12 to 2.8 times
the mean count, wide enough for any component of a mixture whose overall mean is that count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, logsumexp, xlogy

#: Shape of the data-scaled Gamma prior on every rate (see the module docstring).
DEFAULT_RATE_SHAPE = 2.0


def parameter_dims() -> dict[str, tuple[str, ...]]:
    """Name -> dimensions of each reported parameter, shared by the EM results and the PyMC model."""
    return {"w": ("component",), "rate": ("component",)}


def default_rate_prior(counts) -> tuple[float, float]:
    """``(alpha, beta)`` of the data-scaled Gamma prior: shape 2, mean = the mean count (at least 0.5, so
    all-zero data still give a proper prior)."""
    mean = max(float(np.mean(np.asarray(counts, dtype=float))), 0.5)
    return (DEFAULT_RATE_SHAPE, DEFAULT_RATE_SHAPE / mean)


@dataclass(frozen=True, slots=True)
class PoissonParams:
    """Parameters of a K-component Poisson mixture: ``w`` (K,) weights, ``rate`` (K,) Poisson means.

    Fields may carry leading axes (a batch of fits: (B, K)); the methods below assume one fit.
    """

    w: np.ndarray
    rate: np.ndarray

    def __post_init__(self):
        for name in ("w", "rate"):
            value = np.array(getattr(self, name), dtype=float)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def n_components(self) -> int:
        return int(self.w.shape[-1])

    def permuted(self, perm) -> PoissonParams:
        """The same mixture with components renamed: new component j is old ``perm[j]``."""
        perm = np.asarray(perm)
        return PoissonParams(self.w[perm], self.rate[perm])

    def variables(self) -> dict[str, np.ndarray]:
        """The reported parameters, named and shaped as :func:`parameter_dims` says."""
        return {"w": self.w, "rate": self.rate}


def log_poisson(counts, rate) -> np.ndarray:
    """log Poisson(x_i | rate_k), shape (..., N, K) for ``counts`` (..., N) and ``rate`` (..., K).

    ``xlogy`` makes a rate of exactly 0 give log 1 = 0 for a count of 0 and -inf otherwise, not NaN.
    """
    x = np.asarray(counts, dtype=float)[..., :, None]
    rate = np.asarray(rate, dtype=float)[..., None, :]
    with np.errstate(divide="ignore"):
        return xlogy(x, rate) - rate - gammaln(x + 1.0)


@dataclass(frozen=True, slots=True)
class PoissonMixture:
    """The model: K, the priors of the Bayesian fit, and which Bayesian variant.

    Parameters
    ----------
    n_components
        K, the number of Poisson components.
    rate_prior
        ``(alpha, beta)``: shape and rate of the Gamma prior on every ``rate[k]``; ``None`` until resolved
        from the data by :meth:`with_data_prior` (:func:`default_rate_prior`). EM does not use it.
    w_concentration
        Symmetric Dirichlet concentration of the weights' prior.
    ordered
        The identified variant: ``rate`` increasing in the Bayesian fit. ``False`` is the symmetric
        (exchangeable) model, whose posterior shows label switching.
    """

    n_components: int = 2
    rate_prior: tuple[float, float] | None = None
    w_concentration: float = 1.0
    ordered: bool = False

    def __post_init__(self):
        if not (isinstance(self.n_components, int | np.integer) and self.n_components >= 1):
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.rate_prior is not None:
            alpha, beta = (float(v) for v in self.rate_prior)
            if not (alpha > 0 and beta > 0 and np.isfinite(alpha) and np.isfinite(beta)):
                raise ValueError(f"rate_prior (alpha, beta) must be positive and finite, got {self.rate_prior!r}")
            object.__setattr__(self, "rate_prior", (alpha, beta))
        if not self.w_concentration > 0:
            raise ValueError(f"w_concentration must be positive, got {self.w_concentration!r}")

    def with_data_prior(self, counts) -> PoissonMixture:
        """This model with ``rate_prior`` filled in from ``counts`` when it is ``None``."""
        if self.rate_prior is not None:
            return self
        return PoissonMixture(self.n_components, default_rate_prior(counts), self.w_concentration, self.ordered)

    def log_component_density(self, rate, counts) -> np.ndarray:
        """log Poisson(x_i | rate_k), shape (..., N, K)."""
        return log_poisson(counts, rate)

    def log_joint(self, params: PoissonParams, counts) -> np.ndarray:
        """log w_k + log Poisson(x_i | rate_k), shape (N, K)."""
        with np.errstate(divide="ignore"):
            log_w = np.log(params.w)
        return log_w[..., None, :] + log_poisson(counts, params.rate)

    def loglik(self, params: PoissonParams, counts) -> float:
        """Observed-data log-likelihood, the labels summed out."""
        return float(logsumexp(self.log_joint(params, counts), axis=-1).sum())

    def n_free_parameters(self) -> int:
        """K rates and K - 1 weights (for BIC / AIC)."""
        return 2 * self.n_components - 1

    def validate_params(self, params: PoissonParams) -> None:
        """Raise ``ValueError`` unless ``params`` fit this model: shapes, a simplex of weights, rates >= 0."""
        k = self.n_components
        if params.w.shape != (k,) or params.rate.shape != (k,):
            raise ValueError(f"expected w and rate of shape ({k},), got {params.w.shape} and {params.rate.shape}")
        if np.any(params.w < 0) or not np.isclose(params.w.sum(), 1.0):
            raise ValueError("w must be non-negative and sum to 1")
        if not np.all(np.isfinite(params.rate)) or np.any(params.rate < 0):
            raise ValueError(f"rate must be finite and non-negative, got {params.rate.tolist()}")
