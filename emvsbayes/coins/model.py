"""The coin (binomial) mixture, defined once for both engines.

Set i is ``n_i`` tosses of one coin whose identity ``z_i`` is hidden; ``h_i`` heads are seen.
``theta[k]`` is P(heads) of coin k and ``w[k]`` = P(z_i = k). The weights are either estimated
(Dirichlet prior in the Bayesian fit, closed-form update in EM) or fixed equal to 1/K, the textbook
setting. :class:`CoinMixture` holds that choice and the priors; :mod:`emvsbayes.coins.em`,
:mod:`emvsbayes.coins.bayes` and :mod:`emvsbayes.coins.exact` all read it, so the two engines fit the
same model with the same names and dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from emvsbayes.em import logsumexp  # SciPy's, bit for bit, without its per-call dispatch

#: Name -> (dims, label dims) of each parameter, in report order: its dims after any leading draw or
#: replicate dims, and those of them that relabelling permutes (``results.declare_parameters`` writes
#: the label dims into ``results.nc``; relabelling and the report read them there).
PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "theta": (("component",), ("component",)),
    "w": (("component",), ("component",)),
}
#: Name -> dimensions of each parameter, shared by the EM results and the PyMC model.
PARAMETER_DIMS: dict[str, tuple[str, ...]] = {name: dims for name, (dims, _) in PARAMETERS.items()}

WeightsMode = Literal["estimated", "equal"]


@dataclass(frozen=True, slots=True)
class CoinParams:
    """Parameters of a K-coin mixture: ``theta`` (K,) P(heads) per coin, ``w`` (K,) coin weights."""

    theta: np.ndarray
    w: np.ndarray

    def __post_init__(self):
        for name in ("theta", "w"):
            value = np.array(getattr(self, name), dtype=float)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def permuted(self, perm) -> CoinParams:
        """The same mixture with components renamed: new component j is old ``perm[j]``."""
        perm = np.asarray(perm)
        return CoinParams(self.theta[perm], self.w[perm])

    def variables(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta, "w": self.w}


@dataclass(frozen=True, slots=True)
class CoinMixture:
    """The model: K coins, how the weights are treated, and the priors of the Bayesian fit.

    Parameters
    ----------
    n_components
        K, the number of coins.
    weights
        ``"estimated"`` (EM updates ``w``; PyMC puts ``w ~ Dirichlet(w_concentration)``) or
        ``"equal"`` (``w = 1/K`` fixed in both engines).
    theta_prior
        ``(a, b)`` of the Beta prior on every ``theta[k]``.
    w_concentration
        Symmetric Dirichlet concentration of the weights' prior.
    ordered
        The identified variant: ``theta`` increasing in the Bayesian fit. ``False`` is the symmetric
        (exchangeable) model, whose posterior shows label switching.
    """

    n_components: int = 2
    weights: WeightsMode = "equal"
    theta_prior: tuple[float, float] = (1.0, 1.0)
    w_concentration: float = 1.0
    ordered: bool = False

    @property
    def equal_weights(self) -> np.ndarray:
        return np.full(self.n_components, 1.0 / self.n_components)

    def log_component_likelihood(self, theta: np.ndarray, heads: np.ndarray, tosses: np.ndarray) -> np.ndarray:
        """log Binomial(h_i | n_i, theta_k), shape (..., N, K) for ``theta`` of shape (..., K) and
        ``heads``, ``tosses`` (..., N) (broadcast against each other).

        Written with ``xlogy`` so that theta of exactly 0 or 1 gives -inf only where the
        data make it impossible (and 0 where it is certain), not NaN.
        """
        theta = np.asarray(theta, dtype=float)[..., None, :]
        h = np.asarray(heads, dtype=float)[..., None]
        n = np.asarray(tosses, dtype=float)[..., None]
        log_choose = gammaln(n + 1) - gammaln(h + 1) - gammaln(n - h + 1)
        with np.errstate(divide="ignore"):
            return log_choose + xlogy(h, theta) + xlog1py(n - h, -theta)

    def log_joint(self, params: CoinParams, heads, tosses) -> np.ndarray:
        """log w_k + log Binomial(h_i | n_i, theta_k), shape (N, K)."""
        with np.errstate(divide="ignore"):
            log_w = np.log(params.w)
        return log_w + self.log_component_likelihood(params.theta, heads, tosses)

    def loglik(self, params: CoinParams, heads, tosses) -> float:
        """Observed-data log-likelihood, the coin labels summed out."""
        return float(logsumexp(self.log_joint(params, heads, tosses), axis=1).sum())

    def n_free_parameters(self) -> int:
        return self.n_components + (self.n_components - 1 if self.weights == "estimated" else 0)

    def validate_params(self, params: CoinParams) -> None:
        k = self.n_components
        if params.theta.shape != (k,) or params.w.shape != (k,):
            raise ValueError(f"expected theta and w of shape ({k},)")
        if np.any((params.theta < 0) | (params.theta > 1)):
            raise ValueError("theta must lie in [0, 1]")
        if np.any(params.w < 0) or not np.isclose(params.w.sum(), 1.0):
            raise ValueError("w must be non-negative and sum to 1")
