"""Standard errors of an EM answer from the observed information, and Wald intervals that respect each
parameter's range.

Why the exact Hessian, and in which coordinates
-----------------------------------------------
The observed information is minus the Hessian of the observed-data log-likelihood
``l(phi) = sum_i log sum_k w_k f_k(x_i)`` at the EM answer. We differentiate ``l`` exactly (pytensor's
symbolic gradient, then the Jacobian of the gradient) rather than use Louis' identity with hand-written
complete-data scores: both give the same matrix (Louis' identity is an exact rewriting of this Hessian),
but one symbolic log-likelihood per family serves every covariance structure, while analytic second
derivatives of a log-Cholesky Gaussian would have to be written, and tested, four times.

The Hessian is taken in an unconstrained parametrisation ``phi``, where the log-likelihood is smooth
on all of R^P and a quadratic approximation (hence a Wald interval) is most nearly right:

- coins: ``logit(theta_k)``; weights, when estimated, by additive log-ratios ``log(w_k / w_{K-1})``
  (k < K-1; the last component is the reference); fixed equal weights are not parameters;
- Gaussians: the same weight log-ratios; the means as they are; each precision's upper Cholesky factor
  ``U`` (``U U^T = Sigma^{-1}``, as :class:`~emvsbayes.gaussian.model.GaussianParams` keeps it) with its
  diagonal on the log scale and its strict upper triangle as it is (the log-Cholesky parametrisation of
  Pinheiro & Bates 1996); for ``diag`` and ``spherical`` that is ``log(1/sd)``, for ``tied`` one factor.

The covariance of ``phi`` is the inverse information; the delta method (the exact Jacobian of the map
from ``phi`` to the reported variables ``theta``, ``w``, ``mu``, ``sigma`` / ``cov``) carries it to the
natural scale, where the standard errors are reported.

On which scale the Wald intervals are formed
--------------------------------------------
``estimate +- z * se`` on the natural scale leaves the parameter's range when the estimate is within
about two standard errors of a bound (a weight of 0.52 with se 0.41 gave [-0.28, 1.33]). So each interval
is formed where the variable's range is all of R and mapped back (:data:`INTERVAL_SCALES`):
``g(estimate) +- z * |g'(estimate)| * se`` through ``g^{-1}``, the delta method for ``se`` of ``g``:

- ``theta``: logit, the coordinate the Hessian is taken in;
- ``w``: logit of each weight, ``log(w_k / (1 - w_k))``, the log-ratio of one weight to all the others.
  The additive log-ratios of ``phi`` are coordinates of the whole simplex, not of one weight, so they
  cannot give a per-weight interval; for K = 2 the two coincide (``log(w_0 / w_1) = logit(w_0)``);
- ``mu``: as it is (its range is R);
- ``sigma``: log;
- ``cov``: log for the variances on the diagonal; the off-diagonal covariances as they are. A covariance
  on its own ranges over R; its bound ``|cov_ij| < sqrt(cov_ii cov_jj)`` moves with two other uncertain
  parameters, so no fixed transform of that one entry respects it, and the log-Cholesky coordinates of
  ``phi`` mix every entry of a row. The variances are what a natural-scale interval would push below 0.

A parameter that is fixed or determined by the others (se 0) gets the interval ``[estimate, estimate]``.

When there are no numbers to give
---------------------------------
The information is singular, or too near it for its inverse to mean anything, when a ``theta`` sits on
0 or 1 (its logit is infinite), when a component carries less than one observation's worth of weight
(nothing informs its parameters), when minus the Hessian is not positive definite (the answer is not a
strict local maximum), or when the information's condition number, after scaling it to unit diagonal,
exceeds :data:`CONDITION_LIMIT`. Then every standard error is NaN, ``singular`` is True and ``reason``
says which of these happened, in one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit, ndtri


__all__ = [
    "BOUNDARY_TOL",
    "CONDITION_LIMIT",
    "INTERVAL_SCALES",
    "MIN_EXPECTED_COUNT",
    "SCALE_DESCRIPTIONS",
    "StandardErrors",
    "compile_information",
    "information_function",
    "standard_errors",
    "standard_errors_from_hessian",
    "weight_reason",
    "wald_interval",
    "with_numeric_jacobian",
]

#: A theta within this distance of 0 or 1 is on the boundary: its logit is beyond +-20.7, where the
#: log-likelihood is flat to rounding and the information in that direction is zero.
BOUNDARY_TOL = 1e-9

#: A component whose expected count N w_k is below this carries less than one observation: the
#: information about its parameters is (nearly) zero and its standard errors would be meaningless.
MIN_EXPECTED_COUNT = 1.0

#: Largest condition number of the information scaled to unit diagonal (its "correlation form", which
#: does not depend on the units of each parameter). Inverting a matrix of condition number c loses
#: about log10(c) of float64's 16 digits; at 1e10 about 6 remain, and a statistical problem that close
#: to singular (parameter correlations within 1e-10 of +-1) is not identified in any useful sense.
CONDITION_LIMIT = 1e10

#: The scale each reported variable's Wald interval is formed on (see the module's docstring).
INTERVAL_SCALES = {"theta": "logit", "w": "logit", "mu": "identity", "sigma": "log", "cov": "log-diagonal"}

#: What each scale is, in words, for the results file and the report.
SCALE_DESCRIPTIONS = {
    "identity": "natural scale",
    "logit": "logit scale",
    "log": "log scale",
    "log-diagonal": "log scale for the variances, natural scale for the covariances",
    "simplex": "logit scale of each probability",
}


@dataclass(frozen=True, slots=True)
class StandardErrors:
    """Information-based standard errors of one EM answer.

    Attributes
    ----------
    estimate : dict of str to ndarray
        The answer on the natural scale, named and shaped as ``params.variables()`` (coins: ``theta``,
        ``w`` (K,); Gaussians: ``w`` (K,), ``mu`` (K,) or (K, D), ``sigma`` (K,) or ``cov`` (K, D, D)).
    se : dict of str to ndarray
        Delta-method standard errors, same shapes; all NaN when ``singular``. A parameter that is fixed
        (equal coin weights) or determined by the others (the last weight when K = 1) has se 0.
    lower, upper : dict of str to ndarray
        Wald interval with ``z`` the normal quantile for ``level``, formed on the scale
        ``interval_scale[name]`` and mapped back, so it stays inside the parameter's range (see the
        module's docstring).
    interval_scale : dict of str to str
        For each variable, a key of :data:`SCALE_DESCRIPTIONS`.
    level : float
        Coverage of the intervals, e.g. 0.95.
    singular : bool
        The information is singular or nearly so; ``reason`` says why.
    reason : str
        One line; empty when not singular.
    information : ndarray, shape (P, P)
        Observed information (minus the Hessian of the log-likelihood) in the unconstrained coordinates;
        NaN when it could not be evaluated (a theta on the boundary).
    unconstrained : tuple of str
        Names of the P unconstrained coordinates, in order.
    cov_unconstrained : ndarray, shape (P, P)
        Inverse information; NaN when singular.
    condition_number : float
        Of the information scaled to unit diagonal; NaN when not evaluated, inf when not positive definite.
    max_abs_score : float
        Largest absolute gradient of the log-likelihood in ``phi`` at the answer: near 0 at a converged
        maximum (``reg_covar`` and the stopping rule leave a small remainder).
    """

    estimate: dict
    se: dict
    lower: dict
    upper: dict
    level: float
    singular: bool
    reason: str
    information: np.ndarray
    unconstrained: tuple[str, ...]
    cov_unconstrained: np.ndarray
    condition_number: float
    max_abs_score: float
    interval_scale: dict

    def to_dataset(self, dims: dict[str, tuple[str, ...]] | None = None):
        """An ``xarray.Dataset`` with one variable per parameter and a leading dimension ``stat``
        (``estimate``, ``se``, ``lower``, ``upper``); attributes ``level``, ``singular``, ``reason`` and
        ``wald_scale_<name>`` (the scale of the interval, in words) per variable.

        ``dims`` maps names to dimension names (default: ``component``, then numbered dims).
        """
        import xarray as xr

        dims = dims or _default_dims(self.estimate)
        stats = ("estimate", "se", "lower", "upper")
        data = {
            name: (("stat", *dims[name]), np.stack([getattr(self, s)[name] for s in stats]))
            for name in self.estimate
        }
        attrs = {"level": self.level, "singular": int(self.singular), "reason": self.reason}
        attrs |= {f"wald_scale_{name}": SCALE_DESCRIPTIONS[scale] for name, scale in self.interval_scale.items()}
        return xr.Dataset(data, coords={"stat": list(stats)}, attrs=attrs)


def _default_dims(estimate: dict) -> dict[str, tuple[str, ...]]:
    # The first axis of every parameter is its component; the others are numbered.
    return {name: ("component", *(f"{name}_dim_{i}" for i in range(1, np.ndim(x)))) for name, x in estimate.items()}


# --------------------------------------------------------------------------------------------------
# The array core: Hessian and Jacobian in, standard errors out


def _split(flat: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = np.asarray(flat[start : start + size], dtype=float).reshape(shape)
        start += size
    return out


def _nan_square(p: int) -> np.ndarray:
    """A P x P matrix of NaN for an information that was not computed; (0, 0) where a P x P matrix is too large to
    hold (:func:`matrix_too_large`; 40,601 coordinates: 13 GB of NaN)."""
    return np.full((p, p), np.nan) if matrix_too_large(p) is None else np.empty((0, 0))


def _singular(estimate, level, reason, information, names, condition=float("nan"), score=float("nan"),
              interval_scale=None):
    nan = {name: np.full(np.shape(x), np.nan) for name, x in estimate.items()}
    p = len(names)
    return StandardErrors(
        estimate=estimate, se=nan, lower=dict(nan), upper=dict(nan), level=level, singular=True, reason=reason,
        information=information, unconstrained=tuple(names), cov_unconstrained=_nan_square(p),
        condition_number=condition, max_abs_score=score,
        interval_scale=_interval_scales(estimate, interval_scale),
    )


def _interval_scales(estimate: dict, given: dict[str, str] | None) -> dict[str, str]:
    # A variable no family declares (a caller's own) has no known range: the natural scale.
    return {name: (given or INTERVAL_SCALES).get(name, "identity") for name in estimate}


# Each scale as (g, g^{-1}, g'): forward map, its inverse, and the slope that carries a natural-scale se
# to the scale by the delta method.
_SCALE_MAPS = {
    "identity": (lambda x: x, lambda y: y, np.ones_like),
    "logit": (logit, expit, lambda x: 1.0 / (x * (1.0 - x))),
    "log": (np.log, np.exp, lambda x: 1.0 / x),
}
# A probability in a simplex (a weight, a row of a transition matrix): each on its own logit scale.
_SCALE_MAPS["simplex"] = _SCALE_MAPS["logit"]


def wald_interval(estimate, se, z: float, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """``g^{-1}(g(estimate) -+ z * |g'(estimate)| * se)`` for the scale ``g`` named by ``scale``.

    Parameters
    ----------
    estimate, se : array_like, same shape
        Natural-scale estimate and delta-method standard error. For ``log-diagonal``, (..., D, D)
        covariance matrices.
    z : float
        Normal quantile of the interval's level.
    scale : str
        A key of :data:`SCALE_DESCRIPTIONS`.

    Returns
    -------
    lower, upper : ndarray, shape of ``estimate``
        Where ``se`` is 0 (a fixed or determined parameter) both equal the estimate.
    """
    estimate = np.asarray(estimate, dtype=float)
    se = np.asarray(se, dtype=float)
    if scale == "log-diagonal":
        lower, upper = wald_interval(estimate, se, z, "identity")
        diagonal = np.arange(estimate.shape[-1])
        lower[..., diagonal, diagonal], upper[..., diagonal, diagonal] = wald_interval(
            estimate[..., diagonal, diagonal], se[..., diagonal, diagonal], z, "log"
        )
        return lower, upper
    forward, inverse, slope = _SCALE_MAPS[scale]
    # A weight of exactly 1 (K = 1) has an infinite logit and slope; its se is 0 and the interval a point.
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = forward(estimate)
        half = z * np.abs(slope(estimate)) * se
        lower, upper = inverse(centre - half), inverse(centre + half)
    fixed = se == 0
    return np.where(fixed, estimate, lower), np.where(fixed, estimate, upper)


def standard_errors_from_hessian(
    hessian: np.ndarray,
    jacobian: np.ndarray,
    estimate: dict[str, np.ndarray],
    names: tuple[str, ...],
    *,
    level: float = 0.95,
    gradient: np.ndarray | None = None,
    condition_limit: float = CONDITION_LIMIT,
    interval_scale: dict[str, str] | None = None,
) -> StandardErrors:
    """Delta-method standard errors from the Hessian of the log-likelihood in unconstrained coordinates.

    Parameters
    ----------
    hessian : ndarray, shape (P, P)
        Hessian of the observed-data log-likelihood at the answer (the information is its negative).
    jacobian : ndarray, shape (M, P)
        d(natural variables, flattened in the order of ``estimate``) / d(phi).
    estimate : dict of str to ndarray
        The natural-scale answer (M values in all).
    names : tuple of str
        Names of the P coordinates.
    level : float
        Coverage of the Wald intervals.
    gradient : ndarray, shape (P,), optional
        Score at the answer, only reported (``max_abs_score``).
    condition_limit : float
        Largest acceptable condition number of the information in correlation form.
    interval_scale : dict of str to str, optional
        Scale of each variable's Wald interval; default :data:`INTERVAL_SCALES` by name, and the natural
        scale for a name it does not list.

    Returns
    -------
    StandardErrors
    """
    information = -np.asarray(hessian, dtype=float)
    score = float(np.max(np.abs(gradient), initial=0.0)) if gradient is not None else float("nan")
    p = information.shape[0]
    if not np.all(np.isfinite(information)):
        return _singular(estimate, level, "the Hessian of the log-likelihood is not finite at the EM answer",
                         information, names, score=score)
    diag = np.diag(information)
    if p and np.any(diag <= 0):
        j = int(np.argmin(diag))
        return _singular(
            estimate, level,
            f"the observed information is not positive definite ({names[j]} has curvature {-diag[j]:.3g} >= 0): "
            "the EM answer is not a strict local maximum",
            information, names, condition=float("inf"), score=score, interval_scale=interval_scale,
        )
    scale = np.sqrt(diag)
    correlation = information / np.outer(scale, scale)
    eigenvalues = np.linalg.eigvalsh(correlation) if p else np.ones(1)
    if eigenvalues[0] <= 0:
        return _singular(
            estimate, level,
            f"the observed information is not positive definite (smallest eigenvalue of its correlation form "
            f"{eigenvalues[0]:.3g}): the EM answer is not a strict local maximum",
            information, names, condition=float("inf"), score=score, interval_scale=interval_scale,
        )
    condition = float(eigenvalues[-1] / eigenvalues[0])
    if condition > condition_limit:
        return _singular(
            estimate, level,
            f"the observed information is near-singular (condition number {condition:.3g} > {condition_limit:.0e}): "
            "some parameters are not identified by these data",
            information, names, condition=condition, score=score, interval_scale=interval_scale,
        )
    # Inverse through the well-conditioned correlation form, then back to the parameters' units.
    cov_phi = np.linalg.inv(correlation) / np.outer(scale, scale)
    cov_phi = (cov_phi + cov_phi.T) / 2
    jacobian = np.asarray(jacobian, dtype=float).reshape(-1, p)
    variances = np.einsum("mp,pq,mq->m", jacobian, cov_phi, jacobian)
    se_flat = np.sqrt(np.maximum(variances, 0.0))
    shapes = {name: np.shape(x) for name, x in estimate.items()}
    se = _split(se_flat, shapes)
    z = float(ndtri(0.5 + level / 2))  # the normal quantile (scipy.stats, 1 s of import, is not needed)
    scales = _interval_scales(estimate, interval_scale)
    intervals = {name: wald_interval(estimate[name], se[name], z, scales[name]) for name in estimate}
    return StandardErrors(
        estimate=estimate, se=se, lower={name: lo for name, (lo, _) in intervals.items()},
        upper={name: hi for name, (_, hi) in intervals.items()}, level=level, singular=False, reason="",
        information=information, unconstrained=tuple(names), cov_unconstrained=cov_phi,
        condition_number=condition, max_abs_score=score, interval_scale=scales,
    )


# --------------------------------------------------------------------------------------------------
# Any family: its one symbolic log-likelihood, differentiated


def weight_reason(w: np.ndarray, n_obs: int) -> str:
    """Why the information is singular when a component holds less than one observation's weight ("" if not)."""
    expected = n_obs * np.asarray(w)
    if np.any(expected < MIN_EXPECTED_COUNT):
        k = int(np.argmin(expected))
        return (
            f"w[{k}] = {w[k]:.3g} carries {expected[k]:.3g} of {n_obs} observations: the information about "
            f"component {k} is (nearly) zero"
        )
    return ""


def _compile(inputs, outputs) -> Callable:
    # Python linker with the light rewrites: the graphs are small and vectorised over N, so numpy runs
    # them in milliseconds, and nothing is compiled to C (a cold C compile of these Hessian graphs took
    # 20-90 s on this 2-core machine; this takes about a second, with no cache to warm). cxx="" reaches
    # the inner graphs of the vectorised Jacobians too, which the mode's linker alone does not.
    import pytensor
    from pytensor.compile.mode import Mode

    with pytensor.config.change_flags(cxx=""):
        return pytensor.function(inputs, outputs, mode=Mode(linker="py", optimizer="fast_compile"))


def compile_information(phi, data_inputs, loglik, natural=None) -> Callable:
    """Compiled ``(phi, *data) -> (loglik, gradient, Hessian, natural values, Jacobian)`` of a family's
    symbolic log-likelihood ``loglik(phi)`` and its natural variables ``natural(phi)`` (flattened in the
    order of ``variables()``); without ``natural`` the last two are left out."""
    from pytensor.gradient import grad, jacobian

    gradient = grad(loglik, phi)
    hessian = jacobian(gradient, phi, vectorize=True)
    outputs = [loglik, gradient, hessian]
    if natural is not None:
        outputs += [natural, jacobian(natural, phi, vectorize=True)]
    return _compile([phi, *data_inputs], outputs)


#: Relative step of the central differences that give a family without a symbolic map from ``phi`` to
#: its variables the Jacobian of that map: about the cube root of float64's epsilon, where the truncation
#: and rounding errors of a central difference balance (relative error ~1e-10).
JACOBIAN_STEP = 6e-6


def _numeric_jacobian(family, model_def, data, phi: np.ndarray) -> np.ndarray:
    def flat(point):
        values = family.variables(family.from_unconstrained(model_def, data, point))
        return np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values.values()])

    columns = []
    for j in range(phi.size):
        step = JACOBIAN_STEP * max(1.0, abs(phi[j]))
        up, down = phi.copy(), phi.copy()
        up[j] += step
        down[j] -= step
        columns.append((flat(up) - flat(down)) / (2 * step))
    return np.stack(columns, axis=1) if columns else np.zeros((flat(phi).size, 0))


def information_function(family, model_def, data) -> Callable:
    """``phi -> (loglik, gradient, Hessian, natural values, Jacobian)`` of a family: its own compiled
    function when it has one (compiled once per structure, the data as inputs), else one compiled from
    :meth:`~emvsbayes.family.Family.symbolic_loglik` with the Jacobian of the natural variables by central
    differences of ``from_unconstrained``."""
    own = getattr(family, "information_function", None)
    if own is not None:
        return own(model_def, data)
    phi, loglik = family.symbolic_loglik(model_def, data)
    return with_numeric_jacobian(family, model_def, data, compile_information(phi, [], loglik))


def with_numeric_jacobian(family, model_def, data, loglik_derivatives: Callable) -> Callable:
    """``phi -> (loglik, gradient, Hessian, natural values, Jacobian)`` from ``loglik_derivatives`` (``phi ->
    (loglik, gradient, Hessian)``), the natural values by ``from_unconstrained`` and their Jacobian by central
    differences of it (:data:`JACOBIAN_STEP`): for a family without a symbolic map from ``phi`` to its variables."""

    def evaluate(point):
        point = np.asarray(point, dtype=float)
        value, gradient, hessian = loglik_derivatives(point)
        natural = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in
                                  family.variables(family.from_unconstrained(model_def, data, point)).values()])
        return value, gradient, hessian, natural, _numeric_jacobian(family, model_def, data, point)

    return evaluate


#: Bytes the program holds while it evaluates, per row of the data and per entry of the P x P Hessian: the
#: Hessian is the Jacobian of the gradient vectorised over the P coordinates, so every row's intermediates are
#: held P times over. Measured on Gaussian mixtures, K = 2, full covariances: 61-94 (D = 10 and 20, N = 200
#: and 400, peak resident memory above the process's before). A family's parameter transforms may add a term
#: that does not grow with the rows (``fixed_per_entry`` below: the Gaussian family's is 8 K D).
BYTES_PER_ROW_AND_ENTRY = 64
#: Most memory one evaluation may hold: larger data are evaluated a block of rows at a time (the program
#: takes any number of rows), never more than this fraction of the memory limit (emvsbayes.limits).
EVALUATION_SHARE = 0.125
EVALUATION_CAP = 2**30


def evaluation_budget() -> int:
    """Bytes one evaluation of an information program may hold (:data:`EVALUATION_CAP`, or less on a machine
    with less memory)."""
    from emvsbayes.limits import memory_limit

    return int(min(EVALUATION_CAP, EVALUATION_SHARE * memory_limit().bytes))


def rows_per_evaluation(n_params: int, fixed_per_entry: float = 0.0, budget: int | None = None) -> int:
    """How many rows one evaluation of a program with ``n_params`` coordinates may take within ``budget``
    (0: not even one)."""
    budget = evaluation_budget() if budget is None else budget
    entries = max(1, n_params) ** 2
    return max(0, int((budget / entries - fixed_per_entry) // BYTES_PER_ROW_AND_ENTRY))


def matrix_too_large(n_params: int, budget: int | None = None) -> str | None:
    """Why the P x P information matrix itself cannot be held within ``budget`` (then its graph is not even built:
    PyTensor's rewrites for a Gaussian's 40,601 coordinates (30 rows x 200 columns, K = 2, full covariances)
    asked for 48 GB before anything was evaluated), or None."""
    budget = evaluation_budget() if budget is None else budget
    need = 8 * n_params * n_params
    if need <= budget:
        return None
    from emvsbayes.limits import format_size

    return (f"the observed information of {n_params:,} coordinates is a matrix of {format_size(need)}, more than the "
            f"{format_size(budget)} allowed for it; {FEWER_PARAMETERS}")


#: What gives Wald intervals where the information is too large (the end of both messages).
FEWER_PARAMETERS = ("fewer parameters (a diagonal or spherical covariance, fewer columns) give Wald intervals, and the "
                    "bootstrap and the posterior do not need them")


def too_large(n_params: int, fixed_per_entry: float = 0.0, budget: int | None = None) -> str | None:
    """Why the observed information of ``n_params`` coordinates cannot be evaluated within ``budget`` even one row
    at a time (a phrase for the page), or None when it can."""
    if rows_per_evaluation(n_params, fixed_per_entry, budget) >= 1:
        return None
    from emvsbayes.limits import format_size

    need = n_params * n_params * (BYTES_PER_ROW_AND_ENTRY + fixed_per_entry)
    return (f"the observed information of {n_params:,} coordinates would need about {format_size(need)} of memory even "
            f"one row at a time, more than the {format_size(evaluation_budget() if budget is None else budget)} "
            f"allowed for it; {FEWER_PARAMETERS}")


class InformationTooLarge(Exception):
    """Even one row of the data would make the information's program hold more than its budget
    (:meth:`emvsbayes.uncertainty.information_programs.InformationProgram.summed_over_rows`): the information is
    not computed, and :func:`standard_errors` says why in place of the intervals."""


def standard_errors(family, model_def, data, params, *, level: float = 0.95) -> StandardErrors:
    """Observed-information standard errors and Wald intervals of an EM answer of any family.

    The Hessian of the family's one symbolic log-likelihood in its unconstrained coordinates
    (``to_unconstrained``), carried to the reported variables by the delta method; the Wald intervals on
    each parameter's declared scale (:class:`~emvsbayes.family.ParameterInfo`).

    Returns
    -------
    StandardErrors
        Variables named and shaped as ``family.variables(params)``.
    """
    validate = getattr(family, "validate_params", None)
    if validate is not None:
        validate(model_def, params)
    estimate = {name: np.array(value) for name, value in family.variables(params).items()}
    names = tuple(family.unconstrained_names(model_def, data))
    scales = {name: info.scale for name, info in family.parameters(model_def, data).items()}
    p = len(names)
    reason_of = getattr(family, "information_reason", None)
    reason = reason_of(model_def, data, params) if reason_of is not None else ""
    if not reason:
        reason = matrix_too_large(p) or ""  # before the graph is built
    if reason:
        return _singular(estimate, level, reason, _nan_square(p), names, interval_scale=scales)
    try:
        _, gradient, hessian, _, jac = information_function(family, model_def, data)(family.to_unconstrained(model_def, params))
    except InformationTooLarge as refused:
        return _singular(estimate, level, str(refused), _nan_square(p), names, interval_scale=scales)
    return standard_errors_from_hessian(hessian, jac, estimate, names, level=level, gradient=gradient,
                                        interval_scale=scales)
