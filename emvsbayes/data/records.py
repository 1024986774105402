"""The data records every model family reads: coin counts, continuous observations and event counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unnamed_row(labels) -> tuple[int, int | None] | None:
    """Where row labels fail to name their rows: ``(i, None)`` for the first blank one, ``(i, j)`` when row ``j``
    repeats row ``i``'s label (positions from 0); None when every row has a name of its own. A label names its row
    in the membership tables and in the CSV a rerun reads, so a blank or repeated one names nothing."""
    first: dict[str, int] = {}
    for j, text in enumerate(labels):
        if text.strip() == "":
            return j, None
        if text in first:
            return first[text], j
        first[text] = j
    return None


@dataclass(frozen=True, slots=True)
class CoinData:
    """Sets of coin tosses, each set made with one (possibly unknown) coin.

    Attributes
    ----------
    heads : np.ndarray, shape (N,), int64
        Number of heads in each set.
    tosses : np.ndarray, shape (N,), int64
        Number of tosses in each set (at least 1, at least ``heads``).
    labels : tuple of str, length N
        One name per set, e.g. ``"set 1"``.
    true_coin : np.ndarray, shape (N,), int64, or None
        Index of the coin that made each set (0 = first coin) when it is known, else None.
    source : str
        Where the data came from: a bundled data set's name, a file path or a simulation summary.
    """

    heads: np.ndarray
    tosses: np.ndarray
    labels: tuple[str, ...]
    true_coin: np.ndarray | None = None
    source: str = ""

    @property
    def n_sets(self) -> int:
        """Number of sets N."""
        return int(self.heads.shape[0])


@dataclass(frozen=True, slots=True)
class ContinuousData:
    """Rows of continuous observations, always as a 2-D array.

    Attributes
    ----------
    x : np.ndarray, shape (N, D), float64
        The observations, after the preprocessing listed in ``transforms``.
    columns : tuple of str, length D
        Column names.
    labels : tuple of str, length N
        Row names (e.g. hero names, or ``"1"`` .. ``"N"``).
    true_component : np.ndarray, shape (N,), int64, or None
        Index of the mixture component that made each row when it is known, else None.
    source : str
        Where the data came from: a bundled data set's name, a file path or a simulation summary.
    transforms : tuple of str
        Human-readable record of the preprocessing applied, in order,
        e.g. ``("最大攻速: percent -> fraction", "z-score all columns (population sd)")``.
    center : np.ndarray, shape (D,), or None
        Column means removed by z-scoring, or None when the data were not standardized.
    scale : np.ndarray, shape (D,), or None
        Column standard deviations (ddof=0) divided out by z-scoring, or None.
        ``x * scale + center`` gives the data on their original scale.
    truth : tuple of str, length N, or None
        Known groups of the rows, read from the column ``truth_column`` (``[data] truth``): not fitted,
        compared with every clustering. None when no such column was named.
    truth_column : str or None
        The column ``truth`` came from.
    """

    x: np.ndarray
    columns: tuple[str, ...]
    labels: tuple[str, ...]
    true_component: np.ndarray | None = None
    source: str = ""
    transforms: tuple[str, ...] = ()
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    truth: tuple[str, ...] | None = None
    truth_column: str | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows N."""
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        """Number of columns D."""
        return int(self.x.shape[1])


@dataclass(frozen=True, slots=True)
class CountData:
    """One count per row (events per year, per site, ...), for Poisson models.

    Attributes
    ----------
    counts : np.ndarray, shape (N,), int64
        The counts, each a whole number >= 0.
    labels : tuple of str, length N
        One name per row (e.g. the year), or ``"1"`` .. ``"N"``.
    column : str
        The column the counts were read from (named in tables and error messages).
    source : str
        Where the data came from: a bundled data set's name, a file path or a simulation summary.
    true_component : np.ndarray, shape (N,), int64, or None
        Index of the mixture component that made each row when it is known (simulated data), else None.
    """

    counts: np.ndarray
    labels: tuple[str, ...]
    column: str = "count"
    source: str = ""
    true_component: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows N."""
        return int(self.counts.shape[0])
