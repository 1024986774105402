"""Choosing K: BIC, AIC and ICL for an EM answer, PSIS-LOO and WAIC for a PyMC fit.

Sign conventions
----------------
All three EM criteria are on the deviance scale, **lower is better**, as scikit-learn's
``GaussianMixture.bic`` / ``.aic``:

- ``AIC = -2 loglik + 2 p``;
- ``BIC = -2 loglik + p log N``;
- ``ICL = BIC + 2 EN``, with ``EN = -sum_i sum_k r_ik log r_ik >= 0`` the entropy of the
  responsibilities at the answer.

Biernacki, Celeux & Govaert (2000, *IEEE TPAMI* 22(7):719-725) write ICL on the log-likelihood scale,
higher is better: ``ICL = BIC' - EN`` with ``BIC' = loglik - p/2 log N``. Multiplying by -2 gives the
form above, so here ``ICL >= BIC`` always, with equality exactly when every responsibility is 0 or 1:
ICL is BIC penalised for components that overlap.

``p`` is the model's own count of free parameters (:meth:`CoinMixture.n_free_parameters`,
:meth:`GaussianMixtureModel.n_free_parameters`; fixed equal coin weights are not parameters) and ``N``
the number of sets or rows.

Degenerate fits
---------------
The likelihood of a Gaussian mixture is unbounded: a component can shrink onto a few data points and
raise the likelihood without describing a group (the galaxies with K = 6 put two components on two
galaxies each, sd 0.02-0.04). Every criterion above rewards such a spike. :func:`degenerate_components`
flags a component whose expected count ``n_k = sum_i r_ik`` is below :func:`min_component_points`, the
fewest points from which its own covariance is more than a copy of those points: a covariance of n points
in D dimensions has rank at most n - 1, so a full one needs D + 1 points to be nonsingular and a variance
two; with exactly that many it is fixed by the points (two points at distance d give sd d/2, however
close they are), so one more is asked for: D + 2 for ``full``, 3 for ``diag`` and ``spherical`` (one
variance per coordinate or per component), 1 for ``tied`` (the shared covariance is estimated from all
points; a component needs only its mean). ``n_k`` is a sum of responsibilities, so the count is taken to
the nearest point: a component is flagged when ``n_k < m - 1/2``.

A component can also collapse with many points: when its members share one value of a column (a 0/1 column,
say), their covariance is singular but for ``reg_covar``, and its density on that column, with it the
likelihood, is set by ``reg_covar``. :func:`singular_components` flags a covariance whose smallest eigenvalue is
below twice ``reg_covar``.

For the Bayesian fit, :func:`loo_waic` reads the pointwise log-likelihood of a PyMC fit and returns
PSIS-LOO from ArviZ (``az.loo``) and WAIC, which ArviZ 1.3 no longer provides and which is therefore
computed here from the same pointwise values (Watanabe 2010; the formulas of Vehtari, Gelman & Gabry
2017, *Stat. Comput.* 27:1413, eqs. 3-5 and 22-23). Both are on the elpd scale, **higher is better**.

Dependent data
--------------
Pointwise LOO is not valid for a time series: leaving out y_t still conditions on y_{t+1}, ..., which carry
information on the state at t, so "predicting" y_t uses its own future and the score rewards a model for
interpolating, not for forecasting. :func:`psis_lfo` estimates the leave-future-out score instead, the sum
over t >= L of log p(y_t | y_1..y_{t-1}) (1-step-ahead prediction from the past only; Bürkner, Gabry & Vehtari
2020, *J. Stat. Comput. Simul.* 90(14):2499, "approximate leave-future-out cross-validation"): the posterior
given the first L points is sampled (a refit), later prefixes are reached by Pareto-smoothed importance
weights (the product of the one-step densities of the points added since the last refit), and whenever the
weights' Pareto k exceeds 0.7 the model is refitted on the prefix so far. It needs the family's per-draw
one-step-ahead densities and a way to refit on a prefix; it names no family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, xlogy


__all__ = [
    "PARETO_K_THRESHOLD",
    "WAIC_VARIANCE_THRESHOLD",
    "InformationCriteria",
    "PredictiveCriteria",
    "criteria",
    "degenerate_components",
    "singular_components",
    "information_criteria",
    "loo_waic",
    "LFO_PARETO_K_THRESHOLD",
    "LeaveFutureOut",
    "lfo_first",
    "psis_lfo",
    "min_component_points",
    "responsibility_entropy",
]

#: Pareto k above which the PSIS estimate of that observation's leave-one-out density is unreliable
#: (Vehtari et al. 2024, *JMLR* 25(72), for a few thousand draws; ArviZ's ``good_k`` is min(1 - 1/log10 S, 0.7)).
PARETO_K_THRESHOLD = 0.7

#: A pointwise WAIC penalty (posterior variance of log p(y_i | theta)) above this makes WAIC unreliable
#: for that observation (Vehtari, Gelman & Gabry 2017, section 2.2).
WAIC_VARIANCE_THRESHOLD = 0.4


def responsibility_entropy(resp) -> float:
    """``EN = -sum_i sum_k r_ik log r_ik`` (nats, 0 log 0 = 0) of responsibilities (N, K); >= 0."""
    r = np.asarray(resp, dtype=float)
    return float(max(-xlogy(r, r).sum(), 0.0))


@dataclass(frozen=True, slots=True)
class InformationCriteria:
    """BIC, AIC and ICL of one EM answer (deviance scale, lower is better; see the module docstring).

    Attributes
    ----------
    loglik : float
        Observed-data log-likelihood at the answer.
    n_params : int
        Free parameters p.
    n_obs : int
        Observations N (sets of tosses, rows).
    entropy : float
        EN, the entropy of the responsibilities (NaN when none were given).
    aic, bic, icl : float
        ``icl`` is NaN when no responsibilities were given.
    """

    loglik: float
    n_params: int
    n_obs: int
    entropy: float
    aic: float
    bic: float
    icl: float


def information_criteria(loglik: float, n_params: int, n_obs: int, resp=None) -> InformationCriteria:
    """AIC, BIC and (given responsibilities ``resp`` (N, K)) ICL from their ingredients."""
    if n_obs < 1:
        raise ValueError(f"n_obs must be positive, got {n_obs}")
    deviance = -2.0 * float(loglik)
    bic = deviance + n_params * math.log(n_obs)
    entropy = float("nan") if resp is None else responsibility_entropy(resp)
    return InformationCriteria(
        loglik=float(loglik),
        n_params=int(n_params),
        n_obs=int(n_obs),
        entropy=entropy,
        aic=deviance + 2.0 * n_params,
        bic=bic,
        icl=bic + 2.0 * entropy,
    )


def _resp_from_log_joint(log_joint: np.ndarray) -> tuple[float, np.ndarray]:
    log_norm = logsumexp(log_joint, axis=1, keepdims=True)
    return float(log_norm.sum()), np.exp(log_joint - log_norm)


def criteria(family, model_def, data, params) -> InformationCriteria:
    """BIC, AIC, ICL of an EM answer of any family: p is the family's free-parameter count (the coins
    count weights only when they are estimated; Gaussians scikit-learn's count for the structure, so
    ``bic`` equals ``GaussianMixture.bic(x)`` at the same parameters)."""
    validate = getattr(family, "validate_params", None)
    if validate is not None:
        validate(model_def, params)
    # A family whose observations are dependent (a hidden Markov model) has no per-row joint density; it gives
    # its log-likelihood and the membership probabilities the ICL's entropy is taken of.
    own = getattr(family, "loglik_and_resp", None)
    loglik, resp = (own(model_def, data, params) if own is not None
                    else _resp_from_log_joint(family.log_joint(model_def, data, params)))
    return information_criteria(loglik, family.n_free_parameters(model_def, data), family.n_observations(data), resp)


def ill_posed(n_params: int, n_numbers: int) -> dict:
    """A model choice's checks before EM for ``n_params`` free parameters fitted to ``n_numbers`` numbers of data:
    as many parameters as numbers or more is ill-posed (the likelihood has no single best point to compare), noted
    in the K's row and its posterior not sampled (``late_notes``, ``skip_bayes`` of ``Family.model_choice_checks``)."""
    if n_params < n_numbers:
        return {"late_notes": [], "skip_bayes": False}
    return {"late_notes": [f"ill-posed: {n_params} free parameters for the {n_numbers} numbers in the data"],
            "skip_bayes": True}


def min_component_points(covariance_type: str, n_features: int) -> int:
    """The fewest points a component must hold for its own covariance to be estimated, not copied from
    its points (see the module docstring): D + 2 ``full``, 3 ``diag`` / ``spherical``, 1 ``tied``."""
    return {"full": n_features + 2, "diag": 3, "spherical": 3, "tied": 1}[covariance_type]


#: A component's covariance counts as singular when its smallest eigenvalue is below this multiple of reg_covar:
#: its members then spread less than reg_covar along that direction, and reg_covar, not the data, sets its density.
SINGULAR_REG_COVAR_MULTIPLE = 2.0


def singular_components(covariances, reg_covar: float) -> np.ndarray:
    """Indices of the components whose covariance (K, D, D) is singular but for ``reg_covar`` (smallest
    eigenvalue below :data:`SINGULAR_REG_COVAR_MULTIPLE` x ``reg_covar``): their members do not vary along some
    direction, as when every one shares a value of a two-valued column. Such a component holds many points and
    passes :func:`degenerate_components`, yet its density there grows without bound as ``reg_covar`` shrinks
    (each member gains about ``-log(reg_covar) / 2``), so its log-likelihood measures ``reg_covar``, not the data."""
    cov = np.asarray(covariances, dtype=float)
    return np.flatnonzero(np.linalg.eigvalsh(cov)[:, 0] < SINGULAR_REG_COVAR_MULTIPLE * reg_covar)


def degenerate_components(expected_counts, covariance_type: str, n_features: int) -> np.ndarray:
    """Indices of the components whose expected count ``n_k`` (K,) is below
    :func:`min_component_points` (to the nearest point: ``n_k < m - 1/2``)."""
    counts = np.asarray(expected_counts, dtype=float)
    return np.flatnonzero(counts < min_component_points(covariance_type, n_features) - 0.5)


@dataclass(frozen=True, slots=True)
class PredictiveCriteria:
    """PSIS-LOO and WAIC of a Bayesian fit (elpd scale, higher is better).

    Attributes
    ----------
    elpd_loo, se_loo, p_loo : float
        From ``az.loo``.
    pareto_k : ndarray, shape (N,)
        Pareto k per observation (flattened over the observation dims).
    n_bad_k : int
        Observations with ``pareto_k > PARETO_K_THRESHOLD`` (0.7).
    good_k : float
        ArviZ's own threshold for this number of draws (min(1 - 1/log10 S, 0.7)).
    elpd_waic, se_waic, p_waic : float
        WAIC computed here: ``elpd_waic = sum_i (lppd_i - p_i)``, ``lppd_i = log mean_s p(y_i | theta_s)``,
        ``p_i = var_s log p(y_i | theta_s)`` (sample variance, ddof=1), ``se_waic = sqrt(N var_i(elpd_i))``
        (ddof=1), as R's ``loo`` package computes it.
    n_bad_waic : int
        Observations with ``p_i > WAIC_VARIANCE_THRESHOLD`` (0.4), where WAIC is unreliable.
    n_draws, n_obs : int
    var_name : str
        The log-likelihood variable used.
    """

    elpd_loo: float
    se_loo: float
    p_loo: float
    pareto_k: np.ndarray
    n_bad_k: int
    good_k: float
    elpd_waic: float
    se_waic: float
    p_waic: float
    n_bad_waic: int
    n_draws: int
    n_obs: int
    var_name: str


def _log_likelihood_variable(tree, var_name: str | None) -> tuple[str, np.ndarray]:
    """The pointwise log-likelihood as (S, N): draws (chain x draw) by observations (all other dims)."""
    if "log_likelihood" not in tree.children:
        raise ValueError("the fit has no log_likelihood group: sample with log_likelihood=True")
    ds = tree["log_likelihood"].to_dataset()
    names = list(ds.data_vars)
    if var_name is None:
        if len(names) != 1:
            raise ValueError(f"log_likelihood holds {names}; name the observed variable with var_name")
        var_name = names[0]
    da = ds[var_name]
    sample_dims = [d for d in ("chain", "draw") if d in da.dims]
    da = da.transpose(*sample_dims, ...)
    values = np.asarray(da.values, dtype=float)
    n_sample = math.prod(values.shape[: len(sample_dims)])
    return var_name, values.reshape(n_sample, -1)


def _waic(log_lik: np.ndarray) -> tuple[float, float, float, int]:
    s, n = log_lik.shape
    lppd = logsumexp(log_lik, axis=0) - math.log(s)
    p_i = log_lik.var(axis=0, ddof=1)
    elpd_i = lppd - p_i
    se = math.sqrt(n * elpd_i.var(ddof=1)) if n > 1 else float("nan")
    return float(elpd_i.sum()), se, float(p_i.sum()), int((p_i > WAIC_VARIANCE_THRESHOLD).sum())


def loo_waic(tree, var_name: str | None = None) -> PredictiveCriteria:
    """PSIS-LOO (ArviZ) and WAIC (computed here) from a fit's pointwise log-likelihood.

    Parameters
    ----------
    tree : xarray.DataTree
        A PyMC fit with groups ``posterior`` and ``log_likelihood`` (dims ``chain``, ``draw``, then the
        observation dims).
    var_name : str, optional
        The observed variable; needed only when ``log_likelihood`` holds several.

    Returns
    -------
    PredictiveCriteria
    """
    import warnings

    # arviz-stats' loo (what the `arviz` umbrella package re-exports): the umbrella would import arviz-plots
    # and matplotlib into a run that draws its page in the page workers
    from arviz_stats import loo as psis_loo

    var_name, log_lik = _log_likelihood_variable(tree, var_name)
    with warnings.catch_warnings():
        # ArviZ warns when some k is high; the count is reported in n_bad_k instead.
        warnings.simplefilter("ignore", UserWarning)
        loo = psis_loo(tree, pointwise=True, var_name=var_name)
    pareto_k = np.asarray(loo.pareto_k.values, dtype=float).ravel()
    elpd_waic, se_waic, p_waic, n_bad_waic = _waic(log_lik)
    return PredictiveCriteria(
        elpd_loo=float(loo.elpd),
        se_loo=float(loo.se),
        p_loo=float(loo.p),
        pareto_k=pareto_k,
        n_bad_k=int((pareto_k > PARETO_K_THRESHOLD).sum()),
        good_k=float(loo.good_k),
        elpd_waic=elpd_waic,
        se_waic=se_waic,
        p_waic=p_waic,
        n_bad_waic=n_bad_waic,
        n_draws=int(log_lik.shape[0]),
        n_obs=int(log_lik.shape[1]),
        var_name=var_name,
    )


# --- leave-future-out cross-validation (dependent data) ------------------------------------------------------

#: Pareto k above which the importance weights towards a longer prefix are not trusted and the model is refitted
#: (Bürkner, Gabry & Vehtari 2020, section 3: tau = 0.7, as for PSIS-LOO).
LFO_PARETO_K_THRESHOLD = 0.7


def lfo_first(n_time: int, n_params: int) -> int:
    """L, the points every prediction is conditioned on at least: a quarter of the series, and at least twice
    the free parameters (a posterior from fewer points is mostly the prior), but leaving a point to predict."""
    return int(min(max(math.ceil(n_time / 4), 2 * n_params, 1), n_time - 1))


@dataclass(frozen=True, slots=True)
class LeaveFutureOut:
    """Approximate leave-future-out cross-validation for 1-step-ahead prediction (PSIS-LFO-CV).

    Attributes
    ----------
    elpd_lfo : float
        sum over t = first .. T-1 (0-based) of log p(y_t | y_0..y_{t-1}); higher is better.
    mcse : float
        Monte Carlo standard error of ``elpd_lfo`` (each term's from its own draws and weights, added as if
        perfectly correlated: an upper bound, terms between refits share their draws).
    pointwise : ndarray (T,)
        Each term; NaN before ``first``.
    pareto_k : ndarray (T,)
        The Pareto k of the weights each term used; NaN where the term came straight from a refit's draws.
    refits : tuple of int
        The prefix lengths the posterior was sampled on (``first`` always; later ones where k > threshold).
    n_bad_k : int
        Terms whose weights had k > threshold and were not refitted (refits exhausted): untrustworthy.
    first : int
    threshold : float
    n_draws : int
    """

    elpd_lfo: float
    mcse: float
    pointwise: np.ndarray
    pareto_k: np.ndarray
    refits: tuple
    n_bad_k: int
    first: int
    threshold: float
    n_draws: int


def _log_mean_exp_with_se(log_p: np.ndarray, log_w: np.ndarray | None) -> tuple[float, float]:
    """log of sum_s w_s p_s (w normalised; equal weights when ``log_w`` is None) and the Monte Carlo sd of that
    log by the delta method: sd(p-hat) / p-hat, with var(p-hat) = sum_s w_s^2 (p_s - p-hat)^2 (self-normalised
    importance sampling; S^-1 var(p) for equal weights)."""
    if log_w is None:
        estimate = float(logsumexp(log_p) - math.log(log_p.size))
        ratio = np.exp(log_p - estimate)  # p_s / p-hat
        variance = float(np.var(ratio, ddof=1) / log_p.size) if log_p.size > 1 else float("nan")
    else:
        estimate = float(logsumexp(log_w + log_p))
        ratio = np.exp(log_p - estimate)
        variance = float(np.sum(np.exp(2 * log_w) * (ratio - 1.0) ** 2))
    return estimate, math.sqrt(max(variance, 0.0))


def psis_lfo(one_step_given_prefix, n_time: int, first: int, *, threshold: float = LFO_PARETO_K_THRESHOLD,
             max_refits: int | None = None) -> LeaveFutureOut:
    """PSIS-LFO-CV for 1-step-ahead prediction (Bürkner, Gabry & Vehtari 2020, algorithm of section 3).

    Parameters
    ----------
    one_step_given_prefix : callable
        ``one_step_given_prefix(n) -> (S, T)``: log p(y_t | y_0..y_{t-1}, theta_s) for every t of the whole
        series, theta_s drawn from the posterior given the first ``n`` points only (a refit). Since each term
        conditions on the past alone, one pass over the whole series gives every term.
    n_time : int
        T, the series' length.
    first : int
        L: the first term predicts y_L from y_0..y_{L-1}.
    threshold : float
        Pareto k above which the weights are not trusted and the model is refitted (0.7).
    max_refits : int, optional
        Refits after the first allowed; beyond them, terms with k > threshold are kept and counted in
        ``n_bad_k`` (None: no limit).
    """
    from arviz_stats.base import array_stats

    if not 1 <= first < n_time:
        raise ValueError(f"first must be in 1..{n_time - 1}, got {first}")
    pointwise = np.full(n_time, np.nan)
    pareto_k = np.full(n_time, np.nan)
    sds = np.zeros(n_time)
    refit_at = first
    log_pred = np.asarray(one_step_given_prefix(first), dtype=float)
    refits, n_bad = [first], 0
    for t in range(first, n_time):
        log_w = None
        if t > refit_at:
            # target p(theta | y_<t) against the refit's p(theta | y_<refit_at): the ratio is the density of the
            # points added since, y_refit_at .. y_{t-1}, each given its own past
            log_ratio = log_pred[:, refit_at:t].sum(axis=1)
            if np.ptp(log_ratio) == 0:  # the added points say nothing about the parameters: equal weights
                log_w, k = np.full(log_ratio.shape, -math.log(log_ratio.size)), -np.inf
            else:
                # arviz-stats' psislw takes log-likelihoods, LOO's ratios being 1 / p: weights exp(-argument)
                log_w, k = array_stats.psislw(-(log_ratio - log_ratio.max()), r_eff=1.0)
                k = float(k)
            if k > threshold and (max_refits is None or len(refits) - 1 < max_refits):
                refit_at, log_w = t, None
                log_pred = np.asarray(one_step_given_prefix(t), dtype=float)
                refits.append(t)
            else:
                pareto_k[t] = k
                n_bad += int(not k <= threshold)
        pointwise[t], sds[t] = _log_mean_exp_with_se(log_pred[:, t], log_w)
    mcse = float(np.sum(sds))  # sds added: the terms between two refits share their draws
    return LeaveFutureOut(float(np.nansum(pointwise)), mcse, pointwise, pareto_k, tuple(refits), n_bad, first,
                          float(threshold), int(log_pred.shape[0]))
