"""The ladder inside a run: the rungs the run already computed (MLE + Wald, its bootstrap, NUTS, the exact
posterior) read from its groups, the ladder's own rungs computed by :func:`emvsbayes.ladder.build.run_ladder`.

Family-agnostic: MAP-EM and the weighted refit are the family's optional members ``map_fit`` and
``weighted_fit`` (:mod:`emvsbayes.family`); a rung a family cannot give is left out and the reason stored in the group's attr ``skipped`` (JSON), which the
report shows.
"""

from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

from emvsbayes.ladder.results import RungSummary, draws_summary

__all__ = ["ASSUMES", "ladder_groups"]

#: What the rungs the run computes elsewhere assume, one sentence each for the report.
ASSUMES = {
    "mle_wald": ("MLE + Wald: the likelihood near EM's maximum is a Gaussian (on the interval's scale), "
                 "one labelling, no prior."),
    "bootstrap_nonparametric": ("Nonparametric bootstrap: the observed rows stand for the population; EM refitted "
                                "to resampled rows, each fit relabelled to EM's answer."),
    "bootstrap_parametric": ("Parametric bootstrap: the fitted model is the truth; EM refitted to data simulated "
                             "from EM's answer, each fit relabelled to EM's answer."),
    "nuts": ("NUTS: the full posterior under the stated priors, sampled by MCMC and relabelled to EM's labelling; "
             "assumes the chains mixed."),
    "exact": ("Exact posterior (enumeration of every assignment), summarised by rank: the k-th smallest value "
              "is matched to EM's k-th smallest; no sampling, no approximation."),
}


def _mle_wald(groups, names) -> RungSummary | None:
    em, info = groups["em"], groups.get("em_information")
    values = {}
    for name in names:
        if name not in em:
            continue
        entry = {"estimate": em[name].values}
        if info is not None and f"se_{name}" in info:
            entry.update(sd=info[f"se_{name}"].values, lower=info[f"wald_lower_{name}"].values,
                         upper=info[f"wald_upper_{name}"].values)
        values[name] = entry
    return RungSummary("mle_wald", ASSUMES["mle_wald"], values)


def _stacked(ds: xr.Dataset, names, sample_dims) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        if name in ds:
            da = ds[name]
            rest = [d for d in da.dims if d not in sample_dims]
            out[name] = da.transpose(*sample_dims, *rest).values.reshape(-1, *[da.sizes[d] for d in rest])
    return out


def _exact(groups, names, em) -> RungSummary | None:
    """The exact posterior's rank summaries, placed on EM's components by EM's order of the same parameter."""
    exact = groups.get("exact")
    if exact is None:
        return None
    values = {}
    for name in names:
        if f"{name}_sorted_mean" not in exact or name not in em or em[name].ndim != 1:
            continue
        rank = np.argsort(np.argsort(em[name].values, kind="stable"), kind="stable")
        values[name] = {key: exact[f"{name}_sorted_{stat}"].values[rank]
                        for key, stat in (("estimate", "mean"), ("sd", "sd"), ("lower", "lower"), ("upper", "upper"))}
    return RungSummary("exact", ASSUMES["exact"], values) if values else None


#: The seed stream of the ladder's second bootstrap: a spawn key of the ladder's seed that run_ladder's own
#: children (spawn keys 0-3) never take, so adding this rung left the other rungs' numbers unchanged.
OTHER_BOOTSTRAP_STREAM = 1000


def _other_bootstrap(family, model_def, data, em_params, run_kind: str, names, prob: float, n_boot: int, seed,
                     em_options: dict) -> RungSummary | str:
    """The bootstrap of the kind the run did not do (parametric beside a nonparametric one, and the reverse),
    with ``n_boot`` replicates aligned to EM's answer; or why there is none (a series cannot be resampled)."""
    from emvsbayes.uncertainty import run_bootstrap

    kind = "parametric" if run_kind == "nonparametric" else "nonparametric"
    if kind == "nonparametric" and getattr(family, "resample", None) is not None \
            and family.resample(data, np.random.default_rng(0)) is None:
        return "resampling rows is not a bootstrap of this family's data (dependent observations)"
    started = time.perf_counter()
    result = run_bootstrap(family, model_def, data, em_params, n_boot=n_boot, seed=seed, kind=kind, n_workers=1,
                           em_options=em_options)
    ok = ~np.asarray(result.failed, dtype=bool)
    draws = {name: np.asarray(result.draws[name])[ok] for name in names if name in result.draws}
    return RungSummary(f"bootstrap_{kind}", ASSUMES[f"bootstrap_{kind}"], draws_summary(draws, prob),
                       time.perf_counter() - started)


def ladder_groups(family, spec, model_def, data, groups: dict, em_params, seed: int, em_options: dict,
                  timings: dict, progress=None) -> dict[str, xr.Dataset]:
    """The ``uncertainty_ladder`` and ``coclustering`` groups of a run whose other groups are ``groups``."""
    from emvsbayes.ladder.bayesian_bootstrap import weighted_refit
    from emvsbayes.ladder.build import LadderOptions, run_ladder

    ladder = spec["ladder"]
    prob = spec["report"]["interval_prob"]
    # Fixed parameters (the coins' equal weights) have no uncertainty to show.
    estimated = family.estimated_variables(model_def, em_params)
    names = [name for name in family.parameters(model_def, data) if name in estimated]
    wanted = set(ladder["rungs"])
    skipped: dict[str, str] = {}
    started = time.perf_counter()

    before = [_mle_wald(groups, names)]
    if "em_bootstrap" in groups:
        boot = groups["em_bootstrap"]
        ok = boot["failed"].values == 0 if "failed" in boot.coords else slice(None)
        kind = str(boot.attrs.get("bootstrap", "nonparametric"))
        draws = {name: value[ok] for name, value in _stacked(boot, names, ("replicate",)).items()}
        before.append(RungSummary(f"bootstrap_{kind}", ASSUMES.get(f"bootstrap_{kind}", ""), draws_summary(draws, prob)))
        # the ladder shows all three bootstraps: the run's, the other kind (here), the Bayesian (run_ladder)
        other = _other_bootstrap(family, model_def, data, em_params, kind, names, prob, ladder["bootstrap"],
                                 np.random.SeedSequence(seed, spawn_key=(OTHER_BOOTSTRAP_STREAM,)), em_options)
        if isinstance(other, str):
            skipped[f"bootstrap_{'parametric' if kind == 'nonparametric' else 'nonparametric'}"] = other
        else:
            before.append(other)
    after, posterior_draws = [], None
    if "posterior_relabelled" in groups:
        after.append(RungSummary("nuts", ASSUMES["nuts"],
                                 draws_summary(_stacked(groups["posterior_relabelled"], names, ("chain", "draw")), prob),
                                 timings.get("sampling", float("nan"))))
        posterior_draws = family.posterior_draws(model_def, groups["posterior"])
    exact = _exact(groups, names, groups["em"])
    if exact is not None:
        after.append(exact)

    map_params = None
    if "map_em" in wanted:
        from emvsbayes.ladder.map_em import map_point

        map_params, reason = map_point(family, model_def, data, em_params, em_options)
        if map_params is None:
            skipped["map_em"] = reason
    refit = None
    if "bootstrap_bayesian" in wanted:
        refit, reason = weighted_refit(family, model_def, data, em_params, em_options)
        if refit is None:
            skipped["bootstrap_bayesian"] = reason
    methods = tuple(m for m in ("meanfield", "fullrank") if f"advi_{m}" in wanted)
    options = LadderOptions(n_draws=ladder["draws"], vi_methods=methods, vi_iter=ladder["vi_iter"],
                            n_replicates=ladder["bootstrap"], interval_prob=prob, engine=ladder["engine"])
    if progress:
        progress(f"ladder: Laplace{''.join(', ADVI ' + m for m in methods)}"
                 f"{', Bayesian bootstrap' if refit else ''}{', MAP-EM' if map_params is not None else ''}")
    out = run_ladder(family, model_def, data, em_params, seed=seed, options=options, refit_weighted=refit,
                     before=before, after=after, posterior_draws=posterior_draws, map_params=map_params,
                     parameters=names, coords=family.coords(spec, model_def, data))
    out["uncertainty_ladder"].attrs["skipped"] = json.dumps(skipped)
    timings["ladder"] = time.perf_counter() - started
    return out
