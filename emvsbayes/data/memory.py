"""Data passed to the Python API in memory (arrays, DataFrames, DataArrays, lists), made into the records the
CSV reader makes (:mod:`emvsbayes.data.records`), with the same checks and one-line messages; and those records
written back as CSV text that reads into the same numbers (``Comparison.to_spec``).

One reader per kind of data, as :mod:`emvsbayes.data.csv` has: coin counts, continuous rows, counts, one series.
A family picks its kind (its ``data_from_memory`` and ``data_csv`` members); nothing here names a family.
"""

from __future__ import annotations

import csv
import difflib
import io
import math

import numpy as np

from emvsbayes.errors import UserError, name_listing
from emvsbayes.spec import show_value as _show


def _close(name: str, names) -> str:
    """"; did you mean 'x'?" for the column name closest to a mistyped ``name``, or "" (the message lists them)."""
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer())


def coin_record(data, data_spec: dict, source: str):
    """A ``CoinData`` from (heads, tosses) pairs, an (N, 2) array or a DataFrame, checked as the CSV reader checks."""
    from emvsbayes.data import CoinData
    from emvsbayes.data.csv import MAX_COUNT as MAX_EXACT_COUNT

    if isinstance(data, CoinData):
        return data
    _refuse_masked(data, source)
    kind = "(heads, tosses) pairs"
    heads_name, tosses_name = data_spec["heads"], data_spec["tosses"]
    label, labels = data_spec.get("label"), None
    if label is not None and label in (heads_name, tosses_name):
        raise UserError(f"{source}: column {label!r} is {'heads' if label == heads_name else 'tosses'}=, so it cannot also "
                        "be label= (the sets' names); name another column, or leave label= out to number the sets")
    if _is_dataframe(data):
        # column names as text, as for continuous data (a DataFrame of a list has columns 0, 1: heads="0")
        names = _column_names(data)
        for name in names:
            if names.count(name) > 1:
                raise UserError(f"{source}: column name {name!r} appears more than once; rename one")
        missing = [name for name in (heads_name, tosses_name) if name not in names]
        if missing:
            raise UserError(f"{source}: data has no column {missing[0]!r} (columns: {name_listing(names)}); "
                            f"name the counts' columns with heads='...', tosses='...'")
        pairs = list(zip(data.iloc[:, names.index(heads_name)].tolist(), data.iloc[:, names.index(tosses_name)].tolist()))
        kind = "DataFrame"
        if label is not None:
            if label not in names:
                raise UserError(f"{source}: label={label!r} is not a column (columns: {name_listing(names)})"
                                f"{_close(label, names) or "; name the column of the sets' names"}")
            labels = label_texts(data.iloc[:, names.index(label)].to_numpy())
            _check_row_names(labels, label, source)
        else:
            labels = _row_names(data.index)
    elif isinstance(data, (str, bytes)):
        raise UserError(f"{source}: coin data must be (heads, tosses) pairs, e.g. [(5, 10), (9, 10)], got text "
                        f"{_show(data)}; read a file with a spec's [data] file, or give the numbers")
    elif isinstance(data, dict) or hasattr(data, "data_vars"):  # an xarray Dataset holds columns by name too
        # columns by name, as a DataFrame holds them: {"heads": [...], "tosses": [...]}
        missing = [name for name in (heads_name, tosses_name) if name not in data]
        if missing:
            raise UserError(f"{source}: data has no key {missing[0]!r} (keys: {', '.join(map(str, data))}); give "
                            f"{{{heads_name!r}: [...], {tosses_name!r}: [...]}}, or name the keys with heads='...', tosses='...'")
        columns = [np.asarray(data[name], dtype=object).ravel().tolist() for name in (heads_name, tosses_name)]
        if len(columns[0]) != len(columns[1]):
            raise UserError(f"{source}: data[{heads_name!r}] has {len(columns[0])} counts but data[{tosses_name!r}] has "
                            f"{len(columns[1])}; give one of each per set")
        pairs = list(zip(*columns))
        kind = "dict"
        if label is not None:
            if label not in data:
                raise UserError(f"{source}: label={label!r} is not a key of data (keys: {', '.join(map(str, data))}); "
                                "name the key of the sets' names")
            labels = label_texts(np.asarray(data[label], dtype=object).ravel())
            _check_row_names(labels, label, source)
    else:
        try:
            # A pair given as a tuple or list keeps its items as given: numpy would turn (True, 1) into (1, 1).
            pairs = [tuple(pair) if isinstance(pair, (list, tuple)) else tuple(np.asarray(pair).tolist()) for pair in data]
            odd = next((item for item in data if isinstance(item, (str, bytes, dict))), None)
        except TypeError:
            raise UserError(f"{source}: coin data must be (heads, tosses) pairs, e.g. [(5, 10), (9, 10)], got {_show(data)}") from None
        if odd is not None:
            # a text or a dict iterates as its characters or keys: "set 1 is ('h', 'e', 'a', 'd', 's')" said nothing
            what = "dicts: pass pandas.DataFrame(data) or {'heads': [...], 'tosses': [...]}" if isinstance(odd, dict) \
                else "text: give the numbers, e.g. (5, 10), not '5,10'"
            raise UserError(f"{source}: coin data must be (heads, tosses) pairs, e.g. [(5, 10), (9, 10)], got a list "
                            f"holding {what}")
        kind = "array" if isinstance(data, np.ndarray) else kind
    if not pairs:
        raise UserError(f"{source}: data holds no sets of tosses; give at least one (heads, tosses) pair")
    heads, tosses = [], []
    for i, pair in enumerate(pairs, start=1):
        if len(pair) != 2 or not all(_is_whole(v) for v in pair):
            raise UserError(f"{source}: set {i} is {_show(pair)}; each set must be two whole numbers (heads, tosses), e.g. (5, 10)")
        h, t = int(pair[0]), int(pair[1])
        if max(abs(h), abs(t)) > MAX_EXACT_COUNT:
            raise UserError(f"{source}: set {i} is {_show(pair)}, a count larger than {MAX_EXACT_COUNT}; counts must be "
                            "exact in floating point, so check that set")
        if t < 1:
            raise UserError(f"{source}: set {i} has {t} tosses; every set needs at least one toss, so fix the count or remove it")
        if not 0 <= h <= t:
            raise UserError(f"{source}: set {i} has {h} heads of {t} tosses; heads must be between 0 and tosses")
        heads.append(h)
        tosses.append(t)
    if label is not None and labels is None:
        raise UserError(f"{source}: label={label!r} names a column, and (heads, tosses) pairs have none; pass a DataFrame "
                        "with that column, or leave label= out to number the sets")
    if labels is not None and len(labels) != len(heads):
        raise UserError(f"{source}: data[{label!r}] has {len(labels)} names but there are {len(heads)} sets; give one "
                        "name per set")
    labels = labels or tuple(f"set {i}" for i in range(1, len(heads) + 1))
    return CoinData(np.asarray(heads, dtype=np.int64), np.asarray(tosses, dtype=np.int64), labels, source=kind)


def _what_values(column: np.ndarray) -> str:
    """What a non-numeric column holds, in words (numpy's dtype names, ``object`` or ``<U3``, say little)."""
    kind = column.dtype.kind
    if kind in "US" or (kind == "O" and all(isinstance(v, (str, bytes)) for v in column.ravel()[:1000])):
        return "text"
    if kind == "O" and all(isinstance(v, (bool, np.bool_)) or v is None or v is getattr(np.ma, "masked", None)
                           or type(v).__name__ == "NAType" for v in column.ravel()[:1000]):
        kind = "b"  # a nullable boolean column with missing values (pandas' "boolean" dtype)
    described = {"b": "true/false values", "M": "dates or times", "m": "time spans", "c": "complex numbers",
                 "O": "mixed values"}
    return f"{described.get(kind, 'values')} of dtype {column.dtype}"


def _column_names(frame) -> list[str]:
    """A DataFrame's column names as text; a MultiIndex column ("a", "1") is "a_1" (its parts joined, as pandas
    users flatten them), not "('a', '1')"."""
    return ["_".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns]


def _refuse_masked(data, source: str) -> None:
    """A masked array with masked entries is refused: np.asarray drops the mask, and the masked entries' stand-in
    values (often -999) would be fitted as data."""
    if isinstance(data, np.ma.MaskedArray) and np.ma.is_masked(data):
        row = int(np.argwhere(np.ma.getmaskarray(data))[0][0]) + 1
        raise UserError(f"{source}: data is a masked array with masked entries (the first in row {row}); remove those rows "
                        "(e.g. x[~x.mask.any(axis=-1)] for 2-D, x.compressed() for 1-D) and pass the rest")


def _is_dataframe(data) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "columns") and hasattr(data, "dtypes")


def columns_of(data, source: str, every_index: bool = False):
    """(column names, list of 1-D arrays, row labels or None, what it was) of continuous in-memory data. An index
    that names no row of its own gives no labels, unless ``every_index`` (a series' time labels, which its reader
    checks)."""
    module = type(data).__module__
    if module.startswith("xarray"):
        import xarray as xr

        if isinstance(data, xr.DataArray):
            if data.ndim == 1:
                dim = data.dims[0]
                labels = _row_names(data.indexes[dim], every_index) if dim in data.indexes else None
                return [str(data.name if data.name is not None else "x")], [data.values], labels, "DataArray"
            if data.ndim == 2:
                if data.dims[1] == "obs":  # the results files' row dim, wherever it stands: rows are observations
                    data = data.transpose("obs", data.dims[0])
                dim = data.dims[1]
                name = str(data.name if data.name is not None else "x")
                names = [str(v) for v in data[dim].values] if dim in data.coords else [f"{name}{j + 1}" for j in range(data.shape[1])]
                return names, [data.values[:, j] for j in range(data.shape[1])], None, "DataArray"
            raise UserError(f"{source}: a DataArray must be 1-D or 2-D (rows, columns), got dims {data.dims}; "
                            "stack or select the other dimensions first")
        if isinstance(data, xr.Dataset):
            dims = {var.dims for var in data.data_vars.values()}
            if not data.data_vars or len(dims) != 1 or len(next(iter(dims))) != 1:
                raise UserError(f"{source}: a Dataset must hold 1-D variables along one dimension (one per column); "
                                "select those variables, or pass a DataFrame (ds.to_dataframe())")
            names = [str(name) for name in data.data_vars]
            return names, [data[name].values for name in data.data_vars], None, "Dataset"
    if module.startswith("pandas") and getattr(data, "ndim", None) == 1 and hasattr(data, "to_frame"):
        # A Series is one named column (df["x"]): fitted as the DataFrame of that column, its index the labels.
        frame = data.to_frame(name=str(data.name) if data.name is not None else "x")
        return columns_of(frame, source, every_index)[:3] + ("Series",)
    if _is_dataframe(data):
        import pandas as pd

        names = _column_names(data)
        labels = None
        if not isinstance(data.index, pd.RangeIndex) or data.index.start != 0 or data.index.step != 1:
            labels = _row_names(data.index, every_index)
        return names, [data[c].to_numpy() for c in data.columns], labels, "DataFrame"
    _refuse_masked(data, source)
    if isinstance(data, range):  # numbers, as a list of them is
        data = list(data)
    if isinstance(data, (list, tuple)) or isinstance(data, np.ndarray):
        flag = _first_bool(data) if isinstance(data, (list, tuple)) else None
        if flag is not None:  # numpy would read [True, 2.5] as [1.0, 2.5]
            raise UserError(f"{source}: data must be a 1-D or 2-D array of numbers (rows, columns), got {flag[1]!r} in "
                            f"row {flag[0]}; pass numbers (True and False are not measurements)")
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError):  # rows of different lengths, numbers beyond int64
            raise UserError(f"{source}: data must be a 1-D or 2-D array of numbers (rows, columns) with the same "
                            f"number of values in every row, got {_show(data)}; pass a numeric array or a DataFrame") from None
        if array.dtype.kind not in "iuf" or array.ndim not in (1, 2):
            hint = (" (numbers held as Python objects or text are converted with .astype(float))"
                    if array.dtype.kind in "OUS" and array.ndim in (1, 2) else "")
            raise UserError(f"{source}: data must be a 1-D or 2-D array of numbers (rows, columns), got "
                            f"{array.ndim}-D {array.dtype}; pass a numeric array or a DataFrame{hint}")
        if array.ndim == 1:
            return ["x"], [array], None, "array"
        return [f"x{j + 1}" for j in range(array.shape[1])], [array[:, j] for j in range(array.shape[1])], None, "array"
    # a generator is read once: its values are not kept for the rerun's CSV and the report, so they are asked for
    hint = "; pass its values as a list or array (list(data), np.fromiter(data, float))" \
        if hasattr(data, "__next__") else ""
    raise UserError(f"{source}: data must be a numpy array, a list of numbers, a pandas DataFrame or Series, or an "
                    f"xarray DataArray or Dataset, got {type(data).__name__}{hint}")


def label_texts(values) -> tuple[str, ...]:
    """Row names or times (an index, a label column) as text, as a CSV file would hold them: stripped (the CSV reader
    strips its cells), dates at midnight as ISO dates (2020-01-31, not 2020-01-31 00:00:00 or numpy's
    2020-01-31T00:00:00.000000000), other times as ``2020-01-31 06:00:00``; a missing value (NaN, None, NaT) is ""
    (an empty cell)."""
    import pandas as pd

    if isinstance(values, pd.Index):
        index = values
    else:  # as given: pd.Index would infer floats from [1, 2, <NA>]
        array = np.asarray(values)
        index = pd.DatetimeIndex(array) if array.dtype.kind == "M" else pd.Index(array, dtype=object)
    missing = np.asarray(index.isna())
    if isinstance(index, pd.DatetimeIndex):
        at_midnight = bool((index[~missing] == index[~missing].normalize()).all())
        fraction = ".%f" if bool((index[~missing].microsecond != 0).any() or (index[~missing].nanosecond != 0).any()) else ""
        texts = index.strftime("%Y-%m-%d" if at_midnight else f"%Y-%m-%d %H:%M:%S{fraction}%z")
        texts = [text[:-2] + ":" + text[-2:] if index.tz is not None and not at_midnight else text for text in texts]
    else:
        texts = [str(v) for v in index]
    return tuple("" if gone else str(text).strip() for text, gone in zip(texts, missing))


def _row_names(index, every_index: bool = False) -> tuple[str, ...] | None:
    """A pandas index (a DataFrame's, a DataArray's coordinate) as the rows' names (:func:`label_texts`); None for
    the numbers 0 .. N-1 (no names: the rows are numbered from 1) and, unless ``every_index`` (a series' times,
    which its reader checks), for an index that names no row of its own (repeated, as pd.concat leaves it, or
    blank or missing)."""
    import pandas as pd

    from emvsbayes.data.records import unnamed_row

    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return None
    if index.dtype.kind in "iu" and np.array_equal(index.to_numpy(), np.arange(len(index))):
        return None
    labels = label_texts(index)
    return None if not every_index and unnamed_row(labels) is not None else labels


def _check_row_names(labels: tuple[str, ...], label: str, source: str, groups_hint: str = "") -> None:
    """The label column's values name one row each: none blank, none repeated."""
    from emvsbayes.data.records import unnamed_row

    problem = unnamed_row(labels)
    if problem is not None:
        i, j = problem
        if j is None:
            raise UserError(f"{source}: row {i + 1} of column {label!r} (label=) is empty; give every row a name, or "
                            "leave label= out to number the rows")
        raise UserError(f"{source}: rows {i + 1} and {j + 1} have the same name {labels[i]!r} in column {label!r} "
                        f"(label=); give each row a name of its own{groups_hint}")


def _first_bool(rows) -> tuple[int, object] | None:
    """(row from 1, value) of the first boolean in a list of numbers or of rows, else None."""
    for i, row in enumerate(rows, start=1):
        for value in row if isinstance(row, (list, tuple)) else (row,):
            if isinstance(value, (bool, np.bool_)):
                return i, value
    return None


def continuous_record(data, data_spec: dict, source: str):
    """(``ContinuousData`` as fitted, the raw chosen columns before z-scoring) of in-memory data."""
    from emvsbayes.data import ContinuousData
    from emvsbayes.data.csv import STANDARDIZE_TRANSFORM, check_magnitudes, standardize_columns

    if isinstance(data, ContinuousData):
        if (data_spec["columns"] is not None or data_spec["drop"] or data_spec["standardize"] or data_spec["label"]
                or data_spec.get("truth")):
            raise UserError(f"{source}: columns=, drop=, standardize=, label= and truth= apply to arrays and DataFrames; "
                            "load the data set with them instead, e.g. load_dataset(name, standardize=True)")
        return data, np.asarray(data.x, dtype=float)
    names, columns, labels, kind = columns_of(data, source)
    names = [name.strip() for name in names]
    for name in names:
        if not name:
            raise UserError(f"{source}: a column has no name; name every column (e.g. df.columns = [...])")
        if "\x00" in name:
            raise UserError(f"{source}: column name {name!r} holds a NUL character, which no results file can store; "
                            "rename it")
        if names.count(name) > 1:
            raise UserError(f"{source}: column name {name!r} appears more than once; rename one")
    by_name = dict(zip(names, columns))
    label = data_spec["label"]
    if label is not None:
        if label not in by_name:
            raise UserError(f"{source}: label={label!r} is not a column (columns: {name_listing(names)}); name the column of row names")
        labels = label_texts(by_name[label])
    truth = data_spec.get("truth")
    known = None
    if truth is not None:
        if truth not in by_name:
            raise UserError(f"{source}: truth={truth!r} is not a column of known groups (columns: {name_listing(names)})"
                            f"{_close(truth, names)}")
        known = label_texts(by_name[truth])
        if "" in known:  # NaN or None: a group "nan" of its own, where a CSV's empty cell is refused
            raise UserError(f"{source}: row {known.index('') + 1} of column {truth!r} (truth=) is empty; give every row "
                            "its known group, or remove that row")
    for option, column in (("label", label), ("truth", truth)):
        if column is not None and data_spec["columns"] is not None and column in data_spec["columns"] \
                and column not in data_spec["drop"]:
            raise UserError(f"{source}: column {column!r} is {option}=, so it cannot also be fitted; remove it from columns=")
    if label is not None:
        _check_row_names(labels, label, source, " (if the column holds groups, pass it as truth=)")
    chosen = ([n for n in names if n not in (label, truth)] if data_spec["columns"] is None
              else list(data_spec["columns"]))
    for option, wanted in (("columns", data_spec["columns"] or []), ("drop", data_spec["drop"])):
        for name in wanted:
            if name not in by_name:
                raise UserError(f"{source}: {option}= names {name!r}, which is not a column "
                                f"(columns: {name_listing(names)}){_close(name, names)}")
    if data_spec["columns"] is not None and len(set(chosen)) != len(chosen):
        raise UserError(f"{source}: columns= lists a column more than once; list each once")
    if data_spec["columns"] is not None and all(n in data_spec["drop"] for n in chosen):
        raise UserError(f"{source}: columns= and drop= both name {chosen[0]!r}, so no column is left to fit; keep each "
                        "column in one of them")
    chosen = [n for n in chosen if n not in data_spec["drop"]]
    if not chosen:
        raise UserError(f"{source}: no columns are left to fit; choose some with columns=[...]")
    for name in chosen:
        column = np.asarray(by_name[name])
        if column.dtype.kind not in "iuf":
            raise UserError(f"{source}: column {name!r} is not numeric ({_what_values(column)}); leave it out with "
                            f"drop=[{name!r}], or encode it as numbers first (e.g. df[col].map({{...}}))")
    with np.errstate(over="ignore"):  # a longdouble beyond float64 becomes inf, refused just below by row
        x = np.column_stack([np.asarray(by_name[n], dtype=np.float64) for n in chosen])
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        row, j = bad[0]
        raise UserError(f"{source}: column {chosen[j]!r} has a missing or infinite value in row {row + 1}; "
                        "drop or fill those rows first (e.g. df.dropna())")
    check_magnitudes(x, chosen, source, leave_out="leave it out with drop=[{}]")
    raw_x = x.copy()
    center = scale = None
    transforms: tuple[str, ...] = ()
    if data_spec["standardize"]:
        x, center, scale = standardize_columns(x, chosen, source)
        transforms = (STANDARDIZE_TRANSFORM,)
    if labels is None:
        labels = tuple(str(i) for i in range(1, x.shape[0] + 1))
    named = next((text for text in (*labels, *(known or ())) if "\x00" in text), None)
    if named is not None:
        raise UserError(f"{source}: the row label or known group {named!r} holds a NUL character, which no results "
                        "file can store; change it")
    record = ContinuousData(x=x, columns=tuple(chosen), labels=labels, source=kind, transforms=transforms,
                            center=center, scale=scale, truth=known, truth_column=truth)
    return record, raw_x


# --- one column: counts, a series ---------------------------------------------------------------------


def one_column(data, column: str | None, label: str | None, default_name: str, source: str, option: str,
               drop=(), every_index: bool = False):
    """(name, values, row labels or None, what it was) of in-memory data that hold one column of numbers: a 1-D
    array or list, a Series, a 1-D DataArray, or the column ``column`` of a DataFrame or Dataset (any column when
    only one is left beside ``label`` and those in ``drop``). A bare array's column is called ``default_name``;
    ``option`` is the argument that names the column, as the messages write it (``counts='...'``)."""
    names, columns, labels, kind = columns_of(data, source, every_index)
    if kind == "array":
        if len(names) != 1:
            raise UserError(f"{source}: data has {len(names)} columns; this model fits one column of numbers: pass a "
                            "1-D array (e.g. x[:, 0])")
        names = [default_name]
    elif kind in ("Series", "DataArray") and getattr(data, "ndim", 0) == 1 and not str(data.name or "").strip():
        names = [default_name]  # unnamed (or named ""): the model's own name for its column, not the rows' "x"
    names = [name.strip() for name in names]
    if "" in names:  # a spec cannot name it: to_spec's rerun would be refused
        raise UserError(f"{source}: a column has no name; name every column (e.g. df.columns = [...])")
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{source}: column name {name!r} appears more than once; rename one")
    by_name = dict(zip(names, columns))
    if label is not None and column == label:  # before the label's own checks, which would call it a repeated name
        raise UserError(f"{source}: column {column!r} is label=, so it cannot also be fitted; name another column")
    if label is not None:
        if label not in by_name:
            raise UserError(f"{source}: label={label!r} is not a column (columns: {name_listing(names)})"
                            f"{_close(label, names) or '; name the column of row names'}")
        labels = label_texts(by_name[label])
        if not every_index:  # a series' times are checked by its reader, as times
            _check_row_names(labels, label, source)
    for name in drop:
        if name not in by_name:
            raise UserError(f"{source}: drop= names {name!r}, which is not a column (columns: {name_listing(names)})"
                            f"{_close(name, names)}")
    candidates = [name for name in names if name != label and name not in drop]
    if column is None or (column not in by_name and column == default_name and len(candidates) == 1):
        if len(candidates) != 1:
            raise UserError(f"{source}: data has {len(candidates)} columns ({name_listing(candidates)}); this model fits "
                            f"one: name it with {option}")
        column = candidates[0]
    if column not in by_name:
        raise UserError(f"{source}: data has no column {column!r} (columns: {name_listing(names)})"
                        f"{_close(column, names) or f'; name the column with {option}'}")
    values = np.asarray(by_name[column])
    if values.dtype.kind == "O" and all(isinstance(v, (int, float, np.integer, np.floating))
                                        and not isinstance(v, (bool, np.bool_)) for v in values):
        values = np.asarray(values.tolist())  # numbers held as Python objects (pd.Series([1, 2], dtype=object))
    if values.dtype.kind not in "iuf":
        raise UserError(f"{source}: column {column!r} is not numeric ({_what_values(values)}); pass numbers")
    if "\x00" in column or any("\x00" in text for text in labels or ()):
        raise UserError(f"{source}: a column name or row label holds a NUL character, which no results file can store; "
                        "change it")
    return column, values, labels, kind


def count_record(data, counts: str, label: str | None, source: str):
    """A :class:`~emvsbayes.data.records.CountData` of in-memory counts (one per row), checked as the CSV reader checks
    them: whole numbers from 0 to the reader's largest."""
    from emvsbayes.data.csv import MAX_COUNT
    from emvsbayes.data.records import CountData

    if isinstance(data, CountData):
        if label is not None:
            raise UserError(f"{source}: label= applies to arrays and DataFrames; this data set names its rows already")
        return data
    column, values, labels, kind = one_column(data, counts, label, "count", source, "counts='...'")
    if values.size == 0:
        raise UserError(f"{source}: data holds no counts; give at least one")
    with np.errstate(invalid="ignore", over="ignore"):
        y = values.astype(np.float64)
        # whole numbers compared as they are: 2**53 + 1 as a float is 2**53, within the limit
        large = values > MAX_COUNT if values.dtype.kind in "iu" else y > MAX_COUNT
        problems = (("a missing or infinite value", ~np.isfinite(y), "drop or fill those rows first (e.g. df.dropna())"),
                    ("a negative count", y < 0, "counts are 0 or more: fix the value or remove that row"),
                    ("not a whole number", y != np.round(y), "a Poisson model needs counts (0, 1, 2, ...): fix the value"),
                    (f"larger than {MAX_COUNT}", large, "check that row"))
    for what, bad, fix in problems:
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{source}: row {i + 1} of column {column!r} is {_show(values[i].item())}, {what}; {fix}")
    if labels is None:
        labels = tuple(str(i) for i in range(1, y.size + 1))
    return CountData(counts=values.astype(np.int64) if values.dtype.kind in "iu" else y.astype(np.int64), labels=labels,
                     column=column, source=kind)


# --- back to CSV text (Comparison.to_spec) -----------------------------------------------------------------


def _label_header(labels: tuple[str, ...], numbered: tuple[str, ...], taken) -> str | None:
    """The label column's name when the rows have names of their own (not ``numbered``), one no other column has."""
    if labels == numbered:
        return None
    label = "label"
    while label in taken:
        label = "_" + label
    return label


def csv_text(header: list[str], rows, labels: tuple[str, ...] | None, label: str | None) -> str:
    """CSV text: ``label`` (when not None) then ``header``, one line per row; floats written by ``repr`` (the shortest
    text that reads back as the same float: the rerun fits the same bits), text and whole numbers as they are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(([label] if label else []) + list(header))
    for i, row in enumerate(rows):
        writer.writerow(([labels[i]] if label else []) + [repr(v) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def coin_csv(data) -> tuple[str, dict]:
    """(CSV text of coin counts, the ``[data]`` keys that read it back)."""
    label = _label_header(data.labels, tuple(f"set {i}" for i in range(1, data.n_sets + 1)), ("heads", "tosses"))
    rows = zip(data.heads.tolist(), data.tosses.tolist())
    return csv_text(["heads", "tosses"], rows, data.labels, label), {"heads": "heads", "tosses": "tosses", "label": label}


def continuous_csv(data, raw_x: np.ndarray) -> tuple[str, dict]:
    """(CSV text of continuous rows as given, before z-scoring, the ``[data]`` keys that read it back)."""
    truth = () if data.truth is None else (data.truth_column,)
    label = _label_header(data.labels, tuple(str(i) for i in range(1, data.n_rows + 1)), (*data.columns, *truth))
    rows = raw_x.tolist() if data.truth is None else [[*row, group] for row, group in zip(raw_x.tolist(), data.truth)]
    return (csv_text([*data.columns, *truth], rows, data.labels, label),
            {"columns": None, "drop": [], "label": label, "truth": data.truth_column})


def count_csv(data) -> tuple[str, dict]:
    """(CSV text of counts, the ``[data]`` keys that read it back)."""
    label = _label_header(data.labels, tuple(str(i) for i in range(1, data.n_rows + 1)), (data.column,))
    return (csv_text([data.column], ([c] for c in data.counts.tolist()), data.labels, label),
            {"counts": data.column, "label": label})
