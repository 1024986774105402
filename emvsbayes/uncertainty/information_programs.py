"""The observed-information function of a family structure as an exported JAX program kept on disk.

Why: :func:`emvsbayes.uncertainty.information.compile_information` compiles a family's symbolic
log-likelihood, its gradient, Hessian, natural variables and their Jacobian with PyTensor in every process:
importing PyTensor and compiling took ~0.6-1 s of a warm lecture run whose sampling took 0.3 s, and ~3 s
per Dask worker of a study. Here the same PyTensor graph (the family's one definition of its
log-likelihood, differentiated symbolically by PyTensor as before) is turned into JAX by PyTensor's JAX
linker, exported once per family structure (:class:`InformationRecipe`: the graph builder and its
arguments, e.g. K and the weights' kind) with a symbolic number of rows, and stored beside the sampler
programs (:func:`emvsbayes.sampling.programs.cache_dir`). A later process with the same key deserialises
it and needs only JAX, which a run imports anyway to sample.

The program is ``(phi (P,), *data (n, ...)) -> (loglik, gradient (P,), Hessian (P, P), natural values (M,),
Jacobian (M, P))``; the data's first axis (rows, sets, counts) is symbolic, so one program serves every data
set and bootstrap replicate of a structure (XLA compiles it once per row count, through JAX's persistent
cache). JAX evaluates PyTensor's derivative graph op for op, so the numbers differ from PyTensor's Python
linker only in rounding (measured ~1e-14 relative; tests/test_information_programs.py holds them to 1e-10).

A hidden Markov model's forward recursion is a PyTensor ``scan``, whose derivative graphs do not export with a
symbolic length: its graph gives the recursion's PyTensor inputs (``InformationGraph.pieces``) and a JAX form
of the recursion (``finish``), and JAX takes the derivatives (agreeing with PyTensor's to ~1e-14).

Fallbacks, both to the PyTensor route of today: a structure whose graph cannot be exported (an op
without a JAX implementation, a shape JAX cannot make symbolic) is compiled by
:func:`~emvsbayes.uncertainty.information.compile_information` in every process, as before; and an
evaluation that gives a non-finite number at a finite ``phi`` is repeated by PyTensor, because XLA:CPU's
compiled gradients of some mixture graphs came out NaN at ordinary points where the unjitted ones did not
(:mod:`emvsbayes.ladder.programs`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "InformationGraph", "InformationProgram", "InformationRecipe", "information_program"]

#: Bump when the layout of a stored program changes.
FORMAT = 1
OUTPUTS = ("loglik", "gradient", "hessian", "natural", "jacobian")


@dataclass(frozen=True, slots=True)
class InformationGraph:
    """A family's symbolic log-likelihood as a graph builder returns it.

    ``phi``: the unconstrained coordinates, a PyTensor vector of static length P (JAX needs the shapes the
    derivative graph computes from it to be constants); ``data``: the data inputs, each with the rows on its
    first axis (the same count for all; its other axes static); ``loglik``: the observed-data
    log-likelihood; ``natural``: the reported variables flattened in the order of ``variables()``, or
    ``None`` (the program then gives loglik, gradient and Hessian only).

    ``pieces`` and ``finish``: for a log-likelihood whose PyTensor graph JAX cannot take whole (a hidden Markov
    model's forward recursion is a PyTensor ``scan``, whose derivative graphs do not export with a symbolic
    length), PyTensor expressions of ``phi`` and the data and a JAX function of them that gives the same
    log-likelihood (``finish(*pieces)``); the program then takes the derivatives with JAX (``jax.grad``, the
    Hessian as forward mode over reverse mode) instead of evaluating PyTensor's. ``loglik`` stays the
    PyTensor route, for the fallback.
    """

    phi: object
    data: tuple
    loglik: object
    natural: object = None
    pieces: tuple = ()
    finish: Callable | None = None
    #: The fewest rows the exported program is traced for (a series' recursion needs two); fewer are evaluated
    #: by PyTensor.
    min_rows: int = 1


@dataclass(frozen=True, eq=False)
class InformationRecipe:
    """``build(*args) -> InformationGraph``: ``build`` a module-level function whose graph depends only on
    its arguments (and emvsbayes's code and library versions, which :attr:`key` includes)."""

    build: Callable[..., InformationGraph]
    args: tuple = ()

    @functools.cached_property
    def key(self) -> str:
        import jax

        from emvsbayes.sampling.recipe import code_version, library_versions

        text = json.dumps({"build": f"{self.build.__module__}.{self.build.__qualname__}", "args": repr(self.args),
                           "format": FORMAT, "code": code_version(), "libraries": library_versions(),
                           "x64": bool(jax.config.jax_enable_x64)}, sort_keys=True)
        return "information-" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class InformationProgram:
    """``program(phi, *data)`` -> the tuple of :data:`OUTPUTS` (the last two only when the graph has natural
    variables) as float arrays; ``how`` is ``"loaded"``, ``"built"`` or ``"pytensor"`` (not exportable)."""

    recipe: InformationRecipe
    how: str
    exported: object = None
    _calls: dict = field(default_factory=dict, repr=False, compare=False)

    def __call__(self, phi, *data) -> tuple[np.ndarray, ...]:
        phi = np.asarray(phi, dtype=float)
        data = tuple(np.asarray(d, dtype=float) for d in data)
        if self.exported is None:
            return self._pytensor(phi, *data)
        if "jit" not in self._calls:
            import jax

            self._calls["jit"] = jax.jit(self.exported.call)
        try:
            out = tuple(np.asarray(value, dtype=float) for value in self._calls["jit"](phi, *data))
        except ValueError as error:  # fewer rows than the program's constraint (a series of one point)
            log.debug("information program %s refused its arguments (%s); PyTensor evaluates them", self.recipe.key, error)
            return self._pytensor(phi, *data)
        if np.all(np.isfinite(phi)) and not all(np.all(np.isfinite(value)) for value in out):
            log.debug("information program %s gave a non-finite value; PyTensor evaluates it", self.recipe.key)
            return self._pytensor(phi, *data)
        return out

    def summed_over_rows(self, phi, *data, fixed_per_entry: float = 0.0,
                         budget: int | None = None) -> tuple[np.ndarray, ...]:
        """The outputs for a log-likelihood that is a sum over the rows of ``data`` (independent observations),
        evaluated a block of rows at a time where all at once would hold more than ``budget`` bytes
        (:func:`evaluation_budget`): the log-likelihood, gradient and Hessian are the blocks' sums; the natural
        values and their Jacobian do not depend on the data. Raises :class:`InformationTooLarge` where one row
        is already too many. (A Gaussian mixture of 600 rows x 20 columns, full covariances, asked for several
        GB at once; of 60 x 50 for 19.8 GB, and in a notebook the machine ran out of memory.)"""
        from emvsbayes.uncertainty.information import InformationTooLarge, rows_per_evaluation, too_large

        n, p = (len(data[0]) if data else 0), int(np.size(phi))
        reason = too_large(p, fixed_per_entry, budget)
        if reason:
            raise InformationTooLarge(reason)
        per_call = rows_per_evaluation(p, fixed_per_entry, budget)
        if n <= per_call:
            return self(phi, *data)
        blocks = [self(phi, *(d[start:start + per_call] for d in data)) for start in range(0, n, per_call)]
        summed = tuple(np.sum([block[i] for block in blocks], axis=0) for i in range(3))
        return summed + tuple(blocks[0][3:])

    def _pytensor(self, phi, *data) -> tuple[np.ndarray, ...]:
        if "pytensor" not in self._calls:
            self._calls["pytensor"] = compile_pytensor(self.recipe)
        return tuple(np.asarray(value, dtype=float) for value in self._calls["pytensor"](phi, *data))


def compile_pytensor(recipe: InformationRecipe) -> Callable:
    """The PyTensor route of today: the graph compiled by :func:`~emvsbayes.uncertainty.information.compile_information`."""
    from emvsbayes.uncertainty.information import compile_information

    graph = recipe.build(*recipe.args)
    return compile_information(graph.phi, list(graph.data), graph.loglik, graph.natural)


# --------------------------------------------------------------------------------------------------
# Building (needs PyTensor)


def _outputs(graph: InformationGraph) -> list:
    from pytensor.gradient import grad, jacobian

    gradient = grad(graph.loglik, graph.phi)
    outputs = [graph.loglik, gradient, jacobian(gradient, graph.phi, vectorize=True)]
    if graph.natural is not None:
        outputs += [graph.natural, jacobian(graph.natural, graph.phi, vectorize=True)]
    return outputs


def _jaxify(inputs: list, outputs: list) -> Callable:
    # As pymc.sampling.jax.get_jaxified_graph, without importing PyMC: PyTensor's JAX rewrites, then the
    # graph as a JAX function.
    from pytensor.compile.mode import JAX
    from pytensor.graph.fg import FunctionGraph
    from pytensor.link.jax.dispatch import jax_funcify

    fgraph = FunctionGraph(inputs=inputs, outputs=outputs, clone=True)
    JAX.optimizer.rewrite(fgraph)
    return jax_funcify(fgraph)


def _jax_derivatives(graph: InformationGraph) -> Callable:
    """(phi, *data) -> outputs, the derivatives taken by JAX of ``graph.finish`` over its jaxified pieces."""
    import jax

    pieces = _jaxify([graph.phi, *graph.data], list(graph.pieces))
    natural = _jaxify([graph.phi], [graph.natural]) if graph.natural is not None else None

    def loglik(phi, *data):
        return graph.finish(*pieces(phi, *data))

    def outputs(phi, *data):
        value, gradient = jax.value_and_grad(loglik)(phi, *data)
        out = [value, gradient, jax.jacfwd(jax.grad(loglik))(phi, *data)]
        if natural is not None:
            out += [natural(phi)[0], jax.jacfwd(lambda p: natural(p)[0])(phi)]
        return out

    return outputs


def build_program(recipe: InformationRecipe):
    """The exported program of ``recipe`` (a ``jax.export.Exported``); raises if it cannot be exported."""
    import warnings

    import jax
    import jax.numpy as jnp
    from jax import export

    graph = recipe.build(*recipe.args)
    size = graph.phi.type.shape
    if len(size) != 1 or size[0] is None:
        raise ValueError("phi must be a vector of static length")
    with warnings.catch_warnings():
        # PyTensor's JAX linker warns that it drops shape assertions, which JAX's tracing checks anyway.
        warnings.simplefilter("ignore", UserWarning)
        fn = _jaxify([graph.phi, *graph.data], _outputs(graph)) if graph.finish is None else _jax_derivatives(graph)
    specs = [jax.ShapeDtypeStruct(size, jnp.float64)]
    # one symbol n, the rows, shared by every data input
    scope = export.SymbolicScope([f"n >= {graph.min_rows}"] if graph.min_rows > 1 else [])
    for var in graph.data:
        rest = var.type.shape[1:]
        if None in rest:
            raise ValueError(f"data input {var.name} must have static shape beyond its rows, got {var.type.shape}")
        dims = ", ".join(["n", *map(str, rest)])
        specs.append(jax.ShapeDtypeStruct(export.symbolic_shape(dims, scope=scope), jnp.float64))

    def program(*args):
        return tuple(fn(*args))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return export.export(jax.jit(program))(*specs)


# --------------------------------------------------------------------------------------------------
# The store, beside the sampler programs


def store(exported, key: str, directory: Path | None = None) -> Path:
    from emvsbayes.sampling.programs import cache_dir, write_programs_file

    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return write_programs_file(directory, key, {"information": exported}, {"format": FORMAT}, {})


def load(key: str, directory: Path | None = None):
    """The exported program stored under ``key``, or ``None`` if there is none (or it cannot be read)."""
    from jax import export

    from emvsbayes.sampling.programs import cache_dir

    path = (directory or cache_dir()) / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if json.loads(arrays["header"].tobytes()).get("format") != FORMAT:
                return None
            return export.deserialize(bytearray(arrays["program/information"].tobytes()))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file is rebuilt, never fatal
        log.warning("stored information program %s is unreadable (%s: %s); building it again", path,
                    type(error).__name__, error)
        return None


_PROGRAMS: dict[str, InformationProgram] = {}


def information_program(recipe: InformationRecipe) -> InformationProgram:
    """The observed-information function of ``recipe``'s structure: loaded from the store, else built from
    its PyTensor graph and stored, else (not exportable) PyTensor's compiled function. One per key and
    process."""
    from emvsbayes.sampling import configure_jax

    configure_jax()
    key = recipe.key
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    exported = load(key)
    how = "loaded"
    if exported is None:
        try:
            exported = build_program(recipe)
            how = "built"
        except Exception as error:  # noqa: BLE001 - any op or shape JAX cannot take: PyTensor as before
            log.info("information program of %s not exportable (%s: %s); compiled by PyTensor",
                     recipe.build.__qualname__, type(error).__name__, error)
            exported, how = None, "pytensor"
        else:
            try:
                store(exported, key)
            except (OSError, TypeError) as error:
                log.warning("information program not stored (%s); the next run builds it again", error)
    program = InformationProgram(recipe, how, exported)
    _PROGRAMS[key] = program
    return program
