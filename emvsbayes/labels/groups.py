"""Label switching as result groups: ``posterior_relabelled``, ``label_switching``, ``posterior_modes``
and ``em_optima``.

The model families call :func:`label_switching_groups` with their posterior draws, the per-draw
membership probabilities they compute from those draws, and the EM answer; :func:`em_optima_group`
with their EM restarts. Everything here goes through the pure functions of
:mod:`emvsbayes.labels.relabel` and :mod:`emvsbayes.labels.diagnostics`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from emvsbayes.labels.diagnostics import (
    BIMODALITY_THRESHOLD,
    bimodality,
    chain_permutations,
    distinct_optima,
    modes_up_to_permutation,
)
from emvsbayes.labels.relabel import apply_permutations, relabel
from emvsbayes.labels.xarray import (
    SAMPLE_DIMS,
    constant_elements_quiet,
    draws_from_dataset,
    label_axes_of,
    relabel_tree,
    rename_components,
    rhat_before_after,
)
from emvsbayes.results import label_dims_of

#: method names a spec may give; "auto" is Stephens where membership probabilities exist, else pivot.
RELABEL_METHODS = ("auto", "stephens", "pivot", "ecr", "ecr_iterative", "order")


def _varying(draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Variables that actually vary (fixed weights are constant and carry no label information)."""
    return {name: value for name, value in draws.items() if np.ptp(value) > 0}


def _flat(ds: xr.Dataset, names) -> tuple[list[str], np.ndarray]:
    """Every element of every variable as ("theta[0]", value) rows."""
    labels, values = [], []
    for name in names:
        da = ds[name]
        for index in np.ndindex(da.shape):
            labels.append(f"{name}[{','.join(map(str, index))}]" if index else name)
            values.append(float(da.values[index]))
    return labels, np.array(values)


def label_switching_groups(
    posterior: xr.Dataset,
    *,
    probs: np.ndarray | None,
    reference: Mapping[str, np.ndarray],
    reference_allocation: np.ndarray | None = None,
    method: str = "auto",
    order_var: str | None = None,
    interval_prob: float = 0.89,
    declared: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, xr.Dataset]:
    """Relabel the posterior and diagnose label switching and multimodality.

    Parameters
    ----------
    posterior
        Draws with dims ``chain``, ``draw``, ``component``, ....
    probs
        (S, N, K) membership probabilities per draw (chain-major), or ``None``.
    reference
        The EM answer, name -> (K, ...): the pivot, and the labelling the relabelled draws are put in.
    reference_allocation
        (N,) the EM answer's hard allocation (each observation's most probable component under
        ``reference``): the pivot allocation of ``method="ecr"``, which needs it.
    method
        One of :data:`RELABEL_METHODS`.
    order_var
        For ``method="order"``: the variable whose first coordinate orders the components.
    interval_prob
        Probability of the per-mode equal-tailed intervals in ``posterior_modes`` (the runners pass
        the spec's ``[report] interval_prob``, whose default is this one).
    declared
        Name -> label dims of the family's parameters (or its ParameterInfo records); a variable not in it is labelled as its
        ``label_dims`` attribute says, else by ``component``. Every label dim of a variable is permuted
        (a transition matrix's rows and columns together).
    """
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    draws = _varying(draws_from_dataset(posterior, declared=declared))
    label_axes = label_axes_of(posterior, declared=declared)
    reference = {name: np.asarray(reference[name]) for name in draws if name in reference}
    if method == "auto":
        method = "stephens" if probs is not None else "pivot"
    if method == "order":
        # By default the first labelled parameter other than the weights (theta, mu), in the declared order.
        key = order_var or next((name for name in [*(declared or ()), *draws] if name in draws and name != "w"), None)
        if key is None:
            raise ValueError("relabel method 'order' needs a varying parameter other than the weights to order by")
        values = draws[key].reshape(draws[key].shape[0], draws[key].shape[1], -1)[..., 0]
        result = relabel("order", by=values)
        labelling = f"components ordered by {key} (first coordinate), smallest first"
    elif method == "pivot":
        result = relabel("pivot", draws=draws, reference=reference, label_axes=label_axes)
        labelling = "EM answer's parameters (pivot), each scaled by its within-component posterior spread"
    elif method == "stephens":
        result = relabel("stephens", probs=probs)
        labelling = "Stephens' KL fixed point, renamed to EM's labelling by its posterior means"
    elif method == "ecr":
        if reference_allocation is None:
            raise ValueError("relabel method 'ecr' needs reference_allocation (the EM answer's hard allocation)")
        # ECR needs a pivot allocation. EM's own (each observation's most probable component under the EM
        # answer) is the natural one here: it is a central, not a sampled, labelling (label.switching's
        # default is the MAP draw's allocation, which the run has no log-posterior for), and it is already
        # in EM's labelling, so the relabelled posterior needs no renaming afterwards.
        result = relabel("ecr", probs=probs, reference=np.asarray(reference_allocation),
                         K=posterior.sizes["component"])
        labelling = "EM answer's allocation (each observation's most probable component under EM's parameters)"
    else:
        result = relabel(method, probs=probs, K=posterior.sizes["component"])
        labelling = "iterated ECR from the first draw's allocation, renamed to EM's labelling by its posterior means"

    perms = result.perms
    # Stephens and iterative ECR fix the labels only up to one global renaming: put it in EM's labelling so
    # the relabelled posterior and the EM answer can be read side by side. One set of means has no spread of
    # its own to standardise by, so the relabelled draws' within-component spread is given as the scale.
    if method in ("stephens", "ecr_iterative"):
        relabelled_draws = apply_permutations(draws, perms, label_axes)
        means = {name: value.mean(axis=0, keepdims=True) for name, value in relabelled_draws.items()}
        spread = {name: value.std(axis=0) for name, value in relabelled_draws.items()}
        to_reference = relabel("pivot", draws=means, reference=reference, scale=spread, label_axes=label_axes).perms[0]
        perms = perms[:, to_reference]

    relabelled = relabel_tree(posterior, perms, declared=declared)
    relabelled["permutation"] = (("chain", "draw", "component"), perms.reshape(n_chains, n_draws, -1))
    relabelled.attrs = {"method": method, "labelling": labelling,
                        "n_changed": int(np.sum(np.any(perms != np.arange(perms.shape[1]), axis=1)))}

    switching = chain_permutations(perms, n_chains)
    names = [name for name in draws]
    comparison = rhat_before_after(posterior, relabelled, var_names=names)
    parameters, rhat_before = _flat(comparison.rhat_before, names)
    _, rhat_after = _flat(comparison.rhat_after, names)
    _, ess_before = _flat(comparison.ess_before, names)
    _, ess_after = _flat(comparison.ess_after, names)
    raw_bimodality = np.array([
        bimodality(posterior[name].values[(..., *index)].ravel())
        for name in names for index in np.ndindex(posterior[name].shape[2:])
    ])

    chain_draws = {name: value.reshape(n_chains, n_draws, *value.shape[1:]) for name, value in draws.items()}
    modes = modes_up_to_permutation(chain_draws, label_axes=label_axes)
    identity = np.arange(perms.shape[1])
    switched = bool(np.any(switching.n_switches > 0) or np.any(switching.modal_perm != identity)
                    or modes.label_switching)
    ds = xr.Dataset(
        {
            "modal_perm": (("chain", "component"), switching.modal_perm),
            "modal_share": ("chain", switching.modal_share),
            "n_switches": ("chain", switching.n_switches),
            "chain_mode": ("chain", modes.mode),
            "mode_share": ("mode", modes.share),
            "rhat_before": ("parameter", rhat_before),
            "rhat_after": ("parameter", rhat_after),
            "ess_before": ("parameter", ess_before),
            "ess_after": ("parameter", ess_after),
            "bimodality_raw": ("parameter", raw_bimodality),
        },
        coords={"chain": posterior["chain"].values, "component": posterior["component"].values,
                "parameter": parameters, "mode": np.arange(len(modes.share))},
    )
    ds.attrs.update(
        method=method,
        labelling=labelling,
        n_changed=relabelled.attrs["n_changed"],
        n_draws_total=int(perms.shape[0]),
        label_switching=int(switched),
        distinct_modes=int(modes.distinct_modes),
        bimodality_threshold=BIMODALITY_THRESHOLD,
        iterations=int(result.iterations),
    )
    return {"posterior_relabelled": relabelled, "label_switching": ds,
            "posterior_modes": posterior_modes_group(relabelled, modes.mode, names, interval_prob, declared)}


def _aligned_chains(picked: xr.Dataset, declared=None) -> xr.Dataset:
    """Each chain renamed so its mean matches the first chain's (a pivot of chain means).

    The relabelling puts every draw in EM's labelling, which for a mode other than EM's is only
    a nearest match and can differ from chain to chain; the chains of one mode must share one
    labelling for their mean, interval and R-hat to mean anything.
    """
    means = draws_from_dataset(picked.mean("draw", keep_attrs=True).expand_dims("draw"), declared=declared)
    leader = {name: value[0] for name, value in means.items()}
    # One label-invariant scale per variable (pooled over chains, draws and components).
    scale = {name: float(np.std(picked[name].values)) or 1.0 for name in means}
    label_axes = label_axes_of(picked, declared=declared)
    perms = relabel("pivot", draws=means, reference=leader, scale=scale, label_axes=label_axes).perms
    chains = [rename_components(picked.isel(chain=[c]), perm, declared=declared) for c, perm in enumerate(perms)]
    return xr.concat(chains, dim="chain") if len(chains) > 1 else chains[0]


def _mode_draws(ds: xr.Dataset, chains: np.ndarray, declared=None) -> xr.Dataset:
    """The draws of ``chains`` in one labelling; a single chain as its two halves, so split R-hat
    (which needs two chains in ArviZ) still compares its first and second half, each split again."""
    picked = ds.isel(chain=chains)
    if len(chains) > 1:
        return _aligned_chains(picked, declared)
    half = picked.sizes["draw"] // 2
    first = picked.isel(draw=slice(0, half)).assign_coords(draw=np.arange(half))
    second = picked.isel(draw=slice(half, 2 * half)).assign_coords(draw=np.arange(half))
    return xr.concat([first, second], dim="chain").assign_coords(chain=[0, 1])


def posterior_modes_group(relabelled: xr.Dataset, chain_mode: np.ndarray, names, interval_prob: float,
                          declared=None) -> xr.Dataset:
    """Each posterior mode summarised apart: its chains, share, mean, equal-tailed interval, R-hat, ESS.

    Where chains sit in genuinely different modes (:func:`modes_up_to_permutation`), a mean or interval
    over all chains spans the modes and describes none of them, and R-hat over all chains only says
    that they differ. Within a mode both mean what they usually mean: the report reads this group for
    the per-mode table and the within-mode checks. ``main_mode`` (attribute) is the mode with the
    largest share, the lower id on ties (mode 0 holds chain 0, started at EM's best answer).

    Parameters
    ----------
    relabelled
        Relabelled draws (``chain``, ``draw``, ``component``, ...).
    chain_mode
        (n_chains,) mode id of each chain, ids 0..n_modes-1.
    names
        Variables to summarise.
    interval_prob
        Probability of the equal-tailed interval.
    declared
        Name -> label dims (see :func:`label_switching_groups`).
    """
    # ArviZ's diagnostics (arviz-stats), without the umbrella package that imports arviz-plots and matplotlib
    import arviz_stats

    chain_mode = np.asarray(chain_mode)
    n_modes = int(chain_mode.max()) + 1
    tail = (1 - interval_prob) / 2
    columns: dict[str, list[np.ndarray]] = {key: [] for key in ("mean", "lower", "upper", "rhat", "ess_bulk")}
    parameters = None
    for mode in range(n_modes):
        chains = np.flatnonzero(chain_mode == mode)
        draws = _mode_draws(relabelled[list(names)], chains, declared)
        quantiles = draws.quantile([tail, 1 - tail], dim=list(SAMPLE_DIMS))
        kw = {"sample_dims": list(SAMPLE_DIMS)}
        with constant_elements_quiet():
            rhat, ess = arviz_stats.rhat(draws, **kw), arviz_stats.ess(draws, method="bulk", **kw)
        for key, summary in (("mean", draws.mean(list(SAMPLE_DIMS))),
                             ("lower", quantiles.isel(quantile=0, drop=True)),
                             ("upper", quantiles.isel(quantile=1, drop=True)),
                             ("rhat", rhat), ("ess_bulk", ess)):
            parameters, values = _flat(summary, names)
            columns[key].append(values)
    share = np.bincount(chain_mode, minlength=n_modes) / chain_mode.size
    ds = xr.Dataset(
        {"chain_mode": ("chain", chain_mode),
         "share": ("mode", share),
         "n_chains": ("mode", np.bincount(chain_mode, minlength=n_modes)),
         **{key: (("mode", "parameter"), np.stack(values)) for key, values in columns.items()}},
        coords={"chain": relabelled["chain"].values, "mode": np.arange(n_modes), "parameter": parameters},
    )
    ds.attrs.update(n_modes=n_modes, main_mode=int(np.argmax(share)), interval_prob=float(interval_prob))
    return ds


def em_optima_group(restarts: xr.Dataset, names, declared: Mapping[str, tuple[str, ...]] | None = None) -> xr.Dataset:
    """The distinct local optima among EM restarts, up to renaming of components (along every label dim
    of a parameter; ``declared``: name -> label dims, as :func:`label_switching_groups` takes it)."""
    params = {name: restarts[name].values for name in names if name in restarts and np.ptp(restarts[name].values) > 0}
    # Every label dim of a parameter is renamed (a transition matrix's rows and columns), read as relabelling
    # reads it: the declaration given, else the variable's attribute, else ``component``.
    label_axes = {name: tuple(restarts[name].dims.index(d) for d in label_dims_of(restarts[name], declared))
                  for name in params}
    optima = distinct_optima(params, restarts["loglik"].values, label_axes=label_axes)
    members = np.full(restarts.sizes["restart"], -1)
    for i, optimum in enumerate(optima):
        members[optimum.members] = i
    return xr.Dataset(
        {
            "loglik": ("optimum", np.array([o.loglik for o in optima])),
            "count": ("optimum", np.array([o.count for o in optima])),
            "representative": ("optimum", np.array([o.representative for o in optima])),
            "optimum_of_restart": ("restart", members),
        },
        coords={"optimum": np.arange(len(optima)), "restart": restarts["restart"].values},
    )
