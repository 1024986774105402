"""The uncertainty ladder's intervals in a coverage study (issue 20): one interval per rung and replicate.

A coverage study lists the rungs it wants among ``[intervals] kinds`` (:data:`emvsbayes.study.spec.LADDER_KINDS`):

- ``laplace``: :func:`emvsbayes.ladder.laplace.laplace` at the posterior mode found from the EM answer,
  ``LADDER_DRAWS`` draws mapped back to the constrained scale;
- ``advi_meanfield``, ``advi_fullrank``: :func:`emvsbayes.ladder.vi.fit_vi` (``VI_ITER`` iterations, started at
  the EM answer), ``LADDER_DRAWS`` draws, and the Pareto k of the approximation (PSIS) as a scalar;
- ``bootstrap_bayesian``: :func:`emvsbayes.ladder.bayesian_bootstrap.bayesian_bootstrap` with
  ``[intervals] bootstrap`` Dirichlet-weighted EM refits from the EM answer, all in one batch.

Every interval is the equal-tailed ``[intervals] prob`` interval of the rung's draws (the same probability
as the run's intervals), on the labelling of the EM answer aligned to the truth (every rung starts there).

Cost: a replicate must not compile its model again. The cell's PyMC model (data in ``pm.Data``
containers) is built once per worker process, and :class:`CompiledOnce` keeps every function the ladder
compiles from it (log-density, gradient, constrained values, initial point): a replicate swaps its data
into the containers, so the compiled functions of the first replicate serve every later one. ADVI's
``pm.fit`` compiles its step function on each call (PyMC offers no reuse), so the ADVI rungs cost
seconds per replicate; the timings say how many.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping

import numpy as np

__all__ = ["LADDER_DRAWS", "VI_ITER", "CompiledOnce", "ladder_intervals"]

#: Draws from the Laplace and VI approximations per replicate: a 90% interval's end points from 1000
#: draws are off by about 0.01 posterior sds, far below the Monte Carlo error of a coverage estimate.
LADDER_DRAWS = 1000
#: ADVI iterations (the ladder's own default, :class:`emvsbayes.ladder.build.LadderOptions`).
VI_ITER = 3000


class CompiledOnce:
    """A PyMC model whose compiled functions are kept: ``compile_logp``, ``compile_dlogp``,
    ``compile_d2logp`` and ``compile_fn`` return the function compiled by the first call with the same
    arguments. Everything else is the model's. The functions read the model's data containers, so
    ``pm.set_data`` on the model changes what they compute, not whether they must be compiled again.
    """

    def __init__(self, model):
        self._model = model
        self._compiled: dict[str, object] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __getitem__(self, key):  # model["mu"]: PyMC looks variables up by name
        return self._model[key]

    def __contains__(self, key):
        return key in self._model

    @staticmethod
    def _names(value) -> object:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [getattr(v, "name", repr(v)) for v in value]
        return getattr(value, "name", repr(value))

    def _once(self, what: str, args: tuple, kwargs: dict, build):
        key = json.dumps([what, [self._names(a) for a in args],
                          {k: self._names(v) if not isinstance(v, (bool, int, float, str)) else v
                           for k, v in sorted(kwargs.items())}], default=repr)
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = build()
            return self._compiled[key]

    def compile_logp(self, *args, **kwargs):
        return self._once("logp", args, kwargs, lambda: self._model.compile_logp(*args, **kwargs))

    def compile_dlogp(self, *args, **kwargs):
        return self._once("dlogp", args, kwargs, lambda: self._model.compile_dlogp(*args, **kwargs))

    def compile_d2logp(self, *args, **kwargs):
        return self._once("d2logp", args, kwargs, lambda: self._model.compile_d2logp(*args, **kwargs))

    def compile_fn(self, *args, **kwargs):
        return self._once("fn", args, kwargs, lambda: self._model.compile_fn(*args, **kwargs))

    @property
    def n_compiled(self) -> int:
        return len(self._compiled)


class _CellLadder:
    """A cell's model with data containers (``model``, for ``pm.fit``) and its :class:`CompiledOnce` view."""

    def __init__(self, model, shared: dict[str, str]):
        self.model = model
        self.compiled = CompiledOnce(model)
        self.shared = shared
        self.initial_point = {}  # constrained start's keys -> PyMC's initial-point function


#: key (the model's shape-defining settings) -> _CellLadder, per worker process
_LADDERS: dict[str, _CellLadder] = {}
_LADDERS_LOCK = threading.Lock()


def cell_ladder(family, model_def, arrays: dict) -> tuple[_CellLadder, bool]:
    """The cached ladder model of this model shape, built on first use; returns (ladder, built_now)."""
    from emvsbayes.study.replicate import _container_name, model_with_containers

    key = json.dumps([repr(model_def), family.name, {k: np.shape(v) for k, v in arrays.items()}], default=str)
    with _LADDERS_LOCK:
        if key in _LADDERS:
            return _LADDERS[key], False
        model = model_with_containers(family.name, model_def, arrays)
        _LADDERS[key] = _CellLadder(model, {key: _container_name(obs) for obs, key in family.observed.items()})
        return _LADDERS[key], True


def clear_cache() -> None:
    """Forget this process's ladder models (tests count compilations with it)."""
    _LADDERS.clear()


def _set_data(ladder: _CellLadder, family, arrays: dict) -> None:
    import pymc as pm

    from emvsbayes.study.replicate import _observed_array

    values = {ladder.shared[key]: _observed_array(ladder.model, obs, arrays[key]) for obs, key in family.observed.items()}
    pm.set_data(values, model=ladder.model)


def _interval(draws: Mapping[str, np.ndarray], names, prob: float) -> tuple[dict, dict]:
    tail = (1 - prob) / 2
    lower = {name: np.quantile(np.asarray(draws[name], dtype=float), tail, axis=0) for name in names}
    upper = {name: np.quantile(np.asarray(draws[name], dtype=float), 1 - tail, axis=0) for name in names}
    return lower, upper


def _missing(reference: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    nan = {name: np.full(np.shape(value), np.nan) for name, value in reference.items()}
    return nan, dict(nan)


def ladder_intervals(family, model_def, data, arrays: dict, estimate, kinds, spec: dict,
                     seed: np.random.SeedSequence) -> tuple[dict[str, tuple[dict, dict]], dict[str, float], dict[str, float]]:
    """Each ladder rung in ``kinds``: (lower, upper) of every estimated variable, name -> array.

    ``estimate`` is the EM answer aligned to the truth: every rung starts there (the Laplace mode and ADVI's
    mean are found from it, the Bayesian bootstrap's refits start from it and are relabelled to it), so the
    intervals are on the truth's labelling. A rung that fails on these data (a Hessian that is not negative
    definite, ADVI leaving the support) gives NaN intervals, counted in the scalar ``{rung}_failed``.

    Returns (rung -> (lower, upper)), scalars (failures, VI's Pareto k), seconds per rung.
    """
    from emvsbayes.ladder import adapters
    from emvsbayes.ladder import bayesian_bootstrap as bb
    from emvsbayes.ladder import laplace as lp
    from emvsbayes.ladder import vi
    from emvsbayes.study.replicate import em_options

    prob = spec["intervals"]["prob"]
    reference = {name: np.asarray(value) for name, value in family.estimated_variables(model_def, estimate).items()}
    names = list(reference)
    children = dict(zip(("laplace", "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"), seed.spawn(4)))
    intervals: dict[str, tuple[dict, dict]] = {}
    scalars: dict[str, float] = {}
    seconds: dict[str, float] = {}
    wanted = [kind for kind in kinds if kind in children]
    if not wanted:
        return intervals, scalars, seconds

    started = time.perf_counter()
    ladder, _ = cell_ladder(family, model_def, arrays)
    _set_data(ladder, family, arrays)
    start = family.initvals(model_def, [estimate])[0]
    setup = time.perf_counter() - started

    for kind in wanted:
        began = time.perf_counter()
        rng = np.random.default_rng(children[kind])
        try:
            if kind == "laplace":
                fit = lp.laplace(ladder.compiled, start)
                draws = lp.laplace_draws(ladder.compiled, fit, LADDER_DRAWS, rng)
            elif kind.startswith("advi_"):
                method = kind.removeprefix("advi_")
                fitted = vi.fit_vi(ladder.model, method, VI_ITER, int(rng.integers(2**31)), start=start)
                draws = vi.vi_draws(ladder.compiled, fitted, LADDER_DRAWS, rng)
                scalars[f"{kind}_khat"] = vi.pareto_k(ladder.compiled, fitted, LADDER_DRAWS, rng).khat
            else:
                refit, reason = adapters.weighted_refit(family, model_def, data, estimate, em_options(spec))
                if refit is None:
                    raise ValueError(reason)
                weights = bb.dirichlet_weights(family.n_observations(data), spec["intervals"]["bootstrap"],
                                               int(children[kind].generate_state(1)[0]))
                # Aligned on every variable (a coin mixture's fixed equal weights too: the refits carry them).
                result = bb.bayesian_bootstrap(refit, {k: np.asarray(v) for k, v in family.variables(estimate).items()},
                                               weights)
                scalars[f"{kind}_refits_failed"] = float((~result.ok).sum())
                if result.ok.sum() < 2:
                    raise ValueError("fewer than 2 weighted refits succeeded")
                draws = {name: value[result.ok] for name, value in result.draws.items()}
            intervals[kind] = _interval(draws, names, prob)
            scalars[f"{kind}_failed"] = 0.0
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            intervals[kind] = _missing(reference)
            scalars[f"{kind}_failed"] = 1.0
        seconds[kind] = time.perf_counter() - began
    # The shared set-up (building the cell's model on a worker's first replicate) is the first rung's cost.
    seconds[wanted[0]] += setup
    return intervals, scalars, seconds
