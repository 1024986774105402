"""A Gaussian-mixture comparison from a validated spec: EM (soft, hard, restarts), k-means, PyMC,
label switching and the choice of K. Returns named ``xarray.Dataset`` groups for :mod:`emvsbayes.results`.
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
    model_choice_group,
    model_choice_row,
    truth_agreement_group,
)
from emvsbayes.em import SAME_OPTIMUM_ATOL, EMRestarts, RestartPolicy, RestartRun, fit_em_until
from emvsbayes.errors import DegenerateFitError, UserError
from emvsbayes.gaussian import bayes, em
from emvsbayes.gaussian.init import initial_params, initial_params_source
from emvsbayes.gaussian.kmeans import kmeans, kmeans_plusplus
from emvsbayes.gaussian.model import GaussianMixtureModel, GaussianParams, GaussianPriors, parameter_dims
from emvsbayes.labels.diagnostics import distinct_optima
from emvsbayes.labels.groups import em_optima_group, label_switching_groups
from emvsbayes.results import em_estimate, em_restarts, em_trace
from emvsbayes.spec import _show
from emvsbayes.sampling import ModelRecipe, SamplerSettings, resolve_sampler, resolve_target_accept, sample_posterior
from emvsbayes.uncertainty import (
    degenerate_components,
    gaussian_bootstrap,
    gaussian_criteria,
    gaussian_standard_errors,
    loo_waic,
    min_component_points,
)
from emvsbayes.uncertainty.bootstrap import BATCH_VALUES, LARGE_FIT

#: Chains start from at most this many distinct EM optima (cycled over chains).
MAX_START_OPTIMA = 4


def _tuple_or_none(value):
    if value is None:
        return None
    return tuple(value) if isinstance(value, list) else (value,)


def model_from_spec(spec: dict, n_components: int | None = None, covariance: str | None = None) -> GaussianMixtureModel:
    b = spec["bayes"]
    return GaussianMixtureModel(
        n_components=n_components or spec["model"]["components"],
        covariance_type=covariance or spec["model"]["covariance"],
        reg_covar=spec["model"]["reg_covar"],
        ordered=b["variant"] == "ordered",
        priors=GaussianPriors(
            w_concentration=b["w_concentration"],
            mu_loc=_tuple_or_none(b["mu_loc"]),
            mu_scale=_tuple_or_none(b["mu_scale"]),
            sigma_scale=_tuple_or_none(b["sigma_scale"]),
            lkj_eta=b["lkj_eta"],
        ),
    )


#: A given start's means may lie this many data widths beyond the data's range in each column.
INIT_REACH = 100


def check_given_init(model_def: GaussianMixtureModel, x: np.ndarray, init: dict) -> None:
    """A start given in the spec (``[em] init = {weights, means, covariances}``) checked against the data
    before any work: one positive weight per component, K rows of D means near the data, and a finite
    log-likelihood there (a start far beyond the data overflows the squared distances)."""
    k, d = model_def.n_components, x.shape[1]
    if "weights" in init:
        weights = np.ravel(np.asarray(init["weights"], dtype=float)) if _flat(init["weights"]) else None
        if weights is None or weights.shape != (k,):
            raise UserError(f"[em] init weights must be {k} numbers, one per component (K = {k}), got "
                            f"{_show(init['weights'])}")
    means = np.asarray(init["means"], dtype=float) if _rectangular(init["means"]) else None
    if means is None or means.size != k * d:
        raise UserError(f"[em] init means must be K = {k} rows of D = {d} numbers (one per column), got "
                        f"{_show(init['means'])}")
    means = means.reshape(k, d)
    low, high = x.min(axis=0), x.max(axis=0)
    reach = INIT_REACH * np.maximum(high - low, np.maximum(np.abs(low), np.abs(high)).clip(min=1.0))
    outside = np.argwhere((means < low - reach) | (means > high + reach))
    if outside.size:
        row, col = outside[0]
        raise UserError(f"[em] init means: {means[row, col]:g} (component {row}, column {col}) is far from the data, "
                        f"whose values lie in [{low[col]:g}, {high[col]:g}]; give means between {low[col] - reach[col]:g} "
                        f"and {high[col] + reach[col]:g}")
    start = _start_source(model_def, x, {"init": init}, np.random.default_rng(0))[0]()
    with np.errstate(all="ignore"):  # the value is checked here: an overflow is reported as the error below
        loglik = model_def.loglik(start, x)
    if not np.isfinite(loglik):
        raise UserError("[em] init: the log-likelihood at the given start is not finite (the covariances are far "
                        "from the data's scale); give covariances near the data's variances, or leave them out")


def _flat(value) -> bool:
    return isinstance(value, list) and all(not isinstance(v, list) for v in value)


def _rectangular(value) -> bool:
    if not isinstance(value, list):
        return True
    if all(not isinstance(v, list) for v in value):
        return True
    return all(isinstance(v, list) and len(v) == len(value[0]) and _flat(v) for v in value)


def restart_policy(em_spec: dict, n_starts: int | None = None) -> RestartPolicy:
    """The spec's restart rule: at least ``n_init`` starts, more until ``reach_best`` of them end at the best
    log-likelihood or ``max_init`` are spent (``n_starts`` given: exactly that many, for given parameters)."""
    if n_starts is not None:
        return RestartPolicy(min_starts=n_starts, reach_best=1, max_starts=n_starts)
    # EM stops once a step gains less than tol; a slow fit can still be ~100 tol short of its optimum.
    return RestartPolicy(min_starts=em_spec["n_init"], reach_best=em_spec["reach_best"],
                         max_starts=em_spec["max_init"], loglik_atol=max(SAME_OPTIMUM_ATOL, 100 * em_spec["tol"]))


def _start_source(model_def: GaussianMixtureModel, x: np.ndarray, em_spec: dict, rng) -> tuple[Callable, RestartPolicy]:
    """Where starting points come from, and how many to take."""
    init = em_spec["init"]
    if isinstance(init, dict):
        k, d = model_def.n_components, x.shape[1]
        try:
            means = np.asarray(init["means"], dtype=float).reshape(k, d)
            weights = np.asarray(init.get("weights", np.full(k, 1.0 / k)), dtype=float)
            given = {"means_init": means, "weights_init": weights / weights.sum()}
            if "covariances" in init:
                cov = np.asarray(init["covariances"], dtype=float)
                given["precisions_init"] = GaussianParams.from_covariances(
                    given["weights_init"], means, cov, model_def.covariance_type).precisions()
            start = initial_params(model_def, x, "kmeans", rng, **given)
        except (ValueError, np.linalg.LinAlgError) as error:
            raise UserError(f"[em] init: the given parameters do not fit K = {k}, D = {d} ({error}); "
                            "give means as K rows of D numbers and covariances shaped for the structure") from None
        start = initial_params(model_def, x, "kmeans", rng, **given)
        return (lambda: start), restart_policy(em_spec, n_starts=1)
    return initial_params_source(model_def, x, init, rng), restart_policy(em_spec)


def _fit_until(model_def, x, next_init, policy, em_spec, kind="soft", futile=None) -> RestartRun:
    """EM from new starts until ``policy`` is met; a start whose covariance degenerates is recorded, not
    fatal, unless all do. Soft EM on small data runs its starts as batches (:func:`batched_restarts`)."""
    options = dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"])
    fit_batch, batch_size = batched_restarts(model_def, x, options) if kind == "soft" else (None, 1)
    return fit_em_until(partial(em.fit, model_def, x, kind=kind, **options), next_init, policy,
                        skip=DegenerateFitError, futile=futile, fit_batch=fit_batch, batch_size=batch_size)


def batched_restarts(model_def: GaussianMixtureModel, x: np.ndarray, options: dict) -> tuple[Callable | None, int]:
    """(soft EM from a list of starts as one batch, most starts per batch), or (None, 1) where one fit is
    large enough to run on its own: the bootstrap's size rule (``LARGE_FIT``, ``BATCH_VALUES``). For the
    bundled data one fit at a time spends its time in per-call overhead: galaxies' 150 starts (K = 3) take
    0.14 s batched against 10 s one at a time."""
    x = np.asarray(x, dtype=float).reshape(x.shape[0], -1)
    size = x.shape[0] * model_def.n_components * x.shape[1] ** 2
    if size > LARGE_FIT:
        return None, 1
    sets = em.GaussianSets(x[None], None, em.prepare(model_def, x).frame)
    return (lambda inits: em.fit_batched(model_def, sets, inits, len(inits), **options)), max(1, BATCH_VALUES // size)


def _expected_counts(model_def: GaussianMixtureModel, params: GaussianParams, x: np.ndarray) -> np.ndarray:
    """n_k = sum_i r_ik (K,) at ``params``."""
    return np.exp(em.log_resp(model_def, params, x)).sum(axis=0)


def _fit_all(model_def, x, inits, em_spec, kind):
    """EM from every start; a start whose covariance degenerates is recorded, not fatal, unless all do."""
    options = dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"])
    fits, failures = [], []
    for init in inits:
        try:
            fits.append(em.fit(model_def, x, init, kind=kind, **options))
        except DegenerateFitError as error:
            failures.append(str(error))
    if not fits:
        raise DegenerateFitError(failures[0])
    return EMRestarts(tuple(fits)), failures


def _reached_best(run: RestartRun) -> np.ndarray:
    logliks = np.array([fit.loglik for fit in run.restarts.fits])
    return logliks >= logliks.max() - run.policy.loglik_atol


def _restart_facts(run: RestartRun) -> dict:
    """How the restart rule ended, for the results file: the report says how many starts reached the best."""
    return dict(n_starts=run.n_starts, n_reached_best=run.n_reached_best, reach_best=run.policy.reach_best,
                max_init=run.policy.max_starts, restart_budget_spent=int(run.budget_spent),
                same_optimum_atol=run.policy.loglik_atol)


def _variables(params: GaussianParams) -> dict:
    return params.variables()


def run(spec: dict, data, seeds: dict[str, int], timings: dict[str, float], progress=None) -> dict[str, xr.Dataset]:
    """Fit ``data`` (a ``ContinuousData``) as the spec says; returns the result groups."""
    x = np.asarray(data.x, dtype=float)
    n, d = x.shape
    k = spec["model"]["components"]
    if isinstance(k, list):
        raise UserError("[model] components must be one K for the comparison; put a range in [model_choice] components")
    if k > n:
        raise UserError(f"[model] components = {k} is more than the {n} rows of data; use at most {n}")
    model_def = model_from_spec(spec)
    dims = parameter_dims(d)
    coords = {"component": np.arange(k), "obs": list(data.labels), "feature": list(data.columns),
              "feature_bis": list(data.columns)}
    rng = np.random.default_rng(seeds["em"])

    groups: dict[str, xr.Dataset] = {}
    data_ds = xr.Dataset({"x": (("obs", "feature"), x)}, coords={"obs": coords["obs"], "feature": coords["feature"]})
    if data.true_component is not None:
        data_ds["true_component"] = ("obs", np.asarray(data.true_component))
    if getattr(data, "truth", None) is not None:
        # Known groups ([data] truth): kept beside the data, never fitted; truth_agreement grades the clusterings.
        data_ds["truth"] = ("obs", np.asarray(data.truth, dtype=str))
        data_ds["truth"].attrs["column"] = data.truth_column or ""
    data_ds.attrs.update(source=data.source, kind="continuous", transforms=list(data.transforms))
    groups["data"] = data_ds

    em_spec = spec["em"]
    if "soft" not in em_spec["kinds"]:
        raise UserError('[em] kinds must include "soft" (the EM answer compared with the posterior), e.g. kinds = ["soft", "hard"]')
    start = time.perf_counter()
    # Soft EM decides how many starts are needed; the other kinds run from the same starts.
    soft = _fit_until(model_def, x, *_start_source(model_def, x, em_spec, rng), em_spec)
    inits = list(soft.inits)
    all_restarts = {}
    for kind in em_spec["kinds"]:
        restarts, failures = ((soft.restarts, list(soft.failures)) if kind == "soft"
                              else _fit_all(model_def, x, inits, em_spec, kind))
        all_restarts[kind] = restarts
        prefix = "em" if kind == "soft" else f"em_{kind}"
        best = restarts.best
        estimate = em_estimate(best, _variables, dims, coords, kind=kind)
        estimate["resp"] = (("obs", "component"), np.exp(em.log_resp(model_def, best.params, x)))
        estimate.attrs.update(n_failed_restarts=len(failures), failure=failures[0] if failures else "",
                              n_free_parameters=model_def.n_free_parameters(d),
                              bic=-2 * best.loglik + model_def.n_free_parameters(d) * np.log(n),
                              aic=-2 * best.loglik + 2 * model_def.n_free_parameters(d))
        groups[prefix] = estimate
        groups[f"{prefix}_trace"] = em_trace(best, _variables, dims, coords)
        if len(restarts.fits) > 1:
            groups[f"{prefix}_restarts"] = em_restarts(restarts, _variables, dims, coords)
            if kind == "soft":
                groups["em_restarts"]["reached_best"] = ("restart", _reached_best(soft).astype(np.int8))
                groups["em_optima"] = em_optima_group(groups["em_restarts"], dims)
        if kind == "soft":
            facts = _restart_facts(soft)
            estimate.attrs.update(facts)
            for name in ("em_restarts", "em_optima"):
                if name in groups:
                    groups[name].attrs.update(facts)
    if em_spec["kmeans"]:
        centres, _ = kmeans_plusplus(x, k, rng)
        result = kmeans(x, centres)
        groups["kmeans"] = xr.Dataset({"labels": ("obs", result.labels), "centres": (("component", "feature"), result.centres)},
                                      coords={"obs": coords["obs"], "component": coords["component"], "feature": coords["feature"]})
        groups["kmeans"].attrs.update(inertia=result.inertia, n_iter=result.n_iter, converged=int(result.converged))
    timings["em"] = time.perf_counter() - start
    if progress:
        progress(f"EM: {len(inits)} start(s), {soft.n_reached_best} of them at the best log-likelihood "
                 f"{groups['em']['loglik'].item():.4f}")
    start = time.perf_counter()
    groups.update(_uncertainty_groups(spec, model_def, x, all_restarts["soft"].best.params, dims, coords, seeds, progress))
    timings["em_uncertainty"] = time.perf_counter() - start

    if spec["bayes"]["enabled"]:
        groups.update(_bayes_groups(spec, model_def, x, all_restarts["soft"], coords, seeds, timings, progress))
    labellings = {}
    if "em_hard" in groups:
        labellings["hard EM"] = groups["em_hard"]["resp"].values.argmax(axis=1)
    if "kmeans" in groups:
        labellings["k-means"] = groups["kmeans"]["labels"].values
    membership = groups.get("posterior_membership")
    groups["membership_agreement"] = agreement_group(
        "obs", coords["obs"], groups["em"]["resp"].values,
        membership["membership_relabelled"].values if membership is not None else None, labellings)
    if "truth" in data_ds:
        groups["truth_agreement"] = truth_agreement_group(data_ds["truth"].values, groups["membership_agreement"], k,
                                                          column=data_ds["truth"].attrs["column"])
    if spec["model_choice"]["components"]:
        groups["model_choice"] = _model_choice(spec, x, seeds, timings, progress)
    return groups


def _uncertainty_groups(spec, model_def, x, best: GaussianParams, dims, coords, seeds, progress) -> dict[str, xr.Dataset]:
    em_spec = spec["em"]
    groups = {}
    if em_spec["information"]:
        se = gaussian_standard_errors(model_def, x, best, level=spec["report"]["interval_prob"])
        groups["em_information"] = information_group(se, dims, coords)
    if em_spec["bootstrap"]:
        if progress:
            progress(f"bootstrap: {em_spec['bootstrap']} {em_spec['bootstrap_kind']} replicates")
        result = gaussian_bootstrap(model_def, x, best, n_boot=em_spec["bootstrap"], seed=seeds["bootstrap"],
                                    kind=em_spec["bootstrap_kind"], n_workers=None,
                                    progress=bootstrap_progress(progress),
                                    em_options=dict(tol=em_spec["tol"], param_tol=em_spec["param_tol"],
                                                    max_iter=em_spec["max_iter"]))
        groups["em_bootstrap"] = bootstrap_group(result, coords)
    return groups


def _start_points(model_def, restarts, refit: Callable | None = None) -> list[GaussianParams]:
    """EM answers to start chains from: the best, then other distinct optima (not relabelled copies).

    ``refit`` (EM from one start) re-runs a representative that a batch fitted (:func:`batched_restarts`), so
    a chain starts from the answer EM gives that start on its own, not one equal to it only to rounding."""
    order = np.argsort([-fit.loglik for fit in restarts.fits])
    fits = [restarts.fits[i] for i in order]
    if len(fits) == 1:
        return [fits[0].params]
    variables = [f.params.variables() for f in fits]
    params = {name: np.stack([v[name] for v in variables]) for name in variables[0]}
    optima = distinct_optima({k: v for k, v in params.items() if np.ptp(v) > 0}, np.array([f.loglik for f in fits]))
    chosen = [fits[o.representative] for o in optima[:MAX_START_OPTIMA]]
    return [refit(fit.init_params).params if refit is not None and fit.stats is None else fit.params
            for fit in chosen]


def _bayes_groups(spec, model_def, x, restarts, coords, seeds, timings, progress) -> dict[str, xr.Dataset]:
    b = spec["bayes"]
    em_spec = spec["em"]
    starts = _start_points(model_def, restarts, partial(em.fit, model_def, x, tol=em_spec["tol"],
                                                        param_tol=em_spec["param_tol"], max_iter=em_spec["max_iter"]))
    # numpyro (the default) and PyMC's NUTS start each chain at its own EM optimum, so R-hat can still
    # see a second mode; nutpie takes the first for all.
    sampler = resolve_sampler(b["sampler"])
    settings = SamplerSettings(sampler=sampler, chains=b["chains"], draws=b["draws"], tune=b["tune"],
                               target_accept=_target_accept(b["target_accept"], restarts.best.params, x))
    # Built only if the compiled sampler is not already in the program cache.
    recipe = ModelRecipe(bayes.build_model, (model_def, x), {"columns": coords["feature"]})
    if progress:
        progress(f"sampling: {settings.chains} chains x {settings.draws} draws with {sampler}, "
                 f"starting from {len(starts)} EM optim{'um' if len(starts) == 1 else 'a'}")
    outcome = sample_posterior(recipe, settings, seeds["sampler"], bayes.initvals_from_params(model_def, starts),
                               progressbar=bool(progress))
    timings["sampling_total"] = outcome.seconds_total
    timings["sampling"] = outcome.seconds_sampling
    timings.update({f"sampling_{stage}": seconds for stage, seconds in outcome.stages.items()})
    tree = outcome.tree
    groups = {name: tree[name].to_dataset() for name in ("posterior", "sample_stats", "log_likelihood", "observed_data")
              if name in tree.children}
    groups["posterior"].attrs.update(sampler=outcome.sampler, n_start_optima=len(starts),
                                     target_accept=settings.target_accept, compiled_sampler=outcome.compiled)

    start = time.perf_counter()
    probs = bayes.membership_probabilities(model_def, x, bayes.posterior_draws(tree))
    groups["posterior_membership"] = xr.Dataset({"membership": (("obs", "component"), probs.mean(axis=0))},
                                                coords={"obs": coords["obs"], "component": coords["component"]})
    reference = restarts.best.params.variables()
    # EM's hard allocation is the pivot of relabel = "ecr" (see label_switching_groups).
    groups.update(label_switching_groups(_reported(groups["posterior"], reference), probs=probs, reference=reference,
                                         reference_allocation=np.argmax(em.log_resp(model_def, restarts.best.params, x), axis=1),
                                         method=b["relabel"], order_var="mu",
                                         interval_prob=spec["report"]["interval_prob"]))
    perms = groups["posterior_relabelled"]["permutation"].values.reshape(-1, model_def.n_components)
    groups["posterior_membership"]["membership_relabelled"] = (
        ("obs", "component"), np.take_along_axis(probs, perms[:, None, :], axis=2).mean(axis=0))
    timings["relabel"] = time.perf_counter() - start
    return groups


def _target_accept(value, params: GaussianParams, x: np.ndarray) -> float:
    """The spec's ``target_accept``, ``"auto"`` decided by the smallest EM component's expected points."""
    return resolve_target_accept(value, float(np.min(params.w)) * x.shape[0])


def _reported(posterior: xr.Dataset, reference) -> xr.Dataset:
    """Only the reported parameters (w, mu, sigma / cov): the sampler's internal variables are not relabelled."""
    return posterior[[name for name in reference if name in posterior]]


def _model_choice(spec, x, seeds, timings, progress) -> xr.Dataset:
    """EM's BIC, AIC and ICL, and PSIS-LOO / WAIC of a posterior, for each K of ``[model_choice] components``."""
    choice = spec["model_choice"]
    covariance = choice["covariance"] or spec["model"]["covariance"]
    n, d = x.shape
    rows = {}
    start = time.perf_counter()
    for k in sorted(set(choice["components"])):
        model_def = model_from_spec(spec, k, covariance)
        n_params = model_def.n_free_parameters(d)
        notes, criteria, predictive, facts, counts, degenerate = [], None, None, None, None, None
        if k > n:
            notes.append(f"K = {k} is more than the {n} rows")
        else:
            try:
                run = model_choice_em(model_def, x, spec["em"], np.random.default_rng([seeds["em"], k]))
            except DegenerateFitError as error:
                notes.append(f"EM failed in every restart: {error}")
            else:
                best = run.restarts.best
                criteria = gaussian_criteria(model_def, x, best.params)
                facts = _restart_facts(run)
                counts = _expected_counts(model_def, best.params, x)
                small = degenerate_components(counts, covariance, d)
                degenerate = bool(small.size)
                if degenerate:
                    notes.append(_degenerate_note(counts, small, covariance, d))
                elif run.n_reached_best < 2:
                    notes.append(f"the best log-likelihood was reached by only {run.n_reached_best} of "
                                 f"{run.n_starts} EM starts: a better optimum may exist")
        if n_params >= n * d:
            notes.append(f"ill-posed: {n_params} free parameters for the {n * d} numbers in the data")
        # A degenerate EM answer or a rarely reached best still leaves a posterior worth scoring.
        if choice["bayes"] and criteria is not None and not (k > n or n_params >= n * d):
            if progress:
                progress(f"model choice: sampling K = {k}")
            settings = SamplerSettings(sampler=resolve_sampler(spec["bayes"]["sampler"]), chains=choice["chains"],
                                       draws=choice["draws"], tune=choice["tune"],
                                       target_accept=_target_accept(spec["bayes"]["target_accept"], best.params, x))
            tree = sample_posterior(ModelRecipe(bayes.build_model, (model_def, x)), settings, seeds["sampler"] + k,
                                    bayes.initvals_from_params(model_def, [best.params])).tree
            predictive = loo_waic(tree)
        rows[k] = model_choice_row(criteria, predictive, note="; ".join(notes), n_params=n_params, restarts=facts,
                                   expected_counts=counts, degenerate=degenerate)
    timings["model_choice"] = time.perf_counter() - start
    return model_choice_group(rows, covariance=covariance, n_obs=n, n_features=d,
                              min_component_points=min_component_points(covariance, d))


def model_choice_em(model_def: GaussianMixtureModel, x: np.ndarray, em_spec: dict, rng) -> RestartRun:
    """Soft EM for one K of the model choice, under the spec's restart rule, from k-means++ starts (the
    spec's own ``init`` may be parameters for another K)."""
    x = np.asarray(x, dtype=float).reshape(x.shape[0], -1)

    def degenerate(fit) -> bool:
        counts = _expected_counts(model_def, fit.params, x)
        return degenerate_components(counts, model_def.covariance_type, x.shape[1]).size > 0

    # Once the best of n_init starts is degenerate, more starts only find spikes on fewer points.
    return _fit_until(model_def, x, initial_params_source(model_def, x, "k-means++", rng), restart_policy(em_spec),
                      em_spec, futile=degenerate)


def _degenerate_note(counts: np.ndarray, small: np.ndarray, covariance: str, d: int) -> str:
    shown = small[np.argsort(counts[small], kind="stable")][:6]  # the smallest, so a K = 30 note stays a line
    held = ", ".join(f"{counts[i]:.1f}" for i in shown) + (", ..." if len(small) > len(shown) else "")
    return (f"degenerate: {len(small)} component{'s' if len(small) > 1 else ''} of EM's answer hold{'' if len(small) > 1 else 's'} "
            f"{held} expected points, fewer than the {min_component_points(covariance, d)} needed to estimate a "
            f"{covariance} covariance in {d}-D (a spike on a few points, not a cluster)")
