"""Result groups that put EM's uncertainty next to the posterior's, shared by every model family.

- ``em_information``: standard errors from the observed information and Wald intervals
  (``se_<name>``, ``wald_lower_<name>``, ``wald_upper_<name>``), or the reason they do not exist; the
  attribute ``wald_scale_<name>`` says on which scale each interval was formed (``se`` is natural-scale);
- ``em_bootstrap``: bootstrap replicates, draws-like (``replicate``, ``component``, ...);
- ``membership_agreement``: EM responsibilities against posterior membership, entropy, and the
  adjusted Rand index between the hard labellings of EM, hard EM, k-means and the posterior;
- ``truth_agreement``: each of those labellings against known groups (``[data] truth``): adjusted Rand
  index and a confusion table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from emvsbayes.uncertainty import (
    SCALE_DESCRIPTIONS,
    BootstrapResult,
    StandardErrors,
    adjusted_rand_index,
    ari_matrix,
    assignment_entropy,
    confusion_table,
    hard_labels,
    membership_difference,
)


def bootstrap_progress(progress):
    """A callback for the bootstrap that reports each quarter of the replicates as one line."""
    if progress is None:
        return None
    said = set()

    def report(done: int, total: int) -> None:
        quarter = 4 * done // total
        if quarter not in said and quarter > 0:
            said.add(quarter)
            progress(f"bootstrap: {done} of {total} replicates refitted")

    return report


def information_group(se: StandardErrors, dims: Mapping[str, tuple[str, ...]], coords) -> xr.Dataset:
    data = {}
    for name, estimate in se.estimate.items():
        d = dims[name]
        data[f"se_{name}"] = (d, np.asarray(se.se[name]))
        data[f"wald_lower_{name}"] = (d, np.asarray(se.lower[name]))
        data[f"wald_upper_{name}"] = (d, np.asarray(se.upper[name]))
    ds = xr.Dataset(data)
    ds = ds.assign_coords({k: v for k, v in coords.items() if k in ds.dims})
    ds.attrs.update(level=se.level, singular=int(se.singular), reason=se.reason or "",
                    condition_number=float(se.condition_number) if se.condition_number is not None else np.nan)
    # In words, so the report (which reads only this file) can say it without knowing the scales' keys.
    ds.attrs.update({f"wald_scale_{name}": SCALE_DESCRIPTIONS[scale] for name, scale in se.interval_scale.items()})
    return ds


def bootstrap_group(result: BootstrapResult, coords) -> xr.Dataset:
    ds = result.to_dataset()
    ds = ds.assign_coords({k: v for k, v in coords.items() if k in ds.dims and k != "replicate"})
    # netCDF-friendly: the per-replicate flags as small integers
    for name in ("converged", "failed"):
        if name in ds.coords:
            ds = ds.assign_coords({name: ds[name].astype(np.int8)})
    return ds


def agreement_group(obs_dim: str, obs_labels, em_resp: np.ndarray, posterior_membership: np.ndarray | None,
                    labellings: Mapping[str, np.ndarray]) -> xr.Dataset:
    """How EM's and the posterior's cluster memberships agree.

    ``posterior_membership`` must be in EM's labelling (the relabelled posterior's membership).
    ``labellings`` maps a name (``"hard EM"``, ``"k-means"``) to hard labels (N,); EM's own hard labels
    and the posterior mode are added here.
    """
    labels = {"EM": hard_labels(em_resp), **labellings}
    data = {"entropy_em": (obs_dim, assignment_entropy(em_resp))}
    attrs = {}
    if posterior_membership is not None:
        labels["posterior mode"] = hard_labels(posterior_membership)
        diff = membership_difference(em_resp, posterior_membership, align=False)
        data["abs_diff"] = (obs_dim, diff.per_observation)
        data["entropy_posterior"] = (obs_dim, assignment_entropy(posterior_membership))
        attrs["mean_abs_diff"] = float(diff.mean_abs)
    names, matrix = ari_matrix(labels)
    data["ari"] = (("labelling", "labelling_bis"), matrix)
    data["hard_label"] = (("labelling", obs_dim), np.stack([labels[n] for n in names]))
    ds = xr.Dataset(data, coords={obs_dim: list(obs_labels), "labelling": list(names), "labelling_bis": list(names)})
    ds.attrs.update(attrs)
    return ds


def _renamed_to_match(reference: np.ndarray, labels: np.ndarray, n_components: int) -> np.ndarray:
    """``labels`` with its components renamed so that as many observations as possible carry the same
    component as in ``reference`` (a K x K assignment on the overlap counts)."""
    from scipy.optimize import linear_sum_assignment

    labels = np.asarray(labels, dtype=np.int64)
    overlap = np.zeros((n_components, n_components), dtype=np.int64)  # [reference's j, labels' k]
    np.add.at(overlap, (np.asarray(reference, dtype=np.int64), labels), 1)
    rows, cols = linear_sum_assignment(-overlap)
    new_name = np.empty(n_components, dtype=np.int64)
    new_name[cols] = rows
    return new_name[labels]


def truth_agreement_group(truth, agreement: xr.Dataset, n_components: int, *, column: str = "") -> xr.Dataset:
    """Every hard labelling of ``agreement`` (a ``membership_agreement`` group) against known groups.

    ``ari`` (labelling): adjusted Rand index against ``truth``; ``confusion`` (labelling, truth_group,
    component): how many observations of each known group each labelling puts in each component, with
    each labelling's components renamed to match the first's (soft EM's) as closely as they can, so the
    tables read side by side (the index does not depend on names). ``column`` (an attribute) names
    where the known groups came from.
    """
    truth = np.asarray(truth).astype(str)
    names = [str(v) for v in agreement["labelling"].values]
    hard = agreement["hard_label"].values
    reference = hard[0]
    aligned = [_renamed_to_match(reference, hard[i], n_components) for i in range(len(names))]
    tables = [confusion_table(truth, labels, n_components) for labels in aligned]
    groups = tables[0][0]
    ds = xr.Dataset({"ari": ("labelling", [adjusted_rand_index(truth, hard[i]) for i in range(len(names))]),
                     "confusion": (("labelling", "truth_group", "component"), np.stack([t[1] for t in tables]))},
                    coords={"labelling": names, "truth_group": list(groups), "component": np.arange(n_components)})
    ds.attrs.update(column=column, n_obs=int(truth.size))
    return ds


#: Columns of the ``model_choice`` group, one row per K. Information criteria: lower is better;
#: elpd (LOO, WAIC) and the log evidence: higher is better. ``n_starts`` / ``n_reached_best``: EM starts
#: run and how many ended at the best log-likelihood; ``min_expected_count``: the smallest component's
#: expected count at the EM answer; ``degenerate``: 1 when a component holds too few points to estimate its
#: covariance (:func:`~emvsbayes.uncertainty.degenerate_components`), NaN when not judged. For dependent data
#: (a time series) ``elpd_lfo`` replaces LOO: approximate leave-future-out cross-validation of 1-step-ahead
#: prediction (:func:`~emvsbayes.uncertainty.psis_lfo`), with its Monte Carlo error ``elpd_lfo_mcse``, the points
#: it starts predicting at (``lfo_first``), the refits it made (``lfo_refits``) and the terms whose Pareto k
#: exceeded 0.7 without a refit (``lfo_n_bad_k``: untrustworthy).
MODEL_CHOICE_COLUMNS = ("loglik", "n_params", "bic", "aic", "icl", "elpd_loo", "elpd_loo_se", "p_loo",
                        "n_pareto_k_bad", "elpd_waic", "elpd_lfo", "elpd_lfo_mcse", "lfo_first", "lfo_refits",
                        "lfo_n_bad_k", "log_evidence", "n_starts", "n_reached_best", "min_expected_count", "degenerate")

#: Criteria the group names a best K for, and whether lower or higher is better.
MODEL_CHOICE_BEST = (("bic", np.nanargmin), ("aic", np.nanargmin), ("icl", np.nanargmin),
                     ("elpd_loo", np.nanargmax), ("elpd_lfo", np.nanargmax), ("log_evidence", np.nanargmax))


def model_choice_row(criteria=None, predictive=None, *, lfo=None, log_evidence=float("nan"), note: str = "",
                     n_params: int | None = None, restarts: dict | None = None,
                     expected_counts=None, degenerate: bool | None = None) -> dict:
    """One K's row from :class:`~emvsbayes.uncertainty.InformationCriteria` and
    :class:`~emvsbayes.uncertainty.PredictiveCriteria` (either may be missing; ``lfo``: a
    :class:`~emvsbayes.uncertainty.LeaveFutureOut` for dependent data); ``restarts`` holds
    ``n_starts`` and ``n_reached_best``, ``expected_counts`` the EM answer's n_k (K,), ``degenerate``
    whether one of them is too small for its covariance."""
    nan = float("nan")
    row = {name: nan for name in MODEL_CHOICE_COLUMNS}
    if criteria is not None:
        row.update(loglik=criteria.loglik, n_params=criteria.n_params, bic=criteria.bic, aic=criteria.aic,
                   icl=criteria.icl)
    elif n_params is not None:
        row["n_params"] = n_params
    if predictive is not None:
        row.update(elpd_loo=predictive.elpd_loo, elpd_loo_se=predictive.se_loo, p_loo=predictive.p_loo,
                   n_pareto_k_bad=predictive.n_bad_k, elpd_waic=predictive.elpd_waic)
    if lfo is not None:
        row.update(elpd_lfo=lfo.elpd_lfo, elpd_lfo_mcse=lfo.mcse, lfo_first=lfo.first, lfo_refits=len(lfo.refits),
                   lfo_n_bad_k=lfo.n_bad_k)
    row["log_evidence"] = log_evidence
    if restarts is not None:
        row.update(n_starts=restarts["n_starts"], n_reached_best=restarts["n_reached_best"])
    if expected_counts is not None:
        row["min_expected_count"] = float(np.min(expected_counts))
    if degenerate is not None:
        row["degenerate"] = float(degenerate)
    row["note"] = note
    return row


def model_choice_group(rows: Mapping[int, dict], **attrs) -> xr.Dataset:
    """The ``model_choice`` group over dimension ``K``, with which K each criterion prefers.

    ``best_by_<criterion>`` is chosen among the rows not flagged ``degenerate``: a fit whose component sits
    on a couple of points wins every criterion without being a cluster. When such a row would have won,
    ``degenerate_best_by_<criterion>`` names it, so the report can say so.
    """
    ks = sorted(rows)
    ds = xr.Dataset({name: ("K", np.array([rows[k][name] for k in ks], dtype=float)) for name in MODEL_CHOICE_COLUMNS},
                    coords={"K": ks})
    ds["note"] = ("K", np.array([rows[k]["note"] for k in ks], dtype=str))
    best = {}
    usable = ds["degenerate"].values != 1
    for name, better in MODEL_CHOICE_BEST:
        values = ds[name].values
        kept = np.where(usable, values, np.nan)
        if np.any(np.isfinite(kept)):
            best[f"best_by_{name}"] = int(ks[int(better(kept))])
        if np.any(np.isfinite(values)):
            overall = int(ks[int(better(values))])
            if overall != best.get(f"best_by_{name}"):
                best[f"degenerate_best_by_{name}"] = overall
    ds.attrs.update(attrs, **best)
    chosen = {value for key, value in best.items() if key.startswith("best_by_")}
    ds.attrs["agree"] = int(len(chosen) <= 1)
    return ds


def lrt_columns(group: xr.Dataset, tests, n_boot: int) -> xr.Dataset:
    """``group`` (the ``model_choice`` group) with the bootstrap LRT of each K against K + 1 (a list of
    :class:`~emvsbayes.uncertainty.lrt.BootstrapLRT`): ``lrt_statistic``, ``lrt_p_value``, ``lrt_n_failed``,
    ``lrt_n_search_failed`` along ``K`` (NaN where K has no K + 1 to test against) and the replicates'
    statistics ``lrt_replicates`` (K, lrt_replicate)."""
    ks = [int(k) for k in group["K"].values]
    columns = {name: np.full(len(ks), np.nan) for name in ("lrt_statistic", "lrt_p_value", "lrt_n_failed",
                                                           "lrt_n_search_failed")}
    replicates = np.full((len(ks), n_boot), np.nan)
    for test in tests:
        i = ks.index(test.n_components)
        columns["lrt_statistic"][i] = test.statistic
        columns["lrt_p_value"][i] = test.p_value
        columns["lrt_n_failed"][i] = test.n_failed
        columns["lrt_n_search_failed"][i] = test.n_search_failed
        replicates[i] = test.replicates
    group = group.assign({name: ("K", values) for name, values in columns.items()})
    group["lrt_replicates"] = (("K", "lrt_replicate"), replicates)
    group.attrs["lrt_bootstrap"] = int(n_boot)
    return group


def sparse_group(n_occupied: np.ndarray, k_max: int, attrs: dict) -> xr.Dataset:
    """The ``sparse_mixture`` group: K+ per draw ``n_occupied`` (chain, draw), its posterior ``prob``
    over ``n_clusters`` = 1..K_max, and each probability's Monte Carlo standard error from the effective
    sample size of its indicator (NaN where every draw agrees and the indicator has no variance)."""
    import arviz_stats as az  # ArviZ's ess, without arviz-plots and matplotlib

    from emvsbayes.uncertainty.sparse import occupied_distribution

    n_occupied = np.asarray(n_occupied, dtype=int)
    prob = occupied_distribution(n_occupied.ravel(), k_max)
    mcse = np.full(k_max, np.nan)
    for k in range(1, k_max + 1):
        indicator = (n_occupied == k).astype(float)
        if 0 < indicator.mean() < 1:
            ess = float(az.ess(indicator[None] if indicator.ndim == 1 else indicator))
            mcse[k - 1] = np.sqrt(prob[k - 1] * (1 - prob[k - 1]) / ess) if ess > 0 else np.nan
    ds = xr.Dataset({"n_occupied": (("chain", "draw"), n_occupied), "prob": ("n_clusters", prob),
                     "prob_mcse": ("n_clusters", mcse)}, coords={"n_clusters": np.arange(1, k_max + 1)})
    ds.attrs.update(attrs, mode=int(np.argmax(prob) + 1), mean=float(n_occupied.mean()))
    return ds


#: Chains start from at most this many distinct EM optima (cycled over chains).
MAX_START_OPTIMA = 4


def start_points(variables_of, restarts, refit=None, declared=None) -> list:
    """EM answers to start chains from: the best, then other distinct optima (not relabelled copies).

    ``variables_of`` gives a parameter record's named arrays; ``refit`` (EM from one start) re-runs a
    representative that a batch fitted, so a chain starts from the answer EM gives that start on its own,
    not one equal to it only to rounding. ``declared`` (name -> :class:`~emvsbayes.family.ParameterInfo`)
    names every label dim of a parameter: a transition matrix renamed in its rows and columns together is
    the same optimum (without it, only the first axis is renamed and a relabelled copy counts as another)."""
    from emvsbayes.labels.diagnostics import distinct_optima

    order = np.argsort([-fit.loglik for fit in restarts.fits])
    fits = [restarts.fits[i] for i in order]
    if len(fits) == 1:
        return [fits[0].params]
    variables = [variables_of(f.params) for f in fits]
    params = {name: np.stack([v[name] for v in variables]) for name in variables[0]}
    varying = {k: v for k, v in params.items() if np.ptp(v) > 0}
    # label axes counted with the leading restart axis: dims (component, component_to) -> (1, 2)
    label_axes = {name: tuple(1 + info.dims.index(d) for d in info.label_dims)
                  for name, info in (declared or {}).items() if name in varying and len(info.label_dims) > 1}
    optima = distinct_optima(varying, np.array([f.loglik for f in fits]), label_axes=label_axes or None)
    chosen = [fits[o.representative] for o in optima[:MAX_START_OPTIMA]]
    return [refit(fit.init_params).params if refit is not None and fit.stats is None else fit.params
            for fit in chosen]
