"""Comparison specs: commented TOML files that say what to fit and how.

A spec is data, never code. :func:`load_spec` reads one, checks every key against :data:`SCHEMA`
(unknown keys get a "did you mean" suggestion), fills in defaults and returns a plain nested dict:
the "spec as run" that the results file records. Every problem is a one-line :class:`UserError`
that names the file, the key and the fix.

Sections (see ``models/*.toml`` for commented examples):

- top level: ``title``, ``description``, ``seed``;
- ``[data]``: a bundled ``dataset`` or a CSV ``file`` with its column options, or a Zarr ``store``
  (data larger than memory, chunked EM only: :mod:`emvsbayes.store`);
- ``[model]``: ``family`` (one of :data:`emvsbayes.family.FAMILIES`), ``components`` and the family's options;
- ``[em]``: kinds of EM, initialisation, restarts, stopping rule;
- ``[bayes]``: variant (symmetric or ordered), priors, sampler, chains, draws, tuning;
- ``[model_choice]``: a list of K to compare (EM criteria and PSIS-LOO);
- ``[ladder]``: the uncertainty ladder (MAP-EM, Laplace, ADVI, Bayesian bootstrap) and its sizes;
- ``[report]``: ``interval_prob``.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emvsbayes.errors import UserError, in_python
from emvsbayes.family import family_names, get_family
from emvsbayes.paths import input_kind, packed_format

_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Key:
    """One spec key: its default (``_REQUIRED`` if it must be given), a check returning an error or None, and
    whether only some families read it."""

    default: Any
    check: Callable[[Any], str | None]
    # A key only some families read (they list it in Family.spec_defaults): given another value in a spec of a
    # family that does not read it, it is refused rather than silently ignored.
    family_only: bool = False


# --- checks: each returns None when the value is fine, else what is wrong and what is wanted ----------


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    # An int beyond float range (TOML allows any length of digits) is no usable number either.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _text(v) -> str:
    """A spec value as TOML writes it: ``true`` (not Python's ``True``), dates as written, inline tables; text in
    quotes as Python shows it (``'a'`` is TOML's literal string)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list) and any(isinstance(item, (bool, datetime.date, datetime.time, dict, list)) for item in v):
        return "[" + ", ".join(_text(item) for item in v) + "]"
    if isinstance(v, dict):  # a TOML inline table, as the spec wrote it (not Python's {'rate': [...]})
        return "{ " + ", ".join(f"{toml_key(str(key))} = {_text(item)}" for key, item in v.items()) + " }" if v else "{}"
    return repr(v)


def toml_key(key: str) -> str:
    """``key`` as a TOML key: bare if it can be, else a quoted basic string (JSON's escapes are TOML's)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _show(v, limit: int = 80) -> str:
    """``repr(v)`` cut to ``limit`` characters, so an error about a huge value stays a readable line. A TOML
    date or time (``K = 2026-01-01``) is shown as written, not as ``datetime.date(2026, 1, 1)``."""
    try:
        text = _text(v)
    except RecursionError:
        text = f"<a {type(v).__name__} nested too deeply>"
    return text if len(text) <= limit else text[: limit - 5] + " ...>"


#: Public names of the helpers that other modules' checks reuse.
show_value = _show


def not_a_table(section: str, given) -> str:
    """The error for a section that is not a table; ``[[bayes]]`` (TOML's array of tables) is named as such."""
    if isinstance(given, list) and given and all(isinstance(item, dict) for item in given):
        return f"[{section}] must be one table: write [{section}], not [[{section}]] (a list of tables)"
    return f"[{section}] must be a table, got {_show(given)}"


#: The fewest draws of the uncertainty ladder's approximations: PSIS's tail of min(S / 5, 3 sqrt(S)) draws must hold 5.
LADDER_MIN_DRAWS = 25

#: Counts (draws, chains, restarts, ...) above this are refused: numpy and the samplers index with int32.
MAX_COUNT = 2**31 - 1


def positive_int(v):
    if _is_int(v) and v > MAX_COUNT:
        return f"must be a whole number no larger than {MAX_COUNT}, got {_show(v)}"
    return None if _is_int(v) and v >= 1 else f"must be a whole number >= 1, got {_show(v)}"


#: The most chains a posterior runs: each is a process's worth of sampler state, and 100,000 chains of a coin model
#: passed the memory check, then held the process in compiled code for minutes (deaf to Ctrl-C and SIGTERM).
MAX_CHAINS = 1024


def chain_count(v):
    if _is_int(v) and v > MAX_CHAINS:
        return (f"must be at most {MAX_CHAINS} (R-hat and ESS need a few chains, 4 is usual; more draws per chain give "
                f"more of the posterior), got {_show(v)}")
    return positive_int(v)


def non_negative_int(v):
    if _is_int(v) and v > MAX_COUNT:
        return f"must be a whole number no larger than {MAX_COUNT}, got {_show(v)}"
    return None if _is_int(v) and v >= 0 else f"must be a whole number >= 0, got {_show(v)}"


#: What a seed may be: numpy's SeedSequence takes any whole number >= 0, and the results file stores it as int64.
SEED_RULE = "a whole number from 0 to 2**63 - 1"


def optional_seed(v):
    return None if v is None or (_is_int(v) and 0 <= v < 2**63) else f"must be {SEED_RULE}, got {_show(v)}"


def positive_number(v):
    return None if _is_number(v) and v > 0 else f"must be a number > 0, got {_show(v)}"


def probability_open(v):
    return None if _is_number(v) and 0 < v < 1 else f"must be a number strictly between 0 and 1, got {_show(v)}"


#: An interval's probability: a page writes it to four significant digits (emvsbayes.family.percent), and one
#: beyond these bounds is no interval anyone reads (1e-300 was a "1e-298%" interval, 0.99999 a "100%" one).
INTERVAL_PROBABILITY = (0.01, 0.999)


def interval_probability(v):
    low, high = INTERVAL_PROBABILITY
    return None if _is_number(v) and low <= v <= high else \
        f"must be a probability from {low:g} to {high:g} (a {low:.0%} to {high:.1%} interval), got {_show(v)}"


def auto_or_probability(v):
    if v == "auto":
        return None
    return None if _is_number(v) and 0 < v < 1 else f'must be "auto" or a number strictly between 0 and 1, got {_show(v)}'


def text(v):
    return None if isinstance(v, str) else f"must be a string, got {_show(v)}"


def optional_text(v):
    return None if v is None or isinstance(v, str) else f"must be a string, got {_show(v)}"


def boolean(v):
    return None if isinstance(v, bool) else f"must be true or false, got {_show(v)}"


def one_of(*choices):
    def check(v):
        return None if v in choices else f"must be one of {', '.join(map(repr, choices))}, got {_show(v)}"

    return check


def list_of(item_check, *, non_empty=True, unique=False):
    """A list whose items pass ``item_check``; ``unique``: each item once (a list whose items name work to do
    or results to write, where a repeated item would do the work twice or write over its own result)."""
    def check(v):
        if not isinstance(v, list) or (non_empty and not v):
            return f"must be a {'non-empty ' if non_empty else ''}list, got {_show(v)}"
        for item in v:
            problem = item_check(item)
            if problem:
                return f"has an item that {problem}"
        if unique:
            seen = []
            for item in v:
                if item in seen:
                    return f"lists {_show(item)} twice; list each once"
                seen.append(item)
        return None

    return check


def components_value(v):
    """K, or a list of K values to compare (model choice)."""
    if _is_int(v):
        return positive_int(v)
    if isinstance(v, list) and v and all(_is_int(x) and 1 <= x <= MAX_COUNT for x in v):
        return None
    return f"must be a whole number >= 1 or a list of them, got {_show(v)}"


def beta_prior(v):
    if isinstance(v, list) and len(v) == 2 and all(_is_number(x) and x > 0 for x in v):
        return None
    return f"must be two positive numbers [a, b], got {_show(v)}"


def optional_positive_list(v):
    if v is None or (_is_number(v) and v > 0):
        return None
    if isinstance(v, list) and v and all(_is_number(x) and x > 0 for x in v):
        return None
    return f"must be a positive number or a list of positive numbers, got {_show(v)}"


def optional_number_list(v):
    if v is None or _is_number(v):
        return None
    if isinstance(v, list) and v and all(_is_number(x) for x in v):
        return None
    return f"must be a number or a list of numbers, got {_show(v)}"


def _numbers_nested(v, depth: int = 0) -> bool:
    """A number, or a (nested, at most 3 deep) non-empty list of numbers."""
    if _is_number(v):
        return True
    return isinstance(v, list) and bool(v) and depth < 3 and all(_numbers_nested(x, depth + 1) for x in v)


def coin_init(v):
    """"auto" or "random", or a list of starting theta vectors (one per restart), or one theta vector."""
    if v in ("auto", "random"):
        return None
    if isinstance(v, list) and v:
        rows = v if isinstance(v[0], list) else [v]
        for row in rows:
            if not (isinstance(row, list) and row and all(_is_number(x) and 0 <= x <= 1 for x in row)):
                return f"must be \"random\" or theta values strictly between 0 and 1 such as [0.6, 0.5], got {_show(v)}"
            if any(x in (0, 1) for x in row):
                # At 0 (1) a coin never shows heads (tails): a set with both has likelihood 0 under it, and a
                # start where every coin is like that has log-likelihood -inf, from which EM cannot move.
                return (f"has theta on the boundary, got {_show(v)}: a coin with theta = 0 or 1 cannot show both "
                        "heads and tails, so EM cannot start there; use values strictly between 0 and 1, e.g. 0.01")
        return None
    return f"must be \"random\" or theta values such as [0.6, 0.5], got {_show(v)}"


#: scikit-learn's init_params names: k-means labels, k-means++ centres, random points, random responsibilities.
GAUSSIAN_INITS = ("kmeans", "k-means++", "random_from_data", "random")


def gaussian_init(v):
    if isinstance(v, str) and (v == "auto" or v in GAUSSIAN_INITS):
        return None
    if isinstance(v, dict):
        unknown = [key for key in v if key not in ("weights", "means", "covariances")]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), ["weights", "means", "covariances"], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (f"has the key {_show(unknown[0])}{hint}, which is none of weights, means, covariances: as a table it "
                    "gives the starting parameters, e.g. { means = [[0, 0], [3, 3]] }")
        if "means" not in v:
            return "must give at least means = [[...], ...] when initial parameters are given"
        for name in ("weights", "means", "covariances"):
            if name in v and not _numbers_nested(v[name]):
                return f"{name} must be numbers or lists of numbers, got {_show(v[name])}"
        if "weights" in v:
            weights = v["weights"] if isinstance(v["weights"], list) else [v["weights"]]
            if not all(_is_number(x) and x > 0 for x in weights):
                return (f"weights must be positive numbers, one per component (a component of weight 0 never takes "
                        f"a point), got {_show(v['weights'])}")
        return None
    return (f"must be one of {', '.join(map(repr, GAUSSIAN_INITS))} (scikit-learn's init_params) or a table of "
            f"weights, means, covariances, got {_show(v)}")


def categories_table(v):
    if not isinstance(v, dict):
        return f"must be a table column -> {{category = number}}, got {_show(v)}"
    for column, mapping in v.items():
        if not isinstance(mapping, dict) or not all(_is_number(x) for x in mapping.values()):
            return f"must map each category of column {column!r} to a number"
    return None


def file_name(v):
    if not isinstance(v, str) or not v.strip() or "\0" in v:
        return f"must be the path of a CSV file, got {_show(v)}"
    return None


#: ``[data]`` keys that describe a CSV's columns: with a store they would silently mean nothing.
_STORE_CSV_ONLY_KEYS = ("encoding", "delimiter", "label", "truth", "columns", "drop", "percent", "categories", "standardize")



def _store_problem(spec: dict) -> str | None:
    """What in a validated spec does not go with ``[data] store`` (one phrase naming the fix), or None."""
    data = spec["data"]
    # chunked EM is an optional member of the family protocol (a sum of per-row statistics per chunk)
    if not hasattr(get_family(spec["model"]["family"]), "fit_chunked"):
        return (f"[data] store: the {spec['model']['family']} family has no chunked EM, so it cannot be fitted "
                "from a store; give the data as file = \"data.csv\"")
    given = [key for key in _STORE_CSV_ONLY_KEYS if data[key] != SCHEMA["data"][key].default]
    if given:
        return (f"[data] {given[0]} describes a CSV file's columns and means nothing for a store; remove it "
                "(a store's columns are all fitted)")
    if data["store_array"] is not None and not data["store_array"].strip("/"):
        return "[data] store_array must name an array inside the store, e.g. store_array = \"x\""
    # Each stage that needs the rows in memory (or thousands of passes over them), as the spec must say it.
    off = {"[bayes] enabled = false": spec["bayes"]["enabled"],
           "[em] bootstrap = 0": spec["em"]["bootstrap"] > 0,
           "[em] information = false": spec["em"]["information"],
           "[em] kmeans = false": spec["em"].get("kmeans", False),
           "[ladder] enabled = false": spec["ladder"]["enabled"],
           "[model_choice] components = []": bool(spec["model_choice"]["components"]),
           "[model_choice] sparse = false": spec["model_choice"]["sparse"]}
    needed = [setting for setting, on in off.items() if on]
    if needed:
        return ("[data] store: data larger than memory are fitted by EM alone (the posterior, the bootstrap, the "
                "observed information, k-means, the ladder and model choice need every row in memory); set "
                + ", ".join(needed))
    return None


def store_name(v):
    if not isinstance(v, str) or not v.strip() or "\0" in v:
        return f'must be the path of a Zarr store, e.g. "x.zarr", got {_show(v)}'
    return None


def anything(v):
    return None


def name_text(v):
    """A column's name: text with something in it (blank names no column; `label = ""` read as no label at all)."""
    if not isinstance(v, str) or not v.strip():
        return f"must be a non-empty string, got {_show(v)}"
    return None


#: Component names head table columns and figure axes; longer ones would not fit there.
MAX_LABEL_CHARS = 12


def component_labels(v):
    """Names of the components (``["A", "B"]``); their count is checked against ``components`` later."""
    if not isinstance(v, list):
        return f'must be a list of names, one per component, e.g. ["A", "B"], got {_show(v)}'
    for item in v:
        if not isinstance(item, str) or not item.strip():
            return f"must hold non-empty strings, got {_show(item)}"
        if len(item) > MAX_LABEL_CHARS:
            return f"names must be at most {MAX_LABEL_CHARS} characters (they head table columns), got {_show(item)}"
    duplicates = sorted({item for item in v if v.count(item) > 1})
    if duplicates:
        return f"must name each component once, {_show(duplicates[0])} appears twice"
    return None


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "title": Key("", text),
        "description": Key("", text),
        "seed": Key(None, optional_seed),
    },
    "data": {
        "dataset": Key(None, optional_text),
        "file": Key(None, lambda v: None if v is None else file_name(v)),
        # data larger than memory: a Zarr store fitted by chunked EM on Dask (emvsbayes.store)
        "store": Key(None, lambda v: None if v is None else store_name(v)),
        "store_array": Key(None, lambda v: None if v is None else name_text(v)),
        "encoding": Key("utf-8", name_text),
        # "auto": a comma, or ";", a tab or "|" when the header splits on it and not on commas
        "delimiter": Key("auto", lambda v: None if v == "auto" or (isinstance(v, str) and len(v) == 1 and v not in "\"\r\n")
                         else f'must be "auto" or one character such as ";" or "\\t", got {_show(v)}'),
        "heads": Key("heads", name_text, family_only=True),
        "tosses": Key("tosses", name_text, family_only=True),
        "label": Key(None, lambda v: None if v is None else name_text(v)),
        "truth": Key(None, lambda v: None if v is None else name_text(v)),  # known groups, compared, not fitted
        # the columns of a table of measurements (Gaussian mixtures) or of a series (hidden Markov models)
        "columns": Key(None, lambda v: None if v is None else list_of(name_text, unique=True)(v), family_only=True),
        "drop": Key([], list_of(name_text, non_empty=False, unique=True), family_only=True),
        # preparing measurements (Gaussian mixtures): coins' and Poisson counts are fitted as counted
        "percent": Key([], list_of(name_text, non_empty=False, unique=True), family_only=True),
        "categories": Key({}, categories_table, family_only=True),
        "standardize": Key(False, boolean, family_only=True),
    },
    "model": {
        "family": Key(_REQUIRED, one_of(*family_names())),
        "components": Key(2, components_value),
        # coins
        "weights": Key("equal", one_of("equal", "estimated"), family_only=True),
        "labels": Key([], component_labels, family_only=True),  # names of the coins in tables and figures; [] numbers them
        # gaussian
        "covariance": Key("full", one_of("full", "tied", "diag", "spherical"), family_only=True),
        "reg_covar": Key(1e-6, positive_number, family_only=True),
    },
    "em": {
        # The defaults are what the bundled specs use: both kinds, several starts, a bootstrap.
        "kinds": Key(["soft", "hard"], list_of(one_of("soft", "hard"), unique=True)),
        "init": Key("auto", anything),  # checked per family below; "auto": k-means++ (Gaussian), random (coins)
        "n_init": Key(10, positive_int),
        # Gaussian mixtures: after n_init starts, keep starting until reach_best starts end at the best
        # log-likelihood, or max_init starts are spent (None: the family's defaults below).
        "reach_best": Key(None, lambda v: None if v is None else positive_int(v)),
        "max_init": Key(None, lambda v: None if v is None else positive_int(v)),
        "tol": Key(1e-8, positive_number),
        "param_tol": Key(1e-6, positive_number),
        "max_iter": Key(500, positive_int),
        "kmeans": Key(True, boolean, family_only=True),
        # EM's own uncertainty: observed-information standard errors and the bootstrap
        "information": Key(True, boolean),
        "bootstrap": Key(200, non_negative_int),
        "bootstrap_kind": Key("auto", one_of("auto", "nonparametric", "parametric")),
    },
    "bayes": {
        "enabled": Key(True, boolean),
        "variant": Key("symmetric", one_of("symmetric", "ordered")),
        "sampler": Key("auto", one_of("auto", "numpyro", "nutpie", "pymc")),
        "chains": Key(4, chain_count),
        "draws": Key(1000, positive_int),
        "tune": Key(1000, positive_int),
        "target_accept": Key("auto", auto_or_probability),
        "theta_prior": Key([1.0, 1.0], beta_prior, family_only=True),
        "w_concentration": Key(1.0, positive_number, family_only=True),
        "mu_loc": Key(None, optional_number_list, family_only=True),
        "mu_scale": Key(None, optional_positive_list, family_only=True),
        "sigma_scale": Key(None, optional_positive_list, family_only=True),
        "lkj_eta": Key(2.0, positive_number, family_only=True),
        "relabel": Key("auto", one_of("auto", "stephens", "pivot", "ecr", "ecr_iterative", "order")),
        "exact": Key("auto", lambda v: None if v == "auto" or isinstance(v, bool) else f'must be "auto", true or false, got {_show(v)}',
                     family_only=True),
    },
    "model_choice": {
        # K values to compare: EM's BIC, AIC and ICL for each, and PSIS-LOO from a posterior per K.
        "components": Key([], list_of(positive_int, non_empty=False, unique=True)),
        "covariance": Key(None, lambda v: None if v is None else one_of("full", "tied", "diag", "spherical")(v),
                          family_only=True),
        "bayes": Key(True, boolean),
        "chains": Key(2, chain_count),
        "draws": Key(500, positive_int),
        "tune": Key(500, positive_int),
        # Bootstrap likelihood-ratio test of K against K + 1 for each K of components whose K + 1 is
        # listed too (emvsbayes.uncertainty.lrt): B simulated data sets per test, each refitted twice.
        "lrt_bootstrap": Key(0, non_negative_int),
        # The overfitted ("sparse") finite mixture (emvsbayes.uncertainty.sparse): K_max components,
        # Dirichlet(e0, ..., e0) weights, the posterior of the number of occupied components.
        "sparse": Key(False, boolean),
        "sparse_components": Key(10, lambda v: (f"must be a whole number >= 2, got {_show(v)}" if _is_int(v) and v < 2
                                                else positive_int(v))),
        "sparse_concentration": Key(0.01, positive_number),
    },
    "ladder": {
        # The uncertainty ladder (issue 20): rungs between EM's point and the posterior, on the same data.
        # Laplace at the posterior mode always runs when enabled; rungs picks the others.
        "enabled": Key(False, boolean),
        "rungs": Key(["map_em", "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"],
                     list_of(one_of("map_em", "advi_meanfield", "advi_fullrank", "bootstrap_bayesian"),
                             non_empty=False, unique=True)),
        # ADVI iterations of pm.fit (emvsbayes.ladder.vi needs at least 8 to record the ELBO's trend)
        "vi_iter": Key(3000, lambda v: positive_int(v) or (None if v >= 8 else f"must be at least 8, got {_show(v)}")),
        # draws from the Laplace and ADVI approximations; the Pareto k of an approximation (PSIS) needs its tail of
        # min(S / 5, 3 sqrt(S)) >= 5 draws: 25 at least (fewer gave an internal error after the whole run)
        "draws": Key(1000, lambda v: positive_int(v) or (None if v >= LADDER_MIN_DRAWS else
                                                         f"must be at least {LADDER_MIN_DRAWS} (the Pareto k of the ADVI "
                                                         f"rungs needs 5 tail draws), got {_show(v)}")),
        "bootstrap": Key(200, positive_int),       # Bayesian-bootstrap (Dirichlet-weighted) EM refits
        # how Laplace and ADVI run: "programs" (the model's exported JAX programs, stored per model: no PyMC in a
        # warm run) or "pymc" (PyMC's own find_MAP-style search and pm.fit, compiled in the run)
        "engine": Key("programs", one_of("programs", "pymc")),
    },
    "report": {
        "interval_prob": Key(0.89, interval_probability),
    },
}

def read_by_family(section: str, key: str, family: str) -> bool:
    """Whether a spec of ``family`` reads ``[section] key``: every shared key, and a ``Key.family_only`` one where
    the family lists it in its ``spec_defaults``."""
    rule = SCHEMA.get(section, {}).get(key)
    return rule is None or not rule.family_only or key in get_family(family).spec_defaults().get(section, {})


def ignored_by_family(section: str, key: str, value, rule: Key, family, written: bool = False) -> str | None:
    """The problem (a phrase naming the fix) when ``[section] key``, a shared key only some families read
    (``Key.family_only``; each family that reads it lists it in its ``spec_defaults``), is given in a spec whose
    family does not read it: it would be silently ignored. ``written``: the spec is as a person wrote it (a TOML
    file, ``compare``'s options), where even the default value is refused (``weights = "equal"`` in a Gaussian
    spec reads as equal weights, and the Gaussian mixture estimates its weights); a spec dict filled in by
    :func:`load_spec` or ``to_spec`` holds every key at its default, which passes. None otherwise."""
    if not rule.family_only or not isinstance(family, str) or family not in family_names():
        return None
    if value == rule.default and not written:
        return None
    if read_by_family(section, key, family):
        return None
    # Only here, on the way to a refusal, are the other families imported.
    readers = [get_family(name).title for name in family_names() if read_by_family(section, key, name)]
    names = readers[0] if len(readers) == 1 else f"{', '.join(readers[:-1])} and {readers[-1]}"
    return f"{_where(section, key)} applies to {names} only, not to {get_family(family).title}; remove it"


#: Keys only a study spec has (see emvsbayes.study.spec): a spec holding them was given to the wrong command.
STUDY_ONLY_KEYS = ("kind", "replicates", "grid", "priors", "truth", "intervals", "sbc")


def _family_check(family, section: str, key: str, rule: Key) -> Callable:
    """The check of a key: the family's own for ``[em] init`` (its starts are family knowledge)."""
    if section == "em" and key == "init" and family in family_names():
        return getattr(get_family(family), "check_init", None) or rule.check
    return rule.check


def auto_init(family: str) -> str:
    """What ``[em] init = "auto"`` (the default) becomes for a family (``family.auto_init``)."""
    return getattr(get_family(family), "auto_init", "auto")

#: Gaussian mixtures' restart rule unless the spec says otherwise: three starts agreeing on the best
#: log-likelihood make a missed better optimum unlikely (on heroes, K = 3, 13 % of k-means++ starts reach
#: the best: 10 fixed starts all miss it 24 % of the time); 200 starts bound the cost (galaxies, K = 4:
#: 2-4 % of starts reach the best, 0.25 s each).
GAUSSIAN_REACH_BEST = 3
GAUSSIAN_MAX_INIT = 200

#: Characters a spec's name may hold besides letters and digits (of any script): they name a folder on
#: every system without quoting, and none of them can point outside ``reports``.
SPEC_NAME_PUNCTUATION = " _-.+"
#: A name's length in bytes: one folder name (NAME_MAX on Linux and macOS).
SPEC_NAME_BYTES = 255
#: The characters of a spec's name, in words (the errors of a spec file and of the API's spec dict say it).
SPEC_NAME_CHARACTERS = "letters, digits, spaces, '_', '-', '+' or '.', starting with a letter or digit"
#: What a spec's file name must be (it names the report folder), said in the error for one that is not.
SPEC_NAME_RULE = (f"the spec's file name must hold only {SPEC_NAME_CHARACTERS} (at most 255 bytes, no space at the "
                  "end), so it can name a report folder; rename the file")


def is_spec_name(name) -> bool:
    """Whether ``name`` (a spec file's stem) can name a report folder as it is.

    Letters and digits of any script are accepted, with their combining marks (a name typed as
    "cafe" + U+0301 is "café"); control characters, separators, quotes and shell metacharacters are
    not, nor is a name that is not UTF-8 (Python's surrogate escapes) or that ends in a space.
    """
    if not isinstance(name, str) or not name or not name[0].isalnum() or name != name.rstrip():
        return False
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return size <= SPEC_NAME_BYTES and all(
        c.isalnum() or c in SPEC_NAME_PUNCTUATION or unicodedata.category(c).startswith("M") for c in name)


def _where(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(choices))}"


def _elsewhere(key, section: str) -> str:
    """Where a key that is unknown in ``section`` does belong (a common slip: a key under the wrong header)."""
    homes = [other for other, keys in SCHEMA.items() if other != section and key in keys]
    if not homes:
        return ""
    if homes[0] == "":
        return f"; {key!r} belongs at the top of the file, before the first [section]"
    return f"; {key!r} belongs in [{homes[0]}]"


def _nul_text(value, where: str = "") -> str | None:
    """Where a text of the spec (a value, a key, a list's item) holds a NUL character, or None. Walked with a stack of
    its own, in the order written: a list nested 5,000 deep (the fuzz tests') is deeper than Python's recursion."""
    pending = [(value, where)]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where or "a value"
        elif isinstance(value, dict):
            items = []
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"the key {_show(key)}"
                items.append((item, f"[{key}]" if not where and isinstance(item, dict) else f"{where} {key}".strip()))
            pending.extend(reversed(items))
        elif isinstance(value, list):
            pending.extend((item, where) for item in reversed(value))
    return None


def validate(raw: dict, source: str = "spec", written: bool = False) -> dict:
    """Check ``raw`` against the schema and return a new dict with every default filled in. ``written``: ``raw`` is
    a spec as a person wrote it (see :func:`ignored_by_family`), not a dict this module filled in."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a spec must be a table of sections such as [data] and [model], got {_show(raw)}")
    spec: dict[str, Any] = {}
    study_only = [key for key in raw if key in STUDY_ONLY_KEYS]
    if study_only and not any(key in raw for key in ("data", "model_choice", "report")):
        how = f"emvsbayes.study({str(source)!r})" if in_python() else f"'emvsbayes study {source}'"
        raise UserError(f"{source}: this is a study spec (it has {study_only[0]!r}), not a comparison spec; "
                        f"run it with {how}")
    for key in raw:
        # "" names the top-level keys in SCHEMA, never a table of the spec ([""] was read and ignored)
        if not isinstance(key, str) or key == "" or key not in SCHEMA[""] and key not in SCHEMA:
            raise UserError(f"{source}: unknown key {_show(key)}{_suggest(key, [*SCHEMA[''], *[s for s in SCHEMA if s]])}")
    nul = _nul_text(raw)
    if nul is not None:
        raise UserError(f"{source}: {nul} holds a NUL character (\\0), which no results file can store; remove it")
    family_keys = _family_keys(raw)
    for section, keys in SCHEMA.items():
        # The family's own keys (Family.spec_defaults) beside the shared ones; the family checks them below.
        keys = {**family_keys.get(section, {}), **keys}
        if section:
            given = raw.get(section, {})
            if not isinstance(given, dict):
                raise UserError(f"{source}: {not_a_table(section, given)}")
        else:
            given = {k: v for k, v in raw.items() if k not in SCHEMA}
        out = {}
        for key, value in given.items():
            if not isinstance(key, str) or key not in keys:
                raise UserError(f"{source}: unknown key {_where(section, str(key))!r}{_elsewhere(key, section) or _suggest(key, keys)}")
        family = raw.get("model", {}).get("family") if isinstance(raw.get("model"), dict) else None
        for key, rule in keys.items():
            if key in given:
                value = given[key]
                check = _family_check(family, section, key, rule)
                problem = check(value)
                if problem:
                    raise UserError(f"{source}: {_where(section, key)} {problem}")
                ignored = ignored_by_family(section, key, value, rule, family, written)
                if ignored:
                    raise UserError(f"{source}: {ignored}")
                out[key] = copy.deepcopy(value)
            elif rule.default is _REQUIRED:
                raise UserError(f"{source}: {_where(section, key)} is missing; add it, e.g. family = \"coins\"")
            else:
                out[key] = copy.deepcopy(rule.default)
        if section:
            spec[section] = out
        else:
            spec.update(out)
    _check_consistency(spec, source)
    return spec


def _family_keys(raw: dict) -> dict[str, dict[str, Key]]:
    """The keys a spec's family adds (:meth:`~emvsbayes.family.Family.spec_defaults`) that the shared schema
    does not have, with their defaults; their values are the family's to check (``check_spec``)."""
    model = raw.get("model")
    family = model.get("family") if isinstance(model, dict) else None
    if not isinstance(family, str) or family not in family_names():
        return {}
    return {section: {key: Key(default, anything) for key, default in keys.items() if key not in SCHEMA.get(section, {})}
            for section, keys in get_family(family).spec_defaults().items()}


#: Numbers larger than this in magnitude are refused, in data and in a spec's model and priors: the squares a fit
#: takes (variances, distances) would overflow float64 (1.8e308) and every fit would end in overflow warnings and
#: a collapsed component (or a sampler frozen at one point).
MAX_MAGNITUDE = 1e150
#: Numbers smaller than this (and not 0) are refused likewise: their squares underflow to denormals or 0, below
#: any variance floor (reg_covar) and the sampler's tolerances.
MIN_MAGNITUDE = 1e-150


def _numbers_in(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _numbers_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers_in(item)


def _check_magnitudes(spec: dict, source: str) -> None:
    """Every number of [model], [bayes] and [model_choice] within the data's range (:data:`MAX_MAGNITUDE`,
    :data:`MIN_MAGNITUDE`) in size, or 0: a prior of Beta(1e300, 1) or a scale of 1e-200 left the
    sampler frozen at one point (every draw divergent). A location (a key ending in ``_loc``) may be as close to 0
    as it likes."""
    for section in ("model", "bayes", "model_choice"):
        for key, value in spec[section].items():
            for number in _numbers_in(value):
                size = abs(number)
                if size > MAX_MAGNITUDE or (0 < size < MIN_MAGNITUDE and not key.endswith("_loc")):
                    raise UserError(f"{source}: [{section}] {key} holds {number:g}, beyond what float64 can square "
                                    f"({f'above {MAX_MAGNITUDE:.0e}' if size > 1 else f'below {MIN_MAGNITUDE:.0e}'}); give a number of a sensible "
                                    "size (or leave the key out for its default)")


def _check_consistency(spec: dict, source: str) -> None:
    data = spec["data"]
    if data["store"] is not None and (data["dataset"] is not None or data["file"] is not None):
        given = "dataset" if data["dataset"] is not None else "file"
        raise UserError(f"{source}: [data] gives both store and {given}; keep one of them")
    if data["store"] is None and (data["dataset"] is None) == (data["file"] is None):
        raise UserError(f"{source}: [data] needs exactly one of dataset = \"...\" or file = \"path.csv\"")
    if data["store"] is None and data["store_array"] is not None:
        raise UserError(f"{source}: [data] store_array names an array inside a store; give store = \"path.zarr\" "
                        "or remove store_array")
    if data["label"] is not None and data["label"] == data["truth"]:
        raise UserError(f"{source}: [data] label and truth both name column {_show(data['label'])}; a column is the "
                        "rows' names (label) or their known groups (truth), not both: remove one")
    ks = spec["model"]["components"]
    ks = ks if isinstance(ks, list) else [ks]
    em = spec["em"]
    family = get_family(spec["model"]["family"])
    if em["init"] == "auto":
        em["init"] = auto_init(spec["model"]["family"])
    if em["bootstrap_kind"] == "auto":
        # the family's kind: rows where they can be resampled, simulation from the fit for a series
        em["bootstrap_kind"] = getattr(family, "auto_bootstrap_kind", "nonparametric")
    try:
        # The family's own keys (defaults that depend on others, combinations only it allows).
        getattr(family, "check_spec", lambda spec: None)(spec)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    _check_magnitudes(spec, source)
    choice = spec["model_choice"]
    listed = set(choice["components"])
    if choice["lrt_bootstrap"] and not any(k + 1 in listed for k in listed):
        # the test of K against K + 1 needs both listed: it was skipped without a word (every lrt_* NaN)
        raise UserError(f"{source}: [model_choice] lrt_bootstrap tests each K against K + 1, both listed in "
                        f"[model_choice] components, and {sorted(listed)} has no such pair; list K and K + 1 (e.g. "
                        "components = [1, 2, 3]) or remove lrt_bootstrap")
    if data["store"] is not None:
        problem = _store_problem(spec)
        if problem:
            raise UserError(f"{source}: {problem}")
    if spec["ladder"]["enabled"] and not spec["bayes"]["enabled"]:
        # the ladder's rungs lead from EM's point to the NUTS posterior; without it the ladder lost its last rung
        # without a word in the report
        raise UserError(f"{source}: [ladder] enabled = true compares its rungs with the posterior, which [bayes] "
                        "enabled = false does not sample; set [bayes] enabled = true, or [ladder] enabled = false")
    labels = spec["model"]["labels"]
    if labels and (len(ks) > 1 or len(labels) != ks[0]):
        raise UserError(f"{source}: [model] labels gives {len(labels)} names but [model] components is "
                        f"{spec['model']['components']}; give one name per component, e.g. labels = "
                        f"{json.dumps([chr(ord('A') + i) for i in range(max(ks))])}")


#: A spec is a few KB of settings; anything much larger is some other file given by mistake.
MAX_SPEC_BYTES = 2**20


def read_toml(path: str | Path, example: str = "models/two_coins.toml") -> dict:
    """A spec file parsed as TOML (data, never imported or evaluated); one-line errors for a file that
    is missing, a folder, unreadable, not UTF-8 or not valid TOML. ``example`` names a spec to suggest."""
    path = Path(path)
    kind = input_kind(path)
    if kind == "missing":
        raise UserError(f"{path}: no such spec file; give the path of a .toml spec, e.g. {example}")
    if kind is not None:
        raise UserError(f"{path}: is {kind}, not a spec file; give the path of a .toml spec, e.g. {example}")
    try:
        with path.open("rb") as handle:
            what = packed_format(handle.read(16))
    except OSError:
        what = None  # met again below, with its reason
    if what is not None:
        again = (f" (a results.nc or study.nc is re-rendered with 'emvsbayes report {path}')" if "HDF5" in what else "")
        raise UserError(f"{path}: is {what}, not a spec{again}; give the path of a .toml spec, e.g. {example}")
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size > MAX_SPEC_BYTES:
        raise UserError(f"{path}: {size:,} bytes is too large for a spec (a spec is a few KB; the limit is "
                        f"{MAX_SPEC_BYTES:,}); give the path of a .toml spec, e.g. {example}")
    try:
        # utf-8-sig: a byte-order mark (Notepad's "UTF-8 with BOM") is read past, as for CSV files
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the spec as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({' '.join(str(error).split())}){_foreign_letter(path, error)}; "
                        "fix the syntax at that line") from None
    except RecursionError:
        raise UserError(f"{path}: arrays or tables nested too deeply; a spec needs at most a few levels") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror}); check its permissions") from None


def _foreign_letter(path: Path, error: tomllib.TOMLDecodeError) -> str:
    """A letter outside ASCII before the error's column, where TOML wants a bare key or a section name: a
    Cyrillic "а" or a Greek "Κ" typed or pasted for a Latin one, which no eye tells apart in the spec."""
    where = re.search(r"at line (\d+), column (\d+)", str(error))
    if not where:
        return ""
    try:
        line = path.read_text(encoding="utf-8-sig").splitlines()[int(where[1]) - 1]
    except (OSError, UnicodeDecodeError, IndexError):
        return ""
    head = line[: int(where[2])].split("=", 1)[0]
    if '"' in head or "'" in head:
        return ""  # inside a quoted key or a value: anything goes there
    for char in head:
        if not char.isascii() and char.isalpha():
            return f"; that line holds {char!r} ({unicodedata.name(char, 'U+%04X' % ord(char))}), not an ASCII letter"
    return ""


#: The first line of a spec written by ``Comparison.to_spec``.
TO_SPEC_HEADER = "# Written by emvsbayes (Comparison.to_spec)"


def load_spec(path: str | Path) -> dict:
    """Read and validate a spec file; the returned dict also carries ``name`` and ``path``."""
    path = Path(path)
    raw = read_toml(path)
    # A spec Comparison.to_spec wrote (before it left out the keys a family does not read) holds every key at its
    # default; one a person wrote holds what they meant, which a family that does not read it must not ignore.
    by_to_spec = path.read_text(encoding="utf-8-sig").startswith(TO_SPEC_HEADER)
    spec = validate(raw, source=str(path), written=not by_to_spec)
    name = path.stem
    if not is_spec_name(name):
        raise UserError(f"{path}: {SPEC_NAME_RULE}")
    spec["name"] = name
    spec["path"] = str(path)
    return spec


def resolve_data_path(spec: dict) -> Path | None:
    """A CSV named in a spec is relative to the spec file's folder. A spec read through a descriptor
    (``emvsbayes run /dev/stdin < lesson.toml``) is in the folder of the file behind it, which the descriptor's
    link names, not in /dev (a pipe is no spec file: :func:`read_toml` refuses it)."""
    file = spec["data"]["file"]
    if file is None:
        return None
    path = Path(file)
    if not path.is_absolute():
        spec_path = Path(spec.get("path", "."))
        if spec_path.is_absolute() and spec_path.parts[1:2] in (("dev",), ("proc",)):
            spec_path = Path(os.path.realpath(spec_path))
        path = spec_path.parent / path
    return path


#: Public names of the spec helpers the study spec and the Python API reuse.
REQUIRED = _REQUIRED
is_int = _is_int
is_number = _is_number
suggest = _suggest
