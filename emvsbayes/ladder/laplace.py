"""Laplace approximation of a PyMC model's posterior at its mode, on the unconstrained scale.

The log posterior of the model's value variables (every constrained parameter mapped to the real line
by the model's own transform: log-odds for a probability, the simplex transform for weights, ...) is
maximised from a given start, Jacobian of the transforms included, so the mode found is the mode of
the density the sampler explores. At that mode phi*, with H the Hessian of the log posterior, the
approximation is phi ~ N(phi*, (-H)^-1); draws of phi are mapped back through the transforms, so a
probability drawn this way lies in (0, 1) and weights sum to one.

Note what the mode is: the mode on the unconstrained scale, not the mode of the constrained density
(for theta ~ Beta(A, B) the log-odds mode is theta = A / (A + B), not (A - 1) / (A + B - 2)).

Arrays in and out are numpy; :func:`to_dataset` names the axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ASSUMES", "LaplaceFit", "constrained_values", "find_mode", "laplace", "laplace_draws", "laplace_programs",
           "to_dataset", "unconstrained_start"]

#: What this rung assumes, one sentence for the report.
ASSUMES = ("Laplace: the posterior is one Gaussian on the unconstrained scale, centred at the mode with the "
           "curvature there (one labelling, no skew, no other modes).")

#: Newton steps that polish the optimiser's answer (each uses the exact Hessian): BFGS stops at a
#: gradient of ~1e-6, Newton then reaches the mode to rounding in one or two steps.
NEWTON_STEPS = 8


@dataclass(frozen=True, slots=True)
class LaplaceFit:
    """The mode and the Gaussian around it.

    ``value_names`` the model's value variables (transformed names, e.g. ``theta_logodds__``) in the
    order of the flat vector; ``point_map_info`` how the flat vector splits into them (PyMC's
    ``DictToArrayBijection``); ``mode`` (P,) phi*; ``log_posterior`` log p(phi*, y) (Jacobian
    included, up to PyMC's constant); ``hessian`` (P, P) of the log posterior at phi*; ``cov`` (P, P)
    (-H)^-1; ``gradient_norm`` max |d log p / d phi| at phi*; ``message`` the optimiser's.
    """

    value_names: tuple[str, ...]
    point_map_info: tuple
    mode: np.ndarray
    log_posterior: float
    hessian: np.ndarray
    cov: np.ndarray
    gradient_norm: float
    message: str

    def point(self, phi: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The flat vector ``phi`` (default the mode) as PyMC's point dict of value variables."""
        from pymc.blocking import DictToArrayBijection, RaveledVars

        phi = self.mode if phi is None else np.asarray(phi, dtype=float)
        return DictToArrayBijection.rmap(RaveledVars(phi, self.point_map_info))


def unconstrained_start(model, initvals: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The model's initial point (value variables) with constrained ``initvals`` (e.g. ``{"theta": ...}``,
    what a family's ``initvals`` returns) put in; no jitter."""
    from pymc.initial_point import make_initial_point_fn

    fn = make_initial_point_fn(model=model, overrides=dict(initvals) if initvals else None, jitter_rvs=set(),
                               return_transformed=True)
    return fn(0)


#: Relative step of the central differences of the gradient: about the cube root of machine epsilon, which
#: balances truncation (step^2) against rounding (epsilon / step).
DIFFERENCE_STEP = 6e-6


def laplace(model, start: dict[str, Any] | None = None, *, gtol: float = 1e-8, hessian: str = "differences"
            ) -> LaplaceFit:
    """Find the posterior mode of ``model`` on the unconstrained scale from ``start`` and the Hessian there.

    Parameters
    ----------
    model
        A ``pymc.Model``.
    start
        Constrained starting values by variable name (e.g. an EM answer through the family's
        ``initvals``); the model's defaults for any not given. Mixtures have one mode per labelling:
        the start picks the one found.
    gtol
        BFGS's gradient tolerance before the Newton polish.
    hessian
        ``"differences"``: central differences of PyMC's exact gradient (relative error about 1e-9; a
        mixture's symbolic Hessian takes PyTensor 4x the gradient's compile time, 10 s against 2.3 s
        warm for a two-component Gaussian mixture, minutes cold), or ``"exact"``: PyMC's ``d2logp``.

    Raises
    ------
    ValueError
        If the log posterior is not finite at the start, or the Hessian at the point found is not
        negative definite (a saddle, or a mode on a boundary of the unconstrained space: no Gaussian
        approximation exists there).
    """
    from pymc.blocking import DictToArrayBijection, RaveledVars

    value_vars = list(model.value_vars)
    point = unconstrained_start(model, start)
    raveled = DictToArrayBijection.map({v.name: point[v.name] for v in value_vars})
    info = raveled.point_map_info
    logp_fn = model.compile_logp(vars=None, jacobian=True)
    if hessian not in ("differences", "exact"):
        raise ValueError(f"hessian = {hessian!r}: use 'differences' or 'exact'")
    # vars are the random variables; the derivatives are with respect to their value variables, in order.
    dlogp_fn = model.compile_dlogp(vars=list(model.free_RVs), jacobian=True)
    d2logp_fn = (model.compile_d2logp(vars=list(model.free_RVs), jacobian=True, negate_output=False)
                 if hessian == "exact" else None)

    def as_point(phi):
        return DictToArrayBijection.rmap(RaveledVars(np.asarray(phi, dtype=float), info))

    def logp(phi) -> float:
        return float(logp_fn(as_point(phi)))

    def grad(phi) -> np.ndarray:
        return np.asarray(dlogp_fn(as_point(phi)), dtype=float).ravel()

    def exact_hessian(phi) -> np.ndarray:
        return np.atleast_2d(np.asarray(d2logp_fn(as_point(phi)), dtype=float))

    hess = exact_hessian if d2logp_fn is not None else None

    phi0 = np.asarray(raveled.data, dtype=float)
    phi, h, cov, message = find_mode(logp, grad, phi0, gtol=gtol, hess=hess)
    return LaplaceFit(tuple(v.name for v in value_vars), info, phi, logp(phi), h, cov,
                      float(np.max(np.abs(grad(phi)))), message)


def find_mode(logp, grad, phi0: np.ndarray, *, gtol: float = 1e-8, hess=None):
    """(mode phi*, Hessian there, (-H)^-1, the optimiser's message) of the log posterior ``logp`` with
    gradient ``grad`` (functions of a flat vector) from ``phi0``: BFGS, then Newton steps with the
    Hessian ``hess(phi)`` (default: central differences of ``grad``). Raises ``ValueError`` as
    :func:`laplace` says."""
    from scipy.optimize import minimize

    if hess is None:
        def hess(phi) -> np.ndarray:
            out = np.empty((phi.size, phi.size))
            for j in range(phi.size):
                step = np.zeros(phi.size)
                step[j] = DIFFERENCE_STEP * max(1.0, abs(phi[j]))
                out[:, j] = (grad(phi + step) - grad(phi - step)) / (2 * step[j])
            return (out + out.T) / 2

    phi0 = np.asarray(phi0, dtype=float)
    if not np.isfinite(logp(phi0)):
        raise ValueError("the log posterior is not finite at the start: give a start inside the support")
    result = minimize(lambda p: -logp(p), phi0, jac=lambda p: -grad(p), method="BFGS",
                      options={"gtol": gtol, "maxiter": 10_000})
    phi = np.asarray(result.x, dtype=float)
    for _ in range(NEWTON_STEPS):
        h = hess(phi)
        g = grad(phi)
        if np.max(np.abs(g)) < 1e-12 or not _negative_definite(h):
            break
        step = np.linalg.solve(h, -g)
        # Accept a Newton step only when it does not lower the log posterior (far from the mode it can).
        if not logp(phi + step) >= logp(phi) - 1e-12:
            break
        phi = phi + step
    h = hess(phi)
    if not _negative_definite(h):
        raise ValueError("the Hessian of the log posterior at the point found is not negative definite "
                         "(a saddle or a mode at the edge of the space): the Laplace approximation does not exist")
    cov = np.linalg.inv(-h)
    cov = (cov + cov.T) / 2
    return phi, h, cov, str(result.message)


def laplace_programs(programs, start: dict[str, Any] | None = None, *, gtol: float = 1e-8) -> LaplaceFit:
    """:func:`laplace` on a model's exported programs (:class:`emvsbayes.ladder.programs.LadderPrograms`):
    the same search on the same log posterior, without PyMC (Hessian by differences)."""
    phi, h, cov, message = find_mode(programs.logp, programs.grad, programs.unconstrained_start(start), gtol=gtol)
    return LaplaceFit(tuple(entry[0] for entry in programs.point_map_info), programs.point_map_info, phi,
                      programs.logp(phi), h, cov, float(np.max(np.abs(programs.grad(phi)))), message)


def _negative_definite(h: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(-(h + h.T) / 2)
    except np.linalg.LinAlgError:
        return False
    return True


def laplace_draws(model, fit: LaplaceFit, n_draws: int, rng: np.random.Generator, *, constrain=None
                  ) -> dict[str, np.ndarray]:
    """``n_draws`` draws from N(mode, cov) mapped back to the constrained scale.

    Returns name -> (S, ...) for every free variable and deterministic of ``model`` (constrained names,
    e.g. ``theta``, ``w``), plus ``"_unconstrained"`` (S, P), the Gaussian draws themselves.
    ``constrain(phi) -> {name: (S, ...)}`` replaces the model's transforms (an exported program's).
    """
    chol = np.linalg.cholesky(fit.cov)
    phi = fit.mode + rng.standard_normal((n_draws, fit.mode.size)) @ chol.T
    values = constrained_values(model, fit.point_map_info, phi) if constrain is None else constrain(phi)
    return {**values, "_unconstrained": phi}


def constrained_values(model, point_map_info: tuple, phi: np.ndarray) -> dict[str, np.ndarray]:
    """The model's free variables and deterministics at each row of ``phi`` (S, P), a flat vector of value
    variables laid out as ``point_map_info`` says (PyMC's ``DictToArrayBijection``): name -> (S, ...)."""
    from pymc.blocking import DictToArrayBijection, RaveledVars

    outputs = [v for v in model.unobserved_value_vars if not v.name.endswith("__")]
    fn = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore", point_fn=False)
    rows = []
    for one in np.atleast_2d(phi):
        point = DictToArrayBijection.rmap(RaveledVars(np.asarray(one, dtype=float), point_map_info))
        rows.append(fn(*[point[v.name] for v in model.value_vars]))
    return {v.name: np.stack([np.asarray(row[i]) for row in rows]) for i, v in enumerate(outputs)}


def to_dataset(model, draws: dict[str, np.ndarray], *, sample_dim: str = "draw"):
    """The constrained draws as an ``xarray.Dataset`` with the model's dims and coords (``sample_dim`` first)."""
    import xarray as xr

    data_vars = {}
    for name, values in draws.items():
        if name.startswith("_"):
            continue
        dims = tuple(model.named_vars_to_dims.get(name, ()) or ())
        if len(dims) != values.ndim - 1:
            dims = tuple(f"{name}_dim_{i}" for i in range(values.ndim - 1))
        data_vars[name] = ((sample_dim, *dims), values)
    coords = {dim: np.asarray(model.coords[dim]) for var in data_vars.values() for dim in var[0][1:]
              if dim in model.coords and model.coords[dim] is not None}
    return xr.Dataset(data_vars, coords=coords)
