"""The data sets shipped with emvsbayes, read through the same CSV loaders as a user's files.

Metadata (description, size, citation, where the numbers were copied from) live in
``files/datasets.toml``; ``CITATIONS.md`` has the references for reading.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emvsbayes.data.csv import load_coins_csv, load_continuous_csv, load_counts_csv, read_table
from emvsbayes.data.records import CoinData, ContinuousData, CountData
from emvsbayes.errors import UserError

__all__ = [
    "HEROES_LESSON_OPTIONS",
    "DatasetInfo",
    "coin_sequences",
    "dataset_info",
    "list_datasets",
    "load_dataset",
]

# The EM lesson's preprocessing of the heroes file (EM聚类（下）): 12 of the attributes, the attack
# range as 0/1, the attack speed as a fraction, then z-scores. Kept as load_continuous_csv options so
# a user's own file like it is handled by exactly the same code.
HEROES_LESSON_OPTIONS: Mapping[str, Any] = {
    "label": "英雄",
    "columns": (
        "最大生命", "初始生命", "最大法力", "最高物攻", "初始物攻", "最大物防", "初始物防",
        "最大每5秒回血", "最大每5秒回蓝", "初始每5秒回蓝", "最大攻速", "攻击范围",
    ),
    "percent": ("最大攻速",),
    "categories": {"攻击范围": {"远程": 1, "近战": 0}},
    "standardize": True,
}

# Options a bundled continuous data set accepts; the encoding is fixed by the bundled file.
_CONTINUOUS_OPTIONS = ("columns", "label", "percent", "categories", "standardize", "drop")
_DEFAULT_OPTIONS: Mapping[str, Mapping[str, Any]] = {"heroes": HEROES_LESSON_OPTIONS}

# Bundled coin files: the column naming each set, how the file writes the known coin, and which
# files keep the toss sequences.
_COIN_LABEL_COLUMN = {"coins_do_batzoglou": "set", "coins_lecture": "experiment"}
_TRUE_COIN_CODES = {"coins_do_batzoglou": {"A": 0, "B": 1}}
_SEQUENCE_COLUMN = {"coins_do_batzoglou": "sequence"}
# Bundled count files: the column naming each row.
_COUNT_LABEL_COLUMN = {"earthquakes": "year"}


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What a bundled data set is and where it comes from.

    Attributes
    ----------
    name : str
        The name to pass to :func:`load_dataset`.
    kind : str
        ``"coins"`` (loads as CoinData), ``"continuous"`` (loads as ContinuousData) or ``"counts"``
        (loads as CountData).
    rows : int
        Number of rows N as loaded by default.
    columns : tuple of str
        Columns as loaded by default (for coins: ``("heads", "tosses")``).
    description : str
        What the numbers are.
    citation : str
        Full reference of the original source.
    source : str
        Where the bundled numbers were copied from.
    file : str
        The CSV file inside the package.
    encoding : str
        Text encoding of that file.
    """

    name: str
    kind: str
    rows: int
    columns: tuple[str, ...]
    description: str
    citation: str
    source: str
    file: str
    encoding: str


@functools.cache
def _catalogue() -> dict[str, DatasetInfo]:
    text = importlib.resources.files("emvsbayes.data").joinpath("files", "datasets.toml").read_text("utf-8")
    return {
        name: DatasetInfo(
            name=name,
            kind=entry["kind"],
            rows=entry["rows"],
            columns=tuple(entry["columns"]),
            description=entry["description"],
            citation=entry["citation"],
            source=entry["source"],
            file=entry["file"],
            encoding=entry["encoding"],
        )
        for name, entry in tomllib.loads(text).items()
    }


def list_datasets() -> list[DatasetInfo]:
    """Every bundled data set, in the order of ``datasets.toml``."""
    return list(_catalogue().values())


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of the bundled data set `name`; a UserError names the known ones when it is unknown."""
    catalogue = _catalogue()
    if name in catalogue:
        return catalogue[name]
    close = difflib.get_close_matches(name, catalogue, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"no bundled data set is called {name!r}; {hint}the bundled ones are: {', '.join(catalogue)}")


def _with_file(info: DatasetInfo, read):
    """Call ``read(path)`` with a real file-system path to the bundled CSV."""
    resource = importlib.resources.files("emvsbayes.data").joinpath("files", info.file)
    with importlib.resources.as_file(resource) as path:
        return read(path)


def load_dataset(name: str, **options: Any) -> CoinData | ContinuousData | CountData:
    """Load a bundled data set.

    Parameters
    ----------
    name : str
        One of the names from :func:`list_datasets`.
    **options
        For continuous data sets, options of :func:`load_continuous_csv` (``columns``, ``label``,
        ``percent``, ``categories``, ``standardize``, ``drop``) that replace the data set's defaults;
        ``heroes`` defaults to the EM lesson's preprocessing (:data:`HEROES_LESSON_OPTIONS`).
        Coin data sets take no options; a count data set is read whole and takes only its own column and
        label (``columns=["count"]``, ``label="year"``), as a spec names them.

    Returns
    -------
    CoinData, ContinuousData or CountData
        With ``source`` set to `name`. ``coins_do_batzoglou`` has ``true_coin`` (A -> 0, B -> 1).
    """
    info = dataset_info(name)
    if info.kind == "coins":
        if options:
            raise UserError(f"bundled data set {name!r} takes no options; remove {', '.join(sorted(options))}")
        return _load_coins(info)
    if info.kind == "counts":
        # A count data set is read whole; a spec names its column and label all the same (the HMM's [data]
        # columns = ["count"], label = "year"), so those values are the data set's own and pass.
        own = {"columns": [info.columns[0]], "counts": info.columns[0], "label": _COUNT_LABEL_COLUMN.get(name)}
        other = sorted(key for key, value in options.items() if key not in own or value != own[key])
        if other:
            described = f"column {info.columns[0]!r}" + (f", its rows named by {own['label']!r}" if own["label"] else "")
            raise UserError(f"bundled data set {name!r} is read whole ({described}); remove {', '.join(other)}")
        data = _with_file(info, lambda path: load_counts_csv(path, counts=info.columns[0],
                                                             label=_COUNT_LABEL_COLUMN.get(name), encoding=info.encoding))
        return dataclasses.replace(data, source=name)
    unknown = sorted(set(options) - set(_CONTINUOUS_OPTIONS))
    if unknown:
        raise UserError(
            f"bundled data set {name!r} has no option {unknown[0]!r}; its options are: {', '.join(_CONTINUOUS_OPTIONS)}"
        )
    merged = _merge_options(_DEFAULT_OPTIONS.get(name, {}), options)
    data = _with_file(info, lambda path: load_continuous_csv(path, encoding=info.encoding, **merged))
    return dataclasses.replace(data, source=name)


def _merge_options(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` over `defaults`, keeping default percent/categories only for columns still read.

    Without this, ``load_dataset("heroes", columns=["最大生命"])`` would fail because the default
    ``categories`` names 攻击范围, which is no longer read.
    """
    merged = {**defaults, **options}
    columns = merged.get("columns")
    if columns is None:
        return merged
    still_read = set(columns) - set(merged.get("drop", ()))
    if "percent" in defaults and "percent" not in options:
        merged["percent"] = tuple(column for column in defaults["percent"] if column in still_read)
    if "categories" in defaults and "categories" not in options:
        merged["categories"] = {
            column: codes for column, codes in defaults["categories"].items() if column in still_read
        }
    return merged


def _load_coins(info: DatasetInfo) -> CoinData:
    label_column = _COIN_LABEL_COLUMN[info.name]
    data = _with_file(info, lambda path: load_coins_csv(path, label=label_column, encoding=info.encoding))
    labels = tuple(f"{label_column} {value}" for value in data.labels)
    true_coin = None
    codes = _TRUE_COIN_CODES.get(info.name)
    if codes is not None:
        table = _with_file(info, lambda path: read_table(path, info.encoding))
        column = table.header.index("true_coin")
        true_coin = np.asarray([codes[text] for _, text in table.cells(column)], dtype=np.int64)
    return dataclasses.replace(data, labels=labels, true_coin=true_coin, source=info.name)


def coin_sequences(name: str) -> tuple[str, ...]:
    """The toss sequences (``"HTTH..."``, one per set) of a bundled coin data set that has them.

    Parameters
    ----------
    name : str
        A bundled coin data set with a ``sequence`` column (``coins_do_batzoglou``).

    Returns
    -------
    tuple of str, length N
        One string of ``H`` and ``T`` per set, in the order of :func:`load_dataset`'s rows.
    """
    info = dataset_info(name)
    if name not in _SEQUENCE_COLUMN:
        raise UserError(f"bundled data set {name!r} has no toss sequences; these do: {', '.join(_SEQUENCE_COLUMN)}")
    table = _with_file(info, lambda path: read_table(path, info.encoding))
    column = table.header.index(_SEQUENCE_COLUMN[name])
    return tuple(text for _, text in table.cells(column))
