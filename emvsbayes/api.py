"""The Python API: compare EM and the posterior on in-memory data, from a script or a notebook.

A thin layer over the command line's own machinery, so both give the same answers:

- :func:`compare` turns its keyword options into a spec dict, checks it with the same validator
  (:func:`emvsbayes.spec.validate`, same one-line messages), turns the data into the same records the
  CSV reader makes, and runs the same pipeline (:func:`emvsbayes.pipeline.run_spec`) on them. The
  results file is written to a private temporary folder and read back, so ``Comparison.results`` is
  exactly what ``results.nc`` holds; the folder is removed afterwards (no CSV is ever written).
- Options are the spec's keys, **flattened**: each key goes to the section that owns it
  (``draws=500`` is ``[bayes] draws``, ``n_init=5`` is ``[em] n_init``, ``covariance="diag"`` is
  ``[model] covariance``). A key that several sections have goes to the comparison's own section, not
  to ``[model_choice]``; a whole section can be given as a dict instead (``model_choice={"components":
  [1, 2, 3]}``, ``em={"n_init": 5}``), which is the only way to reach ``[model_choice]``'s keys.
- Every mistake is one :class:`emvsbayes.errors.UserError` (public name ``emvsbayes.SpecError``) with
  a one-line message naming the argument or key and the fix, raised before anything is written.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from emvsbayes.errors import UserError
from emvsbayes.family import family_names, get_family
from emvsbayes.spec import SCHEMA, SEED_RULE, TO_SPEC_HEADER, read_by_family, toml_key, validate
from emvsbayes.spec import show_value as _show
from emvsbayes.spec import suggest as _suggest

#: The exception every bad input to the API raises (one line: the problem and the fix).
SpecError = UserError

#: [data] keys that name where a spec's data come from; in-memory data need none of them.
_SOURCE_KEYS = ("dataset", "file", "store")
#: [data] keys that only describe how a CSV file is read.
_CSV_ONLY_KEYS = ("encoding", "percent", "categories")
#: what ``[data] file`` records for data passed to :func:`compare` (``to_spec`` replaces it)
IN_MEMORY = "<in-memory data>"

_SECTIONS = tuple(s for s in SCHEMA if s)


def _keys_of(family) -> dict[str, tuple[str, ...]]:
    """Each section's keys a spec of ``family`` may hold: the shared ones and the family's own (``spec_defaults``:
    ``counts``, ``emission``, ``initial``, ...); the shared ones alone when ``family`` names no family (the
    validator then says so)."""
    keys = {section: tuple(SCHEMA[section]) for section in SCHEMA}
    if isinstance(family, str) and family in family_names():
        for section, own in get_family(family).spec_defaults().items():
            keys[section] = (*keys.get(section, ()), *(key for key in own if key not in keys.get(section, ())))
    return keys


def _spec_from_options(family, components, options: dict, source: str) -> dict:
    """The raw spec dict that ``options`` (flattened keys or section dicts) stand for."""
    keys = _keys_of(family)
    # Each flattened key's section: the first section that has it, [model_choice] last (it repeats the
    # comparison's keys for its range of K, so it is reached only as a dict).
    home: dict[str, str] = {}
    for section in ("", "data", "model", "em", "bayes", "report"):
        for key in keys[section]:
            home.setdefault(key, section)
    raw: dict[str, Any] = {"data": {}, "model": {"family": family, "components": components}}
    placed: dict[tuple[str, str], str] = {("model", "family"): "family", ("model", "components"): "components"}

    def place(section: str, key: str, value, given_as: str) -> None:
        if (section, key) in placed:
            raise UserError(f"{source}: {given_as} and {placed[(section, key)]} both set "
                            f"{'[' + section + '] ' if section else ''}{key}; give it once")
        placed[(section, key)] = given_as
        if section:
            raw.setdefault(section, {})[key] = value
        else:
            raw[key] = value

    for key, value in options.items():
        if key in _SECTIONS and isinstance(value, dict):
            for sub, sub_value in value.items():
                if not isinstance(sub, str) or sub not in keys[key]:
                    raise UserError(f"{source}: {key}={{...}} has unknown key {_show(sub)}{_suggest(sub, keys[key])}")
                place(key, sub, sub_value, f"{key}={{{sub!r}: ...}}")
        elif key in _SECTIONS and key not in home:
            raise UserError(f"{source}: {key} must be a dict of [{key}] keys, e.g. {key}={_example(key)}, got {_show(value)}")
        elif key in home:
            place(home[key], key, value, f"{key}=")
        else:
            owners = [name for name in family_names() if name != family
                      and any(key in own for own in get_family(name).spec_defaults().values())]
            if owners:  # another family's own key (counts= with family="gaussian")
                raise UserError(f"{source}: {key}= is an option of {', '.join(f'family={name!r}' for name in owners)}, "
                                f"not of family={family!r}; remove it, or choose that family")
            raise UserError(f"{source}: unknown option {_show(key)}{_suggest(key, [*home, *_SECTIONS])}")
    for key in _SOURCE_KEYS:
        if key in raw["data"]:
            raise UserError(f"{source}: {key}= names data to read, but compare takes the data as its first argument; "
                            f"pass the data, or run a spec that names them with emvsbayes.run(spec)")
    for key in _CSV_ONLY_KEYS:
        if key in raw["data"]:
            raise UserError(f"{source}: {key}= applies to reading CSV files; prepare the columns (e.g. in pandas) "
                            "and pass the numbers to compare")
    raw["data"]["file"] = IN_MEMORY
    return raw


def _example(section: str) -> str:
    key = next(iter(SCHEMA[section]))
    default = SCHEMA[section][key].default
    return "{" + f"{key!r}: {default!r}" + "}"


# --- running ------------------------------------------------------------------------------------------


def _path_argument(value, source: str, name: str, example: str) -> Path:
    """A path argument as a Path: a str or os.PathLike, not empty (``Path("")`` is the current folder, which
    a mistyped variable would silently write into), else one UserError naming the argument."""
    if not isinstance(value, (str, os.PathLike)):
        raise UserError(f"{source}: {name} must be a path (a str or pathlib.Path), e.g. {name}={example!r}, "
                        f"got {_show(value)}")
    text = os.fspath(value)
    if not str(text).strip():
        raise UserError(f"{source}: {name} is empty; give a path, e.g. {name}={example!r}")
    if "\x00" in str(text):
        raise UserError(f"{source}: {name} holds a NUL character, which no file name can; give a path, e.g. "
                        f"{name}={example!r}")
    import unicodedata

    control = next((c for c in str(text) if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if control is not None:  # as --out: a line break in a name breaks every listing read one name per line
        raise UserError(f"{source}: {name} holds the control character {control!r}; choose a name without it")
    too_long = next((part for part in Path(text).parts if len(os.fsencode(part)) > 255), None)
    if too_long is not None:
        raise UserError(f"{source}: {name} has a name of {len(os.fsencode(too_long))} bytes, more than the 255 a file "
                        "system takes; choose a shorter one")
    return Path(value)


def _plain(value):
    """A spec value with numpy's scalars and arrays as the Python numbers and lists a TOML file gives
    (``components=np.int64(2)``, ``init=np.array([0.3, 0.6])``), so they are checked like any other value."""
    if isinstance(value, os.PathLike):  # a data file or store given as a Path, as a TOML spec gives its text
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype.kind in "biuf" else value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _name_and_path(spec: dict, source: str) -> dict:
    """The ``name`` and ``path`` entries of a spec dict (not spec keys: load_spec adds them); a name is text."""
    extra = {k: spec[k] for k in ("name", "path") if k in spec}
    if "name" in extra and not (extra["name"] is None or isinstance(extra["name"], str)):
        raise UserError(f"{source}: the spec's name must be text (it names the report folder), got {_show(extra['name'])}")
    return extra


def _check_progress(progress, source: str) -> None:
    """``progress`` is called with each message: checked before any work, not at the first message."""
    if progress is not None and not callable(progress):
        raise UserError(f"{source}: progress must be a function of one message (e.g. print) or None, got {_show(progress)}")


def _run_in_memory(spec: dict, data=None, *, seed=None, progress=None, out=None):
    """Run the pipeline; the results tree as written and read back. With ``out`` the results and the
    page are written there as ``emvsbayes run`` writes them; else into a temporary folder, then removed."""
    from emvsbayes.pipeline import run_spec

    command = "emvsbayes Python API"
    if out is not None:
        return run_spec(spec, Path(out), seed=seed, progress=progress, data=data, command=command).tree
    with tempfile.TemporaryDirectory(prefix="emvsbayes-api-") as folder:
        outcome = run_spec(spec, Path(folder) / "run", seed=seed, progress=progress, report=False, data=data,
                           command=command)
        return outcome.tree


def _out_named_as_in_python(function):
    """``function``'s messages say to choose another output folder "with out=", not the command line's "--out"."""
    import functools

    from emvsbayes.errors import out_option_named

    @functools.wraps(function)
    def named(*args, **kwargs):
        with out_option_named("out="):
            return function(*args, **kwargs)

    return named


def _in_memory_families() -> str:
    """The families whose data compare() takes in memory, as its messages list them (family='coins', ...); each
    family module is imported only here, on the way to a refusal."""
    return ", ".join(f"family={name!r}" for name in family_names() if hasattr(get_family(name), "data_from_memory"))


def compare(data, /, family: str | None = None, components: int = 2, *, progress=None, **options) -> Comparison:
    """Fit a model (a mixture or a hidden Markov model) to in-memory data by EM and by PyMC, and compare the two.

    Parameters
    ----------
    data : array_like, pandas.DataFrame or Series, xarray.DataArray or Dataset, or list of (int, int)
        Each family reads its own kind (its ``data_from_memory``). ``family="gaussian"``: rows of observations
        (a 1-D or 2-D numeric array, a DataFrame whose column names are kept and whose index names the rows
        when each row has a name of its own, a 1-D/2-D DataArray, or a Dataset of 1-D variables).
        ``family="coins"``: (heads, tosses) pairs, an (N, 2) integer array, or a DataFrame (or a dict of
        lists) with ``heads`` and ``tosses`` columns. ``family="poisson"``: one column of counts (a 1-D
        array or list, a Series, a 1-D DataArray, or the DataFrame column ``counts=``, default ``"count"``).
        ``family="hmm"``: one series in time order (a 1-D array or list, a Series indexed by its times, a
        1-D DataArray with its time coordinate, or one DataFrame column, ``columns=[name]``, with its time
        column as ``label=``). A record from :func:`load_dataset` is taken as it is.
    family : {"coins", "gaussian", "poisson", "hmm"}
        The model family.
    components : int
        The number of mixture components K.
    progress : callable, optional
        Called with one-line progress messages (e.g. ``print``).
    **options
        The spec's keys (see ``models/*.toml``), flattened: each goes to the section that owns it
        (``draws=200`` is ``[bayes] draws``, ``n_init=5`` is ``[em] n_init``, ``seed=1`` the top-level
        seed). A key several sections have goes to the comparison's section (``covariance``,
        ``chains``, ``draws``, ``tune``: not ``[model_choice]``); a whole section may be a dict
        (``model_choice={"components": [1, 2, 3]}``, ``data={"counts": "n"}``). The family's own keys are
        options too (``emission="gaussian"``, ``initial="stationary"`` for ``family="hmm"``). Data options:
        ``columns``, ``drop``, ``standardize``, ``label`` (a column naming the rows), ``truth``; ``heads``,
        ``tosses`` for coin DataFrames; ``counts`` for a Poisson DataFrame's column.

    Returns
    -------
    Comparison
        The results (the same groups as ``results.nc``), with summary, report, save and to_spec.

    Raises
    ------
    emvsbayes.SpecError
        For any bad argument or option: one line naming it and the fix; nothing is written.

    Examples
    --------
    >>> import emvsbayes
    >>> c = emvsbayes.compare([(5, 10), (9, 10), (8, 10), (4, 10), (7, 10)], family="coins",
    ...                       init=[0.6, 0.5], draws=200, tune=200, chains=2, seed=1)  # doctest: +SKIP
    >>> c.summary()  # doctest: +SKIP
    """
    source = "compare"
    _check_progress(progress, source)
    if family is None:
        typo = difflib.get_close_matches("family", [str(key) for key in options], n=1, cutoff=0.7)
        if typo:
            raise UserError(f"{source}: unknown option {typo[0]}=; did you mean family=?")
        raise UserError(f"{source}: family= is missing; give one of {_in_memory_families()}")
    raw = _spec_from_options(_plain(family), _plain(components), _plain(options), source)
    spec = validate(raw, source=source, written=True)
    model_family = get_family(spec["model"]["family"])
    if not hasattr(model_family, "data_from_memory"):
        raise UserError(f"{source}: family={spec['model']['family']!r} takes its data from a spec; write the data to "
                        f"a CSV file and run a spec with emvsbayes.run(\"spec.toml\"), or use one of {_in_memory_families()}")
    record, raw_data = model_family.data_from_memory(data, spec, source)
    if not spec["title"]:
        given = {"array": "an array", "DataFrame": "a DataFrame", "DataArray": "a DataArray", "Dataset": "a Dataset",
                 "Series": "a Series", "dict": "a dict of columns"}
        spec["title"] = f"{model_family.describe(spec)}, fitted to {given.get(record.source, record.source)}"
    try:
        tree = _run_in_memory(spec, record, progress=progress)
    except UserError as error:  # the pipeline's checks of data and options: named as compare's, as the others are
        if type(error) is UserError and not str(error).startswith(f"{source}: "):
            raise UserError(f"{source}: {error}") from None
        raise
    return Comparison(tree, record, raw_data)


# --- the comparison -----------------------------------------------------------------------------------


class Comparison:
    """One comparison's results, in memory: what ``emvsbayes run`` writes to ``results.nc``.

    Attributes
    ----------
    results : xarray.DataTree
        The results, with the same groups as ``results.nc`` (see ``RESULTS.md``), read back from the
        file the pipeline wrote.
    """

    def __init__(self, results, data=None, raw_data=None):
        self.results = results
        self._data = data
        self._raw_data = raw_data  # what the family's data_csv needs beside the record (rows before z-scoring)

    def __repr__(self) -> str:
        title = self.results.attrs.get("title", "")
        return f"<emvsbayes.Comparison {title!r}: groups {', '.join(self.results.children)}>"

    # -- reading ------------------------------------------------------------------------------------

    @property
    def spec(self) -> dict:
        """The spec as run (every default filled in), as recorded in the results."""
        from emvsbayes.results import root_json

        return root_json(self.results, "spec", {}) or {}

    def summary(self):
        """One row per parameter: EM's estimate, its intervals, the posterior's, and the sampler diagnostics.

        Returns
        -------
        pandas.DataFrame
            Indexed by parameter (``theta[A]``, ``mu[1, x1]``, ...), with columns ``em`` (EM estimate),
            ``se``, ``wald_lower``/``wald_upper`` (observed information), ``bootstrap_lower``/``upper``,
            ``post_mean``, ``post_sd``, ``post_lower``/``post_upper`` (equal-tailed, at ``[report]
            interval_prob``), ``em_in_posterior``, ``rhat``, ``ess_bulk``, ``ess_tail`` (of the raw
            draws), ``rhat_relabelled``, ``ess_relabelled``; NaN where a part was not run. Read from
            the results tree, as the report reads them.
        """
        import pandas as pd

        from emvsbayes.report.params import elements, interval_prob, parameter_names, parameter_rows
        from emvsbayes.report.summary import diagnostic_rows

        tree = self.results
        rows = parameter_rows(tree)
        em = tree["em"].to_dataset() if "em" in tree.children else None
        raw_labels = [label for name in parameter_names(tree) if em is not None and name in em
                      for label, _ in elements(em[name])]
        diagnostics = {row.label: row for row in diagnostic_rows(tree)} if "posterior" in tree.children else {}
        nan = float("nan")
        records = []
        for raw_label, row in zip(raw_labels, rows, strict=True):
            diag = diagnostics.get(raw_label)
            inside = row.em_in_posterior
            records.append({
                "parameter": row.label, "em": row.em, "se": row.se,
                "wald_lower": row.wald[0], "wald_upper": row.wald[1],
                "bootstrap_lower": row.bootstrap[0], "bootstrap_upper": row.bootstrap[1],
                "post_mean": row.post_mean, "post_sd": row.post_sd,
                "post_lower": row.post_eti[0], "post_upper": row.post_eti[1],
                "em_in_posterior": inside,
                "rhat": diag.rhat if diag else nan, "ess_bulk": diag.ess_bulk if diag else nan,
                "ess_tail": diag.ess_tail if diag else nan,
                "rhat_relabelled": diag.rhat_relabelled if diag else nan,
                "ess_relabelled": diag.ess_relabelled if diag else nan,
            })
        frame = pd.DataFrame.from_records(records, index="parameter") if records else pd.DataFrame()
        frame.attrs["interval_prob"] = interval_prob(tree)
        return frame

    def _repr_html_(self) -> str:
        """The report's summary card and the parameter table, inline in Jupyter (no figures)."""
        from emvsbayes.report.markup import esc
        from emvsbayes.report.sections import Context, summary_section

        ctx = Context(self.results)
        title = self.results.attrs.get("title", "")
        table = self.summary()[["em", "wald_lower", "wald_upper", "post_mean", "post_lower", "post_upper", "rhat", "ess_bulk"]]
        return (f"<div class='emvsbayes-comparison'><h4>{esc(title)}</h4>{summary_section(ctx)}"
                f"{table.to_html(float_format=lambda v: f'{v:.4g}', na_rep='–')}</div>")

    # -- writing ------------------------------------------------------------------------------------

    def save(self, path) -> Path:
        """Write the results to ``path`` (a ``.nc`` file, or a folder to hold ``results.nc``) with the pipeline's writer.

        A file already there is replaced only when it is a results file emvsbayes wrote.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        from emvsbayes.outputs import foreign, published_together
        from emvsbayes.results import write_results

        path = _target(path, "results.nc", "save")
        reason = published_together(path) or foreign(path, "results")
        if reason:
            raise UserError(f"save: {path} {reason}, so emvsbayes will not write over it; choose another path")
        # The tree as read back carries the file's checksum; the writer records a fresh one.
        tree = self.results.copy()
        tree.attrs.pop("checksum", None)
        try:
            write_results(tree, path)
        except OSError as error:
            raise UserError(f"save: cannot write {path} ({error.strerror}); choose another path") from None
        return path

    def report(self, path) -> Path:
        """Write the self-contained HTML report (the page ``emvsbayes run`` writes) to ``path``.

        ``path`` is an ``.html`` file or a folder (then ``index.html`` in it). A file already there is
        replaced only when it is a page emvsbayes wrote.

        Returns
        -------
        pathlib.Path
            The page written.
        """
        from emvsbayes.outputs import foreign, published_together

        path = _target(path, "index.html", "report")
        reason = published_together(path) or foreign(path, "page")
        if reason:
            raise UserError(f"report: {path} {reason}, so emvsbayes will not write over it; choose another path")
        from emvsbayes.report import render_report_file

        try:
            render_report_file(self.results, path)
        except OSError as error:
            raise UserError(f"report: cannot write {path} ({error.strerror}); choose another path") from None
        return path

    def to_spec(self, data_path=None) -> str:
        """TOML text of a spec that reruns this comparison from the command line with the same numbers.

        Parameters
        ----------
        data_path : str or Path, optional
            Where to write the data as CSV (refused if the file exists; in a folder, ``data.csv`` there;
            the folder must exist). The spec's ``[data] file`` is this path as given: a relative path is read relative to the folder the spec is saved in,
            so save the spec beside the data (or give an absolute path). Without it, ``file`` is
            ``"data.csv"``: write the data there yourself (or call again with ``data_path``). A spec
            run with ``emvsbayes.run`` on a file or data set needs no data file: its ``[data]`` is kept.

        Returns
        -------
        str
            The spec, every key explicit (defaults filled in), with the seed the run used.
        """
        spec = dict(self.spec)
        spec.pop("checks", None)
        spec["seed"] = int(self.results.attrs["seed"])
        data_spec = dict(spec["data"])
        if data_path is not None:
            # a folder takes data.csv, as save() and report() put their files in one
            data_path = _target(data_path, "data.csv", "to_spec", "data_path")
        if data_spec.get("file") == IN_MEMORY:
            if self._data is None:
                raise UserError("to_spec: this comparison has no in-memory data to write; rerun it with compare()")
            table, data_keys = get_family(spec["model"]["family"]).data_csv(self._data, self._raw_data)
            file = "data.csv" if data_path is None else str(data_path)
            if data_path is not None:
                path = data_path
                if os.path.lexists(path):
                    raise UserError(f"to_spec: {path} exists; emvsbayes does not write over data files, choose another data_path")
                from emvsbayes.results import atomic_write

                try:
                    atomic_write(path, lambda tmp: tmp.write_text(table, encoding="utf-8", newline=""))
                except OSError as error:
                    raise UserError(f"to_spec: cannot write {path} ({error.strerror}); choose another data_path") from None
            data_spec.update(file=file, **data_keys)
        elif data_spec.get("file") is not None and not Path(data_spec["file"]).is_absolute():
            # A spec file's CSV is relative to that spec's folder; the emitted spec may be saved elsewhere.
            spec_path = self.results.attrs.get("spec_path") or "."
            data_spec["file"] = str((Path(spec_path).parent / data_spec["file"]).resolve())
        spec["data"] = data_spec
        return spec_toml(spec)


def _target(path, default_name: str, method: str, argument: str = "path") -> Path:
    """The file ``method`` writes for its ``argument``: the path given, or ``default_name`` inside it when it is a
    folder; refused (one UserError) when its folder does not exist or is a file."""
    given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    path = _path_argument(path, method, argument, default_name)
    if isinstance(given, str) and given.endswith(("/", os.sep)) and not path.is_dir():
        # Path("newdir/") is Path("newdir"): a file of that name was written where a folder was meant
        raise UserError(f"{method}: folder {path} does not exist; create it, or give the file to write, e.g. "
                        f"{path / default_name}")
    if path.is_dir():
        path = path / default_name
    above = next((folder for folder in path.parents if folder.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{method}: {above} is a file, not a folder, so {path} cannot be written; choose another path")
    if not path.parent.is_dir():
        raise UserError(f"{method}: folder {path.parent} does not exist; create it or choose another path")
    return path


# --- TOML ---------------------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest round-trip text, valid TOML (finite: the validator refuses others)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def spec_toml(spec: dict) -> str:
    """A spec dict (as :func:`emvsbayes.spec.validate` returns) as TOML text; ``None`` values (defaults) are left out,
    and so are the keys the spec's family does not read (a spec file is refused for holding them)."""
    family = spec["model"]["family"]
    lines = [f"{TO_SPEC_HEADER}: run it with 'emvsbayes run THIS.toml'."]
    for key in SCHEMA[""]:
        if spec.get(key) is not None:
            lines.append(f"{toml_key(key)} = {_toml_value(spec[key])}")
    for section in _SECTIONS:
        values = spec.get(section)
        if not isinstance(values, dict):
            continue
        lines += ["", f"[{section}]"]
        lines += [f"{toml_key(k)} = {_toml_value(v)}" for k, v in values.items()
                  if v is not None and read_by_family(section, k, family)]
    return "\n".join(lines) + "\n"


# --- specs, data sets, studies ------------------------------------------------------------------------


@_out_named_as_in_python
def load_spec(path) -> dict:
    """Read and check a comparison spec file.

    Parameters
    ----------
    path : str or Path
        A TOML spec, e.g. ``models/two_coins.toml``.

    Returns
    -------
    dict
        The spec with every default filled in, plus ``name`` (the file's stem) and ``path``.

    Raises
    ------
    emvsbayes.SpecError
        One line naming the file, the key and the fix.
    """
    from emvsbayes.spec import load_spec as _load

    return _load(_path_argument(path, "load_spec", "path", "models/two_coins.toml"))


def load_dataset(name: str, **options):
    """Load a bundled data set (``emvsbayes datasets`` lists them).

    Parameters
    ----------
    name : str
        The data set's name, e.g. ``"coins_do_batzoglou"`` or ``"faithful"``.
    **options
        For continuous data sets: ``columns``, ``label``, ``percent``, ``categories``, ``standardize``, ``drop``.
        A count data set (``earthquakes``) is read whole: only its own ``columns=["count"]`` and ``label="year"``.

    Returns
    -------
    CoinData or ContinuousData
        Frozen records; ``compare`` takes them as its data.
    """
    from emvsbayes import data as datasets

    if not isinstance(name, str):
        raise UserError(f"load_dataset: name must be a data set's name such as 'old_faithful' ('emvsbayes datasets' "
                        f"lists them), got {_show(name)}")
    names = [info.name for info in datasets.list_datasets()]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        raise UserError(f"load_dataset: {name!r} is not bundled; "
                        + (f"did you mean {close[0]!r}?" if close else f"the data sets are {', '.join(names)}"))
    for key, value in options.items():
        # the options are the spec's [data] keys of the same names: checked as a spec file's are
        known = SCHEMA["data"].get(key)
        problem = known.check(_plain(value)) if known is not None else None
        if problem:
            raise UserError(f"load_dataset: {key} {problem}")
    return datasets.load_dataset(name, **{key: _plain(value) for key, value in options.items()})


@_out_named_as_in_python
def run(spec, *, out=None, seed: int | None = None, progress=None) -> Comparison:
    """Run a comparison spec, as ``emvsbayes run`` does.

    Parameters
    ----------
    spec : str, Path or dict
        A spec file, or a spec dict (a :func:`load_spec` result, or the raw tables of a TOML spec;
        a relative ``[data] file`` is then read from the current folder).
    out : str or Path, optional
        Folder to write ``results.nc`` and ``index.html`` into, as ``emvsbayes run --out`` does.
        Without it nothing is written.
    seed : int, optional
        Master seed, overriding the spec's.
    progress : callable, optional
        Called with one-line progress messages.

    Returns
    -------
    Comparison
    """
    from emvsbayes.pipeline import check_against_data, load_data

    _check_progress(progress, "run")
    if out is not None:
        out = _path_argument(out, "run", "out", "reports/mine")
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        extra = _name_and_path(spec, "run")
        spec = {**validate({k: _plain(v) for k, v in spec.items() if k not in ("name", "path", "checks")}, source="run"),
                **extra}
    else:
        raise UserError(f"run: spec must be a spec file's path or a spec dict, got {_show(spec)}")
    if spec["data"]["file"] == IN_MEMORY:
        raise UserError("run: this spec's data were in memory; write them with Comparison.to_spec(data_path=...)")
    if seed is not None and not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        raise UserError(f"run: seed must be {SEED_RULE}, got {_show(seed)}")
    data = load_data(spec)
    check_against_data(spec, data)
    return Comparison(_run_in_memory(spec, data, seed=seed, progress=progress, out=out), data,
                      np.asarray(data.x, dtype=float) if hasattr(data, "x") else None)


@_out_named_as_in_python
def study(spec, client=None, *, out=None, progress=None):
    """Run (or resume) a simulation study, as ``emvsbayes study`` does.

    Parameters
    ----------
    spec : str, Path or dict
        A study spec file (e.g. ``models/study_coverage_gmm.toml``) or a validated study spec dict.
    client : dask.distributed.Client, optional
        An existing client to run the replicates on (it is left open). Without it a
        ``LocalCluster`` is started for the study and closed afterwards.
    out : str or Path, optional
        Output folder (default ``reports/<spec name>``): ``study.nc``, ``index.html`` and the store.
    progress : callable, optional
        Called with one-line progress messages.

    Returns
    -------
    emvsbayes.study.StudyOutcome
        Paths of ``study.nc`` and its page, and counts of replicates computed, skipped and failed.
    """
    from emvsbayes.study.run import run_study

    if client is not None and not hasattr(client, "submit"):
        raise UserError(f"study: client must be a dask.distributed.Client, got {_show(client)}")
    if not isinstance(spec, (str, os.PathLike, dict)):
        raise UserError(f"study: spec must be a study spec file's path or a study spec dict, got {_show(spec)}")
    _check_progress(progress, "study")
    if out is not None:
        out = _path_argument(out, "study", "out", "reports/my_study")
    if isinstance(spec, dict) and not _validated_study(spec):
        # the raw tables of a TOML study spec: checked here, as a spec file is (a validated one has every section)
        from emvsbayes.study.spec import validate as validate_study

        extra = _name_and_path(spec, "study")
        spec = {**validate_study({k: v for k, v in spec.items() if k not in ("name", "path")}, source="study"), **extra}
    if isinstance(spec, dict) and out is None and not isinstance(spec.get("name"), str):
        raise UserError("study: a study spec dict has no name to name its output folder; give out=\"folder\" "
                        "(or load the spec with load_study_spec)")
    return run_study(spec, out=out, progress=progress, client=client)


def _validated_study(spec: dict) -> bool:
    """Whether ``spec`` is a study spec as :func:`emvsbayes.study.load_study_spec` returns it (not raw TOML tables)."""
    priors = spec.get("priors")
    return all(isinstance(spec.get(key), dict) for key in ("model", "em", "bayes", "grid")) \
        and isinstance(priors, dict) and "default" in priors
