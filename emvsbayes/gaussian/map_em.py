"""EM for the posterior mode (MAP) of the Gaussian mixture under the PyMC model's own priors
(:mod:`emvsbayes.gaussian.bayes`), every covariance structure the model has: the family's ``map_fit``.

The objective is the log posterior of the parameters themselves, PyMC's ``compile_logp(jacobian=False)``
(normalising constants included): the observed-data log-likelihood plus

- ``w ~ Dirichlet(alpha)``;
- ``mu_k ~ Normal(m0, s0)`` per coordinate;
- the covariance's prior, by structure (for D > 1):

  - ``full``: each component's lower Cholesky factor L_k ~ ``LKJCholeskyCov(eta, HalfNormal(tau))``;
  - ``tied``: one such factor shared by all components;
  - ``diag``: every sd ``~ HalfNormal(tau_d)``;
  - ``spherical``: each component's one sd ``~ HalfNormal(sqrt(mean(tau^2)))``;

  in 1-D each component's sd ``~ HalfNormal(tau)`` (``full``, ``diag``, ``spherical``), or one shared
  ``sigma_tied ~ HalfNormal(tau)`` (``tied``).

The M-step is a sequence of conditional maximisations of the expected complete-data log posterior
(ECM, Meng & Rubin 1993), each never lowering it, so the log posterior never falls
(:func:`emvsbayes.em.fit_em` checks it):

1. ``w_k = (n_k + alpha - 1) / (N + K (alpha - 1))``;
2. ``mu_k`` given the current covariance: ``(n_k P_k + S0^-1)^-1 (P_k sum_i r_ik x_i + S0^-1 m0)`` with P_k
   the precision and S0 = diag(s0^2);
3. the covariance given the new means, with S_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T:

   - sds under HalfNormal(tau) priors (1-D, ``diag``, ``spherical``, 1-D ``tied``) in closed form: the
     variance v maximising -(m / 2) log v - S / (2 v) - v / (2 tau^2) is the positive root of
     v^2 / tau^2 + m v - S = 0 (m the expected count times the coordinates the sd covers, S the matching
     scatter), written 2 S / (m + sqrt(m^2 + 4 S / tau^2)) without cancellation;
   - the LKJ Cholesky prior (``full``, ``tied`` for D > 1) is not conjugate: the factor L maximising
     -n log det L - tr((L L^T)^-1 S) / 2 + log p(L) is found numerically (BFGS on log-diagonal and
     off-diagonal entries, from the current L, with the analytic gradient), and kept only if it does not
     lower that objective: a generalised EM (Dempster, Laird & Rubin 1977), monotone like EM.

``log p(L)`` is PyMC's ``LKJCholeskyCov`` density of the packed factor: with s_i the norm of row i of L
(the i-th sd) and i counted from 0,

    sum_i (2 eta - 2 + D - i) log L_ii - (2 eta - 2 + D) log s_i + log HalfNormal(s_i | tau_i) + log c(eta, D),

which is bounded above for eta >= 1. A prior with no mode is refused: ``w_concentration`` or ``lkj_eta``
below 1 (a density unbounded where a weight is 0 or a correlation is +-1). ``reg_covar`` plays no part:
the priors keep the covariances off singular (at any local mode EM reaches). The returned parameters have
the model's covariance structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import gammaln, logsumexp

from emvsbayes.em import EMFit, fit_em
from emvsbayes.family import check_mode_concentration, dirichlet_log_density, dirichlet_mode_weights
from emvsbayes.gaussian.bayes import prior_values
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, as_data_matrix

__all__ = ["GaussianMapPriors", "fit_gaussian_map", "gaussian_log_prior", "gaussian_map_m_step", "lkj_cholesky_log_density"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True, slots=True)
class GaussianMapPriors:
    """The PyMC model's prior numbers for data of D coordinates: ``alpha``; ``mu_loc``, ``mu_scale``,
    ``sigma_scale`` (D,) (:func:`emvsbayes.gaussian.bayes.prior_values`); ``eta`` (LKJ); ``structure``:
    ``"lkj"`` (one LKJ factor per component), ``"lkj_tied"``, ``"sd"`` (a HalfNormal sd per component and
    coordinate), ``"sd_spherical"`` (one per component) or ``"sd_tied"`` (1-D ``tied``: one sd in all)."""

    alpha: float
    mu_loc: np.ndarray
    mu_scale: np.ndarray
    sigma_scale: np.ndarray
    eta: float
    structure: str

    @classmethod
    def of(cls, model_def: GaussianMixtureModel, x: np.ndarray) -> GaussianMapPriors:
        """The priors of ``model_def`` for data ``x`` (N, D); ``ValueError`` for a prior with no mode."""
        dim = x.shape[1]
        priors = model_def.priors
        check_mode_concentration("w_concentration", float(priors.w_concentration))
        covariance = model_def.covariance_type
        if dim == 1:
            structure = "sd_tied" if covariance == "tied" else "sd"
        else:
            structure = {"full": "lkj", "tied": "lkj_tied", "diag": "sd", "spherical": "sd_spherical"}[covariance]
        if structure.startswith("lkj"):
            check_mode_concentration("lkj_eta", float(priors.lkj_eta))
        values = prior_values(model_def, x)
        sigma_scale = values["sigma_scale"]
        if structure == "sd_spherical":
            # bayes._chol_spherical: one sd, its prior scale the root-mean-square of the per-coordinate ones.
            sigma_scale = np.full(1, math.sqrt(float(np.mean(sigma_scale**2))))
        return cls(float(priors.w_concentration), values["mu_loc"], values["mu_scale"], sigma_scale,
                   float(priors.lkj_eta), structure)


# --------------------------------------------------------------------------------------------------
# Log densities of the priors (PyMC's, constants included)


def _half_normal_log_density(sd, scale) -> np.ndarray:
    return 0.5 * math.log(2 / math.pi) - np.log(scale) - 0.5 * (np.asarray(sd) / scale) ** 2


def _lkj_log_constant(eta: float, dim: int) -> float:
    """PyMC's ``_lkj_normalizing_constant(eta, n)``."""
    k = np.arange(1, dim)
    return float((dim - 1) * gammaln(eta + 0.5 * (dim - 1)) - np.sum(0.5 * k * math.log(math.pi)
                                                                      + gammaln(eta + 0.5 * (dim - 1 - k))))


def lkj_cholesky_log_density(chol: np.ndarray, eta: float, sigma_scale: np.ndarray) -> float:
    """log density of ``LKJCholeskyCov(eta, sd_dist=HalfNormal(sigma_scale))`` at the lower factor ``chol``
    (D, D) (its packed form is the model's value), as PyMC computes it (the module docstring's formula)."""
    dim = chol.shape[0]
    sd = np.sqrt(np.sum(chol**2, axis=1))
    i = np.arange(dim)
    return float(np.sum((2 * eta - 2 + dim - i) * np.log(np.diagonal(chol)) - (2 * eta - 2 + dim) * np.log(sd))
                 + np.sum(_half_normal_log_density(sd, sigma_scale)) + _lkj_log_constant(eta, dim))


def _lower_factors(params: GaussianParams) -> np.ndarray:
    """The lower Cholesky factors of the covariances, (K, D, D)."""
    return np.linalg.cholesky(params.full_covariances())


def gaussian_log_prior(priors: GaussianMapPriors, params: GaussianParams) -> float:
    """log p(w, mu, covariances) under ``priors`` (the PyMC model's log density of its free variables)."""
    out = dirichlet_log_density(params.w, priors.alpha)
    out += float(np.sum(-np.log(priors.mu_scale) - _HALF_LOG_2PI - 0.5 * ((params.mu - priors.mu_loc) / priors.mu_scale) ** 2))
    if priors.structure == "lkj":
        out += sum(lkj_cholesky_log_density(chol, priors.eta, priors.sigma_scale) for chol in _lower_factors(params))
    elif priors.structure == "lkj_tied":
        out += lkj_cholesky_log_density(_lower_factors(params)[0], priors.eta, priors.sigma_scale)
    else:
        var = np.diagonal(params.full_covariances(), axis1=1, axis2=2)  # (K, D)
        sd = {"sd": lambda: np.sqrt(var), "sd_spherical": lambda: np.sqrt(var[:, 0]),
              "sd_tied": lambda: np.sqrt(var[0])}[priors.structure]()
        out += float(np.sum(_half_normal_log_density(sd, priors.sigma_scale if priors.structure == "sd" else priors.sigma_scale[0])))
    return float(out)


# --------------------------------------------------------------------------------------------------
# The M-step


def _variance_under_half_normal(count, scatter, scale):
    """argmax over v of -(count / 2) log v - scatter / (2 v) - v / (2 scale^2) (module docstring)."""
    return 2 * scatter / (count + np.sqrt(count**2 + 4 * scatter / scale**2))


def _lkj_objective(theta, n, scatter, eta, sigma_scale, rows, cols, dim):
    """(-objective, -gradient) of the LKJ factor's conditional M-step in theta = (log L_ii, L_ij (i > j))."""
    chol = np.zeros((dim, dim))
    diag = np.exp(theta[:dim])
    chol[np.arange(dim), np.arange(dim)] = diag
    chol[rows, cols] = theta[dim:]
    inv = np.linalg.solve(chol, np.eye(dim))  # L^-1
    precision = inv.T @ inv
    sd2 = np.sum(chol**2, axis=1)
    i = np.arange(dim)
    value = (-n * np.sum(theta[:dim]) - 0.5 * np.sum(precision * scatter)
             + np.sum((2 * eta - 2 + dim - i) * theta[:dim]) - 0.5 * (2 * eta - 2 + dim) * np.sum(np.log(sd2))
             - 0.5 * np.sum(sd2 / sigma_scale**2))
    # d/dL of -tr(Sigma^-1 S) / 2 is Sigma^-1 S L^-T; of the row terms -(c / s_i^2 + 1 / tau_i^2) L_ij.
    grad = precision @ scatter @ inv.T - ((2 * eta - 2 + dim) / sd2 + 1 / sigma_scale**2)[:, None] * chol
    grad_diag = np.diagonal(grad) * diag + (2 * eta - 2 + dim - i) - n
    return -value, -np.concatenate([grad_diag, grad[rows, cols]])


def _lkj_factor_step(chol, n, scatter, eta, sigma_scale):
    """The LKJ factor's conditional M-step from ``chol``: BFGS's answer, or ``chol`` if that is not better."""
    dim = chol.shape[0]
    rows, cols = np.tril_indices(dim, -1)
    start = np.concatenate([np.log(np.diagonal(chol)), chol[rows, cols]])
    args = (n, scatter, eta, sigma_scale, rows, cols, dim)
    result = optimize.minimize(_lkj_objective, start, args=args, jac=True, method="BFGS",
                               options={"gtol": 1e-12, "maxiter": 1000})
    if not np.all(np.isfinite(result.x)) or result.fun > _lkj_objective(start, *args)[0]:
        return chol
    out = np.zeros((dim, dim))
    out[np.arange(dim), np.arange(dim)] = np.exp(result.x[:dim])
    out[rows, cols] = result.x[dim:]
    return out


def _means(priors: GaussianMapPriors, resp, x, precisions) -> np.ndarray:
    """Step 2: each mean given its component's precision (K, D, D)."""
    nk = resp.sum(axis=0)
    prior_precision = np.diag(1 / priors.mu_scale**2)
    sums = resp.T @ x  # (K, D)
    out = np.empty_like(sums)
    for k in range(len(nk)):
        out[k] = np.linalg.solve(nk[k] * precisions[k] + prior_precision,
                                 precisions[k] @ sums[k] + prior_precision @ priors.mu_loc)
    return out


def gaussian_map_m_step(model_def: GaussianMixtureModel, priors: GaussianMapPriors, x: np.ndarray, resp: np.ndarray,
                        params: GaussianParams) -> GaussianParams:
    """One ECM step of the module docstring: weights, means given the covariances, covariances given the means."""
    nk = resp.sum(axis=0)
    k, dim = params.mu.shape
    w = dirichlet_mode_weights(nk, priors.alpha)
    mu = _means(priors, resp, x, np.linalg.inv(params.full_covariances()))
    diff = x[None, :, :] - mu[:, None, :]  # (K, N, D)
    covariance = model_def.covariance_type
    if priors.structure == "lkj":
        scatter = np.einsum("nk,kni,knj->kij", resp, diff, diff)
        chol = np.stack([_lkj_factor_step(c, nk[j], scatter[j], priors.eta, priors.sigma_scale)
                         for j, c in enumerate(_lower_factors(params))])
        cov = chol @ np.swapaxes(chol, -1, -2)
    elif priors.structure == "lkj_tied":
        scatter = np.einsum("nk,kni,knj->ij", resp, diff, diff)
        chol = _lkj_factor_step(_lower_factors(params)[0], nk.sum(), scatter, priors.eta, priors.sigma_scale)
        cov = chol @ chol.T
    else:
        scatter = np.einsum("nk,kni->ki", resp, diff**2)  # (K, D)
        if priors.structure == "sd":
            var = _variance_under_half_normal(nk[:, None], scatter, priors.sigma_scale)  # (K, D)
        elif priors.structure == "sd_spherical":
            var = _variance_under_half_normal(dim * nk, scatter.sum(axis=1), priors.sigma_scale[0])  # (K,)
        else:  # 1-D tied: one sd for every component
            var = _variance_under_half_normal(nk.sum(), scatter.sum(), priors.sigma_scale[0])
        cov = _covariances_of(covariance, var, k, dim)
    return GaussianParams.from_covariances(w, mu, cov, covariance)


def _covariances_of(covariance: str, var, k: int, dim: int) -> np.ndarray:
    """The HalfNormal-sd structures' variances shaped as ``from_covariances`` wants them for ``covariance``
    (1-D ``full`` holds a (K, 1, 1) matrix; 1-D ``tied`` a (1, 1) one)."""
    var = np.asarray(var, dtype=float)
    if covariance == "full":
        return var.reshape(k, dim)[:, :, None] * np.eye(dim)
    if covariance == "tied":
        return np.broadcast_to(var, (1,)).reshape(1, 1) * np.eye(dim)
    if covariance == "diag":
        return var.reshape(k, dim)
    return var.reshape(k)


def _check_start(model_def: GaussianMixtureModel, params: GaussianParams) -> GaussianParams:
    model_def.validate_params(params)
    return params


def fit_gaussian_map(model_def: GaussianMixtureModel, x, init: GaussianParams, **options) -> EMFit:
    """MAP-EM (ECM; generalised EM for the LKJ structures) from ``init``; ``EMFit.loglik`` is the log posterior
    (PyMC's, without a Jacobian); ``options`` as :func:`emvsbayes.em.fit_em`. ``ValueError`` when a prior has
    no mode."""
    x = as_data_matrix(x)
    priors = GaussianMapPriors.of(model_def, x)
    _check_start(model_def, init)

    def e_step(params):
        with np.errstate(divide="ignore"):
            log_joint = model_def.log_joint(params, x)
        log_norm = logsumexp(log_joint, axis=1, keepdims=True)
        return np.exp(log_joint - log_norm), float(log_norm.sum()) + gaussian_log_prior(priors, params)

    def m_step(resp, params):
        return gaussian_map_m_step(model_def, priors, x, resp, params)

    return fit_em(e_step, m_step, init, **options)
