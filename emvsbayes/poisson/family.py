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

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from emvsbayes.data.records import CountData
from emvsbayes.em import EMFit
from emvsbayes.errors import UserError
from emvsbayes.poisson import bayes, em
from emvsbayes.poisson.model import PoissonMixture, PoissonParams, default_rate_prior

try:
    from emvsbayes.family import ParameterInfo
except ImportError:  # before the protocol module (branch proto) is merged: the same record, field for field

    class ParameterInfo(NamedTuple):  # type: ignore[no-redef]
        dims: tuple[str, ...]
        label_dims: tuple[str, ...]
        scale: str


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_numbers(value, length: int | None = None) -> bool:
    return (isinstance(value, list) and bool(value) and (length is None or len(value) == length)
            and all(_is_number(v) and v > 0 for v in value))


class PoissonFamily:
    """Poisson mixtures of counts: K rates and K weights, label dim ``component``."""

    name = "poisson"
    obs_dim = "obs"

    # -- spec -------------------------------------------------------------------------------------

    def spec_defaults(self) -> dict[str, dict[str, object]]:
        """Keys only this family reads, per table, with their defaults."""
        return {"data": {"counts": "count"}, "bayes": {"rate_prior": "auto"}}

    def check_spec(self, spec: dict) -> None:
        """One-line UserError for a family key of the wrong form, naming the key and the fix."""
        counts = spec.get("data", {}).get("counts", "count")
        if not (isinstance(counts, str) and counts.strip()):
            raise UserError(f"[data] counts must name the column of counts, e.g. counts = \"count\", got {_show(counts)}")
        prior = spec.get("bayes", {}).get("rate_prior", "auto")
        if prior != "auto" and not _positive_numbers(prior, 2):
            raise UserError(f"[bayes] rate_prior must be \"auto\" or [alpha, beta], the Gamma prior's positive shape "
                            f"and rate, e.g. [2, 0.1], got {_show(prior)}")
        init = spec.get("em", {}).get("init", "auto")
        if isinstance(init, str):
            if init != "auto" and init not in em.INIT_METHODS:
                raise UserError(f"[em] init = {_show(init)} is not a Poisson start; use \"auto\", "
                                f"{', '.join(repr(m) for m in em.INIT_METHODS)}, or starting rates such as [10, 30]")
        elif isinstance(init, list):
            if not _positive_numbers(init):
                raise UserError(f"[em] init must list positive starting rates such as [10, 30], got {_show(init)}")
        elif isinstance(init, dict):
            if set(init) != {"rate", "w"} or not _positive_numbers(init["rate"]) or not _positive_numbers(init["w"]):
                raise UserError(f"[em] init as a table needs rate = [...] and w = [...], positive numbers, "
                                f"e.g. {{ rate = [10, 30], w = [0.5, 0.5] }}, got {_show(init)}")
        else:
            raise UserError(f"[em] init must be \"auto\", \"k-means++\", \"random\" or starting rates, got {_show(init)}")

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

    def check_data(self, spec: dict, data: CountData) -> None:
        """Checks that need the data, made before anything is written."""
        n = data.n_rows
        if n == 0:
            raise UserError(f"{data.source}: no rows of counts; give a file with at least one count")
        ks = [spec["model"]["components"], *spec.get("model_choice", {}).get("components", [])]
        for k in ks:
            if isinstance(k, int) and k > n:
                raise UserError(f"components = {k} is more than the {n} rows of counts; use at most {n}")
        if not np.any(data.counts > 0):
            raise UserError(f"{data.source}: every count in column {data.column!r} is 0, so every rate's estimate is 0 "
                            "and nothing can be compared; check the column named by [data] counts")
        init = spec["em"]["init"]
        k = spec["model"]["components"]
        given = init if isinstance(init, list) else init.get("rate") if isinstance(init, dict) else None
        if given is not None and len(given) != k:
            raise UserError(f"[em] init gives {len(given)} starting rates for components = {k}; give {k}")
        if isinstance(init, dict) and len(init["w"]) != k:
            raise UserError(f"[em] init gives {len(init['w'])} weights for components = {k}; give {k}")
        from emvsbayes import limits

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

    # -- model and parameters ---------------------------------------------------------------------

    def model_from_spec(self, spec: dict, data: CountData, n_components: int | None = None) -> PoissonMixture:
        k = spec["model"]["components"] if n_components is None else n_components
        prior = spec["bayes"].get("rate_prior", "auto")
        return PoissonMixture(
            n_components=int(k),
            rate_prior=default_rate_prior(data.counts) if prior == "auto" else tuple(float(v) for v in prior),
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
        return PoissonParams(variables["w"], variables["rate"])

    # -- EM ---------------------------------------------------------------------------------------

    def starts(self, model_def: PoissonMixture, data: CountData, em_spec: dict, rng: np.random.Generator
               ) -> Callable[[], PoissonParams]:
        """Each call gives the next start, drawn from its own child generator of ``rng`` (start j is the same
        whatever the number of starts), or the given start every time."""
        init = em_spec.get("init", "auto")
        k = model_def.n_components
        if isinstance(init, list):
            given = PoissonParams(np.full(k, 1.0 / k), init)
            return lambda: given
        if isinstance(init, dict):
            w = np.asarray(init["w"], dtype=float)
            given = PoissonParams(w / w.sum(), init["rate"])
            return lambda: given
        method = "k-means++" if init == "auto" else init
        return lambda: em.random_start(model_def, data.counts, rng.spawn(1)[0], method)

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
        return PoissonParams(z / z.sum(), np.exp(phi[:k]))

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

    def simulate(self, model_def: PoissonMixture, params: PoissonParams, n: int, rng: np.random.Generator) -> CountData:
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
        return PoissonParams(w, np.sort(rate) if model_def.ordered else rate)

    # -- extras -----------------------------------------------------------------------------------

    def extra_groups(self, spec, model_def, data, best_fit) -> dict:
        """None: the Poisson mixture has no exact posterior or reference clustering to add."""
        return {}


FAMILY = PoissonFamily()
