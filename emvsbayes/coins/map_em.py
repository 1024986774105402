"""EM for the posterior mode (MAP) of the coin mixture under the PyMC model's own priors
(:mod:`emvsbayes.coins.bayes`): the family's ``map_fit``.

The M-step maximises the expected complete-data log-likelihood plus the log prior: with the Beta(a, b) prior
on each theta_k and the Dirichlet(alpha) prior on w (when estimated) that is closed form,

    theta_k = (H_k + a - 1) / (H_k + T_k + a + b - 2),   w_k = (n_k + alpha - 1) / (N + K (alpha - 1)),

with H_k, T_k, n_k the E-step's expected heads, tails and sets of coin k. EM then never lowers the log
posterior log p(y | theta, w) + log p(theta, w), which is the objective :func:`fit_coin_map` reports and
:func:`emvsbayes.em.fit_em` checks. This is the mode of the posterior density of (theta, w) themselves
(PyMC's ``compile_logp(jacobian=False)``), not of the unconstrained density the Laplace rung uses. With
a = b = alpha = 1 it is the MLE. A prior parameter below 1 makes the density unbounded at a boundary,
where no mode exists; such priors are refused.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import betaln, xlog1py, xlogy

from emvsbayes.coins.em import CoinStats, e_step
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.em import EMFit, fit_em
from emvsbayes.family import check_mode_concentration, dirichlet_log_density, dirichlet_mode_weights

__all__ = ["coin_log_prior", "coin_map_m_step", "fit_coin_map"]


def _check_priors(model_def: CoinMixture) -> None:
    a, b = model_def.theta_prior
    check_mode_concentration("theta_prior's a", a)
    check_mode_concentration("theta_prior's b", b)
    if model_def.weights == "estimated":
        check_mode_concentration("w_concentration", model_def.w_concentration)


def coin_log_prior(model_def: CoinMixture, params: CoinParams) -> float:
    """log p(theta, w) with normalising constants (PyMC's Beta and Dirichlet log densities)."""
    a, b = model_def.theta_prior
    theta = params.theta
    with np.errstate(divide="ignore"):
        out = float(np.sum(xlogy(a - 1, theta) + xlog1py(b - 1, -theta) - betaln(a, b)))
    if model_def.weights == "estimated":
        out += dirichlet_log_density(params.w, model_def.w_concentration)
    return out


def coin_map_m_step(model_def: CoinMixture, stats: CoinStats, params: CoinParams) -> CoinParams:
    """The M-step with the priors' terms (formulas in the module docstring). A coin whose update is 0 / 0
    (no tosses and a flat prior) keeps its current theta."""
    a, b = model_def.theta_prior
    num = stats.heads + a - 1
    den = stats.heads + stats.tails + a + b - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.where(den > 0, num / den, params.theta)
    if model_def.weights == "equal":
        w = model_def.equal_weights
    else:
        w = dirichlet_mode_weights(stats.sets, model_def.w_concentration)
    return CoinParams(theta, w)


def _map_e_step(model_def: CoinMixture, heads, tosses, params: CoinParams):
    stats, loglik = e_step(model_def, heads, tosses, params)
    return stats, loglik + coin_log_prior(model_def, params)


def fit_coin_map(model_def: CoinMixture, heads, tosses, init: CoinParams, **options) -> EMFit:
    """MAP-EM from ``init``; ``EMFit.loglik`` is the log posterior (log-likelihood + log prior, PyMC's
    constants) at the answer; ``options`` as :func:`emvsbayes.em.fit_em`."""
    _check_priors(model_def)
    model_def.validate_params(init)
    return fit_em(partial(_map_e_step, model_def, heads, tosses), partial(coin_map_m_step, model_def), init,
                  **options)
