"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, arXiv:1804.06788).

If parameters are drawn from the prior, data from the model given them, and the posterior is sampled
correctly, the rank of the true value among L posterior draws is uniform on 0..L. A replicate here:

1. draw parameters from the prior (``[sbc] data_prior`` may name another prior, to check that a wrong
   model is caught), simulate a data set;
2. sample the posterior (chains start at the best of ``n_init`` EM fits; the compiled model is shared
   with the cell's other replicates, see :mod:`emvsbayes.study.replicate`);
3. compute label-invariant quantities (a mixture's labels are arbitrary, so raw component parameters
   are not calibrated quantities): the sorted thetas (coins) or sorted means (1-D Gaussian), and the
   weights (and sds) of the components in that order; a variable with two label dims (a hidden Markov
   model's transition matrix) has its rows and columns put in that order together;
4. thin the draws evenly to L (``[sbc] ranks``) and count how many fall below the true value.

:func:`uniformity_test` bins the ranks of each quantity and applies a chi-square test; a cell fails
when any quantity's p-value is below ``alpha / n_quantities`` (Bonferroni), so a correct model fails
with probability at most about ``alpha`` (the chi-square approximation needs about 5 replicates per bin).
Thinning to L draws reduces autocorrelation; a replicate whose smallest bulk ESS is below L is flagged
(``ess_below_ranks``) because its ranks are then not from roughly independent draws.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from scipy import stats

from emvsbayes.study.replicate import (
    cell_prior,
    cell_sampler,
    chain_diagnostics,
    fit_em,
    int_seed,
    record,
    replicate_seeds,
    sample,
    study_family,
)


def invariant_quantities(order_var: str, variables: dict[str, np.ndarray],
                         label_axes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Label-invariant quantities per draw: name -> (S,), from variables of shape (S, K, ...) (or (K, ...)).

    Components are put in increasing order of the family's ``order_var`` (theta for coins, mu for
    Gaussians), and every variable follows that order: ``theta_sorted[0]`` is the smallest theta,
    ``w_sorted[0]`` its weight. ``label_axes`` gives a variable's number of leading label axes (after the
    draw axis), each permuted by that order: 2 for a K x K transition matrix, whose rows and columns name
    states alike (``transition_sorted[0,1]`` is the probability of moving from the state of the smallest rate
    to the next); every variable not named has one (the component axis). Trailing axes are not permuted.
    """
    key = order_var
    label_axes = label_axes or {}
    single = np.ndim(variables[key]) == 1
    values = {name: np.asarray(v, dtype=float) for name, v in variables.items()}
    if single:
        values = {name: value[None] for name, value in values.items()}
    by = values[key].reshape(values[key].shape[0], values[key].shape[1], -1)[..., 0]
    order = np.argsort(by, axis=1, kind="stable")
    out = {}
    for name, value in values.items():
        ranked = value
        for axis in range(1, 1 + label_axes.get(name, 1)):
            index = order.reshape(order.shape + (1,) * (value.ndim - 2))
            ranked = np.take_along_axis(ranked, np.moveaxis(index, 1, axis), axis=axis)
        ranked = ranked.reshape(ranked.shape[0], ranked.shape[1], -1)
        for j in range(ranked.shape[1]):
            for f in range(ranked.shape[2]):
                label = f"{name}_sorted[{j}]" if ranked.shape[2] == 1 else f"{name}_sorted[{j},{f}]"
                out[label] = ranked[:, j, f][0] if single else ranked[:, j, f]
    return out


def thin(n_draws: int, n_keep: int) -> np.ndarray:
    """Indices of ``n_keep`` draws spread evenly over ``n_draws`` (chain-major) draws."""
    return np.floor(np.arange(n_keep) * n_draws / n_keep).astype(int)


def rank_statistics(draws: dict[str, np.ndarray], truth: dict[str, float], n_ranks: int) -> dict[str, float]:
    """Rank of each true value among ``n_ranks`` thinned draws: the number of draws below it (0..L)."""
    out = {}
    for name, value in draws.items():
        kept = value[thin(value.shape[0], n_ranks)]
        out[name] = float(np.sum(kept < truth[name]))
    return out


def run_sbc_replicate(spec: dict, cell_index: int, replicate: int, cell: dict) -> dict:
    family = study_family(spec)
    prior = cell_prior(spec, cell)
    model_def = family.study_model(spec, cell, prior)
    data_prior = spec["priors"][spec["sbc"]["data_prior"]] if spec["sbc"]["data_prior"] else prior
    # The truth is drawn from the data prior: the model's own, or another to check that a wrong model is caught.
    data_model = family.study_model(spec, cell, data_prior)
    seeds = replicate_seeds(spec["seed"], cell_index, replicate)
    timings: dict[str, float] = {}
    began = time.perf_counter()

    data_rng = np.random.default_rng(seeds["data"])
    truth = family.prior_draw(data_model, data_rng)
    data = family.study_data(model_def, truth, cell, data_rng)
    arrays = family.as_arrays(data)
    timings["simulate"] = time.perf_counter() - began

    start = time.perf_counter()
    em = fit_em(family, model_def, data, spec, np.random.default_rng(seeds["em"]))
    timings["em"] = time.perf_counter() - start

    start = time.perf_counter()
    sampler, compiled_now = cell_sampler(family, model_def, arrays, cell, spec)
    timings["compile"] = time.perf_counter() - start
    draws = sample(sampler, family, model_def, arrays, em.best.params, spec, int_seed(seeds["sampler"]))
    timings["sampling"] = draws.seconds
    timings["compile"] += draws.compile_seconds

    # A family whose ordering parameter depends on the model (an HMM's rate or mu) says which; label dims
    # as the family declares them, so a transition matrix's rows and columns follow the order together.
    order_var = family.order_var_of(model_def) if hasattr(family, "order_var_of") else family.order_var
    label_axes = {name: len(info.label_dims) for name, info in family.parameters(model_def, data).items()}
    truth_q = invariant_quantities(order_var, family.estimated_variables(model_def, truth), label_axes)
    draw_q = invariant_quantities(order_var, draws.values, label_axes)
    draw_q = {name: value for name, value in draw_q.items() if np.ptp(value) > 0}  # fixed weights are not ranked
    n_ranks = spec["sbc"]["ranks"]
    ranks = rank_statistics(draw_q, truth_q, n_ranks)
    diag = chain_diagnostics({name: value[:, None] for name, value in draw_q.items()}, draws.chains)
    scalars = {
        "rhat_max": diag["rhat_max"],
        "ess_bulk_min": diag["ess_bulk_min"],
        "ess_per_second": diag["ess_bulk_min"] / draws.seconds if draws.seconds > 0 else np.nan,
        "ess_below_ranks": float(diag["ess_bulk_min"] < n_ranks),
        "divergences": float(draws.divergences),
    }
    values = {"rank": ranks, "truth": {name: float(truth_q[name]) for name in ranks},
              "post_mean": {name: float(draw_q[name].mean()) for name in ranks}}
    timings["total"] = time.perf_counter() - began
    return record(cell_index, replicate, values=values, scalars=scalars, timings=timings, compiled=compiled_now)


class Uniformity(NamedTuple):
    """Chi-square test of binned ranks against the uniform distribution, for one quantity.

    ``counts`` (bins,); ``statistic``; ``p_value``; ``n`` ranks used.
    """

    counts: np.ndarray
    statistic: float
    p_value: float
    n: int


def uniformity_test(ranks: np.ndarray, n_ranks: int, bins: int) -> Uniformity:
    """Bin ranks 0..``n_ranks`` into ``bins`` equal bins and test them against uniform counts.

    ``(n_ranks + 1)`` must be divisible by ``bins`` so every bin holds the same number of rank values.
    NaN ranks (failed replicates) are left out.
    """
    if (n_ranks + 1) % bins:
        raise ValueError(f"{bins} bins do not divide {n_ranks + 1} rank values")
    ranks = np.asarray(ranks, dtype=float)
    ranks = ranks[np.isfinite(ranks)]
    counts = np.bincount((ranks // ((n_ranks + 1) // bins)).astype(int), minlength=bins)[:bins]
    if ranks.size == 0:
        return Uniformity(counts, np.nan, np.nan, 0)
    expected = ranks.size / bins
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return Uniformity(counts, statistic, float(stats.chi2.sf(statistic, bins - 1)), int(ranks.size))


def uniform_band(n: int, bins: int, prob: float = 0.99) -> tuple[float, float]:
    """The central ``prob`` range of one bin's count under uniform ranks (Binomial(n, 1/bins))."""
    dist = stats.binom(n, 1.0 / bins)
    return float(dist.ppf((1 - prob) / 2)), float(dist.ppf(1 - (1 - prob) / 2))
