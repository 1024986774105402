"""What the ladder needs of a family beyond the protocol: MAP-EM and the weighted EM refit.

The protocol (PROTOCOL.md) names neither, so this module keeps one table per extra, keyed by the family's
``name``, the way :data:`emvsbayes.family.FAMILIES` keeps the families: a family not listed (or a model
the MAP-EM does not cover) gets ``None`` and a sentence saying why, which the runner stores and the report
shows. A new family adds one line here when it has these.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["map_fit", "weighted_refit"]


def _coin_map(model_def, data, init, options):
    from emvsbayes.ladder.map_em import fit_coin_map

    return fit_coin_map(model_def, data.heads, data.tosses, init, **options)


def _gaussian_map(model_def, data, init, options):
    from emvsbayes.ladder.map_em import fit_gaussian_1d_map

    x = np.asarray(data.x, dtype=float)
    if x.ndim == 2 and x.shape[1] != 1:
        raise ValueError(f"MAP-EM covers 1-D Gaussian mixtures only (the LKJ prior on correlations has no "
                         f"closed-form M-step); these data have {x.shape[1]} columns")
    return fit_gaussian_1d_map(model_def, x, init, **options)


def _coin_refit(model_def, data, reference, options):
    from emvsbayes.ladder.bayesian_bootstrap import coin_refit

    return coin_refit(model_def, data.heads, data.tosses, reference, **options)


def _gaussian_refit(model_def, data, reference, options):
    from emvsbayes.ladder.bayesian_bootstrap import gaussian_refit

    return gaussian_refit(model_def, data.x, reference, **options)


MAP_FITS: dict[str, Callable] = {"coins": _coin_map, "gaussian": _gaussian_map}
WEIGHTED_REFITS: dict[str, Callable] = {"coins": _coin_refit, "gaussian": _gaussian_refit}


def map_fit(family, model_def, data, init, options: dict) -> tuple[object | None, str]:
    """(MAP-EM's parameters started from ``init``, "") or (None, why there is no MAP-EM rung)."""
    fit = MAP_FITS.get(family.name)
    if fit is None:
        return None, f"MAP-EM is not written for the {family.name} family"
    try:
        return fit(model_def, data, init, options).params, ""
    except ValueError as error:
        return None, f"MAP-EM skipped: {error}"


def weighted_refit(family, model_def, data, reference, options: dict) -> tuple[Callable | None, str]:
    """(``weights -> batched fit`` from ``reference``, "") or (None, why there is no Bayesian bootstrap)."""
    refit = WEIGHTED_REFITS.get(family.name)
    if refit is None:
        return None, f"the weighted EM refit is not written for the {family.name} family"
    return refit(model_def, data, reference, options), ""
