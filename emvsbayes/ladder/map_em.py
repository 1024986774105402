"""EM for the posterior mode (MAP) under the PyMC model's own priors: the coin mixture, and the 1-D Gaussian mixture.

Coins: the M-step maximises the expected complete-data log-likelihood plus the log prior: with the Beta(a, b)
prior on each theta_k and the Dirichlet(alpha) prior on w (when estimated) that is closed form,

    theta_k = (H_k + a - 1) / (H_k + T_k + a + b - 2),   w_k = (n_k + alpha - 1) / (N + K (alpha - 1)),

with H_k, T_k, n_k the E-step's expected heads, tails and sets of coin k. EM then never lowers the log
posterior log p(y | theta, w) + log p(theta, w), which is the objective :func:`fit_coin_map` reports and
:func:`emvsbayes.em.fit_em` checks. This is the mode of the posterior density of (theta, w) themselves
(PyMC's ``compile_logp(jacobian=False)``), not of the unconstrained density the Laplace rung uses. With
a = b = alpha = 1 it is the MLE. A prior parameter below 1 makes the density unbounded at a boundary,
where no mode exists; such priors are refused.

1-D Gaussian mixture (one sd per component): the priors Dirichlet(alpha), Normal(m0, s0) on each mean and
HalfNormal(tau) on each sd (:func:`emvsbayes.gaussian.bayes.prior_values`) give closed-form conditional
maximisers, applied in turn (ECM, :func:`gaussian_1d_map_m_step`). Multivariate Gaussian mixtures (an LKJ
prior on the correlations) are not covered.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import betaln, gammaln, xlog1py, xlogy

from emvsbayes.coins.em import CoinStats, e_step
from emvsbayes.coins.model import CoinMixture, CoinParams
from emvsbayes.em import EMFit, fit_em

__all__ = ["ASSUMES", "coin_log_prior", "coin_map_m_step", "fit_coin_map", "fit_gaussian_1d_map", "gaussian_1d_log_prior",
           "gaussian_1d_map_m_step"]

#: What this rung assumes, one sentence for the report.
ASSUMES = ("MAP by EM: the most probable parameter values under the Bayesian model's own priors stand for the "
           "posterior (a point, one labelling, no spread).")


def _check_priors(model_def: CoinMixture) -> None:
    a, b = model_def.theta_prior
    if a < 1 or b < 1:
        raise ValueError(f"theta_prior = ({a}, {b}): a Beta prior with a parameter below 1 has no mode inside "
                         "[0, 1] (its density is unbounded at the edge): use parameters >= 1 for MAP-EM")
    if model_def.weights == "estimated" and model_def.w_concentration < 1:
        raise ValueError(f"w_concentration = {model_def.w_concentration}: a Dirichlet prior below 1 has no mode "
                         "(unbounded where a weight is 0): use a concentration >= 1 for MAP-EM")


def coin_log_prior(model_def: CoinMixture, params: CoinParams) -> float:
    """log p(theta, w) with normalising constants (PyMC's Beta and Dirichlet log densities)."""
    a, b = model_def.theta_prior
    theta = params.theta
    with np.errstate(divide="ignore"):
        out = float(np.sum(xlogy(a - 1, theta) + xlog1py(b - 1, -theta) - betaln(a, b)))
        if model_def.weights == "estimated":
            alpha, k = model_def.w_concentration, model_def.n_components
            out += float(gammaln(k * alpha) - k * gammaln(alpha) + np.sum(xlogy(alpha - 1, params.w)))
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
        counts = stats.sets + model_def.w_concentration - 1
        w = counts / counts.sum()
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


# --------------------------------------------------------------------------------------------------
# One-dimensional Gaussian mixture (covariance "full", "diag" or "spherical": one sd per component)


def _gaussian_1d_priors(model_def, x: np.ndarray) -> tuple[float, float, float, float]:
    from emvsbayes.gaussian.bayes import prior_values

    if model_def.covariance_type == "tied":
        raise ValueError("MAP-EM for a 1-D Gaussian mixture covers one sd per component, not 'tied'")
    alpha = float(model_def.priors.w_concentration)
    if alpha < 1:
        raise ValueError(f"w_concentration = {alpha}: a Dirichlet prior below 1 has no mode (unbounded where a "
                         "weight is 0): use a concentration >= 1 for MAP-EM")
    prior = prior_values(model_def, x[:, None])
    return alpha, float(prior["mu_loc"][0]), float(prior["mu_scale"][0]), float(prior["sigma_scale"][0])


def gaussian_1d_log_prior(model_def, x, params) -> float:
    """log p(w, mu, sigma) of the PyMC model's 1-D priors (Dirichlet, Normal, HalfNormal), constants included."""
    alpha, m0, s0, tau = _gaussian_1d_priors(model_def, np.asarray(x, dtype=float).ravel())
    v = params.variables()
    k = len(v["w"])
    with np.errstate(divide="ignore"):
        out = gammaln(k * alpha) - k * gammaln(alpha) + np.sum(xlogy(alpha - 1, v["w"]))
    out += np.sum(-0.5 * np.log(2 * np.pi * s0**2) - (v["mu"] - m0) ** 2 / (2 * s0**2))
    out += np.sum(0.5 * np.log(2 / (np.pi * tau**2)) - v["sigma"] ** 2 / (2 * tau**2))
    return float(out)


def _gaussian_1d_e_step(model_def, x, params):
    from scipy.special import logsumexp
    from scipy.stats import norm

    v = params.variables()
    with np.errstate(divide="ignore"):
        log_joint = np.log(v["w"]) + norm.logpdf(x[:, None], v["mu"], v["sigma"])
    log_norm = logsumexp(log_joint, axis=1, keepdims=True)
    return np.exp(log_joint - log_norm), float(log_norm.sum()) + gaussian_1d_log_prior(model_def, x, params)


def gaussian_1d_map_m_step(model_def, x, resp: np.ndarray, params):
    """One ECM step with the priors' terms, each closed form given the others:

    w_k = (n_k + alpha - 1) / (N + K (alpha - 1));
    mu_k = (sum_i r_ik x_i / sigma_k^2 + m0 / s0^2) / (n_k / sigma_k^2 + 1 / s0^2) with the current sigma_k
    (Normal(m0, s0) prior);
    sigma_k^2 = v, the positive root of v^2 / tau^2 + n_k v - S_k = 0 with S_k = sum_i r_ik (x_i - mu_k)^2 at
    the new mu_k (HalfNormal(tau) prior: d/dsigma of -n_k log sigma - S_k / (2 sigma^2) - sigma^2 / (2 tau^2)).
    Each conditional maximisation raises the log posterior, so the step does (ECM, Meng & Rubin 1993).
    """
    from emvsbayes.gaussian.model import GaussianParams

    alpha, m0, s0, tau = _gaussian_1d_priors(model_def, x)
    old = params.variables()
    nk = resp.sum(axis=0)
    w = (nk + alpha - 1) / (nk.sum() + len(nk) * (alpha - 1))
    precision = 1 / old["sigma"] ** 2
    mu = (precision * (resp.T @ x) + m0 / s0**2) / (precision * nk + 1 / s0**2)
    scatter = np.sum(resp * (x[:, None] - mu) ** 2, axis=0)
    # The positive root, written without cancellation: 2 S / (n + sqrt(n^2 + 4 S / tau^2)).
    var = 2 * scatter / (nk + np.sqrt(nk**2 + 4 * scatter / tau**2))
    return GaussianParams.from_covariances(w, mu[:, None], var[:, None, None], "full")


def fit_gaussian_1d_map(model_def, x, init, **options) -> EMFit:
    """MAP-EM (ECM) of a 1-D Gaussian mixture under the PyMC model's priors (:mod:`emvsbayes.gaussian.bayes`);
    ``EMFit.loglik`` is the log posterior; ``options`` as :func:`emvsbayes.em.fit_em`."""
    x = np.asarray(x, dtype=float).ravel()
    _gaussian_1d_priors(model_def, x)

    def e_step(params):
        return _gaussian_1d_e_step(model_def, x, params)

    def m_step(resp, params):
        return gaussian_1d_map_m_step(model_def, x, resp, params)

    return fit_em(e_step, m_step, init, **options)
