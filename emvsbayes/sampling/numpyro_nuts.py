"""numpyro's NUTS on a PyMC model, run through the exported programs of :mod:`emvsbayes.sampling.programs`.

A recipe with a key whose programs are on disk is sampled without PyMC, numpyro or tracing; otherwise
the programs are built from the model, stored, and run the same way, so a first and a later run of
the same recipe and seed give bit-identical draws. Each chain starts at its own EM answer (cycled
over chains), without jitter; starts whose log-density or gradient is not finite are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np

from emvsbayes.sampling import programs as prog
from emvsbayes.sampling.recipe import ModelRecipe

log = logging.getLogger(__name__)


class CompileClock:
    """Seconds JAX spends compiling (tracing, lowering, XLA compile or loading from its cache) while
    installed as a listener."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, event: str, duration: float, **_) -> None:
        if event in self.EVENTS:
            self.seconds += duration

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        from jax._src import monitoring

        monitoring.unregister_event_duration_listener(self)


class _Stages:
    """Wall time per stage less the JAX compiling inside it (counted once, as ``compile``)."""

    def __init__(self, clock: CompileClock):
        self.clock = clock
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn, *args):
        begin, compiled = time.perf_counter(), self.clock.seconds
        out = fn(*args)
        import jax

        jax.block_until_ready(out)
        spent = time.perf_counter() - begin - (self.clock.seconds - compiled)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
        return out


def obtain_programs(recipe: ModelRecipe, spec: prog.ProgramSpec, build=None,
                    data_names: Sequence[str] = ()) -> tuple[prog.NutsPrograms, str]:
    """(the programs, how they were obtained: ``"loaded"``, ``"built"`` or ``"built (not stored: ...)"``).

    ``build(model, spec)`` makes them when none are stored (default :func:`programs.build_programs`);
    ``data_names``: the data containers a ``build`` makes arguments of, named in the programs' key (the same
    recipe with its data baked in is other programs).
    """
    key = None
    if recipe.key is not None:
        key = prog.program_key(recipe.key + "".join(f";data:{name}" for name in data_names), spec)
    if key is not None:
        loaded = prog.load(key, spec)
        if loaded is not None:
            return loaded, "loaded"
    import pytensor

    # PyMC's initial-point functions are compiled here too; PyTensor's Python linker runs them at
    # once, where a cold C compile would cost ~20 s.
    with pytensor.config.change_flags(cxx=""):
        built = (build or prog.build_programs)(recipe.model(), spec)
    if key is None:
        return built, "built (not stored: the model has no recipe key)"
    try:
        prog.store(built, key)
    except (OSError, TypeError) as error:
        log.warning("compiled sampler not stored (%s); the next run builds it again", error)
        return built, f"built (not stored: {error})"
    return built, "built"


def _start_values(programs: prog.NutsPrograms, initvals: Sequence[dict], chains: int,
                  data: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
    """Chain-major unconstrained starts from the EM answers with a finite log-density and gradient;
    PyMC's initial point when there is none. ``data``: the programs' data arguments, if they take any."""
    to_unconstrained = programs.callable("to_unconstrained")
    potential_and_grad = programs.callable("potential_and_grad")
    points = []
    for start in initvals:
        try:
            point = [np.asarray(v) for v in to_unconstrained(*prog.free_rv_arrays(programs.facts, start))]
            value, grads = potential_and_grad(*data, *point)
        except (ValueError, TypeError):
            continue
        if np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads):
            points.append(point)
    if not points:
        fallback = programs.facts.fallback_point
        points = [[fallback[name] for name, _, _ in programs.facts.value_vars]]
    return prog.stacked_values(points, chains)


def data_arguments(programs: prog.NutsPrograms, data: Mapping[str, np.ndarray], chains: int):
    """(one copy, one copy per chain) of the data arguments of ``programs`` (built by
    :func:`programs.build_data_programs`), from ``data`` (container name -> values of the placeholder's shape)."""
    args = []
    for name, shape, dtype in programs.data_inputs:
        value = np.asarray(data[name], dtype=dtype)
        if value.size != int(np.prod(shape)):
            raise ValueError(f"data {name!r} has shape {value.shape}, the programs take {tuple(shape)}")
        args.append(value.reshape(shape))
    return args, [np.ascontiguousarray(np.broadcast_to(a, (chains, *a.shape))) for a in args]


def build_with_data(names: Sequence[str]):
    """A ``build`` for :func:`obtain_programs`: programs whose data containers ``names`` are arguments."""
    return lambda model, spec: prog.build_data_programs(model, tuple(names), spec)


def sample_numpyro(recipe: ModelRecipe, settings, seed: int, initvals: Sequence[dict], log_likelihood: bool,
                   data: Mapping[str, np.ndarray] | None = None):
    """Sample ``recipe``'s model as :func:`emvsbayes.sampling.sample_posterior` asks; a SamplingOutcome.

    ``data``: values for data containers of the model, which its programs then take as arguments (one program
    set for every value of the same shapes)."""
    from emvsbayes.sampling import SamplingOutcome, configure_jax

    configure_jax()
    started = time.perf_counter()
    import jax

    layout = prog.ChainLayout.for_chains(settings.chains, jax.local_device_count())
    spec = prog.ProgramSpec(layout, settings.tune, settings.draws, float(settings.target_accept))
    names = tuple(sorted(data)) if data else ()
    build = build_with_data(names) if names else None
    with CompileClock() as clock:
        stages = _Stages(clock)
        programs, obtained = stages.run("build", obtain_programs, recipe, spec, build, names)
        args, per_chain = data_arguments(programs, data or {}, settings.chains)
        init = stages.run("build", _start_values, programs, initvals, settings.chains, args)
        keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), settings.chains))
        state = stages.run("tune", programs.callable("init"), keys, *per_chain, *init)
        steps = partial(programs.callable("steps"), *per_chain)
        state = stages.run("tune", _advance, steps, state, spec.tune // spec.block, False)[0]
        state, samples, stats = stages.run("draws", _advance, steps, state, spec.draws // spec.block, True)
        values = stages.run("constrain_and_log_likelihood", programs.callable("constrain"), *args, *samples)
        facts = programs.facts
        groups = {"posterior": {name: np.asarray(v) for name, v in zip(facts.posterior_vars, values)},
                  "sample_stats": _sample_stats(stats)}
        # A model with nothing observed by a distribution (a hidden Markov model's forward algorithm is a
        # Potential) has no pointwise log-likelihood.
        if log_likelihood and facts.observed:
            pointwise = stages.run("constrain_and_log_likelihood", programs.callable("log_likelihood"), *args,
                                   *samples)
            groups["log_likelihood"] = {name: np.asarray(v) for name, v in zip(facts.observed, pointwise)}
    stage_seconds = dict(stages.seconds)
    stage_seconds["compile"] = clock.seconds
    seconds_sampling = stage_seconds["tune"] + stage_seconds["draws"]
    tree = _data_tree(facts, groups, seconds_sampling, settings.tune, obtained, data or {})
    return SamplingOutcome(tree, "numpyro", seconds_sampling, time.perf_counter() - started, stage_seconds,
                           compiled=obtained)


def _advance(steps, state, n_calls: int, keep: bool):
    """(state, samples, stats) after ``n_calls`` calls of the ``steps`` program; with ``keep`` the
    blocks' samples and statistics joined along the draw axis (numpy), else ``None`` (warm-up)."""
    samples, stats = [], []
    for _ in range(n_calls):
        state, block_samples, block_stats = steps(*state)
        if keep:
            samples.append([np.asarray(s) for s in block_samples])
            stats.append({k: np.asarray(v) for k, v in block_stats.items()})
    if not keep:
        return state, None, None
    joined = [np.concatenate([block[i] for block in samples], axis=1) for i in range(len(samples[0]))]
    return state, joined, {k: np.concatenate([block[k] for block in stats], axis=1) for k in stats[0]}


def _sample_stats(stats: dict) -> dict[str, np.ndarray]:
    out = {name: np.asarray(value) for name, value in stats.items()}
    # As PyMC's numpyro path reports it: the depth of the tree that n_steps leapfrog steps make.
    out["tree_depth"] = np.log2(out["n_steps"]).astype(int) + 1
    return out


def _data_tree(facts: prog.ModelFacts, groups: dict, seconds_sampling: float, tune: int, obtained: str,
               data: Mapping[str, np.ndarray]):
    from arviz_base import from_dict, make_attrs

    if facts.observed:
        groups["observed_data"] = dict(facts.observed)
    if facts.constant:
        # the data given to programs that take them as arguments, not the placeholders they were built with
        groups["constant_data"] = {name: np.asarray(data.get(name, value)) for name, value in facts.constant.items()}
    attrs = make_attrs({"sampling_time": seconds_sampling, "tuning_steps": tune, "inference_library": "numpyro",
                        "inference_library_version": facts.numpyro_version, "compiled_sampler": obtained})
    return from_dict(data=groups, coords={k: v.tolist() for k, v in facts.coords.items()}, dims=facts.dims,
                     sample_dims=["chain", "draw"], attrs={"posterior": attrs})
