"""The hidden Markov model family through the family protocol (``/work/PROTOCOL.md``, issue 17): module-level
:data:`FAMILY`.

Observations are the time points of one series (``obs_dim = "time"``); the parameters are ``initial`` (K,),
``transition`` (K, K) with both dims label dims (relabelling permutes rows and columns together), and the
emission's ``rate`` (Poisson) or ``mu``, ``sigma`` (Gaussian). Rows of a series are dependent, so there is no
nonparametric bootstrap (:meth:`HMMFamily.resample` returns None): uncertainty comes from the observed
information of the forward-algorithm log-likelihood and a parametric bootstrap (:meth:`HMMFamily.simulate`).

Spec keys of this family (beside the common ones):

- ``[data] columns = ["count"]`` the one series column; ``label = "year"`` the time column (checked for gaps);
  the bundled ``earthquakes`` defaults to ``count`` and ``year``;
- ``[model] emission = "poisson" | "gaussian"``, ``initial = "estimated" | "stationary"``;
- ``[em] init = "random"`` (``"auto"``);
- ``[bayes] transition_prior`` (a number, or a K x K table: the Dirichlet concentration of each row),
  ``initial_prior`` (a number), ``rate_prior = [shape, rate]`` (Gamma; Poisson); Gaussian emissions use the
  common ``mu_loc``, ``mu_scale``, ``sigma_scale``.

Studies (:mod:`emvsbayes.study`): the size axis is ``n_time`` (the series' length T), with ``emission``,
``initial`` and ``variant`` axes; the priors are fixed numbers (:meth:`HMMFamily.study_prior_keys`); the series
sits in a ``pm.Data`` container (:meth:`HMMFamily.pymc_model_with_containers`), so one compiled model serves
every replicate of a cell. ``models/sbc_poisson_hmm.toml`` is the simulation-based calibration of issue 19.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from emvsbayes.errors import UserError
from emvsbayes.hmm import bayes, em
from emvsbayes.hmm.inference import forward_backward
from emvsbayes.hmm.model import (
    EMISSIONS,
    INITIAL_MODES,
    HiddenMarkovModel,
    HMMParams,
    HMMPriors,
    emission_names,
    parameter_dims,
    stationary_distribution,
)
from emvsbayes.hmm.series import Series, check_length, read_series


from emvsbayes.em import SAME_OPTIMUM_ATOL, RestartPolicy
from emvsbayes.family import ParameterInfo
from emvsbayes.spec import is_number, show_value


#: Wald-interval scale of each parameter.
SCALES = {"initial": "simplex", "transition": "simplex", "rate": "log", "mu": "identity", "sigma": "log"}

#: How tables name one element (states numbered from 1, as the family's figures number them): a transition
#: matrix's entry reads "transition, state 1 -> state 2", not "transition[0, 1]".
ELEMENT_LABELS = {"initial": "initial, state {component}", "transition": "transition, state {component} -> state {component_to}",
                  "rate": "rate, state {component}", "mu": "mu, state {component}", "sigma": "sigma, state {component}"}

#: Restart rule defaults (as Gaussian mixtures'): three starts agreeing on the best log-likelihood.
REACH_BEST = 3
MAX_INIT = 200


def _components(spec: dict) -> list[int]:
    ks = spec["model"]["components"]
    ks = ks if isinstance(ks, list) else [ks]
    return sorted(set(ks) | set(spec.get("model_choice", {}).get("components", []) or []))


def information_graph(model_def: HiddenMarkovModel):
    """The forward-algorithm log-likelihood of (phi, y (T,)) as an
    :class:`~emvsbayes.uncertainty.information_programs.InformationGraph`: its pieces (log initial, log
    transition, log emission) from the family's PyTensor expressions, the recursion by :func:`bayes.forward_log_jax`
    (the sampled model's own JAX form of :func:`bayes.forward_loglik`, whose ``scan`` does not export)."""
    import pytensor.tensor as pt

    from emvsbayes.uncertainty.information_programs import InformationGraph

    phi = pt.tensor("phi", shape=(len(FAMILY.unconstrained_names(model_def)),), dtype="float64")
    y = pt.vector("y", dtype="float64")
    variables = FAMILY.symbolic_variables(model_def, phi)
    log_emission = bayes.log_emission_symbolic(model_def, y, variables)
    pieces = (variables["_log_initial"], variables["_log_transition"], log_emission)
    return InformationGraph(phi, (y,), bayes.forward_loglik(*pieces), pieces=pieces, finish=bayes.forward_log_jax,
                            min_rows=2)


@functools.cache
def _information_function(model_def: HiddenMarkovModel) -> Callable:
    from emvsbayes.uncertainty.information_programs import InformationRecipe, information_program

    return information_program(InformationRecipe(information_graph, (model_def,)))


class HMMFamily:
    """The hidden Markov model family (Poisson or 1-D Gaussian emissions)."""

    name = "hmm"
    title = "hidden Markov models"  # in words, for pages
    obs_dim = "time"

    def describe(self, spec: dict) -> str:
        """The model in words, for the report's summary line."""
        model = spec["model"]
        return (f"hidden Markov model, K = {model['components']} states, {model.get('emission', '?')} emissions, "
                f"{model.get('initial', '?')} initial distribution")

    fit_batched = None
    #: what ``[em] init = "auto"`` becomes
    auto_init = "random"

    def __repr__(self) -> str:
        return "HMMFamily()"

    def example(self):
        """A small, well-separated case for the family contract test: (model, truth, number of time points)."""
        # The stationary initial distribution: one series says almost nothing about an estimated initial
        # distribution (its maximum-likelihood value is a corner of the simplex, where the information is singular).
        model = HiddenMarkovModel(n_components=2, emission="poisson", initial="stationary")
        transition = np.array([[0.9, 0.1], [0.2, 0.8]])
        return model, model.with_initial(None, transition, rate=np.array([3.0, 12.0])), 400

    def check_init(self, value) -> str | None:
        return None if value in ("auto", "random") else f'must be "random" (or "auto") for a hidden Markov model, got {show_value(value)}'

    def size_facts(self, d: int) -> dict:
        """For the memory estimates: initial, a transition row and the emission per state; no per-row trace."""
        return {"params_per_component": 3 + d + 2, "trace_per_observation": 0, "observations": "time points"}

    def study_shape(self, cell: dict) -> tuple[int, int]:
        """(time points, columns) of a study cell's series."""
        return cell["n_time"], 1

    # spec -------------------------------------------------------------------------------------
    #: ``[em] bootstrap_kind = "auto"``: a series' time points cannot be resampled; simulate from the fit
    auto_bootstrap_kind = "parametric"

    def spec_key_docs(self) -> dict[tuple[str, str], str]:
        return {
            ("model", "emission"): 'what each state emits: "poisson" (counts) or "gaussian" (measurements)',
            ("model", "initial"): '"estimated" (the first state\'s probabilities are fitted) or "stationary" (the '
                                  "transition matrix's stationary distribution)",
            ("bayes", "transition_prior"): "Dirichlet concentration of each row of the transition matrix: a number, or "
                                           "a K x K table; default: 1 off the diagonal and 1 + K on it (states persist)",
            ("bayes", "initial_prior"): "Dirichlet concentration of the first state's probabilities",
            ("bayes", "rate_prior"): "Poisson emissions: Gamma [shape, rate] prior of each state's rate; default: "
                                     "[2, 2 / mean count] (prior mean the mean count)",
        }

    def spec_defaults(self) -> dict[str, dict[str, object]]:
        return {
            "data": {"columns": None, "drop": []},
            "model": {"emission": "poisson", "initial": "estimated"},
            # mu_loc, mu_scale and sigma_scale: the priors of Gaussian emissions (refused for Poisson ones below)
            "bayes": {"transition_prior": None, "initial_prior": 1.0, "rate_prior": None,
                      "mu_loc": None, "mu_scale": None, "sigma_scale": None},
        }

    def check_spec(self, spec: dict) -> None:
        model, bayes_spec = spec["model"], spec.get("bayes", {})
        if spec.get("data", {}).get("truth") is not None:
            raise UserError("[data] truth names a column of known groups in a CSV file of measurements; a series' hidden "
                            "states have none to compare with here: remove it")
        for name in ("mu_loc", "mu_scale", "sigma_scale"):
            value = bayes_spec.get(name)
            if isinstance(value, list) and len(value) != 1:
                raise UserError(f"[bayes] {name} gives {len(value)} values, but a series is one column: give one number, "
                                f"e.g. {name} = {show_value(value[0]) if value else 1.0}")
        if model.get("initial", "estimated") == "stationary" and bayes_spec.get("initial_prior", 1.0) != 1.0:
            raise UserError('[bayes] initial_prior is the Dirichlet prior of an estimated initial distribution; with '
                            '[model] initial = "stationary" the first state follows the transition matrix: remove it')
        if model.get("emission", "poisson") not in EMISSIONS:
            raise UserError(f"[model] emission must be one of {', '.join(map(repr, EMISSIONS))}, got {model.get('emission')!r}")
        if model.get("initial", "estimated") not in INITIAL_MODES:
            raise UserError(f"[model] initial must be one of {', '.join(map(repr, INITIAL_MODES))}, got {model.get('initial')!r}")
        init = spec.get("em", {}).get("init", "auto")
        if init not in ("auto", "random"):
            raise UserError(f'[em] init must be "random" (or "auto") for a hidden Markov model, got {show_value(init)}')
        prior = bayes_spec.get("transition_prior")
        if prior is not None:
            self._check_transition_prior(prior, _components(spec))
        initial_prior = bayes_spec.get("initial_prior", 1.0)
        if not (is_number(initial_prior) and initial_prior > 0):
            raise UserError(f"[bayes] initial_prior must be a number > 0 (the Dirichlet concentration), got {initial_prior!r}")
        rate_prior = bayes_spec.get("rate_prior")
        if rate_prior is not None and not (isinstance(rate_prior, list) and len(rate_prior) == 2
                                           and all(is_number(v) and v > 0 for v in rate_prior)):
            raise UserError(f"[bayes] rate_prior must be two positive numbers [shape, rate] of the Gamma prior on each "
                            f"rate, got {rate_prior!r}")
        given = [key for key in ("mu_loc", "mu_scale", "sigma_scale") if bayes_spec.get(key) is not None]
        if given and model.get("emission", "poisson") == "poisson":
            raise UserError(f"[bayes] {given[0]} is a prior of Gaussian emissions; remove it for emission = \"poisson\" "
                            "(or set emission = \"gaussian\")")
        if rate_prior is not None and model.get("emission", "poisson") != "poisson":
            raise UserError("[bayes] rate_prior is the prior of Poisson rates; remove it for emission = \"gaussian\"")
        em_spec = spec.get("em", {})
        if em_spec.get("reach_best") is None:
            em_spec["reach_best"] = REACH_BEST
        if em_spec.get("max_init") is None:
            em_spec["max_init"] = max(MAX_INIT, em_spec.get("n_init", 10))
        if em_spec["max_init"] < em_spec.get("n_init", 10):
            raise UserError(f"[em] max_init = {em_spec['max_init']} is fewer than n_init = {em_spec['n_init']}; "
                            f"max_init is the most starts, so give at least {em_spec['n_init']}")
        if em_spec.get("bootstrap") and em_spec.get("bootstrap_kind", "nonparametric") != "parametric":
            raise UserError('[em] bootstrap_kind must be "parametric" for a hidden Markov model: the time points of a '
                            'series are dependent, so resampling them breaks the chain; set bootstrap_kind = "parametric"')
        if spec.get("model", {}).get("labels"):
            raise UserError("[model] labels names coins only; remove it from a hmm spec")

    @staticmethod
    def _check_transition_prior(prior, ks: list[int]) -> None:
        if is_number(prior):
            if prior <= 0:
                raise UserError(f"[bayes] transition_prior must be > 0 (a Dirichlet concentration), got {prior!r}")
            return
        rows = prior if isinstance(prior, list) else None
        if not rows or not all(isinstance(r, list) and all(is_number(v) and v > 0 for v in r) for r in rows):
            raise UserError("[bayes] transition_prior must be a positive number or a K x K table of positive numbers "
                            f"(row i: the Dirichlet prior of the transitions out of state i), got {prior!r}")
        lengths = [len(r) for r in rows]
        shape = (f"{len(rows)} x {lengths[0]}" if len(set(lengths)) == 1
                 else f"{len(rows)} rows of {', '.join(map(str, lengths))} numbers")
        if len(ks) > 1:
            raise UserError(f"[bayes] transition_prior is {shape}, a table that fits one K only, but the spec fits "
                            f"K = {', '.join(map(str, ks))}; give one number instead")
        k = ks[0]
        if len(rows) != k or any(len(r) != k for r in rows):
            raise UserError(f"[bayes] transition_prior is {shape} but [model] components = {k}; give a {k} x {k} table "
                            "(row i: the Dirichlet prior of the transitions out of state i) or one number")

    # data -------------------------------------------------------------------------------------
    def load_data(self, spec: dict) -> Series:
        from emvsbayes.spec import resolve_data_path

        counts = spec["model"].get("emission", "poisson") == "poisson"
        dataset = spec["data"].get("dataset")
        if dataset is not None:
            import importlib.resources

            from emvsbayes.data.bundled import dataset_info

            info = dataset_info(dataset)
            resource = importlib.resources.files("emvsbayes.data").joinpath("files", info.file)
            with importlib.resources.as_file(resource) as path:
                return read_series(path, spec, encoding=info.encoding, source=dataset, counts=counts)
        path = resolve_data_path(spec)
        return read_series(path, spec, encoding=spec["data"].get("encoding", "utf-8"), counts=counts)

    def data_from_memory(self, data, spec: dict, source: str):
        """(:class:`Series`, None) of one series in memory, in time order (:func:`series_from_memory`)."""
        from emvsbayes.hmm.series import series_from_memory

        return series_from_memory(data, spec, source, counts=spec["model"].get("emission", "poisson") == "poisson"), None

    def data_csv(self, data: Series, raw) -> tuple[str, dict]:
        from emvsbayes.hmm.series import series_csv

        return series_csv(data)

    def check_data(self, spec: dict, data: Series) -> None:
        for k in _components(spec):
            check_length(data, k, "[model] components" if k in np.ravel(spec["model"]["components"])
                         else "[model_choice] components")
        if spec["model"].get("emission", "poisson") == "gaussian" and not np.std(data.y) > 0:
            raise UserError(f"the series {data.column!r} is constant; a Gaussian hidden Markov model needs values that vary")
        if (spec["model"].get("emission", "poisson") == "poisson" and np.any(data.y > 0) and np.all(data.y == data.y[0])
                and spec["model"]["components"] > 1):
            raise UserError(f"{data.source}: every count in column {data.column!r} is {data.y[0]:g}, so one state explains "
                            f"them and {spec['model']['components']} states cannot be told apart; use components = 1, or "
                            "check the column named by [data] columns")
        if spec["model"].get("emission", "poisson") == "poisson" and not np.any(data.y > 0):
            # every rate's estimate is 0 and the transitions are not identified (ran to exit 0 with an arbitrary
            # transition matrix and a positive "log-likelihood" of rounding), as the Poisson mixture refuses it
            raise UserError(f"{data.source}: every count in column {data.column!r} is 0, so every rate's estimate is 0 "
                            "and the hidden states cannot be told apart; check the column named by [data] columns")
        from emvsbayes import limits

        if spec["model"].get("emission", "poisson") == "gaussian" and spec["bayes"]["enabled"]:
            limits.check_sampled_spread(data.y, [data.column], "")
        limits.check_run(spec, data.n_time, 1)

    def n_observations(self, data: Series) -> int:
        return data.n_time

    def data_shape(self, data: Series) -> tuple[int, int]:
        return data.n_time, 1

    def coords(self, spec: dict, model_def, data: Series) -> dict:
        k = model_def.n_components
        return {"component": np.arange(k), "component_to": np.arange(k), "time": list(data.time)}

    def data_group(self, spec: dict, data: Series):
        import xarray as xr

        ds = xr.Dataset({"y": ("time", data.y)}, coords={"time": list(data.time)})
        if data.true_states is not None:
            ds["true_state"] = ("time", np.asarray(data.true_states))
        ds.attrs.update(source=data.source, kind="series", column=data.column, time_column=data.time_column or "")
        return ds

    # model and parameters ----------------------------------------------------------------------
    def model_from_spec(self, spec: dict, data, n_components: int | None = None) -> HiddenMarkovModel:
        model, b = spec["model"], spec.get("bayes", {})
        k = n_components or (model["components"] if not isinstance(model["components"], list) else model["components"][0])
        prior = b.get("transition_prior")
        concentration = (tuple(tuple(float(v) for v in row) for row in prior) if isinstance(prior, list)
                         else (float(prior) if prior is not None else None))
        rate_prior = b.get("rate_prior")

        def optional(name):
            value = b.get(name)
            return float(value[0] if isinstance(value, list) else value) if value is not None else None

        return HiddenMarkovModel(
            n_components=k, emission=model.get("emission", "poisson"), initial=model.get("initial", "estimated"),
            ordered=b.get("variant", "symmetric") == "ordered",
            priors=HMMPriors(transition_concentration=concentration, initial_concentration=float(b.get("initial_prior", 1.0)),
                             rate_prior=tuple(rate_prior) if rate_prior is not None else None,
                             mu_loc=optional("mu_loc"), mu_scale=optional("mu_scale"), sigma_scale=optional("sigma_scale")),
        )

    def parameters(self, model_def: HiddenMarkovModel, data=None) -> dict[str, ParameterInfo]:
        dims = parameter_dims(model_def.emission)
        return {name: ParameterInfo(d, tuple(x for x in d if x in ("component", "component_to")), SCALES[name],
                                    ELEMENT_LABELS[name])
                for name, d in dims.items()}

    def n_free_parameters(self, model_def: HiddenMarkovModel, data=None) -> int:
        return model_def.n_free_parameters()

    def estimated_variables(self, model_def: HiddenMarkovModel, params: HMMParams) -> dict[str, np.ndarray]:
        return params.variables()

    def loglik(self, model_def: HiddenMarkovModel, data: Series, params: HMMParams) -> float:
        """log p(y) by the forward algorithm."""
        return float(em.e_step(model_def, data.y, params)[1])

    def model_choice_model(self, spec: dict, data, n_components: int) -> HiddenMarkovModel:
        return self.model_from_spec(spec, data, n_components)

    def lrt_unavailable(self) -> str:
        """Why the bootstrap LRT is not run for a hidden Markov model: its cost."""
        return ("the bootstrap likelihood-ratio test is not run for a hidden Markov model: every simulated series "
                "is refitted by Baum-Welch for K and K + 1 under the restart rule, one fit at a time (no batched "
                "fit); the earthquakes series' model choice with B = 2 did not finish in 10 minutes on a shared 2-core machine")

    def sparse_model(self, spec: dict, data, k_max: int, concentration: float):
        """None: a hidden Markov model has no mixture weights to shrink (its states' shares follow from the
        transition matrix), and its states are dependent given the parameters, so one state per time step
        drawn from its own membership probabilities would not be a draw of the state path."""
        return None, ("not for a hidden Markov model: its states have no mixture weights to shrink and are "
                      "dependent over time (an overfitted HMM needs a sparse prior on the transition matrix)")

    def loglik_and_resp(self, model_def, data: Series, params: HMMParams) -> tuple[float, np.ndarray]:
        """The forward algorithm's log-likelihood and the smoothed state probabilities (the ICL's entropy is
        taken of these: an approximation, the states of a chain are not independent)."""
        stats, loglik = em.e_step(model_def, data.y, params)
        return float(loglik), stats.gamma

    def model_choice_run(self, model_def, data: Series, em_spec: dict, rng, fit_until):
        return fit_until(*self.starts(model_def, data, em_spec, rng))

    def model_choice_checks(self, model_def, data: Series, run) -> dict:
        n, k = data.n_time, model_def.n_components
        if run is None:
            from emvsbayes.uncertainty.model_choice import ill_posed

            # K states: K (K - 1) transition probabilities besides the emissions (120 parameters at K = 10)
            unposed = ill_posed(model_def.n_free_parameters(), int(np.size(data.y)))
            return {"notes": [f"K = {k} is more than the {n} time points"] if k > n else [], "too_many": k > n,
                    "late_notes": unposed["late_notes"], "skip_bayes": k > n or unposed["skip_bayes"]}
        notes = []
        if run.n_reached_best < 2:
            notes.append(f"the best log-likelihood was reached by only {run.n_reached_best} of {run.n_starts} "
                         "EM starts: a better optimum may exist")
        return {"notes": notes, "row": {}}

    def model_choice_attrs(self, spec: dict, data: Series) -> dict:
        return {"n_obs": data.n_time}

    def variables(self, params: HMMParams) -> dict[str, np.ndarray]:
        return params.variables()

    def params_from_variables(self, model_def: HiddenMarkovModel, variables) -> HMMParams:
        emission = {name: np.asarray(variables[name], dtype=float) for name in emission_names(model_def.emission)}
        transition = np.asarray(variables["transition"], dtype=float)
        initial = variables.get("initial")
        if initial is None or model_def.stationary:
            initial = stationary_distribution(transition)
        return HMMParams(np.asarray(initial, dtype=float), transition, **emission)

    # EM ---------------------------------------------------------------------------------------
    def starts(self, model_def, data: Series, em_spec: dict, rng) -> tuple[Callable[[], HMMParams], RestartPolicy]:
        """Random starts until ``reach_best`` agree on the best log-likelihood (or ``max_init`` are spent)."""
        policy = RestartPolicy(min_starts=em_spec.get("n_init", 10), reach_best=em_spec.get("reach_best") or REACH_BEST,
                               max_starts=em_spec.get("max_init") or MAX_INIT,
                               loglik_atol=max(SAME_OPTIMUM_ATOL, 100 * em_spec.get("tol", 1e-8)))
        return em.start_source(model_def, data.y, rng), policy

    def random_starts(self, model_def, data: Series, n_init: int, rng) -> list[HMMParams]:
        return [em.random_start(model_def, data.y, child) for child in rng.spawn(n_init)]

    def restart_batches(self, model_def, data, options):
        """Baum-Welch runs its starts one at a time."""
        return None, 1

    def fit_resp(self, model_def, data: Series, fit) -> np.ndarray:
        return self.responsibilities(model_def, data, fit.params)

    def trace_stats(self):
        return None, None

    def estimate_attrs(self, model_def, data: Series, fit, failures) -> dict:
        n, p = data.n_time, model_def.n_free_parameters()
        loglik = self.loglik(model_def, data, fit.params)
        return dict(n_failed_restarts=len(failures), failure=failures[0] if failures else "", n_free_parameters=p,
                    observed_loglik=loglik, bic=-2 * loglik + p * np.log(n), aic=-2 * loglik + 2 * p)

    def e_step(self, model_def, data: Series, params):
        return em.e_step(model_def, data.y, params)

    def hard_e_step(self, model_def, data: Series, params):
        return em.hard_e_step(model_def, data.y, params)

    def m_step(self, model_def, data: Series, stats, params):
        return em.m_step(model_def, data.y, stats, params)

    def responsibilities(self, model_def, data: Series, params) -> np.ndarray:
        """Smoothed state probabilities P(z_t = k | y), (T, K)."""
        return em.e_step(model_def, data.y, params)[0].gamma

    def fit(self, model_def, data: Series, init, *, kind: str = "soft", **options):
        return em.fit(model_def, data.y, init, kind=kind, **options)

    def map_fit(self, model_def, data: Series, init, options: dict):
        """MAP-EM under the PyMC model's priors (Poisson emissions, estimated initial distribution;
        :mod:`emvsbayes.hmm.map_em`); ``EMFit.loglik`` is the log posterior."""
        from emvsbayes.hmm.map_em import fit_hmm_map

        return fit_hmm_map(model_def, data.y, init, **options)

    # observed information -----------------------------------------------------------------------
    def unconstrained_names(self, model_def: HiddenMarkovModel, data=None) -> tuple[str, ...]:
        """Emission coordinates (``log rate[k]``, or ``mu[k]`` and ``log sigma[k]``), each transition row's
        log-ratios ``log(A[i,j]/A[i,K-1])`` (j < K-1), then (estimated initial only) ``log(initial[k]/initial[K-1])``."""
        k = model_def.n_components
        if model_def.emission == "poisson":
            names = [f"log rate[{j}]" for j in range(k)]
        else:
            names = [f"mu[{j}]" for j in range(k)] + [f"log sigma[{j}]" for j in range(k)]
        names += [f"log(transition[{i},{j}]/transition[{i},{k - 1}])" for i in range(k) for j in range(k - 1)]
        if not model_def.stationary:
            names += [f"log(initial[{j}]/initial[{k - 1}])" for j in range(k - 1)]
        return tuple(names)

    def to_unconstrained(self, model_def: HiddenMarkovModel, params: HMMParams) -> np.ndarray:
        with np.errstate(divide="ignore"):
            if model_def.emission == "poisson":
                parts = [np.log(params.rate)]
            else:
                parts = [params.mu, np.log(params.sigma)]
            log_a = np.log(params.transition)
            parts.append((log_a[:, :-1] - log_a[:, -1:]).ravel())
            if not model_def.stationary:
                log_i = np.log(params.initial)
                parts.append(log_i[:-1] - log_i[-1])
        return np.concatenate(parts)

    def from_unconstrained(self, model_def: HiddenMarkovModel, data, phi: np.ndarray) -> HMMParams:
        k = model_def.n_components
        phi = np.asarray(phi, dtype=float)
        n_emission = k * len(emission_names(model_def.emission))
        if model_def.emission == "poisson":
            emission = {"rate": np.exp(phi[:k])}
        else:
            emission = {"mu": phi[:k], "sigma": np.exp(phi[k:2 * k])}
        logits = np.concatenate([phi[n_emission:n_emission + k * (k - 1)].reshape(k, k - 1), np.zeros((k, 1))], axis=1)
        transition = _softmax(logits)
        if model_def.stationary:
            return model_def.with_initial(None, transition, **emission)
        initial = _softmax(np.append(phi[n_emission + k * (k - 1):], 0.0))
        return HMMParams(initial, transition, **emission)

    def symbolic_variables(self, model_def: HiddenMarkovModel, phi):
        """The natural parameters as pytensor expressions of ``phi`` (the inverse of :meth:`to_unconstrained`):
        name -> tensor, shaped as :meth:`parameters`. The delta method's Jacobian comes from these."""
        import pytensor.tensor as pt

        k = model_def.n_components
        n_emission = k * len(emission_names(model_def.emission))
        if model_def.emission == "poisson":
            out = {"rate": pt.exp(phi[:k])}
        else:
            out = {"mu": phi[:k], "sigma": pt.exp(phi[k:2 * k])}
        logits = pt.concatenate([phi[n_emission:n_emission + k * (k - 1)].reshape((k, k - 1)), pt.zeros((k, 1))], axis=1)
        log_transition = pt.special.log_softmax(logits, axis=1)
        if model_def.stationary:
            log_initial = pt.log(bayes.stationary_symbolic(pt.exp(log_transition), k))
        else:
            log_initial = pt.special.log_softmax(pt.concatenate([phi[n_emission + k * (k - 1):], pt.zeros((1,))]))
        return {"initial": pt.exp(log_initial), "transition": pt.exp(log_transition), **out,
                "_log_initial": log_initial, "_log_transition": log_transition}

    def symbolic_loglik(self, model_def: HiddenMarkovModel, data: Series):
        """(phi, log p(y | phi)): the forward algorithm as a pytensor scan (:func:`bayes.forward_loglik`)."""
        import pytensor.tensor as pt

        phi = pt.vector("phi", dtype="float64")
        variables = self.symbolic_variables(model_def, phi)
        log_emission = bayes.log_emission_symbolic(model_def, data.y, variables)
        return phi, bayes.forward_loglik(variables["_log_initial"], variables["_log_transition"], log_emission)

    def information_function(self, model_def: HiddenMarkovModel, data: Series) -> Callable:
        """phi -> (loglik, gradient, Hessian, natural values, Jacobian): the derivatives from an exported program
        stored once per model (the series an input of symbolic length), the Jacobian of the natural variables by
        central differences (:func:`~emvsbayes.uncertainty.information.with_numeric_jacobian`), as before."""
        from emvsbayes.uncertainty.information import with_numeric_jacobian

        program = _information_function(model_def)
        y = np.asarray(data.y, dtype=float)
        return with_numeric_jacobian(self, model_def, data, lambda phi: program(phi, y))

    def information_reason(self, model_def, data: Series, params: HMMParams) -> str:
        """A transition probability or an estimated initial probability on 0 is on the boundary of its simplex,
        where the log-ratio coordinates are infinite."""
        from emvsbayes.uncertainty.information import BOUNDARY_TOL

        # "on" the boundary to rounding: EM's estimated initial distribution ends at 1e-128, not 0 (Old Faithful's
        # series), where the log-ratio's information is ~1e-128 and its delta-method se ~1e-64 beside a [0, 1] interval
        if (np.any(params.transition <= BOUNDARY_TOL)
                or (not model_def.stationary and np.any(params.initial <= BOUNDARY_TOL))):
            return "a transition or initial probability is 0 at EM's answer: the information is singular there"
        return ""

    def bootstrap_target(self, model_def, data: Series):
        """(the bootstrap's simulate / refit object, the series); parametric only (see :meth:`resample`)."""
        return HMMBootstrap(model_def, self), data

    # Bayes ------------------------------------------------------------------------------------
    order_var = "rate"

    def pymc_model(self, model_def, data: Series):
        return bayes.build_model(model_def, data.y, time_labels=data.time)

    def model_recipe(self, model_def, data: Series, coords=None):
        from emvsbayes.sampling import ModelRecipe

        return ModelRecipe(bayes.build_model, (model_def, np.asarray(data.y)), {"time_labels": tuple(data.time)})

    def target_accept(self, value, params, data) -> float:
        from emvsbayes.sampling import resolve_target_accept

        return resolve_target_accept(value, float(np.min(np.exp(np.log(np.maximum(params.transition.diagonal(), 1e-300))))) * data.n_time)

    def posterior_group(self, model_def, posterior, coords):
        return posterior.assign_coords(component=coords["component"])

    def posterior_draws(self, model_def, posterior) -> dict[str, np.ndarray]:
        out = {}
        for name in self.parameters(model_def):
            if name in posterior:
                da = posterior[name].transpose("chain", "draw", ...)
                out[name] = da.values.reshape(-1, *da.shape[2:])
        return out

    def initvals(self, model_def, params_list) -> list[dict]:
        return bayes.initvals_from_params(model_def, params_list)

    def one_step_log_density(self, model_def, data: Series, draws: dict[str, np.ndarray]) -> np.ndarray:
        """log p(y_t | y_0..y_{t-1}, draw), (S, T), by forward filtering per draw: the pieces of leave-future-out
        cross-validation (the runner's model choice uses it instead of pointwise LOO, invalid for a series)."""
        return bayes.one_step_predictive(model_def, data.y, draws)

    def prefix_recipe(self, model_def, data: Series):
        """(recipe, container, counted(n)) for leave-future-out's refits: the model of the whole series whose
        likelihood counts the first n points, as ``counted(n)`` (the container's values) says: one program for
        every prefix, where a model per prefix compiled one per refit (earthquakes, K = 2 and 3: 8 programs,
        ~2 s each cold). The priors are the whole series' (those of the posterior the page shows), the same
        for every refit, as the importance weights between refits assume."""
        from emvsbayes.sampling import ModelRecipe

        name = "counted"
        recipe = ModelRecipe(bayes.build_model, (model_def, np.asarray(data.y)),
                             {"time_labels": tuple(data.time), "prefix_container": name})
        return recipe, name, lambda n: (np.arange(data.n_time) < n).astype(float)

    def prefix(self, data: Series, n: int) -> Series:
        """The first ``n`` time points (the series as it was known at time n), for leave-future-out refits."""
        return dataclasses.replace(data, y=data.y[:n], time=tuple(data.time[:n]),
                                   true_states=None if data.true_states is None else data.true_states[:n])

    def membership_draws(self, model_def, data: Series, draws: dict[str, np.ndarray]) -> np.ndarray:
        """Posterior state probabilities per time point per draw (S, T, K), by forward-backward per draw."""
        return bayes.state_probabilities(model_def, data.y, draws)

    # simulation ---------------------------------------------------------------------------------
    def simulate(self, model_def: HiddenMarkovModel, params: HMMParams, n: int, rng, like=None) -> Series:
        """A series of ``n`` time points drawn from the chain: states by the transition matrix, then emissions
        (``like``, the protocol's data whose fixed design a simulation keeps: a series has none but its length)."""
        k = model_def.n_components
        initial = np.exp(model_def.log_initial(params))
        cumulative = np.cumsum(params.transition, axis=1)
        uniforms = rng.random(n)
        states = np.empty(n, dtype=np.int64)
        states[0] = min(int(np.searchsorted(np.cumsum(initial), uniforms[0] * initial.sum(), side="right")), k - 1)
        for t in range(1, n):
            row = cumulative[states[t - 1]]
            states[t] = min(int(np.searchsorted(row, uniforms[t] * row[-1], side="right")), k - 1)
        if model_def.emission == "poisson":
            y = rng.poisson(params.rate[states]).astype(float)
        else:
            y = rng.normal(params.mu[states], params.sigma[states])
        return Series(y=y, column="y", time=tuple(str(t + 1) for t in range(n)), source=f"simulated HMM, K = {k}",
                      true_states=states)

    def resample(self, data, rng):
        """None: the time points of a series are dependent, so resampling them breaks the chain; bootstraps of
        this family are parametric (:meth:`simulate` from the fitted model)."""
        return None

    def prior_draw(self, model_def: HiddenMarkovModel, rng, data: Series | None = None) -> HMMParams:
        """Parameters drawn from the PyMC model's prior (the data-scaled defaults need ``data``)."""
        y = data.y if data is not None else np.ones(2)
        prior = bayes.prior_values(model_def, y)
        k = model_def.n_components
        transition = np.stack([rng.dirichlet(row) for row in prior["transition_concentration"]])
        if model_def.emission == "poisson":
            shape, rate = prior["rate_prior"]
            emission = {"rate": rng.gamma(shape, 1.0 / rate, size=k)}
            key = "rate"
        else:
            emission = {"mu": rng.normal(prior["mu_loc"], prior["mu_scale"], size=k),
                        "sigma": np.abs(rng.normal(0.0, prior["sigma_scale"], size=k))}
            key = "mu"
        if model_def.ordered:
            # The ordered model's prior is the symmetric one's restricted to increasing rate (mu), the other
            # variables independent of it: only the ordering variable is sorted. Permuting the transition
            # matrix along would draw it from Dirichlet(c) only when the table c is itself unchanged by
            # permuting its rows and columns together (a number, or the default), not for any K x K table.
            emission[key] = np.sort(emission[key])
        initial = rng.dirichlet(prior["initial_concentration"])
        return model_def.with_initial(initial, transition, **emission)

    # studies (emvsbayes.study): a cell's model, truth and data; the series as named arrays ----------
    observed = {"y": "y"}  # the data container's stem -> the array holding the series (see pymc_model_with_containers)

    def study_axes(self) -> dict[str, tuple[object, Callable]]:
        """Grid axes of a study: name -> (default, check of one value). The size axis is ``n_time``, the series'
        length T; ``emission`` and ``initial`` are the model's (:class:`~emvsbayes.hmm.model.HiddenMarkovModel`).
        A coverage study's truth (:meth:`study_truth`) reads ``rate`` and ``separation`` (Poisson: the lowest rate
        and the gap between neighbouring rates on the square-root scale; Gaussian: the gap between neighbouring
        means in units of the common sd 1) and ``stay``, every state's probability of staying."""
        from emvsbayes.spec import one_of, positive_int, positive_number, probability_open
        from emvsbayes.study.spec import SAMPLERS, prior_name

        def non_negative(v):
            return None if is_number(v) and v >= 0 else f"must be a number >= 0, got {v!r}"

        return {"components": (2, positive_int), "n_time": (200, positive_int),
                "emission": ("poisson", one_of(*EMISSIONS)), "initial": ("estimated", one_of(*INITIAL_MODES)),
                "variant": ("symmetric", one_of("symmetric", "ordered")),
                "rate": (4.0, positive_number), "separation": (1.5, non_negative), "stay": (0.9, probability_open),
                # numpyro: the forward algorithm's Op has its own JAX form (one lax.scan); nutpie would run the
                # Op's Python perform through numba's object mode
                "sampler": ("numpyro", one_of(*SAMPLERS)), "prior": ("default", prior_name)}

    def study_prior_keys(self) -> dict:
        """Prior keys of a study's ``[bayes]`` and ``[priors.NAME]``: fixed numbers, never scaled to a data set (a
        replicate's prior must not depend on its data; SBC draws the truth from it). ``transition_prior`` is
        one Dirichlet concentration for every entry or a K x K table (row i: the prior of the transitions out of
        state i); left out, 1 off the diagonal and 1 + K on it. ``rate_prior`` is Poisson emissions', ``mu_loc``,
        ``mu_scale``, ``sigma_scale`` Gaussian ones'."""
        from emvsbayes.spec import Key, positive_number

        def gamma(v):
            ok = isinstance(v, list) and len(v) == 2 and all(is_number(x) and x > 0 for x in v)
            return None if ok else f"must be [shape, rate], the Gamma prior's two positive numbers, got {v!r}"

        def transition(v):
            if v is None or (is_number(v) and v > 0):
                return None
            if isinstance(v, list) and v and all(isinstance(r, list) and r and all(is_number(x) and x > 0 for x in r)
                                                 for r in v):
                return None  # its shape against K is checked per cell (study_check)
            return ("must be a positive number or a K x K table of positive numbers (row i: the Dirichlet prior of "
                    f"the transitions out of state i), got {v!r}")

        def number(v):
            return None if is_number(v) else f"must be a number, got {v!r}"

        return {"transition_prior": Key(None, transition), "initial_prior": Key(1.0, positive_number),
                "rate_prior": Key([2.0, 0.2], gamma), "mu_loc": Key(0.0, number), "mu_scale": Key(5.0, positive_number),
                "sigma_scale": Key(2.0, positive_number)}

    def study_check_prior(self, cell: dict, prior: dict, where: str, source: str) -> None:
        """A table-shaped transition prior must be K x K for the cell's K (``where``: the prior's table)."""
        table = prior.get("transition_prior")
        k = cell["components"]
        if isinstance(table, list) and (len(table) != k or any(len(row) != k for row in table)):
            lengths = [len(row) for row in table]
            shape = (f"{len(table)} x {lengths[0]}" if len(set(lengths)) == 1
                     else f"{len(table)} rows of {', '.join(map(str, lengths))} numbers")
            raise UserError(f"{source}: {where} transition_prior is {shape} but a cell has K = {k} states; give a "
                            f"{k} x {k} table (row i: the Dirichlet prior of the transitions out of state i) or one number")

    def study_model(self, spec: dict, cell: dict, prior: dict) -> HiddenMarkovModel:
        table = prior.get("transition_prior")
        concentration = (tuple(tuple(float(v) for v in row) for row in table) if isinstance(table, list)
                         else (float(table) if table is not None else None))
        return HiddenMarkovModel(
            n_components=cell["components"], emission=cell["emission"], initial=cell["initial"],
            ordered=cell["variant"] == "ordered",
            priors=HMMPriors(transition_concentration=concentration,
                             initial_concentration=float(prior.get("initial_prior", 1.0)),
                             rate_prior=tuple(float(v) for v in prior.get("rate_prior", (2.0, 0.2))),
                             mu_loc=float(prior.get("mu_loc", 0.0)), mu_scale=float(prior.get("mu_scale", 5.0)),
                             sigma_scale=float(prior.get("sigma_scale", 2.0))))

    def study_truth(self, spec: dict, cell: dict, model_def: HiddenMarkovModel, rng) -> HMMParams:
        """A coverage cell's truth: every state stays with probability ``stay`` and moves to each other state
        alike; Poisson rates ``separation`` apart on the square-root scale from ``rate`` (as the Poisson
        mixture's), Gaussian means ``separation`` apart with sd 1; the initial distribution uniform (which is
        also this chain's stationary one)."""
        k = cell["components"]
        stay = cell["stay"] if k > 1 else 1.0
        transition = np.full((k, k), (1.0 - stay) / max(k - 1, 1)) + (stay - (1.0 - stay) / max(k - 1, 1)) * np.eye(k)
        if model_def.emission == "poisson":
            emission = {"rate": (np.sqrt(cell["rate"]) + cell["separation"] * np.arange(k)) ** 2}
        else:
            emission = {"mu": cell["separation"] * np.arange(k), "sigma": np.ones(k)}
        return model_def.with_initial(np.full(k, 1.0 / k), transition, **emission)

    def study_data(self, model_def: HiddenMarkovModel, params: HMMParams, cell: dict, rng) -> Series:
        """A series of ``n_time`` points simulated from ``params`` (:meth:`simulate`)."""
        return self.simulate(model_def, params, cell["n_time"], rng)

    def as_arrays(self, data: Series) -> dict[str, np.ndarray]:
        return {"y": np.asarray(data.y, dtype=float)}

    def from_arrays(self, arrays) -> Series:
        y = np.asarray(arrays["y"], dtype=float)
        return Series(y=y, column="y", time=tuple(str(t + 1) for t in range(y.size)), source="study replicate")

    def pymc_model_with_containers(self, model_def: HiddenMarkovModel, data: Series, containers: dict[str, str]):
        """The PyMC model with the series in the ``pm.Data`` container ``containers["y"]`` (a study's sampler
        swaps each replicate's series into it). The likelihood is a potential, not an observed variable, so the
        study cannot put the container in by ``pm.observe`` as it does for the mixtures."""
        return bayes.build_model(model_def, data.y, time_labels=data.time, data_container=containers["y"])

    def order_var_of(self, model_def: HiddenMarkovModel) -> str:
        """The emission parameter that orders the states: ``rate`` (Poisson) or ``mu`` (Gaussian)."""
        return "rate" if model_def.emission == "poisson" else "mu"

    # extras -----------------------------------------------------------------------------------
    def extra_groups(self, spec, model_def, data: Series, best_fit, rng=None, timings=None) -> dict:
        """``decoding``: the Viterbi path and the smoothed state probabilities at EM's answer."""
        import xarray as xr

        from emvsbayes.hmm.inference import viterbi

        params = best_fit.params
        with np.errstate(divide="ignore"):
            log_transition = np.log(params.transition)
        parts = (model_def.log_initial(params), log_transition, model_def.log_emission(params, data.y))
        path, best = viterbi(*parts)
        smoothed = forward_backward(*parts)
        ds = xr.Dataset({"viterbi": ("time", path), "smoothed": (("time", "component"), smoothed.gamma),
                         "posterior_decoding": ("time", smoothed.gamma.argmax(axis=1))},
                        coords={"time": list(data.time), "component": np.arange(model_def.n_components)})
        ds.attrs.update(viterbi_log_joint=best, loglik=smoothed.loglik)
        return {"decoding": ds}

    def report_sections(self, tree, prob: float, colors) -> list:
        """The series coloured by decoded state, the transition matrix and the decodings
        (:func:`emvsbayes.hmm.report.report_sections`; imported here, on use, with matplotlib)."""
        from emvsbayes.hmm.report import report_sections

        return report_sections(tree, prob, colors)


class HMMBootstrap:
    """The generic bootstrap's view of a series: simulate a series of the same length from the fit, refit it."""

    def __init__(self, model_def, family):
        self.model = model_def
        self.family = family

    def n_obs(self, data) -> int:
        return int(data.n_time)

    def take(self, data, rows):
        raise UserError('[em] bootstrap_kind = "nonparametric" resamples rows, which breaks a series\' chain; '
                        'use bootstrap_kind = "parametric"')

    def simulate(self, data, params, rng):
        return self.family.simulate(self.model, params, int(data.n_time), rng)

    def refit(self, data, init, options):
        return em.fit(self.model, data.y, init, **options)

    def refit_batched(self, data, samples, counts, init, options):
        """The simulated series refitted together (:func:`emvsbayes.hmm.em.fit_batched`); ``counts`` (resampled
        rows) never comes: a series is not resampled."""
        options = {key: value for key, value in options.items() if key != "kind"}  # soft EM: the batched route's
        return em.fit_batched(self.model, np.stack([sample.y for sample in samples]), init, **options)

    def single_fit_size(self, data, reference) -> int:
        # one fit's arrays: T x K (the bootstrap batches the refits below its LARGE_FIT)
        return int(data.n_time) * self.model.n_components

    def dims(self, reference) -> dict[str, tuple[str, ...]]:
        return parameter_dims(self.model.emission)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


FAMILY = HMMFamily()

__all__ = ["FAMILY", "HMMFamily", "ParameterInfo", "Series"]
