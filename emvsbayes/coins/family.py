"""The two-coin mixture as a model family (:class:`emvsbayes.family.Family`): everything the generic
runner, uncertainty and study code need of it, delegating to :mod:`~emvsbayes.coins.model`,
:mod:`~emvsbayes.coins.em`, :mod:`~emvsbayes.coins.bayes` and :mod:`~emvsbayes.coins.exact`.

Data are a :class:`~emvsbayes.data.CoinData` (heads and tosses per set).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emvsbayes.data.records import CoinData
from emvsbayes.em import RestartPolicy
from emvsbayes.errors import UserError
from emvsbayes.family import ParameterInfo, alr, alr_inverse
from emvsbayes.lazy_imports import lazy_module

# Imported on first use: spec checks and data loading read this module before anything is fitted.
em = lazy_module("emvsbayes.coins.em")
bayes = lazy_module("emvsbayes.coins.bayes")
exact = lazy_module("emvsbayes.coins.exact")
coin_model = lazy_module("emvsbayes.coins.model")

#: The parameters' dims, as emvsbayes.coins.model.PARAMETER_DIMS (written out: that module imports SciPy).
PARAMETER_DIMS = {"theta": ("component",), "w": ("component",)}

#: The coins' parameters: P(heads) per coin, the coin weights; both per component, both in (0, 1).
PARAMETERS = {"theta": ParameterInfo(PARAMETER_DIMS["theta"], ("component",), "logit"),
              "w": ParameterInfo(PARAMETER_DIMS["w"], ("component",), "logit")}

#: Dims of the EM statistics kept in the trace.
STATS_DIMS = {"resp": ("set", "component"), "expected_heads": ("component",), "expected_tails": ("component",)}


def as_coin_data(heads, tosses) -> CoinData:
    """Arrays of heads and tosses as a data record (sets numbered from 1)."""
    heads, tosses = np.asarray(heads), np.asarray(tosses)
    return CoinData(heads, tosses, tuple(f"set {i}" for i in range(1, heads.shape[0] + 1)))


# --------------------------------------------------------------------------------------------------
# Spec and data


def model_from_spec(spec: dict, n_components: int | None = None) -> CoinMixture:
    bayes_spec = spec["bayes"]
    return coin_model.CoinMixture(
        n_components=n_components or spec["model"]["components"],
        weights=spec["model"]["weights"],
        theta_prior=tuple(bayes_spec["theta_prior"]),
        w_concentration=bayes_spec["w_concentration"],
        ordered=bayes_spec["variant"] == "ordered",
    )


def initial_params(model_def: CoinMixture, em_spec: dict, rng: np.random.Generator) -> list[CoinParams]:
    """Starting points from the spec: given theta rows (one restart each) or ``n_init`` random ones."""
    init = em_spec["init"]
    if init == "random":
        return em.random_inits(model_def, em_spec["n_init"], rng)
    rows = init if isinstance(init[0], list) else [init]
    return [coin_model.CoinParams(np.array(row, dtype=float), model_def.equal_weights) for row in rows]


# --------------------------------------------------------------------------------------------------
# Observed information: one symbolic log-likelihood, with the data as inputs (compiled once per
# structure) or as constants (symbolic_loglik)


def coin_unconstrained_names(model: CoinMixture) -> tuple[str, ...]:
    """Names of the unconstrained coordinates: ``logit(theta[k])`` then ``log(w[k]/w[K-1])``."""
    k = model.n_components
    names = [f"logit(theta[{j}])" for j in range(k)]
    if model.weights == "estimated":
        names += [f"log(w[{j}]/w[{k - 1}])" for j in range(k - 1)]
    return tuple(names)


def coin_unconstrained(model: CoinMixture, params: CoinParams) -> np.ndarray:
    """``phi`` (P,) of ``params``: logit theta, then (estimated weights only) weight log-ratios."""
    from scipy.special import logit

    with np.errstate(divide="ignore"):
        phi = [logit(params.theta)]
    if model.weights == "estimated":
        phi.append(alr(params.w))
    return np.concatenate(phi)


def coin_from_unconstrained(model: CoinMixture, phi: np.ndarray) -> CoinParams:
    """Inverse of :func:`coin_unconstrained`."""
    from scipy.special import expit

    k = model.n_components
    phi = np.asarray(phi, dtype=float)
    w = alr_inverse(phi[k:]) if model.weights == "estimated" else model.equal_weights
    return coin_model.CoinParams(expit(phi[:k]), w)


def _loglik_graph(phi, heads, tosses, n_components: int, weights: str):
    """(log-likelihood, natural variables theta then w) of the coin mixture at ``phi``: the one symbolic
    log-likelihood (``heads``, ``tosses`` symbolic inputs or constants)."""
    import pytensor.tensor as pt

    k = n_components
    eta = phi[:k]
    # log theta = -softplus(-eta), log(1 - theta) = -softplus(eta): no cancellation for |eta| large.
    log_theta, log_1m = -pt.softplus(-eta), -pt.softplus(eta)
    if weights == "estimated":
        log_w = pt.special.log_softmax(pt.concatenate([phi[k:], pt.zeros((1,), dtype="float64")]))
    else:
        log_w = pt.constant(np.full(k, -math.log(k)))
    log_choose = pt.gammaln(tosses + 1) - pt.gammaln(heads + 1) - pt.gammaln(tosses - heads + 1)
    log_joint = log_w[None, :] + log_choose[:, None] + heads[:, None] * log_theta + (tosses - heads)[:, None] * log_1m
    loglik = pt.logsumexp(log_joint, axis=1).sum()
    return loglik, pt.concatenate([pt.sigmoid(eta), pt.exp(log_w)])


def information_graph(n_components: int, weights: str):
    """The coin mixture's log-likelihood and natural variables as an
    :class:`~emvsbayes.uncertainty.information_programs.InformationGraph` of (phi, heads, tosses)."""
    import pytensor.tensor as pt

    from emvsbayes.uncertainty.information_programs import InformationGraph

    size = n_components + (n_components - 1 if weights == "estimated" else 0)
    phi = pt.tensor("phi", shape=(size,), dtype="float64")
    heads = pt.vector("heads", dtype="float64")
    tosses = pt.vector("tosses", dtype="float64")
    loglik, natural = _loglik_graph(phi, heads, tosses, n_components, weights)
    return InformationGraph(phi, (heads, tosses), loglik, natural)


@functools.cache
def _information_function(n_components: int, weights: str) -> Callable:
    """(phi, heads, tosses) -> (loglik, gradient, Hessian, natural values, Jacobian), an exported program
    stored once per structure (the data inputs), so every data set and bootstrap replicate of one model,
    in every process, reuses it."""
    from emvsbayes.uncertainty.information_programs import InformationRecipe, information_program

    return information_program(InformationRecipe(information_graph, (n_components, weights)))


# --------------------------------------------------------------------------------------------------
# Bootstrap: how to resample, simulate and refit (data as (heads, tosses))


@dataclass(frozen=True, slots=True)
class CoinBootstrap:
    model: CoinMixture

    def n_obs(self, data) -> int:
        return int(data[0].shape[0])

    def take(self, data, rows):
        return data[0][rows], data[1][rows]

    def simulate(self, data, params: CoinParams, rng):
        from emvsbayes.data import simulate_coins

        sim = simulate_coins(params.theta, params.w, data[1], rng)
        return sim.heads, sim.tosses

    def refit(self, data, init: CoinParams, options):
        return em.fit(self.model, data[0], data[1], init, **options)

    def single_fit_size(self, data, reference) -> int:
        return self.n_obs(data) * self.model.n_components

    def refit_batched(self, data, samples, counts, init: CoinParams, options):
        if samples is None:
            sets = em.CoinSets(data[0][None], data[1][None], counts)
        else:
            sets = em.CoinSets(np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples]))
        return em.fit_batched(self.model, sets, init, len(counts) if samples is None else len(samples), **options)

    def dims(self, reference) -> dict[str, tuple[str, ...]]:
        return dict(PARAMETER_DIMS)


# --------------------------------------------------------------------------------------------------
# The family


class CoinFamily:
    """K coins, each set of tosses made with one of them (see :mod:`emvsbayes.coins`)."""

    name = "coins"
    title = "binomial (coin) mixtures"  # in words, for pages
    obs_dim = "set"
    #: the posterior variable relabelling orders components by (relabel = "order")
    order_var = "theta"

    def __repr__(self) -> str:
        return "CoinFamily()"

    def describe(self, spec: dict) -> str:
        """The model in words, for the report's summary line."""
        model = spec["model"]
        return f"binomial (coin) mixture, K = {model['components']}, weights {model['weights']}"

    def example(self) -> tuple[CoinMixture, CoinParams, int]:
        """A small, well-separated case for the family contract test: (model, truth, number of sets)."""
        return coin_model.CoinMixture(2, "estimated"), coin_model.CoinParams([0.2, 0.75], [0.4, 0.6]), 300

    # spec ---------------------------------------------------------------------------------------
    def spec_defaults(self) -> dict[str, dict[str, object]]:
        return {"model": {"weights": "equal", "labels": []},
                "bayes": {"theta_prior": [1, 1], "w_concentration": 1.0, "exact": "auto"},
                "data": {"heads": "heads", "tosses": "tosses"}}

    #: ``[em] init = "auto"``: uniform random thetas
    auto_init = "random"

    def check_init(self, value) -> str | None:
        """``[em] init``: "random" or theta rows (:func:`emvsbayes.spec.coin_init`)."""
        from emvsbayes.spec import coin_init

        return coin_init(value)

    def check_spec(self, spec: dict) -> None:
        """Coin-only combinations of keys (the message is prefixed with the spec's name by the caller)."""
        em_spec, ks = spec["em"], spec["model"]["components"]
        ks = ks if isinstance(ks, list) else [ks]
        if spec["data"]["truth"] is not None:
            raise UserError("[data] truth names a column of known groups in a CSV file of measurements; "
                            "use it with file = \"...\" and family = \"gaussian\", or remove it")
        for key in ("reach_best", "max_init"):
            if em_spec[key] is not None:
                raise UserError(f"[em] {key} applies to Gaussian mixtures only; coin mixtures run "
                                "n_init starts: remove it, or set n_init")
        if spec["model_choice"]["sparse"] and spec["model"]["weights"] != "estimated":
            # was skipped after the fit with only an attribute saying so
            raise UserError('[model_choice] sparse needs [model] weights = "estimated": with equal weights fixed at '
                            "1/K no coin can be emptied; set weights = \"estimated\" or remove sparse")
        labels = spec["model"]["labels"]
        if labels and (len(ks) > 1 or len(labels) != ks[0]):
            return  # the generic check says it, naming both keys
        init = em_spec["init"]
        if isinstance(init, list):
            rows = init if isinstance(init[0], list) else [init]
            for row in rows:
                if len(row) != max(ks) or len(ks) > 1:
                    raise UserError(f"[em] init gives {len(row)} theta values but [model] components is "
                                    f"{spec['model']['components']}; give one value per coin or use init = \"random\"")
                if len(set(row)) < len(row):
                    # equal thetas are a fixed point of EM: every set is shared alike, so they stay equal (K = 1 shown as K)
                    raise UserError(f"[em] init gives two coins the same theta ({row}): EM cannot separate them from "
                                    "there; give different values, or use init = \"random\"")

    # data ---------------------------------------------------------------------------------------
    def load_data(self, spec: dict) -> CoinData:
        from emvsbayes import data as datasets
        from emvsbayes.spec import resolve_data_path

        data_spec = spec["data"]
        if data_spec["dataset"] is not None:
            loaded = datasets.load_dataset(data_spec["dataset"])
        else:
            loaded = datasets.load_coins_csv(resolve_data_path(spec), heads=data_spec["heads"], tosses=data_spec["tosses"],
                                             label=data_spec["label"], encoding=data_spec["encoding"],
                                             delimiter=data_spec["delimiter"])
        if not hasattr(loaded, "heads"):
            raise UserError(f"[data] {data_spec['dataset'] or data_spec['file']} does not hold heads and tosses for "
                            "the coins model; pick a data set of that kind")
        return loaded

    def data_from_memory(self, data, spec: dict, source: str):
        """(:class:`CoinData`, None) of (heads, tosses) pairs, an (N, 2) array, a DataFrame or dict of columns."""
        from emvsbayes.data.memory import coin_record

        return coin_record(data, spec["data"], source), None

    def data_csv(self, data: CoinData, raw) -> tuple[str, dict]:
        from emvsbayes.data.memory import coin_csv

        return coin_csv(data)

    def check_data(self, spec: dict, data) -> None:
        from emvsbayes import limits

        k, n = spec["model"]["components"], len(data.heads)
        if k > n:
            raise UserError(f"[model] components = {k} is more than the {n} sets of tosses; use at most {n}")
        largest = int(np.max(data.tosses)) if n else 0
        if largest > limits.MAX_MIXTURE_COUNT:
            raise UserError(f"{data.source}: a set of {largest:,} tosses is beyond {limits.MAX_MIXTURE_COUNT:,}, where "
                            f"{limits.MAX_MIXTURE_COUNT_WHY}; count in larger units or use fewer tosses")
        limits.check_run(spec, n, 1)

    def n_observations(self, data) -> int:
        return int(len(data.heads))

    def size_facts(self, d: int) -> dict:
        """For the memory estimates (:mod:`emvsbayes.limits`): theta and w per component, the
        responsibilities of each set kept in every iteration's trace, and what the rows are called."""
        return {"params_per_component": 2, "trace_per_observation": 1, "observations": "sets"}

    def study_shape(self, cell: dict) -> tuple[int, int]:
        """(observations, columns) of a study cell's data."""
        return cell["n_sets"], 1

    def data_shape(self, data) -> tuple[int, int]:
        """(rows, columns) for the size limits."""
        return len(data.heads), 1

    def data_group(self, spec: dict, data):
        import xarray as xr

        labels = list(data.labels)
        data_ds = xr.Dataset({"heads": ("set", data.heads), "tosses": ("set", data.tosses)}, coords={"set": labels})
        if data.true_coin is not None:
            data_ds["true_component"] = ("set", np.asarray(data.true_coin))
        data_ds.attrs.update(source=data.source, kind="coins")
        if spec["model"]["labels"]:
            # the report names components from the results file alone; JSON keeps a list of strings intact
            data_ds.attrs["component_labels"] = json.dumps(spec["model"]["labels"], ensure_ascii=False)
        return data_ds

    def coords(self, spec: dict, model_def: CoinMixture, data) -> dict:
        return {"component": np.arange(model_def.n_components), "set": list(data.labels)}

    # model and parameters ------------------------------------------------------------------------
    def model_from_spec(self, spec: dict, data=None, n_components: int | None = None) -> CoinMixture:
        return model_from_spec(spec, n_components)

    def parameters(self, model_def, data=None) -> dict[str, ParameterInfo]:
        return dict(PARAMETERS)

    def n_free_parameters(self, model_def: CoinMixture, data=None) -> int:
        return model_def.n_free_parameters()

    def variables(self, params: CoinParams) -> dict[str, np.ndarray]:
        return params.variables()

    def params_from_variables(self, model_def: CoinMixture, variables: Mapping) -> CoinParams:
        w = variables.get("w")
        return coin_model.CoinParams(np.asarray(variables["theta"]), model_def.equal_weights if w is None else np.asarray(w))

    def estimated_variables(self, model_def: CoinMixture, params: CoinParams) -> dict[str, np.ndarray]:
        """The variables that are estimated (fixed equal weights are not), as a study reports them."""
        return params.variables() if model_def.weights == "estimated" else {"theta": params.theta}

    def validate_params(self, model_def: CoinMixture, params: CoinParams) -> None:
        model_def.validate_params(params)

    def loglik(self, model_def: CoinMixture, data, params: CoinParams) -> float:
        return model_def.loglik(params, data.heads, data.tosses)

    def log_joint(self, model_def: CoinMixture, data, params: CoinParams) -> np.ndarray:
        return model_def.log_joint(params, data.heads, data.tosses)

    # EM -----------------------------------------------------------------------------------------
    def starts(self, model_def, data, em_spec: dict, rng) -> tuple[Callable[[], CoinParams], RestartPolicy]:
        """The spec's starts, every one of them: given theta rows, or ``n_init`` random ones."""
        inits = initial_params(model_def, em_spec, rng)
        for init in inits:  # a start EM cannot move from fails before any fit (em.fit_restarts' check)
            model_def.validate_params(init)
            em._check_start(model_def, data.heads, data.tosses, init)
        queue = iter(inits)
        return (lambda: next(queue)), RestartPolicy(min_starts=len(inits), reach_best=1, max_starts=len(inits))

    def random_starts(self, model_def, data, n_init: int, rng) -> list[CoinParams]:
        """``n_init`` random starts (model choice, studies)."""
        return em.random_inits(model_def, n_init, rng)

    def e_step(self, model_def, data, params):
        return em.e_step(model_def, data.heads, data.tosses, params)

    def hard_e_step(self, model_def, data, params):
        return em.hard_e_step(model_def, data.heads, data.tosses, params)

    def m_step(self, model_def, data, stats, params):
        return em.m_step(model_def, stats, params)

    def responsibilities(self, model_def, data, params) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self.log_joint(model_def, data, params), axis=1)

    def fit(self, model_def, data, init, *, kind: str = "soft", **options):
        return em.fit(model_def, data.heads, data.tosses, init, kind=kind, **options)

    def fit_batched(self, model_def, sets, init, n_fits: int, **options):
        """Soft EM over a leading replicate axis (:func:`emvsbayes.coins.em.fit_batched`)."""
        return em.fit_batched(model_def, sets, init, n_fits, **options)

    def map_fit(self, model_def, data, init, options: dict):
        """MAP-EM under the Beta and Dirichlet priors (:func:`emvsbayes.coins.map_em.fit_coin_map`)."""
        from emvsbayes.coins.map_em import fit_coin_map

        return fit_coin_map(model_def, data.heads, data.tosses, init, **options)

    def weighted_fit(self, model_def, data, init, weights, options: dict):
        """Soft EM of each row of ``weights`` (B, N) from ``init``: the weights are the sets' multiplicities."""
        weights = np.asarray(weights, dtype=float)
        sets = em.CoinSets(np.asarray(data.heads)[None], np.asarray(data.tosses)[None], weights)
        return em.fit_batched(model_def, sets, init, len(weights), **options)

    def restart_batches(self, model_def, data, options) -> tuple[Callable | None, int]:
        """Coins fit their few starts one at a time."""
        return None, 1

    def fit_resp(self, model_def, data, fit) -> np.ndarray:
        """The responsibilities reported with an EM fit (the fit's last E-step)."""
        return fit.stats.resp

    def trace_stats(self):
        """(stats record -> named arrays, their dims) kept in the EM trace."""
        return (lambda stats: {"resp": stats.resp, "expected_heads": stats.heads, "expected_tails": stats.tails},
                STATS_DIMS)

    # observed information -----------------------------------------------------------------------
    def unconstrained_names(self, model_def, data=None) -> tuple[str, ...]:
        return coin_unconstrained_names(model_def)

    def to_unconstrained(self, model_def, params) -> np.ndarray:
        return coin_unconstrained(model_def, params)

    def from_unconstrained(self, model_def, data, phi) -> CoinParams:
        return coin_from_unconstrained(model_def, phi)

    def symbolic_loglik(self, model_def, data):
        import pytensor.tensor as pt

        phi = pt.vector("phi", dtype="float64")
        heads = pt.constant(np.asarray(data.heads, dtype=float))
        tosses = pt.constant(np.asarray(data.tosses, dtype=float))
        return phi, _loglik_graph(phi, heads, tosses, model_def.n_components, model_def.weights)[0]

    def information_function(self, model_def, data) -> Callable:
        """phi -> (loglik, gradient, Hessian, natural values, Jacobian), compiled once per structure."""
        fn = _information_function(model_def.n_components, model_def.weights)
        heads, tosses = np.asarray(data.heads, dtype=float), np.asarray(data.tosses, dtype=float)
        return lambda phi: fn.summed_over_rows(phi, heads, tosses)  # sets are independent: blocks bound the memory

    def information_reason(self, model_def, data, params) -> str:
        """Why the information is singular before it is computed: a theta on 0 or 1, an empty weight."""
        from emvsbayes.uncertainty.information import BOUNDARY_TOL, weight_reason

        boundary = np.minimum(params.theta, 1.0 - params.theta) < BOUNDARY_TOL
        if np.any(boundary):
            j = int(np.argmax(boundary))
            return f"theta[{j}] is on the boundary ({float(params.theta[j])!r}): the information is singular there"
        if model_def.weights == "estimated":
            return weight_reason(params.w, len(data.heads))
        return ""

    # Bayes --------------------------------------------------------------------------------------
    def pymc_model(self, model_def, data, coords=None):
        labels = None if coords is None else coords["set"]
        return bayes.build_model(model_def, data.heads, data.tosses, set_labels=labels)

    def model_recipe(self, model_def, data, coords=None):
        """The PyMC model as a recipe (built only when the compiled sampler is not cached)."""
        from emvsbayes.sampling import ModelRecipe

        if coords is None:
            return ModelRecipe(bayes.build_model, (model_def, data.heads, data.tosses))
        return ModelRecipe(bayes.build_model, (model_def, data.heads, data.tosses), {"set_labels": coords["set"]})

    def initvals(self, model_def, params_list) -> list[dict]:
        return bayes.initvals_from_params(model_def, list(params_list))

    def target_accept(self, value, params, data) -> float:
        """``"auto"`` is the plain default: the coin model has no scale parameter, so none of the funnels
        that a higher target acceptance is for."""
        from emvsbayes.sampling import resolve_target_accept

        return resolve_target_accept(value, float("inf"))

    def posterior_group(self, model_def, posterior, coords):
        """The posterior as reported: fixed equal weights added as a variable, components numbered."""
        import xarray as xr

        if "w" not in posterior:
            posterior["w"] = xr.DataArray(
                np.broadcast_to(model_def.equal_weights, (*posterior["theta"].shape,)).copy(),
                dims=posterior["theta"].dims, coords=posterior["theta"].coords,
            )
        return posterior.assign_coords(component=coords["component"])

    def posterior_draws(self, model_def, posterior) -> dict[str, np.ndarray]:
        """Reported variables of a posterior dataset as (S, ...) arrays."""
        k = model_def.n_components
        return {"theta": posterior["theta"].values.reshape(-1, k), "w": posterior["w"].values.reshape(-1, k)}

    def membership_draws(self, model_def, data, draws: Mapping[str, np.ndarray]) -> np.ndarray:
        theta = np.asarray(draws["theta"]).reshape(-1, model_def.n_components)
        w = draws.get("w")
        w = np.broadcast_to(model_def.equal_weights, theta.shape) if w is None else np.asarray(w).reshape(theta.shape)
        return bayes.membership_probabilities(model_def, data.heads, data.tosses, theta, w)

    # simulation and resampling ------------------------------------------------------------------
    def simulate(self, model_def, params: CoinParams, n: int, rng, like=None) -> CoinData:
        from emvsbayes.data import simulate_coins

        tosses = 10 if like is None else like.tosses
        if np.ndim(tosses) == 0:
            return simulate_coins(params.theta, params.w, tosses, rng, n_sets=n)
        return simulate_coins(params.theta, params.w, tosses, rng)

    def resample(self, data, rng) -> CoinData:
        n = len(data.heads)
        rows = rng.integers(0, n, size=n)
        return CoinData(data.heads[rows], data.tosses[rows], tuple(np.asarray(data.labels)[rows]))

    def prior_draw(self, model_def: CoinMixture, rng) -> CoinParams:
        a, b = model_def.theta_prior
        theta = rng.beta(a, b, size=model_def.n_components)
        if model_def.ordered:
            theta = np.sort(theta)
        if model_def.weights == "estimated":
            w = rng.dirichlet(np.full(model_def.n_components, float(model_def.w_concentration)))
        else:
            w = model_def.equal_weights
        return coin_model.CoinParams(theta, w)

    # studies (emvsbayes.study): a cell's model, truth and data; data as named arrays for the sampler
    observed = {"heads": "heads"}  # the PyMC model's observed variable -> the array holding its data

    def study_axes(self) -> dict:
        """Grid axes of a study: name -> (default, check of one value); ``separation`` is the gap between
        neighbouring true thetas."""
        from emvsbayes.spec import is_number, one_of, positive_int
        from emvsbayes.study.spec import SAMPLERS, prior_name

        def theta_gap(v):
            return None if is_number(v) and 0 < v < 1 else f"must be a gap between neighbouring theta in (0, 1), got {v!r}"

        return {
            "components": (2, positive_int),
            "n_sets": (20, positive_int),
            "tosses": (10, positive_int),
            "separation": (0.4, theta_gap),
            "variant": ("symmetric", one_of("symmetric", "ordered")),
            # numpyro's programs, built once per cell shape and loaded by every worker, as for the other families
            # (nutpie compiled its model with numba in every worker: 7-30 s each). Its programs with the heads as an
            # argument once stalled on this model (emvsbayes.coins.bayes says why and what changed).
            "sampler": ("numpyro", one_of(*SAMPLERS)),
            "prior": ("default", prior_name),
        }

    def study_prior_keys(self) -> dict:
        """Prior keys of a study's ``[bayes]`` and ``[priors.NAME]``."""
        from emvsbayes.spec import Key, beta_prior, positive_number

        return {"theta_prior": Key([1.0, 1.0], beta_prior), "w_concentration": Key(1.0, positive_number)}

    def study_check(self, cell: dict, kind: str, source: str) -> None:
        """A coverage cell's true thetas, evenly spaced by ``separation``, must stay inside (0, 1)."""
        if kind == "coverage":
            k, gap = cell["components"], cell["separation"]
            if (k - 1) * gap >= 1:
                raise UserError(f"{source}: [grid] separation {gap} with K = {k} coins puts theta outside (0, 1); "
                                f"use a gap below {1 / max(k - 1, 1):.3g}")

    def study_model(self, spec: dict, cell: dict, prior: dict) -> CoinMixture:
        return coin_model.CoinMixture(n_components=cell["components"], weights=spec["model"]["weights"],
                           theta_prior=tuple(prior["theta_prior"]), w_concentration=prior["w_concentration"],
                           ordered=cell["variant"] == "ordered")

    def study_truth(self, spec: dict, cell: dict, model_def: CoinMixture, rng) -> CoinParams:
        """Thetas ``separation`` apart around 0.5; the spec's weights (or equal ones)."""
        k, gap = cell["components"], cell["separation"]
        theta = 0.5 + gap * (np.arange(k) - (k - 1) / 2)
        w = spec["truth"]["w"]
        w = model_def.equal_weights if w is None or model_def.weights == "equal" else np.asarray(w) / np.sum(w)
        return coin_model.CoinParams(theta, w)

    def study_data(self, model_def, params: CoinParams, cell: dict, rng) -> CoinData:
        from emvsbayes.data import simulate_coins

        return simulate_coins(params.theta, params.w, cell["tosses"], rng, n_sets=cell["n_sets"])

    def as_arrays(self, data) -> dict[str, np.ndarray]:
        return {"heads": np.asarray(data.heads), "tosses": np.asarray(data.tosses)}

    def from_arrays(self, arrays: Mapping[str, np.ndarray]) -> CoinData:
        return as_coin_data(arrays["heads"], arrays["tosses"])

    def bootstrap_target(self, model_def, data) -> tuple[CoinBootstrap, Any]:
        """(the bootstrap's resample / simulate / refit object, the data in its form)."""
        return CoinBootstrap(model_def), (np.asarray(data.heads), np.asarray(data.tosses))

    # extras -------------------------------------------------------------------------------------
    def extra_groups(self, spec, model_def, data, best_fit, rng, timings) -> dict:
        """The exact posterior by enumerating every assignment of sets to coins, where that is small."""
        wanted = spec["bayes"]["exact"]
        if not (wanted is True or (wanted == "auto" and exact.n_assignments(len(data.heads), model_def.n_components)
                                   <= exact.MAX_ASSIGNMENTS)):
            return {}
        start = time.perf_counter()
        try:
            post = exact.exact_posterior(model_def, data.heads, data.tosses, interval_prob=spec["report"]["interval_prob"])
        except ValueError as error:
            raise UserError(f"[bayes] exact = true: {error}; set exact = \"auto\" or false") from None
        group = exact_group(post, self.coords(spec, model_def, data))
        timings["exact"] = time.perf_counter() - start
        return {"exact": group}

    def estimate_attrs(self, model_def, data, fit, failures) -> dict:
        return {"observed_loglik": model_def.loglik(fit.params, data.heads, data.tosses)}

    def model_choice_run(self, model_def, data, em_spec, rng, fit_until):
        """Soft EM for one K of the model choice from ``max(n_init, 10)`` random starts (the spec's own
        init may be thetas for another K)."""
        inits = em.random_inits(model_def, max(em_spec["n_init"], 10), rng)
        queue = iter(inits)
        return fit_until(lambda: next(queue), RestartPolicy(min_starts=len(inits), reach_best=1, max_starts=len(inits)))

    def model_choice_model(self, spec: dict, data, n_components: int) -> CoinMixture:
        return model_from_spec(spec, n_components)

    def sparse_model(self, spec: dict, data, k_max: int, concentration: float):
        """The overfitted coin mixture; with fixed equal weights there are no weights to empty a coin."""
        if spec["model"]["weights"] != "estimated":
            return None, ('the sparse mixture needs estimated weights ([model] weights = "estimated"): with '
                          "equal weights fixed at 1/K no coin can be emptied")
        sparse_spec = {**spec, "bayes": {**spec["bayes"], "w_concentration": float(concentration)}}
        return model_from_spec(sparse_spec, k_max), None

    def model_choice_checks(self, model_def, data, run) -> dict:
        """Before EM (``run`` None): whether K exceeds the sets; after: the exact log evidence p(data | K)
        where enumeration is small enough."""
        n, k = len(data.heads), model_def.n_components
        if run is None:
            return {"notes": [f"K = {k} is more than the {n} sets"] if k > n else [], "too_many": k > n,
                    "late_notes": [], "skip_bayes": k > n}
        log_evidence = float("nan")
        if exact.n_assignments(n, k) <= exact.MAX_ASSIGNMENTS:
            log_evidence = exact.log_evidence(model_def, data.heads, data.tosses)
        return {"notes": [], "row": {"log_evidence": log_evidence}}

    def model_choice_attrs(self, spec: dict, data) -> dict:
        return {"n_obs": len(data.heads)}


def exact_group(post: exact.ExactPosterior, coords):
    import xarray as xr

    ds = xr.Dataset(
        {
            "theta_mean": ("component", post.theta_mean),
            "theta_sd": ("component", post.theta_sd),
            "w_mean": ("component", post.w_mean),
            "w_sd": ("component", post.w_sd),
            "theta_sorted_mean": ("rank", post.theta_sorted_mean),
            "theta_sorted_sd": ("rank", post.theta_sorted_sd),
            "theta_sorted_lower": ("rank", post.theta_sorted_lower),
            "theta_sorted_upper": ("rank", post.theta_sorted_upper),
            "membership": (("set", "component"), post.membership),
            "theta_density": (("component", "grid"), post.theta_density),
            "theta_sorted_density": (("rank", "grid"), post.theta_sorted_density),
        },
        coords={"grid": post.grid, "rank": np.arange(len(post.theta_sorted_mean)), **coords},
    )
    if post.joint_grid_density is not None:
        ds["joint_density"] = (("grid_x", "grid_y"), post.joint_grid_density)
        ds = ds.assign_coords(grid_x=np.linspace(0, 1, post.joint_grid_density.shape[0]),
                              grid_y=np.linspace(0, 1, post.joint_grid_density.shape[1]))
    ds.attrs.update(log_evidence=post.log_evidence, n_assignments=post.n_assignments, interval_prob=post.interval_prob)
    return ds


FAMILY = CoinFamily()


# --------------------------------------------------------------------------------------------------
# The coin functions of the generic uncertainty code, with arrays in (as before the family protocol)


def coin_standard_errors(model: CoinMixture, heads, tosses, params: CoinParams, *, level: float = 0.95):
    """Observed-information standard errors and Wald intervals of a coin-mixture answer
    (:func:`emvsbayes.uncertainty.information.standard_errors`)."""
    from emvsbayes.uncertainty.information import standard_errors

    return standard_errors(FAMILY, model, as_coin_data(heads, tosses), params, level=level)


def coin_criteria(model: CoinMixture, heads, tosses, params: CoinParams):
    """BIC, AIC, ICL of a coin-mixture answer; p counts weights only when they are estimated."""
    from emvsbayes.uncertainty.model_choice import criteria

    return criteria(FAMILY, model, as_coin_data(heads, tosses), params)


def coin_bootstrap(model: CoinMixture, heads, tosses, reference: CoinParams, **options):
    """Bootstrap a coin-mixture EM answer (:func:`emvsbayes.uncertainty.bootstrap.run_bootstrap`)."""
    from emvsbayes.uncertainty.bootstrap import run_bootstrap

    return run_bootstrap(FAMILY, model, as_coin_data(heads, tosses), reference, **options)
