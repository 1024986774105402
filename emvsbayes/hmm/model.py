"""The hidden Markov model, defined once for both engines.

A hidden state ``z_t`` in {0, ..., K-1} follows a Markov chain: ``z_0 ~ initial``, ``z_t | z_{t-1} = i ~
transition[i]``; each observation depends on its own state only: ``y_t | z_t = k ~ Poisson(rate[k])`` (counts)
or ``Normal(mu[k], sigma[k])`` (one real number per time point). The initial distribution is either
estimated or the chain's stationary distribution (``initial = stationary(transition)``, for a series observed
from the middle of a running chain).

:class:`HiddenMarkovModel` holds K, the emission, the initial-distribution choice and the priors of the
Bayesian fit; :mod:`emvsbayes.hmm.em` (Baum-Welch) and :mod:`emvsbayes.hmm.bayes` (PyMC) both read it.
Relabelling the states permutes the initial vector, the emission parameters and both the rows and the
columns of the transition matrix (:meth:`HMMParams.permuted`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln, xlogy

EMISSIONS = ("poisson", "gaussian")
INITIAL_MODES = ("estimated", "stationary")


def emission_names(emission: str) -> tuple[str, ...]:
    """The emission parameters of ``emission``, in report order."""
    return {"poisson": ("rate",), "gaussian": ("mu", "sigma")}[emission]


def parameter_dims(emission: str) -> dict[str, tuple[str, ...]]:
    """Name -> dimensions of each reported parameter (EM results and PyMC model alike).

    ``transition`` is (``component``, ``component_to``): row ``i`` is the distribution of the next state
    given state ``i``; both dims name states, so relabelling permutes both.
    """
    dims = {"initial": ("component",), "transition": ("component", "component_to")}
    return dims | {name: ("component",) for name in emission_names(emission)}


@dataclass(frozen=True, slots=True)
class HMMParams:
    """Parameters of a K-state hidden Markov model.

    ``initial`` (K,) P(z_0 = k); ``transition`` (K, K), row i = P(z_t = . | z_{t-1} = i), rows sum to 1;
    Poisson emissions: ``rate`` (K,); Gaussian emissions: ``mu`` (K,) and ``sigma`` (K,) (sd). The fields of
    the other emission are None. A record may carry a leading replicate axis on every array (batched fits,
    posterior draws).
    """

    initial: np.ndarray
    transition: np.ndarray
    rate: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None

    def __post_init__(self):
        for name in ("initial", "transition", "rate", "mu", "sigma"):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.array(value, dtype=float)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        if (self.rate is None) == (self.mu is None) or (self.mu is None) != (self.sigma is None):
            raise ValueError("HMMParams needs either rate (Poisson) or mu and sigma (Gaussian)")

    @property
    def emission(self) -> str:
        return "poisson" if self.rate is not None else "gaussian"

    @property
    def n_components(self) -> int:
        return self.initial.shape[-1]

    def permuted(self, perm) -> HMMParams:
        """The same model with states renamed: new state j is old ``perm[j]`` (rows and columns of the
        transition matrix permuted together)."""
        perm = np.asarray(perm)
        return HMMParams(
            self.initial[..., perm],
            self.transition[..., perm, :][..., :, perm],
            *(None if v is None else v[..., perm] for v in (self.rate, self.mu, self.sigma)),
        )

    def variables(self) -> dict[str, np.ndarray]:
        """The reported parameters, named and shaped as :func:`parameter_dims` says."""
        out = {"initial": self.initial, "transition": self.transition}
        return out | {name: getattr(self, name) for name in emission_names(self.emission)}


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """The stationary distribution ``delta`` (``delta A = delta``, ``sum delta = 1``) of each (..., K, K)
    transition matrix, by solving ``delta (I - A + U) = 1`` (U all ones; Zucchini & MacDonald 2016, 2.3.3),
    which is non-singular for an irreducible chain."""
    a = np.asarray(transition, dtype=float)
    k = a.shape[-1]
    system = np.eye(k) - a + 1.0
    # delta M = 1  <=>  M^T delta^T = 1
    # The right-hand side as a column (..., K, 1): a (S, K) one would be read as one K x S matrix.
    return np.linalg.solve(np.swapaxes(system, -1, -2), np.ones(a.shape[:-1])[..., None])[..., 0]


@dataclass(frozen=True, slots=True)
class HMMPriors:
    """Priors of the Bayesian fit. ``None`` means "scaled to the data" (weakly informative):

    - each transition row ``A[i] ~ Dirichlet(transition_concentration[i])``: a number (the same for every
      entry) or a K x K matrix; default 1 off the diagonal and 1 + K on it (states tend to persist, as
      the series this family is for do; the prior mean of ``A[i, i]`` is (1 + K) / (2K));
    - ``initial ~ Dirichlet(initial_concentration)`` (estimated initial distribution only);
    - Poisson: ``rate[k] ~ Gamma(shape, rate)``, ``rate_prior = (shape, rate)``; default ``(2, 2 / mean(y))``,
      prior mean the data mean;
    - Gaussian: ``mu[k] ~ Normal(mu_loc, mu_scale)`` (default data mean and 2 x data sd) and
      ``sigma[k] ~ HalfNormal(sigma_scale)`` (default data sd).
    """

    transition_concentration: float | tuple[tuple[float, ...], ...] | None = None
    initial_concentration: float = 1.0
    rate_prior: tuple[float, float] | None = None
    mu_loc: float | None = None
    mu_scale: float | None = None
    sigma_scale: float | None = None


@dataclass(frozen=True, slots=True)
class HiddenMarkovModel:
    """The model: K states, the emission, the initial distribution and the Bayesian priors.

    ``ordered`` selects the identified variant of the Bayesian fit (``rate`` or ``mu`` increasing);
    ``False`` is the symmetric model, exchangeable in the states, whose posterior switches labels.
    """

    n_components: int = 2
    emission: str = "poisson"
    initial: str = "estimated"
    ordered: bool = False
    priors: HMMPriors = field(default_factory=HMMPriors)

    def __post_init__(self):
        if self.emission not in EMISSIONS:
            raise ValueError(f"emission must be one of {EMISSIONS}, got {self.emission!r}")
        if self.initial not in INITIAL_MODES:
            raise ValueError(f"initial must be one of {INITIAL_MODES}, got {self.initial!r}")

    @property
    def stationary(self) -> bool:
        return self.initial == "stationary"

    def n_free_parameters(self) -> int:
        """K (K - 1) transition probabilities, K - 1 initial probabilities when estimated, and the emission
        parameters (K rates, or K means and K sds): the count BIC and AIC use."""
        k = self.n_components
        return k * (k - 1) + (0 if self.stationary else k - 1) + k * len(emission_names(self.emission))

    def log_emission(self, params: HMMParams, y) -> np.ndarray:
        """log p(y_t | z_t = k), shape (..., T, K) for parameters (..., K) and ``y`` (..., T).

        Computed as (..., K, T) and returned as its transposed view: with the long axis innermost numpy's
        elementwise loops run 2 to 3 times faster (at T = 1e6, K = 4) than over rows of K, and the Baum-Welch
        E-step reads it by state (:mod:`emvsbayes.hmm.compiled_estep`). The values are the same either way.
        """
        y = np.asarray(y, dtype=float)[..., None, :]
        if self.emission == "poisson":
            rate = params.rate[..., :, None]
            # xlogy: a rate of exactly 0 gives log 1 for y = 0 and -inf otherwise, not NaN.
            by_state = xlogy(y, rate) - rate - gammaln(y + 1)
        else:
            sigma = params.sigma[..., :, None]
            z = (y - params.mu[..., :, None]) / sigma
            by_state = -0.5 * z * z - np.log(sigma) - 0.5 * math.log(2 * math.pi)
        return np.swapaxes(by_state, -1, -2)

    def log_initial(self, params: HMMParams) -> np.ndarray:
        """log P(z_0 = k) (..., K): ``initial``, or the stationary distribution of ``transition``."""
        initial = stationary_distribution(params.transition) if self.stationary else params.initial
        with np.errstate(divide="ignore"):
            return np.log(np.clip(initial, 0.0, None))

    def with_initial(self, initial, transition, **emission) -> HMMParams:
        """A parameter record whose ``initial`` is the stationary one when the model says so."""
        if self.stationary:
            initial = np.clip(stationary_distribution(transition), 0.0, None)
            initial = initial / initial.sum(axis=-1, keepdims=True)
        return HMMParams(initial, transition, **emission)

    def validate_params(self, params: HMMParams) -> None:
        """Raise ``ValueError`` unless ``params`` fit this model: emission, shapes, simplex rows, positivity."""
        k = self.n_components
        if params.emission != self.emission:
            raise ValueError(f"parameters have {params.emission} emissions but the model {self.emission}")
        if params.initial.shape != (k,) or params.transition.shape != (k, k):
            raise ValueError(f"expected initial of shape ({k},) and transition of shape ({k}, {k})")
        for name in emission_names(self.emission):
            if getattr(params, name).shape != (k,):
                raise ValueError(f"expected {name} of shape ({k},)")
        if np.any(params.initial < 0) or not np.isclose(params.initial.sum(), 1.0):
            raise ValueError("initial must be non-negative and sum to 1")
        if np.any(params.transition < 0) or not np.allclose(params.transition.sum(axis=1), 1.0):
            raise ValueError("every row of transition must be non-negative and sum to 1")
        if self.emission == "poisson" and not np.all(np.isfinite(params.rate) & (params.rate >= 0)):
            raise ValueError("rate must be finite and >= 0")
        if self.emission == "gaussian" and not (np.all(np.isfinite(params.mu)) and np.all(params.sigma > 0)
                                                and np.all(np.isfinite(params.sigma))):
            raise ValueError("mu must be finite and sigma finite and > 0")
