"""Study specs: a grid of settings, replicates per cell, and how each replicate is fitted.

A study spec is a commented TOML file (see ``models/study_coverage_gmm.toml``, ``models/sbc_coins.toml``).
:func:`load_study_spec` checks every key (unknown keys get a "did you mean"), fills in defaults and
returns a plain nested dict, the "spec as run" recorded in ``study.nc``. Every problem is a one-line
:class:`~emvsbayes.errors.UserError` naming the file, the key and the fix, as in :mod:`emvsbayes.spec`.

Sections:

- top level: ``title``, ``description``, ``kind`` (``"coverage"`` or ``"sbc"``), ``seed`` (required:
  a study is reproducible only from a recorded seed), ``replicates`` (per cell);
- ``[model]``: ``family`` and the settings that are not grid axes (``weights``, ``covariance``, ...);
- ``[grid]``: the axes, each a list of values; an axis not listed keeps its default (:data:`AXES`);
- ``[em]``: restarts and stopping rule; ``[bayes]``: sampler sizes, priors, relabelling target;
- ``[priors.NAME]``: named prior settings, selected by the ``prior`` axis ("default" is ``[bayes]``);
- ``[truth]`` and ``[intervals]`` (coverage studies: ``kinds`` may add the uncertainty ladder's rungs,
  ``laplace``, ``bootstrap_bayesian`` (``bootstrap`` weighted refits), ``advi_meanfield``, ``advi_fullrank``); ``[sbc]`` (simulation-based calibration).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

from emvsbayes.errors import UserError
from emvsbayes.family import family_names, get_family
from emvsbayes.spec import (
    SEED_RULE,
    SPEC_NAME_RULE,
    Key,
    beta_prior,
    chain_count,
    ignored_by_family,
    interval_probability,
    is_spec_name,
    list_of,
    not_a_table,
    one_of,
    positive_int,
    positive_number,
    probability_open,
    read_toml,
    text,
)
from emvsbayes.spec import REQUIRED as _REQUIRED
from emvsbayes.spec import is_int as _is_int
from emvsbayes.spec import is_number as _is_number
from emvsbayes.spec import show_value as _show
from emvsbayes.spec import suggest as _suggest

KINDS = ("coverage", "sbc")
FAMILIES = family_names()
#: The intervals a coverage study computes when ``[intervals] kinds`` is not given.
DEFAULT_INTERVAL_KINDS = ("wald", "bootstrap", "posterior")
#: The uncertainty ladder's rungs (issue 20) a coverage study can add (replicate.ladder_intervals computes them).
LADDER_KINDS = ("laplace", "bootstrap_bayesian", "advi_meanfield", "advi_fullrank")
INTERVAL_KINDS = DEFAULT_INTERVAL_KINDS + LADDER_KINDS
SAMPLERS = ("numpyro", "nutpie", "pymc")


def non_negative_number(v):
    return None if _is_number(v) and v >= 0 else f"must be a number >= 0, got {_show(v)}"



def prior_name(v):
    return None if isinstance(v, str) and v else f"must be the name of a [priors.NAME] table or \"default\", got {_show(v)}"


def _seed(v):
    return None if _is_int(v) and 0 <= v < 2**63 else f"must be {SEED_RULE}, got {_show(v)}"


def _weights(v):
    if isinstance(v, list) and v and all(_is_number(x) and x > 0 for x in v):
        return None
    return f"must be a list of positive weights, got {_show(v)}"


def number(v):
    return None if _is_number(v) else f"must be a number, got {_show(v)}"


def axes_of(family: str) -> dict[str, tuple[Any, Any]]:
    """A family's grid axes, name -> (default, check of one value) (``Family.study_axes``). The grid's cells
    are the Cartesian product of the axes listed in ``[grid]``, in the order written; the other axes keep
    their defaults."""
    return get_family(family).study_axes()


def prior_keys_of(family: str) -> dict[str, Key]:
    """A family's prior keys (``Family.study_prior_keys``): the ``[bayes]`` defaults and what a
    ``[priors.NAME]`` table may override."""
    return get_family(family).study_prior_keys()


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "title": Key("", text),
        "description": Key("", text),
        "kind": Key(_REQUIRED, one_of(*KINDS)),
        "seed": Key(_REQUIRED, _seed),
        "replicates": Key(_REQUIRED, positive_int),
    },
    "model": {
        "family": Key(_REQUIRED, one_of(*FAMILIES)),
        # read only by the families that list them in spec_defaults (a coin mixture's weights, a Gaussian's others)
        "weights": Key("equal", one_of("equal", "estimated"), family_only=True),
        "covariance": Key("full", one_of("full", "tied", "diag", "spherical"), family_only=True),
        "reg_covar": Key(1e-6, positive_number, family_only=True),
    },
    "em": {
        "n_init": Key(5, positive_int),
        "tol": Key(1e-8, positive_number),
        "param_tol": Key(1e-6, positive_number),
        "max_iter": Key(500, positive_int),
    },
    "bayes": {
        "chains": Key(2, chain_count),
        "draws": Key(500, positive_int),
        "tune": Key(500, positive_int),
        "target_accept": Key(0.8, probability_open),
        "relabel": Key("em", one_of("em", "truth")),
        # prior keys (PRIOR_KEYS) are added per family by validate()
    },
    "truth": {
        "w": Key(None, lambda v: None if v is None else _weights(v)),
    },
    "intervals": {
        # default: DEFAULT_INTERVAL_KINDS; the ladder's rungs (LADDER_KINDS) when listed
        "kinds": Key(None, lambda v: None if v is None else list_of(one_of(*INTERVAL_KINDS), unique=True)(v)),
        "prob": Key(0.9, interval_probability),
        "bootstrap": Key(50, positive_int),
    },
    "sbc": {
        "ranks": Key(99, positive_int),
        "bins": Key(10, positive_int),
        "alpha": Key(0.01, probability_open),
        # simulate from this [priors.NAME] instead of the fitted prior: a deliberately wrong model
        "data_prior": Key(None, lambda v: None if v is None else prior_name(v)),
    },
}

#: Sections only a comparison spec has (see emvsbayes.spec): a spec holding them was given to the wrong command.
RUN_ONLY_KEYS = ("data", "model_choice", "report")

#: Sections that belong to one kind of study only.
KIND_SECTIONS = {"coverage": ("truth", "intervals"), "sbc": ("sbc",)}
OPTIONAL_TABLES = ("grid", "priors")


def _where(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _check_table(given: Any, keys: dict[str, Key], section: str, source: str) -> dict:
    if not isinstance(given, dict):
        raise UserError(f"{source}: {not_a_table(section, given)}")
    out = {}
    for key in given:
        if key not in keys:
            raise UserError(f"{source}: unknown key {_where(section, key)!r}{_suggest(key, keys)}")
    for key, rule in keys.items():
        if key in given:
            problem = rule.check(given[key])
            if problem:
                raise UserError(f"{source}: {_where(section, key)} {problem}")
            out[key] = copy.deepcopy(given[key])
        elif rule.default is _REQUIRED:
            example = {"family": 'family = "gaussian"', "kind": 'kind = "coverage"', "seed": "seed = 20240601",
                       "replicates": "replicates = 8"}.get(key, f"{key} = ...")
            raise UserError(f"{source}: {_where(section, key)} is missing; add it, e.g. {example}")
        else:
            out[key] = copy.deepcopy(rule.default)
    return out


def validate(raw: dict, source: str = "study spec", written: bool = False) -> dict:
    """Check ``raw`` (a parsed TOML table) and return the spec with every default filled in."""
    top_keys = SCHEMA[""]
    known = [*top_keys, *[s for s in SCHEMA if s], *OPTIONAL_TABLES]
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a study spec must be a table of keys and sections, got {_show(raw)}")
    run_only = [key for key in raw if key in RUN_ONLY_KEYS]
    if run_only and "kind" not in raw:
        raise UserError(f"{source}: this is a comparison spec (it has [{run_only[0]}]), not a study spec; "
                        f"run it with 'emvsbayes run {source}'")
    for key in raw:
        if key not in known:
            raise UserError(f"{source}: unknown key {key!r}{_suggest(key, known)}")
    spec = _check_table({k: v for k, v in raw.items() if k in top_keys}, top_keys, "", source)
    kind = spec["kind"]
    for other, sections in KIND_SECTIONS.items():
        for section in sections:
            if other != kind and section in raw:
                raise UserError(f"{source}: [{section}] belongs to a {other!r} study but kind = {kind!r}; remove it")
    model = _check_table(raw.get("model", {}), SCHEMA["model"], "model", source)
    family = model["family"]
    for key, value in raw.get("model", {}).items():
        ignored = ignored_by_family("model", key, value, SCHEMA["model"][key], family, written)
        if ignored:
            raise UserError(f"{source}: {ignored}")
    spec["model"] = model
    spec["em"] = _check_table(raw.get("em", {}), SCHEMA["em"], "em", source)
    spec["bayes"] = _check_table(raw.get("bayes", {}), {**SCHEMA["bayes"], **prior_keys_of(family)}, "bayes", source)
    for section in KIND_SECTIONS[kind]:
        spec[section] = _check_table(raw.get(section, {}), SCHEMA[section], section, source)
    if kind == "coverage" and spec["intervals"]["kinds"] is None:
        spec["intervals"]["kinds"] = list(DEFAULT_INTERVAL_KINDS)

    priors_raw = raw.get("priors", {})
    if not isinstance(priors_raw, dict):
        raise UserError(f"{source}: [priors] must hold tables such as [priors.tight]; got {_show(priors_raw)}")
    default_prior = {key: spec["bayes"][key] for key in prior_keys_of(family)}
    priors = {"default": default_prior}
    for name, table in priors_raw.items():
        if name == "default":
            raise UserError(f"{source}: [priors.default] is the [bayes] prior; give the table another name")
        overrides = _check_table(table, {k: Key(None, r.check) for k, r in prior_keys_of(family).items()},
                                 f"priors.{name}", source)
        priors[name] = {**default_prior, **{k: v for k, v in overrides.items() if v is not None}}
    spec["priors"] = priors
    if kind == "sbc":
        data_prior = spec["sbc"]["data_prior"]
        if data_prior is not None:
            _check_prior_name(data_prior, priors, "[sbc] data_prior", source)

    grid_raw = raw.get("grid", {})
    if not isinstance(grid_raw, dict):
        raise UserError(f"{source}: [grid] must be a table of axis = [values], got {_show(grid_raw)}")
    axes = axes_of(family)
    grid = {}
    for axis, values in grid_raw.items():
        if axis not in axes:
            raise UserError(f"{source}: unknown grid axis [grid] {axis!r} for family {family!r}{_suggest(axis, axes)}")
        problem = list_of(axes[axis][1])(values)
        if problem:
            raise UserError(f"{source}: [grid] {axis} {problem}")
        if len({_grid_key(value) for value in values}) != len(values):
            raise UserError(f"{source}: [grid] {axis} lists a value twice; give each value once")
        if axis == "prior":
            for name in values:
                _check_prior_name(name, priors, "[grid] prior", source)
        grid[axis] = copy.deepcopy(values)
    spec["grid"] = grid
    _check_consistency(spec, source)
    return spec


def _grid_key(value) -> str:
    """A grid value as compared for repeats: 3 and 3.0 are one value (two cells of the same numbers)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def _check_prior_name(name, priors: dict, where: str, source: str) -> str:
    if not isinstance(name, str) or name not in priors:
        raise UserError(f"{source}: {where} names no prior {name!r}{_suggest(str(name), priors)}")
    return name


def _check_consistency(spec: dict, source: str) -> None:
    family, kind = spec["model"]["family"], spec["kind"]
    grid_cells = cells(spec)
    for cell in grid_cells:
        n = get_family(family).study_shape(cell)[0]
        if cell["components"] > n:
            raise UserError(f"{source}: a cell has K = {cell['components']} components but only {n} observations; "
                            "lower [grid] components or raise the data size")
        check = getattr(get_family(family), "study_check", None)
        if check is not None:  # the family's own limits on a cell (a coin's theta in (0, 1), ...)
            check(cell, kind, source)
        check_prior = getattr(get_family(family), "study_check_prior", None)
        if check_prior is not None:  # the family's limits on the priors a cell uses (a K x K table's K, ...)
            used = [cell["prior"]]
            if kind == "sbc" and spec["sbc"]["data_prior"] is not None:
                used.append(spec["sbc"]["data_prior"])
            for name in used:
                check_prior(cell, spec["priors"][name], "[bayes]" if name == "default" else f"[priors.{name}]", source)
    if kind == "coverage":
        weights = spec["truth"]["w"]
        if weights is not None and any(len(weights) != cell["components"] for cell in grid_cells):
            raise UserError(f"{source}: [truth] w has {len(weights)} weights but a cell has a different K; "
                            "give one weight per component or leave w out (equal weights)")
    if kind == "sbc":
        sbc = spec["sbc"]
        if (sbc["ranks"] + 1) % sbc["bins"]:
            raise UserError(f"{source}: [sbc] bins = {sbc['bins']} does not divide the {sbc['ranks'] + 1} possible ranks; "
                            "choose ranks + 1 divisible by bins, e.g. ranks = 99, bins = 10")
        kept = spec["bayes"]["chains"] * spec["bayes"]["draws"]
        if kept < sbc["ranks"]:
            raise UserError(f"{source}: [sbc] ranks = {sbc['ranks']} needs at least that many posterior draws, "
                            f"but chains x draws = {kept}; raise [bayes] draws or lower ranks")
        if "separation" in spec["grid"]:
            raise UserError(f"{source}: [grid] separation has no meaning in an SBC study (the truth is drawn from "
                            "the prior); remove it")


def grid_axes(spec: dict) -> list[str]:
    """The axes listed in ``[grid]``, in the order written: the dimensions of the study's Dataset."""
    return list(spec["grid"])


def cells(spec: dict) -> list[dict]:
    """Every cell of the grid: a dict of all axes (listed ones varying, the others at their defaults).

    Cells are in row-major order over :func:`grid_axes`; a cell's index is its position here.
    """
    axes = axes_of(spec["model"]["family"])
    listed = spec["grid"]
    base = {axis: default for axis, (default, _) in axes.items()}
    out = []
    for combo in itertools.product(*listed.values()):
        out.append({**base, **dict(zip(listed, combo))})
    return out


def fingerprint(spec: dict) -> str:
    """A hash of everything that determines a replicate's numbers (not the title, description or file name,
    nor the number of replicates).

    A store made under another fingerprint holds replicates of a different study. The replicate count is
    left out because replicate r of cell c depends only on the study seed, c and r
    (:func:`emvsbayes.study.replicate.replicate_seeds`): raising ``replicates`` extends a stored study, its
    done replicates are kept and only the new ones run.
    """
    relevant = {k: v for k, v in spec.items() if k not in ("title", "description", "name", "path", "replicates")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def load_study_spec(path: str | Path) -> dict:
    """Read and validate a study spec; the returned dict also carries ``name`` and ``path``."""
    path = Path(path)
    raw = read_toml(path, example="models/study_coverage_gmm.toml")
    spec = validate(raw, source=str(path), written=True)
    if not is_spec_name(path.stem):
        raise UserError(f"{path}: {SPEC_NAME_RULE}")
    spec["name"] = path.stem
    spec["path"] = str(path)
    return spec


def program_spec(spec: dict):
    """numpyro's program settings for a study: the chain layout is fixed by the number of chains
    alone (not by how many JAX devices a worker happens to have), so every worker runs the same
    program."""
    from emvsbayes.sampling import JAX_DEVICES
    from emvsbayes.sampling import programs as prog

    bayes = spec["bayes"]
    layout = prog.ChainLayout.for_chains(bayes["chains"], JAX_DEVICES)
    return prog.ProgramSpec(layout, bayes["tune"], bayes["draws"], float(bayes["target_accept"]))


def check_devices(spec: dict) -> None:
    """Refuse, before the cluster starts, JAX variables of this environment (which a LocalCluster's workers
    inherit) that would fail every replicate: those :func:`emvsbayes.sampling.check_compiler_environment` refuses,
    and an ``XLA_FLAGS`` that gives JAX fewer CPU devices than the study's chains are laid out on."""
    from emvsbayes.sampling import DEVICE_COUNT_FLAG, check_compiler_environment, devices_in_environment, resolve_sampler

    check_compiler_environment()
    if not any(resolve_sampler(cell["sampler"]) == "numpyro" for cell in cells(spec)):
        return
    if os.environ.get("JAX_PLATFORMS"):
        from emvsbayes.sampling import configure_jax

        configure_jax()  # JAX started here (seconds), only then: a platform it cannot start is refused now
    given = devices_in_environment()
    if given is None:
        return
    need = program_spec(spec).layout.devices
    if given < need:
        raise UserError(f"XLA_FLAGS sets --{DEVICE_COUNT_FLAG}={given}, but this study's {spec['bayes']['chains']} "
                        f"chains run on {need} JAX devices (the same program on every worker); raise it to {need} or "
                        "more, or remove it from XLA_FLAGS")
