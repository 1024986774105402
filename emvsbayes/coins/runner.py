"""A coin-mixture comparison from a validated spec: EM (soft, hard), the exact posterior, PyMC.

Returns named ``xarray.Dataset`` groups for :mod:`emvsbayes.results`; fitting stays in the numpy core.
"""

from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

from emvsbayes.coins import bayes, em, exact
from emvsbayes.coins.model import PARAMETER_DIMS, CoinMixture, CoinParams
from emvsbayes.comparison import (
    agreement_group,
    bootstrap_group,
    bootstrap_progress,
    information_group,
    model_choice_group,
    model_choice_row,
)
from emvsbayes.errors import UserError
from emvsbayes.uncertainty import coin_bootstrap, coin_criteria, coin_standard_errors, loo_waic
from emvsbayes.labels.groups import em_optima_group, label_switching_groups
from emvsbayes.results import dataset_from_variables, em_estimate, em_restarts, em_trace
from emvsbayes.sampling import ModelRecipe, SamplerSettings, resolve_sampler, resolve_target_accept, sample_posterior

STATS_DIMS = {"resp": ("set", "component"), "expected_heads": ("component",), "expected_tails": ("component",)}


def model_from_spec(spec: dict, n_components: int | None = None) -> CoinMixture:
    bayes_spec = spec["bayes"]
    return CoinMixture(
        n_components=n_components or spec["model"]["components"],
        weights=spec["model"]["weights"],
        theta_prior=tuple(bayes_spec["theta_prior"]),
        w_concentration=bayes_spec["w_concentration"],
        ordered=bayes_spec["variant"] == "ordered",
    )


def initial_params(model_def: CoinMixture, em_spec: dict, rng: np.random.Generator) -> list[CoinParams]:
    """Starting points from the spec: given theta rows (one restart each) or ``n_init`` random ones."""
    init = em_spec["init"]
    if init == "random":
        return em.random_inits(model_def, em_spec["n_init"], rng)
    rows = init if isinstance(init[0], list) else [init]
    return [CoinParams(np.array(row, dtype=float), model_def.equal_weights) for row in rows]


def _variables(params: CoinParams) -> dict:
    return params.variables()


def _stats(stats: em.CoinStats) -> dict:
    return {"resp": stats.resp, "expected_heads": stats.heads, "expected_tails": stats.tails}


def _em_groups(model_def, data, inits, em_spec, coords, kind: str) -> dict[str, xr.Dataset]:
    options = dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"])
    restarts = em.fit_restarts(model_def, data.heads, data.tosses, inits, kind=kind, **options)
    best = restarts.best
    prefix = "em" if kind == "soft" else f"em_{kind}"
    estimate = em_estimate(best, _variables, PARAMETER_DIMS, coords, kind=kind)
    estimate["resp"] = (STATS_DIMS["resp"], best.stats.resp)
    groups = {
        prefix: estimate,
        f"{prefix}_trace": em_trace(best, _variables, PARAMETER_DIMS, coords, stats_of=_stats, stats_dims=STATS_DIMS),
    }
    if len(restarts.fits) > 1:
        groups[f"{prefix}_restarts"] = em_restarts(restarts, _variables, PARAMETER_DIMS, coords)
        if kind == "soft":
            groups["em_optima"] = em_optima_group(groups[f"{prefix}_restarts"], PARAMETER_DIMS)
    groups[prefix].attrs["observed_loglik"] = model_def.loglik(best.params, data.heads, data.tosses)
    return groups, restarts


def _exact_group(post: exact.ExactPosterior, coords) -> xr.Dataset:
    ds = xr.Dataset(
        {
            "theta_mean": ("component", post.theta_mean),
            "theta_sd": ("component", post.theta_sd),
            "w_mean": ("component", post.w_mean),
            "w_sd": ("component", post.w_sd),
            "theta_sorted_mean": ("rank", post.theta_sorted_mean),
            "theta_sorted_sd": ("rank", post.theta_sorted_sd),
            "theta_sorted_lower": ("rank", post.theta_sorted_lower),
            "theta_sorted_upper": ("rank", post.theta_sorted_upper),
            "membership": (("set", "component"), post.membership),
            "theta_density": (("component", "grid"), post.theta_density),
            "theta_sorted_density": (("rank", "grid"), post.theta_sorted_density),
        },
        coords={"grid": post.grid, "rank": np.arange(len(post.theta_sorted_mean)), **coords},
    )
    if post.joint_grid_density is not None:
        ds["joint_density"] = (("grid_x", "grid_y"), post.joint_grid_density)
        ds = ds.assign_coords(grid_x=np.linspace(0, 1, post.joint_grid_density.shape[0]),
                              grid_y=np.linspace(0, 1, post.joint_grid_density.shape[1]))
    ds.attrs.update(log_evidence=post.log_evidence, n_assignments=post.n_assignments, interval_prob=post.interval_prob)
    return ds


def run(spec: dict, data, seeds: dict[str, int], timings: dict[str, float], progress=None) -> dict[str, xr.Dataset]:
    """Fit ``data`` (a ``CoinData``) as the spec says; returns the result groups."""
    if isinstance(spec["model"]["components"], list):
        raise UserError("[model] components must be one K for the comparison; put a range in [model_choice] components")
    model_def = model_from_spec(spec)
    if model_def.n_components > len(data.heads):
        raise UserError(
            f"[model] components = {model_def.n_components} is more than the {len(data.heads)} sets of tosses; use at most {len(data.heads)}"
        )
    em_spec = spec["em"]
    if "soft" not in em_spec["kinds"]:
        raise UserError('[em] kinds must include "soft" (the EM answer compared with the posterior), e.g. kinds = ["soft", "hard"]')
    labels = list(data.labels)
    coords = {"component": np.arange(model_def.n_components), "set": labels}

    groups: dict[str, xr.Dataset] = {}
    data_ds = xr.Dataset({"heads": ("set", data.heads), "tosses": ("set", data.tosses)}, coords={"set": labels})
    if data.true_coin is not None:
        data_ds["true_component"] = ("set", np.asarray(data.true_coin))
    data_ds.attrs.update(source=data.source, kind="coins")
    if spec["model"]["labels"]:
        # the report names components from the results file alone; JSON keeps a list of strings intact
        data_ds.attrs["component_labels"] = json.dumps(spec["model"]["labels"], ensure_ascii=False)
    groups["data"] = data_ds

    start = time.perf_counter()
    inits = initial_params(model_def, em_spec, np.random.default_rng(seeds["em"]))
    all_restarts = {}
    for kind in em_spec["kinds"]:
        kind_groups, all_restarts[kind] = _em_groups(model_def, data, inits, em_spec, coords, kind)
        groups.update(kind_groups)
    timings["em"] = time.perf_counter() - start
    if progress:
        progress(f"EM: {len(inits)} start(s), best log-likelihood {groups['em']['loglik'].item():.4f}")

    start = time.perf_counter()
    groups.update(_uncertainty_groups(spec, model_def, data, all_restarts["soft"].best.params, coords, seeds, progress))
    timings["em_uncertainty"] = time.perf_counter() - start

    exact_wanted = spec["bayes"]["exact"]
    if exact_wanted is True or (
        exact_wanted == "auto" and exact.n_assignments(len(data.heads), model_def.n_components) <= exact.MAX_ASSIGNMENTS
    ):
        start = time.perf_counter()
        try:
            post = exact.exact_posterior(
                model_def, data.heads, data.tosses, interval_prob=spec["report"]["interval_prob"]
            )
        except ValueError as error:
            raise UserError(f"[bayes] exact = true: {error}; set exact = \"auto\" or false") from None
        groups["exact"] = _exact_group(post, coords)
        timings["exact"] = time.perf_counter() - start

    if spec["bayes"]["enabled"]:
        groups.update(_bayes_groups(spec, model_def, data, all_restarts["soft"], coords, seeds, timings, progress))
    if spec["model_choice"]["components"]:
        groups["model_choice"] = _model_choice(spec, data, seeds, timings, progress)
    labellings = {"hard EM": groups["em_hard"]["resp"].values.argmax(axis=1)} if "em_hard" in groups else {}
    membership = groups.get("posterior_membership")
    groups["membership_agreement"] = agreement_group(
        "set", labels, groups["em"]["resp"].values,
        membership["membership_relabelled"].values if membership is not None else None, labellings)
    return groups


def _model_choice(spec, data, seeds, timings, progress) -> xr.Dataset:
    """For each K: EM's BIC, AIC and ICL; the exact log evidence p(data | K) where enumeration is small
    enough; PSIS-LOO and WAIC of a posterior sample."""
    choice = spec["model_choice"]
    n = len(data.heads)
    rows = {}
    start = time.perf_counter()
    for k in sorted(set(choice["components"])):
        model_def = model_from_spec(spec, k)
        if k > n:
            rows[k] = model_choice_row(note=f"K = {k} is more than the {n} sets", n_params=model_def.n_free_parameters())
            continue
        rng = np.random.default_rng([seeds["em"], k])
        em_spec = spec["em"]
        restarts = em.fit_restarts(model_def, data.heads, data.tosses, em.random_inits(model_def, max(em_spec["n_init"], 10), rng),
                                   tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"])
        best = restarts.best.params
        criteria = coin_criteria(model_def, data.heads, data.tosses, best)
        log_evidence = float("nan")
        if exact.n_assignments(n, k) <= exact.MAX_ASSIGNMENTS:
            log_evidence = exact.exact_posterior(model_def, data.heads, data.tosses).log_evidence
        predictive = None
        if choice["bayes"]:
            if progress:
                progress(f"model choice: sampling K = {k}")
            settings = SamplerSettings(sampler=resolve_sampler(spec["bayes"]["sampler"]),
                                       chains=choice["chains"], draws=choice["draws"], tune=choice["tune"],
                                       target_accept=_target_accept(spec["bayes"]["target_accept"]))
            tree = sample_posterior(ModelRecipe(bayes.build_model, (model_def, data.heads, data.tosses)), settings,
                                    seeds["sampler"] + k, bayes.initvals_from_params(model_def, [best])).tree
            predictive = loo_waic(tree)
        rows[k] = model_choice_row(criteria, predictive, log_evidence=log_evidence)
    timings["model_choice"] = time.perf_counter() - start
    return model_choice_group(rows, n_obs=n)


def _target_accept(value) -> float:
    """The spec's ``target_accept``; ``"auto"`` is the plain default: the coin model has no scale
    parameter, so none of the funnels that a higher target acceptance is for."""
    return resolve_target_accept(value, float("inf"))


def _uncertainty_groups(spec, model_def, data, best: CoinParams, coords, seeds, progress) -> dict[str, xr.Dataset]:
    em_spec = spec["em"]
    level = spec["report"]["interval_prob"]
    groups = {}
    if em_spec["information"]:
        se = coin_standard_errors(model_def, data.heads, data.tosses, best, level=level)
        groups["em_information"] = information_group(se, PARAMETER_DIMS, coords)
    if em_spec["bootstrap"]:
        if progress:
            progress(f"bootstrap: {em_spec['bootstrap']} {em_spec['bootstrap_kind']} replicates")
        result = coin_bootstrap(model_def, data.heads, data.tosses, best, n_boot=em_spec["bootstrap"],
                                seed=seeds["bootstrap"], kind=em_spec["bootstrap_kind"], n_workers=None,
                                progress=bootstrap_progress(progress),
                                em_options=dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"],
                                                max_iter=em_spec["max_iter"]))
        groups["em_bootstrap"] = bootstrap_group(result, coords)
    return groups


def _bayes_groups(spec, model_def, data, restarts, coords, seeds, timings, progress) -> dict[str, xr.Dataset]:
    bayes_spec = spec["bayes"]
    sampler = resolve_sampler(bayes_spec["sampler"])
    settings = SamplerSettings(
        sampler=sampler,
        chains=bayes_spec["chains"],
        draws=bayes_spec["draws"],
        tune=bayes_spec["tune"],
        target_accept=_target_accept(bayes_spec["target_accept"]),
    )
    # Built only if the compiled sampler is not already in the program cache.
    recipe = ModelRecipe(bayes.build_model, (model_def, data.heads, data.tosses), {"set_labels": coords["set"]})
    # Chains start from EM answers: the best first, then the other restarts' answers (numpyro and
    # PyMC's NUTS give each chain its own start; nutpie takes the first).
    order = np.argsort([-fit.loglik for fit in restarts.fits])
    starts = bayes.initvals_from_params(model_def, [restarts.fits[i].params for i in order])
    if progress:
        progress(f"sampling: {settings.chains} chains x {settings.draws} draws with {sampler}")
    outcome = sample_posterior(recipe, settings, seeds["sampler"], starts, progressbar=bool(progress))
    timings["sampling_total"] = outcome.seconds_total
    timings["sampling"] = outcome.seconds_sampling
    timings.update({f"sampling_{stage}": seconds for stage, seconds in outcome.stages.items()})
    tree = outcome.tree
    groups = {name: tree[name].to_dataset() for name in ("posterior", "sample_stats", "log_likelihood", "observed_data")
              if name in tree.children}
    posterior = groups["posterior"]
    if "w" not in posterior:
        posterior["w"] = xr.DataArray(
            np.broadcast_to(model_def.equal_weights, (*posterior["theta"].shape,)).copy(),
            dims=posterior["theta"].dims, coords=posterior["theta"].coords,
        )
    groups["posterior"] = posterior.assign_coords(component=coords["component"])
    groups["posterior"].attrs.update(sampler=outcome.sampler, target_accept=settings.target_accept,
                                     compiled_sampler=outcome.compiled)

    theta = posterior["theta"].values.reshape(-1, model_def.n_components)
    w = posterior["w"].values.reshape(-1, model_def.n_components)
    probs = bayes.membership_probabilities(model_def, data.heads, data.tosses, theta, w)
    groups["posterior_membership"] = xr.Dataset(
        {"membership": (("set", "component"), probs.mean(axis=0))},
        coords={"set": coords["set"], "component": coords["component"]},
    )
    start = time.perf_counter()
    best = restarts.best.params
    # EM's hard allocation is the pivot of relabel = "ecr" (see label_switching_groups).
    groups.update(label_switching_groups(groups["posterior"], probs=probs, reference=best.variables(),
                                         reference_allocation=np.argmax(restarts.best.stats.log_resp, axis=1),
                                         method=bayes_spec["relabel"], order_var="theta",
                                         interval_prob=spec["report"]["interval_prob"]))
    # Membership under the relabelled draws: what the posterior says once the labels are fixed.
    perms = groups["posterior_relabelled"]["permutation"].values.reshape(-1, model_def.n_components)
    groups["posterior_membership"]["membership_relabelled"] = (
        ("set", "component"), np.take_along_axis(probs, perms[:, None, :], axis=2).mean(axis=0))
    timings["relabel"] = time.perf_counter() - start
    return groups
