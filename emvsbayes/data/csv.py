"""Read users' CSV files into :class:`CoinData`, :class:`ContinuousData` and :class:`CountData`.

Real files come with other encodings, percent strings, category words, blank cells and stray spaces
in the header. Every such problem becomes a one-line :class:`~emvsbayes.errors.UserError` that names
the file, the line (the header is line 1, as an editor shows it), the column and the fix, using the
spec keys (``data.heads``, ``data.encoding``, ...) that set the matching argument here.
"""

from __future__ import annotations

import codecs
import csv
import decimal
import difflib
import io
import json
import math
import numbers
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emvsbayes.data.records import CoinData, ContinuousData, CountData, unnamed_row
from emvsbayes.errors import UserError, name_listing, quote
from emvsbayes.limits import check_csv_size
from emvsbayes.paths import input_kind, packed_format
from emvsbayes.spec import MAX_MAGNITUDE, MIN_MAGNITUDE

__all__ = ["load_coins_csv", "load_continuous_csv", "load_counts_csv"]


@dataclass(frozen=True, slots=True)
class Table:
    """A CSV file as text cells, before any column is interpreted.

    Attributes
    ----------
    name : str
        The file's name, used to start error messages.
    header : tuple of str, length C
        Column names with surrounding whitespace stripped.
    rows : tuple of tuple of str, length N
        Data cells, each row of length C.
    line_numbers : tuple of int, length N
        The line in the file where each row starts (the header is line 1).
    """

    name: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    line_numbers: tuple[int, ...]
    encoding_hint: str | None = None

    def column(self, name: str, fix: str) -> int:
        """Index of column `name`; `fix` completes the error message when it is missing."""
        if name in self.header:
            return self.header.index(name)
        available = name_listing(self.header)
        close = difflib.get_close_matches(name, self.header, n=1)
        suggestion = f"did you mean {quote(close[0])}? If not, {fix}" if close else fix
        separators = [c for c in DELIMITERS[1:] if len(self.header) == 1 and c in self.header[0]]
        if self.encoding_hint:
            suggestion = self.encoding_hint
        elif _comment_header_hint(self):
            suggestion = _comment_header_hint(self)
        elif separators:
            suggestion = f"the header looks separated by {separators[0]!r}: set data.delimiter = {separators[0]!r}"
        raise UserError(
            f"{self.name}: column {quote(name)} is missing (columns are: {available}); {suggestion}"
        )

    def cells(self, column: int) -> Iterable[tuple[int, str]]:
        """(line number, stripped cell text) down one column."""
        for line, row in zip(self.line_numbers, self.rows, strict=True):
            yield line, row[column].strip()


def read_table(path: str | Path, encoding: str = "utf-8", delimiter: str = "auto") -> Table:
    """Read a CSV file into a :class:`Table`, turning every reading problem into a UserError.

    Parameters
    ----------
    path : str or Path
        The CSV file; its first non-blank line is the header.
    encoding : str
        Text encoding of the file, e.g. ``"utf-8"`` or ``"gb18030"``.
    delimiter : str
        The separator between cells, or ``"auto"``: a comma, unless the header is one column with a
        comma and splits on ``;``, a tab or ``|`` (European spreadsheets save with ``;``).

    Returns
    -------
    Table
    """
    path = Path(path)
    name = path.name
    try:
        if not isinstance(encoding, str):
            raise LookupError(encoding)
        # Only text encodings: 'base64', 'rot13', 'zlib' and the like are codecs but not text encodings.
        if not getattr(codecs.lookup(encoding), "_is_text_encoding", True):
            raise LookupError(encoding)
        # Nor Python's escape codecs ('unicode_escape' reads backslashes as escapes, and warns on others).
        if "escape" in codecs.lookup(encoding).name:
            raise LookupError(encoding)
    except (LookupError, ValueError):  # ValueError: a name with a NUL character
        raise UserError(
            f"{name}: unknown encoding {quote(encoding)}; give a Python codec name, e.g. 'utf-8' or 'gb18030'"
        ) from None
    kind = input_kind(path)
    if kind == "missing":
        # A spec's path is not a shell's: "~/d.csv" is a folder named "~" beside the spec.
        tilde = "; '~' is not your home folder in a spec: write the full path" if "~" in Path(path).parts else ""
        raise UserError(f"data file {str(path)!r} does not exist; check the path{tilde}")
    if kind is not None:
        raise UserError(f"data file {str(path)!r} is {kind}, not a CSV file; give the path of a CSV file")
    try:
        check_csv_size(path, path.stat().st_size)
    except (OSError, ValueError):
        pass  # reading it says what is wrong (ValueError: a NUL character in the path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"data file {str(path)!r} does not exist; check the path") from None
    except IsADirectoryError:
        raise UserError(f"data file {str(path)!r} is a directory; give the path of a CSV file") from None
    except OSError as error:
        raise UserError(f"data file {str(path)!r} cannot be read ({error.strerror})") from None
    except ValueError:  # a NUL character in the path
        raise UserError(f"data file {str(path)!r} is not a valid path; check the file name") from None
    packed = packed_format(raw)
    if packed:
        raise UserError(f"{name} is {packed}, not CSV text; save or extract the table as a plain .csv file and give that")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        # The codec's own view of the bytes (idna and punycode decode a copy): fall back to no byte.
        where = error.object[error.start:error.start + 1] if isinstance(error.object, bytes) else b""
        byte = f"byte 0x{where[0]:02x} at offset {error.start}" if where else f"at offset {error.start}"
        hint = _encoding_hint(raw, encoding, "") or "give its encoding, e.g. data.encoding = 'gb18030'"
        raise UserError(f"{name} is not valid {encoding} ({byte}); {hint}") from None
    except UnicodeError as error:  # idna's label checks and the like
        raise UserError(
            f"{name} cannot be read as {encoding} ({' '.join(str(error).split())}); "
            "give its encoding, e.g. data.encoding = 'utf-8'"
        ) from None
    # Spreadsheet programs often start UTF-8 files with a byte-order mark, which would otherwise
    # become part of the first column's name.
    text = text.removeprefix("\ufeff")
    document = _document_kind(text)
    if document is not None:
        raise UserError(f"{name} is {document}, not CSV data; [data] file names the CSV file of the data")

    hint = _encoding_hint(raw, encoding, text)
    if "\0" in text and hint is None:  # (UTF-16 text read as UTF-8 is full of NULs: the hint names its encoding)
        # Python's csv reader cuts a cell at a NUL ("a\0,b" read as a column named "a"); no CSV text holds one.
        line = text.count("\n", 0, text.index("\0")) + 1
        raise UserError(f"{name}: line {line} holds a NUL character (\\0), which CSV text never holds; remove it "
                        "(or, if the file is a spreadsheet's or another program's own format, export it as CSV)")
    try:
        header, header_line, rows, line_numbers = _parse(text, name, delimiter)
    except UserError as error:
        if hint is None:
            raise
        problem = str(error).split(";")[0].removeprefix(f"{name}: ").removeprefix(f"{name} ")
        raise UserError(f"{name} does not look like {encoding} text ({problem}); {hint}") from None
    duplicates = sorted({column for column in header if header.count(column) > 1})
    if duplicates:
        raise UserError(f"{name}: column name {quote(duplicates[0])} appears more than once in the header; rename one")
    return Table(name, header, tuple(rows), tuple(line_numbers), hint)


#: Separators tried, in order, when ``delimiter = "auto"`` and a comma leaves the header one column.
DELIMITERS = (",", ";", "\t", "|")


def _parse(text: str, name: str, delimiter: str):
    """(header, header line, rows, line numbers) of CSV text; ``delimiter="auto"`` takes the first of
    :data:`DELIMITERS` that splits the header into more than one column and every row alike."""
    # Excel's "sep=;" first line names the separator of the rest of the file.
    declared = re.match(r"sep=(.)\r?\n", text)
    if declared and declared.group(1) not in "\"\r\n":
        if delimiter == "auto":
            delimiter = declared.group(1)
        text = "\n" + text[declared.end():]  # a blank line keeps the line numbers the file's
    if delimiter != "auto":
        return _parse_with(text, name, delimiter)
    first = None
    head = text[:65536]
    for candidate in DELIMITERS:
        if candidate != "," and candidate not in head:
            continue
        try:
            parsed = _parse_with(text, name, candidate)
        except UserError as error:
            first = first or error
            continue
        if candidate == "," and len(parsed[0]) == 1:
            first = first or parsed
            continue
        if len(parsed[0]) > 1:
            return parsed
    if isinstance(first, UserError):
        raise first
    return first


def _parse_with(text: str, name: str, delimiter: str):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: tuple[str, ...] | None = None
    header_line = 0
    rows: list[tuple[str, ...]] = []
    line_numbers: list[int] = []
    unnamed_line = 0  # a line of separators and blanks above the header: a header whose names were left empty?
    try:
        line_before = 0
        for cells in reader:
            first_line, line_before = line_before + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                if header is None and len(cells) > 1 and not unnamed_line:
                    unnamed_line = first_line
                continue  # blank lines (often at the end of a file) carry no data
            if header is None:
                header = tuple(cell.strip() for cell in cells)
                header_line = first_line
                if unnamed_line and all(_is_float(cell) for cell in header):
                    raise UserError(f"{name}: line {unnamed_line} has {len(cells)} columns with empty names, so line "
                                    f"{header_line} ({', '.join(header[:3])}{', ...' if len(header) > 3 else ''}), "
                                    "numbers, would be read as the header; name the columns on the first line")
                continue
            if len(cells) != len(header) and header[0].startswith("#") and header[0] != "#":  # "#": a row-number column
                raise UserError(f"{name}: line {header_line} starts with '#', a comment that CSV readers take as the "
                                f"header (line {first_line} does not fit it); remove the comment lines above the header")
            if len(cells) != len(header):
                raise UserError(
                    f"{name}: line {first_line} has {len(cells)} fields but the header has "
                    f"{len(header)}; check that line for a missing value or an unquoted "
                    f"{'comma' if delimiter == ',' else repr(delimiter)}"
                )
            rows.append(tuple(cells))
            line_numbers.append(first_line)
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            # a cell of 131,072 characters is no number or name: a quote never closed, or some other file
            raise UserError(f"{name}: line {reader.line_num} has a cell "
                            f"longer than {csv.field_size_limit():,} characters; check that line (a quote that is "
                            "never closed makes the rest of the file one cell)") from None
        raise UserError(f"{name}: line {reader.line_num} is not valid CSV ({error}); fix the quoting") from None

    if header is None:
        raise UserError(f"{name} is empty; it needs a header line and at least one row of data")
    if "" in header:
        position = header.index("") + 1
        if position == len(header) and rows and all(not row[-1].strip() for row in rows):
            # a spreadsheet's export with a separator at the end of every line: an empty last column
            raise UserError(f"{name}: every line ends with {delimiter!r}, which makes an empty last column with no name; "
                            f"remove the {delimiter!r} at the end of each line")
        raise UserError(f"{name}: column {position} of the header (line {header_line}) has no name; name every column")
    if not rows:
        raise UserError(f"{name} has a header but no rows of data; add the data below line {header_line}")
    return header, header_line, rows, line_numbers




#: A TOML table header, the first line of most specs.
_TOML_TABLE = re.compile(r'\[[\w.\- "]+\]')


def _document_kind(text: str) -> str | None:
    """What a text file given as data is when it is a document other than a table: a TOML spec (a spec given as
    its own data file read as a header of "[data]"), a JSON document or an HTML page (a report); else None."""
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    if first.lower().startswith(("<!doctype html", "<html")):
        return "an HTML page"
    if first.startswith("{") or (first.startswith("[") and first.rstrip(",").endswith(("{", "[")) or first == "["):
        return "a JSON document"
    if (first.startswith("[") and _TOML_TABLE.fullmatch(first)) or "=" in first:
        try:  # the whole text: a one-column CSV headed "[mm]", or a header "a=1,b", does not read as TOML
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return None
        return "a TOML file (a spec?)" if parsed else None
    return None


def _encoding_hint(raw: bytes, encoding: str, text: str) -> str | None:
    """What to set when the bytes look like another encoding than the one given, else None."""
    given = codecs.lookup(encoding).name
    if given != "utf-8":
        try:
            as_utf8 = raw.decode("utf-8")
        except UnicodeDecodeError:
            as_utf8 = None
        if as_utf8 is not None and as_utf8 != text:
            return "the file reads as UTF-8, so the encoding looks wrong: set data.encoding = 'utf-8'"
    if not given.startswith(("utf-16", "utf-32")):
        if raw[:4] in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):  # (UTF-32's little-endian mark starts as UTF-16's)
            return "it starts with a UTF-32 byte-order mark: set data.encoding = 'utf-32'"
        if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return "it starts with a UTF-16 byte-order mark: set data.encoding = 'utf-16'"
        head = raw[:4096]
        # UTF-16 text of Latin letters and digits is half NUL bytes; one stray NUL is no encoding
        if head.count(0) >= max(len(head) // 4, 1):
            return "it holds NUL bytes, as UTF-16 text does: set data.encoding = 'utf-16' (or 'utf-16-le')"
    return None


def _not_a_number_hint(text: str, column: str) -> str:
    """The likeliest fix for a cell that is not a number."""
    if text.endswith("%") and _is_float(text[:-1]):
        return f"it looks like a percent: convert the column with data.percent = [{quote(column)}]"
    if re.fullmatch(r"[+-]?\d+,\d+", text, flags=re.ASCII) and not re.fullmatch(r"[+-]?\d{1,3},\d{3}", text):
        return f"it looks like a decimal comma: write {text.replace(',', '.')!r} with a point in the file"
    if re.fullmatch(r"[+-]?\d{1,3}(?:\.\d{3})+,\d+", text, flags=re.ASCII):
        # points between thousands and a comma before the decimals, as European spreadsheets write 1234.5
        plain = text.replace(".", "").replace(",", ".")
        return f"it looks like {plain} written with points between thousands and a decimal comma: write {plain!r} in the file"
    if _is_float(text.replace(",", "")):
        return "remove the thousands separators from the file"
    if re.fullmatch(r"[+-]?(?:\d+\.?\d*|\.\d+)[dD][+-]?\d+", text, flags=re.ASCII):
        return f"it has a Fortran exponent: write {re.sub('[dD]', 'e', text)!r} with an e in the file"
    if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", text):
        return f"it is a hexadecimal number: write it in decimal ({int(text, 16)}) in the file"
    if "_" in text and _is_float(text.replace("_", "")):
        return f"write numbers without '_' (as {text.replace('_', '')!r})"
    if "\u2212" in text and _is_float(text.replace("\u2212", "-")):
        return f"it has a Unicode minus sign (U+2212): write {text.replace(chr(0x2212), '-')!r} with '-' in the file"
    if any(c.isdigit() and not c.isascii() for c in text):
        return "write numbers with the digits 0-9"
    # Every way out names the spec key that takes it: a user with a text column in an otherwise
    # numeric file should not have to read the source to learn which key exists.
    quoted = json.dumps(column if len(column) <= 60 else column[:59] + "…", ensure_ascii=False)
    value = json.dumps(text if len(text) <= 60 else text[:59] + "…", ensure_ascii=False)
    return (
        f"if it names known groups, compare the clusters with them: [data] truth = {quoted}; if it is a category, "
        f"map its values to numbers: [data] categories = {{{quoted} = {{{value} = 0, ...}}}}; otherwise leave it out: "
        f"[data] drop = [{quoted}] (or choose the numeric columns: [data] columns = [...])"
    )


#: A decimal number as a spreadsheet writes it: ASCII digits, an optional point and exponent. Python's
#: float() and int() also take "1_0" (as 10), other scripts' digits and spaces inside; a CSV cell is none.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", flags=re.ASCII)
#: Words float() reads as non-finite numbers: refused as "not a finite number", not "not a number".
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", flags=re.IGNORECASE)


def _unsplit_header_hint(table: Table) -> str | None:
    """When the whole header stayed one column that another separator would split (a data.delimiter that
    is not the file's): name that separator."""
    if len(table.header) != 1:
        return None
    found = [c for c in DELIMITERS if c in table.header[0]]
    if not found:
        return None
    return (f"the header {quote(table.header[0])} was read as one column: the file looks separated by {found[0]!r}, "
            f"so set data.delimiter = {found[0]!r} (or \"auto\")")


def _comment_header_hint(table: Table) -> str | None:
    """A '#' comment above the header (as R and numpy write): CSV has no comments, so it was read as the header."""
    if len(table.header) == 1 and table.header[0].startswith("#"):  # one cell: no column of a real header
        return ("the file's first line starts with '#', a comment that CSV readers take as the header: remove the "
                "comment lines above the header")
    return None


def _repeated_header_hint(table: Table, line: int) -> str | None:
    """A row that repeats the header (files concatenated, a spreadsheet's export pasted twice)."""
    row = table.rows[table.line_numbers.index(line)] if line in table.line_numbers else ()
    if tuple(cell.strip() for cell in row) == table.header:
        return f"line {line} repeats the header row (two files joined?): remove that line"
    return None


def _is_float(text: str) -> bool:
    return _DECIMAL.fullmatch(text) is not None


def _parse_number(table: Table, line: int, column: str, text: str) -> float:
    """A finite float from one cell, or a UserError naming the line, the column and the fix."""
    if text == "":
        raise UserError(f"{table.name}: line {line}, column {quote(column)} is empty; fill it in or remove that row")
    value = float(text) if _is_float(text) or _NON_FINITE.fullmatch(text) else None
    if value is None:
        # the file's shape first (a comment read as the header, the wrong separator, a repeated header), then the cell's
        hint = (_comment_header_hint(table) or _unsplit_header_hint(table) or _repeated_header_hint(table, line)
                or _not_a_number_hint(text, column))
        raise UserError(f"{table.name}: line {line}, column {quote(column)} is {quote(text)}, not a number; {hint}")
    if not math.isfinite(value):
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} is {quote(text)}, not a finite number; "
            "fill in the value or remove that row"
        )
    return value


def _parse_percent(table: Table, line: int, column: str, text: str) -> float:
    """A fraction from a percent string such as ``28.00%`` (-> 0.28)."""
    if text == "":
        raise UserError(f"{table.name}: line {line}, column {quote(column)} is empty; fill it in or remove that row")
    if not text.endswith("%"):
        # A bare number in a percent column is ambiguous (28 or 0.28?), so it is refused.
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} is {quote(text)} without a '%' sign, but the column "
            f"is listed in data.percent; write it as a percent like '28%' or remove {quote(column)} from data.percent"
        )
    return _parse_number(table, line, column, text[:-1].strip()) / 100.0


def _parse_category(table: Table, line: int, column: str, text: str, codes: Mapping[str, float]) -> float:
    if text in codes:
        return float(codes[text])
    known = name_listing(codes)
    raise UserError(
        f"{table.name}: line {line}, column {quote(column)} is {quote(text)}, which data.categories[{quote(column)}] "
        f"does not map (it maps: {known}); add {quote(text)} to that mapping"
    )


#: The largest count a coin file may hold (exact as a float, far beyond any real experiment).
MAX_COUNT = 2**53


def _parse_integer(table: Table, line: int, column: str, text: str, role: str) -> int:
    if text == "":
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} ({role}) is empty; fill it in or remove that row"
        )
    # Read exactly (Decimal, not float: 9007199254740993 would round to 2**53 and pass as another
    # number); "10.0" and "1e3" from a spreadsheet are whole numbers, "9.5", "nan", "1_0" and words not.
    value = decimal.Decimal(text) if _is_float(text) else None
    if value is None or value != value.to_integral_value():
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} ({role}) is {quote(text)}, not a whole number; "
            f"{role} must be counts"
        )
    if abs(value) > MAX_COUNT:
        # Counts are held as int64 and used in floating point: beyond 2**53 they are no longer exact.
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} ({role}) is {quote(text)}, larger than {MAX_COUNT}; "
            "check that line"
        )
    return int(value)


def load_coins_csv(
    path: str | Path,
    heads: str = "heads",
    tosses: str = "tosses",
    label: str | None = None,
    encoding: str = "utf-8",
    delimiter: str = "auto",
) -> CoinData:
    """Read coin-toss counts, one set of tosses per row.

    Parameters
    ----------
    path : str or Path
        CSV file with a header line.
    heads, tosses : str
        Names of the columns holding the number of heads and the number of tosses of each set.
    label : str or None
        Column whose values name the sets; None names them ``"set 1"`` .. ``"set N"``.
    encoding : str
        Text encoding of the file.
    delimiter : str
        Separator between cells, or ``"auto"`` (see :func:`read_table`).

    Returns
    -------
    CoinData
        ``heads`` and ``tosses`` of shape (N,), ``true_coin`` None, ``source`` the path.

    Raises
    ------
    UserError
        When the file cannot be read, a column is missing, a count is not a whole number,
        a set has no tosses, or heads are negative or more than the tosses.
    """
    table = read_table(path, encoding, delimiter)
    if heads == tosses:
        raise UserError(
            f"{table.name}: data.heads and data.tosses both name column {quote(heads)}; name two different columns"
        )
    if label is not None and label in (heads, tosses):
        key = "heads" if label == heads else "tosses"
        raise UserError(f"{table.name}: column {quote(label)} is [data] {key}, so it cannot also be [data] label (the "
                        "sets' names); name another column, or leave label out to number the sets")
    heads_index = table.column(heads, "name the heads column with data.heads = '...'")
    tosses_index = table.column(tosses, "name the tosses column with data.tosses = '...'")
    label_index = None if label is None else table.column(label, "name the label column with data.label = '...'")

    heads_counts = [_parse_integer(table, line, heads, text, "heads") for line, text in table.cells(heads_index)]
    tosses_counts = [_parse_integer(table, line, tosses, text, "tosses") for line, text in table.cells(tosses_index)]
    for line, n_heads, n_tosses in zip(table.line_numbers, heads_counts, tosses_counts, strict=True):
        if n_tosses < 1:
            raise UserError(
                f"{table.name}: line {line}: tosses is {n_tosses}; every set needs at least one toss, "
                "so fix the count or remove that row"
            )
        if not 0 <= n_heads <= n_tosses:
            raise UserError(
                f"{table.name}: line {line}: heads is {n_heads} but tosses is {n_tosses}; "
                "heads must be between 0 and tosses"
            )

    labels = _row_labels(table, label_index, "set {}")
    return CoinData(
        heads=np.asarray(heads_counts, dtype=np.int64),
        tosses=np.asarray(tosses_counts, dtype=np.int64),
        labels=labels,
        source=str(path),
    )


def _row_labels(table: Table, label_index: int | None, unnamed: str) -> tuple[str, ...]:
    """The rows' names: the label column's cells, or ``unnamed`` numbered from 1 (``"set {}"``)."""
    if label_index is None:
        return tuple(unnamed.format(i) for i in range(1, len(table.rows) + 1))
    lines, labels = zip(*table.cells(label_index)) if table.rows else ((), ())
    problem = unnamed_row(labels)
    if problem is not None:
        column, (i, j) = table.header[label_index], problem
        if j is None:
            raise UserError(f"{table.name}: line {lines[i]}, column {column!r} ([data] label) is empty; give every row "
                            "a name, or remove [data] label to number the rows")
        raise UserError(f"{table.name}: lines {lines[i]} and {lines[j]} have the same name {labels[i]!r} in column "
                        f"{column!r} ([data] label); give each row a name of its own (if the column holds groups, "
                        "name it as [data] truth instead)")
    return tuple(labels)


def _parse_count(table: Table, line: int, column: str, text: str) -> int:
    """A count (a whole number >= 0) from one cell, or a UserError naming the line, the column and the fix."""
    if text == "":
        raise UserError(f"{table.name}: line {line}, column {quote(column)} is empty; fill it in or remove that row")
    value = decimal.Decimal(text) if _is_float(text) else None
    if value is None or value != value.to_integral_value():
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} is {quote(text)}, not a whole number; a Poisson "
            "model needs counts (0, 1, 2, ...): fix that cell, or name the count column with data.counts = '...'"
        )
    if value < 0:
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} is {quote(text)}, a negative count; counts are "
            "0 or more: fix that cell or remove that row"
        )
    if value > MAX_COUNT:
        raise UserError(
            f"{table.name}: line {line}, column {quote(column)} is {quote(text)}, larger than {MAX_COUNT}; check that line"
        )
    return int(value)


def load_counts_csv(
    path: str | Path,
    counts: str = "count",
    label: str | None = None,
    encoding: str = "utf-8",
    delimiter: str = "auto",
) -> CountData:
    """Read one count per row (events per year, ...), for Poisson models.

    Parameters
    ----------
    path : str or Path
        CSV file with a header line.
    counts : str
        Name of the column holding the counts (spec key ``data.counts``).
    label : str or None
        Column whose values name the rows; None numbers them ``"1"`` .. ``"N"``.
    encoding : str
        Text encoding of the file.
    delimiter : str
        Separator between cells, or ``"auto"`` (see :func:`read_table`).

    Returns
    -------
    CountData
        ``counts`` of shape (N,), ``source`` the path.

    Raises
    ------
    UserError
        When the file cannot be read, the column is missing, or a count is empty, not a whole number or negative.
    """
    table = read_table(path, encoding, delimiter)
    if label is not None and label == counts:
        raise UserError(f"{table.name}: column {quote(label)} is [data] counts, so it cannot also be [data] label (the "
                        "rows' names); name another column, or leave label out to number the rows")
    index = table.column(counts, "name the count column with data.counts = '...'")
    label_index = None if label is None else table.column(label, "name the label column with data.label = '...'")
    values = [_parse_count(table, line, counts, text) for line, text in table.cells(index)]
    labels = _row_labels(table, label_index, "{}")
    return CountData(counts=np.asarray(values, dtype=np.int64), labels=labels, column=counts, source=str(path))


def _selected_columns(
    table: Table, columns: Sequence[str] | None, label: str | None, drop: Sequence[str], truth: str | None = None
) -> list[str]:
    """The columns to read, in order: `columns`, or every column but the label and the truth, less `drop`."""
    if isinstance(columns, str):
        columns = [columns]  # one name given bare would otherwise be read as its characters
    if isinstance(drop, str):
        drop = [drop]
    for name in drop:
        table.column(name, "fix the name in data.drop")
    if columns is None:
        chosen = [name for name in table.header if name not in (label, truth)]
    else:
        for name in columns:
            table.column(name, "choose the columns with data.columns = [...]")
        duplicates = sorted({name for name in columns if list(columns).count(name) > 1})
        if duplicates:
            raise UserError(f"{table.name}: data.columns lists {quote(duplicates[0])} more than once; list it once")
        chosen = list(columns)
        both = [name for name in chosen if name in drop]
        if both and len(both) == len(chosen):
            raise UserError(f"{table.name}: data.columns and data.drop both name {quote(both[0])}, so no column is left "
                            "to read; keep each column in one of them")
        if label is not None and label in chosen and label not in drop:
            # The label names the rows in tables; it is text as often as not, and never a measurement.
            raise UserError(f"{table.name}: column {quote(label)} is [data] label, the rows' names shown in tables, so "
                            f"it cannot also be fitted; remove it from [data] columns")
        if truth is not None and truth in chosen:
            # Fitting the answer the clusters are graded against would make the comparison meaningless.
            raise UserError(f"{table.name}: column {truth!r} is [data] truth, the known groups the clusters are "
                            f"compared with, so it cannot also be fitted; remove it from [data] columns")
    chosen = [name for name in chosen if name not in drop]
    if not chosen:
        raise UserError(f"{table.name}: no columns are left to read; choose some with data.columns = [...]")
    return chosen


def _check_preprocessing_options(
    table: Table, chosen: Sequence[str], percent: Sequence[str], categories: Mapping[str, Mapping[str, float]]
) -> None:
    """Every column named in data.percent and data.categories exists, is read, and is named once."""
    for option, names in (("data.percent", percent), ("data.categories", categories)):
        for name in names:
            table.column(name, f"fix the name in {option}")
            if name not in chosen:
                raise UserError(
                    f"{table.name}: {option} names column {quote(name)}, which is not among the columns read "
                    f"({', '.join(chosen)}); add it to data.columns or remove it from {option}"
                )
    both = sorted(set(percent) & set(categories))
    if both:
        raise UserError(
            f"{table.name}: column {quote(both[0])} is in both data.percent and data.categories; keep it in one"
        )
    for name, codes in categories.items():
        if not isinstance(codes, Mapping) or not codes:
            raise UserError(
                f"data.categories[{quote(name)}] must map each category to a number, e.g. {{'yes': 1, 'no': 0}}"
            )
        for category, code in codes.items():
            if isinstance(code, bool) or not isinstance(code, numbers.Real) or not math.isfinite(code):
                raise UserError(
                    f"data.categories[{quote(name)}][{quote(category)}] is {quote(code)}; each category must map to a finite number"
                )



#: A value further from its column's median than this many median absolute deviations leaves the other values in
#: the last digits of every sum and variance (one 9.2e18 among values near 1 ended in "the covariance is not
#: positive definite at initialisation").
MAX_SPREAD_RATIO = 1e12


def check_magnitudes(x: np.ndarray, chosen: Sequence[str], where: str,
                     leave_out: str = "leave it out with data.drop = [{}]", spread: bool = True) -> None:
    """Refuse a column of ``x`` (N, D) whose scale float64 arithmetic cannot carry (see :data:`MAX_MAGNITUDE`).

    Shared by CSV files, the Python API's arrays and chunked data stores, so every way in gives the same
    line. ``leave_out`` says how to do without a column (``{}`` is the quoted name).
    """
    with np.errstate(invalid="ignore"):
        top = np.max(np.abs(x), axis=0, initial=0.0) if x.size else np.zeros(len(chosen))
    for j, name in enumerate(chosen):
        if top[j] > MAX_MAGNITUDE:
            power = int(math.floor(math.log10(top[j])))
            raise UserError(
                f"{where}: column {quote(name)} holds values as large as {top[j]:.3g}; beyond {MAX_MAGNITUDE:.0e} their "
                f"squares overflow floating point, so rescale the column (e.g. divide it by 1e{power}) or "
                f"{leave_out.format(quote(name))}"
            )
        if 0 < top[j] < MIN_MAGNITUDE:
            power = -int(math.floor(math.log10(top[j])))
            raise UserError(
                f"{where}: column {quote(name)} holds no value larger than {top[j]:.3g} in magnitude; below {MIN_MAGNITUDE:.0e} "
                f"their squares underflow floating point, so rescale the column (e.g. multiply it by 1e{power}) or "
                f"{leave_out.format(quote(name))}"
            )
    if spread and x.ndim == 2 and x.shape[0] >= 3:
        centre = np.median(x, axis=0)
        deviation = np.median(np.abs(x - centre), axis=0)
        for j, name in enumerate(chosen):
            row = int(np.argmax(np.abs(x[:, j] - centre[j])))
            if deviation[j] > 0 and abs(x[row, j] - centre[j]) > MAX_SPREAD_RATIO * deviation[j]:
                raise UserError(
                    f"{where}: column {quote(name)} has the value {x[row, j]:.6g} (row {row + 1}), "
                    f"{abs(x[row, j] - centre[j]) / deviation[j]:.1e} times the spread of its values (median absolute "
                    f"deviation {deviation[j]:.3g}): beside it the others vanish in floating point's rounding; check that "
                    f"value (a code for a missing value?), or {leave_out.format(quote(name))}"
                )


#: how z-scoring is recorded in ``ContinuousData.transforms``
STANDARDIZE_TRANSFORM = "z-score all columns (population sd, ddof=0)"


def standardize_columns(x: np.ndarray, chosen: Sequence[str], where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score every column of ``x`` (population sd); returns (z, center, scale).

    Shared by CSV files and the Python API's in-memory data, so both give the same bits.
    ``where`` starts the error messages (the file's name, or the argument's).
    """
    for j, name in enumerate(chosen):
        # Exact equality, not a tolerance: a constant column is the case z-scoring cannot handle.
        if np.all(x[:, j] == x[0, j]):
            raise UserError(
                f"{where}: column {quote(name)} is constant ({x[0, j]:g} in every row), so it cannot be "
                f"standardized; leave it out with data.drop = [{quote(name)}]"
            )
    with np.errstate(over="ignore", invalid="ignore"):
        center = x.mean(axis=0)
        scale = x.std(axis=0, ddof=0)
        x = (x - center) / scale
    bad = [name for j, name in enumerate(chosen) if not (np.isfinite(scale[j]) and scale[j] > 0)]
    if bad or not np.all(np.isfinite(x)):
        name = bad[0] if bad else chosen[int(np.nonzero(~np.isfinite(x))[1][0])]
        raise UserError(
            f"{where}: column {quote(name)} cannot be standardized (its values are too large or too close "
            f"together for floating point); rescale it or leave it out with data.drop = [{quote(name)}]"
        )
    return x, center, scale


def load_continuous_csv(
    path: str | Path,
    columns: Sequence[str] | None = None,
    *,
    encoding: str = "utf-8",
    label: str | None = None,
    percent: Sequence[str] = (),
    categories: Mapping[str, Mapping[str, float]] | None = None,
    standardize: bool = False,
    drop: Sequence[str] = (),
    delimiter: str = "auto",
    truth: str | None = None,
    check_spread: bool = True,
) -> ContinuousData:
    """Read continuous observations, one row per observation, with optional preprocessing.

    Parameters
    ----------
    path : str or Path
        CSV file with a header line; header names are stripped of surrounding whitespace.
    columns : sequence of str or None
        Columns to read, in this order; None reads every column except `label` and `drop`.
    encoding : str
        Text encoding of the file, e.g. ``"gb18030"``.
    label : str or None
        Column whose values name the rows; None names them ``"1"`` .. ``"N"``.
    percent : sequence of str
        Columns holding percent strings such as ``"28.00%"``, read as fractions (0.28).
    categories : mapping of str to mapping of str to float, or None
        For each listed column, the number each category word stands for,
        e.g. ``{"攻击范围": {"远程": 1, "近战": 0}}``.
    standardize : bool
        Z-score every column: subtract its mean and divide by its population standard deviation
        (ddof=0, as scikit-learn's ``StandardScaler``). ``center`` and ``scale`` record both.
    drop : sequence of str
        Columns to leave out (applied after `columns`).
    delimiter : str
        Separator between cells, or ``"auto"`` (see :func:`read_table`).
    truth : str or None
        Column of known groups (any text): left out of ``x`` and returned as ``truth``, so that the
        report can compare every clustering with it.
    check_spread : bool
        Refuse a value beyond :data:`MAX_SPREAD_RATIO` median absolute deviations of its column (a caller that
        judges its values in its own terms, as the hidden Markov models do their counts, passes False).

    Returns
    -------
    ContinuousData
        ``x`` of shape (N, D), ``transforms`` listing the preprocessing in the order applied.

    Raises
    ------
    UserError
        When the file cannot be read, a column is missing, a cell is empty, not a number, not
        finite, an unmapped category or a malformed percent, or a standardized column is constant.
    """
    categories = {} if categories is None else dict(categories)
    if isinstance(percent, str):
        percent = [percent]
    table = read_table(path, encoding, delimiter)
    label_index = None if label is None else table.column(label, "name the label column with data.label = '...'")
    truth_index = None if truth is None else table.column(truth, "name the known-groups column with data.truth = '...'")
    chosen = _selected_columns(table, columns, label, drop, truth)
    _check_preprocessing_options(table, chosen, percent, categories)

    x = np.empty((len(table.rows), len(chosen)), dtype=np.float64)
    transforms: list[str] = []
    for j, name in enumerate(chosen):
        cells = table.cells(table.header.index(name))
        if name in percent:
            x[:, j] = [_parse_percent(table, line, name, text) for line, text in cells]
            transforms.append(f"{name}: percent -> fraction")
        elif name in categories:
            codes = categories[name]
            x[:, j] = [_parse_category(table, line, name, text, codes) for line, text in cells]
            mapping = ", ".join(f"{category} -> {code:g}" for category, code in codes.items())
            transforms.append(f"{name}: {mapping}")
        else:
            x[:, j] = [_parse_number(table, line, name, text) for line, text in cells]

    check_magnitudes(x, chosen, table.name, spread=check_spread)
    center = scale = None
    if standardize:
        x, center, scale = standardize_columns(x, chosen, table.name)
        transforms.append(STANDARDIZE_TRANSFORM)

    labels = _row_labels(table, label_index, "{}")
    known = None
    if truth_index is not None:
        known = tuple(text for _, text in table.cells(truth_index))
        empty = next((line for line, text in table.cells(truth_index) if text == ""), None)
        if empty is not None:
            raise UserError(f"{table.name}: line {empty}, column {truth!r} ([data] truth) is empty; give every row "
                            "its known group or remove that row")
    return ContinuousData(
        x=x,
        columns=tuple(chosen),
        labels=labels,
        source=str(path),
        transforms=tuple(transforms),
        center=center,
        scale=scale,
        truth=known,
        truth_column=truth,
    )
