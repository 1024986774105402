"""The MAP-EM rung: EM for the posterior mode under the Bayesian model's own priors.

Each family writes its own M-step with the priors' terms as the optional protocol member ``map_fit``
(:mod:`emvsbayes.family`; the coins' in :mod:`emvsbayes.coins.map_em`, the Gaussians' in
:mod:`emvsbayes.gaussian.map_em`, the Poisson mixture's in :mod:`emvsbayes.poisson.map_em`, the Poisson
hidden Markov model's in :mod:`emvsbayes.hmm.map_em`). This module
asks the family for it and turns "not written" or "not covered" into the one-line reason the report shows.
"""

from __future__ import annotations

__all__ = ["ASSUMES", "map_point"]

#: What this rung assumes, one sentence for the report.
ASSUMES = ("MAP by EM: the most probable parameter values under the Bayesian model's own priors stand for the "
           "posterior (a point, one labelling, no spread).")


def map_point(family, model_def, data, init, options: dict) -> tuple[object | None, str]:
    """(MAP-EM's parameters started from ``init``, "") or (None, why there is no MAP-EM rung)."""
    fit = getattr(family, "map_fit", None)
    if fit is None:
        return None, f"MAP-EM is not written for the {family.name} family"
    try:
        return fit(model_def, data, init, options).params, ""
    except ValueError as error:
        return None, f"MAP-EM skipped: {error}"
