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
        components = pm.Binomial.dist(n=tosses[:, None], p=theta[None, :])
        pm.Mixture("heads", w=w, comp_dists=components, observed=heads, dims="set")
    return model


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
