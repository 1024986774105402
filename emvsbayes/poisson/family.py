"""The Poisson mixture as a model family: every member of the family protocol (``emvsbayes.family``).

One definition (:mod:`emvsbayes.poisson.model`) is read by both engines: EM (:mod:`emvsbayes.poisson.em`)
and PyMC (:mod:`emvsbayes.poisson.bayes`). The observed information comes from one symbolic
log-likelihood of the unconstrained vector ``phi = (log rate_0 .. log rate_{K-1}, log(w_0/w_{K-1}) ..
log(w_{K-2}/w_{K-1}))``: log rates because a rate ranges over (0, inf), additive log-ratios of the weights
(the last component the reference) as for the other families.

Spec keys of this family (beside the generic ones):

- ``[data] counts``: the CSV column of counts (default ``"count"``);
- ``[bayes] rate_prior``: ``"auto"`` (Gamma with shape 2 and mean the mean count,
  :func:`emvsbayes.poisson.model.default_rate_prior`) or ``[alpha, beta]`` (shape, rate);
- ``[em] init``: ``"auto"`` (= ``"k-means++"``), ``"k-means++"``, ``"random"``, a list of K starting rates
  (equal weights), or a table ``{ rate = [...], w = [...] }``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from emvsbayes.data.records import CountData
from emvsbayes.em import SAME_OPTIMUM_ATOL, EMFit, RestartPolicy
from emvsbayes.errors import UserError
from emvsbayes.lazy_imports import lazy_module

if TYPE_CHECKING:  # pragma: no cover - names for annotations only
    from emvsbayes.poisson.model import PoissonMixture, PoissonParams

# Imported on first use: spec checks and data loading read this module and must not import SciPy.
em = lazy_module("emvsbayes.poisson.em")
bayes = lazy_module("emvsbayes.poisson.bayes")
poisson_model = lazy_module("emvsbayes.poisson.model")

#: Starting points em.random_start draws (as emvsbayes.poisson.INIT_METHODS; written out: that module
#: imports SciPy).
INIT_METHODS = ("k-means++", "random")

try:
    from emvsbayes.family import ParameterInfo
except ImportError:  # before the protocol module (branch proto) is merged: the same record, field for field

    class ParameterInfo(NamedTuple):  # type: ignore[no-redef]
        dims: tuple[str, ...]
        label_dims: tuple[str, ...]
        scale: str


def _show(value) -> str:
    from emvsbayes.spec import show_value

    return show_value(value)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_numbers(value, length: int | None = None) -> bool:
    return (isinstance(value, list) and bool(value) and (length is None or len(value) == length)
            and all(_is_number(v) and v > 0 for v in value))


def information_graph(n_components: int):
    """The Poisson mixture's log-likelihood and natural variables (w then rate) as an
    :class:`~emvsbayes.uncertainty.information_programs.InformationGraph` of (phi, counts)."""
    import pytensor.tensor as pt

    from emvsbayes.uncertainty.information_programs import InformationGraph

    phi = pt.tensor("phi", shape=(2 * n_components - 1,), dtype="float64")
    x = pt.vector("counts", dtype="float64")
    log_rate, log_w = PoissonFamily._symbolic_parts(phi, n_components)
    log_joint = (log_w[None, :] + x[:, None] * log_rate[None, :] - pt.exp(log_rate)[None, :]
                 - pt.gammaln(x + 1.0)[:, None])
    natural = pt.concatenate([pt.exp(log_w), pt.exp(log_rate)])
    return InformationGraph(phi, (x,), pt.logsumexp(log_joint, axis=1).sum(), natural)


@functools.cache
def _information_function(n_components: int) -> Callable:
    """(phi, counts) -> (loglik, gradient, Hessian, natural values, Jacobian) for K components: an exported
    program stored once per K."""
    from emvsbayes.uncertainty.information_programs import InformationRecipe, information_program

    return information_program(InformationRecipe(information_graph, (n_components,)))


def restart_policy(em_spec: dict) -> RestartPolicy:
    """``n_init`` starts, all of them (the spec's ``reach_best`` / ``max_init`` are the Gaussian rule). Two
    starts are at one optimum when their log-likelihoods agree within 100 ``tol`` (a slow fit may stop that
    far short of its optimum)."""
    n = em_spec.get("n_init", 10)
    return RestartPolicy(min_starts=n, reach_best=1, max_starts=n,
                         loglik_atol=max(SAME_OPTIMUM_ATOL, 100 * em_spec.get("tol", 1e-8)))


@dataclass(frozen=True, slots=True)
class PoissonBootstrap:
    """How the generic bootstrap resamples, simulates and refits (data as the (N,) counts)."""

    model: PoissonMixture

    def n_obs(self, data) -> int:
        return int(data.shape[0])

    def take(self, data, rows):
        return data[rows]

    def simulate(self, data, params: PoissonParams, rng):
        z = rng.choice(self.model.n_components, size=data.shape[0], p=params.w)
        return rng.poisson(params.rate[z]).astype(np.int64)

    def refit(self, data, init: PoissonParams, options):
        return em.fit(self.model, data, init, **options)

    def single_fit_size(self, data, reference) -> int:
        return int(data.shape[0]) * self.model.n_components

    def refit_batched(self, data, samples, counts, init: PoissonParams, options):
        if samples is None:
            sets = em.CountSets(np.asarray(data, dtype=float)[None], counts)
        else:
            sets = em.CountSets(np.stack([np.asarray(one, dtype=float) for one in samples]))
        return em.fit_batched(self.model, sets, init, len(counts) if samples is None else len(samples), **options)

    def dims(self, reference) -> dict[str, tuple[str, ...]]:
        return poisson_model.parameter_dims()


class PoissonFamily:
    """Poisson mixtures of counts: K rates and K weights, label dim ``component``."""

    name = "poisson"
    title = "Poisson mixtures"  # in words, for pages
    obs_dim = "obs"

    def describe(self, spec: dict) -> str:
        """The model in words, for the report's summary line."""
        return f"Poisson mixture, K = {spec['model']['components']}"

    #: the posterior variable relabelling orders components by (relabel = "order")
    order_var = "rate"

    def __repr__(self) -> str:
        return "PoissonFamily()"

    def example(self) -> tuple[PoissonMixture, PoissonParams, int]:
        """A small, well-separated case for the family contract test: (model, truth, number of rows)."""
        return poisson_model.PoissonMixture(2, rate_prior=(2.0, 0.25)), poisson_model.PoissonParams([0.35, 0.65], [3.0, 12.0]), 400

    # -- spec -------------------------------------------------------------------------------------

    def spec_key_docs(self) -> dict[tuple[str, str], str]:
        return {
            ("data", "counts"): "the column of counts in `file`",
            ("bayes", "rate_prior"): 'Gamma [shape, rate] prior of each component\'s rate; "auto": shape 2 and mean the mean count',
        }

    def spec_defaults(self) -> dict[str, dict[str, object]]:
        """Keys this family reads that not every family does, per table, with their defaults."""
        return {"data": {"counts": "count"}, "bayes": {"rate_prior": "auto", "w_concentration": 1.0}}

    #: what ``[em] init = "auto"`` becomes
    auto_init = "k-means++"

    def check_init(self, value) -> str | None:
        """``[em] init``: "auto", "k-means++", "random", starting rates, or a table of rates and weights; the
        problem (the caller names the key), or None."""
        if isinstance(value, str):
            if value != "auto" and value not in INIT_METHODS:
                return (f"= {_show(value)} is not a Poisson start; use \"auto\", "
                        f"{', '.join(repr(m) for m in INIT_METHODS)}, or starting rates such as [10, 30]")
        elif isinstance(value, list):
            if not _positive_numbers(value):
                return f"must list positive starting rates such as [10, 30], got {_show(value)}"
        elif isinstance(value, dict):
            example = "{ rate = [10, 30], w = [0.5, 0.5] }"
            unknown = [key for key in value if key not in ("rate", "w")]
            if unknown:
                return (f"has the key {_show(unknown[0])}, which is neither rate nor w: as a table it gives the starting "
                        f"rates and weights, e.g. {example}")
            if set(value) != {"rate", "w"} or not _positive_numbers(value["rate"]) or not _positive_numbers(value["w"]):
                return (f"as a table needs rate = [...] and w = [...], positive numbers, e.g. {example}, got "
                        f"{_show(value)}")
        else:
            return f"must be \"auto\", \"k-means++\", \"random\" or starting rates, got {_show(value)}"
        return None

    def check_spec(self, spec: dict) -> None:
        """One-line UserError for a family key of the wrong form or a key this family does not take, naming the
        key and the fix (the caller prefixes the spec's name)."""
        data, em_spec = spec.get("data", {}), spec.get("em", {})
        counts = data.get("counts", "count")
        if not (isinstance(counts, str) and counts.strip()):
            raise UserError(f"[data] counts must name the column of counts, e.g. counts = \"count\", got {_show(counts)}")
        prior = spec.get("bayes", {}).get("rate_prior", "auto")
        if prior != "auto" and not _positive_numbers(prior, 2):
            raise UserError(f"[bayes] rate_prior must be \"auto\" or [alpha, beta], the Gamma prior's positive shape "
                            f"and rate, e.g. [2, 0.1], got {_show(prior)}")
        problem = self.check_init(em_spec.get("init", "auto"))
        if problem:
            raise UserError(f"[em] init {problem}")
        if data.get("truth") is not None:
            raise UserError("[data] truth names a column of known groups in a CSV file of measurements; "
                            "use it with file = \"...\" and family = \"gaussian\", or remove it")
        for key in ("reach_best", "max_init"):
            if em_spec.get(key) is not None:
                raise UserError(f"[em] {key} applies to Gaussian mixtures only; Poisson mixtures run "
                                "n_init starts: remove it, or set n_init")

    # -- data -------------------------------------------------------------------------------------

    def load_data(self, spec: dict) -> CountData:
        """The bundled data set or CSV column the spec names, as :class:`CountData`."""
        from emvsbayes.data import bundled, csv
        from emvsbayes.spec import resolve_data_path

        data_spec = spec["data"]
        if data_spec.get("dataset") is not None:
            name = data_spec["dataset"]
            info = bundled.dataset_info(name)
            if info.kind != "counts":
                kinds = [one.name for one in bundled.list_datasets() if one.kind == "counts"]
                raise UserError(f"[data] {name} does not hold counts for the poisson model; pick a data set of that "
                                f"kind ({', '.join(kinds)}) or a CSV file with [data] file and counts")
            return bundled.load_dataset(name)
        path = resolve_data_path(spec)
        if path is None:
            raise UserError("[data] names no data: give dataset = \"earthquakes\" or file = \"my_counts.csv\"")
        return csv.load_counts_csv(path, counts=data_spec.get("counts", "count"), label=data_spec.get("label"),
                                   encoding=data_spec.get("encoding", "utf-8"),
                                   delimiter=data_spec.get("delimiter", "auto"))

    def data_from_memory(self, data, spec: dict, source: str):
        """(:class:`CountData`, None) of counts in memory: a 1-D array or list, a Series, a DataFrame's column."""
        from emvsbayes.data.memory import count_record

        return count_record(data, spec["data"]["counts"], spec["data"]["label"], source), None

    def data_csv(self, data: CountData, raw) -> tuple[str, dict]:
        from emvsbayes.data.memory import count_csv

        return count_csv(data)

    def check_data(self, spec: dict, data: CountData) -> None:
        """Checks that need the data, made before anything is written."""
        n = data.n_rows
        if n == 0:
            raise UserError(f"{data.source}: no rows of counts; give a file with at least one count")
        ks = [("[model] components", spec["model"]["components"]),
              *(("[model_choice] components", k) for k in spec.get("model_choice", {}).get("components", []))]
        for where, k in ks:
            if isinstance(k, int) and k > n:
                raise UserError(f"{where} = {k} is more than the {n} rows of counts; use at most {n}")
        if not np.any(data.counts > 0):
            raise UserError(f"{data.source}: every count in column {data.column!r} is 0, so every rate's estimate is 0 "
                            "and nothing can be compared; check the column named by [data] counts")
        if np.all(data.counts == data.counts[0]) and spec["model"]["components"] > 1:
            raise UserError(f"{data.source}: every count in column {data.column!r} is {data.counts[0]:g}, so one rate "
                            f"explains them and {spec['model']['components']} components cannot be told apart; use "
                            "components = 1, or check the column named by [data] counts")
        from emvsbayes import limits

        largest = float(np.max(data.counts))
        if largest > limits.MAX_MIXTURE_COUNT:
            raise UserError(f"{data.source}: a count of {largest:,.0f} in column {data.column!r} is beyond "
                            f"{limits.MAX_MIXTURE_COUNT:,}, where {limits.MAX_MIXTURE_COUNT_WHY}; count in larger units")
        init = spec["em"]["init"]
        k = spec["model"]["components"]
        given = init if isinstance(init, list) else init.get("rate") if isinstance(init, dict) else None
        if given is not None and len(given) != k:
            raise UserError(f"[em] init gives {len(given)} starting rates for components = {k}; give {k}")
        if given is not None and len(set(given)) < len(given):
            # equal rates are a fixed point of EM: every count is shared alike, so they stay equal
            raise UserError(f"[em] init gives two components the same rate ({list(given)}): EM cannot separate them "
                            "from there; give different rates, or leave init out for automatic starts")
        if isinstance(init, dict) and len(init["w"]) != k:
            raise UserError(f"[em] init gives {len(init['w'])} weights for components = {k}; give {k}")
        limits.check_run(spec, n, 1)

    def n_observations(self, data: CountData) -> int:
        return data.n_rows

    def data_group(self, spec: dict, data: CountData):
        """The results.nc ``data`` group: ``x`` (obs) the counts, and ``true_component`` when known."""
        import xarray as xr

        ds = xr.Dataset({"x": ("obs", np.asarray(data.counts, dtype=np.int64))}, coords={"obs": list(data.labels)})
        if data.true_component is not None:
            ds["true_component"] = ("obs", np.asarray(data.true_component))
        ds.attrs.update(source=data.source, kind="counts", column=data.column)
        return ds

    def size_facts(self, d: int) -> dict:
        """For the memory estimates (:mod:`emvsbayes.limits`): w and rate per component, no per-row statistics
        in the trace."""
        return {"params_per_component": 2, "trace_per_observation": 0, "observations": "rows"}

    def study_shape(self, cell: dict) -> tuple[int, int]:
        """(observations, columns) of a study cell's data."""
        return cell["n_obs"], 1

    def data_shape(self, data: CountData) -> tuple[int, int]:
        """(rows, columns) for the size limits."""
        return data.n_rows, 1

    def coords(self, spec: dict, model_def: PoissonMixture, data: CountData) -> dict:
        return {"component": np.arange(model_def.n_components), "obs": list(data.labels)}

    # -- model and parameters ---------------------------------------------------------------------

    def model_from_spec(self, spec: dict, data: CountData, n_components: int | None = None) -> PoissonMixture:
        k = spec["model"]["components"] if n_components is None else n_components
        prior = spec["bayes"].get("rate_prior", "auto")
        return poisson_model.PoissonMixture(
            n_components=int(k),
            rate_prior=poisson_model.default_rate_prior(data.counts) if prior == "auto" else tuple(float(v) for v in prior),
            w_concentration=float(spec["bayes"].get("w_concentration", 1.0)),
            ordered=spec["bayes"].get("variant", "symmetric") == "ordered",
        )

    def parameters(self, model_def: PoissonMixture, data=None) -> dict[str, ParameterInfo]:
        return {
            "w": ParameterInfo(("component",), ("component",), "simplex"),
            "rate": ParameterInfo(("component",), ("component",), "log"),
        }

    def n_free_parameters(self, model_def: PoissonMixture, data=None) -> int:
        return model_def.n_free_parameters()

    def variables(self, params: PoissonParams) -> dict[str, np.ndarray]:
        return params.variables()

    def params_from_variables(self, model_def: PoissonMixture, variables: Mapping[str, np.ndarray]) -> PoissonParams:
        return poisson_model.PoissonParams(variables["w"], variables["rate"])

    def estimated_variables(self, model_def: PoissonMixture, params: PoissonParams) -> dict[str, np.ndarray]:
        """Every reported variable is estimated (as a study reports them)."""
        return params.variables()

    def validate_params(self, model_def: PoissonMixture, params: PoissonParams) -> None:
        model_def.validate_params(params)

    def loglik(self, model_def: PoissonMixture, data: CountData, params: PoissonParams) -> float:
        return model_def.loglik(params, data.counts)

    def log_joint(self, model_def: PoissonMixture, data: CountData, params: PoissonParams) -> np.ndarray:
        return model_def.log_joint(params, data.counts)

    def model_choice_model(self, spec: dict, data: CountData, n_components: int) -> PoissonMixture:
        return self.model_from_spec(spec, data, n_components)

    # -- EM ---------------------------------------------------------------------------------------

    def starts(self, model_def: PoissonMixture, data: CountData, em_spec: dict, rng: np.random.Generator
               ) -> tuple[Callable[[], PoissonParams], RestartPolicy]:
        """(a function giving the next start each call, the restart rule). Drawn starts come each from its own
        child generator of ``rng`` (start j is the same whatever the number of starts), ``n_init`` of them; a
        start given in the spec is the one start."""
        init = em_spec.get("init", "auto")
        k = model_def.n_components
        if isinstance(init, list):
            given = poisson_model.PoissonParams(np.full(k, 1.0 / k), init)
            return (lambda: given), RestartPolicy(min_starts=1, reach_best=1, max_starts=1)
        if isinstance(init, dict):
            w = np.asarray(init["w"], dtype=float)
            given = poisson_model.PoissonParams(w / w.sum(), init["rate"])
            return (lambda: given), RestartPolicy(min_starts=1, reach_best=1, max_starts=1)
        method = "k-means++" if init == "auto" else init
        return (lambda: em.random_start(model_def, data.counts, rng.spawn(1)[0], method)), restart_policy(em_spec)

    def random_starts(self, model_def: PoissonMixture, data: CountData, n_init: int, rng) -> list[PoissonParams]:
        """``n_init`` k-means++ starts (model choice, studies)."""
        return em.random_inits(model_def, data.counts, n_init, rng)

    def restart_batches(self, model_def: PoissonMixture, data: CountData, options) -> tuple[Callable | None, int]:
        """(soft EM from a list of starts as one batch, most starts per batch), or (None, 1) where one fit is
        large enough on its own: the bootstrap's size rule, N K values per fit."""
        from emvsbayes.uncertainty.bootstrap import BATCH_VALUES, LARGE_FIT

        size = data.n_rows * model_def.n_components
        if size > LARGE_FIT:
            return None, 1
        sets = em.CountSets(np.asarray(data.counts, dtype=float)[None])
        return (lambda inits: em.fit_batched(model_def, sets, inits, len(inits), **options)), max(1, BATCH_VALUES // size)

    def fit_resp(self, model_def: PoissonMixture, data: CountData, fit) -> np.ndarray:
        """The responsibilities reported with an EM fit (at its final parameters: a batched fit keeps no stats)."""
        return self.responsibilities(model_def, data, fit.params)

    def trace_stats(self):
        """No per-iteration statistics in the EM trace (the parameters and log-likelihood only)."""
        return None, None

    def e_step(self, model_def, data: CountData, params):
        return em.e_step(model_def, data.counts, params)

    def hard_e_step(self, model_def, data: CountData, params):
        return em.hard_e_step(model_def, data.counts, params)

    def m_step(self, model_def, data: CountData, stats, params):
        return em.m_step(model_def, stats, params)

    def responsibilities(self, model_def, data: CountData, params) -> np.ndarray:
        return em.responsibilities(model_def, data.counts, params)

    def fit(self, model_def, data: CountData, init, *, kind: str = "soft", **options) -> EMFit:
        return em.fit(model_def, data.counts, init, kind=kind, **options)

    def fit_batched(self, model_def, data: CountData | Sequence[CountData], init, n_fits: int, *,
                    row_weights: np.ndarray | None = None, **options):
        """Soft EM of ``n_fits`` fits at once: ``data`` one record shared by all (restarts; with ``row_weights``
        (n_fits, N), the multiplicities of a nonparametric bootstrap) or one record per fit (parametric
        bootstrap, simulated data); ``init`` one start for all or one per fit. See :func:`em.fit_batched`."""
        records = [data] if isinstance(data, CountData) else list(data)
        sets = em.CountSets(np.stack([np.asarray(one.counts, dtype=float) for one in records]),
                            None if row_weights is None else np.asarray(row_weights, dtype=float))
        return em.fit_batched(model_def, sets, init, n_fits, **options)

    def map_fit(self, model_def, data: CountData, init, options: dict) -> EMFit:
        """MAP-EM under the Gamma and Dirichlet priors (:func:`emvsbayes.poisson.map_em.fit_poisson_map`)."""
        from emvsbayes.poisson.map_em import fit_poisson_map

        return fit_poisson_map(model_def, data.counts, init, **options)

    def weighted_fit(self, model_def, data: CountData, init, weights, options: dict):
        """Soft EM of each row of ``weights`` (B, N) from ``init``: the weights are the rows' multiplicities."""
        weights = np.asarray(weights, dtype=float)
        return self.fit_batched(model_def, data, init, len(weights), row_weights=weights, **options)

    # -- observed information -------------------------------------------------------------------

    def unconstrained_names(self, model_def: PoissonMixture, data=None) -> tuple[str, ...]:
        k = model_def.n_components
        return tuple(f"log(rate[{j}])" for j in range(k)) + tuple(f"log(w[{j}]/w[{k - 1}])" for j in range(k - 1))

    def to_unconstrained(self, model_def: PoissonMixture, params: PoissonParams) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_rate, log_w = np.log(params.rate), np.log(params.w)
        return np.concatenate([log_rate, log_w[:-1] - log_w[-1]])

    def from_unconstrained(self, model_def: PoissonMixture, data, phi: np.ndarray) -> PoissonParams:
        k = model_def.n_components
        phi = np.asarray(phi, dtype=float)
        z = np.append(phi[k:], 0.0)
        z = np.exp(z - z.max())
        return poisson_model.PoissonParams(z / z.sum(), np.exp(phi[:k]))

    def symbolic_loglik(self, model_def: PoissonMixture, data: CountData):
        """``(phi, loglik)``: a pytensor float vector of length 2K - 1 and the observed-data log-likelihood
        as a scalar expression of it, the counts held as constants."""
        import pytensor.tensor as pt

        k = model_def.n_components
        phi = pt.vector("phi", dtype="float64")
        x = pt.constant(np.asarray(data.counts, dtype="float64"))
        log_rate, log_w = self._symbolic_parts(phi, k)
        log_joint = (log_w[None, :] + x[:, None] * log_rate[None, :] - pt.exp(log_rate)[None, :]
                     - pt.gammaln(x + 1.0)[:, None])
        return phi, pt.logsumexp(log_joint, axis=1).sum()

    def symbolic_natural(self, model_def: PoissonMixture, phi):
        """The reported variables as one pytensor vector of ``phi``, in the order of :meth:`parameters`
        (``w`` then ``rate``): the delta method's Jacobian is its derivative."""
        import pytensor.tensor as pt

        log_rate, log_w = self._symbolic_parts(phi, model_def.n_components)
        return pt.concatenate([pt.exp(log_w), pt.exp(log_rate)])

    def information_function(self, model_def: PoissonMixture, data: CountData) -> Callable:
        """phi -> (loglik, gradient, Hessian, natural values, Jacobian), compiled once per K (the counts an
        input), so every bootstrap replicate and model-choice K reuses it."""
        fn = _information_function(model_def.n_components)
        counts = np.asarray(data.counts, dtype=float)
        return lambda phi: fn.summed_over_rows(np.asarray(phi, dtype=float), counts)  # counts are independent

    def information_reason(self, model_def: PoissonMixture, data: CountData, params: PoissonParams) -> str:
        """Why the information is singular before it is computed: a component with (almost) no rows, or a
        rate of 0 (its log is the coordinate)."""
        from emvsbayes.uncertainty.information import weight_reason

        if np.any(params.rate <= 0):
            j = int(np.argmin(params.rate))
            return f"rate[{j}] = 0 is on the boundary: the information about it is not defined there"
        return weight_reason(params.w, data.n_rows)

    @staticmethod
    def _symbolic_parts(phi, k: int):
        import pytensor.tensor as pt

        log_w = pt.special.log_softmax(pt.concatenate([phi[k:], pt.zeros((1,), dtype="float64")]))
        return phi[:k], log_w

    # -- Bayes ------------------------------------------------------------------------------------

    def pymc_model(self, model_def: PoissonMixture, data: CountData):
        """The ``pymc.Model`` (symmetric or ordered, as ``model_def`` says)."""
        return self.pymc_recipe(model_def, data).model()

    def pymc_recipe(self, model_def: PoissonMixture, data: CountData):
        """The same model as a :class:`~emvsbayes.sampling.recipe.ModelRecipe`, so the sampler's compiled
        programs are found again by later runs (an optional member beside :meth:`pymc_model`)."""
        from emvsbayes.sampling.recipe import ModelRecipe

        return ModelRecipe(bayes.build_model, (model_def.with_data_prior(data.counts), np.asarray(data.counts)),
                           {"labels": tuple(data.labels)})

    def model_recipe(self, model_def: PoissonMixture, data: CountData, coords=None):
        """The PyMC model as a recipe (built only when the compiled sampler is not cached)."""
        return self.pymc_recipe(model_def, data)

    def target_accept(self, value, params: PoissonParams, data: CountData) -> float:
        """``"auto"`` decided by the smallest EM component's expected rows, as for Gaussians: a component
        holding few rows has a wide, skewed posterior of its rate."""
        from emvsbayes.sampling import resolve_target_accept

        return resolve_target_accept(value, float(np.min(params.w)) * data.n_rows)

    def posterior_group(self, model_def: PoissonMixture, posterior, coords):
        return posterior.assign_coords(component=coords["component"])

    def posterior_draws(self, model_def: PoissonMixture, posterior) -> dict[str, np.ndarray]:
        """Reported variables of a posterior dataset as (S, K) arrays."""
        k = model_def.n_components
        return {name: posterior[name].transpose("chain", "draw", ...).values.reshape(-1, k) for name in ("w", "rate")}

    def log_prior(self, model_def: PoissonMixture, params: PoissonParams) -> float:
        """The PyMC model's log prior density at ``params`` (its untransformed variables, no Jacobian):
        log Dirichlet(w | alpha_w) + sum_k log Gamma(rate_k | alpha, beta); -inf outside the support (for the
        ordered variant: rates not increasing). An optional member beside :meth:`pymc_model`, so a test can
        check the PyMC log-density against the family's."""
        from scipy.special import gammaln, xlogy

        if model_def.rate_prior is None:
            raise ValueError("the model's rate_prior is not set; resolve it from the data with model_def.with_data_prior(counts)")
        alpha, beta = model_def.rate_prior
        k, a_w = model_def.n_components, model_def.w_concentration
        w, rate = params.w, params.rate
        if np.any(rate <= 0) or np.any(w <= 0) or (model_def.ordered and np.any(np.diff(rate) <= 0)):
            return -np.inf
        log_dirichlet = gammaln(k * a_w) - k * gammaln(a_w) + float(np.sum(xlogy(a_w - 1.0, w)))
        log_gamma = k * (alpha * np.log(beta) - gammaln(alpha)) + float(np.sum(xlogy(alpha - 1.0, rate) - beta * rate))
        return float(log_dirichlet + log_gamma)

    def initvals(self, model_def: PoissonMixture, params_list: Sequence[PoissonParams]) -> list[dict]:
        return bayes.initvals_from_params(model_def, params_list)

    def membership_draws(self, model_def: PoissonMixture, data: CountData, draws: Mapping[str, np.ndarray]) -> np.ndarray:
        return bayes.membership_probabilities(model_def, data.counts, draws)

    # -- simulation and resampling ----------------------------------------------------------------

    def simulate(self, model_def: PoissonMixture, params: PoissonParams, n: int, rng: np.random.Generator,
                 like=None) -> CountData:
        """``n`` counts from the mixture, with the component of each row as ``true_component``."""
        model_def.validate_params(params)
        z = rng.choice(model_def.n_components, size=n, p=params.w)
        counts = rng.poisson(params.rate[z]).astype(np.int64)
        summary = f"simulated: {n} counts, rate = {np.round(params.rate, 4).tolist()}, w = {np.round(params.w, 4).tolist()}"
        return CountData(counts, tuple(str(i) for i in range(1, n + 1)), "count", summary, z.astype(np.int64))

    def resample(self, data: CountData, rng: np.random.Generator) -> CountData:
        """N rows drawn with replacement (rows are independent under the mixture), renumbered 1..N."""
        rows = rng.integers(data.n_rows, size=data.n_rows)
        truth = None if data.true_component is None else data.true_component[rows]
        return CountData(data.counts[rows], tuple(str(i) for i in range(1, data.n_rows + 1)), data.column,
                         f"resample of {data.source}", truth)

    def prior_draw(self, model_def: PoissonMixture, rng: np.random.Generator) -> PoissonParams:
        """Parameters drawn from the PyMC model's prior (rates sorted for the ordered variant, as its support is)."""
        if model_def.rate_prior is None:
            raise ValueError("the model's rate_prior is not set; resolve it from the data with model_def.with_data_prior(counts)")
        alpha, beta = model_def.rate_prior
        k = model_def.n_components
        w = rng.dirichlet(np.full(k, model_def.w_concentration))
        rate = rng.gamma(alpha, 1.0 / beta, size=k)
        return poisson_model.PoissonParams(w, np.sort(rate) if model_def.ordered else rate)

    # -- extras -----------------------------------------------------------------------------------

    def bootstrap_target(self, model_def: PoissonMixture, data: CountData) -> tuple[PoissonBootstrap, np.ndarray]:
        """(the bootstrap's resample / simulate / refit object, the counts)."""
        return PoissonBootstrap(model_def), np.asarray(data.counts, dtype=np.int64)

    # -- studies (emvsbayes.study): a cell's model, truth and data; data as named arrays -------------

    observed = {"x": "counts"}  # the PyMC model's observed variable -> the array holding its data

    def study_axes(self) -> dict[str, tuple[object, Callable]]:
        """Grid axes of a study: name -> (default, check of one value). ``rate`` is the lowest true rate,
        ``separation`` the gap between neighbouring rates on the square-root scale (see :meth:`study_truth`)."""
        from emvsbayes.spec import one_of, positive_int, positive_number
        from emvsbayes.study.spec import SAMPLERS

        def non_negative(v):
            return None if _is_number(v) and v >= 0 else f"must be a number >= 0, got {_show(v)}"

        def prior_name(v):
            return None if isinstance(v, str) and v else f"must be the name of a [priors.NAME] table or \"default\", got {_show(v)}"

        return {"components": (2, positive_int), "n_obs": (100, positive_int), "rate": (4.0, positive_number),
                "separation": (1.5, non_negative), "variant": ("symmetric", one_of("symmetric", "ordered")),
                # Not numpyro: its study programs with the integer counts as an argument never leave the start
                # (every transition divergent, draws constant: the coins' integer heads do the same); nutpie and
                # PyMC sample the same cell well.
                "sampler": ("nutpie", one_of(*SAMPLERS)), "prior": ("default", prior_name)}

    def study_prior_keys(self) -> dict:
        """Prior keys of a study's ``[bayes]`` and ``[priors.NAME]``: fixed numbers, not scaled to each data set
        (a replicate's prior must not depend on its data; SBC draws the truth from it)."""
        from emvsbayes.spec import Key, positive_number

        def gamma(v):
            return None if _positive_numbers(v, 2) else f"must be [alpha, beta], the Gamma prior's positive shape and rate, got {_show(v)}"

        return {"rate_prior": Key([2.0, 0.2], gamma), "w_concentration": Key(1.0, positive_number)}

    def study_model(self, spec: dict, cell: dict, prior: dict) -> PoissonMixture:
        rate_prior = prior.get("rate_prior", "auto")
        return poisson_model.PoissonMixture(n_components=cell["components"],
                              rate_prior=None if rate_prior == "auto" else tuple(float(v) for v in rate_prior),
                              w_concentration=prior.get("w_concentration", 1.0), ordered=cell["variant"] == "ordered")

    def study_truth(self, spec: dict, cell: dict, model_def: PoissonMixture, rng) -> PoissonParams:
        """Rates ``separation`` apart on the square-root scale (where a Poisson count's sd is about 1/2, so
        separation s puts neighbouring rates about 2 s sds apart), the lowest at ``cell["rate"]``; the spec's
        weights, or equal ones."""
        k = cell["components"]
        root = np.sqrt(cell["rate"]) + cell["separation"] * np.arange(k)
        w = spec["truth"]["w"]
        w = np.full(k, 1.0 / k) if w is None else np.asarray(w, dtype=float) / np.sum(w)
        return poisson_model.PoissonParams(w, root**2)

    def study_data(self, model_def: PoissonMixture, params: PoissonParams, cell: dict, rng) -> CountData:
        return self.simulate(model_def, params, cell["n_obs"], rng)

    def as_arrays(self, data: CountData) -> dict[str, np.ndarray]:
        return {"counts": np.asarray(data.counts, dtype=np.int64)}

    def from_arrays(self, arrays: Mapping[str, np.ndarray]) -> CountData:
        counts = np.asarray(arrays["counts"], dtype=np.int64)
        return CountData(counts, tuple(str(i) for i in range(1, counts.size + 1)))

    # -- extras -----------------------------------------------------------------------------------

    def extra_groups(self, spec, model_def, data, best_fit, rng=None, timings=None) -> dict:
        """None: the Poisson mixture has no exact posterior or reference clustering to add."""
        return {}

    def estimate_attrs(self, model_def: PoissonMixture, data: CountData, fit, failures) -> dict:
        """The observed-data log-likelihood (for hard EM not its objective), BIC and AIC at it."""
        n, p = data.n_rows, model_def.n_free_parameters()
        loglik = model_def.loglik(fit.params, data.counts)
        return dict(n_failed_restarts=len(failures), failure=failures[0] if failures else "", n_free_parameters=p,
                    observed_loglik=loglik, bic=-2 * loglik + p * np.log(n), aic=-2 * loglik + 2 * p)

    def model_choice_run(self, model_def: PoissonMixture, data: CountData, em_spec: dict, rng, fit_until):
        """Soft EM for one K of the model choice from ``n_init`` k-means++ starts (the spec's own ``init``
        may be rates for another K)."""
        return fit_until(lambda: em.random_start(model_def, data.counts, rng.spawn(1)[0], "k-means++"),
                         restart_policy(em_spec))

    def model_choice_checks(self, model_def: PoissonMixture, data: CountData, run) -> dict:
        """Before EM (``run`` None): K beyond the rows; after: an empty component, a best optimum reached by
        a single start."""
        n, k = data.n_rows, model_def.n_components
        if run is None:
            from emvsbayes.uncertainty.model_choice import ill_posed

            unposed = ill_posed(model_def.n_free_parameters(), n)
            return {"notes": [f"K = {k} is more than the {n} rows"] if k > n else [], "too_many": k > n,
                    "late_notes": unposed["late_notes"], "skip_bayes": k > n or unposed["skip_bayes"]}
        best = run.restarts.best.params
        counts = best.w * n
        notes = []
        if np.any(counts < 1.0):
            notes.append(f"degenerate: a component of EM's answer holds {counts.min():.2g} expected rows")
        elif run.n_reached_best < 2 and run.n_starts > 1:
            notes.append(f"the best log-likelihood was reached by only {run.n_reached_best} of "
                         f"{run.n_starts} EM starts: a better optimum may exist")
        return {"notes": notes, "row": {"expected_counts": counts, "degenerate": bool(np.any(counts < 1.0))}}

    def model_choice_attrs(self, spec: dict, data: CountData) -> dict:
        return {"n_obs": data.n_rows}


FAMILY = PoissonFamily()
