"""The Gaussian mixture as a model family (:class:`emvsbayes.family.Family`): everything the generic
runner, uncertainty and study code need of it, delegating to :mod:`~emvsbayes.gaussian.model`,
:mod:`~emvsbayes.gaussian.em`, :mod:`~emvsbayes.gaussian.init` and :mod:`~emvsbayes.gaussian.bayes`.

Data are a :class:`~emvsbayes.data.ContinuousData` (rows of D measurements).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emvsbayes.data.records import ContinuousData
from emvsbayes.em import SAME_OPTIMUM_ATOL, RestartPolicy
from emvsbayes.errors import DegenerateFitError, UserError, name_listing
from emvsbayes.family import ParameterInfo, alr, alr_inverse
from emvsbayes.lazy_imports import lazy_module

# Imported on first use: spec checks and data loading read this module before anything is fitted.
em = lazy_module("emvsbayes.gaussian.em")
bayes = lazy_module("emvsbayes.gaussian.bayes")
gaussian_init = lazy_module("emvsbayes.gaussian.init")
gaussian_model = lazy_module("emvsbayes.gaussian.model")
bootstrap_sizes = lazy_module("emvsbayes.uncertainty.bootstrap")

#: The Wald interval's scale of each Gaussian parameter (see emvsbayes.uncertainty.information).
SCALES = {"w": "logit", "mu": "identity", "sigma": "log", "cov": "log-diagonal"}

#: A given start's means may lie this many data widths beyond the data's range in each column.
INIT_REACH = 100



def as_continuous_data(x) -> ContinuousData:
    """An array (N,) or (N, D) as a data record (rows numbered from 1, columns x0, x1, ...)."""
    x = gaussian_model.as_data_matrix(x)
    return ContinuousData(x, tuple(f"x{j}" for j in range(x.shape[1])), tuple(str(i) for i in range(1, x.shape[0] + 1)))


def _matrix(data) -> np.ndarray:
    return np.asarray(data.x, dtype=float)


# --------------------------------------------------------------------------------------------------
# Spec, data and starts


def _tuple_or_none(value):
    if value is None:
        return None
    return tuple(value) if isinstance(value, list) else (value,)


def model_from_spec(spec: dict, n_components: int | None = None, covariance: str | None = None) -> GaussianMixtureModel:
    b = spec["bayes"]
    return gaussian_model.GaussianMixtureModel(
        n_components=n_components or spec["model"]["components"],
        covariance_type=covariance or spec["model"]["covariance"],
        reg_covar=spec["model"]["reg_covar"],
        ordered=b["variant"] == "ordered",
        priors=gaussian_model.GaussianPriors(
            w_concentration=b["w_concentration"],
            mu_loc=_tuple_or_none(b["mu_loc"]),
            mu_scale=_tuple_or_none(b["mu_scale"]),
            sigma_scale=_tuple_or_none(b["sigma_scale"]),
            lkj_eta=b["lkj_eta"],
        ),
    )


def _show(value) -> str:
    from emvsbayes.spec import show_value

    return show_value(value)


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
    start = start_source(model_def, x, {"init": init}, np.random.default_rng(0))[0]()
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


def start_source(model_def: GaussianMixtureModel, x: np.ndarray, em_spec: dict, rng) -> tuple[Callable, RestartPolicy]:
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
                expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[model_def.covariance_type]
                if cov.shape != expected:
                    raise ValueError(f"covariances of shape {cov.shape}")
                given["precisions_init"] = gaussian_model.GaussianParams.from_covariances(
                    given["weights_init"], means, cov, model_def.covariance_type).precisions()
            start = gaussian_init.initial_params(model_def, x, "kmeans", rng, **given)
        except np.linalg.LinAlgError:
            raise UserError("[em] init covariances: a covariance is not positive definite (its variances must be "
                            "positive and its correlations between -1 and 1); give valid covariances, or leave them "
                            "out") from None
        except ValueError:
            shapes = {"full": f"K = {k} matrices of {d} x {d}", "tied": f"one {d} x {d} matrix",
                      "diag": f"K = {k} rows of {d} variances", "spherical": f"K = {k} variances"}
            raise UserError(f"[em] init: the given parameters do not fit K = {k}, D = {d}: give means as K rows of D "
                            f"numbers and covariances as {shapes.get(model_def.covariance_type, 'the structure asks')} "
                            f"(covariance = {model_def.covariance_type!r})") from None
        start = gaussian_init.initial_params(model_def, x, "kmeans", rng, **given)
        return (lambda: start), restart_policy(em_spec, n_starts=1)
    return gaussian_init.initial_params_source(model_def, x, init, rng), restart_policy(em_spec)


def batched_restarts(model_def: GaussianMixtureModel, x: np.ndarray, options: dict) -> tuple[Callable | None, int]:
    """(soft EM from a list of starts as one batch, most starts per batch), or (None, 1) where one fit is
    large enough to run on its own: the bootstrap's size rule (``LARGE_FIT``, ``BATCH_VALUES`` of emvsbayes.uncertainty.bootstrap). For the
    bundled data one fit at a time spends its time in per-call overhead: galaxies' 150 starts (K = 3) take
    0.14 s batched against 10 s one at a time."""
    x = np.asarray(x, dtype=float).reshape(x.shape[0], -1)
    size = x.shape[0] * model_def.n_components * x.shape[1] ** 2
    if size > bootstrap_sizes.LARGE_FIT:
        return None, 1
    sets = em.GaussianSets(x[None], None, em.prepare(model_def, x).frame)
    return (lambda inits: em.fit_batched(model_def, sets, inits, len(inits), **options)), max(1, bootstrap_sizes.BATCH_VALUES // size)


def expected_counts(model_def: GaussianMixtureModel, params: GaussianParams, x: np.ndarray) -> np.ndarray:
    """n_k = sum_i r_ik (K,) at ``params``."""
    return np.exp(em.log_resp(model_def, params, x)).sum(axis=0)


# --------------------------------------------------------------------------------------------------
# Observed information


def _triangle(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle (diagonal included), row-major."""
    return np.triu_indices(dim)


def _n_factors(covariance_type: str, k: int) -> int:
    return 1 if covariance_type == "tied" else k


def gaussian_unconstrained_names(model: GaussianMixtureModel, dim: int) -> tuple[str, ...]:
    """Names of the unconstrained coordinates: weight log-ratios, means, log-Cholesky precision factors."""
    k = model.n_components
    names = [f"log(w[{j}]/w[{k - 1}])" for j in range(k - 1)]
    names += [f"mu[{j},{d}]" for j in range(k) for d in range(dim)]
    structure = model.covariance_type
    if structure in ("full", "tied"):
        rows, cols = _triangle(dim)
        for j in range(_n_factors(structure, k)):
            at = "" if structure == "tied" else f"{j},"
            names += [f"log U[{at}{r},{c}]" if r == c else f"U[{at}{r},{c}]" for r, c in zip(rows, cols)]
    elif structure == "diag":
        names += [f"log U[{j},{d}]" for j in range(k) for d in range(dim)]
    else:
        names += [f"log U[{j}]" for j in range(k)]
    return tuple(names)


def _upper_factor(prec: np.ndarray) -> np.ndarray:
    """The upper triangular U with positive diagonal and U U^T = prec (unique), for (..., D, D)."""
    flipped = prec[..., ::-1, ::-1]
    return np.linalg.cholesky(flipped)[..., ::-1, ::-1]


def gaussian_unconstrained(model: GaussianMixtureModel, params: GaussianParams) -> np.ndarray:
    """``phi`` (P,) of ``params``.

    The precision factor is recomputed as the unique upper Cholesky factor of the precision, so a
    ``params`` built with any square root of the precision (e.g. a lower-triangular one) maps to the
    same ``phi``.
    """
    k, dim = params.mu.shape
    parts = [alr(params.w), params.mu.ravel()]
    structure = model.covariance_type
    if structure in ("full", "tied"):
        u = _upper_factor(params.precisions()).reshape(-1, dim, dim)
        rows, cols = _triangle(dim)
        entries = u[:, rows, cols]
        entries[:, rows == cols] = np.log(entries[:, rows == cols])
        parts.append(entries.ravel())
    else:
        parts.append(np.log(params.prec_chol).ravel())
    return np.concatenate(parts)


def gaussian_from_unconstrained(model: GaussianMixtureModel, phi: np.ndarray, dim: int) -> GaussianParams:
    """Inverse of :func:`gaussian_unconstrained`."""
    k = model.n_components
    phi = np.asarray(phi, dtype=float)
    w = alr_inverse(phi[: k - 1])
    mu = phi[k - 1 : k - 1 + k * dim].reshape(k, dim)
    rest = phi[k - 1 + k * dim :]
    structure = model.covariance_type
    if structure in ("full", "tied"):
        rows, cols = _triangle(dim)
        m = _n_factors(structure, k)
        entries = rest.reshape(m, -1).copy()
        entries[:, rows == cols] = np.exp(entries[:, rows == cols])
        u = np.zeros((m, dim, dim))
        u[:, rows, cols] = entries
        prec_chol = u[0] if structure == "tied" else u
    elif structure == "diag":
        prec_chol = np.exp(rest).reshape(k, dim)
    else:
        prec_chol = np.exp(rest)
    return gaussian_model.GaussianParams(w, mu, prec_chol, structure)


def _loglik_graph(phi, x, covariance_type: str, n_components: int, dim: int):
    """(log-likelihood, natural variables w, mu, then sigma (1-D) or cov) of the mixture at ``phi``: the
    one symbolic log-likelihood (``x`` a symbolic input or a constant)."""
    import pytensor.tensor as pt

    k = n_components
    log_w = pt.special.log_softmax(pt.concatenate([phi[: k - 1], pt.zeros((1,), dtype="float64")]))
    mu = phi[k - 1 : k - 1 + k * dim].reshape((k, dim))
    rest = phi[k - 1 + k * dim :]
    if covariance_type in ("full", "tied"):
        rows, cols = _triangle(dim)
        m = _n_factors(covariance_type, k)
        entries = rest.reshape((m, rows.size))
        on_diagonal = rows == cols
        log_diag = entries[:, np.flatnonzero(on_diagonal)]  # (m, D), rows of the diagonal in order
        values = pt.set_subtensor(entries[:, np.flatnonzero(on_diagonal)], pt.exp(log_diag))
        u = pt.zeros((m, dim, dim), dtype="float64")
        u = pt.set_subtensor(u[:, rows, cols], values)
        u = pt.broadcast_to(u, (k, dim, dim))
        log_det = pt.broadcast_to(log_diag.sum(axis=1), (k,))
    elif covariance_type == "diag":
        log_u = rest.reshape((k, dim))
        u = pt.exp(log_u)[:, :, None] * pt.eye(dim)[None, :, :]
        log_det = log_u.sum(axis=1)
    else:
        log_u = rest
        u = pt.exp(log_u)[:, None, None] * pt.eye(dim)[None, :, :]
        log_det = dim * log_u
    diff = x[:, None, :] - mu[None, :, :]  # (N, K, D)
    white = (diff[:, :, :, None] * u[None, :, :, :]).sum(axis=2)  # (x - mu_k) U_k, (N, K, D)
    log_joint = log_w[None, :] + log_det[None, :] - 0.5 * pt.sqr(white).sum(axis=2) - 0.5 * dim * math.log(2 * math.pi)
    loglik = pt.logsumexp(log_joint, axis=1).sum()
    # Natural variables in the order of gaussian_model.GaussianParams.variables(): w, mu, then sigma (1-D) or cov.
    u_inv = pt.linalg.inv(u)
    cov = pt.matmul(u_inv.transpose(0, 2, 1), u_inv)  # Sigma = (U U^T)^{-1} = U^{-T} U^{-1}
    scale = pt.sqrt(cov[:, 0, 0]) if dim == 1 else cov.reshape((k * dim * dim,))
    natural = pt.concatenate([pt.exp(log_w), mu.reshape((k * dim,)), scale])
    return loglik, natural


def information_graph(covariance_type: str, n_components: int, dim: int):
    """The mixture's log-likelihood and natural variables as an
    :class:`~emvsbayes.uncertainty.information_programs.InformationGraph` of (phi, x (N, D))."""
    import pytensor.tensor as pt

    from emvsbayes.uncertainty.information_programs import InformationGraph

    k = n_components
    triangle = dim * (dim + 1) // 2
    factors = {"full": k * triangle, "tied": triangle, "diag": k * dim, "spherical": k}[covariance_type]
    phi = pt.tensor("phi", shape=(k - 1 + k * dim + factors,), dtype="float64")
    x = pt.tensor("x", shape=(None, dim), dtype="float64")
    loglik, natural = _loglik_graph(phi, x, covariance_type, n_components, dim)
    return InformationGraph(phi, (x,), loglik, natural)


@functools.cache
def _information_function(covariance_type: str, n_components: int, dim: int) -> Callable:
    """(phi, x) -> (loglik, gradient, Hessian, natural values, Jacobian): an exported program stored once per
    structure, the data an input."""
    from emvsbayes.uncertainty.information_programs import InformationRecipe, information_program

    return information_program(InformationRecipe(information_graph, (covariance_type, n_components, dim)))


# --------------------------------------------------------------------------------------------------
# Bootstrap: how to resample, simulate and refit (data as an (N, D) matrix)


@dataclass(frozen=True, slots=True)
class GaussianBootstrap:
    model: GaussianMixtureModel

    def n_obs(self, data) -> int:
        return int(data.shape[0])

    def take(self, data, rows):
        return data[rows]

    def simulate(self, data, params: GaussianParams, rng):
        from emvsbayes.data import simulate_gaussian_mixture

        cov = params.full_covariances()
        cov = (cov + np.swapaxes(cov, 1, 2)) / 2  # exact symmetry for the simulator's check
        return simulate_gaussian_mixture(data.shape[0], params.w, params.mu, cov, rng).x

    def refit(self, data, init: GaussianParams, options):
        return em.fit(self.model, data, init, **options)

    def single_fit_size(self, data, reference) -> int:
        return data.shape[0] * self.model.n_components * data.shape[1] ** 2

    def refit_batched(self, data, samples, counts, init: GaussianParams, options):
        frame = em.prepare(self.model, data).frame
        if samples is None:
            sets = em.GaussianSets(data[None], counts, frame)
        else:
            sets = em.GaussianSets(np.stack(samples), None, frame)
        return em.fit_batched(self.model, sets, init, len(counts) if samples is None else len(samples), **options)

    def dims(self, reference) -> dict[str, tuple[str, ...]]:
        return gaussian_model.parameter_dims(reference.mu.shape[1])


# --------------------------------------------------------------------------------------------------
# The family


class GaussianFamily:
    """Mixtures of K multivariate normals with scikit-learn's covariance structures."""

    name = "gaussian"
    title = "Gaussian mixtures"  # in words, for pages
    obs_dim = "obs"
    order_var = "mu"

    def __repr__(self) -> str:
        return "GaussianFamily()"

    def describe(self, spec: dict) -> str:
        """The model in words, for the report's summary line."""
        model = spec["model"]
        return f"Gaussian mixture, K = {model['components']}, {model['covariance']} covariance"

    def example(self) -> tuple[GaussianMixtureModel, GaussianParams, int]:
        """A small, well-separated case for the family contract test: (model, truth, number of rows)."""
        cov = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]])
        return (gaussian_model.GaussianMixtureModel(2, "full"),
                gaussian_model.GaussianParams.from_covariances([0.35, 0.65], [[-2.0, 0.0], [2.0, 1.0]], cov, "full"), 400)

    # spec ---------------------------------------------------------------------------------------
    def spec_defaults(self) -> dict[str, dict[str, object]]:
        return {"data": {"columns": None, "drop": [], "percent": [], "categories": {}, "standardize": False},
                "model": {"covariance": "full", "reg_covar": 1e-6},
                "bayes": {"mu_loc": None, "mu_scale": None, "sigma_scale": None, "lkj_eta": 2.0, "w_concentration": 1.0},
                "em": {"kmeans": True}, "model_choice": {"covariance": None}}

    #: ``[em] init = "auto"``: scikit-learn's k-means++ centres (what every bundled Gaussian spec uses)
    auto_init = "k-means++"

    def check_init(self, value) -> str | None:
        """``[em] init``: scikit-learn's init_params names or a table of parameters
        (:func:`emvsbayes.spec.gaussian_init`)."""
        from emvsbayes.spec import gaussian_init

        return gaussian_init(value)

    def check_spec(self, spec: dict) -> None:
        """The restart rule's defaults and Gaussian-only combinations of keys (the message is prefixed with
        the spec's name by the caller)."""
        from emvsbayes.spec import GAUSSIAN_MAX_INIT, GAUSSIAN_REACH_BEST

        data, em_spec = spec["data"], spec["em"]
        if data["truth"] is not None and data["file"] is None:
            raise UserError("[data] truth names a column of known groups in a CSV file of measurements; "
                            "use it with file = \"...\" and family = \"gaussian\", or remove it")
        if em_spec["reach_best"] is None:
            em_spec["reach_best"] = GAUSSIAN_REACH_BEST
        if em_spec["max_init"] is None:
            em_spec["max_init"] = max(GAUSSIAN_MAX_INIT, em_spec["n_init"])
        if em_spec["max_init"] < em_spec["n_init"]:
            raise UserError(f"[em] max_init = {em_spec['max_init']} is fewer than n_init = {em_spec['n_init']}; "
                            f"max_init is the most starts, so give at least {em_spec['n_init']}")
        if em_spec["reach_best"] > em_spec["max_init"]:
            raise UserError(f"[em] reach_best = {em_spec['reach_best']} starts can never agree within "
                            f"max_init = {em_spec['max_init']} starts; raise max_init or lower reach_best")

    # data ---------------------------------------------------------------------------------------
    def load_data(self, spec: dict) -> ContinuousData:
        from emvsbayes import data as datasets
        from emvsbayes.spec import resolve_data_path

        data_spec = spec["data"]
        if data_spec["dataset"] is not None:
            loaded = datasets.load_dataset(data_spec["dataset"], **_continuous_options(data_spec, dataset=True))
        else:
            loaded = datasets.load_continuous_csv(resolve_data_path(spec), **_continuous_options(data_spec, dataset=False))
        if not hasattr(loaded, "x"):
            raise UserError(f"[data] {data_spec['dataset'] or data_spec['file']} does not hold continuous measurements "
                            "for the gaussian model; pick a data set of that kind")
        return loaded

    def data_from_memory(self, data, spec: dict, source: str):
        """(:class:`ContinuousData` as fitted, the chosen columns before z-scoring) of rows in memory."""
        from emvsbayes.data.memory import continuous_record

        return continuous_record(data, spec["data"], source)

    def data_csv(self, data: ContinuousData, raw) -> tuple[str, dict]:
        from emvsbayes.data.memory import continuous_csv

        return continuous_csv(data, raw)

    def check_data(self, spec: dict, data) -> None:
        from emvsbayes import limits

        k = spec["model"]["components"]
        x = _matrix(data)
        n, d = x.shape
        if k > n:
            raise UserError(f"[model] components = {k} is more than the {n} rows of data; use at most {n}")
        bayes_spec = spec["bayes"]
        for key in ("mu_loc", "mu_scale", "sigma_scale"):
            value = bayes_spec[key]
            if isinstance(value, list) and len(value) not in (1, d):
                raise UserError(f"[bayes] {key} has {len(value)} values but the data have {d} columns; "
                                f"give one number, or one per column ({name_listing(data.columns)})")
        if bayes_spec["enabled"] and bayes_spec["sigma_scale"] is None:
            constant = [str(name) for name, column in zip(data.columns, x.T) if np.all(column == column[0])]
            if constant and len(constant) == d:
                # no column left to keep: dropping the constant one is no fix
                raise UserError(f"every row has the same value{'s' if d > 1 else ''} ({', '.join(constant[:3])}"
                                f"{', ...' if d > 3 else ''}), so there is nothing to cluster; give data whose values differ")
            if constant:
                raise UserError(f"column {constant[0]!r} has the same value in every row, so its default prior scale is 0; "
                                f"leave it out with [data] drop = [{constant[0]!r}] or set [bayes] sigma_scale")
        if bayes_spec["enabled"]:
            limits.check_sampled_spread(x, data.columns, "standardize = true, or ")
        if isinstance(spec["em"]["init"], dict):
            check_given_init(model_from_spec(spec), x, spec["em"]["init"])
        limits.check_run(spec, n, d)

    def n_observations(self, data) -> int:
        return int(np.shape(data.x)[0])

    def size_facts(self, d: int) -> dict:
        """For the memory estimates (:mod:`emvsbayes.limits`): w, mu (D), covariance and its Cholesky factor
        (D x D each) per component; no per-row statistics in the trace."""
        return {"params_per_component": 1 + d + 2 * d * d, "trace_per_observation": 0, "observations": "rows"}

    def study_shape(self, cell: dict) -> tuple[int, int]:
        return cell["n_obs"], cell["dim"]

    def data_shape(self, data) -> tuple[int, int]:
        return np.shape(data.x)

    def data_group(self, spec: dict, data):
        import xarray as xr

        x = _matrix(data)
        data_ds = xr.Dataset({"x": (("obs", "feature"), x)}, coords={"obs": list(data.labels), "feature": list(data.columns)})
        if data.true_component is not None:
            data_ds["true_component"] = ("obs", np.asarray(data.true_component))
        if getattr(data, "truth", None) is not None:
            # Known groups ([data] truth): kept beside the data, never fitted; truth_agreement grades the clusterings.
            data_ds["truth"] = ("obs", np.asarray(data.truth, dtype=str))
            data_ds["truth"].attrs["column"] = data.truth_column or ""
        data_ds.attrs.update(source=data.source, kind="continuous", transforms=list(data.transforms))
        return data_ds

    def coords(self, spec: dict, model_def, data) -> dict:
        return {"component": np.arange(model_def.n_components), "obs": list(data.labels), "feature": list(data.columns),
                "feature_bis": list(data.columns)}

    # model and parameters ------------------------------------------------------------------------
    def model_from_spec(self, spec: dict, data=None, n_components: int | None = None,
                        covariance: str | None = None) -> GaussianMixtureModel:
        return model_from_spec(spec, n_components, covariance)

    def model_choice_model(self, spec: dict, data, n_components: int) -> GaussianMixtureModel:
        """The model for one K of ``[model_choice]`` (its own covariance structure, if it names one)."""
        return model_from_spec(spec, n_components, spec["model_choice"]["covariance"] or spec["model"]["covariance"])

    def parameters(self, model_def, data) -> dict[str, ParameterInfo]:
        dims = gaussian_model.parameter_dims(np.shape(data.x)[1])
        return {name: ParameterInfo(d, ("component",), SCALES[name]) for name, d in dims.items()}

    def n_free_parameters(self, model_def, data) -> int:
        return model_def.n_free_parameters(np.shape(data.x)[1])

    def variables(self, params: GaussianParams) -> dict[str, np.ndarray]:
        return params.variables()

    def params_from_variables(self, model_def, variables: Mapping) -> GaussianParams:
        w, mu = np.asarray(variables["w"]), np.asarray(variables["mu"])
        if "sigma" in variables:
            cov = (np.asarray(variables["sigma"], dtype=float) ** 2)[:, None, None]
            mu = mu.reshape(-1, 1)
        else:
            cov = np.asarray(variables["cov"], dtype=float)
        if model_def.covariance_type == "full":
            return gaussian_model.GaussianParams.from_covariances(w, mu, cov, "full")
        # the other structures: covariances as the structure keeps them
        k, d = mu.shape
        if model_def.covariance_type == "tied":
            return gaussian_model.GaussianParams.from_covariances(w, mu, cov[0], "tied")
        if model_def.covariance_type == "diag":
            return gaussian_model.GaussianParams.from_covariances(w, mu, np.diagonal(cov, axis1=1, axis2=2), "diag")
        return gaussian_model.GaussianParams.from_covariances(w, mu, cov[:, 0, 0], "spherical")

    def estimated_variables(self, model_def, params) -> dict[str, np.ndarray]:
        return params.variables()

    def validate_params(self, model_def, params) -> None:
        model_def.validate_params(params)

    def loglik(self, model_def, data, params) -> float:
        return model_def.loglik(params, _matrix(data))

    def log_joint(self, model_def, data, params) -> np.ndarray:
        return model_def.log_joint(params, _matrix(data))

    # EM -----------------------------------------------------------------------------------------
    def starts(self, model_def, data, em_spec: dict, rng) -> tuple[Callable, RestartPolicy]:
        return start_source(model_def, _matrix(data), em_spec, rng)

    def fit_chunked(self, model_def, x, init, *, kind: str = "soft", client=None, **options):
        """EM on a row-chunked dask array (``[data] store``): :func:`emvsbayes.gaussian.chunked.fit`."""
        from emvsbayes.gaussian import chunked

        return chunked.fit(model_def, x, init, kind=kind, client=client, **options)

    def random_starts(self, model_def, data, n_init: int, rng) -> list[GaussianParams]:
        """k-means++ starts, restart j from the j-th child of ``rng``; a start that cannot be made (a
        component with too few points) is skipped."""
        inits = []
        for child in rng.spawn(n_init):
            try:
                inits.append(gaussian_init.initial_params(model_def, _matrix(data), "k-means++", child))
            except (DegenerateFitError, np.linalg.LinAlgError, FloatingPointError):
                continue
        return inits

    def e_step(self, model_def, data, params):
        return em.e_step(model_def, em.prepare(model_def, _matrix(data)), params)

    def hard_e_step(self, model_def, data, params):
        return em.hard_e_step(model_def, em.prepare(model_def, _matrix(data)), params)

    def m_step(self, model_def, data, stats, params):
        return em.m_step(model_def, stats, params)

    def responsibilities(self, model_def, data, params) -> np.ndarray:
        return np.exp(em.log_resp(model_def, params, _matrix(data)))

    def fit(self, model_def, data, init, *, kind: str = "soft", **options):
        return em.fit(model_def, _matrix(data), init, kind=kind, **options)

    def fit_batched(self, model_def, sets, init, n_fits: int, **options):
        """Soft EM over a leading replicate axis (:func:`emvsbayes.gaussian.em.fit_batched`)."""
        return em.fit_batched(model_def, sets, init, n_fits, **options)

    def map_fit(self, model_def, data, init, options: dict):
        """MAP-EM under the PyMC model's priors, every structure (:func:`emvsbayes.gaussian.map_em.fit_gaussian_map`)."""
        from emvsbayes.gaussian.map_em import fit_gaussian_map

        return fit_gaussian_map(model_def, _matrix(data), init, **options)

    def weighted_fit(self, model_def, data, init, weights, options: dict):
        """Soft EM of each row of ``weights`` (B, N) from ``init``, in the data's own standardised frame."""
        x = _matrix(data)
        weights = np.asarray(weights, dtype=float)
        sets = em.GaussianSets(x[None], weights, em.prepare(model_def, x).frame)
        return em.fit_batched(model_def, sets, init, len(weights), **options)

    def restart_batches(self, model_def, data, options) -> tuple[Callable | None, int]:
        return batched_restarts(model_def, _matrix(data), options)

    def fit_resp(self, model_def, data, fit) -> np.ndarray:
        return self.responsibilities(model_def, data, fit.params)

    def trace_stats(self):
        return None, None

    # observed information -----------------------------------------------------------------------
    def unconstrained_names(self, model_def, data) -> tuple[str, ...]:
        return gaussian_unconstrained_names(model_def, np.shape(data.x)[1])

    def to_unconstrained(self, model_def, params) -> np.ndarray:
        return gaussian_unconstrained(model_def, params)

    def from_unconstrained(self, model_def, data, phi) -> GaussianParams:
        return gaussian_from_unconstrained(model_def, phi, np.shape(data.x)[1])

    def symbolic_loglik(self, model_def, data):
        import pytensor.tensor as pt

        phi = pt.vector("phi", dtype="float64")
        x = pt.constant(_matrix(data))
        return phi, _loglik_graph(phi, x, model_def.covariance_type, model_def.n_components, np.shape(data.x)[1])[0]

    def information_function(self, model_def, data) -> Callable:
        from emvsbayes.uncertainty.information import InformationTooLarge, too_large

        x = _matrix(data)
        # Rows are independent: blocks of them bound the memory. The vectorised Hessian of the covariances'
        # transforms also holds about K D numbers per Hessian entry whatever the rows (measured: D = 50, K = 2,
        # 2,651 coordinates, 5.5 GB asked for two rows).
        fixed = 8.0 * model_def.n_components * x.shape[1]
        # Refused before the program is built: building it for 10,301 coordinates (10 rows x 100 columns, K = 2,
        # full covariances) took over 20 GB, and the run was killed.
        reason = too_large(len(gaussian_unconstrained_names(model_def, x.shape[1])), fixed)
        if reason:
            raise InformationTooLarge(reason)
        fn = _information_function(model_def.covariance_type, model_def.n_components, x.shape[1])
        return lambda phi: fn.summed_over_rows(phi, x, fixed_per_entry=fixed)

    def information_reason(self, model_def, data, params) -> str:
        from emvsbayes.uncertainty.information import weight_reason

        return weight_reason(params.w, np.shape(data.x)[0])

    # Bayes --------------------------------------------------------------------------------------
    def pymc_model(self, model_def, data, coords=None):
        columns = None if coords is None else coords["feature"]
        return bayes.build_model(model_def, _matrix(data), columns=columns)

    def model_recipe(self, model_def, data, coords=None):
        from emvsbayes.sampling import ModelRecipe

        if coords is None:
            return ModelRecipe(bayes.build_model, (model_def, _matrix(data)))
        return ModelRecipe(bayes.build_model, (model_def, _matrix(data)), {"columns": coords["feature"]})

    def initvals(self, model_def, params_list) -> list[dict]:
        return bayes.initvals_from_params(model_def, list(params_list))

    def target_accept(self, value, params, data) -> float:
        """``"auto"`` decided by the smallest EM component's expected points."""
        from emvsbayes.sampling import resolve_target_accept

        return resolve_target_accept(value, float(np.min(params.w)) * np.shape(data.x)[0])

    def posterior_group(self, model_def, posterior, coords):
        return posterior

    def posterior_draws(self, model_def, posterior) -> dict[str, np.ndarray]:
        draws = {}
        for name in ("w", "mu", "sigma", "cov"):
            if name in posterior.data_vars:
                da = posterior[name].transpose("chain", "draw", ...)
                draws[name] = da.values.reshape(-1, *da.shape[2:])
        return draws

    def membership_draws(self, model_def, data, draws: Mapping[str, np.ndarray]) -> np.ndarray:
        return bayes.membership_probabilities(model_def, _matrix(data), draws)

    # simulation and resampling ------------------------------------------------------------------
    def simulate(self, model_def, params: GaussianParams, n: int, rng, like=None) -> ContinuousData:
        from emvsbayes.data import simulate_gaussian_mixture

        return simulate_gaussian_mixture(n, params.w, params.mu, params.full_covariances(), rng)

    def resample(self, data, rng) -> ContinuousData:
        x = _matrix(data)
        rows = rng.integers(0, x.shape[0], size=x.shape[0])
        return ContinuousData(x[rows], tuple(data.columns), tuple(np.asarray(data.labels)[rows]))

    def prior_draw(self, model_def: GaussianMixtureModel, rng, data=None) -> GaussianParams:
        """1-D draws from the priors as given (``mu_loc``, ``mu_scale``, ``sigma_scale`` numbers): w ~
        Dirichlet, mu_k ~ Normal, sd ~ HalfNormal (one if tied)."""
        priors = model_def.priors
        k = model_def.n_components
        w = rng.dirichlet(np.full(k, float(priors.w_concentration)))
        mu = rng.normal(priors.mu_loc[0], priors.mu_scale[0], size=k)
        if model_def.ordered:
            mu = np.sort(mu)
        n_sd = 1 if model_def.covariance_type == "tied" else k
        sd = np.abs(rng.normal(0.0, priors.sigma_scale[0], size=n_sd)) * np.ones(k)
        return gaussian_model.GaussianParams.from_covariances(w, mu[:, None], (sd**2)[:, None, None], "full")

    # studies (emvsbayes.study): a cell's model, truth and data; data as named arrays for the sampler
    observed = {"x": "x"}  # the PyMC model's observed variable -> the array holding its data

    def study_axes(self) -> dict:
        """Grid axes of a study: name -> (default, check of one value); ``separation`` is the distance
        between neighbouring true means in standard deviations."""
        from emvsbayes.spec import one_of, positive_int
        from emvsbayes.study.spec import SAMPLERS, non_negative_number, prior_name

        return {
            "components": (2, positive_int),
            "n_obs": (100, positive_int),
            "dim": (1, positive_int),
            "separation": (3.0, non_negative_number),
            "variant": ("symmetric", one_of("symmetric", "ordered")),
            "sampler": ("numpyro", one_of(*SAMPLERS)),
            "prior": ("default", prior_name),
        }

    def study_prior_keys(self) -> dict:
        """Prior keys of a study's ``[bayes]`` and ``[priors.NAME]``: fixed numbers, not scaled to each data
        set (a replicate's prior must not depend on its data: SBC needs a proper prior to draw from, and the
        compiled model is shared by a cell's replicates)."""
        from emvsbayes.spec import Key, positive_number
        from emvsbayes.study.spec import number

        return {"w_concentration": Key(1.0, positive_number), "mu_loc": Key(0.0, number),
                "mu_scale": Key(5.0, positive_number), "sigma_scale": Key(2.0, positive_number),
                "lkj_eta": Key(2.0, positive_number)}

    def study_check(self, cell: dict, kind: str, source: str) -> None:
        """SBC draws its truths from the 1-D prior only; the true means, ``separation`` sds apart, must stay
        where their squares are finite (as a CSV's values must)."""
        if kind == "sbc" and cell["dim"] != 1:
            raise UserError(f"{source}: [grid] dim: SBC supports 1-D Gaussian mixtures only; use dim = [1]")
        from emvsbayes.spec import MAX_MAGNITUDE

        span = cell.get("separation", 0.0) * max(cell.get("components", 2) - 1, 1)
        if span > MAX_MAGNITUDE:
            raise UserError(f"{source}: [grid] separation = {cell['separation']:g} puts the true means {span:g} sds apart, "
                            f"beyond {MAX_MAGNITUDE:.0e} where their squares overflow floating point; use a few sds (3 is the "
                            "default)")

    def study_model(self, spec: dict, cell: dict, prior: dict) -> GaussianMixtureModel:
        priors = gaussian_model.GaussianPriors(w_concentration=prior["w_concentration"], mu_loc=(float(prior["mu_loc"]),),
                                mu_scale=(float(prior["mu_scale"]),), sigma_scale=(float(prior["sigma_scale"]),),
                                lkj_eta=prior["lkj_eta"])
        return gaussian_model.GaussianMixtureModel(n_components=cell["components"], covariance_type=spec["model"]["covariance"],
                                    reg_covar=spec["model"]["reg_covar"], ordered=cell["variant"] == "ordered",
                                    priors=priors)

    def study_truth(self, spec: dict, cell: dict, model_def, rng) -> GaussianParams:
        """Means ``separation`` sds apart (:func:`~emvsbayes.data.separated_gaussian_mixture`); the spec's
        weights if given. Kept with full covariances: the estimands are the true (co)variances whatever
        structure the fitted model assumes."""
        from emvsbayes.data import separated_gaussian_mixture

        w, mu, cov = separated_gaussian_mixture(cell["components"], cell["dim"], cell["separation"], rng)
        if spec["truth"]["w"] is not None:
            w = np.asarray(spec["truth"]["w"], dtype=float) / np.sum(spec["truth"]["w"])
        return gaussian_model.GaussianParams.from_covariances(w, mu, cov, "full")

    def study_data(self, model_def, params: GaussianParams, cell: dict, rng) -> ContinuousData:
        return self.simulate(model_def, params, cell["n_obs"], rng)

    def as_arrays(self, data) -> dict[str, np.ndarray]:
        return {"x": _matrix(data)}

    def from_arrays(self, arrays: Mapping[str, np.ndarray]) -> ContinuousData:
        return as_continuous_data(arrays["x"])

    def bootstrap_target(self, model_def, data) -> tuple[GaussianBootstrap, Any]:
        return GaussianBootstrap(model_def), gaussian_model.as_data_matrix(data.x)

    # extras -------------------------------------------------------------------------------------
    def extra_groups(self, spec, model_def, data, best_fit, rng, timings) -> dict:
        """k-means from k-means++ centres (drawn from the EM stage's generator, after the starts)."""
        import xarray as xr

        from emvsbayes.gaussian.kmeans import kmeans, kmeans_plusplus

        if not spec["em"]["kmeans"]:
            return {}
        x = _matrix(data)
        coords = self.coords(spec, model_def, data)
        centres, _ = kmeans_plusplus(x, model_def.n_components, rng)
        result = kmeans(x, centres)
        group = xr.Dataset({"labels": ("obs", result.labels), "centres": (("component", "feature"), result.centres)},
                           coords={"obs": coords["obs"], "component": coords["component"], "feature": coords["feature"]})
        group.attrs.update(inertia=result.inertia, n_iter=result.n_iter, converged=int(result.converged))
        return {"kmeans": group}

    def estimate_attrs(self, model_def, data, fit, failures) -> dict:
        """Restart failures, BIC and AIC, and ``degenerate``: why a component of the answer is no cluster (too
        few points for its covariance, or a covariance singular but for reg_covar), "" when none is."""
        n, d = np.shape(data.x)
        p = model_def.n_free_parameters(d)
        return dict(n_failed_restarts=len(failures), failure=failures[0] if failures else "", n_free_parameters=p,
                    bic=-2 * fit.loglik + p * np.log(n), aic=-2 * fit.loglik + 2 * p,
                    # rows held in memory: both rules; a store's rows (a Dask array) are not read again here, so
                    # only the covariance rule, which needs the parameters alone
                    degenerate="; ".join(_degeneracy(model_def, fit.params,
                                                     data.x if isinstance(data.x, np.ndarray) else None)[1]))

    def model_choice_run(self, model_def, data, em_spec, rng, fit_until):
        """Soft EM for one K of the model choice, under the spec's restart rule, from k-means++ starts (the
        spec's own ``init`` may be parameters for another K)."""
        x = _matrix(data)

        def degenerate(fit) -> bool:
            return bool(_degeneracy(model_def, fit.params, x)[1])

        # Once the best of n_init starts is degenerate, more starts only find spikes on fewer points (or other
        # collapsed covariances: a better log-likelihood there measures reg_covar).
        return fit_until(gaussian_init.initial_params_source(model_def, x, "k-means++", rng), restart_policy(em_spec), futile=degenerate)

    def model_choice_checks(self, model_def, data, run) -> dict:
        """Before EM (``run`` None): K beyond the rows, more free parameters than numbers in the data; after:
        components too small for their covariance or with a covariance singular but for reg_covar, a best optimum
        reached by a single start."""
        x = _matrix(data)
        (n, d), k = x.shape, model_def.n_components
        if run is None:
            from emvsbayes.uncertainty.model_choice import ill_posed

            unposed = ill_posed(model_def.n_free_parameters(d), n * d)
            return {"notes": [f"K = {k} is more than the {n} rows"] if k > n else [], "too_many": k > n,
                    "late_notes": unposed["late_notes"], "skip_bayes": k > n or unposed["skip_bayes"]}
        counts, notes = _degeneracy(model_def, run.restarts.best.params, x)
        degenerate = bool(notes)
        if not degenerate and run.n_reached_best < 2:
            notes.append(f"the best log-likelihood was reached by only {run.n_reached_best} of "
                         f"{run.n_starts} EM starts: a better optimum may exist")
        return {"notes": notes, "row": {"expected_counts": counts, "degenerate": degenerate}}

    def model_choice_attrs(self, spec: dict, data) -> dict:
        from emvsbayes.uncertainty.model_choice import min_component_points

        n, d = np.shape(data.x)
        covariance = spec["model_choice"]["covariance"] or spec["model"]["covariance"]
        return dict(covariance=covariance, n_obs=n, n_features=d, min_component_points=min_component_points(covariance, d))


FAMILY = GaussianFamily()


def _degeneracy(model_def, params, x) -> tuple[np.ndarray | None, list[str]]:
    """The expected points of each component of a fit (None without the rows), and one note per way its components
    are no cluster: too few expected points for their covariance, or a covariance singular but for reg_covar (see
    :mod:`emvsbayes.uncertainty.model_choice`); no note when every component is a cluster. Without the rows
    (``x`` None) only the covariance rule, which needs the parameters alone. One E-step on the rows."""
    from emvsbayes.uncertainty.model_choice import degenerate_components, singular_components

    singular = singular_components(params.full_covariances(), model_def.reg_covar)
    if x is None:
        return None, [_singular_note(model_def, params, singular)] if singular.size else []
    counts = expected_counts(model_def, params, x)
    small = degenerate_components(counts, model_def.covariance_type, x.shape[1])
    singular = np.setdiff1d(singular, small)  # a spike's covariance is singular too: one note for it, the first
    notes = []
    if small.size:
        notes.append(_degenerate_note(counts, small, model_def.covariance_type, x.shape[1]))
    if singular.size:
        notes.append(_singular_note(model_def, params, singular, x))
    return counts, notes


#: A column whose variance is below this many reg_covar is swamped by it: a component's covariance then measures
#: reg_covar whatever the data (data in kilometres written in thousands of km, x 1e-4: both means ended at the mean).
SWAMPED_BY_REG_COVAR = 1e3


def _singular_note(model_def, params, singular: np.ndarray, x: np.ndarray | None = None) -> str:
    smallest = np.linalg.eigvalsh(params.full_covariances()[singular])[:, 0]
    shown = ", ".join(f"{int(k)}" for k in singular[:6]) + (", ..." if len(singular) > 6 else "")
    one = len(singular) == 1
    return (f"degenerate: the covariance{'' if one else 's'} of component{'' if one else 's'} {shown} of EM's answer "
            f"{'is' if one else 'are'} singular but for reg_covar = {model_def.reg_covar:g} (smallest variance "
            f"{np.min(smallest):.2g}): {'its' if one else 'their'} members do not vary along some direction (as when "
            f"they all share one value of a column), so {'its' if one else 'their'} likelihood measures reg_covar, not the data"
            + _scale_hint(model_def, x))


def _scale_hint(model_def, x: np.ndarray | None) -> str:
    """Where the data's own variances are of reg_covar's size, the fix is the scale, not the model."""
    if x is None or x.shape[0] < 2:
        return ""
    variances = np.var(x, axis=0)
    j = int(np.argmin(variances))
    if not variances[j] < SWAMPED_BY_REG_COVAR * model_def.reg_covar:
        return ""
    return (f"; the data's own variance is as small as {variances[j]:.2g} (column {j + 1}), near reg_covar: standardize = "
            "true (or a smaller reg_covar) fits the data, not the regularisation")


def _degenerate_note(counts: np.ndarray, small: np.ndarray, covariance: str, d: int) -> str:
    from emvsbayes.uncertainty.model_choice import min_component_points

    shown = small[np.argsort(counts[small], kind="stable")][:6]  # the smallest, so a K = 30 note stays a line
    held = ", ".join(f"{counts[i]:.1f}" for i in shown) + (", ..." if len(small) > len(shown) else "")
    return (f"degenerate: {len(small)} component{'s' if len(small) > 1 else ''} of EM's answer hold{'' if len(small) > 1 else 's'} "
            f"{held} expected points, fewer than the {min_component_points(covariance, d)} needed to estimate a "
            f"{covariance} covariance in {d}-D (a spike on a few points, not a cluster)")


def _continuous_options(data_spec: dict, *, dataset: bool) -> dict:
    options = {}
    if data_spec["columns"] is not None:
        options["columns"] = data_spec["columns"]
    if data_spec["standardize"]:
        options["standardize"] = True
    if not dataset:
        options.update(encoding=data_spec["encoding"], delimiter=data_spec["delimiter"], label=data_spec["label"],
                       percent=tuple(data_spec["percent"]), categories=data_spec["categories"] or None,
                       drop=tuple(data_spec["drop"]), truth=data_spec["truth"])
    return options


# --------------------------------------------------------------------------------------------------
# The Gaussian functions of the generic uncertainty code, with arrays in (as before the family protocol)


def gaussian_standard_errors(model: GaussianMixtureModel, x, params: GaussianParams, *, level: float = 0.95):
    """Observed-information standard errors and Wald intervals of a Gaussian-mixture answer
    (:func:`emvsbayes.uncertainty.information.standard_errors`)."""
    from emvsbayes.uncertainty.information import standard_errors

    return standard_errors(FAMILY, model, as_continuous_data(x), params, level=level)


def gaussian_criteria(model: GaussianMixtureModel, x, params: GaussianParams):
    """BIC, AIC, ICL of a Gaussian-mixture answer; p is scikit-learn's count for the structure, so
    ``bic`` equals ``GaussianMixture.bic(x)`` at the same parameters."""
    from emvsbayes.uncertainty.model_choice import criteria

    return criteria(FAMILY, model, as_continuous_data(x), params)


def gaussian_bootstrap(model: GaussianMixtureModel, x, reference: GaussianParams, **options):
    """Bootstrap a Gaussian-mixture EM answer (:func:`emvsbayes.uncertainty.bootstrap.run_bootstrap`)."""
    from emvsbayes.uncertainty.bootstrap import run_bootstrap

    return run_bootstrap(FAMILY, model, as_continuous_data(x), reference, **options)
