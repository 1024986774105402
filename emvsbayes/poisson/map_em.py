"""EM for the posterior mode (MAP) of the Poisson mixture under the PyMC model's own priors
(:mod:`emvsbayes.poisson.bayes`): the family's ``map_fit``.

With ``rate_k ~ Gamma(a, b)`` (shape a, rate b) and ``w ~ Dirichlet(alpha)`` the M-step that maximises the
expected complete-data log-likelihood plus the log prior is closed form,

    rate_k = (X_k + a - 1) / (n_k + b),   w_k = (n_k + alpha - 1) / (N + K (alpha - 1)),

with n_k the E-step's expected rows of component k and X_k the expected sum of their counts; EM then
never lowers the log posterior log p(x | rate, w) + log p(rate, w) (PyMC's ``compile_logp(jacobian=False)``,
constants included), the objective :func:`fit_poisson_map` reports. A shape a < 1 or alpha < 1 makes the
prior unbounded at 0, where there is no mode: refused.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import gammaln, xlogy

from emvsbayes.em import EMFit, fit_em
from emvsbayes.family import check_mode_concentration, dirichlet_log_density, dirichlet_mode_weights
from emvsbayes.poisson.em import PoissonStats, e_step
from emvsbayes.poisson.model import PoissonMixture, PoissonParams

__all__ = ["fit_poisson_map", "poisson_log_prior", "poisson_map_m_step"]


def _check_priors(model_def: PoissonMixture) -> None:
    if model_def.rate_prior is None:
        raise ValueError("the model's rate_prior is not set; resolve it from the data with model_def.with_data_prior(counts)")
    check_mode_concentration("rate_prior's shape", model_def.rate_prior[0])
    check_mode_concentration("w_concentration", model_def.w_concentration)


def poisson_log_prior(model_def: PoissonMixture, params: PoissonParams) -> float:
    """log p(rate, w): Gamma(a, b) on each rate and Dirichlet(alpha) on w, with PyMC's constants."""
    a, b = model_def.rate_prior
    with np.errstate(divide="ignore"):
        gamma = np.sum(a * np.log(b) - gammaln(a) + xlogy(a - 1, params.rate) - b * params.rate)
    return float(gamma) + dirichlet_log_density(params.w, model_def.w_concentration)


def poisson_map_m_step(model_def: PoissonMixture, stats: PoissonStats, params: PoissonParams) -> PoissonParams:
    """The M-step with the priors' terms (formulas in the module docstring)."""
    a, b = model_def.rate_prior
    return PoissonParams(dirichlet_mode_weights(stats.n, model_def.w_concentration), (stats.total + a - 1) / (stats.n + b))


def _map_e_step(model_def: PoissonMixture, counts, params: PoissonParams):
    stats, loglik = e_step(model_def, counts, params)
    return stats, loglik + poisson_log_prior(model_def, params)


def fit_poisson_map(model_def: PoissonMixture, counts, init: PoissonParams, **options) -> EMFit:
    """MAP-EM from ``init``; ``EMFit.loglik`` is the log posterior at the answer; ``options`` as
    :func:`emvsbayes.em.fit_em`. ``ValueError`` when a prior has no mode."""
    _check_priors(model_def)
    model_def.validate_params(init)
    counts = np.asarray(counts, dtype=float)
    return fit_em(partial(_map_e_step, model_def, counts), partial(poisson_map_m_step, model_def), init, **options)
