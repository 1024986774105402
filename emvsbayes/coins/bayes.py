"""The coin mixture in PyMC: the same model as :mod:`emvsbayes.coins.model`, the coin labels summed out.

theta_k ~ Beta(a, b); w ~ Dirichlet(alpha) or fixed at 1/K; h_i ~ sum_k w_k Binomial(n_i, theta_k).
The symmetric variant is exchangeable in the components, so its posterior has K! mirror-image modes
and a sampler moves between them; the identified variant orders theta.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from emvsbayes.coins.model import CoinMixture, CoinParams


def build_model(model_def: CoinMixture, heads, tosses, *, set_labels=None):
    """A ``pymc.Model`` with ``theta`` (and ``w`` when estimated) over dimension ``component``."""
    import pymc as pm

    k = model_def.n_components
    heads = np.asarray(heads)
    tosses = np.asarray(tosses)
    coords = {
        "component": np.arange(k),
        "set": list(set_labels) if set_labels is not None else np.arange(len(heads)),
    }
    a, b = model_def.theta_prior
    with pm.Model(coords=coords) as model:
        theta_kwargs = {}
        if model_def.ordered and k > 1:
            theta_kwargs["transform"] = pm.distributions.transforms.ordered
        theta = pm.Beta("theta", alpha=a, beta=b, dims="component", **theta_kwargs)
        if model_def.weights == "estimated":
            w = pm.Dirichlet("w", a=np.full(k, model_def.w_concentration), dims="component")
        else:
            w = pm.Data("w", model_def.equal_weights, dims="component")
        # The mixture's likelihood written in theta's log-odds (mixture_log_likelihood), not as pm.Mixture of
        # pm.Binomial: with the heads given to numpyro's programs as data (a study's one program for every
        # replicate), that form's NUTS collapsed its step size in warm-up (to ~1e-15, every transition divergent),
        # though its value and gradient equal these to rounding; with the heads as constants XLA folded its way
        # round it. This form samples the same posterior either way.
        pm.CustomDist("heads", theta, w, tosses, logp=mixture_log_likelihood, signature="(k),(k),()->()", dtype="int64",
                      observed=heads, dims="set")
    return model


def mixture_log_likelihood(heads, theta, w, tosses):
    """log sum_k w_k Binomial(heads | tosses, theta_k) per set, a pytensor expression: log theta and log(1 - theta)
    as -softplus(-z) and -softplus(z) of the log-odds z, which neither underflows nor loses its gradient where
    theta is near 0 or 1."""
    import pytensor.tensor as pt

    log_odds = pt.log(theta) - pt.log1p(-theta)
    per_component = heads[..., None] * -pt.softplus(-log_odds) + (tosses - heads)[..., None] * -pt.softplus(log_odds)
    log_binomial_coefficient = pt.gammaln(tosses + 1) - pt.gammaln(heads + 1) - pt.gammaln(tosses - heads + 1)
    return pt.logsumexp(pt.log(w) + per_component, axis=-1) + log_binomial_coefficient


def initvals_from_params(model_def: CoinMixture, params_list: list[CoinParams]) -> list[dict]:
    """Starting points, one per EM answer, in the model's variable names.

    theta is pulled a little inside (0, 1): an EM answer on the boundary (a coin that only ever showed
    heads) is outside the Beta's open support. The identified model needs increasing theta.
    """
    starts = []
    for params in params_list:
        theta = np.clip(params.theta, 1e-3, 1 - 1e-3)
        order = np.argsort(theta) if model_def.ordered else np.arange(len(theta))
        start = {"theta": theta[order]}
        if model_def.weights == "estimated":
            w = np.clip(params.w[order], 1e-3, None)
            start["w"] = w / w.sum()
        starts.append(start)
    return starts


def membership_probabilities(model_def: CoinMixture, heads, tosses, theta, w) -> np.ndarray:
    """P(set i used coin k | data, draw) for every draw, shape (S, N, K), from draws of shape (S, K)."""
    log_lik = model_def.log_component_likelihood(theta, heads, tosses)  # (S, N, K)
    with np.errstate(divide="ignore"):
        log_joint = np.log(w)[:, None, :] + log_lik
    return np.exp(log_joint - logsumexp(log_joint, axis=-1, keepdims=True))
