"""Small HTML building blocks shared by every section: escaping, numbers, tables, figures.

Nothing here knows about mixtures. Every string that may have come from the user goes through
:func:`esc`; only :class:`Raw` (markup built in this package) is passed through unescaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

import numpy as np
import xarray as xr

# Control characters, and the bidirectional embeddings, overrides and isolates (U+202A-U+202E,
# U+2066-U+2069) and marks: from a title or a column name they would reorder the text around them.
# Lone surrogates (a file name that was not UTF-8, a damaged string attribute) cannot be written as UTF-8.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class Raw(str):
    """Already-safe HTML (built here, never from user text)."""


def esc(value) -> str:
    """Text as HTML: markup characters escaped, control and bidirectional-override characters dropped."""
    if isinstance(value, Raw):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return html.escape(_CONTROL.sub("", str(value)), quote=True)


def plain(value) -> str:
    """Text for a terminal: control characters (escape sequences, bells, carriage returns) and
    bidirectional overrides dropped."""
    return re.sub(r"[\t\n\r]", " ", _CONTROL.sub("", str(value)))


def fmt(x, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; a dash for missing or non-finite values."""
    if x is None:
        return "–"
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{value:.{digits}g}" if np.isfinite(value) else "–"


def decimals_for(values, digits: int = 4) -> int:
    """Decimal places that give the largest finite magnitude among ``values`` ``digits`` significant digits,
    so a column (or a row) of numbers is written to the same precision: 0.5000 beside 0.7968, not 0.5."""
    finite = np.abs(np.asarray([v for v in np.ravel(np.asarray(values, dtype=float)) if np.isfinite(v)], dtype=float))
    finite = finite[finite > 0]
    if finite.size == 0:
        return 0
    return int(min(10, max(0, digits - 1 - int(np.floor(np.log10(finite.max()))))))


def fixed(x, decimals: int) -> str:
    """A number with ``decimals`` places (from :func:`decimals_for`); a dash for missing or non-finite values."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return "–" if x is None else str(x)
    return f"{value:.{decimals}f}" if np.isfinite(value) else "–"


def fmt_rhat(value, limit: float = 1.01) -> str:
    """R-hat with three decimals, or as many more as it takes to show it is above ``limit`` when it is
    (1.0103 must not read "1.010" under a rule "above 1.01")."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    if not np.isfinite(value):
        return "–"
    decimals = 3
    while value > limit and float(f"{value:.{decimals}f}") <= limit and decimals < 12:
        decimals += 1
    return f"{value:.{decimals}f}"


def fmt_interval(lower, upper, digits: int = 4) -> str:
    if lower is None or not (np.isfinite(lower) and np.isfinite(upper)):
        return "–"
    return f"{fmt(lower, digits)} – {fmt(upper, digits)}"


def cell(value) -> str:
    return value if isinstance(value, Raw) else esc(value)


def table(header: Sequence | None, rows: Iterable[Sequence], *, cls: str = "", caption: str = "") -> str:
    """An HTML table (no header row when ``header`` is None); cells are escaped unless they are :class:`Raw`."""
    head = "<thead><tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{cls_attr}>{cap}{head}<tbody>{body}</tbody></table>"


def key_value_table(rows: Iterable[tuple], *, cls: str = "card") -> str:
    return table(None, [list(r) for r in rows], cls=cls)


def section(title: str, body: str, anchor: str) -> str:
    """A titled section, or nothing when its body is empty (its data are not in the file)."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>' if body else ""


def subsection(title: str, body: str, note: str = "") -> str:
    if not body:
        return ""
    return f"<h3>{esc(title)}</h3>" + (f"<p>{esc(note)}</p>" if note else "") + body


def figure(svg: str, name: str, caption: str = "") -> str:
    """An inline SVG figure, tagged so the browser test can count figures against the data."""
    if not svg:
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="fig" data-fig="{esc(name)}">{svg}{cap}</figure>'


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>" if text else ""


def group(tree: xr.DataTree, name: str) -> xr.Dataset | None:
    """A group of the results tree as a Dataset, or ``None`` when the run did not write it."""
    return tree[name].to_dataset() if name in tree.children else None


def attr_flag(ds: xr.Dataset | None, name: str, default=None):
    """A 0/1 (or bool, or "true") attribute as a bool; ``default`` when absent."""
    if ds is None or name not in ds.attrs:
        return default
    value = ds.attrs[name]
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(np.asarray(value).item())
