"""Bayesian (weighted-likelihood) bootstrap of an EM answer (Rubin 1981; Newton & Raftery 1994).

Replicate b gives the N observed rows the weights N * (D_1, ..., D_N), D ~ Dirichlet(1, ..., 1) (so
they sum to N, as the nonparametric bootstrap's counts do, but vary smoothly instead of in integers),
and maximises the weighted log-likelihood sum_i w_i log p(x_i | params) by EM from the reference answer.
Weights enter EM generically, through the statistics: the E-step's responsibilities of row i are
multiplied by w_i before the M-step sums them, exactly as a resample's counts are (a count is an
integer weight), so a family's batched steps take the weights unchanged: no M-step needed a change. The
refit is the family's optional protocol member ``weighted_fit`` (:mod:`emvsbayes.family`).

Each replicate's components are renamed to match the reference answer (:func:`emvsbayes.labels.pivot`),
as the other bootstraps' are. Randomness: replicate b draws its weights from its own child
``np.random.SeedSequence(seed).spawn(B)[b]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ASSUMES", "BayesianBootstrap", "bayesian_bootstrap", "dirichlet_weights", "row_variables",
           "weighted_refit"]

#: What this rung assumes, one sentence for the report.
ASSUMES = ("Bayesian bootstrap: the observed rows are the whole population up to Dirichlet(1, ..., 1) weights "
           "(no prior on the parameters), and each weighting's EM answer, aligned to EM's labels, is one draw.")


def dirichlet_weights(n_obs: int, n_replicates: int, seed: int) -> np.ndarray:
    """Row weights (B, N): replicate b is N * Dirichlet(1, ..., 1) drawn from its own child seed."""
    if n_obs < 1 or n_replicates < 1:
        raise ValueError("need at least one observation and one replicate")
    children = np.random.SeedSequence(seed).spawn(n_replicates)
    # Normalised standard exponentials are Dirichlet(1, ..., 1); rescaled to sum to N like bootstrap counts.
    out = np.empty((n_replicates, n_obs))
    for b, child in enumerate(children):
        e = np.random.default_rng(child).standard_exponential(n_obs)
        out[b] = n_obs * e / e.sum()
    return out


@dataclass(frozen=True, slots=True)
class BayesianBootstrap:
    """The replicates, draws-like and aligned to the reference.

    ``draws`` name -> (B, K, ...) (NaN rows for failed refits); ``perms`` (B, K) the renaming applied
    (new component j is the refit's ``perms[b, j]``); ``weights`` (B, N); ``loglik`` (B,) the weighted
    log-likelihood at each answer; ``converged`` (B,); ``errors`` (B,) ``""`` or the refit's error.
    """

    draws: dict[str, np.ndarray]
    perms: np.ndarray
    weights: np.ndarray
    loglik: np.ndarray
    converged: np.ndarray
    errors: tuple[str, ...]

    @property
    def ok(self) -> np.ndarray:
        return np.array([not e for e in self.errors])

    def to_dataset(self, dims: Mapping[str, tuple[str, ...]]):
        """An ``xarray.Dataset`` with dim ``replicate`` first, then ``dims[name]`` for each variable."""
        import xarray as xr

        data_vars = {name: (("replicate", *dims[name]), value) for name, value in self.draws.items()}
        data_vars["loglik"] = (("replicate",), self.loglik)
        data_vars["converged"] = (("replicate",), self.converged)
        return xr.Dataset(data_vars, coords={"replicate": np.arange(self.weights.shape[0])})


def row_variables(params) -> dict[str, np.ndarray]:
    """name -> (B, K, ...) from a batched parameter record, through each row's own ``variables()`` (the
    records' ``variables`` are written for one fit)."""
    from emvsbayes.em import take_rows

    n_rows = next(v for v in (getattr(params, f) for f in params.__dataclass_fields__) if isinstance(v, np.ndarray))
    rows = [take_rows(params, b).variables() for b in range(n_rows.shape[0])]
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def bayesian_bootstrap(refit_weighted: Callable[[np.ndarray], object], reference: Mapping[str, np.ndarray],
                       weights: np.ndarray, variables_of: Callable[[object], dict] = row_variables,
                       ) -> BayesianBootstrap:
    """Refit with each row of ``weights`` and align the answers to ``reference``.

    Parameters
    ----------
    refit_weighted
        ``weights (B, N) -> emvsbayes.em.BatchedEMFit``: EM of B weighted fits from the reference
        answer (:func:`weighted_refit`: the family's ``weighted_fit``).
    reference
        The EM answer's variables, name -> (K, ...): component j of every replicate is matched to its j.
    weights
        (B, N) from :func:`dirichlet_weights`.
    variables_of
        A batched parameter record -> name -> (B, K, ...) arrays (default :func:`row_variables`).
    """
    from emvsbayes.labels import apply_permutations, pivot

    weights = np.asarray(weights, dtype=float)
    fit = refit_weighted(weights)
    draws = {name: np.asarray(value, dtype=float) for name, value in variables_of(fit.params).items()}
    ok = np.array([not e for e in fit.errors])
    for value in draws.values():
        ok &= np.all(np.isfinite(value.reshape(value.shape[0], -1)), axis=1)
    b, k = next(iter(draws.values())).shape[:2]
    perms = np.broadcast_to(np.arange(k), (b, k)).copy()
    if ok.any():
        perms[ok] = pivot({name: value[ok] for name, value in draws.items()},
                          {name: np.asarray(reference[name], dtype=float) for name in draws}).perms
    errors = tuple(e if e or row_ok else "non-finite estimate" for e, row_ok in zip(fit.errors, ok))
    return BayesianBootstrap(apply_permutations(draws, perms), perms, weights, np.asarray(fit.loglik, dtype=float),
                             np.asarray(fit.converged, dtype=bool) & ok, errors)


def weighted_refit(family, model_def, data, reference, options: dict) -> tuple[Callable | None, str]:
    """(``weights -> BatchedEMFit``: the family's ``weighted_fit`` from ``reference``, "") or (None, why there
    is no Bayesian bootstrap for this family)."""
    fit = getattr(family, "weighted_fit", None)
    if fit is None:
        return None, f"the weighted EM refit is not written for the {family.name} family"

    def refit(weights):
        return fit(model_def, data, reference, weights, options)

    return refit, ""
