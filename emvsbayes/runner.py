"""One comparison of any model family from a validated spec: data -> EM (restarts under one rule) ->
EM's uncertainty -> posterior -> relabelling -> model choice -> named ``xarray.Dataset`` groups for
:mod:`emvsbayes.results`.

What differs between families is asked of the family (:class:`emvsbayes.family.Family`); this module
names none. Its extra groups (the coins' exact posterior, the Gaussians' k-means) come from
``family.extra_groups``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np
import xarray as xr

from emvsbayes.comparison import (
    agreement_group,
    bootstrap_group,
    bootstrap_progress,
    information_group,
    lrt_columns,
    model_choice_group,
    model_choice_row,
    sparse_group,
    start_points,
    truth_agreement_group,
)
from emvsbayes.em import EMRestarts, RestartPolicy, RestartRun, fit_em_until
from emvsbayes.errors import DegenerateFitError, UserError
from emvsbayes.labels.groups import em_optima_group, label_switching_groups
from emvsbayes.results import em_estimate, em_restarts, em_trace
from emvsbayes.sampling import SamplerSettings, resolve_sampler, resolve_target_accept, sample_posterior
from emvsbayes.uncertainty import criteria, lfo_first, loo_waic, psis_lfo, run_bootstrap, standard_errors
from emvsbayes.uncertainty.bootstrap import REPLICATE_ERRORS
from emvsbayes.uncertainty.lrt import bootstrap_lrt
from emvsbayes.uncertainty.sparse import allocation_draws, occupied_components

class FamilyView:
    """The runner's view of a family: the family's own members, and for the optional ones it leaves out
    (those :mod:`emvsbayes.family` documents only as additions) the plain behaviour, so a new family runs
    with the protocol's members alone."""

    def __init__(self, family, data=None):
        self.family = family
        self._data = data  # the data being fitted (parameters() may depend on its shape)

    def __getattr__(self, name: str):
        if hasattr(self.family, name):
            return getattr(self.family, name)
        default = getattr(type(self), f"default_{name}", None)
        if default is None:
            raise AttributeError(f"model family {getattr(self.family, 'name', self.family)!r} has no member {name!r}")
        return default.__get__(self)

    def default_describe(self, spec: dict) -> str:
        return f"{self.name} model, K = {spec['model']['components']}"

    def default_coords(self, spec, model_def, data) -> dict:
        labels = getattr(data, "labels", None)
        return {"component": np.arange(model_def.n_components),
                self.obs_dim: list(labels) if labels is not None else list(range(self.n_observations(data)))}

    def default_trace_stats(self):
        return None, None

    def default_estimate_attrs(self, model_def, data, fit, failures) -> dict:
        return dict(n_failed_restarts=len(failures), failure=failures[0] if failures else "")

    def default_fit_resp(self, model_def, data, fit):
        return self.responsibilities(model_def, data, fit.params)

    def default_restart_batches(self, model_def, data, options):
        return None, 1

    def default_posterior_group(self, model_def, posterior, coords):
        return posterior

    def default_model_recipe(self, model_def, data, coords=None):
        from emvsbayes.sampling import ModelRecipe

        return ModelRecipe(self.family.pymc_model, (model_def, data))

    def default_target_accept(self, value, params, data) -> float:
        from emvsbayes.sampling import resolve_target_accept

        return resolve_target_accept(value, float("inf"))

    def default_posterior_draws(self, model_def, posterior) -> dict:
        draws = {}
        for name in self.parameters(model_def, self._data):
            if name in posterior.data_vars:
                da = posterior[name].transpose("chain", "draw", ...)
                draws[name] = da.values.reshape(-1, *da.shape[2:])
        return draws

    def default_model_choice_model(self, spec, data, k):
        return self.model_from_spec(spec, data, k)

    def default_model_choice_run(self, model_def, data, em_spec, rng, fit_until):
        # the family's automatic starts: the spec's own init may be parameters for another K
        automatic = {**em_spec, "init": getattr(self.family, "auto_init", em_spec["init"])}
        return fit_until(*self.starts(model_def, data, automatic, rng))

    def default_model_choice_checks(self, model_def, data, run) -> dict:
        n, k = self.n_observations(data), model_def.n_components
        if run is None:
            return {"notes": [f"K = {k} is more than the {n} observations"] if k > n else [], "too_many": k > n,
                    "late_notes": [], "skip_bayes": k > n}
        return {"notes": [], "row": {}}

    def default_model_choice_attrs(self, spec, data) -> dict:
        return {"n_obs": self.n_observations(data)}

    def default_extra_groups(self, spec, model_def, data, best_fit, rng, timings) -> dict:
        return {}

    def default_lrt_unavailable(self) -> str:
        return ""  # every family that simulates can be tested

    def default_sparse_model(self, spec, data, k_max: int, concentration: float):
        """(the model with ``k_max`` components and Dirichlet(e0, ..., e0) weights, None): a mixture whose
        weights the spec's ``[bayes] w_concentration`` sets. A family without such weights returns (None,
        why)."""
        sparse_spec = {**spec, "bayes": {**spec["bayes"], "w_concentration": float(concentration)}}
        return self.model_choice_model(sparse_spec, data, k_max), None

    def starts(self, model_def, data, em_spec, rng):
        """(next start, restart policy): a family's ``starts`` may return the first alone, then the spec's
        ``n_init`` starts are run (more, up to ``max_init``, until ``reach_best`` agree, where given)."""
        started = self.family.starts(model_def, data, em_spec, rng)
        if isinstance(started, tuple):
            return started
        n_init = em_spec["n_init"]
        return started, RestartPolicy(min_starts=n_init, reach_best=em_spec.get("reach_best") or 1,
                                      max_starts=max(em_spec.get("max_init") or n_init, n_init))


def em_options(em_spec: dict, **extra) -> dict:
    """The EM stopping rule of a spec's ``[em]`` table, as every fit takes it (the one place it is built)."""
    return dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"], **extra)


def fit_until(family, model_def, data, next_init, policy, em_spec, kind="soft", futile=None) -> RestartRun:
    """EM from new starts until ``policy`` is met; a start whose fit degenerates is recorded, not fatal,
    unless all do. Soft EM runs its starts as batches where the family batches them."""
    options = em_options(em_spec)
    fit_batch, batch_size = family.restart_batches(model_def, data, options) if kind == "soft" else (None, 1)
    return fit_em_until(partial(family.fit, model_def, data, kind=kind, **options), next_init, policy,
                        skip=DegenerateFitError, futile=futile, fit_batch=fit_batch, batch_size=batch_size)


def fit_all(fit, inits) -> tuple[EMRestarts, list[str]]:
    """EM (``fit(init)``) from every start; a start whose fit degenerates is recorded, not fatal, unless all do."""
    fits, failures = [], []
    for init in inits:
        try:
            fits.append(fit(init))
        except DegenerateFitError as error:
            failures.append(str(error))
    if not fits:
        raise DegenerateFitError(failures[0])
    return EMRestarts(tuple(fits)), failures


def reached_best(run: RestartRun) -> np.ndarray:
    logliks = np.array([fit.loglik for fit in run.restarts.fits])
    return logliks >= logliks.max() - run.policy.loglik_atol


def restart_facts(run: RestartRun) -> dict:
    """How the restart rule ended, for the results file: the report says how many starts reached the best."""
    return dict(n_starts=run.n_starts, n_reached_best=run.n_reached_best, reach_best=run.policy.reach_best,
                max_init=run.policy.max_starts, restart_budget_spent=int(run.budget_spent),
                same_optimum_atol=run.policy.loglik_atol)


def em_kind_groups(family, model_def, data, soft: RestartRun, kind: str, restarts: EMRestarts, failures: list[str],
                   dims: dict, coords: dict, declared: dict, stats_of=None, stats_dims=None) -> dict[str, xr.Dataset]:
    """The result groups of one kind of EM: ``em`` (or ``em_<kind>``), its trace, and with several restarts
    their table (and for soft EM the distinct optima and how the restart rule ended)."""
    prefix = "em" if kind == "soft" else f"em_{kind}"
    best = restarts.best
    estimate = em_estimate(best, family.variables, dims, coords, kind=kind)
    estimate.attrs.update(family.estimate_attrs(model_def, data, best, failures))
    groups = {prefix: estimate,
              f"{prefix}_trace": em_trace(best, family.variables, dims, coords, stats_of=stats_of, stats_dims=stats_dims)}
    if len(restarts.fits) > 1:
        groups[f"{prefix}_restarts"] = em_restarts(restarts, family.variables, dims, coords)
        if kind == "soft":
            groups["em_restarts"]["reached_best"] = ("restart", reached_best(soft).astype(np.int8))
            groups["em_optima"] = em_optima_group(groups["em_restarts"], dims, declared=declared)
    if kind == "soft":
        facts = restart_facts(soft)
        for name in ("em", "em_restarts", "em_optima"):
            if name in groups:
                groups[name].attrs.update(facts)
    return groups


def run(family, spec: dict, data, seeds: dict[str, int], timings: dict[str, float], progress=None) -> dict[str, xr.Dataset]:
    """Fit ``data`` (the family's data record) as the spec says; returns the result groups."""
    family = FamilyView(getattr(family, "family", family), data)
    if isinstance(spec["model"]["components"], list):
        raise UserError("[model] components must be one K for the comparison; put a range in [model_choice] components")
    em_spec = spec["em"]
    if "soft" not in em_spec["kinds"]:
        raise UserError('[em] kinds must include "soft" (the EM answer compared with the posterior), e.g. kinds = ["soft", "hard"]')
    model_def = family.model_from_spec(spec, data)
    dims = {name: info.dims for name, info in family.parameters(model_def, data).items()}
    coords = family.coords(spec, model_def, data)
    obs = family.obs_dim
    rng = np.random.default_rng(seeds["em"])

    groups: dict[str, xr.Dataset] = {"data": family.data_group(spec, data)}
    start = time.perf_counter()
    # Soft EM decides how many starts are needed; the other kinds run from the same starts.
    soft = fit_until(family, model_def, data, *family.starts(model_def, data, em_spec, rng), em_spec)
    inits = list(soft.inits)
    all_restarts = {}
    stats_of, stats_dims = family.trace_stats()
    for kind in em_spec["kinds"]:
        restarts, failures = ((soft.restarts, list(soft.failures)) if kind == "soft" else
                              fit_all(partial(family.fit, model_def, data, kind=kind, **em_options(em_spec)), inits))
        all_restarts[kind] = restarts
        kind_groups = em_kind_groups(family, model_def, data, soft, kind, restarts, failures, dims, coords,
                                     family.parameters(model_def, data), stats_of, stats_dims)
        prefix = "em" if kind == "soft" else f"em_{kind}"
        kind_groups[prefix]["resp"] = ((obs, "component"), family.fit_resp(model_def, data, restarts.best))
        groups.update(kind_groups)
    timings["em"] = time.perf_counter() - start
    if progress:
        progress(f"EM: {len(inits)} start(s), {soft.n_reached_best} of them at the best log-likelihood "
                 f"{groups['em']['loglik'].item():.4f}")
    # Family extras (k-means draws its centres from the EM stage's generator, after the starts).
    groups.update(family.extra_groups(spec, model_def, data, soft.restarts.best, rng, timings))

    start = time.perf_counter()
    groups.update(uncertainty_groups(family, spec, model_def, data, soft.restarts.best.params, dims, coords, seeds,
                                     progress))
    timings["em_uncertainty"] = time.perf_counter() - start

    if spec["bayes"]["enabled"]:
        groups.update(bayes_groups(family, spec, model_def, data, soft.restarts, coords, seeds, timings, progress))
    if spec["ladder"]["enabled"]:
        from emvsbayes.ladder.run import ladder_groups

        groups.update(ladder_groups(family, spec, model_def, data, groups, soft.restarts.best.params, seeds["ladder"],
                                    em_options(em_spec), timings, progress))
    labellings = {}
    if "em_hard" in groups:
        labellings["hard EM"] = groups["em_hard"]["resp"].values.argmax(axis=1)
    if "kmeans" in groups:
        labellings["k-means"] = groups["kmeans"]["labels"].values
    membership = groups.get("posterior_membership")
    groups["membership_agreement"] = agreement_group(
        obs, coords[obs], groups["em"]["resp"].values,
        membership["membership_relabelled"].values if membership is not None else None, labellings)
    if "truth" in groups["data"]:
        truth = groups["data"]["truth"]
        groups["truth_agreement"] = truth_agreement_group(truth.values, groups["membership_agreement"],
                                                          model_def.n_components, column=truth.attrs["column"])
    if spec["model_choice"]["components"]:
        groups["model_choice"] = model_choice(family, spec, data, seeds, timings, progress)
    if spec["model_choice"]["sparse"]:
        groups["sparse_mixture"] = sparse_mixture(family, spec, data, seeds, timings, progress)
    return groups


def uncertainty_groups(family, spec, model_def, data, best, dims, coords, seeds, progress) -> dict[str, xr.Dataset]:
    """Standard errors from the observed information and the bootstrap of the EM answer ``best``."""
    em_spec = spec["em"]
    groups = {}
    if em_spec["information"]:
        se = standard_errors(family, model_def, data, best, level=spec["report"]["interval_prob"])
        groups["em_information"] = information_group(se, dims, coords)
    if em_spec["bootstrap"]:
        if progress:
            progress(f"bootstrap: {em_spec['bootstrap']} {em_spec['bootstrap_kind']} replicates")
        result = run_bootstrap(family, model_def, data, best, n_boot=em_spec["bootstrap"], seed=seeds["bootstrap"],
                           kind=em_spec["bootstrap_kind"], n_workers=None, progress=bootstrap_progress(progress),
                           em_options=em_options(em_spec))
        groups["em_bootstrap"] = bootstrap_group(result, coords)
    return groups


def bayes_groups(family, spec, model_def, data, restarts, coords, seeds, timings, progress) -> dict[str, xr.Dataset]:
    """The posterior, sampled from chains started at EM's distinct optima, relabelled to EM's answer."""
    b = spec["bayes"]
    obs = family.obs_dim
    starts = start_points(family.variables, restarts, partial(family.fit, model_def, data, **em_options(spec["em"])),
                          declared=family.parameters(model_def, data))
    # numpyro (the default) and PyMC's NUTS start each chain at its own EM optimum, so R-hat can still
    # see a second mode; nutpie takes the first for all.
    sampler = resolve_sampler(b["sampler"])
    settings = SamplerSettings(sampler=sampler, chains=b["chains"], draws=b["draws"], tune=b["tune"],
                               target_accept=family.target_accept(b["target_accept"], restarts.best.params, data))
    # Built only if the compiled sampler is not already in the program cache.
    recipe = family.model_recipe(model_def, data, coords)
    if progress:
        progress(f"sampling: {settings.chains} chains x {settings.draws} draws with {sampler}, "
                 f"starting from {len(starts)} EM optim{'um' if len(starts) == 1 else 'a'}")
    outcome = sample_posterior(recipe, settings, seeds["sampler"], family.initvals(model_def, starts),
                               progressbar=bool(progress))
    timings["sampling_total"] = outcome.seconds_total
    timings["sampling"] = outcome.seconds_sampling
    timings.update({f"sampling_{stage}": seconds for stage, seconds in outcome.stages.items()})
    tree = outcome.tree
    groups = {name: tree[name].to_dataset() for name in ("posterior", "sample_stats", "log_likelihood", "observed_data")
              if name in tree.children}
    groups["posterior"] = family.posterior_group(model_def, groups["posterior"], coords)
    groups["posterior"].attrs.update(sampler=outcome.sampler, n_start_optima=len(starts),
                                     target_accept=settings.target_accept, compiled_sampler=outcome.compiled)

    start = time.perf_counter()
    probs = family.membership_draws(model_def, data, family.posterior_draws(model_def, groups["posterior"]))
    groups["posterior_membership"] = xr.Dataset({"membership": ((obs, "component"), probs.mean(axis=0))},
                                                coords={obs: coords[obs], "component": coords["component"]})
    best = restarts.best
    reference = family.variables(best.params)
    # Only the reported parameters are relabelled (not the sampler's internal variables); EM's hard
    # allocation is the pivot of relabel = "ecr" (see label_switching_groups).
    reported = groups["posterior"][[name for name in reference if name in groups["posterior"]]]
    groups.update(label_switching_groups(reported, probs=probs, reference=reference,
                                         reference_allocation=np.argmax(family.fit_resp(model_def, data, best), axis=1),
                                         method=b["relabel"], order_var=getattr(family, "order_var", None) or next(iter(reference)),
                                         interval_prob=spec["report"]["interval_prob"],
                                         declared=family.parameters(model_def, data)))
    # Membership under the relabelled draws: what the posterior says once the labels are fixed.
    perms = groups["posterior_relabelled"]["permutation"].values.reshape(-1, model_def.n_components)
    groups["posterior_membership"]["membership_relabelled"] = (
        (obs, "component"), np.take_along_axis(probs, perms[:, None, :], axis=2).mean(axis=0))
    timings["relabel"] = time.perf_counter() - start
    return groups


def model_choice(family, spec, data, seeds, timings, progress) -> xr.Dataset:
    """For each K of ``[model_choice] components``: EM's BIC, AIC and ICL, the family's own criteria (the
    coins' exact log evidence, the Gaussians' degeneracy checks) and PSIS-LOO / WAIC of a posterior; for a family
    whose observations are dependent (it gives ``one_step_log_density`` and ``prefix``: a time series), approximate
    leave-future-out cross-validation instead (:func:`leave_future_out`), pointwise LOO being invalid there."""
    family = FamilyView(getattr(family, "family", family), data)  # optional members fall back to the plain ones
    choice = spec["model_choice"]
    rows, fitted = {}, {}
    start = time.perf_counter()
    # leave-future-out scores every K on the same terms, from the same L (enough points for the largest K)
    ks = sorted(set(choice["components"]))
    model_defs = {k: family.model_choice_model(spec, data, k) for k in ks}
    before = {k: family.model_choice_checks(model_defs[k], data, None) for k in ks}
    dependent = getattr(family, "one_step_log_density", None) is not None
    # ... among the K whose posterior is sampled (an ill-posed K, not sampled, would leave few points to score)
    sampled = [k for k in ks if not before[k]["skip_bayes"]]
    first = lfo_first(family.n_observations(data), max(
        family.n_free_parameters(model_defs[k], data) for k in sampled)) if dependent and sampled else None
    for k in ks:
        model_def = model_defs[k]
        n_params = family.n_free_parameters(model_def, data)
        checks = before[k]
        notes, found, predictive, facts, best = list(checks["notes"]), None, None, None, None
        extras = {}
        if not checks["too_many"]:
            try:
                run = family.model_choice_run(model_def, data, spec["em"], np.random.default_rng([seeds["em"], k]),
                                              partial(fit_until, family, model_def, data, em_spec=spec["em"]))
            except DegenerateFitError as error:
                notes.append(f"EM failed in every restart: {error}")
            else:
                best = run.restarts.best
                fitted[k] = (model_def, best)
                found = criteria(family, model_def, data, best.params)
                facts = restart_facts(run)
                after = family.model_choice_checks(model_def, data, run)
                notes += after["notes"]
                extras = after["row"]
        notes += checks["late_notes"]
        lfo = None
        if choice["bayes"] and found is not None and not checks["skip_bayes"]:
            if progress:
                progress(f"model choice: sampling K = {k}")
            settings = SamplerSettings(sampler=resolve_sampler(spec["bayes"]["sampler"]), chains=choice["chains"],
                                       draws=choice["draws"], tune=choice["tune"],
                                       target_accept=family.target_accept(spec["bayes"]["target_accept"], best.params, data))
            if dependent:
                # dependent observations: pointwise LOO would predict a point from its own future; leave-future-out
                # cross-validation predicts each from its past (the posterior given the first L points, then
                # importance weights, refitting where their Pareto k says they fail)
                lfo = leave_future_out(family, model_def, data, settings, seeds["sampler"] + k, best.params, first)
                notes.append(f"leave-future-out: {len(lfo.refits)} fit{'s' if len(lfo.refits) > 1 else ''} on the first "
                             f"{', '.join(map(str, lfo.refits))} points"
                             + (f"; {lfo.n_bad_k} of its terms have Pareto k above {lfo.threshold:g} after the "
                                f"{MAX_LFO_REFITS} refits allowed: untrustworthy" if lfo.n_bad_k else ""))
            else:
                tree = sample_posterior(family.model_recipe(model_def, data), settings, seeds["sampler"] + k,
                                        family.initvals(model_def, [best.params])).tree
                if "log_likelihood" in tree.children:
                    predictive = loo_waic(tree)
                else:  # nothing observed pointwise (a Potential): PSIS-LOO / WAIC are not defined for this model
                    notes.append("no pointwise log-likelihood: PSIS-LOO and WAIC left out")
        rows[k] = model_choice_row(found, predictive, lfo=lfo, note="; ".join(notes), n_params=n_params,
                                   restarts=facts, **extras)
    timings["model_choice"] = time.perf_counter() - start
    group = model_choice_group(rows, **family.model_choice_attrs(spec, data))
    if choice["lrt_bootstrap"] and family.lrt_unavailable():
        group.attrs["lrt_skipped"] = family.lrt_unavailable()
    elif choice["lrt_bootstrap"]:
        start = time.perf_counter()
        group = lrt_columns(group, model_choice_lrt(family, spec, data, fitted, seeds["lrt"], progress),
                            choice["lrt_bootstrap"])
        timings["model_choice_lrt"] = time.perf_counter() - start
    return group


def model_choice_lrt(family, spec, data, fitted: dict, seed: int, progress) -> list:
    """The bootstrap LRT of K against K + 1 (:func:`~emvsbayes.uncertainty.bootstrap_lrt`) for each K whose
    K + 1 is in ``fitted`` (K -> (model, best EM fit)): data simulated from the K fit, both K and K + 1
    refitted to each under the spec's restart rule, from the same automatic starts as the data's fits."""
    em_spec, n_boot = spec["em"], spec["model_choice"]["lrt_bootstrap"]
    n = family.n_observations(data)
    models = {k: model_def for k, (model_def, _) in fitted.items()}

    def best_loglik(sample, k, rng) -> float:
        view = FamilyView(getattr(family, "family", family), sample)
        return view.model_choice_run(models[k], sample, em_spec, rng,
                                     partial(fit_until, view, models[k], sample, em_spec=em_spec)).restarts.best.loglik

    tests = []
    for k in sorted(fitted):
        if k + 1 not in fitted:
            continue
        model_def, best = fitted[k]
        if progress:
            progress(f"model choice: bootstrap LRT of K = {k} against {k + 1}, {n_boot} simulated data sets")
        tests.append(bootstrap_lrt(k, best.loglik, fitted[k + 1][1].loglik, n_boot, seed,
                                   simulate=partial(_simulate_like, family, model_def, best.params, n, data),
                                   best_loglik=best_loglik, failures=REPLICATE_ERRORS))
    return tests


def _simulate_like(family, model_def, params, n, data, rng):
    return family.simulate(model_def, params, n, rng, like=data)


def sparse_mixture(family, spec, data, seeds, timings, progress) -> xr.Dataset:
    """The overfitted mixture of ``[model_choice] sparse``: K_max components, Dirichlet(e0, ..., e0)
    weights, sampled as the comparison's posterior is; the posterior of the number of occupied components
    from one allocation per draw (:mod:`emvsbayes.uncertainty.sparse`)."""
    choice = spec["model_choice"]
    k_max, e0 = choice["sparse_components"], choice["sparse_concentration"]
    attrs = dict(k_max=k_max, concentration=e0)
    model_def, reason = family.sparse_model(spec, data, k_max, e0)
    if model_def is None:
        return xr.Dataset(attrs={**attrs, "skipped": reason})
    start = time.perf_counter()
    # The chains start at an EM answer with K_max components (as Malsiner-Walli et al. start their sampler
    # from a K_max-cluster partition): a start for the sampler, not an estimate, so a few starts do.
    few = {**spec["em"], "n_init": min(spec["em"]["n_init"], 5), "reach_best": 1,
           "max_init": min(spec["em"]["n_init"], 5)}
    rng = np.random.default_rng(seeds["sparse"])
    start_fit = None
    try:
        start_fit = family.model_choice_run(model_def, data, few, rng,
                                            partial(fit_until, family, model_def, data, em_spec=few)).restarts.best
        initvals = family.initvals(model_def, [start_fit.params])
    except DegenerateFitError:
        initvals = None  # the sampler's own starting point
    settings = SamplerSettings(sampler=resolve_sampler(spec["bayes"]["sampler"]), chains=choice["chains"],
                               draws=choice["draws"], tune=choice["tune"],
                               target_accept=family.target_accept(spec["bayes"]["target_accept"], start_fit.params, data)
                               if start_fit is not None else resolve_target_accept(spec["bayes"]["target_accept"], float("inf")))
    if progress:
        progress(f"sparse mixture: K_max = {k_max}, e0 = {e0:g}, {settings.chains} chains x {settings.draws} draws")
    outcome = sample_posterior(family.model_recipe(model_def, data), settings, seeds["sparse"], initvals,
                               log_likelihood=False)
    posterior = outcome.tree["posterior"].to_dataset()
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    probs = family.membership_draws(model_def, data, family.posterior_draws(model_def, posterior))
    n_occupied = occupied_components(allocation_draws(probs, rng), k_max).reshape(n_chains, n_draws)
    timings["sparse_mixture"] = time.perf_counter() - start
    divergent = outcome.tree["sample_stats"]["diverging"].values if "sample_stats" in outcome.tree.children else None
    return sparse_group(n_occupied, k_max, {**attrs, "sampler": outcome.sampler,
                                            "n_divergent": int(np.sum(divergent)) if divergent is not None else -1})


#: Refits of leave-future-out cross-validation after its first fit, at most: each samples the posterior of a prefix
#: (a new program to compile); terms whose Pareto k still exceeds 0.7 beyond them are counted as untrustworthy.
MAX_LFO_REFITS = 6


def leave_future_out(family, model_def, data, settings, seed: int, start, first: int):
    """PSIS-LFO-CV of 1-step-ahead prediction (:func:`~emvsbayes.uncertainty.psis_lfo`) for a family whose
    observations are dependent: it gives ``prefix(data, n)`` (the first n observations) and
    ``one_step_log_density(model_def, data, draws)`` ((S, n_obs): log p(y_t | y_<t, draw)); each refit samples the
    posterior given a prefix, from EM's answer on the whole data."""
    n_obs = family.n_observations(data)
    # a family's model of the whole series counting a prefix (one program for every refit), else a model per prefix
    masked = family.prefix_recipe(model_def, data) if getattr(family, "prefix_recipe", None) is not None else None

    def one_step_given_prefix(n: int) -> np.ndarray:
        seed_n = int(np.random.default_rng([seed, n]).integers(2**31))
        if masked is not None:
            recipe, container, counted = masked
            tree = sample_posterior(recipe, settings, seed_n, family.initvals(model_def, [start]), log_likelihood=False,
                                    data={container: counted(n)}).tree
        else:
            tree = sample_posterior(family.model_recipe(model_def, family.prefix(data, n)), settings, seed_n,
                                    family.initvals(model_def, [start]), log_likelihood=False).tree
        draws = family.posterior_draws(model_def, tree["posterior"].to_dataset())
        return family.one_step_log_density(model_def, data, draws)

    return psis_lfo(one_step_given_prefix, n_obs, first, max_refits=MAX_LFO_REFITS)
