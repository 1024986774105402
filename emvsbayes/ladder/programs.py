"""The ladder's Laplace and ADVI rungs as exported JAX programs kept on disk, like the NUTS programs.

Why: the PyMC route (:mod:`emvsbayes.ladder.laplace`, :mod:`emvsbayes.ladder.vi`) imports PyMC and
compiles five PyTensor functions (log posterior, gradient, constrain, ADVI's step, ADVI's moments) in
every run: 5-15 s of a lecture run whose sampling takes a tenth of a second. Here the same model's
log posterior (Jacobian of the transforms included), its transforms and ADVI's optimiser are exported
once per model recipe key (:class:`emvsbayes.sampling.recipe.ModelRecipe`) with ``jax.export`` and
stored beside the NUTS programs; a later run with the same key deserialises them and needs only JAX.

The programs (``s`` a symbolic batch size: one program serves any number of draws):

- ``to_unconstrained(*free RV values) -> phi (P,)``: PyMC's transforms of one start, flattened;
- ``logp_grad(phi (P,)) -> (log p, d log p / d phi)``;
- ``logp_batch(phi (s, P)) -> (s,)``: PSIS's importance ratios;
- ``constrain(phi (s, P)) -> posterior variables (s, ...)``;
- ``advi_meanfield``, ``advi_fullrank``: ``(seed, mu0 (P,)) -> (mean, cov, loss (n_iter,), recorded
  means, recorded sds)``, ADVI exactly as PyMC's ``pm.fit`` runs it with :func:`emvsbayes.ladder.vi.fit_vi`'s
  settings: q's parametrisation (mean-field sd = softplus(rho), rho = 0 at the start; full rank
  L = tril with a softplus diagonal, L_tril = I at the start), the Monte Carlo KL estimate of
  ``obj_n_mc`` draws per step (log q - log p), and Adam with PyMC's ``pm.adam`` update. Only the
  random stream differs (JAX's, not PyTensor's), so the answer agrees with PyMC's within q's jitter.

Laplace's mode search stays :func:`emvsbayes.ladder.laplace.find_mode` (SciPy's BFGS, Newton polish,
central differences of the gradient), given these programs' log posterior and gradient instead of
PyTensor's: the same algorithm on the same function.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Bump when the layout of a stored set changes.
FORMAT = 2  # 2: reverse-mode gradients (forward mode only as the fallback)
BASE_PROGRAMS = ("to_unconstrained", "logp_grad", "logp_batch", "constrain")


@dataclass(frozen=True, slots=True)
class AdviSettings:
    """What fixes an ADVI program besides the model: ``methods``, ``n_iter`` steps of Adam with
    ``learning_rate``, ``n_mc`` Monte Carlo draws per gradient, a record every ``jitter_every`` steps of
    the last quarter (:data:`emvsbayes.ladder.vi.JITTER_EVERY`)."""

    methods: tuple[str, ...]
    n_iter: int
    learning_rate: float = 0.005
    n_mc: int = 10
    jitter_every: int = 10

    def describe(self) -> dict:
        return {"methods": list(self.methods), "n_iter": self.n_iter, "learning_rate": self.learning_rate,
                "n_mc": self.n_mc, "jitter_every": self.jitter_every}

    @property
    def recorded_steps(self) -> np.ndarray:
        """The 0-based steps after which q's mean and sd are recorded (as ``fit_vi``'s callback does)."""
        steps = np.arange(self.n_iter)
        return steps[(steps >= self.n_iter - self.n_iter // 4) & (steps % self.jitter_every == 0)]


@dataclass(frozen=True, slots=True)
class LadderFacts:
    """What the rungs need to know of the model without the model: ``value_vars`` (name, shape, size,
    dtype) in the flat vector's order (PyMC's ``point_map_info`` layout); ``free_rvs`` (name, shape,
    dtype) of the constrained starts; ``default_start`` PyMC's constrained initial values; ``outputs`` the
    posterior variables ``constrain`` gives, in order."""

    value_vars: tuple
    free_rvs: tuple
    default_start: dict
    outputs: tuple


@dataclass(frozen=True)
class LadderPrograms:
    facts: LadderFacts
    settings: AdviSettings
    exported: dict
    _callables: dict = field(default_factory=dict, repr=False, compare=False)

    def callable(self, name: str) -> Callable:
        if name not in self._callables:
            import jax

            self._callables[name] = jax.jit(self.exported[name].call)
        return self._callables[name]

    @property
    def point_map_info(self) -> tuple:
        return self.facts.value_vars

    @property
    def size(self) -> int:
        return int(sum(size for _, _, size, _ in self.facts.value_vars))

    def unconstrained_start(self, start: dict | None) -> np.ndarray:
        """phi (P,) of constrained ``start`` values, PyMC's defaults for any it leaves out."""
        start = dict(start or {})
        unknown = set(start) - {name for name, _, _ in self.facts.free_rvs}
        if unknown:
            raise ValueError(f"start values for unknown variables {sorted(unknown)}")
        values = [np.asarray(start.get(name, self.facts.default_start[name]), dtype=dtype).reshape(shape)
                  for name, shape, dtype in self.facts.free_rvs]
        return np.asarray(self.callable("to_unconstrained")(*values), dtype=float)

    def logp(self, phi) -> float:
        return float(self.callable("logp_grad")(np.asarray(phi, dtype=float))[0])

    def grad(self, phi) -> np.ndarray:
        return np.asarray(self.callable("logp_grad")(np.asarray(phi, dtype=float))[1], dtype=float)

    def logp_batch(self, phi) -> np.ndarray:
        return np.asarray(self.callable("logp_batch")(np.atleast_2d(np.asarray(phi, dtype=float))), dtype=float)

    def constrained_values(self, phi) -> dict[str, np.ndarray]:
        out = self.callable("constrain")(np.atleast_2d(np.asarray(phi, dtype=float)))
        return {name: np.asarray(value) for name, value in zip(self.facts.outputs, out)}


# --------------------------------------------------------------------------------------------------
# Building (needs PyMC)


def _flat_layout(model) -> tuple:
    from pymc.blocking import DictToArrayBijection
    from pymc.initial_point import make_initial_point_fn

    point = make_initial_point_fn(model=model, jitter_rvs=set(), return_transformed=True)(0)
    raveled = DictToArrayBijection.map({v.name: point[v.name] for v in model.value_vars})
    return tuple((name, tuple(int(s) for s in shape), int(size), np.dtype(dtype).str)
                 for name, shape, size, dtype in raveled.point_map_info)


def _unflatten(layout, phi):
    parts, offset = [], 0
    for _, shape, size, _ in layout:
        parts.append(phi[offset:offset + size].reshape(shape))
        offset += size
    return parts


def reverse_mode_with_forward_fallback(logp_plain: Callable) -> tuple[Callable, Callable]:
    """(``logp_batch(phis (s, P)) -> (s,)`` whose derivative is this rule, ``value_and_grad_batch(phis) ->
    ((s,), (s, P))``): the gradients of a batch of points in reverse mode, the whole batch again in forward
    mode (P directional derivatives per point) only when a reverse-mode gradient came out non-finite.

    Why: reverse mode of PyMC's jaxified coin-mixture log posterior came out NaN at ordinary points once
    jitted (w's simplex coordinate, at 1.2755, -2.6549, 0.2202; forward mode and the unjitted reverse mode
    gave the gradient), so every derivative went through forward mode. But forward mode costs P
    evaluations of the log posterior per point, and more: on Old Faithful's full-covariance mixture
    (P = 11) ``jacfwd`` of one point took 17 ms against 0.15 ms for ``grad``: 3-235 ms per ADVI step of
    10 draws against 0.3-0.5 ms, up to minutes per 3,000-step rung (benchmarks/README.md). The test is on
    the batch, outside any ``vmap``, so ``lax.cond`` runs one branch: the forward pass costs nothing while
    reverse mode is finite.
    """
    import jax
    import jax.numpy as jnp

    def value_and_grad_batch(phis):
        values, grads = jax.vmap(jax.value_and_grad(logp_plain))(phis)
        grads = jax.lax.cond(jnp.all(jnp.isfinite(grads)), lambda: grads,
                             lambda: jax.vmap(jax.jacfwd(logp_plain))(phis))
        return values, grads

    @jax.custom_vjp
    def logp_batch(phis):
        return jax.vmap(logp_plain)(phis)

    logp_batch.defvjp(value_and_grad_batch, lambda grads, cotangent: (cotangent[:, None] * grads,))
    return logp_batch, value_and_grad_batch


def advi_program(logp_batch: Callable, method: str, size: int, settings: AdviSettings) -> Callable:
    """``(seed, mu0) -> (mean, cov, loss per step, recorded means, recorded sds)`` of ADVI on ``logp_batch``
    (``(n_mc, P) -> (n_mc,)``, differentiable)."""
    import jax
    import jax.numpy as jnp

    n_mc, lr = settings.n_mc, settings.learning_rate
    beta1, beta2, epsilon = 0.9, 0.999, 1e-8  # pm.adam's defaults
    rows, cols = np.tril_indices(size)
    diagonal_index = np.arange(size)
    recorded = settings.recorded_steps

    def moments(params):
        mu, raw = params
        if method == "meanfield":
            sd = jax.nn.softplus(raw)
            return mu, jnp.diag(sd**2), sd, jnp.log(sd)
        chol = jnp.zeros((size, size)).at[rows, cols].set(raw)
        chol = chol.at[diagonal_index, diagonal_index].set(jax.nn.softplus(jnp.diagonal(chol)))
        cov = chol @ chol.T
        return mu, cov, jnp.sqrt(jnp.diagonal(cov)), jnp.log(jnp.diagonal(chol))

    def draw(params, noise):
        mu, raw = params
        if method == "meanfield":
            return mu + jax.nn.softplus(raw) * noise
        chol = jnp.zeros((size, size)).at[rows, cols].set(raw)
        chol = chol.at[diagonal_index, diagonal_index].set(jax.nn.softplus(jnp.diagonal(chol)))
        return mu + noise @ chol.T

    def loss(params, noise):
        # PyMC's KL operator: mean over the draws of log q(z) - log p(z), log q through the noise z0.
        _, _, _, log_sd = moments(params)
        z = draw(params, noise)
        log_q = jnp.sum(-0.5 * noise**2 - 0.5 * jnp.log(2 * jnp.pi) - log_sd, axis=1)
        log_p = logp_batch(z)
        return jnp.mean(log_q - log_p)

    value_and_grad = jax.value_and_grad(loss)

    def program(seed, mu0):
        raw0 = (jnp.zeros(size) if method == "meanfield"
                else jnp.asarray(np.eye(size)[rows, cols], dtype=mu0.dtype))
        params = (mu0, raw0)
        zeros = jax.tree.map(jnp.zeros_like, params)

        def step(carry, inputs):
            params, m, v = carry
            t, key = inputs
            noise = jax.random.normal(key, (n_mc, size), dtype=mu0.dtype)
            value, grads = value_and_grad(params, noise)
            a_t = lr * jnp.sqrt(1 - beta2**t) / (1 - beta1**t)
            m = jax.tree.map(lambda m_, g: beta1 * m_ + (1 - beta1) * g, m, grads)
            v = jax.tree.map(lambda v_, g: beta2 * v_ + (1 - beta2) * g**2, v, grads)
            params = jax.tree.map(lambda p, m_, v_: p - a_t * m_ / (jnp.sqrt(v_) + epsilon), params, m, v)
            mean, _, sd, _ = moments(params)
            return (params, m, v), (value, mean, sd)

        keys = jax.random.split(jax.random.PRNGKey(seed), settings.n_iter)
        steps = jnp.arange(1, settings.n_iter + 1, dtype=mu0.dtype)
        (params, _, _), (losses, means, sds) = jax.lax.scan(step, (params, zeros, zeros), (steps, keys))
        mean, cov, _, _ = moments(params)
        return mean, cov, losses, means[recorded], sds[recorded]

    return program


def build_programs(model, settings: AdviSettings) -> LadderPrograms:
    """Export the ladder's programs of ``model`` (a ``pymc.Model``)."""
    import jax
    import jax.numpy as jnp
    from jax import export
    from pymc.initial_point import make_initial_point_fn
    from pymc.sampling.jax import get_jaxified_graph

    from emvsbayes.sampling.programs import posterior_outputs, shape_dtype, to_unconstrained_graph

    layout = _flat_layout(model)
    size = int(sum(entry[2] for entry in layout))
    default_start = make_initial_point_fn(model=model, jitter_rvs=set(), return_transformed=False)(0)
    outputs = posterior_outputs(model)
    facts = LadderFacts(layout, tuple(shape_dtype(rv, default_start) for rv in model.free_RVs),
                        {k: np.asarray(v) for k, v in default_start.items()}, tuple(v.name for v in outputs))
    logp_graph = get_jaxified_graph(inputs=model.value_vars, outputs=[model.logp(jacobian=True)])
    constrain_graph = get_jaxified_graph(inputs=model.value_vars, outputs=outputs)
    placeholders, unconstrained = to_unconstrained_graph(model)
    to_unconstrained_graph = get_jaxified_graph(inputs=placeholders, outputs=unconstrained)

    def logp_plain(phi):
        return logp_graph(*_unflatten(layout, phi))[0]

    logp_batch, value_and_grad_batch = reverse_mode_with_forward_fallback(logp_plain)

    def logp_and_grad(phi):
        values, grads = value_and_grad_batch(phi[None])
        return values[0], grads[0]

    def constrain_flat(phi):
        return tuple(constrain_graph(*_unflatten(layout, phi)))

    def to_unconstrained(*values):
        return jnp.concatenate([jnp.ravel(v) for v in to_unconstrained_graph(*values)])

    one = jax.ShapeDtypeStruct((size,), jnp.float64)
    batch = jax.ShapeDtypeStruct(export.symbolic_shape(f"s, {size}"), jnp.float64)
    free = [jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)) for _, shape, dtype in facts.free_rvs]
    exported = {
        "to_unconstrained": export.export(jax.jit(to_unconstrained))(*free),
        "logp_grad": export.export(jax.jit(logp_and_grad))(one),
        "logp_batch": export.export(jax.jit(logp_batch))(batch),
        "constrain": export.export(jax.jit(jax.vmap(constrain_flat)))(batch),
    }
    seed = jax.ShapeDtypeStruct((), jnp.uint32)
    for method in settings.methods:
        exported[f"advi_{method}"] = export.export(jax.jit(advi_program(logp_batch, method, size, settings)))(seed, one)
    return LadderPrograms(facts, settings, exported)


# --------------------------------------------------------------------------------------------------
# The store, beside the NUTS programs


def program_key(recipe_key: str, settings: AdviSettings) -> str:
    import hashlib

    text = json.dumps({"recipe": recipe_key, "ladder": settings.describe(), "format": FORMAT}, sort_keys=True)
    return "ladder-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _program_names(settings: AdviSettings) -> tuple[str, ...]:
    return (*BASE_PROGRAMS, *(f"advi_{m}" for m in settings.methods))


def store(programs: LadderPrograms, key: str, directory: Path | None = None) -> Path:
    """Write ``programs`` under ``key`` (a temporary file renamed into place)."""
    from emvsbayes.sampling.programs import cache_dir, write_programs_file

    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    facts = programs.facts
    header = {"format": FORMAT, "settings": programs.settings.describe(), "value_vars": facts.value_vars,
              "free_rvs": facts.free_rvs, "outputs": facts.outputs, "default_start": sorted(facts.default_start)}
    arrays = {f"default_start/{name}": value for name, value in facts.default_start.items()}
    return write_programs_file(directory, key, {name: programs.exported[name]
                                                for name in _program_names(programs.settings)}, header, arrays)


def load(key: str, settings: AdviSettings, directory: Path | None = None) -> LadderPrograms | None:
    """The programs stored under ``key``, or ``None`` if there are none (or they cannot be read)."""
    from jax import export

    from emvsbayes.sampling.programs import cache_dir

    path = (directory or cache_dir()) / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            header = json.loads(arrays["header"].tobytes())
            if header.get("format") != FORMAT or header.get("settings") != settings.describe():
                return None
            exported = {name: export.deserialize(bytearray(arrays[f"program/{name}"].tobytes()))
                        for name in _program_names(settings)}
            facts = LadderFacts(tuple((n, tuple(s), int(z), d) for n, s, z, d in header["value_vars"]),
                                tuple((n, tuple(s), d) for n, s, d in header["free_rvs"]),
                                {name: arrays[f"default_start/{name}"] for name in header["default_start"]},
                                tuple(header["outputs"]))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file is rebuilt, never fatal
        log.warning("stored ladder programs %s are unreadable (%s: %s); building them again", path,
                    type(error).__name__, error)
        return None
    return LadderPrograms(facts, settings, exported)


def obtain(recipe, settings: AdviSettings) -> tuple[LadderPrograms, str]:
    """(the programs of ``recipe``'s model, ``"loaded"`` or ``"built"``); stored when built and the recipe
    has a key."""
    from emvsbayes.sampling import configure_jax

    configure_jax()
    key = program_key(recipe.key, settings) if recipe.key is not None else None
    if key is not None:
        loaded = load(key, settings)
        if loaded is not None:
            return loaded, "loaded"
    import pytensor

    with pytensor.config.change_flags(cxx=""):  # PyMC's initial-point functions: no C compile
        built = build_programs(recipe.model(), settings)
    if key is not None:
        try:
            store(built, key)
        except (OSError, TypeError) as error:
            log.warning("ladder programs not stored (%s); the next run builds them again", error)
    return built, "built"
