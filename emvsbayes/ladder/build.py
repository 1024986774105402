"""Run the ladder's rungs for one fitted data set and build its two results groups.

Family-agnostic: it reads a model family through the protocol's names (``parameters``, ``variables``,
``pymc_model``, ``initvals``, ``n_observations``, ``membership_draws``, ``responsibilities``; see
PROTOCOL.md) and takes the weighted EM refit as a function (the protocol leaves ``fit_batched``'s
signature to the family). Rungs computed elsewhere (MLE + Wald, the nonparametric and parametric
bootstraps, NUTS, the exact posterior) come in as :class:`~emvsbayes.ladder.results.RungSummary`
records and keep their place in the order given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emvsbayes.ladder.results import RungSummary, coclustering_dataset, draws_summary, ladder_dataset

__all__ = ["LadderOptions", "run_ladder", "sampled_labels"]


@dataclass(frozen=True, slots=True)
class LadderOptions:
    """How much work each rung does: ``n_draws`` from Laplace and VI, ``vi_methods``, ``vi_iter``
    iterations of ``pm.fit``, ``n_replicates`` Bayesian-bootstrap fits, ``interval_prob``, ``ball_prob``
    of the credible ball, ``partition_draws`` label draws the partition search uses."""

    n_draws: int = 1000
    vi_methods: tuple[str, ...] = ("meanfield", "fullrank")
    vi_iter: int = 3000
    n_replicates: int = 200
    interval_prob: float = 0.89
    ball_prob: float = 0.95
    partition_draws: int = 400
    #: ``"programs"``: Laplace and ADVI on the model's exported JAX programs, kept on disk per model
    #: (:mod:`emvsbayes.ladder.programs`; no PyMC once stored) when the family names its model by a
    #: recipe; ``"pymc"``: compile the PyMC model's functions in this process.
    engine: str = "programs"


def sampled_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One allocation per draw and observation from membership probabilities (S, N, K): (S, N)."""
    cumulative = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1] + (1,)) * cumulative[..., -1:]
    return np.minimum((u > cumulative).sum(axis=-1), probs.shape[-1] - 1)


def _timed(function):
    started = time.perf_counter()
    out = function()
    return out, time.perf_counter() - started


def run_ladder(family, model_def, data, em_params, *, seed: int, options: LadderOptions = LadderOptions(),
               refit_weighted: Callable[[np.ndarray], object] | None = None,
               before: Sequence[RungSummary] = (), after: Sequence[RungSummary] = (),
               posterior_draws: Mapping[str, np.ndarray] | None = None, map_params=None,
               parameters: Sequence[str] | None = None, coords: Mapping[str, np.ndarray] | None = None) -> dict:
    """The rungs MAP-EM (when its answer ``map_params`` is given: :mod:`emvsbayes.ladder.map_em`), Laplace,
    ADVI (each of ``options.vi_methods``) and the Bayesian bootstrap (when ``refit_weighted`` is given),
    between the rungs ``before`` and ``after``.

    Returns ``{"uncertainty_ladder": Dataset, "coclustering": Dataset}``: the similarity matrices of
    every rung with draws (and of ``posterior_draws``, NUTS's, when given, whose sampled partitions then
    give the point partitions and credible balls; else the Laplace rung's do). ``parameters``: the
    names the ladder reports (default: all of ``family.parameters``; a run leaves out fixed ones);
    ``coords`` the run's coordinates (component names; default: numbers).
    """
    from emvsbayes.ladder import bayesian_bootstrap as bb
    from emvsbayes.ladder import laplace as lp
    from emvsbayes.ladder import partition, vi

    children = np.random.SeedSequence(seed).spawn(4)
    info = family.parameters(model_def, data)
    if parameters is not None:
        info = {name: info[name] for name in parameters}
    names = list(info)
    reference = {name: np.asarray(v) for name, v in family.variables(em_params).items()}
    start = family.initvals(model_def, [em_params])[0]
    programs = None
    if options.engine == "programs" and hasattr(family, "model_recipe"):
        from emvsbayes.ladder import programs as ladder_programs

        recipe = family.model_recipe(model_def, data)
        if recipe.key is not None:
            settings = ladder_programs.AdviSettings(methods=tuple(options.vi_methods), n_iter=options.vi_iter)
            programs, _ = ladder_programs.obtain(recipe, settings)
    model = family.pymc_model(model_def, data) if programs is None else None
    constrain = programs.constrained_values if programs is not None else None
    rungs, draw_sets = [], {}
    if map_params is not None:
        from emvsbayes.ladder import map_em

        rungs.append(RungSummary("map_em", map_em.ASSUMES, {name: {"estimate": np.asarray(value)} for name, value in
                                                            family.variables(map_params).items() if name in info}))

    def keep(draws):
        return {name: np.asarray(draws[name]) for name in names if name in draws}

    def one_laplace():
        fit = lp.laplace(model, start) if programs is None else lp.laplace_programs(programs, start)
        return fit, lp.laplace_draws(model, fit, options.n_draws, np.random.default_rng(children[0]),
                                     constrain=constrain)

    (fit, draws), seconds = _timed(one_laplace)
    at_mode = {name: value[0] for name, value in
               (lp.constrained_values(model, fit.point_map_info, fit.mode) if programs is None
                else constrain(fit.mode)).items()}
    summary = draws_summary(keep(draws), options.interval_prob)
    for name in summary:
        summary[name]["estimate"] = at_mode[name]
    rungs.append(RungSummary("laplace", lp.ASSUMES, summary, seconds))
    draw_sets["laplace"] = draws

    for i, method in enumerate(options.vi_methods):
        rng = np.random.default_rng(children[1].spawn(len(options.vi_methods))[i])

        def one_vi(method=method, rng=rng):
            seed = int(rng.integers(2**31))
            if programs is None:
                fitted = vi.fit_vi(model, method, options.vi_iter, seed, start=start)
                log_posterior_batch = None
            else:
                fitted = vi.fit_vi_programs(programs, method, seed, start=start)
                log_posterior_batch = programs.logp_batch
            return fitted, vi.vi_draws(model, fitted, options.n_draws, rng, constrain=constrain), vi.pareto_k(
                model, fitted, options.n_draws, rng, log_posterior_batch=log_posterior_batch)

        (fitted, draws, diagnostic), seconds = _timed(one_vi)
        rungs.append(RungSummary(f"advi_{method}", vi.ASSUMES[method], draws_summary(keep(draws), options.interval_prob),
                                 seconds, diagnostic.khat))
        draw_sets[f"advi_{method}"] = draws

    if refit_weighted is not None:
        n_obs = family.n_observations(data)
        weights = bb.dirichlet_weights(n_obs, options.n_replicates, int(children[2].generate_state(1)[0]))
        result, seconds = _timed(lambda: bb.bayesian_bootstrap(refit_weighted, reference, weights))
        rungs.append(RungSummary("bootstrap_bayesian", bb.ASSUMES,
                                 draws_summary(keep(result.draws), options.interval_prob), seconds))
        draw_sets["bootstrap_bayesian"] = {name: value[result.ok] for name, value in result.draws.items()}

    all_rungs = [*before, *rungs, *after]
    dims = {name: tuple(i.dims) for name, i in info.items()}
    label_dims = {name: tuple(i.label_dims) for name, i in info.items()}
    coords = dict(coords) if coords is not None else {"component": np.arange(len(next(iter(reference.values()))))}
    ladder = ladder_dataset(all_rungs, dims, label_dims, coords, options.interval_prob)

    if posterior_draws is not None:
        draw_sets = {"nuts": dict(posterior_draws), **draw_sets}
    probs = {source: family.membership_draws(model_def, data, draws) for source, draws in draw_sets.items()}
    similarities = {source: partition.similarity(p) for source, p in probs.items()}
    em_labels = np.argmax(family.responsibilities(model_def, data, em_params), axis=1)
    label_source = "nuts" if posterior_draws is not None else "laplace"
    chosen = probs[label_source]
    rng = np.random.default_rng(children[3])
    rows = rng.choice(chosen.shape[0], size=min(options.partition_draws, chosen.shape[0]), replace=False)
    labels = sampled_labels(chosen[rows], rng)
    points = {loss: partition.point_partition(labels, loss=loss, extra_candidates=em_labels[None, :])
              for loss in partition.LOSSES}
    balls = {loss: partition.credible_ball(p.labels, labels, prob=options.ball_prob) for loss, p in points.items()}
    n = len(em_labels)
    groups = {"uncertainty_ladder": ladder,
              "coclustering": coclustering_dataset(similarities, em_labels, family.obs_dim,
                                                   np.asarray(coords.get(family.obs_dim, np.arange(n))), points,
                                                   balls)}
    groups["coclustering"].attrs["partition_source"] = label_source
    return groups
