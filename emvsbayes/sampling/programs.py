"""numpyro's NUTS for one PyMC model, as exported JAX programs that can be kept on disk.

Why: JAX's persistent cache keeps compiled executables, but finds one only by the lowered program,
so every process first rebuilds the model's JAX log-density from PyMC (~1 s) and traces and lowers
NUTS around it (~1.5-2.5 s), after importing PyMC and numpyro. Here each program is exported once
(``jax.export``: the lowered StableHLO with its calling convention) and stored under the model
recipe's key (:class:`emvsbayes.sampling.recipe.ModelRecipe`); a later process with the same key
deserialises them and needs only JAX. What the DataTree needs from the model (names, coordinates,
dimensions, observed data) is stored beside them.

The programs (every one pure; chain counts and lengths fixed by the :class:`ProgramSpec`):

- ``to_unconstrained(*free RV values) -> value variables``: PyMC's transforms (one start);
- ``potential_and_grad(*value variables) -> (-logp, grads)``: the start check (one start);
- ``init(keys, *value variables) -> state``: numpyro's NUTS initialisation of every chain, each on its
  own device (``shard_map`` over a ``chain`` mesh axis), the HMCState as a flat list of arrays;
- ``steps(*state) -> (state, samples, stats)``: ``block`` NUTS steps of every chain from ``state``,
  keeping each step's position and statistics. The kernel adapts while a chain's step count is
  below ``tune``, so the same program serves warm-up (``tune / block`` calls, output dropped) and
  draws (``draws / block`` calls); ``block`` is the largest number dividing both. One program for
  both phases means NUTS is compiled once (about 3 s cold, 0.25 s to load warm), and the host
  sees where warm-up ends, so the two are timed apart;
- ``constrain(*samples) -> posterior variables`` and ``log_likelihood(*samples) -> pointwise``.

They run exactly the steps of ``numpyro.infer.MCMC`` with the same kernel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Bump when the layout of a stored program set changes.
FORMAT = 1
PROGRAM_NAMES = ("to_unconstrained", "potential_and_grad", "init", "steps", "constrain", "log_likelihood")
#: numpyro state fields kept per draw, under the names PyMC gives them in ``sample_stats``.
STATS = {"num_steps": "n_steps", "potential_energy": "lp", "energy": "energy",
         "adapt_state.step_size": "step_size", "accept_prob": "acceptance_rate", "diverging": "diverging"}


@dataclass(frozen=True, slots=True)
class ChainLayout:
    """How ``chains`` chains sit on the JAX devices: ``devices`` devices with ``per_device`` chains each
    (vectorised there when more than one)."""

    chains: int
    devices: int
    per_device: int

    @classmethod
    def for_chains(cls, chains: int, n_devices: int) -> ChainLayout:
        devices = max(d for d in range(1, min(chains, n_devices) + 1) if chains % d == 0)
        return cls(chains, devices, chains // devices)


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """What besides the model decides the programs: NUTS settings and the chain layout."""

    layout: ChainLayout
    tune: int
    draws: int
    target_accept: float

    @property
    def block(self) -> int:
        """Steps per call of the ``steps`` program."""
        return math.gcd(self.tune, self.draws)

    def describe(self) -> dict:
        return {"chains": self.layout.chains, "devices": self.layout.devices, "per_device": self.layout.per_device,
                "tune": self.tune, "draws": self.draws, "target_accept": self.target_accept}


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the sampler's output needs to know of the model, without the model.

    ``free_rvs``: (name, shape, dtype) of each free variable as a start gives it (constrained);
    ``value_vars``: the same of the unconstrained variables NUTS moves in; ``posterior_vars``: names
    of the posterior's variables (free and deterministic); ``observed``: observed data by name (the
    pointwise log-likelihood has one entry each); ``constant``: constant data; ``default_start``:
    PyMC's own starting values (constrained), for variables a start leaves out; ``fallback_point``:
    PyMC's initial point (unconstrained), used when no start is finite; ``coords``, ``dims`` as
    PyMC reports them; ``numpyro_version``.
    """

    free_rvs: tuple
    value_vars: tuple
    posterior_vars: tuple
    observed: dict
    constant: dict
    default_start: dict
    fallback_point: dict
    coords: dict
    dims: dict
    numpyro_version: str


@dataclass(frozen=True)
class NutsPrograms:
    """The exported programs of one model under one :class:`ProgramSpec`, with the model's facts."""

    spec: ProgramSpec
    facts: ModelFacts
    exported: dict  # name -> jax.export.Exported
    _callables: dict = field(default_factory=dict, repr=False, compare=False)
    #: (name, shape, dtype) of each data argument, given first to every program but ``to_unconstrained``
    #: (``init`` and ``steps`` take one copy per chain); empty when the data are constants of the programs.
    data_inputs: tuple = ()

    def callable(self, name: str) -> Callable:
        """The jitted call of program ``name`` (one per name: each new jit wrapper would compile again);
        the chain programs take and give arrays sharded by chain."""
        if name not in self._callables:
            import jax
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            exported = self.exported[name]
            if name in ("init", "steps"):
                mesh = Mesh(np.array(jax.devices()[: self.spec.layout.devices]), ("chain",))
                by_chain = NamedSharding(mesh, PartitionSpec("chain"))
                self._callables[name] = jax.jit(exported.call, in_shardings=by_chain, out_shardings=by_chain)
            else:
                self._callables[name] = jax.jit(exported.call)
        return self._callables[name]


# --------------------------------------------------------------------------------------------------
# Building the programs from a PyMC model (needs PyMC and numpyro)


def shape_dtype(var, point) -> tuple[str, tuple[int, ...], str]:
    value = np.asarray(point[var.name])
    return var.name, tuple(int(s) for s in value.shape), value.dtype.str


def _coords_array(values) -> np.ndarray:
    array = np.asarray(list(values))
    if array.dtype.hasobject:
        raise TypeError("coordinate values of mixed types cannot be stored without pickle")
    return array


def posterior_outputs(model) -> list:
    """The posterior's variables (free and deterministic) as expressions of the value variables."""
    from pymc.util import get_default_varnames

    return list(get_default_varnames(model.unobserved_value_vars, include_transformed=False))


def _model_facts(model) -> ModelFacts:
    import numpyro
    from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants, find_observations
    from pymc.initial_point import make_initial_point_fn

    default_start = make_initial_point_fn(model=model, jitter_rvs=set(), return_transformed=False)(0)
    fallback = make_initial_point_fn(model=model, jitter_rvs=set(), return_transformed=True)(0)
    coords, dims = coords_and_dims_for_inferencedata(model)
    names = [v.name for v in posterior_outputs(model)]
    return ModelFacts(
        free_rvs=tuple(shape_dtype(rv, default_start) for rv in model.free_RVs),
        value_vars=tuple(shape_dtype(v, fallback) for v in model.value_vars),
        posterior_vars=tuple(names),
        observed={k: np.asarray(v) for k, v in (find_observations(model) or {}).items()},
        constant={k: np.asarray(v) for k, v in (find_constants(model) or {}).items()},
        default_start={k: np.asarray(v) for k, v in default_start.items()},
        fallback_point={k: np.asarray(v) for k, v in fallback.items()},
        coords={k: _coords_array(v) for k, v in coords.items()},
        dims={k: list(v) for k, v in dims.items()},
        numpyro_version=numpyro.__version__,
    )


def to_unconstrained_graph(model):
    """(placeholders for the free RVs' constrained values, the value variables computed from them),
    by PyMC's own initial-point expression with every strategy a placeholder."""
    from pymc.initial_point import make_initial_point_expression

    placeholders = [rv.type(name=f"{rv.name}_start") for rv in model.free_RVs]
    outputs = make_initial_point_expression(
        free_rvs=model.free_RVs, rvs_to_transforms=model.rvs_to_transforms,
        initval_strategies=dict(zip(model.free_RVs, placeholders)), jitter_rvs=set(), return_transformed=True)
    return placeholders, outputs


def _chain_program(layout: ChainLayout, one_chain: Callable) -> Callable:
    """``one_chain`` over every chain: a shard per device, vectorised inside a device if it has several."""
    import jax
    from jax.sharding import Mesh, PartitionSpec

    def per_device(*args):
        if layout.per_device == 1:
            out = one_chain(*[a[0] for a in args])
            return jax.tree.map(lambda a: a[None], out)
        return jax.vmap(one_chain)(*args)

    mesh = Mesh(np.array(jax.devices()[: layout.devices]), ("chain",))
    by_chain = PartitionSpec("chain")
    # check_vma=False: numpyro's loops mix per-device and replicated values in ways shard_map's
    # varying-axes check rejects, although every chain is independent.
    return jax.shard_map(per_device, mesh=mesh, in_specs=by_chain, out_specs=by_chain, check_vma=False)


def _field(state, dotted: str):
    for part in dotted.split("."):
        state = getattr(state, part)
    return state


def build_programs(model, spec: ProgramSpec) -> NutsPrograms:
    """Export the programs of ``model`` (a ``pymc.Model``) for ``spec``."""
    import jax
    import jax.numpy as jnp
    from jax import export
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from numpyro.infer import NUTS
    from pymc.sampling.jax import get_jaxified_graph, get_jaxified_logp

    facts = _model_facts(model)
    layout = spec.layout
    potential = get_jaxified_logp(model, negative_logp=False)  # -logp: numpyro's potential energy
    kernel = NUTS(potential_fn=potential, target_accept_prob=spec.target_accept, adapt_step_size=True,
                  adapt_mass_matrix=True, dense_mass=False)

    def init_chain(key, *values):
        return jax.tree.leaves(kernel.init(key, spec.tune, list(values), (), {}))

    def make_steps_chain(treedef):
        def steps_chain(*leaves):
            def step(state, _):
                state = kernel.sample(state, (), {})
                return state, (list(state.z), {name: _field(state, f) for f, name in STATS.items()})

            state, (samples, stats) = jax.lax.scan(step, jax.tree.unflatten(treedef, leaves), None, length=spec.block)
            return jax.tree.leaves(state), samples, stats

        return steps_chain

    placeholders, unconstrained = to_unconstrained_graph(model)
    to_unconstrained = get_jaxified_graph(inputs=placeholders, outputs=unconstrained)
    constrain_one = get_jaxified_graph(inputs=model.value_vars, outputs=posterior_outputs(model))
    pointwise_one = get_jaxified_graph(inputs=model.value_vars,
                                       outputs=model.logp(model.observed_RVs, sum=False))

    def per_draw(fn):
        return lambda *samples: jax.vmap(jax.vmap(fn))(*samples)

    def structs(shapes, lead=(), sharding=None):
        return [jax.ShapeDtypeStruct((*lead, *shape), jnp.dtype(dtype), sharding=sharding)
                for _, shape, dtype in shapes]

    mesh = Mesh(np.array(jax.devices()[: layout.devices]), ("chain",))
    by_chain = NamedSharding(mesh, PartitionSpec("chain"))
    chains, draws = layout.chains, spec.draws
    keys = jax.ShapeDtypeStruct((chains, 2), jnp.uint32, sharding=by_chain)
    init = structs(facts.value_vars, (chains,), by_chain)

    exported = {}
    exported["to_unconstrained"] = export.export(jax.jit(lambda *v: to_unconstrained(*v)))(*structs(facts.free_rvs))
    exported["potential_and_grad"] = export.export(jax.jit(
        lambda *v: jax.value_and_grad(lambda p: potential(p))(list(v))))(*structs(facts.value_vars))
    init_program = jax.jit(_chain_program(layout, init_chain), in_shardings=by_chain, out_shardings=by_chain)
    exported["init"] = export.export(init_program)(keys, *init)
    # The state's structure, to rebuild numpyro's HMCState from the flat arrays inside ``steps``.
    treedef = jax.tree.structure(jax.eval_shape(lambda k, *v: kernel.init(k, spec.tune, list(v), (), {}),
                                                jax.ShapeDtypeStruct((2,), jnp.uint32), *structs(facts.value_vars)))
    steps_program = jax.jit(_chain_program(layout, make_steps_chain(treedef)), in_shardings=by_chain,
                            out_shardings=by_chain)
    exported["steps"] = export.export(steps_program)(
        *[jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=by_chain) for a in exported["init"].out_avals])
    samples = structs(facts.value_vars, (chains, draws))
    exported["constrain"] = export.export(jax.jit(per_draw(constrain_one)))(*samples)
    exported["log_likelihood"] = export.export(jax.jit(per_draw(pointwise_one)))(*samples)
    return NutsPrograms(spec, facts, exported)


def build_data_programs(model, data_names: Sequence[str], spec: ProgramSpec) -> NutsPrograms:
    """Programs of ``model`` (a ``pymc.Model``) whose data containers ``data_names`` are arguments.

    :func:`build_programs` bakes a model's data into its programs, so every data set compiles anew;
    a study samples one model shape for hundreds of data sets, so here the named ``pm.Data``
    containers become each program's first arguments (their values at build time are placeholders
    and only their shapes and dtypes count). ``init`` and ``steps`` take one copy of the data per
    chain (sharded by chain like the rest), the others one copy. NUTS is numpyro's functional
    ``hmc(potential_fn_gen=...)`` with the settings the ``NUTS`` class uses in :func:`build_programs`:
    the potential depends on the data passed to each step, not on a constant.
    """
    import jax
    import jax.numpy as jnp
    from jax import export
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from numpyro.infer.hmc import hmc
    from pymc.sampling.jax import get_jaxified_graph
    from pytensor.graph.replace import graph_replace

    facts = _model_facts(model)
    layout = spec.layout
    containers = [model[name] for name in data_names]
    # Integer data (a coin set's heads) are passed as float64 (exact below 2^53): with an int64 argument
    # XLA's compiled gradient of PyMC's Binomial mixture came out NaN at ordinary points (jitted only;
    # the same graph run op by op, or given float64, or with the data as constants, gave the gradient),
    # and NUTS then rejected every move.
    data_inputs = tuple((name, tuple(int(s) for s in np.shape(c.get_value())),
                         np.dtype(float).str if np.issubdtype(np.asarray(c.get_value()).dtype, np.integer)
                         else np.asarray(c.get_value()).dtype.str)
                        for name, c in zip(data_names, containers))
    n_data = len(containers)
    symbols = [c.type(name=f"{c.name}_input") for c in containers]

    def jaxify(inputs, outputs):
        """JAX function of (*data, *inputs): the containers replaced by symbolic inputs."""
        swapped = graph_replace(list(outputs), dict(zip(containers, symbols)), strict=False)
        return get_jaxified_graph(inputs=[*symbols, *inputs], outputs=swapped)

    neg_logp = jaxify(model.value_vars, [-model.logp()])

    def potential_gen(*data):
        return lambda z: neg_logp(*data, *z)[0]

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
    nuts = dict(step_size=1.0, inverse_mass_matrix=None, adapt_step_size=True, adapt_mass_matrix=True,
                dense_mass=False, target_accept_prob=spec.target_accept, num_steps=None, trajectory_length=None,
                max_tree_depth=10, find_heuristic_step_size=False, forward_mode_differentiation=False,
                regularize_mass_matrix=True)

    def init_state(key, *args):
        # As NUTS.init: one split of the chain's key for the model's initialisation (unused here).
        key, _ = jax.random.split(key)
        return init_kernel(list(args[n_data:]), spec.tune, **nuts, model_args=tuple(args[:n_data]), rng_key=key)

    def init_chain(key, *args):
        return jax.tree.leaves(init_state(key, *args))

    def make_steps_chain(treedef):
        def steps_chain(*args):
            data = tuple(args[:n_data])

            def step(state, _):
                state = sample_kernel(state, model_args=data)
                return state, (list(state.z), {name: _field(state, f) for f, name in STATS.items()})

            start = jax.tree.unflatten(treedef, args[n_data:])
            state, (samples, stats) = jax.lax.scan(step, start, None, length=spec.block)
            return jax.tree.leaves(state), samples, stats

        return steps_chain

    placeholders, unconstrained = to_unconstrained_graph(model)
    to_unconstrained = get_jaxified_graph(inputs=placeholders, outputs=unconstrained)
    constrain_one = jaxify(model.value_vars, posterior_outputs(model))
    pointwise_one = jaxify(model.value_vars, model.logp(model.observed_RVs, sum=False))

    def per_draw(fn):
        def program(*args):
            data = args[:n_data]
            return jax.vmap(jax.vmap(lambda *s: fn(*data, *s)))(*args[n_data:])

        return program

    def structs(shapes, lead=(), sharding=None):
        return [jax.ShapeDtypeStruct((*lead, *shape), jnp.dtype(dtype), sharding=sharding)
                for _, shape, dtype in shapes]

    mesh = Mesh(np.array(jax.devices()[: layout.devices]), ("chain",))
    by_chain = NamedSharding(mesh, PartitionSpec("chain"))
    chains, draws = layout.chains, spec.draws
    keys = jax.ShapeDtypeStruct((chains, 2), jnp.uint32, sharding=by_chain)
    data_one = structs(data_inputs)
    data_by_chain = structs(data_inputs, (chains,), by_chain)
    init = structs(facts.value_vars, (chains,), by_chain)

    exported = {}
    exported["to_unconstrained"] = export.export(jax.jit(lambda *v: to_unconstrained(*v)))(*structs(facts.free_rvs))
    exported["potential_and_grad"] = export.export(jax.jit(
        lambda *a: jax.value_and_grad(lambda p: potential_gen(*a[:n_data])(p))(list(a[n_data:]))))(
        *data_one, *structs(facts.value_vars))
    init_program = jax.jit(_chain_program(layout, init_chain), in_shardings=by_chain, out_shardings=by_chain)
    exported["init"] = export.export(init_program)(keys, *data_by_chain, *init)
    treedef = jax.tree.structure(jax.eval_shape(init_state, jax.ShapeDtypeStruct((2,), jnp.uint32), *data_one,
                                                *structs(facts.value_vars)))
    steps_program = jax.jit(_chain_program(layout, make_steps_chain(treedef)), in_shardings=by_chain,
                            out_shardings=by_chain)
    exported["steps"] = export.export(steps_program)(
        *data_by_chain, *[jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=by_chain) for a in exported["init"].out_avals])
    samples = structs(facts.value_vars, (chains, draws))
    exported["constrain"] = export.export(jax.jit(per_draw(constrain_one)))(*data_one, *samples)
    exported["log_likelihood"] = export.export(jax.jit(per_draw(pointwise_one)))(*data_one, *samples)
    return NutsPrograms(spec, facts, exported, data_inputs=data_inputs)


# --------------------------------------------------------------------------------------------------
# The store: one file per (recipe key, spec), written atomically


def program_key(recipe_key: str, spec: ProgramSpec) -> str:
    import hashlib

    import jax

    text = json.dumps({"recipe": recipe_key, "spec": spec.describe(), "format": FORMAT,
                       "x64": bool(jax.config.jax_enable_x64)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_dir() -> Path:
    """``$EMVSBAYES_PROGRAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/emvsbayes/programs`` (``~/.cache/...``)."""
    if os.environ.get("EMVSBAYES_PROGRAM_CACHE_DIR"):
        return Path(os.environ["EMVSBAYES_PROGRAM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emvsbayes" / "programs"


def _encode_facts(facts: ModelFacts) -> tuple[dict, dict[str, np.ndarray]]:
    header = {"free_rvs": facts.free_rvs, "value_vars": facts.value_vars, "posterior_vars": facts.posterior_vars,
              "dims": facts.dims, "numpyro_version": facts.numpyro_version,
              "observed": sorted(facts.observed), "constant": sorted(facts.constant),
              "default_start": sorted(facts.default_start), "fallback_point": sorted(facts.fallback_point),
              "coords": sorted(facts.coords)}
    arrays = {}
    for group in ("observed", "constant", "default_start", "fallback_point", "coords"):
        for name, value in getattr(facts, group).items():
            arrays[f"{group}/{name}"] = value
    return header, arrays


def _decode_facts(header: dict, arrays) -> ModelFacts:
    def group(name):
        return {key: arrays[f"{name}/{key}"] for key in header[name]}

    def triples(rows):
        return tuple((name, tuple(shape), dtype) for name, shape, dtype in rows)

    return ModelFacts(triples(header["free_rvs"]), triples(header["value_vars"]), tuple(header["posterior_vars"]),
                      group("observed"), group("constant"), group("default_start"), group("fallback_point"),
                      group("coords"), {k: list(v) for k, v in header["dims"].items()}, header["numpyro_version"])


def store(programs: NutsPrograms, key: str, directory: Path | None = None) -> Path:
    """Write ``programs`` under ``key`` (a temporary file renamed into place: readers never see half a file).

    Raises ``TypeError`` or ``OSError`` when they cannot be stored (the caller samples on regardless).
    """
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    header, arrays = _encode_facts(programs.facts)
    header |= {"format": FORMAT, "spec": programs.spec.describe(), "data_inputs": programs.data_inputs}
    return write_programs_file(directory, key, {name: programs.exported[name] for name in PROGRAM_NAMES},
                               header, arrays)


def write_programs_file(directory: Path, key: str, exported: dict, header: dict, arrays: dict) -> Path:
    """``directory/key.npz`` holding the serialised ``exported`` programs (``program/<name>``), the JSON
    ``header`` and ``arrays``; written to a temporary file renamed into place, so readers never see half a
    file (the NUTS programs here and the ladder's, :mod:`emvsbayes.ladder.programs`)."""
    arrays = dict(arrays)
    for name, program in exported.items():
        arrays[f"program/{name}"] = np.frombuffer(bytes(program.serialize()), dtype=np.uint8)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path = directory / f"{key}.npz"
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(key: str, spec: ProgramSpec, directory: Path | None = None) -> NutsPrograms | None:
    """The programs stored under ``key``, or ``None`` if there are none (or they cannot be read)."""
    from jax import export

    path = (directory or cache_dir()) / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            header = json.loads(arrays["header"].tobytes())
            if header.get("format") != FORMAT or header.get("spec") != spec.describe():
                return None
            exported = {name: export.deserialize(bytearray(arrays[f"program/{name}"].tobytes()))
                        for name in PROGRAM_NAMES}
            facts = _decode_facts(header, {name: arrays[name] for name in arrays.files})
            data_inputs = tuple((name, tuple(shape), dtype) for name, shape, dtype in header.get("data_inputs", ()))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file is rebuilt, never fatal
        log.warning("stored sampler %s is unreadable (%s: %s); building it again", path, type(error).__name__, error)
        return None
    return NutsPrograms(spec, facts, exported, data_inputs=data_inputs)


def free_rv_arrays(facts: ModelFacts, start: dict) -> list[np.ndarray]:
    """The free RVs' values of one start, PyMC's defaults for any it leaves out, in the programs' order."""
    unknown = set(start) - {name for name, _, _ in facts.free_rvs}
    if unknown:
        raise ValueError(f"start values for unknown variables {sorted(unknown)}")
    return [np.asarray(start.get(name, facts.default_start[name]), dtype=dtype).reshape(shape)
            for name, shape, dtype in facts.free_rvs]


def stacked_values(points: Sequence[Sequence[np.ndarray]], chains: int) -> list[np.ndarray]:
    """Chain-major arrays (one per value variable) from per-start points, cycled over ``chains``."""
    chosen = [points[c % len(points)] for c in range(chains)]
    return [np.stack([p[i] for p in chosen]) for i in range(len(points[0]))]
