"""The Poisson mixture in PyMC: the same model as :mod:`emvsbayes.poisson.model`, the labels summed out.

rate_k ~ Gamma(alpha, beta); w ~ Dirichlet(w_concentration); x_i ~ sum_k w_k Poisson(rate_k). ``pm.Mixture``
marginalises the labels, so the observed variable ``x`` has a pointwise log-likelihood (dims ``obs``) and
posterior predictive draws. The symmetric variant is exchangeable in the components (K! mirror-image
modes); the identified variant orders the rates: PyMC chains the ``ordered`` transform after the Gamma's
own log transform, so the free variable is ``rate_chain__``. Its model-default initial point (every rate
at the prior mean) is not finite under the ordered transform, so start it from :func:`initvals_from_params`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

from emvsbayes.poisson.model import PoissonMixture, PoissonParams, log_poisson


def build_model(model_def: PoissonMixture, counts, *, labels: Sequence[str] | None = None):
    """A ``pymc.Model`` with ``w`` and ``rate`` over dimension ``component`` and observed ``x`` over ``obs``."""
    import pymc as pm

    if model_def.rate_prior is None:
        raise ValueError("the model's rate_prior is not set; resolve it from the data with model_def.with_data_prior(counts)")
    counts = np.asarray(counts, dtype=np.int64)
    k = model_def.n_components
    coords = {"component": np.arange(k), "obs": list(labels) if labels is not None else np.arange(counts.size)}
    alpha, beta = model_def.rate_prior
    ordered = {"transform": pm.distributions.transforms.ordered} if model_def.ordered and k > 1 else {}
    with pm.Model(coords=coords) as model:
        w = pm.Dirichlet("w", a=np.full(k, float(model_def.w_concentration)), dims="component")
        rate = pm.Gamma("rate", alpha=alpha, beta=beta, dims="component", **ordered)
        pm.Mixture("x", w=w, comp_dists=pm.Poisson.dist(mu=rate), observed=counts, dims="obs")
    return model


def _strictly_increasing(values: np.ndarray) -> np.ndarray:
    """Nudge ties apart: the ordered transform needs strictly increasing values (a tie is log 0)."""
    out = np.array(values, dtype=float)
    for i in range(1, out.size):
        out[i] = max(out[i], out[i - 1] * (1 + 1e-6) + 1e-9)
    return out


def initvals_from_params(model_def: PoissonMixture, params_list: Sequence[PoissonParams]) -> list[dict]:
    """Starting points, one per EM answer, keyed by the model's variables (untransformed values).

    Rates are pulled off 0 and weights off 0 (the Gamma's and the Dirichlet's open supports); the identified
    variant takes the components sorted by rate, ties nudged apart.
    """
    k = model_def.n_components
    starts = []
    for params in params_list:
        if params.w.shape != (k,):
            raise ValueError(f"EM answer has {params.w.shape[0]} components, the model {k}")
        order = np.argsort(params.rate, kind="stable") if model_def.ordered else np.arange(k)
        rate = np.maximum(params.rate[order], 1e-3)
        if model_def.ordered and k > 1:
            rate = _strictly_increasing(rate)
        w = np.clip(params.w[order], 1e-3, None)
        starts.append({"w": w / w.sum(), "rate": rate})
    return starts


def membership_probabilities(model_def: PoissonMixture, counts, draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """P(z_i = k | x_i, draw) for every draw, shape (S, N, K), from ``w`` and ``rate`` draws of shape (S, K)."""
    w = np.asarray(draws["w"], dtype=float)
    rate = np.asarray(draws["rate"], dtype=float)
    if w.ndim != 2 or w.shape != rate.shape or w.shape[1] != model_def.n_components:
        raise ValueError(f"w and rate draws must both be (S, {model_def.n_components}), got {w.shape} and {rate.shape}")
    with np.errstate(divide="ignore"):
        log_joint = np.log(w)[:, None, :] + log_poisson(counts, rate)  # (S, N, K)
    return np.exp(log_joint - logsumexp(log_joint, axis=-1, keepdims=True))
