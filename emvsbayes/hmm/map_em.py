"""EM for the posterior mode (MAP) of the Poisson hidden Markov model under the PyMC model's own priors
(:mod:`emvsbayes.hmm.bayes`): the family's ``map_fit``.

With ``rate_k ~ Gamma(a, b)`` (shape a, rate b), each transition row ``A_i ~ Dirichlet(C_i)`` and the
estimated initial distribution ``initial ~ Dirichlet(c)``, the M-step maximising the expected complete-data
log-likelihood plus the log prior is closed form (the Baum-Welch statistics of :mod:`emvsbayes.hmm.em`:
gamma_tk = P(z_t = k | y), xi_ij the expected transitions i -> j):

    rate_k = (sum_t gamma_tk y_t + a - 1) / (sum_t gamma_tk + b),
    A_ij = (xi_ij + C_ij - 1) / sum_l (xi_il + C_il - 1),
    initial_k = (gamma_0k + c - 1) / (1 + K (c - 1)),

each the mode of a Gamma or Dirichlet whose counts are the data's expected ones plus the prior's. EM then
never lowers the log posterior log p(y | parameters) + log p(parameters) (PyMC's
``compile_logp(jacobian=False)``, constants included), the objective :func:`fit_hmm_map` reports. A shape or
concentration below 1 makes the prior unbounded at the boundary, where there is no mode: refused. Not
covered (``ValueError`` saying so): the stationary initial distribution (it ties the first state to the
transition matrix, whose update then has no closed form) and Gaussian emissions.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import gammaln, xlogy

from emvsbayes.em import EMFit, fit_em
from emvsbayes.family import check_mode_concentration
from emvsbayes.hmm.bayes import prior_values
from emvsbayes.hmm.em import HMMStats, check_start, e_step
from emvsbayes.hmm.model import HiddenMarkovModel, HMMParams

__all__ = ["fit_hmm_map", "hmm_log_prior", "hmm_map_m_step"]


def _dirichlet_log_density(x: np.ndarray, concentration: np.ndarray) -> float:
    """log Dirichlet(x | concentration) with its normalising constant (PyMC's), for one vector on the simplex."""
    return float(gammaln(concentration.sum()) - gammaln(concentration).sum() + np.sum(xlogy(concentration - 1, x)))


def check_priors(model_def: HiddenMarkovModel, prior: dict) -> None:
    """``ValueError`` (one line) for a model MAP-EM does not cover or a prior without a mode."""
    if model_def.emission != "poisson":
        raise ValueError("MAP-EM of a hidden Markov model is written for Poisson emissions only")
    if model_def.stationary:
        raise ValueError('MAP-EM of a hidden Markov model needs initial = "estimated": with the stationary initial '
                         "distribution the transition matrix's update has no closed form")
    check_mode_concentration("rate_prior's shape", float(prior["rate_prior"][0]))
    check_mode_concentration("transition_prior", float(np.min(prior["transition_concentration"])))
    check_mode_concentration("initial_prior", float(np.min(prior["initial_concentration"])))


def hmm_log_prior(prior: dict, params: HMMParams) -> float:
    """log p(rate, transition, initial) under the priors' numbers ``prior`` (:func:`emvsbayes.hmm.bayes.prior_values`):
    Gamma(a, b) on each rate, Dirichlet(C_i) on transition row i, Dirichlet(c) on the initial distribution."""
    a, b = prior["rate_prior"]
    with np.errstate(divide="ignore"):
        gamma = np.sum(a * np.log(b) - gammaln(a) + xlogy(a - 1, params.rate) - b * params.rate)
    rows = sum(_dirichlet_log_density(params.transition[i], prior["transition_concentration"][i])
               for i in range(params.transition.shape[0]))
    return float(gamma) + rows + _dirichlet_log_density(params.initial, prior["initial_concentration"])


def hmm_map_m_step(prior: dict, y: np.ndarray, stats: HMMStats, params: HMMParams) -> HMMParams:
    """The M-step with the priors' terms (formulas in the module docstring). A row whose expected transitions
    and prior counts are all 0 (a state never left, a flat Dirichlet(1) row) keeps its current values."""
    a, b = prior["rate_prior"]
    rate = (stats.gamma.T @ y + a - 1) / (stats.counts + b)
    counts = stats.xi_sum + prior["transition_concentration"] - 1
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        transition = np.where(totals > 0, counts / totals, params.transition)
    initial = stats.gamma[0] + prior["initial_concentration"] - 1
    return HMMParams(initial / initial.sum(), transition, rate=rate)


def _map_e_step(model_def: HiddenMarkovModel, y: np.ndarray, prior: dict, params: HMMParams):
    stats, loglik = e_step(model_def, y, params)
    return stats, loglik + hmm_log_prior(prior, params)


def fit_hmm_map(model_def: HiddenMarkovModel, y, init: HMMParams, **options) -> EMFit:
    """MAP-EM from ``init``; ``EMFit.loglik`` is the log posterior at the answer; ``options`` as
    :func:`emvsbayes.em.fit_em`. ``ValueError`` for a prior without a mode or a model not covered."""
    y = np.asarray(y, dtype=float)
    prior = prior_values(model_def, y)  # the PyMC model's numbers: the data-scaled defaults resolved alike
    check_priors(model_def, prior)
    check_start(model_def, y, init)
    return fit_em(partial(_map_e_step, model_def, y, prior), partial(hmm_map_m_step, prior, y), init, **options)
