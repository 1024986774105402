"""The model-family protocol: everything the rest of the package asks of a model family, in one place.

A family (two coins, Gaussian mixtures, ...) is a package ``emvsbayes.<name>`` whose ``family`` module
defines ``FAMILY``, an object with the members of :class:`Family`. The registry :data:`FAMILIES` names
the module of each family; it is imported on first use, so naming a family costs nothing. Adding a
family is its own package plus one line here.

The generic parts of the package (the runner, ``uncertainty``, ``study``, ``labels``' xarray shell, the
report) take a family and name none: what differs between families is a member of this protocol, what
does not is written once outside it. The contract every family must meet is
``tests/test_family_contract.py``.

Conventions:

- ``model_def`` is the family's frozen model definition (K, weights fixed or estimated, priors, ...);
  ``params`` a frozen parameter record with ``permuted(perm)`` (relabel components) and
  ``variables()`` (name -> array, keyed as :meth:`Family.parameters`);
- ``data`` is a frozen data record, as ``load_data`` and ``simulate`` return it;
- random numbers come from an explicit ``numpy.random.Generator`` argument, never a global state.

Studies ask a family for its grid (``study_axes()``: name -> (default, check)), its prior keys
(``study_prior_keys()``), an optional ``study_check(cell, kind, source)`` of a cell's limits, and the
``study_model`` / ``study_truth`` / ``study_data`` / ``study_shape`` of a cell; the report asks for
``describe(spec)``, the model in words. Optional study members: ``study_check_prior(cell, prior, where,
source)``, the family's limits on a prior a cell uses (a K x K table against the cell's K); ``order_var_of(
model_def)``, the variable that orders the components for SBC's label-invariant quantities when it depends on
the model (else the ``order_var`` attribute); ``pymc_model_with_containers(model_def, data, containers)``, the
PyMC model with each data array in the ``pm.Data`` container ``containers[key]`` (``key`` as ``observed``
names it), for a family whose likelihood is no observed variable that ``pm.observe`` could give a container.

The uncertainty ladder (:mod:`emvsbayes.ladder`) asks for two optional members; a family without one gets
no such rung and the ladder says why:

- ``map_fit(model_def, data, init, options) -> EMFit``: EM for the posterior mode under the family's own
  PyMC priors (the density of the parameters themselves, PyMC's ``compile_logp(jacobian=False)``), from
  ``init``; ``EMFit.loglik`` is that log posterior; ``options`` as :func:`emvsbayes.em.fit_em`. A prior
  with no mode (a concentration below 1) or a model it does not cover raises ``ValueError`` whose message
  is the one-line reason;
- ``weighted_fit(model_def, data, init, weights, options) -> BatchedEMFit``: B soft EM fits from ``init``
  at once, fit b maximising the weighted log-likelihood sum_i ``weights[b, i]`` log p(x_i | params)
  (the Bayesian bootstrap's refits; ``weights`` (B, N)).

Data larger than memory (``[data] store``, :mod:`emvsbayes.store`) need one optional member; a family
without it is refused such a spec in one line:

- ``fit_chunked(model_def, x, init, *, kind, client, **options) -> EMFit``: EM on ``x``, a (N, D) dask array
  chunked by whole rows, each iteration a map over chunks and a reduction of their sufficient statistics
  on ``client``'s cluster; the same answer as ``fit`` on the rows in memory (to rounding); ``options`` as
  :func:`emvsbayes.em.fit_em`.

Data passed in memory to :func:`emvsbayes.compare` need two optional members; a family without them is refused
there in one line (its data come from a spec's file or data set):

- ``data_from_memory(data, spec, source) -> (record, raw)``: the family's data record of arrays, DataFrames,
  DataArrays or lists, checked as the family's file reader checks a file (one-line :class:`UserError` messages
  starting with ``source``); ``raw`` is what ``data_csv`` needs beside the record (the rows before z-scoring) or None;
- ``data_csv(record, raw) -> (text, data_keys)``: the data as CSV text and the ``[data]`` keys that read that
  text back into the same numbers (``Comparison.to_spec`` writes the spec that reruns a comparison).

Other optional members (a family may leave them out; the generic code then does the plain thing):

- ``report_sections(tree, prob, colors) -> list[ReportSection]``: the family's own sections of the report
  page, drawn from the results tree alone (``prob``: the page's interval probability; ``colors``: the
  page's component colours, so the family's figures colour components as the page does). The report asks
  the family named by the results' root attr ``family`` for them and places each after the generic section
  its ``after`` names. The family returns records, never HTML: the report escapes the texts and serialises
  the figures, so a family needs nothing of :mod:`emvsbayes.report`.
- ``one_step_log_density(model_def, data, draws) -> (S, n)`` and ``prefix(data, n)``: a family whose
  observations are dependent (a time series) gives log p(y_t | y_<t, draw) and its first n observations; the
  model choice then scores each K by leave-future-out cross-validation (PSIS-LFO) instead of pointwise LOO,
  refitting the posterior on prefixes of the data. With ``prefix_recipe(model_def, data) -> (recipe,
  container, counted)`` too, each refit samples one model of the whole data whose likelihood counts the
  first n observations (``counted(n)``: the values of its ``pm.Data`` container ``container``), so one
  compiled program serves every refit instead of a model (and a compile) per prefix.
- ``auto_bootstrap_kind``: what ``[em] bootstrap_kind = "auto"`` (the default) becomes for the family;
  "nonparametric" (resample rows) without it.
- ``spec_key_docs() -> {(section, key): meaning}``: what each of the family's own spec keys (those of
  ``spec_defaults`` that :data:`emvsbayes.spec.SCHEMA` does not have) means, for the spec-keys table
  (``emvsbayes spec-keys``, README.md); a family with own keys must describe every one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - names for annotations only
    import numpy as np
    import xarray as xr

    from emvsbayes.em import EMFit


class ParameterInfo(NamedTuple):
    """What the generic code needs to know of one reported parameter."""

    #: array dims after the leading draw / replicate dims, e.g. ("component", "coord")
    dims: tuple[str, ...]
    #: which of ``dims`` relabelling permutes: ("component",) for a mixture's means; ("component",
    #: "component_to") for a transition matrix (rows and columns together); () for a label-free parameter
    label_dims: tuple[str, ...]
    #: the Wald interval's scale (:data:`emvsbayes.uncertainty.information.SCALE_DESCRIPTIONS`):
    #: "logit", "log", "identity", "log-diagonal" or "simplex"
    scale: str
    #: how a table names one element, a ``str.format`` template whose fields are ``dims``, each filled with its
    #: index counted from 1 (``"transition, state {component} -> state {component_to}"``); "" for the plain
    #: ``name[i, j]`` (indices from 0, as the mixtures' tables have always read)
    label: str = ""


class ReportParagraph(NamedTuple):
    """Plain text (the report escapes it)."""

    text: str


class ReportFigure(NamedTuple):
    """A matplotlib figure (the report serialises and closes it) with its caption."""

    figure: object
    name: str  # short, for the figure's id
    caption: str = ""
    wide: bool = False  # drawn across the page's width (a long time axis), not at the figure's own size


def percent(prob: float) -> str:
    """An interval's probability as the pages write it, to four significant digits: 0.89 -> "89%", 0.975 ->
    "97.5%" (whole percents called a 0.975 interval "98%"). Families' report sections and the report use it."""
    return f"{float(prob) * 100:.4g}%"


class ReportTable(NamedTuple):
    """A table of plain-text cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


class ReportSection(NamedTuple):
    """One section a family adds to the report page (:meth:`report_sections`, optional member)."""

    anchor: str  # the section's id in the page
    title: str
    after: str  # the anchor of the generic section this one follows ("data", "comparison", ...)
    blocks: tuple  # ReportParagraph | ReportFigure | ReportTable, in order


#: family name -> module holding ``FAMILY``; imported on first use. One line per family.
FAMILIES: dict[str, str] = {
    "coins": "emvsbayes.coins.family",
    "gaussian": "emvsbayes.gaussian.family",
    "poisson": "emvsbayes.poisson.family",
    "hmm": "emvsbayes.hmm.family",
}


def family_names() -> tuple[str, ...]:
    """The registered family names, in registry order."""
    return tuple(FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as ``name``; ``KeyError`` naming the known ones if there is none (a spec's
    family is checked against :func:`family_names` before this is reached)."""
    try:
        module = FAMILIES[name]
    except (KeyError, TypeError):
        raise KeyError(f"no model family {name!r}; the families are {', '.join(FAMILIES)}") from None
    return importlib.import_module(module).FAMILY


@runtime_checkable
class Family(Protocol):
    """The members a model family provides (see the module docstring for the conventions)."""

    name: str  # "coins", "gaussian", ...
    title: str  # the family in words, plural, for pages: "Gaussian mixtures", ...
    obs_dim: str  # the observation dim in results.nc: "set", "obs", "time"

    def example(self) -> tuple[object, object, int]:
        """(model_def, true params, n): a small, well-separated case the contract test simulates from."""

    # spec -----------------------------------------------------------------------------------------
    def spec_defaults(self) -> dict[str, dict[str, object]]:
        """The spec keys this family reads that not every family does, per table, with their defaults: its own
        keys, and the shared keys flagged ``family_only`` in :data:`emvsbayes.spec.SCHEMA` that it reads (a
        family that does not list such a key refuses a value other than its default)."""

    def check_spec(self, spec: dict) -> None:
        """Checks of a spec needing no data; :class:`~emvsbayes.errors.UserError` (one line) when bad."""

    # data -----------------------------------------------------------------------------------------
    def load_data(self, spec: dict) -> object:
        """The data the spec names (a bundled data set or a CSV file) as a frozen data record."""

    def check_data(self, spec: dict, data) -> None:
        """Checks needing the data, made before anything is fitted or written."""

    def n_observations(self, data) -> int: ...

    def data_group(self, spec: dict, data) -> xr.Dataset:
        """The results file's ``data`` group."""

    def coords(self, spec: dict, model_def, data) -> dict[str, object]:
        """Coordinates of the results groups: ``component``, the observation dim and the family's own."""

    # model and parameters ------------------------------------------------------------------------
    def model_from_spec(self, spec: dict, data=None, n_components: int | None = None) -> object: ...

    def parameters(self, model_def, data) -> dict[str, ParameterInfo]:
        """The reported parameters in report order."""

    def n_free_parameters(self, model_def, data) -> int: ...

    def variables(self, params) -> dict[str, np.ndarray]: ...

    def params_from_variables(self, model_def, variables: dict) -> object: ...

    def loglik(self, model_def, data, params) -> float:
        """The observed-data log-likelihood (numpy)."""

    def log_joint(self, model_def, data, params) -> np.ndarray:
        """log p(x_i, z_i = k) (n_obs, K): responsibilities, ICL and the log-likelihood come from it."""

    # EM -------------------------------------------------------------------------------------------
    def starts(self, model_def, data, em_spec: dict, rng) -> tuple[Callable[[], object], object]:
        """(a function giving the next start each call, the :class:`~emvsbayes.em.RestartPolicy`)."""

    def e_step(self, model_def, data, params) -> tuple[object, float]: ...

    def hard_e_step(self, model_def, data, params) -> tuple[object, float]: ...

    def m_step(self, model_def, data, stats, params) -> object: ...

    def responsibilities(self, model_def, data, params) -> np.ndarray:
        """(n_obs, K) membership probabilities at ``params``."""

    def fit(self, model_def, data, init, *, kind: str = "soft", **options) -> EMFit: ...

    # observed information -------------------------------------------------------------------------
    def unconstrained_names(self, model_def, data) -> tuple[str, ...]: ...

    def to_unconstrained(self, model_def, params) -> np.ndarray: ...

    def from_unconstrained(self, model_def, data, phi: np.ndarray) -> object: ...

    def symbolic_loglik(self, model_def, data):
        """(pytensor vector ``phi``, scalar log-likelihood at ``phi`` with the data as constants)."""

    # Bayes ----------------------------------------------------------------------------------------
    def pymc_model(self, model_def, data): ...

    def initvals(self, model_def, params_list) -> list[dict]: ...

    def membership_draws(self, model_def, data, draws: dict[str, np.ndarray]) -> np.ndarray:
        """(S, n_obs, K) membership probabilities under each posterior draw."""

    # simulation and resampling --------------------------------------------------------------------
    def simulate(self, model_def, params, n: int, rng, like=None) -> object:
        """``n`` observations from ``params`` as a data record (``like``: data whose fixed design, such
        as the tosses per set, the simulation keeps)."""

    def resample(self, data, rng) -> object | None:
        """A nonparametric bootstrap resample, or None when rows are dependent."""

    def prior_draw(self, model_def, rng) -> object: ...

    # extras ---------------------------------------------------------------------------------------
    def extra_groups(self, spec: dict, model_def, data, best_fit, rng, timings) -> dict[str, xr.Dataset]: ...


# --- helpers shared by families -------------------------------------------------------------------------


def alr(w):
    """Weights on the simplex -> their additive log-ratios against the last component (K - 1,): the
    unconstrained coordinates of mixture weights for the observed information."""
    import numpy as np  # here: the registry itself stays free of numpy for the start-up of light commands

    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(w, dtype=float))
    return log_w[:-1] - log_w[-1]


def alr_inverse(eta):
    """Additive log-ratios (K - 1,) -> weights on the simplex (the inverse of :func:`alr`)."""
    import numpy as np

    z = np.append(np.asarray(eta, dtype=float), 0.0)
    z = np.exp(z - z.max())
    return z / z.sum()



def dirichlet_log_density(w, concentration: float) -> float:
    """log Dirichlet(w | concentration, ..., concentration) with its normalising constant (PyMC's), the
    weights' prior of every mixture family; -inf off the simplex's interior where the density is 0."""
    import numpy as np
    from scipy.special import gammaln, xlogy

    w = np.asarray(w, dtype=float)
    k = w.shape[-1]
    with np.errstate(divide="ignore"):
        return float(gammaln(k * concentration) - k * gammaln(concentration) + np.sum(xlogy(concentration - 1, w)))


def dirichlet_mode_weights(expected_counts, concentration: float):
    """The weights maximising sum_k n_k log w_k + log Dirichlet(w | concentration): (n_k + c - 1) / (N + K (c - 1)),
    the MAP-EM M-step of the mixture weights (needs c >= 1, :func:`check_mode_concentration`)."""
    import numpy as np

    counts = np.asarray(expected_counts, dtype=float) + concentration - 1
    return counts / counts.sum()


def check_mode_concentration(name: str, value: float) -> None:
    """``ValueError`` (one line, the reason MAP-EM gives) when a Dirichlet / Beta / Gamma shape below 1
    makes the prior density unbounded at a boundary, where the posterior has no mode."""
    if value < 1:
        raise ValueError(f"{name} = {value}: a prior with a shape below 1 is unbounded at the boundary, so the "
                         f"posterior has no mode: use {name} >= 1 for MAP-EM")
