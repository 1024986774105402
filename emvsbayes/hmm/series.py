"""The data record of the hidden Markov model family, a time series, and its loading with the checks a
series needs beyond a table's (every time point present, equally spaced, counts for Poisson emissions)."""

from __future__ import annotations

import datetime
import decimal
import fractions
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emvsbayes.data.csv import load_continuous_csv, read_table
from emvsbayes.errors import UserError, quote

#: Columns a bundled data set's series is read from when the spec names none: (series, time) columns.
BUNDLED_SERIES = {"earthquakes": ("count", "year")}

#: The largest count Poisson emissions take: beyond about 1e8, the rounding of log p(y | rate) (terms of
#: y log rate, 1e10 and more) exceeds the rise EM's decrease test allows, and fits end in a spurious fall.
MAX_COUNT = 10**7

#: Cells read as "no value" in a series column (an empty cell is one too).
MISSING_MARKERS = frozenset({"na", "n/a", "nan", "null", "none", "-", "?", "."})


@dataclass(frozen=True, slots=True)
class Series:
    """One observed time series, in time order.

    Attributes
    ----------
    y : np.ndarray, shape (T,), float64
        The observations (counts are whole numbers stored as floats).
    column : str
        The column the values came from.
    time : tuple of str, length T
        One label per time point (a year, a date, or ``"1"`` .. ``"T"``).
    time_column : str or None
        The column ``time`` came from.
    source : str
        A bundled data set's name, a file path or a simulation summary.
    true_states : np.ndarray (T,) int64 or None
        The hidden states, when known (simulated series).
    """

    y: np.ndarray
    column: str
    time: tuple[str, ...]
    time_column: str | None = None
    source: str = ""
    true_states: np.ndarray | None = None

    @property
    def n_time(self) -> int:
        return int(self.y.shape[0])


#: Column names that usually hold a series' time labels, not its values.
TIME_LIKE_NAMES = frozenset({"t", "time", "date", "day", "week", "month", "quarter", "year", "period", "index", "step"})


def suggest_series_columns(candidates: list[str], time: str | None) -> str:
    """The ``[data]`` lines to suggest for a table whose series column is not named: a column whose name
    does not say time (a table's first column is often its time labels, e.g. ``year,count``), and that
    time column as ``label`` when none is set."""
    if not candidates:
        return f"columns = [{quote('value')}]"
    values = [name for name in candidates if name.strip().lower() not in TIME_LIKE_NAMES]
    times = [name for name in candidates if name.strip().lower() in TIME_LIKE_NAMES]
    series = values[0] if values else candidates[-1]
    suggestion = f"columns = [{quote(series)}]"
    if time is None and values and times:
        suggestion += f" and label = {quote(times[0])} (the time column)"
    return suggestion


def series_columns(spec: dict, available: tuple[str, ...]) -> tuple[str, str | None]:
    """(series column, time column or None) for a spec's ``[data]`` table over a file with columns
    ``available``: ``columns`` (one name) and ``label``, or the bundled data set's defaults."""
    data = spec["data"]
    dataset = data.get("dataset")
    default_column, default_time = BUNDLED_SERIES.get(dataset, (None, None))
    columns = data.get("columns")
    if columns is not None and len(columns) != 1:
        raise UserError(f"[data] columns lists {len(columns)} columns; a hidden Markov model here fits one series: "
                        f"name one, e.g. columns = [{quote(columns[0])}]")
    column = columns[0] if columns else default_column
    time = data.get("label") or default_time
    if column is None:
        candidates = [name for name in available if name != time and name not in data.get("drop", [])]
        if len(candidates) != 1:
            raise UserError(f"[data] columns: a hidden Markov model fits one series and this table has "
                            f"{len(candidates)} columns ({', '.join(map(quote, candidates))}); name one, e.g. "
                            f"{suggest_series_columns(candidates, time)}")
        column = candidates[0]
    return column, time


def read_series(path: Path, spec: dict, *, encoding: str = "utf-8", source: str | None = None,
                counts: bool = False) -> Series:
    """A series from a CSV file as ``spec["data"]`` says; every problem a one-line :class:`UserError`.

    Refused: a missing value in the series (an HMM's chain runs through every time point, so a gap cannot
    be dropped as a mixture's row can), time labels that are not equally spaced or not increasing (when
    numeric) or repeated, and, for ``counts``, negative or fractional values.
    """
    data = spec["data"]
    delimiter = data.get("delimiter", "auto")
    table = read_table(path, encoding, delimiter)
    column, time = series_columns(spec, table.header)
    if time is not None and time == column:
        raise UserError(f"{table.name}: column {quote(column)} is the series ([data] columns), so it cannot also be its "
                        "times ([data] label); name the time column, or leave label out to number the time points")
    index = table.column(column, "name the series column with [data] columns = ['...']")
    for line, text in table.cells(index):
        if text == "" or text.lower() in MISSING_MARKERS:
            raise UserError(f"{table.name}: line {line}, column {quote(column)} has no value ({quote(text)}): a hidden "
                            "Markov model needs every time point of the series; fill it in, or fit the stretch "
                            "before or after the gap on its own")
    lines = [line for line, _ in table.cells(index)]
    if time is not None:
        times = tuple(text for _, text in table.cells(table.column(time, "name the time column with [data] label = '...'")))
        if "" in times:
            i = times.index("")
            raise UserError(f"{table.name}: line {lines[i]}, column {quote(time)} has no time: a hidden Markov model needs "
                            "every time point of the series, in order; fill it in")
        # before the reader's own check of row labels, which would call a repeated time a repeated name
        _check_time(table.name, times, lines, time)
    # the spread of a series' values is the family's to judge (counts beyond what Poisson emissions carry are
    # named below in those terms)
    loaded = load_continuous_csv(path, [column], encoding=encoding, label=time, delimiter=delimiter, check_spread=False)
    y = loaded.x[:, 0]
    if counts:
        _check_counts(y, column, lambda i: f"{table.name}: line {lines[i]}")
    return Series(y=np.array(y, dtype=float), column=column, time=tuple(loaded.labels), time_column=time,
                  source=source or str(path))


def _check_counts(y: np.ndarray, column: str, place) -> None:
    """Poisson emissions' values: whole numbers from 0 to MAX_COUNT; ``place(i)`` starts the message about value i
    (``"d.csv: line 7"``)."""
    problems = ((y < 0, "{:g}, a negative count", "Poisson emissions need counts 0, 1, 2, ...: fix the value"),
                (y != np.round(y), "{:g}, not a whole number", "Poisson emissions need counts 0, 1, 2, ...: fix the value"),
                (y > MAX_COUNT, f"{{:.0f}}, a count beyond {MAX_COUNT:,}: the log-likelihood of Poisson emissions that "
                 "large loses the digits EM needs", "count in larger units (thousands)"))
    for bad, what, fix in problems:
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{place(i)}, column {quote(column)} is {what.format(y[i])}; {fix}, or use "
                            "emission = \"gaussian\"")


def series_from_memory(data, spec: dict, source: str, *, counts: bool) -> Series:
    """A :class:`Series` of values in memory, checked as :func:`read_series` checks a file's: a 1-D array or list, a
    pandas Series (its index the time labels), a 1-D DataArray (its coordinate the time labels), or one column of
    a DataFrame (``[data] columns``, or the only column beside ``label``, the time column, and ``drop``)."""
    from emvsbayes.data.memory import one_column

    if isinstance(data, Series):
        return data
    data_spec = spec["data"]
    columns, time = data_spec.get("columns"), data_spec.get("label")
    if columns is not None and len(columns) != 1:
        raise UserError(f"{source}: columns= lists {len(columns)} columns; a hidden Markov model here fits one series: "
                        f"name one, e.g. columns=[{quote(columns[0])}]")
    column, values, labels, kind = one_column(data, columns[0] if columns else None, time, "y", source,
                                              "columns=['...']", drop=data_spec.get("drop") or (), every_index=True)
    y = np.asarray(values, dtype=np.float64)
    gap = np.flatnonzero(~np.isfinite(y))
    if gap.size:
        raise UserError(f"{source}: row {int(gap[0]) + 1} of column {quote(column)} has no value ({y[gap[0]]}): a hidden "
                        "Markov model needs every time point of the series; fill it in, or fit the stretch before or "
                        "after the gap on its own")
    if y.size == 0:
        raise UserError(f"{source}: the series {quote(column)} is empty; give its values in time order")
    if counts:
        _check_counts(y, column, lambda i: f"{source}: row {i + 1}")
    # the times' name: the label column, else the index's (a pandas index) or the dimension's (a DataArray)
    index_name = getattr(getattr(data, "index", None), "name", None)
    if index_name is None and type(data).__module__.startswith("xarray") and getattr(data, "ndim", 0) == 1:
        index_name = data.dims[0]
    time_name = time or (str(index_name) if index_name is not None else "time")
    if labels is not None:
        if "" in labels:
            i = labels.index("")
            raise UserError(f"{source}: row {i + 1} has no time ({'column ' + quote(time) if time else 'the index'} is "
                            "empty or missing there): a hidden Markov model needs every time point of the series; fill "
                            "it in, or fit the stretch before or after it on its own")
        _check_time(source, labels, list(range(1, y.size + 1)), time, where="row")
    from emvsbayes.data.csv import check_magnitudes

    # as read_series: the scale float arithmetic carries is checked, the spread is the family's to judge
    check_magnitudes(y[:, None], [column], source, leave_out="fit another series", spread=False)
    return Series(y=y, column=column, time=labels or tuple(str(i) for i in range(1, y.size + 1)),
                  time_column=time_name if labels is not None else None, source=kind)


def _check_time(name: str, labels: tuple[str, ...], lines: list[int], time: str | None, where: str = "line") -> None:
    """Time labels: distinct, and when they read as times (numbers, dates, months, quarters, date-times), increasing
    in equal steps (a missing year is a gap) and all of one kind (a mistyped 2020-02-30 among dates is named, not
    taken for a name that switches the checks off). Steps are compared exactly (numbers as decimals, date-times in
    microseconds), so 0.1 steps and 1e17 + 1 are what they say. ``lines`` number the labels' ``where``s (the file's
    lines, or the rows of data in memory); ``time`` is the times' column, None for an index."""
    column = f"column {quote(time)}" if time is not None else "the index"
    seen: dict[str, int] = {}
    for label, line in zip(labels, lines, strict=True):
        if label in seen:
            raise UserError(f"{name}: {where} {line}, {column} repeats the time {quote(label)} of {where} "
                            f"{seen[label]}; give each time point once, in order")
        seen[label] = line
    if len(labels) < 2:
        return
    texts = [label.strip() for label in labels]
    best = max(_TIME_KINDS, key=lambda kind: sum(kind[1](text) is not None for text in texts))
    kind, read, place = best
    positions = [read(text) for text in texts]
    unread = [i for i, position in enumerate(positions) if position is None]
    if len(unread) * 2 >= len(texts):
        return  # names: their spacing cannot be read; the order is the file's
    if unread:
        i = unread[0]
        example = texts[next(j for j in range(len(texts)) if positions[j] is not None)]
        raise UserError(f"{name}: {where} {lines[i]}, {column} is {quote(texts[i])}, which does not read as a time of "
                        f"the series' kind ({kind}, as {quote(example)}); fix it")
    if kind == "numbers":
        i = next((i for i, value in enumerate(positions) if not value.is_finite()), None)
        if i is not None:
            raise UserError(f"{name}: {where} {lines[i]}, {column} is {quote(texts[i])}, not a finite time; give each "
                            "time point its number")
    if kind == "date-times" and len({value.tzinfo is None for value in positions}) > 1:
        i = next(i for i, value in enumerate(positions) if (value.tzinfo is None) != (positions[0].tzinfo is None))
        raise UserError(f"{name}: {where} {lines[i]}, {column} is {quote(texts[i])}, and {where} {lines[0]} "
                        f"{quote(texts[0])}: the times mix date-times with and without a UTC offset; give every one its "
                        "offset, or none")
    # naive clock times of day: a change of summer time looks like a gap or a repeat
    local = kind == "date-times" and all(t.tzinfo is None for t in positions) and any(t.hour or t.minute for t in positions)
    positions, unit = (positions, place) if isinstance(place, str) else place(positions)
    clock = (" (local clock times across a change to or from summer time? give each its UTC offset, e.g. "
             "2020-03-29 03:00:00+02:00)") if local else ""
    steps = [b - a for a, b in zip(positions, positions[1:])]
    for i, step in enumerate(steps):
        if step == 0:
            raise UserError(f"{name}: {where} {lines[i + 1]}, {column} repeats the time {labels[i]} of {where} "
                            f"{lines[i]} (written {quote(texts[i + 1])}){clock}; give each time point once, in order")
    step = steps[0]
    if step < 0:
        raise UserError(f"{name}: {column} goes from {labels[0]} to {labels[1]} ({where}s {lines[0]}, "
                        f"{lines[1]}): a series must be in increasing time order; sort the rows")
    uneven = next((i for i, other in enumerate(steps) if other != step), None)
    if uneven is not None:
        i = uneven
        what = "a gap" if steps[i] > step else "out of order or uneven"
        shown = f"{float(step):g}" if not isinstance(step, int) else f"{step:,}".replace(",", "")
        raise UserError(f"{name}: {where} {lines[i + 1]}, {column} jumps from {labels[i]} to {labels[i + 1]} "
                        f"where the series steps by {shown}{unit.rstrip('s') if step == 1 else unit} ({what}){clock}: a "
                        "hidden Markov model needs equally spaced time points; fill in the missing ones, or fit each "
                        "unbroken stretch on its own")


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _read_number(text: str):
    """A number, exactly (a Decimal: 0.1 steps are equal); inf and nan read too, to be refused by name."""
    if _NUMBER.fullmatch(text) or text.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        return decimal.Decimal(text)
    return None


def _read_compact_date(text: str):
    """20200131 (a date written without separators) as its day number; None for other text."""
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])).toordinal()
    except ValueError:
        return None


def _read_month(text: str):
    """2020-01 (pandas' monthly periods) or 2020/01 as a month number; 2020-13 is no month."""
    match = re.fullmatch(r"(-?\d{4})[-/](\d{2})", text)
    return int(match[1]) * 12 + int(match[2]) - 1 if match and 1 <= int(match[2]) <= 12 else None


def _read_quarter(text: str):
    """2020Q1 (pandas' quarterly periods) as a quarter number."""
    match = re.fullmatch(r"(-?\d{4})[Qq]([1-4])", text)
    return int(match[1]) * 4 + int(match[2]) - 1 if match else None


def _read_date(text: str):
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _read_date_time(text: str):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _date_positions(dates):
    """Months where every date falls on the same day of its month or every one on its month's last day (monthly or
    yearly series: their days apart vary; pandas' "ME" dates are month ends), else days."""
    month_ends = all((date + datetime.timedelta(days=1)).month != date.month for date in dates)
    if len({date.day for date in dates}) == 1 or month_ends:
        return [date.year * 12 + date.month for date in dates], " months"
    return [date.toordinal() for date in dates], " days"


def _time_positions(times):
    """Date-times (with or without a UTC offset: all or none, checked before) as exact positions in hours, minutes or
    seconds, the largest unit every step is a whole number of (a DST change in an offset series is no gap: the
    positions are absolute)."""
    micro = [(time - times[0]) // datetime.timedelta(microseconds=1) for time in times]
    for size, unit in ((3_600_000_000, " hours"), (60_000_000, " minutes"), (1_000_000, " seconds")):
        if all(m % size == 0 for m in micro):
            return [m // size for m in micro], unit
    return [fractions.Fraction(m, 1_000_000) for m in micro], " seconds"


#: The kinds a series' time labels are read as: (name, reader of one label -> value or None, the values' unit, or a
#: function of them all -> (positions, unit)). The kind that reads the most labels is theirs; compact dates before
#: numbers (20200131 is a date).
_TIME_KINDS = (
    ("dates written as 20200131", _read_compact_date, " days"),
    ("numbers", _read_number, ""),
    ("months such as 2020-01", _read_month, " months"),
    ("quarters such as 2020Q1", _read_quarter, " quarters"),
    ("dates", _read_date, _date_positions),
    ("date-times", _read_date_time, _time_positions),
)


def check_length(series: Series, n_components: int, where: str = "[model] components") -> None:
    """K must not exceed the number of time points (nor may the series be a single point)."""
    if series.n_time < 2:
        raise UserError(f"the series {quote(series.column)} has {series.n_time} time point; a hidden Markov model "
                        "needs a series of at least 2")
    if n_components > series.n_time:
        raise UserError(f"{where} = {n_components} is more than the {series.n_time} time points of the series; "
                        f"use at most {series.n_time} states (far fewer in practice)")


def finite_positive(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def series_csv(series: Series) -> tuple[str, dict]:
    """(CSV text of a series, its time labels in their own column when it has any, and the ``[data]`` keys that read
    it back as the same numbers)."""
    from emvsbayes.data.memory import csv_text

    numbered = series.time == tuple(str(i) for i in range(1, series.n_time + 1))
    time = None if numbered else (series.time_column or "time")
    if time == series.column:
        time = "_" + time
    # whole values as integers (counts read back as counts), others by repr (the same float)
    values = [[int(v) if v.is_integer() and abs(v) < 2**53 else v] for v in series.y.tolist()]
    return csv_text([series.column], values, series.time, time), {"columns": [series.column], "drop": [], "label": time}
